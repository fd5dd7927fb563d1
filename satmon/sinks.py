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
from typing import Any, Mapping

from satmon._optional import require
from satmon.results import json_safe

logger = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation).
MAX_KEY_LENGTH = 250
MAX_METRICS_PER_REQUEST = 1000
MAX_TAGS_PER_REQUEST = 100
MAX_TAG_VALUE_LENGTH = 8000

_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")
_TRUE_WORDS = {"1", "true", "yes", "y", "on"}


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

    Attributes
    ----------
    recorded: records written to the spool.
    sent: records MLflow accepted.
    failures: send attempts that failed for a transient reason (server down, timeout ...).
    outages: separate periods during which MLflow did not answer.
    rejected: records MLflow refused outright (kept in the ``.rejected.jsonl`` file).
    pending: records still in the spool.
    """

    recorded: int = 0
    sent: int = 0
    failures: int = 0
    outages: int = 0
    rejected: int = 0
    pending: int = 0


class MlflowSink:
    """Send metrics, tags, figures and tables to an MLflow run without ever blocking training.

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
        self._seq = 0
        self._acked = 0
        self._owned = False
        self._parent_run_id: str | None = None
        self._resolved_run_id: str | None = None
        self._uri: str | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._opened = False
        self._terminate_status: str | None = None
        self._in_outage = False
        self._singles = 0
        self.stats = SinkStats()
        self._path: Path | None = None

    # -- paths --------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The spool file (None before :meth:`open`)."""
        return self._path

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
        server. Returns the sink.
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
        self._path.parent.mkdir(parents=True, exist_ok=True)
        meta = self._read_meta()
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
        self._load_spool()
        self._write_meta()
        self._opened = True
        self._thread = threading.Thread(target=self._worker, name="satmon-mlflow-sink",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self, *, status: str = "FINISHED", timeout_s: float | None = None) -> bool:
        """Send what is left (waiting at most ``timeout_s``), end an owned run, stop the thread.

        Returns True when the spool is empty. Otherwise the unsent records stay in
        :attr:`path` and a warning says how to send them later (:func:`flush_spool`).
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
        drained = self.stats.pending == 0 and not (self._thread and self._thread.is_alive())
        if drained:
            # Nothing left to resend: the spool's side files have no further use.
            self._side(".meta.json").unlink(missing_ok=True)
            shutil.rmtree(self._side("-artifacts"), ignore_errors=True)
        else:
            logger.warning(
                "satmon: MLflow did not take %d records within %.0f s; they are kept in %s. "
                "Send them later with: python -c \"from satmon.sinks import flush_spool; "
                "flush_spool('%s')\"", self.stats.pending, timeout, self._path, self._path)
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

    # -- recording (training thread; never raises for MLflow trouble) ------------------

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

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Record a matplotlib figure as a PNG artifact at ``artifact_file`` (run-relative).

        The figure is rendered now, on the calling thread (matplotlib is not thread-safe), into
        the spool folder; the sender thread uploads the file.
        """
        self._check_open()
        name = _artifact_name(artifact_file, (".png",))
        folder = self._side("-artifacts") / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True, exist_ok=True)
        local = folder / posixpath.basename(name)
        figure.savefig(local, format="png", dpi=110, bbox_inches="tight")
        self._record({"kind": "artifact", "local_path": str(local),
                      "artifact_path": posixpath.dirname(name) or None})

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
            try:
                with open(self._path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            except OSError:
                # A full or read-only disk must not stop training; the record is still sent
                # from memory, it only loses its crash protection.
                logger.exception("satmon: could not write the MLflow spool %s", self._path)
            self._pending.append(record)
            self.stats.recorded += 1
            self.stats.pending = len(self._pending)
            self._lock.notify_all()

    # -- spool files --------------------------------------------------------------------

    def _read_meta(self) -> dict[str, Any]:
        meta_path = self._side(".meta.json")
        if not meta_path.exists():
            return {}
        try:
            return json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("satmon: ignoring unreadable spool metadata %s", meta_path)
            return {}

    def _write_meta(self) -> None:
        meta = {"tracking_uri": self._uri, "run_id": self._resolved_run_id,
                "owned": self._owned, "parent_run_id": self._parent_run_id}
        _atomic_write(self._side(".meta.json"), json.dumps(meta))

    def _load_spool(self) -> None:
        ack_path = self._side(".ack")
        try:
            self._acked = int(ack_path.read_text().strip()) if ack_path.exists() else 0
        except (OSError, ValueError):
            self._acked = 0
        if not self._path.exists():
            return
        with open(self._path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    # A process killed mid-write leaves at most one truncated last line.
                    logger.warning("satmon: skipping an unreadable line %d of spool %s",
                                   n, self._path)
                    continue
                self._seq = max(self._seq, int(record.get("seq", 0)))
                if int(record.get("seq", 0)) > self._acked:
                    self._pending.append(record)
        self.stats.pending = len(self._pending)

    def _acknowledge(self, n: int) -> None:
        """Drop the first ``n`` pending records after MLflow took them (lock held)."""
        last = None
        for _ in range(n):
            last = self._pending.popleft()
        if last is not None:
            self._acked = int(last["seq"])
        if self._pending:
            _atomic_write(self._side(".ack"), str(self._acked))
        else:
            # Everything sent: start the spool afresh so it never grows past one outage.
            for p in (self._path, self._side(".ack")):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
        self.stats.pending = len(self._pending)
        self._lock.notify_all()

    # -- sender thread ------------------------------------------------------------------

    def _worker(self) -> None:
        delay = self.retry_interval_s
        client = None
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._lock.wait()
                if not self._pending and self._closing:
                    break
                batch = self._take_batch()
            try:
                if client is None:
                    mlflow = require("mlflow", feature="logging to MLflow")
                    client = mlflow.MlflowClient(tracking_uri=self._uri)
                self._ensure_run(client)
                self._send(client, batch)
            except Exception as exc:  # noqa: BLE001 - any failure: classify, keep the record
                if _is_permanent(exc):
                    if len(batch) > 1:
                        # Find the refused record: resend this batch one record at a time, so
                        # only the record MLflow refuses is set aside.
                        self._singles = len(batch)
                    else:
                        self._singles = max(self._singles - 1, 0)
                        self._reject(batch[0], exc)
                    continue
                self.stats.failures += 1
                if not self._in_outage:
                    self._in_outage = True
                    self.stats.outages += 1
                    logger.warning("satmon: MLflow at %s is not answering (%s); records are "
                                   "kept in %s and sent when it answers again", self._uri,
                                   _short(exc), self._path)
                with self._lock:
                    if self._closing:
                        # Closing: one more try per wake-up until close() gives up waiting.
                        self._lock.wait(min(delay, 1.0))
                    else:
                        self._lock.wait(delay)
                delay = min(max(delay, 0.1) * 2, self.max_retry_interval_s)
                continue
            if self._in_outage:
                logger.warning("satmon: MLflow at %s answers again; spooled records sent",
                               self._uri)
                self._in_outage = False
            delay = self.retry_interval_s
            self._singles = max(self._singles - 1, 0)
            with self._lock:
                self._acknowledge(len(batch))
                self.stats.sent += len(batch)
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
        self._write_meta()

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
        elif kind == "artifact":
            local = batch[0]["local_path"]
            if os.path.exists(local):
                client.log_artifact(run_id, local, batch[0]["artifact_path"])
                shutil.rmtree(os.path.dirname(local), ignore_errors=True)
            else:
                logger.warning("satmon: spooled artifact %s vanished before upload", local)
        elif kind == "table":
            client.log_table(run_id, data=batch[0]["data"],
                             artifact_file=batch[0]["artifact_file"])
        else:
            raise ValueError(f"unknown spool record kind {kind!r}")

    def _reject(self, record: dict[str, Any], exc: BaseException) -> None:
        logger.warning("satmon: MLflow refused a %s record (%s); it is kept in %s",
                       record.get("kind"), _short(exc), self._side(".rejected.jsonl"))
        try:
            with open(self._side(".rejected.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps({**record, "error": _short(exc)}) + "\n")
        except OSError:
            logger.exception("satmon: could not write %s", self._side(".rejected.jsonl"))
        with self._lock:
            self._acknowledge(1)
            self.stats.rejected += 1

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
                timeout_s: float = 120.0) -> SinkStats:
    """Send the unsent records of a spool file a previous sink left, to the run it recorded.

    Returns the counters; ``stats.pending == 0`` means everything was sent.
    """
    path = Path(path)
    if not path.exists() and not path.with_name(path.name + ".meta.json").exists():
        raise FileNotFoundError(f"No satmon MLflow spool at {path}.")
    sink = MlflowSink(spool_path=path, tracking_uri=tracking_uri, close_timeout_s=timeout_s,
                      retry_interval_s=1.0, max_retry_interval_s=10.0)
    sink.open()
    sink.close(timeout_s=timeout_s)
    return sink.stats


def _artifact_name(artifact_file: str, suffixes: tuple[str, ...]) -> str:
    if not isinstance(artifact_file, str) or not artifact_file.endswith(suffixes):
        raise ValueError(f"The artifact file must be a run-relative path ending in "
                         f"{' or '.join(suffixes)}. Got {artifact_file!r} instead.")
    parts = [p for p in artifact_file.split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_PERMANENT_CODES = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST",
                    "INVALID_STATE", "PERMISSION_DENIED", "RESOURCE_ALREADY_EXISTS"}


def _is_permanent(exc: BaseException) -> bool:
    """True when resending cannot succeed (MLflow refused the content, not the connection)."""
    if isinstance(exc, (ValueError, TypeError)) and not type(exc).__module__.startswith("mlflow"):
        return True
    code = getattr(exc, "error_code", None)
    return isinstance(code, str) and code in _PERMANENT_CODES


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."
