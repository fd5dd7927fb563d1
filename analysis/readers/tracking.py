"""MLflow runs: one run by id, every run of an experiment, or every run in a sqlite store.

References a reader accepts (the tracking URI comes from ``tracking_uri=``, else the
reference's ``?tracking_uri=``, else ``MLFLOW_TRACKING_URI``, else MLflow's default):

* ``mlflow://runs/<run_id>`` and MLflow's own ``runs:/<run_id>``;
* ``mlflow://experiments/<name>`` (every run of the experiment);
* either with ``?tracking_uri=<uri>``, e.g.
  ``mlflow://runs/0a1b...?tracking_uri=http://127.0.0.1:5000``;
* a bare 32-hex-digit run id (when no file of that name exists);
* the path of an MLflow sqlite store (``mlflow.db``): every run in it.

Only the metric keys a :class:`satmon.keys.KeyMap` needs are fetched, each with
``MlflowClient.get_metric_history``; values logged at the same step keep the later one
(by timestamp). Keys with ``@`` rewritten as ``_at_`` (verl's MLflow logger) are matched by the
verl preset. A held-out key's sample size is read from ``<key>/n`` when the run has it
(satmon's own ``satmon/heldout/<name>/n``). The run's parameters and user tags (not MLflow's
``mlflow.*`` system tags) become ``run.metadata`` under their own names, so ``--grid-cols
lab.setting`` or a report's metadata columns work on MLflow runs.

Reading from a tracking server is bounded: every HTTP request waits at most
``MLFLOW_HTTP_REQUEST_TIMEOUT`` seconds for an answer and is retried
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` times (MLflow's own settings, read at each request). Where
the environment sets neither, the reader uses :data:`DEFAULT_REQUEST_TIMEOUT_S` (10 s) and
:data:`DEFAULT_REQUEST_MAX_RETRIES` (1) instead of MLflow's 120 s and 7 retries, so a server
that accepts connections and never answers fails one request after about 2 x 10 s (MLflow
adds at most 1 s of jitter between tries). A server that does not answer, or cannot be reached,
raises :class:`TrackingServerError` naming the tracking URI, the reference and the timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from satmon._optional import require
from satmon.analysis.readers.metric_log import MetricLog, build_run
from satmon.keys import KeyMap
from satmon.run import Run

log = logging.getLogger("satmon.analysis.readers")

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
SQLITE_MAGIC = b"SQLite format 3\x00"

#: Seconds one HTTP request to a tracking server may wait for its answer, unless
#: ``MLFLOW_HTTP_REQUEST_TIMEOUT`` is set.
DEFAULT_REQUEST_TIMEOUT_S = 10
#: Retries of a failed HTTP request, unless ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is set.
DEFAULT_REQUEST_MAX_RETRIES = 1
_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"


class TrackingServerError(ConnectionError, ValueError):
    """A tracking server did not answer in time, or could not be reached.

    A ConnectionError (what it is) and a ValueError (so callers and the CLI that report bad
    references report this one the same way).
    """


@dataclass(frozen=True)
class MlflowReference:
    """Where to find MLflow runs: ``kind`` is ``run``, ``experiment`` or ``store``."""

    kind: str
    ident: str
    tracking_uri: str | None


def parse_reference(source: str, *, tracking_uri: str | None = None,
                    forced: bool = False) -> MlflowReference | None:
    """Recognise an MLflow reference (None when ``source`` is not one).

    ``forced`` (``format="mlflow"``) lets a bare string that is not a run id name an
    experiment.
    """
    if source.startswith("mlflow://"):
        parts = urlsplit(source)
        query = parse_qs(parts.query)
        uri = tracking_uri or (query["tracking_uri"][0] if "tracking_uri" in query else None)
        path = unquote(parts.netloc + parts.path).strip("/")
        kind, _, ident = path.partition("/")
        if kind in ("runs", "run") and ident:
            return MlflowReference("run", ident, uri)
        if kind in ("experiments", "experiment") and ident:
            return MlflowReference("experiment", ident, uri)
        raise ValueError(f"Unrecognised MLflow reference {source!r}: use "
                         "mlflow://runs/<run_id> or mlflow://experiments/<name>, optionally "
                         "with ?tracking_uri=<uri>.")
    if source.startswith("runs:/"):
        ident = source[len("runs:/"):].strip("/").split("/", 1)[0]
        if ident:
            return MlflowReference("run", ident, tracking_uri)
    if _RUN_ID.match(source) and not Path(source).exists():
        return MlflowReference("run", source, tracking_uri)
    if forced and source:
        return MlflowReference("experiment", source, tracking_uri)
    return None


def _public_uri(uri: str | None) -> str | None:
    """The URI without user:password, for metadata that may be shared."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return uri


def _client(uri: str | None):
    tracking = require("mlflow.tracking", feature="reading MLflow runs")
    return tracking.MlflowClient(tracking_uri=uri)


def _run_to_satmon(client, mlrun, keymap: KeyMap, *, uri: str | None,
                   name: str | None, experiment_name: str | None) -> Run:
    run_id = mlrun.info.run_id
    source = f"mlflow://runs/{run_id}"
    mlog = MetricLog(source=source, format="mlflow")
    present = list(mlrun.data.metrics)
    # Resolve against the keys the run has before fetching, so only needed histories travel.
    try:
        resolved = keymap.resolve(present, strict=True, require_train=True)
    except KeyError as exc:
        raise KeyError(f"{source}: {exc.args[0]}") from None
    keys = {resolved.train_key, *(k for _, k in resolved.heldout), *(k for _, k in resolved.aux)}
    # Held-out sample sizes travel as "<key>/n" (satmon's own sink and tidy exports).
    keys |= {f"{k}/n" for _, k in resolved.heldout if f"{k}/n" in mlrun.data.metrics}
    for key in sorted(k for k in keys if k):
        history = client.get_metric_history(run_id, key)
        # Same-step values keep the later one: order by logging time (stable for ties).
        history = sorted(history, key=lambda m: m.timestamp)
        if len(history) > 1 and all(m.step == 0 for m in history):
            raise ValueError(f"{source}: metric {key!r} has {len(history)} values, all at step "
                             "0; it was logged without steps, so no series can be built.")
        for m in history:
            mlog.add(m.step, key, m.value)
    mlog.n_records = len(set().union(*(mlog.history(k)[0] for k in mlog.keys())))
    # The run's parameters and user tags are metadata (for grids and report columns) under
    # their own names; MLflow's system tags (mlflow.*) are left out, and the reader's own keys
    # below win over a parameter or tag of the same name.
    mlog.metadata.update({k: v for k, v in mlrun.data.tags.items()
                          if not k.startswith("mlflow.")})
    mlog.metadata.update(dict(mlrun.data.params))
    config = _monitor_config_from_params(mlrun.data.params)
    if config:
        mlog.metadata["monitor_config"] = config
    mlog.metadata.update({
        "tracking_uri": _public_uri(uri or os.environ.get("MLFLOW_TRACKING_URI")),
        "run_id": run_id,
        "run_name": mlrun.info.run_name,
        "experiment_id": mlrun.info.experiment_id,
        "experiment_name": experiment_name,
        "status": mlrun.info.status,
    })
    return build_run(mlog, keymap, name=name, default_name=mlrun.info.run_name or run_id)


def _monitor_config_from_params(params: dict[str, str], prefix: str = "satmon.") -> dict:
    """The engine configuration satmon's callback logged as ``satmon.<field>`` parameters
    (values as MLflow keeps them: strings; JSON for lists and mappings), so a replay of the
    run uses the live configuration."""
    import json

    from satmon.monitor import MonitorConfig

    fields = set(MonitorConfig.__dataclass_fields__)
    out = {}
    for key, text in params.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name not in fields or name == "prior":
            continue
        try:
            out[name] = json.loads(text)
        except ValueError:
            if text != "None":
                out[name] = text
        else:
            if isinstance(out[name], list):
                out[name] = tuple(out[name])
    return out


def _experiment_runs(client, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs += list(page)
        token = page.token
        if not token:
            return runs


@contextlib.contextmanager
def _bounded_requests():
    """Apply the reader's request limits where the environment sets none.

    MLflow has no per-client timeout; it reads these variables at every request, so they are
    set for the duration of the read and removed afterwards.
    """
    added = [name for name in (_TIMEOUT_ENV, _RETRIES_ENV) if name not in os.environ]
    defaults = {_TIMEOUT_ENV: str(DEFAULT_REQUEST_TIMEOUT_S),
                _RETRIES_ENV: str(DEFAULT_REQUEST_MAX_RETRIES)}
    for name in added:
        os.environ[name] = defaults[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _unreachable(exc: BaseException) -> str | None:
    """``timeout`` or ``unreachable`` when ``exc`` comes from the connection, else None."""
    seen, kind, current = set(), None, exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if isinstance(current, TimeoutError) or "Timeout" in name:
            return "timeout"
        top = type(current).__module__.split(".")[0]
        if isinstance(current, ConnectionError) or (
                top in ("requests", "urllib3") and "error responses" not in str(current)):
            kind = "unreachable"
        current = current.__cause__ or current.__context__
    return kind


def _server_error(ref: MlflowReference, where: str, kind: str) -> TrackingServerError:
    timeout = os.environ.get(_TIMEOUT_ENV, str(DEFAULT_REQUEST_TIMEOUT_S))
    retries = os.environ.get(_RETRIES_ENV, str(DEFAULT_REQUEST_MAX_RETRIES))
    what = f"mlflow://{ref.kind}s/{ref.ident}" if ref.kind != "store" else "the store"
    if kind == "timeout":
        problem = (f"did not answer within {timeout} s ({_TIMEOUT_ENV}={timeout}, "
                   f"{_RETRIES_ENV}={retries})")
    else:
        problem = f"could not be reached ({_RETRIES_ENV}={retries})"
    return TrackingServerError(
        f"MLflow tracking server at {where} {problem} while reading {what}. Check that the "
        f"server is up and answering; to wait longer, raise {_TIMEOUT_ENV}.")


def read_mlflow(ref: MlflowReference, keymap: KeyMap, *, name: str | None = None) -> list[Run]:
    """Read the run(s) an MLflow reference names.

    Raises TrackingServerError when the tracking server does not answer within the request
    timeout (see the module docstring) or cannot be reached.
    """
    exceptions = require("mlflow.exceptions", feature="reading MLflow runs")
    where = _public_uri(ref.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")) or "default"
    with _bounded_requests():
        try:
            return _read_mlflow(ref, keymap, name=name, where=where)
        except exceptions.MlflowException as exc:
            kind = _unreachable(exc)
            if kind is None:
                raise
            raise _server_error(ref, where, kind) from exc


def _read_mlflow(ref: MlflowReference, keymap: KeyMap, *, name: str | None,
                 where: str) -> list[Run]:
    exceptions = require("mlflow.exceptions", feature="reading MLflow runs")
    client = _client(ref.tracking_uri)
    if ref.kind == "run":
        try:
            mlrun = client.get_run(ref.ident)
        except exceptions.MlflowException as exc:
            if _unreachable(exc):
                raise
            raise ValueError(f"MLflow run {ref.ident!r} not found at tracking URI {where}: "
                             f"{exc.message}") from None
        exp = client.get_experiment(mlrun.info.experiment_id)
        return [_run_to_satmon(client, mlrun, keymap, uri=ref.tracking_uri, name=name,
                               experiment_name=exp.name if exp else None)]
    if ref.kind == "experiment":
        exp = client.get_experiment_by_name(ref.ident)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ValueError(f"MLflow experiment {ref.ident!r} not found at tracking URI "
                             f"{where}. Experiments there: {names or 'none'}.")
        experiments = [exp]
    else:
        experiments = list(client.search_experiments())
    runs, skipped = [], []
    for exp in experiments:
        for mlrun in _experiment_runs(client, [exp.experiment_id]):
            try:
                runs.append(_run_to_satmon(client, mlrun, keymap, uri=ref.tracking_uri,
                                           name=None, experiment_name=exp.name))
            except KeyError as exc:
                # One run without the metrics (a crashed or unrelated run) must not hide the
                # others; it is named in the log, and if no run is readable the error is raised.
                skipped.append(exc)
                log.warning("skipped MLflow run %s: %s", mlrun.info.run_id, exc.args[0])
    if not runs and skipped:
        raise skipped[0]
    if not runs:
        raise ValueError(f"No MLflow runs found for {ref.kind} {ref.ident!r} at tracking URI "
                         f"{where}.")
    return runs
