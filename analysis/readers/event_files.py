"""TensorBoard event files, decoded with the ``tensorboard`` package's protobufs.

Scalars written as ``simple_value`` (PyTorch's ``SummaryWriter``, verl's tensorboard logger)
and as scalar tensors (TF2 summaries) are both read, and all points are kept. Several event
files of one run (a resumed job starts a new file) are read oldest first, so a repeated step
keeps the value logged later.

An event file is a sequence of records, each framed as an 8-byte length, a CRC of the length,
the payload and a CRC of the payload. Every frame and both CRCs are checked. A file that ends
inside a record (cut off while being written, or copied half-way) or holds a record that fails
its CRC (a flipped byte) is read up to the last good record, and the read is never silent:

* a warning is logged and a sentence added to ``run.metadata["read_warnings"]``;
* ``run.metadata["partial_read"]`` lists, per such file, ``file``, ``records_read`` (records
  before the bad one, the ``brain.Event`` version record included), ``stopped_at_record``
  (1-based index of the bad record), ``offset`` (its byte offset), ``file_size``,
  ``bytes_unread`` and ``problem``;
* ``read_run(..., strict=True)`` and the CLI's ``--strict`` refuse the run (ReadError).

Nothing after the bad record is read: once a length or CRC is wrong the record boundaries that
follow cannot be trusted. (TensorBoard's own loader stops at the same place, but reports it only
at DEBUG level.)

transformers' ``TensorBoardCallback`` writes ``train/<key>`` and ``eval/<key>``; when every tag
has one of those prefixes they are mapped back to the keys the trainer logged (``reward``,
``eval_rewards/acc/mean``) so the TRL preset applies.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from satmon._optional import require
from satmon.analysis.readers.errors import ReadError
from satmon.analysis.readers.metric_log import MetricLog

log = logging.getLogger("satmon.analysis.readers")

_EVENT_NAME = re.compile(r"events\.out\.tfevents\.")
_HF_PREFIXES = ("train/", "eval/", "test/")


def is_event_file_content(head: bytes) -> bool:
    """True when ``head`` starts like a TFRecord of TensorBoard events.

    The first record of an event file is an Event carrying ``file_version: "brain.Event:N"``;
    the record frame is an 8-byte little-endian length and a 4-byte CRC before the payload.
    """
    if len(head) < 16:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 0 < length < 4096 and b"brain.Event:" in head[12:12 + length]


def event_files_in(folder: Path) -> list[Path]:
    """Event files under ``folder`` (any depth), sorted by folder then name (= time)."""
    return sorted((p for p in folder.rglob("*") if p.is_file() and _EVENT_NAME.search(p.name)),
                  key=lambda p: (str(p.parent), p.name))


def run_prefix(path: Path) -> str:
    """The part of an event file's name before ``events.out.tfevents`` ('' when not renamed)."""
    return path.name.split("events.out.tfevents", 1)[0].rstrip("._-")


def event_runs(folder: Path) -> list[Path]:
    """The runs among the event files under ``folder``.

    By TensorBoard's convention one folder is one run (a resumed job adds a file to it); a
    file renamed with a prefix of its own (``<run>_events.out.tfevents...``) is a run by itself.
    Returns folders and renamed files.
    """
    targets = {p.parent if not run_prefix(p) else p for p in event_files_in(folder)}
    return sorted(targets, key=str)


def files_of_run(target: Path) -> list[Path]:
    """The event files of a run returned by :func:`event_runs` (oldest first)."""
    if target.is_file():
        return [target]
    return [p for p in event_files_in(target) if p.parent == target and not run_prefix(p)]


def _hf_tag_to_key(tag: str) -> str:
    if tag.startswith("train/"):
        return tag[len("train/"):]
    if tag.startswith("eval/"):
        return "eval_" + tag[len("eval/"):]
    return "test_" + tag[len("test/"):]


class FrameStop(Exception):
    """Where and why a walk over TFRecord frames stopped before the end of the data.

    ``truncated`` is True when the data ends inside a frame (a cut file, or one still being
    written), False when a frame is damaged (a CRC check failed, or the payload is no Event).
    """

    def __init__(self, record: int, offset: int, problem: str, *, truncated: bool) -> None:
        super().__init__(problem)
        self.record, self.offset, self.problem = record, offset, problem
        self.truncated = truncated


def tfrecord_frames(data: bytes, masked_crc32c: Any) -> Iterator[tuple[int, int, bytes]]:
    """``(index, offset, payload)`` of each TFRecord frame in ``data`` (8-byte length, its
    CRC, the payload, its CRC), both CRCs checked; raises :class:`FrameStop` at the first frame
    that is cut or damaged. Shared by the reader and ``satmon watch``."""
    pos, index, size = 0, 1, len(data)
    while pos < size:
        if size - pos < 12:
            raise FrameStop(index, pos, f"the file ends inside the header of record {index} "
                                        f"({size - pos} of 12 bytes)", truncated=True)
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked_crc32c(header) != header_crc:
            raise FrameStop(index, pos, f"record {index} fails its length CRC check (corrupt)",
                            truncated=False)
        end = pos + 12 + length
        if end + 4 > size:
            raise FrameStop(index, pos, f"the file ends inside record {index} ({size - pos} "
                                        f"of {length + 16} bytes)", truncated=True)
        payload = data[pos + 12:end]
        (payload_crc,) = struct.unpack("<I", data[end:end + 4])
        if masked_crc32c(payload) != payload_crc:
            raise FrameStop(index, pos, f"record {index} fails its data CRC check (corrupt)",
                            truncated=False)
        yield index, pos, payload
        pos, index = end + 4, index + 1


def event_scalars(payload: bytes, index: int, offset: int, event_pb2: Any, tensor_util: Any,
                  plugin_of: dict[str, str]) -> tuple[int, list[tuple[str, float]]]:
    """``(step, [(tag, value), ...])`` of the scalar summaries in one Event frame.

    Scalars are ``simple_value`` summaries and single-element tensors of the ``scalars``
    plugin; ``plugin_of`` carries each tag's plugin across frames (TensorBoard names it on a
    tag's first summary only). A payload that is no Event raises :class:`FrameStop`.
    """
    try:
        event = event_pb2.Event.FromString(payload)
    except Exception as exc:  # protobuf's DecodeError: a frame whose CRC still held
        raise FrameStop(index, offset, f"record {index} is not a valid Event "
                                       f"({type(exc).__name__})", truncated=False) from None
    out = []
    for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            out.append((value.tag, float(value.simple_value)))
        elif kind == "tensor":
            if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                plugin_of[value.tag] = value.metadata.plugin_data.plugin_name
            if plugin_of.get(value.tag) == "scalars":
                arr = tensor_util.make_ndarray(value.tensor)
                if arr.size == 1:
                    out.append((value.tag, float(arr.reshape(()))))
    return int(event.step), out


def _scalar_points(path: Path, mlog: MetricLog, modules: dict[str, Any],
                   points: list[tuple[str, int, float]]) -> None:
    """Append the scalar points of one event file; report where a damaged file stops."""
    event_pb2, tensor_util = modules["event_pb2"], modules["tensor_util"]
    data = path.read_bytes()
    plugin_of: dict[str, str] = {}
    read = 0
    try:
        for index, offset, payload in tfrecord_frames(data, modules["masked_crc32c"]):
            step, scalars = event_scalars(payload, index, offset, event_pb2, tensor_util,
                                          plugin_of)
            read += 1
            points += [(tag, step, value) for tag, value in scalars]
    except FrameStop as stop:
        unread = len(data) - stop.offset
        mlog.metadata.setdefault("partial_read", []).append({
            "file": str(path), "records_read": read, "stopped_at_record": stop.record,
            "offset": stop.offset, "file_size": len(data), "bytes_unread": unread,
            "problem": stop.problem})
        mlog.warn(f"TensorBoard event file {path.name} read only in part: {stop.problem} at byte "
                  f"{stop.offset} of {len(data)}; {read} record(s) read, the last {unread} "
                  "bytes are ignored.")


def read_event_files(files: list[Path], *, source: str) -> MetricLog:
    """Read the scalar series of one run from its event files (oldest first)."""
    feature = "reading TensorBoard event files"
    modules = {
        "event_pb2": require("tensorboard.compat.proto.event_pb2", feature=feature),
        "tensor_util": require("tensorboard.util.tensor_util", feature=feature),
        "masked_crc32c": require("tensorboard.compat.tensorflow_stub.pywrap_tensorflow",
                                 feature=feature).masked_crc32c,
    }
    mlog = MetricLog(source=source, format="tensorboard")
    points: list[tuple[str, int, float]] = []
    for path in files:
        if path.stat().st_size == 0:
            raise ReadError(f"{path}: the TensorBoard event file is empty.", source=source)
        _scalar_points(path, mlog, modules, points)
    tags_seen = {tag for tag, _, _ in points}
    rename = bool(tags_seen) and all(t.startswith(_HF_PREFIXES) for t in tags_seen)
    for tag, step, value in points:
        mlog.add(step, _hf_tag_to_key(tag) if rename else tag, value)
    mlog.n_records = len({step for _, step, _ in points})
    mlog.metadata["event_files"] = [str(p) for p in files]
    if rename:
        mlog.metadata["tag_prefixes"] = "transformers TensorBoardCallback (train/, eval/)"
    return mlog
