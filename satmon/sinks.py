"""Where the online monitor's records go: an MLflow run, through a local write-ahead spool.

Training must never wait for, or die with, a tracking server. :class:`MlflowSink` therefore
appends every record (metrics, tags, a figure, table rows) to a local JSONL spool first, and a
background thread sends the spool to MLflow in order, batched (``log_batch``: up to 1000 metrics
and 100 tags per request). When the server does not answer, records stay in the spool and the
thread retries with a growing delay; when it answers again everything is sent, oldest first.
A record leaves the spool only after MLflow accepted it, so nothing is lost - not even when
the training process dies: :func:`flush_spool` sends what a dead process left behind.

Which run receives the records (the MLflow conventions transformers' ``MLflowCallback`` uses):

1. ``run_id=`` when given;
2. else the active run of the thread that opens the sink (``mlflow.active_run()``), unless
   ``MLFLOW_NESTED_RUN`` is true, in which case a child run of it is created;
3. else ``MLFLOW_RUN_ID``;
4. else a new run in ``experiment_name`` / ``MLFLOW_EXPERIMENT_NAME`` (or the default
   experiment), on ``tracking_uri`` / ``MLFLOW_TRACKING_URI``.

Only a run the sink created is ended by it; a reused run is left as it was.

Faults and what the sink does about them (every count is in :class:`SinkStats`):

* **Server down or not answering**: records wait in the spool (and in memory); the thread
  retries without limit, with a delay growing from ``retry_interval_s`` to
  ``max_retry_interval_s``. Recording never waits for the server.
* **Spool folder unusable when the sink opens** (read-only, not a folder, no space): one
  warning, then records are buffered in memory only. MLflow still receives every one of them;
  what it has not taken when the sink closes is lost, and the close warning and
  ``stats.lost`` give the number.
* **Disk full or read-only during the run**: a record that cannot be appended to the spool is
  kept in memory only (``stats.unspooled``); one warning when this starts and one when the spool
  is writable again. The sender thread survives any ``OSError`` of its own spool bookkeeping
  (the ``.ack`` file, removing a drained spool); if the ``.ack`` file cannot be updated, a later
  :func:`flush_spool` may send records MLflow already has a second time (at least once, never
  lost). When the sink closes with records unsent, the warning says how many are kept on disk
  (``stats.kept``, to send later with :func:`flush_spool`) and how many were only in memory and
  are lost (``stats.lost``) - never "kept" for a record that is not on disk.
* **A damaged or tampered spool** (a truncated last line, a line that is not a JSON object, a
  record without a known ``kind`` or with fields of the wrong type, a repeated ``seq``, an
  artifact that is not a figure this sink rendered - a spool names files to upload and then
  delete, so a tampered one must reach no other file): every line is checked when a spool is
  loaded, before any is sent; bad lines are skipped and counted (``stats.skipped``), one warning
  names the count and the file, and the rest is delivered.
* **A record MLflow refuses** (an invalid key, a run that does not exist ...) is set aside in
  ``<spool>.rejected.jsonl`` at once (``stats.rejected``). A record whose sending fails for a
  reason that is neither a refusal nor an unreachable server (a server error, a local file
  error) is tried at most :data:`MAX_SEND_ATTEMPTS` times in its batch and as often again on its
  own, then set aside the same way: no record is retried forever while the server answers.

mlflow is imported only when a sink opens; ``import satmon.sinks`` stays light.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from satmon._files import atomic_write_text
from satmon._optional import require
from satmon.results import json_safe

logger = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation).
MAX_KEY_LENGTH = 250
MAX_METRICS_PER_REQUEST = 1000
MAX_TAGS_PER_REQUEST = 100
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAM_VALUE_LENGTH = 6000  # MLflow 3
MAX_PARAMS_PER_REQUEST = 100

#: How many times a batch (and then each of its records alone) is tried when sending fails for
#: a reason other than an unreachable server, before the record is set aside as rejected.
MAX_SEND_ATTEMPTS = 5

_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")
_TRUE_WORDS = {"1", "true", "yes", "y", "on"}
_KINDS = ("metrics", "tags", "params", "artifact", "table")


def sanitize_key(key: str) -> str:
    """Rewrite ``key`` into a valid MLflow metric/tag key.

    MLflow accepts ``[/\\w.\\- :]``, at most 250 characters, and a key that is a normalised
    relative path (no ``//``, no leading ``/``, no ``.`` or ``..`` segment). ``@`` becomes
    ``_at_`` (verl's convention, so ``mean@8`` reads ``mean_at_8``); other invalid characters
    become ``_``.

    >>> sanitize_key("val-core/gsm8k/acc/mean@8")
    'val-core/gsm8k/acc/mean_at_8'
    >>> sanitize_key("/satmon//p(sat)/")
    'satmon/p_sat_'
    """
    if not isinstance(key, str):
        raise TypeError(f"Metric keys must be strings. Got {type(key).__name__}: {key!r}.")
    out = _BAD_KEY_CHARS.sub("_", key.replace("@", "_at_"))
    parts = [p for p in out.split("/") if p]
    parts = ["_" if p in (".", "..") else p for p in parts]
    out = "/".join(parts) or "_"
    return out[:MAX_KEY_LENGTH].rstrip("/") or "_"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_WORDS


@dataclass
class SinkStats:
    """Counters of an :class:`MlflowSink` (read them after :meth:`MlflowSink.close`).

    After a close, ``recorded == sent + rejected + pending`` and ``pending == kept + (records
    lost from memory)``.

    Attributes
    ----------
    recorded: records the sink accepted (each ``log_metrics`` / ``set_tags`` / ``log_table`` /
        ``log_figure`` call that had something to log), plus records loaded from a spool.
    sent: records MLflow accepted.
    failures: send attempts that failed (server down, timeout, server error ...).
    outages: separate periods during which MLflow did not answer.
    rejected: records MLflow refused, or that failed :data:`MAX_SEND_ATTEMPTS` times (kept in
        the ``.rejected.jsonl`` file).
    pending: records not sent yet.
    kept: pending records that are in the spool file (:func:`flush_spool` can send them).
    unspooled: records that could not be written to the spool (full or read-only disk) and were
        held in memory only.
    lost: records that will never reach MLflow: after a close that did not drain, the pending
        records that were only in memory; and figures that could not be rendered to any disk.
    skipped: unreadable or invalid lines skipped when a spool file was loaded.
    """

    recorded: int = 0
    sent: int = 0
    failures: int = 0
    outages: int = 0
    rejected: int = 0
    pending: int = 0
    kept: int = 0
    unspooled: int = 0
    lost: int = 0
    skipped: int = 0


class MlflowSink:
    """Send metrics, tags, figures and tables to an MLflow run without ever blocking training.

    See the module docstring for which run receives the records and for what happens when the
    server, the spool disk or the spool file misbehave.

    Parameters
    ----------
    tracking_uri:
        Tracking URI; default ``mlflow.get_tracking_uri()`` (honours ``MLFLOW_TRACKING_URI``).
    experiment_name:
        Experiment of a run the sink creates; default ``MLFLOW_EXPERIMENT_NAME``, else MLflow's
        default experiment.
    run_id:
        Log into this existing run (never ended by the sink).
    run_name:
        Name of a run the sink creates.
    nested:
        Create a child run of the active run; default ``MLFLOW_NESTED_RUN``.
    spool_dir:
        Folder of the spool files; default ``<tempdir>/satmon-mlflow-spool``.
    spool_path:
        Exact spool file; an existing spool continues (its unsent records are sent first) -
        this is how :func:`flush_spool` resends what a dead process left.
    retry_interval_s, max_retry_interval_s:
        First and largest delay between retries while MLflow does not answer.
    close_timeout_s:
        How long :meth:`close` waits for the spool to drain.
    """

    def __init__(self, *, tracking_uri: str | None = None, experiment_name: str | None = None,
                 run_id: str | None = None, run_name: str | None = None,
                 nested: bool | None = None, spool_dir: str | os.PathLike | None = None,
                 spool_path: str | os.PathLike | None = None, retry_interval_s: float = 2.0,
                 max_retry_interval_s: float = 60.0, close_timeout_s: float = 30.0) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_id = run_id
        self.run_name = run_name
        self.nested = nested
        self.spool_dir = spool_dir
        self.spool_path = spool_path
        self.retry_interval_s = retry_interval_s
        self.max_retry_interval_s = max_retry_interval_s
        self.close_timeout_s = close_timeout_s
        for name in ("retry_interval_s", "max_retry_interval_s", "close_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"The '{name}' parameter of MlflowSink must be a number >= 0. "
                                 f"Got {value!r} instead.")
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Condition()
        self._pending: deque[dict[str, Any]] = deque()
        # Sequence numbers of pending records that are not in the spool file (disk trouble).
        self._memory_only: set[int] = set()
        self._seq = 0
        self._acked = 0
        self._owned = False
        self._parent_run_id: str | None = None
        self._resolved_run_id: str | None = None
        self._uri: str | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._abandoned = False
        self._opened = False
        self._terminate_status: str | None = None
        self._in_outage = False
        self._singles = 0
        self._attempt_seq: int | None = None
        self._attempts = 0
        self._spool_usable = True
        self._append_failing = False
        self._ack_failing = False
        self._lost_figures = 0
        self._kept_figures = False
        self.stats = SinkStats()
        self._path: Path | None = None

    # -- paths --------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The spool file (None before :meth:`open`)."""
        return self._path

    @property
    def spool_usable(self) -> bool:
        """False when the spool folder was unusable at :meth:`open` (records are in memory)."""
        return self._spool_usable

    def _side(self, suffix: str) -> Path:
        if self._path is None:
            raise RuntimeError("The MLflow sink's spool is not open yet; call open() first.")
        return self._path.with_name(self._path.name + suffix)

    @property
    def active_run_id(self) -> str | None:
        """The run records go to (None while a run the sink must create is not created yet)."""
        return self._resolved_run_id

    @property
    def owns_run(self) -> bool:
        """True when the sink created its run (and will end it)."""
        return self._owned

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> "MlflowSink":
        """Resolve the target run (see the module docstring) and start the sender thread.

        Run creation, when needed, happens on the sender thread, so opening never waits for a
        server. An unusable spool folder does not stop the sink: it warns once and buffers
        records in memory. Returns the sink.
        """
        if self._opened:
            return self
        mlflow = require("mlflow", feature="logging to MLflow")
        if self.spool_path is not None:
            self._path = Path(self.spool_path)
        else:
            folder = Path(self.spool_dir) if self.spool_dir is not None else (
                Path(tempfile.gettempdir()) / "satmon-mlflow-spool")
            self._path = folder / f"mlflow-spool-{uuid.uuid4().hex[:12]}.jsonl"
        meta: dict[str, Any] = {}
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            meta = self._read_meta()
            self._load_spool()
        except OSError as exc:
            self._give_up_spool(exc)
        self._uri = self.tracking_uri or meta.get("tracking_uri") or mlflow.get_tracking_uri()
        nested = _env_true("MLFLOW_NESTED_RUN") if self.nested is None else bool(self.nested)
        active = mlflow.active_run()
        if self.run_id or meta.get("run_id"):
            self._resolved_run_id = self.run_id or meta["run_id"]
            self._owned = bool(meta.get("owned")) and not self.run_id
        elif active is not None and not nested:
            self._resolved_run_id = active.info.run_id
        elif active is None and os.environ.get("MLFLOW_RUN_ID"):
            self._resolved_run_id = os.environ["MLFLOW_RUN_ID"]
        else:
            # Created on the sender thread; a nested run hangs under the active one.
            self._parent_run_id = active.info.run_id if (active is not None and nested) else None
        if self._spool_usable:
            try:
                self._write_meta()
            except OSError as exc:
                self._give_up_spool(exc)
        self._opened = True
        self._closed = False
        self._thread = threading.Thread(target=self._worker, name="satmon-mlflow-sink",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self, *, status: str = "FINISHED", timeout_s: float | None = None) -> bool:
        """Send what is left (waiting at most ``timeout_s``), end an owned run, stop the thread.

        Returns True when every record was sent or set aside. Otherwise the sender stops (a
        request already on its way may still complete) and a warning gives the numbers: the
        records kept in :attr:`path` (send them later with :func:`flush_spool`) and those that
        were only in memory and are lost (``stats.kept``, ``stats.lost``).
        """
        if not self._opened:
            return True
        timeout = self.close_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            self._closing = True
            self._terminate_status = status
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            if self._pending:
                # Give up: what is left stays in the spool for flush_spool, untouched by a
                # sender that would otherwise race with it.
                self._abandoned = True
                self._lock.notify_all()
            self._closed = True
            self._update_counts()
            drained = not self._pending
            n_pending, n_kept = len(self._pending), self.stats.kept
            n_lost = n_pending - n_kept
        if drained:
            self._remove_side_files()
        else:
            parts = []
            if n_kept:
                parts.append(f"{n_kept} are kept in {self._path}; send them later with: "
                             f"python -c \"from satmon.sinks import flush_spool; "
                             f"flush_spool('{self._path}')\"")
            if n_lost:
                parts.append(f"{n_lost} could not be written to the spool (full or read-only "
                             f"disk) and are lost")
            logger.warning("satmon: MLflow did not take %d records within %.0f s: %s.",
                           n_pending, timeout, "; ".join(parts))
        self._opened = False
        return drained

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every record so far was sent (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._lock.notify_all()
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not self._opened:
                    return not self._pending
                self._lock.wait(min(left, 0.2))
            return True

    # -- recording (training thread; never raises for MLflow or disk trouble) -------------

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int,
                    timestamp_ms: int | None = None) -> None:
        """Record finite numeric ``metrics`` at ``step`` (keys sanitised, others skipped)."""
        values = {}
        for key, value in metrics.items():
            try:
                f = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(f):
                values[sanitize_key(key)] = f
        if values:
            self._record({"kind": "metrics", "step": int(step),
                          "ts": int(timestamp_ms if timestamp_ms is not None
                                    else time.time() * 1000),
                          "values": values})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Record run tags (keys sanitised, values as strings, truncated to MLflow's limit)."""
        clean = {sanitize_key(k): str(v)[:MAX_TAG_VALUE_LENGTH] for k, v in tags.items()}
        if clean:
            self._record({"kind": "tags", "tags": clean})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record run parameters (keys sanitised, values as strings, truncated to MLflow's
        limit). MLflow refuses to change a logged parameter, so log each key once per run."""
        clean = {sanitize_key(k): str(v)[:MAX_PARAM_VALUE_LENGTH] for k, v in params.items()}
        if clean:
            self._record({"kind": "params", "params": clean})

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Record a matplotlib figure as a PNG artifact at ``artifact_file`` (run-relative).

        The figure is rendered now, on the calling thread (matplotlib is not thread-safe), into
        the spool folder - or, when that cannot be written, into the system temporary folder;
        the sender thread uploads the file. A figure no disk takes is counted in
        ``stats.lost`` with a warning.
        """
        self._check_open()
        name = _artifact_name(artifact_file, (".png",))
        bases = self._figure_folders()
        if not self._spool_usable:
            bases = bases[1:]
        error: OSError | None = None
        for base in bases:
            folder = base / uuid.uuid4().hex[:12]
            local = folder / posixpath.basename(name)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                figure.savefig(local, format="png", dpi=110, bbox_inches="tight")
            except OSError as exc:
                error = exc
                shutil.rmtree(folder, ignore_errors=True)
                continue
            self._record({"kind": "artifact", "local_path": str(local),
                          "artifact_path": posixpath.dirname(name) or None})
            return
        with self._lock:
            self._lost_figures += 1
            self._update_counts()
        logger.warning("satmon: could not render the figure %s for MLflow on any disk (%s); "
                       "%d figure(s) lost so far", name, _short(error), self._lost_figures)

    def log_table(self, data: Mapping[str, list], artifact_file: str) -> None:
        """Record table rows (``{column: [values]}``, JSON-safe) appended to ``artifact_file``."""
        name = _artifact_name(artifact_file, (".json",))
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise ValueError(f"log_table needs columns of equal length. Got lengths "
                             f"{ {k: len(v) for k, v in data.items()} }.")
        if data and lengths != {0}:
            # NaN / inf cells become None: the spool and MLflow's table JSON are strict JSON.
            self._record({"kind": "table", "artifact_file": name,
                          "data": {str(k): json_safe(list(v)) for k, v in data.items()}})

    def _check_open(self) -> None:
        if not self._opened:
            raise RuntimeError("MlflowSink is not open; call open() first (or use the sink "
                               "through SaturationCallback, which opens it).")

    def _record(self, record: dict[str, Any]) -> None:
        self._check_open()
        with self._lock:
            self._seq += 1
            record = {"seq": self._seq, **record}
            line = json.dumps(record, allow_nan=False)
            self._pending.append(record)
            if not (self._spool_usable and self._append(line)):
                self._memory_only.add(record["seq"])
                self.stats.unspooled += 1
            self.stats.recorded += 1
            self._update_counts()
            self._lock.notify_all()

    def _figure_folders(self) -> list[Path]:
        """Where figures are rendered: beside the spool, else in the temporary folder."""
        return [self._side("-artifacts"), Path(tempfile.gettempdir()) / "satmon-mlflow-figures"]

    def _is_own_figure(self, local_path: str) -> bool:
        """True when ``local_path`` is ``<figure folder>/<one folder>/<file>`` of this sink.

        A spool names files to upload and folders to delete afterwards: a tampered one must
        not reach anything else.
        """
        grandparent = os.path.realpath(os.path.dirname(os.path.dirname(local_path)))
        real = os.path.realpath(local_path)
        bases = {os.path.realpath(b) for b in self._figure_folders()}
        return grandparent in bases and \
            os.path.dirname(os.path.dirname(real)) == grandparent

    def _update_counts(self) -> None:
        """Refresh the derived counters (lock held)."""
        self.stats.pending = len(self._pending)
        self.stats.kept = self.stats.pending - len(self._memory_only)
        self.stats.lost = self._lost_figures + (len(self._memory_only) if self._closed else 0)

    # -- spool files --------------------------------------------------------------------

    def _append(self, line: str) -> bool:
        """Append one record line to the spool; False (and a warning) when the disk refuses."""
        try:
            # After a failed write the file may end in a partial line: a newline first keeps
            # the next record on a line of its own (an empty line is skipped on load).
            _append_line(self._path, ("\n" if self._append_failing else "") + line)
        except OSError as exc:
            if not self._append_failing:
                self._append_failing = True
                logger.warning("satmon: cannot write the MLflow spool %s (%s); records are "
                               "held in memory only until it is writable again, and lost if "
                               "the process ends before MLflow takes them", self._path,
                               _short(exc))
            return False
        if self._append_failing:
            self._append_failing = False
            logger.warning("satmon: the MLflow spool %s is writable again; %d records so far "
                           "were held in memory only", self._path, self.stats.unspooled)
        return True

    def _give_up_spool(self, exc: OSError) -> None:
        self._spool_usable = False
        logger.warning("satmon: cannot use the MLflow spool %s (%s); records are buffered in "
                       "memory only: MLflow still receives them, but those it has not taken "
                       "when the sink closes are lost (counted in stats.lost)", self._path,
                       _short(exc))

    def _read_meta(self) -> dict[str, Any]:
        meta_path = self._side(".meta.json")
        if not meta_path.exists():
            return {}
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            meta = None
        fields_ok = isinstance(meta, dict) and all(
            meta.get(k) is None or isinstance(meta.get(k), str)
            for k in ("tracking_uri", "run_id", "parent_run_id"))
        if not fields_ok:
            logger.warning("satmon: ignoring unreadable spool metadata %s", meta_path)
            return {}
        return meta

    def _write_meta(self) -> None:
        meta = {"tracking_uri": self._uri, "run_id": self._resolved_run_id,
                "owned": self._owned, "parent_run_id": self._parent_run_id}
        atomic_write_text(self._side(".meta.json"), json.dumps(meta))

    def _read_ack(self) -> int:
        ack_path = self._side(".ack")
        if not ack_path.exists():
            return 0
        try:
            text = ack_path.read_text(encoding="utf-8").strip()
            acked = int(text)
            if acked < 0:
                raise ValueError(text)
            return acked
        except (OSError, ValueError) as exc:
            # Resending everything is safe (at least once); skipping unsent records is not.
            logger.warning("satmon: ignoring unreadable spool acknowledgement %s (%s); every "
                           "record in the spool is sent", ack_path, _short(exc))
            return 0

    def _load_spool(self) -> None:
        """Read an existing spool; every line is checked before any record is queued."""
        self._acked = self._read_ack()
        if not self._path.exists():
            return
        records: list[dict[str, Any]] = []
        seen: set[int] = set()
        bad: list[str] = []
        with open(self._path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    # A process killed mid-write leaves a truncated last line; anything else
                    # unreadable is damage.
                    reason = "not valid JSON"
                else:
                    reason = _invalid_reason(record)
                    if reason is None and record["seq"] in seen:
                        reason = f"repeats seq {record['seq']}"
                    elif reason is None and record["kind"] == "artifact" and \
                            not self._is_own_figure(record["local_path"]):
                        reason = "an artifact outside the sink's figure folders"
                if reason is not None:
                    bad.append(f"line {n}: {reason}")
                    continue
                seen.add(record["seq"])
                records.append(record)
        # Send in seq order: the acknowledgement is "every seq up to N was taken".
        records.sort(key=lambda r: r["seq"])
        for record in records:
            self._seq = max(self._seq, record["seq"])
            if record["seq"] > self._acked:
                self._pending.append(record)
        self.stats.recorded += len(self._pending)
        self.stats.skipped += len(bad)
        self._update_counts()
        if bad:
            logger.warning("satmon: skipped %d unreadable or invalid lines of spool %s (%s); "
                           "the other %d unsent records are sent", len(bad), self._path,
                           "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else ""),
                           len(self._pending))

    def _acknowledge(self, n: int) -> None:
        """Drop the first ``n`` pending records after MLflow took them (lock held).

        Never raises for the disk: a spool that cannot be updated costs a possible resend by
        a later flush_spool, never the sender thread.
        """
        last = None
        for _ in range(n):
            last = self._pending.popleft()
            self._memory_only.discard(last["seq"])
        if last is not None:
            self._acked = int(last["seq"])
        if self._spool_usable:
            self._save_progress()
        self._update_counts()
        self._lock.notify_all()

    def _save_progress(self) -> None:
        ack_path = self._side(".ack")
        try:
            if self._pending:
                atomic_write_text(ack_path, str(self._acked))
            else:
                # Everything sent: start the spool afresh so it never grows past one outage.
                try:
                    self._path.unlink(missing_ok=True)
                except OSError:
                    # The spool cannot go (read-only folder): at least mark its records sent.
                    atomic_write_text(ack_path, str(self._acked))
                else:
                    ack_path.unlink(missing_ok=True)
        except OSError as exc:
            if not self._ack_failing:
                self._ack_failing = True
                logger.warning("satmon: cannot update the MLflow spool's acknowledgement %s "
                               "(%s); sending goes on, but flushing this spool later may send "
                               "records MLflow already has a second time", ack_path,
                               _short(exc))
            return
        self._ack_failing = False

    def _remove_side_files(self) -> None:
        """After a drained close: drop the side files, unless a stale spool still needs them."""
        try:
            if self._path.exists():
                return
            self._side(".meta.json").unlink(missing_ok=True)
        except OSError:
            return
        if not self._kept_figures:  # a rejected figure stays beside its .rejected.jsonl line
            shutil.rmtree(self._side("-artifacts"), ignore_errors=True)

    # -- sender thread ------------------------------------------------------------------

    def _worker(self) -> None:
        try:
            self._send_loop()
        except Exception:  # noqa: BLE001 - last resort: say so with the numbers
            logger.exception("satmon: the MLflow sender thread stopped unexpectedly with %d "
                             "records unsent (kept in %s)", len(self._pending), self._path)

    def _send_loop(self) -> None:
        delay = self.retry_interval_s
        client = None
        while True:
            with self._lock:
                while not self._pending and not self._closing and not self._abandoned:
                    self._lock.wait()
                if self._abandoned:
                    return
                if not self._pending:
                    break
                batch = self._take_batch()
            try:
                if client is None:
                    mlflow = require("mlflow", feature="logging to MLflow")
                    client = mlflow.MlflowClient(tracking_uri=self._uri)
                self._ensure_run(client)
                self._send(client, batch)
            except Exception as exc:  # noqa: BLE001 - any failure: classify, keep the record
                kind = _failure_kind(exc)
                if kind == "error":
                    seq = batch[0]["seq"]
                    self._attempts = self._attempts + 1 if self._attempt_seq == seq else 1
                    self._attempt_seq = seq
                    if self._attempts >= MAX_SEND_ATTEMPTS:
                        kind = "permanent"
                if kind == "permanent":
                    self._attempt_seq, self._attempts = None, 0
                    if len(batch) > 1:
                        # Find the refused record: resend this batch one record at a time, so
                        # only the record MLflow refuses is set aside.
                        self._singles = len(batch)
                    else:
                        self._singles = max(self._singles - 1, 0)
                        self._reject(batch[0], exc)
                    continue
                self.stats.failures += 1
                if kind == "outage" and not self._in_outage:
                    self._in_outage = True
                    self.stats.outages += 1
                    logger.warning("satmon: MLflow at %s is not answering (%s); records are "
                                   "kept in %s and sent when it answers again", self._uri,
                                   _short(exc), self._path)
                elif kind == "error":
                    logger.warning("satmon: sending %d record(s) to MLflow at %s failed (%s); "
                                   "attempt %d of %d", len(batch), self._uri, _short(exc),
                                   self._attempts, MAX_SEND_ATTEMPTS)
                with self._lock:
                    if not self._abandoned:
                        # Closing: one more try per wake-up until close() gives up waiting.
                        self._lock.wait(min(delay, 1.0) if self._closing else delay)
                delay = min(max(delay, 0.1) * 2, self.max_retry_interval_s)
                continue
            if self._in_outage:
                logger.warning("satmon: MLflow at %s answers again; spooled records sent",
                               self._uri)
                self._in_outage = False
            delay = self.retry_interval_s
            self._attempt_seq, self._attempts = None, 0
            self._singles = max(self._singles - 1, 0)
            with self._lock:
                self.stats.sent += len(batch)
                self._acknowledge(len(batch))
                late = self._abandoned and not self._pending
            if late:
                # A request close() gave up on completed after all: nothing is left to flush.
                self._remove_side_files()
        self._finish(client)

    def _take_batch(self) -> list[dict[str, Any]]:
        """Leading records that fit one request: consecutive metrics/tags, else one record."""
        first = self._pending[0]
        if first["kind"] not in ("metrics", "tags") or self._singles:
            return [first]
        batch, n_metrics, n_tags = [], 0, 0
        for record in self._pending:
            if record["kind"] == "metrics":
                size = len(record["values"])
                if batch and n_metrics + size > MAX_METRICS_PER_REQUEST:
                    break
                n_metrics += size
            elif record["kind"] == "tags":
                size = len(record["tags"])
                if batch and n_tags + size > MAX_TAGS_PER_REQUEST:
                    break
                n_tags += size
            else:
                break
            batch.append(record)
        return batch

    def _ensure_run(self, client: Any) -> None:
        if self._resolved_run_id is not None:
            return
        exp_name = self.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        exp_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"
        if exp_name:
            exp = client.get_experiment_by_name(exp_name)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(exp_name)
        tags = {"mlflow.parentRunId": self._parent_run_id} if self._parent_run_id else None
        run = client.create_run(exp_id, run_name=self.run_name, tags=tags)
        self._resolved_run_id = run.info.run_id
        self._owned = True
        if self._spool_usable:
            try:
                self._write_meta()
            except OSError as exc:
                logger.warning("satmon: cannot record the new MLflow run %s in %s (%s); a "
                               "later flush_spool of this spool would not know the run",
                               self._resolved_run_id, self._side(".meta.json"), _short(exc))

    def _send(self, client: Any, batch: list[dict[str, Any]]) -> None:
        entities = require("mlflow.entities", feature="logging to MLflow")
        run_id = self._resolved_run_id
        kind = batch[0]["kind"]
        if kind in ("metrics", "tags"):
            metrics = [entities.Metric(k, v, r["ts"], r["step"])
                       for r in batch if r["kind"] == "metrics" for k, v in r["values"].items()]
            tags = [entities.RunTag(k, v)
                    for r in batch if r["kind"] == "tags" for k, v in r["tags"].items()]
            client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True)
        elif kind == "params":
            params = [entities.Param(k, v) for k, v in batch[0]["params"].items()]
            for lo in range(0, len(params), MAX_PARAMS_PER_REQUEST):
                client.log_batch(run_id, params=params[lo:lo + MAX_PARAMS_PER_REQUEST],
                                 synchronous=True)
        elif kind == "artifact":
            local = batch[0]["local_path"]
            if os.path.isfile(local):
                client.log_artifact(run_id, local, batch[0]["artifact_path"])
                # The figure's own folder (checked when the spool was loaded).
                shutil.rmtree(os.path.dirname(local), ignore_errors=True)
            else:
                logger.warning("satmon: spooled artifact %s vanished before upload", local)
        elif kind == "table":
            client.log_table(run_id, data=batch[0]["data"],
                             artifact_file=batch[0]["artifact_file"])
        else:
            raise ValueError(f"unknown spool record kind {kind!r}")

    def _reject(self, record: dict[str, Any], exc: BaseException) -> None:
        where = self._side(".rejected.jsonl")
        why = ("MLflow refused" if _is_permanent(exc)
               else f"after {MAX_SEND_ATTEMPTS} failed attempts, gave up on")
        try:
            with open(where, "a", encoding="utf-8") as f:
                f.write(json.dumps({**record, "error": _short(exc)}) + "\n")
        except OSError as write_exc:
            logger.warning("satmon: %s one %s record (%s), and it could not be kept in %s (%s)",
                           why, record["kind"], _short(exc), where, _short(write_exc))
        else:
            if record["kind"] == "artifact":
                self._kept_figures = True
            logger.warning("satmon: %s one %s record (%s); it is kept in %s", why,
                           record["kind"], _short(exc), where)
        with self._lock:
            self.stats.rejected += 1
            self._acknowledge(1)

    def _finish(self, client: Any) -> None:
        if not (self._owned and self._resolved_run_id and client is not None):
            return
        try:
            client.set_terminated(self._resolved_run_id, status=self._terminate_status
                                  or "FINISHED")
        except Exception as exc:  # noqa: BLE001 - ending our run is best effort
            logger.warning("satmon: could not end MLflow run %s (%s)", self._resolved_run_id,
                           _short(exc))


def flush_spool(path: str | os.PathLike, *, tracking_uri: str | None = None,
                timeout_s: float = 120.0, retry_interval_s: float = 1.0,
                max_retry_interval_s: float = 10.0) -> SinkStats:
    """Send the unsent records of a spool file a previous sink left, to the run it recorded.

    Bad lines are skipped and counted (``stats.skipped``, with a warning naming the file).
    Returns the counters; ``stats.pending == 0`` means everything was sent or set aside.
    Raises FileNotFoundError when there is no spool at ``path``, OSError when it cannot be
    read.
    """
    path = Path(path)
    if not path.exists() and not path.with_name(path.name + ".meta.json").exists():
        raise FileNotFoundError(f"No satmon MLflow spool at {path}.")
    if path.exists():
        with open(path, "rb"):
            pass  # an unreadable spool is an error here, not something to degrade around
    sink = MlflowSink(spool_path=path, tracking_uri=tracking_uri, close_timeout_s=timeout_s,
                      retry_interval_s=retry_interval_s,
                      max_retry_interval_s=max_retry_interval_s)
    sink.open()
    sink.close(timeout_s=timeout_s)
    return sink.stats


def _artifact_name(artifact_file: str, suffixes: tuple[str, ...]) -> str:
    if not isinstance(artifact_file, str) or not artifact_file.endswith(suffixes):
        raise ValueError(f"The artifact file must be a run-relative path ending in "
                         f"{' or '.join(suffixes)}. Got {artifact_file!r} instead.")
    parts = [p for p in artifact_file.split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def _append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline; on failure cut off whatever part of it was written."""
    data = memoryview((line + "\n").encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _str_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _invalid_reason(record: Any) -> str | None:
    """Why a spool line cannot be a record (None when it can): checked before anything is sent."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    if not _is_int(record.get("seq")) or record["seq"] < 1:
        return "no positive integer 'seq'"
    kind = record.get("kind")
    if kind not in _KINDS:
        return f"unknown kind {kind!r}" if "kind" in record else "no 'kind'"
    if kind == "metrics":
        values = record.get("values")
        if not (_is_int(record.get("step")) and _is_int(record.get("ts"))):
            return "metrics without integer 'step' and 'ts'"
        if not (isinstance(values, dict) and values and all(
                isinstance(k, str) and _is_finite_number(v) for k, v in values.items())):
            return "'values' is not an object of finite numbers"
    elif kind == "tags" and not _str_map(record.get("tags")):
        return "'tags' is not an object of strings"
    elif kind == "params" and not _str_map(record.get("params")):
        return "'params' is not an object of strings"
    elif kind == "artifact" and not (
            isinstance(record.get("local_path"), str)
            and (record.get("artifact_path") is None
                 or isinstance(record.get("artifact_path"), str))):
        return "artifact without a string 'local_path'"
    elif kind == "table":
        data = record.get("data")
        if not (isinstance(record.get("artifact_file"), str) and isinstance(data, dict) and data
                and all(isinstance(k, str) and isinstance(v, list) for k, v in data.items())):
            return "table without 'artifact_file' and an object of columns 'data'"
    return None


_PERMANENT_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST",
                    "INVALID_STATE", "PERMISSION_DENIED", "RESOURCE_ALREADY_EXISTS"}
_OUTAGE_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
# Status codes a proxy or load balancer answers while the tracking server behind it is down.
_OUTAGE_STATUS = re.compile(r"too many (429|502|503|504) error responses")


def _is_permanent(exc: BaseException) -> bool:
    """True when resending cannot succeed (MLflow refused the content, not the connection)."""
    if isinstance(exc, (ValueError, TypeError, LookupError, AttributeError)) and \
            not type(exc).__module__.startswith("mlflow"):
        return True
    code = getattr(exc, "error_code", None)
    return isinstance(code, str) and code in _PERMANENT_CODES


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_unreachable(exc: BaseException) -> bool:
    """True when the server did not answer (refused, reset, timed out, or a proxy's 50x)."""
    if getattr(exc, "error_code", None) in _OUTAGE_CODES:
        return True
    for cause in _causes(exc):
        if isinstance(cause, (ConnectionError, TimeoutError)):
            return True
        top = type(cause).__module__.split(".")[0]
        if top in ("requests", "urllib3") and not _OUTAGE_STATUS.search(str(cause)) and \
                "error responses" in str(cause):
            return False  # the server answered, with errors (e.g. 500), until retries ran out
        if top in ("requests", "urllib3", "http"):
            return True
    return bool(_OUTAGE_STATUS.search(str(exc)))


def _failure_kind(exc: BaseException) -> str:
    """``permanent`` (set aside now), ``outage`` (retry until it answers) or ``error``
    (retry at most MAX_SEND_ATTEMPTS times)."""
    if _is_permanent(exc):
        return "permanent"
    if _is_unreachable(exc):
        return "outage"
    return "error"


def _short(exc: BaseException | None) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."
