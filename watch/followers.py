"""Incremental readers of live logs: each poll returns only what was written since the last.

A follower keeps its position (file offsets, points already fetched) and hands it over as a
JSON-safe ``state_dict()``, so a restarted watcher continues where the last one stopped. No
poll re-reads a whole history.

``jsonl`` (:class:`JsonlFollower`)
    verl's file logger (``{"step": N, "data": {...}}``; ``VERL_FILE_LOGGER_PATH`` or
    ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl``) and flat JSONL records
    (``{"step": N, "key": value, ...}``; ``global_step`` / ``_step`` accepted).
``console`` (:class:`ConsoleFollower`)
    a verl console log (``step:N - key:value - ...``, parsed by
    :func:`satmon.analysis.readers.console.read_verl_console`, one line at a time) or TRL /
    transformers console output (one Python dict literal per logging step), being written.
    Terminal control bytes are removed with
    :func:`satmon.analysis.readers.console.clean_terminal_text`; carriage returns end lines.
``mlflow`` (:class:`MlflowFollower`)
    one MLflow run, on a sqlite store, a tracking server or a file store;
    :class:`MlflowExperimentRuns` finds the active runs of an experiment, one follower each.
``tensorboard`` (:class:`TensorBoardFollower`)
    a folder of TensorBoard event files (or one file): new files and appended records.

Files being written (jsonl, console)
    Only complete lines are read: a last line without its newline waits for the next poll
    (the writer is mid-line). When the run ends (:meth:`finish`) a complete-looking last line
    without a newline is read, anything else is reported and ignored.

    The file's identity (device and inode), its size and its first bytes are checked at every
    poll. A file that was **replaced** (another inode: a resumed job that writes a new file,
    a log rotated by hand), **truncated** (shorter than the position read so far: verl's file
    logger opens its file with ``"w"``, so a resumed verl job starts the file again) or
    **rewritten** (its first bytes changed) is read again from its start; the steps it
    repeats (up to the last step already fed to the monitor) are skipped by the watcher as a
    resumed run's repeats, and the steps after them continue the same run. A file that
    **disappears** is waited for (one note), and read from its start when it reappears.
    What a truncated or deleted file held beyond the last poll is gone (a resumed verl job
    logs again only the steps after its checkpoint): poll more often than jobs restart.

    A complete line that cannot be parsed (not JSON, not an object, no whole-number step)
    is skipped with a note naming the line: a live watcher must not die of one bad record.

Each record is ``(step, {key: value})``. Values are kept as logged (numbers, None, text); the
watcher turns them into the monitor's inputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The console line patterns and the log-dict parser are the reader's own, so a followed log
# and a log read after the fact are parsed alike.
from satmon.analysis.readers.console import (BOX_LINE, PROGRESS_COUNTER, TRL_DICT, TRL_PROBE,
                                             VERL_PROBE, parse_log_dict)

log = logging.getLogger("satmon.watch")

Record = tuple[int, dict[str, Any]]

#: Bytes read from a file per poll at most (a huge backlog is read over several polls).
MAX_READ_BYTES = 8 << 20
_HEAD_BYTES = 64
_STEP_KEYS = ("step", "global_step", "_step")


@dataclass
class Poll:
    """What one poll found.

    Attributes
    ----------
    records: new ``(step, values)`` records, in logged order.
    notes: sentences about what the follower worked around (replaced file, bad line ...).
    total_steps: the run's planned number of steps when the log says it (else None).
    ended: the source says the run is over (an MLflow run that is no longer RUNNING).
    grew: new data arrived (drives the idle timer; a partial line counts).
    complete_below: every step below it is complete in ``records`` and earlier polls (a
        later step was logged before the points were read), for a follower that reads its
        keys one request at a time; None when the follower cannot tell (the watcher then
        waits for a higher step in the records).
    """

    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    total_steps: int | None = None
    ended: bool = False
    grew: bool = False
    complete_below: int | None = None


class SourceError(ValueError):
    """A source that cannot be watched at all (a run that does not exist): no retry helps."""


def whole_step(value: Any) -> int | None:
    """``value`` as a step (int >= 0), or None when it is not a whole number >= 0."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and value >= 0:
        return int(value)
    return None


# -- files being written ---------------------------------------------------------------------


class _FileTail:
    """Reads the complete lines appended to one file, surviving replacement and truncation."""

    kind = "file"
    #: Bytes that end a line for this format.
    line_ends: tuple[bytes, ...] = (b"\n",)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._offset = 0
        self._ident: list[int] | None = None
        self._head = b""
        self._lineno = 0
        self._missing = False
        self._seen = False

    @property
    def source(self) -> str:
        return str(self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "offset": self._offset,
                "ident": self._ident, "head": self._head.hex(), "lineno": self._lineno,
                "missing": self._missing, "seen": self._seen, **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"the saved follower state is for a {state.get('kind')!r} source, "
                             f"not {self.kind!r}")
        self._offset = int(state["offset"])
        ident = state.get("ident")
        self._ident = None if ident is None else [int(v) for v in ident]
        self._head = bytes.fromhex(state.get("head", ""))
        self._lineno = int(state.get("lineno", 0))
        self._missing = bool(state.get("missing", False))
        self._seen = bool(state.get("seen", self._offset > 0))
        if self._offset < 0:
            raise ValueError(f"the saved offset {self._offset} is negative")
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _restart(self, why: str, notes: list[str]) -> None:
        notes.append(f"{self.path}: {why}; reading it again from its start (steps already "
                     "watched are skipped as repeats)")
        self._offset = 0
        self._lineno = 0
        self._head = b""
        self._on_restart()

    def _on_restart(self) -> None:
        pass

    def _read_lines(self, poll: Poll) -> list[tuple[int, str]]:
        """New complete lines ``(line number, text)`` since the last call."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not self._missing:
                self._missing = True
                if self._seen:
                    poll.notes.append(f"{self.path} disappeared; waiting for it to reappear")
            return []
        ident = [st.st_dev, st.st_ino]
        if self._missing and self._seen:
            poll.notes.append(f"{self.path} is back")
        self._missing = False
        if self._ident is not None and ident != self._ident:
            self._restart("the file was replaced (new inode)", poll.notes)
        elif st.st_size < self._offset:
            self._restart(f"the file was truncated ({st.st_size} bytes, {self._offset} "
                          "read before)", poll.notes)
        elif self._head and st.st_size >= len(self._head) and \
                self._read_at(0, len(self._head)) != self._head:
            self._restart("the file was rewritten (its first bytes changed)", poll.notes)
        self._ident = ident
        self._seen = True
        if st.st_size == self._offset:
            return []
        data = self._read_at(self._offset, min(st.st_size - self._offset, MAX_READ_BYTES))
        if self._head and self._read_at(0, len(self._head)) != self._head:
            # Truncated and rewritten between the checks above and this read: what was read
            # may come from the new content at the old offset. Read it again from its start.
            self._restart("the file was rewritten while it was read", poll.notes)
            return []
        if not data:
            return []
        poll.grew = True
        if self._offset == 0:
            self._head = data[:_HEAD_BYTES]
        end = max(data.rfind(e) for e in self.line_ends)
        if end < 0:
            return []  # the writer is mid-line
        complete = data[:end + 1]
        self._offset += len(complete)
        return self._split(complete)

    def _split(self, complete: bytes) -> list[tuple[int, str]]:
        text = complete.decode("utf-8", errors="replace")
        out = []
        for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
            self._lineno += 1
            out.append((self._lineno, line))
        return out

    def _read_at(self, offset: int, size: int) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                return fh.read(size)
        except FileNotFoundError:
            return b""

    def _remainder(self) -> bytes:
        """The bytes after the last complete line (a partial last line)."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return b""
        if size <= self._offset:
            return b""
        return self._read_at(self._offset, size - self._offset)


class JsonlFollower(_FileTail):
    """verl's JSONL file logger, or flat JSONL records, being written (see the module doc)."""

    kind = "jsonl"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self.atomic = True
        self._verl = None

    def _extra_state(self) -> dict[str, Any]:
        return {"verl": self._verl}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._verl = state.get("verl")

    def poll(self) -> Poll:
        poll = Poll()
        for lineno, line in self._read_lines(poll):
            self._parse(lineno, line, poll)
        self._update_atomic()
        return poll

    def finish(self) -> Poll:
        """Read a last line that has no newline (the run is over), or report it."""
        poll = Poll()
        rest = self._remainder()
        if rest.strip():
            before = len(poll.records)
            self._parse(self._lineno + 1, rest.decode("utf-8", errors="replace"), poll,
                        last=True)
            if len(poll.records) > before:
                self._offset += len(rest)
                self._lineno += 1
        return poll

    def _update_atomic(self) -> None:
        # One verl record is one whole step (verl logs a step's metrics, validation included,
        # in one call); flat records of one step may be split over lines (train, then eval).
        self.atomic = self._verl is not False

    def _parse(self, lineno: int, line: str, poll: Poll, last: bool = False) -> None:
        text = line.strip()
        if not text:
            return
        where = f"{self.path}, line {lineno}"
        try:
            record = json.loads(text)
        except (ValueError, RecursionError) as exc:
            what = "the partial last line" if last else "a line that is not valid JSON"
            poll.notes.append(f"{where}: skipped {what} ({str(exc)[:80]})")
            return
        if not isinstance(record, dict):
            poll.notes.append(f"{where}: skipped: a JSONL record must be an object, got "
                              f"{type(record).__name__}")
            return
        step_key = next((k for k in _STEP_KEYS if k in record), None)
        step = None if step_key is None else whole_step(record[step_key])
        if step is None:
            got = "no step" if step_key is None else f"step {record[step_key]!r}"
            poll.notes.append(f"{where}: skipped: {got} (a whole number >= 0 is needed under "
                              f"one of {list(_STEP_KEYS)})")
            return
        if isinstance(record.get("data"), dict) and len(record) <= 3:
            self._verl = True if self._verl is None else self._verl
            values: dict[str, Any] = {}
            _flatten("", record["data"], values)
        else:
            self._verl = False
            values = {k: v for k, v in record.items() if k not in _STEP_KEYS}
        poll.records.append((step, values))


def _flatten(prefix: str, obj: dict[str, Any], out: dict[str, Any]) -> None:
    for key, value in obj.items():
        if isinstance(value, dict):
            _flatten(f"{prefix}{key}/", value, out)
        else:
            out[f"{prefix}{key}"] = value


# verl prints "Total training steps: N"; its config dump and the format twins print
# "total_training_steps: N" (-1 / None in the dump mean "from the epochs": not matched).
_VERL_TOTAL = re.compile(r"[Tt]otal[ _]training[ _]steps'?\s*[:=]\s*(\d+)\b")
# transformers prints "  Total optimization steps = N" when training starts; TRL's config
# repr holds max_steps=N (-1 means "from the epochs").
_TRL_TOTAL = re.compile(r"Total optimization steps\s*=\s*([\d,]+)|\bmax_steps'?\s*[:=]\s*(\d+)\b")


class ConsoleFollower(_FileTail):
    """A verl or TRL console log being written (``flavor``: ``auto``, ``verl`` or ``trl``).

    verl: each ``step:N - key:value`` line is one whole step. TRL: each log dict's step is its
    own ``global_step`` / ``step`` entry, else the first training progress-bar counter
    (``N/T [``) printed after it: tqdm redraws the bar right after the dict, at the current
    step (the counter before the dict may lag: tqdm redraws at most every 0.1 s), so a dict
    waits for that counter. The training bar is the one whose total is the planned number of
    steps (``--total-steps``, or ``Total optimization steps = N`` in the log); before that is
    known, the bar of the first counter after the first log dict. Evaluation dicts (``eval_*``
    keys) take their step the same way, and the watcher merges them with the training dict of
    that step. A dict still waiting when the run ends takes the last counter seen, with a note.
    """

    kind = "console"
    line_ends = (b"\n", b"\r")

    def __init__(self, path: str | os.PathLike, *, flavor: str = "auto",
                 total_steps: int | None = None) -> None:
        super().__init__(path)
        if flavor not in ("auto", "verl", "trl"):
            raise ValueError(f"The console flavor must be 'auto', 'verl' or 'trl'. Got "
                             f"{flavor!r} instead.")
        self.flavor = flavor
        self._total = total_steps
        self._bar_total: int | None = total_steps
        self._counter: int | None = None
        self._waiting: list[dict[str, Any]] = []
        self._guessed = False

    @property
    def atomic(self) -> bool:
        return self.flavor == "verl"

    def _extra_state(self) -> dict[str, Any]:
        return {"flavor": self.flavor, "total": self._total, "bar_total": self._bar_total,
                "counter": self._counter, "waiting": self._waiting, "guessed": self._guessed}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.flavor = state.get("flavor", self.flavor)
        self._total = state.get("total", self._total)
        self._bar_total = state.get("bar_total", self._bar_total)
        self._counter = state.get("counter")
        self._waiting = list(state.get("waiting", []))
        self._guessed = bool(state.get("guessed", False))

    def _on_restart(self) -> None:
        self._counter = None
        self._waiting = []

    def poll(self) -> Poll:
        from satmon.analysis.readers.console import clean_terminal_text

        poll = Poll()
        for lineno, raw in self._read_lines(poll):
            for line in clean_terminal_text(raw):
                self._line(lineno, line, poll)
        if self._total is not None:
            poll.total_steps = self._total
        return poll

    def finish(self) -> Poll:
        from satmon.analysis.readers.console import clean_terminal_text

        poll = Poll()
        rest = self._remainder().decode("utf-8", errors="replace")
        if rest.strip():
            for line in clean_terminal_text(rest):
                self._line(self._lineno + 1, line, poll)
        if self._waiting:
            poll.notes.append(f"{self.path}: {len(self._waiting)} TRL log dict(s) at the end "
                              "have no progress-bar step; they take the last step seen")
            for values in self._waiting:
                poll.records.append((self._counter or 0, values))
            self._waiting = []
        return poll

    def _line(self, lineno: int, line: str, poll: Poll) -> None:
        if not line.strip():
            return
        if self._total is None:
            sure_trl = self.flavor == "trl" and not self._guessed
            m = (_VERL_TOTAL.search(line) if not sure_trl else None) or \
                (_TRL_TOTAL.search(line) if self.flavor != "verl" else None)
            if m:
                raw = next(g for g in m.groups() if g)
                total = int(raw.replace(",", ""))
                if total > 0:
                    self._total = total
                    if self._bar_total is None:
                        self._bar_total = total
        if (self.flavor == "verl" or (self.flavor != "trl" or self._guessed)) and \
                VERL_PROBE.search(line):
            if self.flavor == "trl":
                poll.notes.append(f"{self.path}, line {lineno}: a verl step line; reading the "
                                  "log as verl console output from here")
            self.flavor, self._guessed = "verl", False
            self._verl_line(lineno, line, poll)
            return
        if self.flavor in ("auto", "trl") and not BOX_LINE.match(line):
            self._trl_line(lineno, line, poll)

    def _verl_line(self, lineno: int, line: str, poll: Poll) -> None:
        from satmon.analysis.readers import ReadError
        from satmon.analysis.readers.console import read_verl_console

        try:
            mlog = read_verl_console(line, source=f"{self.path}, line {lineno}")
        except ReadError as exc:
            poll.notes.append(f"skipped: {exc}")
            return
        values: dict[str, Any] = {}
        step = None
        for key in mlog.keys():
            steps, vals = mlog.history(key)
            step, values[key] = steps[-1], vals[-1]
        if step is not None:
            poll.records.append((int(step), values))

    def _trl_line(self, lineno: int, line: str, poll: Poll) -> None:
        for m in PROGRESS_COUNTER.finditer(line):
            n, total = int(m.group(1)), int(m.group(2))
            if self._bar_total is None and self._waiting:
                self._bar_total = total
            if total == self._bar_total:
                self._counter = n
                if self._waiting:
                    for values in self._waiting:
                        poll.records.append((n, values))
                    self._waiting = []
        for m in TRL_DICT.finditer(line):
            if self.flavor == "auto" and not TRL_PROBE.match(m.group(0)):
                continue  # a config dump or other dict text: not a log dict
            values = parse_log_dict(m.group(0))
            if values is None:
                if self.flavor == "trl" and not self._guessed:
                    poll.notes.append(f"{self.path}, line {lineno}: skipped a dict-like text "
                                      "that does not parse")
                continue
            if not values:
                continue
            if self.flavor == "auto":
                self.flavor, self._guessed = "trl", True
            step = None
            for key in _STEP_KEYS[:2]:
                if key in values:
                    step = whole_step(values.pop(key))
                    break
            if step is None:
                self._waiting.append(values)
            else:
                poll.records.append((step, values))


# -- MLflow ----------------------------------------------------------------------------------

_TERMINAL = ("FINISHED", "FAILED", "KILLED")
#: Points fetched per request when paging a metric history.
_PAGE = 1000
#: Runs per request when searching an experiment's active runs.
_SEARCH_PAGE = 500


def _mlflow_client(tracking_uri: str | None, notes: list[str]):
    """An MlflowClient for the watcher (file stores opted in for this process, with a note)."""
    from satmon._optional import require

    if is_file_store_uri(tracking_uri) and \
            os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
        # MLflow 3 refuses file stores by default; the watcher only reads runs and sets tags
        # on them, so it opts in for its own client.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        notes.append(f"{tracking_uri} is an MLflow file store, which MLflow 3 refuses unless "
                     "MLFLOW_ALLOW_FILE_STORE=true: set for this watcher's own client")
    tracking = require("mlflow.tracking", feature="watching MLflow runs")
    return tracking.MlflowClient(tracking_uri=tracking_uri)


def is_file_store_uri(uri: str | None) -> bool:
    """True for an MLflow file-store URI (``file:...`` or a plain folder path)."""
    if not uri:
        return False
    if uri.startswith("file:"):
        return True
    return "://" not in uri and not uri.startswith(("sqlite:", "databricks", "http"))


class MlflowFollower:
    """One MLflow run: new metric points of the needed keys at each poll.

    Per poll: one ``get_run`` (status, the keys the run has with their latest points, its
    params) - or none when :class:`MlflowExperimentRuns` found the run in its search this poll
    (``prefetched``) - and, per needed key whose latest point changed since the last poll,
    the points logged since (``get_metric_history`` of the tracking store, paged from the
    number of points already read; where a store cannot page, the public history is fetched
    and the points already read are dropped). A key's latest point is the one with the
    highest (step, time), so points logged below it (a resumed run's repeats, which the
    watcher skips anyway) wait for the key's next change, and :meth:`finish` fetches every
    needed key once more. The planned number of steps
    comes from the run's params ``trainer.total_training_steps`` (verl) or ``max_steps``
    (transformers / TRL) when positive. A run whose status is no longer RUNNING has ended.

    File stores: MLflow 3 refuses them unless ``MLFLOW_ALLOW_FILE_STORE=true``; for a file-store
    URI the watcher sets it in its own process (a note says so) - the paper's verl code writes
    such a store (``outputs/<exp>/mlflow``).
    """

    kind = "mlflow"
    atomic = False

    def __init__(self, run_id: str, *, tracking_uri: str | None) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self._client = None
        self._read: dict[str, int] = {}
        self._keys: list[str] = []
        self.run_name: str | None = None
        self.notes_at_open: list[str] = []
        #: Picks the keys to fetch among the run's metric keys (set by the watcher: only the
        #: keys its key resolution needs travel); None fetches every key.
        self.select_keys: Any = None
        #: The run as an experiment search just returned it (used once instead of get_run).
        self.prefetched: Any = None
        # (step, timestamp) of each key's latest point when its history was last fetched;
        # not saved: a restarted watcher fetches each needed key once, from its offset.
        self._latest: dict[str, list[int]] = {}

    @property
    def source(self) -> str:
        return f"mlflow://runs/{self.run_id}"

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "run_id": self.run_id, "read": dict(self._read)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind or state.get("run_id") != self.run_id:
            raise ValueError(f"the saved follower state is for {state.get('kind')!r} "
                             f"{state.get('run_id')!r}, not MLflow run {self.run_id!r}")
        self._read = {str(k): int(v) for k, v in state.get("read", {}).items()}

    def client(self):
        if self._client is None:
            self._client = _mlflow_client(self.tracking_uri, self.notes_at_open)
        return self._client

    def poll(self) -> Poll:
        poll = Poll()
        client = self.client()
        poll.notes += self.notes_at_open
        self.notes_at_open = []
        mlrun, self.prefetched = self.prefetched, None
        if mlrun is None:
            try:
                mlrun = client.get_run(self.run_id)
            except Exception as exc:
                if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                    raise SourceError(f"MLflow run {self.run_id!r} does not exist at tracking "
                                      f"URI {self.tracking_uri or 'default'}") from None
                raise
        self.run_name = mlrun.info.run_name
        self._keys = sorted(mlrun.data.metrics)
        for name in ("trainer.total_training_steps", "max_steps"):
            raw = mlrun.data.params.get(name)
            try:
                total = int(float(raw)) if raw is not None else 0
            except ValueError:
                total = 0
            if total > 0:
                poll.total_steps = total
                break
        latest = {m.key: [int(m.step), int(m.timestamp)]
                  for m in getattr(mlrun.data, "_metric_objs", None) or ()}
        needed = self._needed()
        changed = [k for k in needed if k not in latest or latest[k] != self._latest.get(k)]
        poll.records, poll.grew = self._fetch(client, changed)
        if latest:
            # The keys' histories are read one request at a time after the run's latest points
            # (the snapshot above): a key whose latest had not changed then is not read now,
            # and a point logged since may be in one key's history and not yet in another's.
            # A run logs its steps in order, so only the steps below the snapshot's highest
            # are whole (an evaluation logged at the step of a training reward already read
            # waits for the next poll, instead of arriving after its step was fed).
            poll.complete_below = max(step for step, _ in latest.values())
        self._latest.update({k: latest[k] for k in changed if k in latest})
        poll.ended = (mlrun.info.status in _TERMINAL
                      or getattr(mlrun.info, "lifecycle_stage", "active") == "deleted")
        return poll

    def _needed(self) -> list[str]:
        return self._keys if self.select_keys is None else self.select_keys(self._keys)

    def _fetch(self, client, keys: list[str]) -> tuple[list[Record], bool]:
        by_step: dict[int, dict[str, Any]] = {}
        grew = False
        read_before = dict(self._read)
        try:
            for key in keys:
                points = self._new_points(client, key)
                grew = grew or bool(points)
                for m in points:
                    by_step.setdefault(int(m.step), {})[key] = m.value
        except BaseException:
            # The points of the keys fetched before the failure are dropped with this poll;
            # so are their offsets, or those points would never be read again.
            self._read = read_before
            raise
        return sorted(by_step.items()), grew

    def _new_points(self, client, key: str) -> list:
        offset = self._read.get(key, 0)
        points = _paged_history(client, self.run_id, key, offset)
        if points is None:
            points = list(client.get_metric_history(self.run_id, key))[offset:]
        # Same order as the stores page in (time, step, value); a tie keeps the logged order.
        points = sorted(points, key=lambda m: m.timestamp)
        self._read[key] = offset + len(points)
        return points

    def finish(self) -> Poll:
        """Every needed key once more: points a latest-point check could not see."""
        poll = Poll()
        if self._keys:
            poll.records, poll.grew = self._fetch(self.client(), self._needed())
        return poll

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set the tags on the watched run in one request (``log_batch`` with tags only)."""
        from mlflow.entities import RunTag

        self.client().log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


class MlflowExperimentRuns:
    """The active runs of one MLflow experiment (``mlflow://experiments/<name>``).

    :meth:`active_runs` pages ``search_runs`` over the experiment, filtered on
    ``attributes.status = 'RUNNING'`` and deleted runs left out, ``_SEARCH_PAGE`` runs per
    request: one request per poll for up to that many active runs, however many finished runs
    the experiment holds. The runs it returns carry their params and latest metric points,
    which the watcher hands to each run's :class:`MlflowFollower` (``prefetched``), so a run
    found in the search costs no ``get_run``, and a run with nothing new costs no request at
    all. ``<name>`` is the experiment's name, or its id when no experiment has that name.
    """

    kind = "mlflow-experiment"

    def __init__(self, experiment: str, *, tracking_uri: str | None) -> None:
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.experiment_id: str | None = None
        self._client = None
        self.notes_at_open: list[str] = []

    @property
    def source(self) -> str:
        return f"mlflow://experiments/{self.experiment}"

    def client(self):
        if self._client is None:
            self._client = _mlflow_client(self.tracking_uri, self.notes_at_open)
        return self._client

    def follower(self, run_id: str) -> MlflowFollower:
        """The follower of one of this experiment's runs (sharing this client)."""
        f = MlflowFollower(run_id, tracking_uri=self.tracking_uri)
        f._client = self.client()
        return f

    def _resolve(self, client) -> str:
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None and self.experiment.isdigit():
            try:
                exp = client.get_experiment(self.experiment)
            except Exception as exc:
                if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                    raise
        if exp is None:
            raise SourceError(f"MLflow experiment {self.experiment!r} does not exist at "
                              f"tracking URI {self.tracking_uri or 'default'} (neither as a "
                              "name nor as an id)")
        return exp.experiment_id

    def active_runs(self) -> list:
        """The experiment's RUNNING runs (MLflow ``Run`` entities), every page."""
        from mlflow.entities import ViewType

        client = self.client()
        if self.experiment_id is None:
            self.experiment_id = self._resolve(client)
        out: list = []
        token = None
        while True:
            page = client.search_runs([self.experiment_id],
                                      filter_string="attributes.status = 'RUNNING'",
                                      run_view_type=ViewType.ACTIVE_ONLY,
                                      max_results=_SEARCH_PAGE, page_token=token)
            out += [r for r in page if r.info.status == "RUNNING"]
            token = getattr(page, "token", None)
            if not token:
                return out


def _paged_history(client, run_id: str, key: str, offset: int) -> list | None:
    """Points of ``key`` from index ``offset`` on, paged; None when the store cannot page.

    MLflow's client fetches a whole history; its tracking stores (SQL, REST, file) page it
    with an offset token, which is what lets a watcher read only the new points. The store is
    reached through the client's tracking client (not a public attribute: hence the fallback).
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None:
        return None
    try:
        from mlflow.utils.search_utils import SearchUtils

        token = SearchUtils.create_page_token(offset) if offset else None
        out: list = []
        while True:
            page = store.get_metric_history(run_id=run_id, metric_key=key, max_results=_PAGE,
                                            page_token=token)
            out += list(page)
            token = getattr(page, "token", None)
            if not token:
                return out
    except TypeError:
        return None


# -- TensorBoard -----------------------------------------------------------------------------


class TensorBoardFollower:
    """TensorBoard event files under a folder (or one file): new files and appended records.

    Each file is read from the offset of its next record; a record is taken only once its
    whole frame is there (length, two CRCs, payload), so a file being written is read up to
    its last complete record and continued at the next poll. A record that fails a CRC check
    stops that file for good (the record boundaries after it cannot be trusted), with a note.
    Scalars come from ``simple_value`` (PyTorch's SummaryWriter, verl, OpenRLHF) and scalar
    tensors of the ``scalars`` plugin (TF2). Tags are kept as written; key resolution maps
    ``train/`` / ``eval/`` tags (:mod:`satmon.watch.metric_keys`).
    """

    kind = "tensorboard"
    atomic = False

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._files: dict[str, dict[str, Any]] = {}

    @property
    def source(self) -> str:
        return str(self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path),
                "files": {k: dict(v) for k, v in self._files.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"the saved follower state is for a {state.get('kind')!r} source, "
                             "not 'tensorboard'")
        self._files = {str(k): {"offset": int(v["offset"]), "plugin": dict(v.get("plugin", {})),
                                "stopped": bool(v.get("stopped", False))}
                       for k, v in state.get("files", {}).items()}

    def _event_files(self) -> list[Path]:
        from satmon.analysis.readers.event_files import event_files_in

        if self.path.is_file():
            return [self.path]
        if not self.path.is_dir():
            return []
        return event_files_in(self.path)

    def poll(self) -> Poll:
        from satmon._optional import require

        feature = "watching TensorBoard event files"
        event_pb2 = require("tensorboard.compat.proto.event_pb2", feature=feature)
        tensor_util = require("tensorboard.util.tensor_util", feature=feature)
        crc = require("tensorboard.compat.tensorflow_stub.pywrap_tensorflow",
                      feature=feature).masked_crc32c
        poll = Poll()
        points: list[tuple[int, str, float]] = []
        for path in self._event_files():
            info = self._files.setdefault(str(path), {"offset": 0, "plugin": {},
                                                      "stopped": False})
            if info["stopped"]:
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < info["offset"]:
                poll.notes.append(f"{path}: the event file shrank; reading it again")
                info["offset"] = 0
            if size == info["offset"]:
                continue
            with open(path, "rb") as fh:
                fh.seek(info["offset"])
                data = fh.read(min(size - info["offset"], MAX_READ_BYTES))
            used = self._records(path, data, info, poll, points, event_pb2, tensor_util, crc)
            if used:
                poll.grew = True
            info["offset"] += used
        by_step: dict[int, dict[str, Any]] = {}
        for step, tag, value in points:
            by_step.setdefault(step, {})[tag] = value
        poll.records = sorted(by_step.items())
        return poll

    def _records(self, path: Path, data: bytes, info: dict[str, Any], poll: Poll,
                 points: list[tuple[int, str, float]], event_pb2: Any, tensor_util: Any,
                 crc: Any) -> int:
        from satmon.analysis.readers.event_files import FrameStop, event_scalars, tfrecord_frames

        pos = 0
        try:
            for index, offset, payload in tfrecord_frames(data, crc):
                step, scalars = event_scalars(payload, index, offset, event_pb2, tensor_util,
                                              info["plugin"])
                points += [(step, tag, value) for tag, value in scalars]
                pos = offset + len(payload) + 16
        except FrameStop as stop:
            if not stop.truncated:  # a cut last frame is still being written: wait for it
                self._stop(path, info, poll, info["offset"] + stop.offset, stop.problem)
        return pos

    @staticmethod
    def _stop(path: Path, info: dict[str, Any], poll: Poll, offset: int, problem: str) -> None:
        info["stopped"] = True
        poll.notes.append(f"{path}: {problem} at byte {offset}; the rest of this file is "
                          "ignored")

    def finish(self) -> Poll:
        return Poll()


# -- opening a source ------------------------------------------------------------------------

SOURCE_KINDS = ("auto", "jsonl", "console", "mlflow", "tensorboard")


def open_follower(source: str, *, kind: str = "auto", tracking_uri: str | None = None,
                  total_steps: int | None = None):
    """The follower for one ``SOURCE`` of ``satmon watch``.

    ``kind`` ``auto``: an MLflow reference (``mlflow://runs/<id>``, ``runs:/<id>``, a bare run
    id; see :mod:`satmon.analysis.readers.tracking`) is an MLflow run, and
    ``mlflow://experiments/<name>`` gives an :class:`MlflowExperimentRuns` (not a follower:
    the watcher makes one follower per active run it finds); a folder, or a file
    named ``events.out.tfevents.*``, is TensorBoard; ``*.jsonl`` / ``*.json`` files are JSONL;
    other files are console logs. A file that does not exist yet is accepted (the run may not
    have started writing): it is read once it appears.
    """
    if kind not in SOURCE_KINDS:
        raise ValueError(f"--source-format must be one of {list(SOURCE_KINDS)}. Got {kind!r}.")
    from satmon.analysis.readers.tracking import parse_reference

    ref = None if kind not in ("auto", "mlflow") else parse_reference(
        source, tracking_uri=tracking_uri, forced=False)
    if kind == "mlflow" and ref is None:
        raise ValueError(f"{source!r} is not an MLflow run reference; use mlflow://runs/<id> "
                         "or runs:/<id>.")
    if ref is not None:
        uri = ref.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if ref.kind == "experiment":
            return MlflowExperimentRuns(ref.ident, tracking_uri=uri)
        if ref.kind != "run":
            raise ValueError(f"{source!r} names an MLflow {ref.kind}; satmon watch follows "
                             "runs: pass mlflow://runs/<run_id> or "
                             "mlflow://experiments/<name>.")
        return MlflowFollower(ref.ident, tracking_uri=uri)
    path = Path(source)
    if kind == "auto":
        if path.is_dir() or "events.out.tfevents" in path.name:
            kind = "tensorboard"
        elif path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            kind = "jsonl"
        else:
            kind = "console"
    if kind == "tensorboard":
        return TensorBoardFollower(path)
    if path.exists() and path.is_dir():
        raise ValueError(f"{source}: is a folder; a {kind} source must be a file.")
    if kind == "jsonl":
        return JsonlFollower(path)
    return ConsoleFollower(path, total_steps=total_steps)


__all__ = ["ConsoleFollower", "JsonlFollower", "MlflowExperimentRuns", "MlflowFollower", "Poll",
           "Record", "SOURCE_KINDS", "SourceError", "TensorBoardFollower", "is_file_store_uri",
           "open_follower", "whole_step"]
