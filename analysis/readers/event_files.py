"""TensorBoard event files, read with the ``tensorboard`` package's own event reader.

Scalars written as ``simple_value`` (PyTorch's ``SummaryWriter``, verl's tensorboard logger)
and as scalar tensors (TF2 summaries) are both read. All points are kept (the reader's default
reservoir sampling would thin long runs). Several event files of one run (a resumed job
starts a new file) are read oldest first, so a repeated step keeps the value logged later.

transformers' ``TensorBoardCallback`` writes ``train/<key>`` and ``eval/<key>``; when every tag
has one of those prefixes they are mapped back to the keys the trainer logged (``reward``,
``eval_rewards/acc/mean``) so the TRL preset applies.
"""

from __future__ import annotations

import logging
import re
import struct
from pathlib import Path

from satmon._optional import require
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


def read_event_files(files: list[Path], *, source: str) -> MetricLog:
    """Read the scalar series of one run from its event files (oldest first)."""
    ea = require("tensorboard.backend.event_processing.event_accumulator",
                 feature="reading TensorBoard event files")
    tensor_util = require("tensorboard.util.tensor_util",
                          feature="reading TensorBoard event files")
    points: list[tuple[str, int, float]] = []
    for path in files:
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: the TensorBoard event file is empty.")
        acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0},
                                  purge_orphaned_data=False)
        try:
            acc.Reload()
        except Exception as exc:  # the reader raises its own DataLossError types
            raise ValueError(f"{path}: could not read the TensorBoard event file "
                             f"({type(exc).__name__}: {exc}); it is truncated or corrupt."
                             ) from None
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            points += [(tag, ev.step, ev.value) for ev in acc.Scalars(tag)]
        for tag in tags.get("tensors", []):
            meta = acc.SummaryMetadata(tag)
            if meta.plugin_data.plugin_name != "scalars":
                continue
            for ev in acc.Tensors(tag):
                arr = tensor_util.make_ndarray(ev.tensor_proto)
                if arr.size == 1:
                    points.append((tag, ev.step, float(arr.reshape(()))))
    mlog = MetricLog(source=source, format="tensorboard")
    tags_seen = {tag for tag, _, _ in points}
    rename = bool(tags_seen) and all(t.startswith(_HF_PREFIXES) for t in tags_seen)
    for tag, step, value in points:
        mlog.add(step, _hf_tag_to_key(tag) if rename else tag, value)
    mlog.n_records = len({step for _, step, _ in points})
    mlog.metadata["event_files"] = [str(p) for p in files]
    if rename:
        mlog.metadata["tag_prefixes"] = "transformers TensorBoardCallback (train/, eval/)"
    return mlog
