"""The watch loop: follow live runs, feed the online monitor, halt safely, say what happened.

One :class:`RunWatch` per source turns the records its follower finds into
:meth:`satmon.monitor.SaturationMonitor.update` calls - the engine and the decisions of the
trainer callback - and carries the run through its states::

    watching -> waiting_checkpoint -> acting -> halted          (HALT, with a stop action)
    watching -> flagged                                          (HALT, --action flag)
    watching -> finished                                         (the run ended by itself)
    any      -> failed                                           (unreadable source, keys
                                                                  missing, failed stop action)

:class:`Watcher` polls every run each ``interval`` seconds, writes the decision log and the
state file, prints the output and ends when every run is done (or at ``--timeout``, or after
one pass with ``--once``).

Feeding. A record is one logged step. Sources that log a step in one record (verl's JSONL
file logger and console lines) are fed at once; for the others (TRL console, flat JSONL,
MLflow, TensorBoard: train and eval values of one step arrive separately) the highest step
seen is held back until a later step appears or the run ends, so each step is fed whole, as
:func:`satmon.replay.replay` feeds a finished log. Each step becomes one update: the
training reward (None when the step has only held-out values: an evaluation-only update),
the held-out values ``(value, n)`` with ``n`` from ``--heldout-n``, and the auxiliaries.
A step at or below the last step fed (a resumed run logging steps again, a log read again
after it was replaced or truncated) is skipped and counted, with one note per stretch of
repeats. Values are passed as logged: NaN and None count as non-finite by the monitor's own
policy (text values are reported and dropped). A record without the training reward and
without held-out values (timing only) is not fed.

When the run has ended. A run is finished when its last step reaches the planned total
(``--total-steps``, else what the log says: verl's ``Total training steps``, transformers'
``Total optimization steps``, MLflow params ``trainer.total_training_steps`` / ``max_steps``;
for sources whose steps arrive in pieces, on the first quiet poll after that step), when an
MLflow run is no longer RUNNING, or when no new data came for ``--idle-exit`` seconds. The
planned total known when the first step is fed is the monitor's ``total_steps`` (None: the
monitor assumes the run lasts as long again as it has so far).

Missing keys. When no training-reward key has been found after 5 records that carry
values (a training reward appears by the second step of any trainer), the run fails with an
error that lists the keys the log has.

Halting. On the first HALT the run waits for the first checkpoint at or after the halt step
(:func:`satmon.watch.halting.find_checkpoint`; polled with the log), then runs the stop
actions (:class:`satmon.watch.halting.StopActions`) once. ``--no-wait-checkpoint`` acts at
once. If no checkpoint comes within ``--grace`` seconds of the halt, the watcher acts anyway,
says so (an output line, a ``grace_expired`` decision-log entry, ``SATMON_NO_CHECKPOINT=1``)
and exits HALTED. A run that ends by itself while its checkpoint is awaited needs no stop: it
is reported halted, with no action run. ``--action flag`` reports the halt and stops watching
that run, with no action.

Never twice. Before a stop action runs, the state file records ``acting``; after it, the
outcome. A watcher restarted from a state file that says ``acting`` (it died while acting)
does not act again: at most once, never twice - it reports the action as unconfirmed.

The state file (``--state``) holds, per run, the monitor's ``state_dict()``, the follower's
position, the steps fed, the run's state, the pending MLflow tags and the decision log's
length. It is written atomically (temporary file, fsync, rename) after every poll that
changed anything, and checked whole before anything of it is used: a damaged file is an
error naming it (move it away to start afresh). A restarted watcher truncates the decision
log to the length the state recorded (entries written after the last save are written again,
identically, as the records are fed again), so restarting gives the same decisions and the
same log as not stopping. Idle timers restart with the watcher.

Exit status (:data:`EXIT_FINISHED` ...): 0 every run finished without a halt; 3 a run was
halted (its stop action done, or flagged with ``--action flag``); 4 still watching (``--once``,
``--timeout``); 1 a run failed (its source could not be read ``--max-failures`` polls in a
row, its keys are missing, or its stop action failed); 2 bad input (arguments, a damaged
state file). With several runs the most serious wins: failed, halted, watching, finished.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from satmon._files import atomic_write_text
from satmon.decision import Action, Decision
from satmon.watch.halting import StopActions, find_checkpoint
from satmon.watch.metric_keys import WatchKeys, WatchResolved, missing_train_key_message

EXIT_FINISHED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_HALTED = 3
EXIT_WATCHING = 4

STATE_VERSION = 1
#: Records with values but no training-reward key after which a run fails (keys missing).
MISSING_TRAIN_AFTER = 5
_MAX_BACKOFF_S = 60.0
_DONE = ("halted", "flagged", "finished", "failed")


@dataclass(frozen=True)
class WatchOptions:
    """How the watcher polls, when runs end and what it does on a halt (see the CLI help)."""

    interval: float = 10.0
    once: bool = False
    timeout: float | None = None
    idle_exit: float | None = None
    total_steps: int | None = None
    heldout_n: Mapping[str, int] = field(default_factory=dict)
    action: str = "auto"
    stop: StopActions = field(default_factory=StopActions)
    wait_checkpoint: bool = True
    grace: float = 3600.0
    max_failures: int = 5
    status_every: float = 10.0
    monitor_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("interval", "grace", "status_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a number of seconds >= 0."
                                 f" Got {v!r}.")
        for name in ("timeout", "idle_exit"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not v > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a number of seconds > 0. "
                                 f"Got {v!r}.")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"--total-steps must be an int >= 1. Got {self.total_steps}.")
        if self.action not in ("auto", "stop", "flag"):
            raise ValueError(f"--action must be auto, stop or flag. Got {self.action!r}.")
        if self.action == "stop" and not self.stop.any:
            raise ValueError("--action stop needs a stop action: --on-halt CMD, --signal SIG "
                             "--pid PID or --stop-file PATH (or use --action flag).")
        if self.max_failures < 1:
            raise ValueError(f"--max-failures must be >= 1. Got {self.max_failures}.")

    @property
    def stops(self) -> bool:
        """True when a HALT runs stop actions (False: it is only reported)."""
        return self.action == "stop" or (self.action == "auto" and self.stop.any)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _number(value: Any) -> float | None | str:
    """A logged value as a float (None for None; the text itself when it is not a number)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return str(value)


def _finite_or_none(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


class RunWatch:
    """One watched run: its follower, key resolution, monitor and halt state.

    Parameters
    ----------
    run_id:
        The stable identity of the run in the state file (the source as given).
    name:
        The label in output lines and the report.
    follower:
        A follower from :mod:`satmon.watch.followers`.
    keys:
        The :class:`satmon.watch.metric_keys.WatchKeys` to resolve with.
    options:
        The watcher's :class:`WatchOptions`.
    checkpoint_dir:
        Where the run's checkpoints appear (needed to wait for one).
    """

    def __init__(self, *, run_id: str, name: str, follower: Any, keys: WatchKeys,
                 options: WatchOptions, checkpoint_dir: str | None = None) -> None:
        self.run_id = run_id
        self.name = name
        self.follower = follower
        self.keys = keys
        self.options = options
        self.checkpoint_dir = checkpoint_dir
        self._reset()

    def _reset(self) -> None:
        self.status = "watching"
        self.monitor = None
        self.monitor_kwargs: dict[str, Any] | None = None
        self.total_steps = self.options.total_steps
        self.keys_seen: set[str] = set()
        self.pending: dict[int, dict[str, Any]] = {}
        self.last_fed = -1
        self.max_seen = -1
        self.repeats = 0
        self._repeat_span: list[int] | None = None
        self.without_train = 0
        self.series: dict[str, Any] = {"train": [], "heldout": {}, "aux": {}}
        self.halt: dict[str, Any] | None = None
        self.wait_since: float | None = None
        self.checkpoint: dict[str, Any] | None = None
        self.action_problems: list[str] = []
        self.last_logged: list[Any] | None = None
        self.last_decision: dict[str, Any] | None = None
        self.last_eval: dict[str, list[float]] = {}
        self.pending_tags: dict[str, str] = {}
        self.failures = 0
        self.error: str | None = None
        self.end_reason: str | None = None
        self.last_data = time.time()
        self.next_poll = 0.0
        self.changed = True
        self._resolved: WatchResolved | None = None
        self._resolved_at = -1
        self._quiet_after_total = False

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "name": self.name, "status": self.status,
            "follower": self.follower.state_dict(),
            "monitor": None if self.monitor is None else self.monitor.state_dict(),
            "monitor_kwargs": self.monitor_kwargs, "total_steps": self.total_steps,
            "keys_seen": sorted(self.keys_seen),
            "pending": [[s, v] for s, v in sorted(self.pending.items())],
            "last_fed": self.last_fed, "max_seen": self.max_seen, "repeats": self.repeats,
            "without_train": self.without_train, "series": self.series, "halt": self.halt,
            "wait_since": self.wait_since, "checkpoint": self.checkpoint,
            "action_problems": self.action_problems, "last_logged": self.last_logged,
            "last_decision": self.last_decision, "last_eval": self.last_eval,
            "pending_tags": self.pending_tags, "error": self.error,
            "end_reason": self.end_reason,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a saved run (all or nothing: a bad state raises ValueError, nothing kept)."""
        from satmon.monitor import SaturationMonitor

        backup = dict(self.__dict__)
        try:
            self.follower.load_state_dict(dict(state["follower"]))
            kwargs = state.get("monitor_kwargs")
            if state.get("monitor") is not None:
                if not isinstance(kwargs, dict):
                    raise ValueError("the saved run has a monitor state but no monitor_kwargs")
                planned = self.options.total_steps
                mine = self._monitor_kwargs(kwargs.get("total_steps") if planned is None
                                            else planned)
                diff = {k: (kwargs.get(k), v) for k, v in mine.items() if kwargs.get(k) != v}
                if diff:
                    raise ValueError(
                        "the saved run was watched with other monitor options: "
                        + ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
                        + "; pass the same options, or start afresh with another --state")
                monitor = SaturationMonitor(**kwargs)
                monitor.load_state_dict(state["monitor"])
                self.monitor = monitor
            self.monitor_kwargs = kwargs
            self.status = str(state["status"])
            if self.status not in ("watching", "waiting_checkpoint", "acting", *_DONE):
                raise ValueError(f"unknown run status {self.status!r}")
            self.total_steps = state.get("total_steps", self.total_steps)
            self.keys_seen = set(state.get("keys_seen", []))
            self.pending = {int(s): dict(v) for s, v in state.get("pending", [])}
            self.last_fed = int(state.get("last_fed", -1))
            self.max_seen = int(state.get("max_seen", -1))
            self.repeats = int(state.get("repeats", 0))
            self.without_train = int(state.get("without_train", 0))
            series = state.get("series") or {"train": [], "heldout": {}, "aux": {}}
            self.series = {"train": list(series["train"]), "heldout": dict(series["heldout"]),
                           "aux": dict(series["aux"])}
            self.halt = state.get("halt")
            self.wait_since = state.get("wait_since")
            self.checkpoint = state.get("checkpoint")
            self.action_problems = list(state.get("action_problems", []))
            self.last_logged = state.get("last_logged")
            self.last_decision = state.get("last_decision")
            self.last_eval = dict(state.get("last_eval", {}))
            self.pending_tags = dict(state.get("pending_tags", {}))
            self.error = state.get("error")
            self.end_reason = state.get("end_reason")
        except Exception as exc:
            self.__dict__.clear()
            self.__dict__.update(backup)
            raise ValueError(f"run {self.run_id!r}: {type(exc).__name__}: {exc}") from exc
        self.last_data = time.time()

    # -- the monitor -------------------------------------------------------------------------
    def _monitor_kwargs(self, total: int | None) -> dict[str, Any]:
        kwargs = dict(self.options.monitor_kwargs)
        kwargs["total_steps"] = total
        return kwargs

    def _ensure_monitor(self):
        if self.monitor is None:
            from satmon.monitor import SaturationMonitor

            self.monitor_kwargs = self._monitor_kwargs(self.total_steps)
            self.monitor = SaturationMonitor(**self.monitor_kwargs)
        return self.monitor

    def resolved(self) -> WatchResolved:
        if self._resolved is None or self._resolved_at != len(self.keys_seen):
            self._resolved = self.keys.resolve(self.keys_seen)
            self._resolved_at = len(self.keys_seen)
        return self._resolved

    # -- one poll ----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.status in _DONE

    @property
    def source(self) -> str:
        return self.follower.source

    def poll_once(self, now: float, out: "WatchOutput", save: Callable[[], None]) -> None:
        """Poll the source once, feed what it brought, advance the halt."""
        if self.status == "acting":  # restored from a watcher that died while acting
            self._advance_halt(now, out, save)
        if self.done or now < self.next_poll:
            return
        if hasattr(self.follower, "select_keys"):
            self.follower.select_keys = self._needed_keys
        try:
            poll = self.follower.poll()
        except Exception as exc:  # a live watcher survives any failure of one poll
            self._poll_failed(now, exc, out)
            if not self.done:  # a checkpoint can still come while the log cannot be read
                self._advance_halt(now, out, save)
            return
        if self.failures:
            out.event(self, "note", f"the source answers again after {self.failures} failed "
                                    "poll(s)")
        self.failures = 0
        for note in poll.notes:
            out.event(self, "note", note)
        if poll.notes:
            self.changed = True
        if poll.total_steps and self.total_steps is None:
            self.total_steps = int(poll.total_steps)
            self.changed = True
            if self.monitor is not None:
                out.event(self, "note", f"the log says the run plans {self.total_steps} steps, "
                                        "after the monitor started without a planned total; "
                                        "the monitor keeps its horizon")
        if poll.grew:
            self.last_data = now
        quiet = not poll.records and not poll.grew
        self._accept(poll.records, out, complete_below=poll.complete_below)
        if self.done:
            return
        self._advance_halt(now, out, save)
        if self.done:
            return
        at_total = self.total_steps is not None and self.max_seen >= self.total_steps
        if poll.ended:
            self._finish("the MLflow run is no longer RUNNING", out)
        elif at_total and (self._atomic() or quiet or self._quiet_after_total):
            self._finish(f"the last planned step ({self.total_steps}) was logged", out)
        elif at_total:
            self._quiet_after_total = True  # one more poll for the pieces of the last step
        elif (self.options.idle_exit is not None and self.status == "watching"
              and now - self.last_data >= self.options.idle_exit):
            self._finish(f"no new data for {self.options.idle_exit:g} s (--idle-exit)", out)

    def _atomic(self) -> bool:
        return bool(getattr(self.follower, "atomic", False))

    def _needed_keys(self, keys: Sequence[str]) -> list[str]:
        """The keys to fetch, among all the keys a run has (MLflow: only these travel)."""
        self.keys_seen.update(keys)
        return self.resolved().needed()

    def _poll_failed(self, now: float, exc: Exception, out: "WatchOutput") -> None:
        from satmon.watch.followers import SourceError

        self.failures += 1
        what = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        self.changed = True
        if isinstance(exc, SourceError):
            self._fail(str(exc), out)
            return
        if self.failures >= self.options.max_failures:
            self._fail(f"the source could not be read {self.failures} polls in a row (last: "
                       f"{what})", out)
            return
        delay = min(max(self.options.interval, 1.0) * 2 ** (self.failures - 1), _MAX_BACKOFF_S)
        self.next_poll = now + delay
        out.event(self, "note", f"poll failed ({self.failures} of {self.options.max_failures}"
                                f" allowed in a row): {what}; next try in {delay:g} s")

    def _accept(self, records: Sequence[tuple[int, dict[str, Any]]], out: "WatchOutput", *,
                complete_below: int | None = None) -> None:
        for step, values in records:
            self.keys_seen.update(values)
            if step > self.max_seen:
                self.max_seen = step
            if self._atomic():
                self._feed(step, values, out)
            elif step <= self.last_fed:
                self._repeat(step, out)
            else:
                self.pending.setdefault(step, {}).update(values)
            if self.done:
                return
        if self.pending and not self._atomic():
            # A pending step is fed once it is whole: a higher step arrived (the pieces of one
            # step come before the next one's), and below the follower's bound when it has one.
            top = max(self.pending)
            if complete_below is not None:
                top = min(top, complete_below)
            for step in sorted(s for s in self.pending if s < top):
                self._feed(step, self.pending.pop(step), out)
                if self.done:
                    return
        self._close_repeats(out)

    def _flush_pending(self, out: "WatchOutput") -> None:
        for step in sorted(self.pending):
            self._feed(step, self.pending.pop(step), out)
            if self.done:
                return
        self._close_repeats(out)

    def _repeat(self, step: int, out: "WatchOutput") -> None:
        self.repeats += 1
        self.changed = True
        if self._repeat_span is None:
            self._repeat_span = [step, step]
        else:
            self._repeat_span[1] = step

    def _close_repeats(self, out: "WatchOutput") -> None:
        if self._repeat_span is not None:
            a, b = self._repeat_span
            out.event(self, "note", f"steps {a}..{b} repeat steps already watched (a resumed "
                                    f"run, or a log read again); skipped ({self.repeats} "
                                    "repeated record(s) so far)")
            self._repeat_span = None

    def _feed(self, step: int, values: dict[str, Any], out: "WatchOutput") -> None:
        if step <= self.last_fed:
            self._repeat(step, out)
            return
        r = self.resolved()
        train_present = r.train_key is not None and r.train_key in values
        held_raw = {name: values[k] for name, k in r.heldout if k in values}
        if not train_present and not held_raw:
            if values and r.train_key is None:
                self.without_train += 1
                if self.without_train >= MISSING_TRAIN_AFTER:
                    self._fail(missing_train_key_message(self.keys_seen, r,
                                                         self.keys.train_key), out)
            return
        self._close_repeats(out)
        train = None
        if train_present:
            train = self._value(r.train_key, values[r.train_key], step, out)
            if train is None:
                train = math.nan  # logged but not a number: the monitor counts it non-finite
        heldout: dict[str, tuple[float, int | None]] = {}
        for name, raw in held_raw.items():
            v = self._value(name, raw, step, out)
            if v is not None:
                heldout[name] = (v, self._heldout_n(name))
        aux = {}
        for name, key in r.aux:
            if key in values:
                v = _number(values[key])
                if isinstance(v, float) and math.isfinite(v):
                    aux[name] = v
        if not train_present and not heldout:
            return
        decision = self._ensure_monitor().update(step, train, heldout=heldout or None,
                                                 aux=aux or None)
        self.last_fed = step
        self.changed = True
        self._record_series(step, train, heldout, aux)
        for name, (v, n) in heldout.items():
            self.last_eval[name] = [step, v]
            out.event(self, "eval", f"held-out {name} = {v:.4g}"
                      + (f" (n={n})" if n else ""), step=step, extra={"heldout": name,
                                                                      "value": v, "n": n})
        self._log_decision(decision, bool(heldout), out)
        if decision.action is Action.HALT and self.halt is None:
            self._start_halt(decision, out)

    def _value(self, name: str, raw: Any, step: int, out: "WatchOutput") -> float | None:
        v = _number(raw)
        if isinstance(v, str):
            out.event(self, "note", f"step {step}: {name} is {v[:40]!r}, not a number; "
                                    "dropped")
            return None
        return v

    def _heldout_n(self, name: str) -> int | None:
        n = self.options.heldout_n
        return n.get(name, n.get("*"))

    def _record_series(self, step: int, train: float | None,
                       heldout: Mapping[str, tuple[float, int | None]],
                       aux: Mapping[str, float]) -> None:
        if train is not None:
            self.series["train"].append([step, _finite_or_none(train)])
        for name, (v, _) in heldout.items():
            self.series["heldout"].setdefault(name, []).append([step, _finite_or_none(v)])
        for name, v in aux.items():
            self.series["aux"].setdefault(name, []).append([step, v])

    def _log_decision(self, d: Decision, new_eval: bool, out: "WatchOutput") -> None:
        key = [d.action.value, None if d.reason is None else d.reason.value]
        p_gain = d.evidence.details.get("p_heldout_gain")
        self.last_decision = {"step": d.step, "action": d.action.value,
                              "reason": key[1], "p_gain": _finite_or_none(p_gain)}
        if key == self.last_logged and not new_eval:
            return
        changed = key != self.last_logged
        self.last_logged = key
        out.decision(self, d, changed=changed)
        if changed:
            self.pending_tags.update({
                "satmon.watch.decision": d.action.value,
                "satmon.watch.reason": key[1] or "",
                "satmon.watch.step": str(d.step),
                "satmon.watch.message": d.message[:5000],
            })
            if p_gain is not None and math.isfinite(p_gain):
                self.pending_tags["satmon.watch.p_gain"] = f"{p_gain:.4g}"

    # -- halting -----------------------------------------------------------------------------
    def _start_halt(self, d: Decision, out: "WatchOutput") -> None:
        self.halt = {"run": self.name, "source": self.follower.source, "step": int(d.step),
                     "action": d.action.value,
                     "reason": None if d.reason is None else d.reason.value,
                     "message": d.message,
                     "mlflow_run_id": getattr(self.follower, "run_id", None),
                     "decided_at": _now_iso()}
        self.pending_tags["satmon.watch.halt_step"] = str(d.step)
        if not self.options.stops:
            self._set_status("flagged", out)
            out.event(self, "flagged", f"HALT at step {d.step} reported only (no stop action "
                                       "configured, or --action flag); the run is left alone",
                      step=d.step)
            return
        self.wait_since = time.time()
        self._set_status("waiting_checkpoint", out)
        if self.options.wait_checkpoint:
            out.event(self, "waiting", f"HALT at step {d.step}: waiting for a checkpoint at or "
                                       f"after step {d.step} in {self.checkpoint_dir} (grace "
                                       f"{self.options.grace:g} s)", step=d.step)

    def _advance_halt(self, now: float, out: "WatchOutput", save: Callable[[], None]) -> None:
        if self.status == "acting":
            # A saved state that says "acting": an earlier watcher died while acting.
            self.action_problems.append("an earlier watcher stopped while running the stop "
                                        "action; it is not repeated (never twice), its outcome "
                                        "is unknown")
            out.event(self, "action", self.action_problems[-1], step=self.halt["step"])
            self._set_status("halted", out)
            return
        if self.status != "waiting_checkpoint":
            return
        halt_step = int(self.halt["step"])
        if not self.options.wait_checkpoint:
            self._act(None, "--no-wait-checkpoint: acting at once", out, save)
            return
        found = find_checkpoint(self.checkpoint_dir, halt_step)
        if found is not None:
            self._act({"step": found.step, "path": found.path, "kind": found.kind},
                      f"checkpoint {found.path} (step {found.step}) is there", out, save)
            return
        waited = time.time() - float(self.wait_since or time.time())
        if waited >= self.options.grace:
            out.event(self, "grace_expired", f"no checkpoint at or after step {halt_step} in "
                                             f"{self.checkpoint_dir} within the grace of "
                                             f"{self.options.grace:g} s; acting anyway, without "
                                             "a checkpoint", step=halt_step)
            self._act(None, "grace expired", out, save)

    def _act(self, checkpoint: dict[str, Any] | None, why: str, out: "WatchOutput",
             save: Callable[[], None]) -> None:
        self.checkpoint = checkpoint
        self._set_status("acting", out)
        save()  # "acting" is on disk before anything is done: a restart never acts twice
        decision = dict(self.halt)
        decision["checkpoint"] = checkpoint
        decision["last_step"] = self.max_seen
        problems = self.options.stop.run(decision)
        self.action_problems = problems
        if checkpoint:
            self.pending_tags["satmon.watch.checkpoint"] = checkpoint["path"]
        if problems:
            self.pending_tags["satmon.watch.stop_action"] = "failed: " + "; ".join(problems)
            out.event(self, "action_failed", f"stop action failed ({why}): "
                      + "; ".join(problems), step=self.halt["step"])
            self._fail("stop action failed: " + "; ".join(problems), out)
            return
        self.pending_tags["satmon.watch.stop_action"] = self.options.stop.describe()
        out.event(self, "action", f"{why}; stop action done: {self.options.stop.describe()}",
                  step=self.halt["step"], extra={"checkpoint": checkpoint})
        self._set_status("halted", out)

    # -- ending ------------------------------------------------------------------------------
    def _set_status(self, status: str, out: "WatchOutput") -> None:
        self.status = status
        self.changed = True
        self.pending_tags["satmon.watch.status"] = status

    def _fail(self, message: str, out: "WatchOutput") -> None:
        self.error = message
        self._set_status("failed", out)
        out.event(self, "failed", message)

    def _finish(self, why: str, out: "WatchOutput") -> None:
        """The run ended by itself: feed what is left and close it."""
        try:
            tail = self.follower.finish()
        except Exception as exc:
            tail = None
            out.event(self, "note", f"reading the end of the log failed ({exc})")
        if tail is not None:
            for note in tail.notes:
                out.event(self, "note", note)
            self._accept(tail.records, out)
        if self.done:
            return
        self._flush_pending(out)
        if self.done:
            return
        self.end_reason = why
        if self.status == "waiting_checkpoint":
            out.event(self, "halted", f"the run ended ({why}) before a checkpoint at or after "
                                      f"the halt step {self.halt['step']} appeared; it stopped "
                                      "by itself, so no stop action was run")
            self._set_status("halted", out)
            return
        if self.status == "watching":
            self._set_status("finished", out)
            out.event(self, "finished", f"finished: {why}; last step {self.max_seen}")

    def finish_now(self, why: str, out: "WatchOutput") -> None:
        if not self.done and self.status == "watching":
            self._finish(why, out)

    def flush_tags(self, out: "WatchOutput") -> None:
        """Send pending tags to the watched MLflow run (kept for the next poll on failure)."""
        if not hasattr(self.follower, "set_tags"):
            self.pending_tags = {}  # only MLflow runs carry tags
            return
        if not self.pending_tags:
            return
        try:
            self.follower.set_tags(dict(self.pending_tags))
        except Exception as exc:
            what = f"{type(exc).__name__}: {str(exc)[:200]}"
            out.event(self, "note", f"could not set tags on the MLflow run yet ({what}); kept "
                                    "for the next poll")
            return
        self.pending_tags = {}
        self.changed = True

    # -- views -------------------------------------------------------------------------------
    def status_line(self) -> str:
        parts = [f"[{self.name}] {self.status}",
                 f"step {self.max_seen if self.max_seen >= 0 else '-'}"
                 f"/{self.total_steps or '?'}"]
        if self.series["train"]:
            v = self.series["train"][-1][1]
            parts.append("reward " + ("nan" if v is None else f"{v:.4g}"))
        for name, (s, v) in sorted(self.last_eval.items()):
            parts.append(f"{name} {v:.4g}@{s}")
        d = self.last_decision
        if d:
            if d.get("p_gain") is not None:
                parts.append(f"P(gain) {d['p_gain']:.3g}")
            parts.append(d["action"] + (f" ({d['reason']})" if d.get("reason") else ""))
        return " | ".join(parts)

    def to_run(self):
        """What was watched, as a :class:`satmon.Run` (None without a training reward)."""
        from satmon.run import HeldoutSeries, Run

        train = [(s, v) for s, v in self.series["train"]]
        if not train:
            return None
        heldout = {}
        for name, pts in self.series["heldout"].items():
            steps = [s for s, _ in pts]
            vals = [math.nan if v is None else v for _, v in pts]
            heldout[name] = HeldoutSeries.from_raw(name, steps, vals,
                                                   sample_size=self._heldout_n(name))
        aux = {name: ([s for s, _ in pts], [v for _, v in pts])
               for name, pts in self.series["aux"].items()}
        meta = {"source": self.follower.source, "format": f"watch:{self.follower.kind}",
                "watch_status": self.status, "total_steps": self.total_steps,
                "halt_step": None if self.halt is None else self.halt["step"],
                "keys": self.resolved().to_dict()}
        return Run(train_reward=([s for s, _ in train],
                                 [math.nan if v is None else v for _, v in train]),
                   heldout=heldout, aux=aux, metadata=meta, name=self.name)


class ExperimentWatch:
    """Every active run of one MLflow experiment: new runs picked up, finished ones dropped.

    Each poll asks :class:`satmon.watch.followers.MlflowExperimentRuns` for the experiment's
    RUNNING runs. A run not watched yet becomes a :class:`RunWatch` (made by ``make_run``)
    and is watched like a run named on the command line; a watched run the search still
    lists gets the run the search returned (its follower needs no ``get_run``). A watched
    run the search no longer lists reads its own status at its next poll, is reported
    finished (or halted, when it was waiting for its checkpoint) once, and is not polled or
    shown again. A run that starts and ends between two polls is never seen.

    The experiment itself ends only with ``--idle-exit``: when it has had no active run for
    that long (else at ``--timeout``, after ``--once``, or when the watcher is stopped). A
    search that fails is retried like a run's poll (growing delay; the experiment fails
    after ``--max-failures`` in a row); an experiment that does not exist fails at once.

    Parameters
    ----------
    finder:
        The :class:`~satmon.watch.followers.MlflowExperimentRuns` to search with.
    make_run:
        ``make_run(mlflow_run_id, name) -> RunWatch`` for a newly found run.
    options:
        The watcher's :class:`WatchOptions`.
    """

    def __init__(self, *, finder: Any, make_run: Callable[[str, str], RunWatch],
                 options: WatchOptions) -> None:
        self.finder = finder
        self.make_run = make_run
        self.options = options
        self._reset()

    def _reset(self) -> None:
        self.status = "watching"
        self.run_ids: list[str] = []
        self.failures = 0
        self.error: str | None = None
        self.next_poll = 0.0
        self.idle_since: float | None = None
        self.changed = True

    @property
    def name(self) -> str:
        return f"experiment {self.finder.experiment}"

    @property
    def source(self) -> str:
        return self.finder.source

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed")

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source, "status": self.status, "run_ids": list(self.run_ids),
                "error": self.error}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("source") != self.source:
            raise ValueError(f"the saved experiment state is for {state.get('source')!r}, not "
                             f"{self.source!r}")
        status = str(state.get("status", "watching"))
        if status not in ("watching", "finished", "failed"):
            raise ValueError(f"unknown experiment status {status!r}")
        self.status = status
        self.run_ids = [str(i) for i in state.get("run_ids", [])]
        self.error = state.get("error")

    def restore_runs(self, saved_runs: Mapping[str, Any]) -> list[RunWatch]:
        """The RunWatch of every run this experiment had (their states are loaded after)."""
        out = []
        for run_id in self.run_ids:
            name = (saved_runs.get(_run_key(run_id)) or {}).get("name") or _run_label(run_id)
            out.append(self.make_run(run_id, str(name)))
        return out

    def discover(self, now: float, out: "WatchOutput",
                 watched: Mapping[str, RunWatch]) -> list[RunWatch]:
        """Search once; returns the runs not watched before (``watched``: by run key)."""
        if self.done or now < self.next_poll:
            return []
        try:
            found = self.finder.active_runs()
        except Exception as exc:  # a live watcher survives a failed search
            self._failed(now, exc, out)
            return []
        for note in self.finder.notes_at_open:
            out.event(self, "note", note)
        self.finder.notes_at_open = []
        if self.failures:
            out.event(self, "note", f"the search answers again after {self.failures} failed "
                                    "poll(s)")
            self.failures = 0
        new: list[RunWatch] = []
        names = {r.name for r in watched.values()}
        for mlrun in found:
            run_id = mlrun.info.run_id
            known = watched.get(_run_key(run_id))
            if known is None:
                name = mlrun.info.run_name or _run_label(run_id)
                if name in names:
                    name = f"{name}-{run_id[:8]}"
                names.add(name)
                known = self.make_run(run_id, name)
                new.append(known)
                self.run_ids.append(run_id)
                self.changed = True
                out.event(known, "started_watching", f"found in {self.source}: watching it "
                                                     f"({len(found)} active run(s))")
            if not known.done and hasattr(known.follower, "prefetched"):
                known.follower.prefetched = mlrun
        self._check_idle(now, bool(found), watched, new, out)
        return new

    def _check_idle(self, now: float, any_active: bool, watched: Mapping[str, RunWatch],
                    new: list[RunWatch], out: "WatchOutput") -> None:
        mine = [watched[k] for k in map(_run_key, self.run_ids) if k in watched] + new
        if any_active or any(not r.done for r in mine):
            self.idle_since = None
            return
        if self.idle_since is None:
            self.idle_since = now
        limit = self.options.idle_exit
        if limit is not None and now - self.idle_since >= limit:
            self.status = "finished"
            self.changed = True
            out.event(self, "finished", f"no active run for {limit:g} s (--idle-exit); "
                                        f"{len(self.run_ids)} run(s) watched")

    def _failed(self, now: float, exc: Exception, out: "WatchOutput") -> None:
        from satmon.watch.followers import SourceError

        self.failures += 1
        self.changed = True
        what = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        if isinstance(exc, SourceError) or self.failures >= self.options.max_failures:
            self.error = str(exc) if isinstance(exc, SourceError) else (
                f"the experiment's runs could not be searched {self.failures} polls in a row "
                f"(last: {what})")
            self.status = "failed"
            out.event(self, "failed", self.error)
            return
        delay = min(max(self.options.interval, 1.0) * 2 ** (self.failures - 1), _MAX_BACKOFF_S)
        self.next_poll = now + delay
        out.event(self, "note", f"search failed ({self.failures} of "
                                f"{self.options.max_failures} allowed in a row): {what}; next "
                                f"try in {delay:g} s")


def _run_key(mlflow_run_id: str) -> str:
    """A watched MLflow run's identity in the state file (its source, as the CLI names it)."""
    return f"mlflow://runs/{mlflow_run_id}"


def _run_label(mlflow_run_id: str) -> str:
    return f"mlflow-{mlflow_run_id[:8]}"


class WatchOutput:
    """Output lines, the decision log and the terminal status line.

    Event lines go to ``stream`` at once (``[run] step N: ...``). On a terminal the status
    of every run is one line redrawn in place; elsewhere each run's status is a plain line,
    printed when it changed and at most every ``status_every`` seconds.
    """

    def __init__(self, *, stream: TextIO, log_path: Path, status_every: float) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.log_path = log_path
        self.status_every = status_every
        self._entries: list[dict[str, Any]] = []
        self._status_shown = False
        self._last_status: dict[str, tuple[str, float]] = {}

    @property
    def has_entries(self) -> bool:
        """Decision-log entries not yet written."""
        return bool(self._entries)

    def _print(self, line: str) -> None:
        from satmon.analysis.escape import terminal_text

        if self.tty and self._status_shown:
            self.stream.write("\r\x1b[2K")
            self._status_shown = False
        self.stream.write(terminal_text(line) + "\n")
        self.stream.flush()

    def event(self, run: "RunWatch | ExperimentWatch", kind: str, message: str, *, step: int | None = None,
              extra: Mapping[str, Any] | None = None) -> None:
        where = f"[{run.name}]" + (f" step {step}:" if step is not None else "")
        self._print(f"{where} {message}")
        entry = {"time": _now_iso(), "run": run.name, "source": run.source,
                 "event": kind, "step": step, "message": message}
        if extra:
            entry.update(extra)
        self._entries.append(entry)

    def decision(self, run: RunWatch, d: Decision, *, changed: bool) -> None:
        if changed:
            label = d.action.value.upper() + (f" {d.reason.value}" if d.reason else "")
            self._print(f"[{run.name}] step {d.step}: decision {label}: {d.message}")
        entry = {"time": _now_iso(), "run": run.name, "source": run.source,
                 "event": "decision", "step": int(d.step), "action": d.action.value,
                 "reason": None if d.reason is None else d.reason.value,
                 "message": d.message, "changed": changed,
                 "p_gain": _finite_or_none(d.evidence.details.get("p_heldout_gain")),
                 "decision": d.to_dict()}
        self._entries.append(entry)

    def status(self, runs: Sequence[RunWatch], now: float, *, force: bool = False) -> None:
        lines = [r.status_line() for r in runs]
        if self.tty:
            from satmon.analysis.escape import terminal_text

            self.stream.write("\r\x1b[2K" + terminal_text("  ".join(lines))[:400])
            self.stream.flush()
            self._status_shown = True
            return
        for r, line in zip(runs, lines):
            last = self._last_status.get(r.run_id)
            if last is not None and last[0] == line and not force:
                continue
            if last is not None and now - last[1] < self.status_every and not force:
                continue
            self._print(line)
            self._last_status[r.run_id] = (line, now)

    def end_status(self) -> None:
        if self.tty and self._status_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._status_shown = False

    def write_log(self) -> int:
        """Append the pending entries to the decision log; returns its size in bytes."""
        if self._entries:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as fh:
                for entry in self._entries:
                    fh.write(json.dumps(_json_safe(entry), allow_nan=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._entries = []
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0


def _json_safe(obj: Any) -> Any:
    from satmon.results import json_safe

    return json_safe(obj)


class Watcher:
    """Watch several runs until each is done (see the module docstring)."""

    def __init__(self, runs: Sequence[RunWatch], *, options: WatchOptions, state_path: Path,
                 log_path: Path, stream: TextIO | None = None,
                 experiments: Sequence[ExperimentWatch] = ()) -> None:
        if not runs and not experiments:
            raise ValueError("satmon watch needs at least one SOURCE.")
        ids = [r.run_id for r in runs] + [e.source for e in experiments]
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"a source is named twice: {twice}.")
        self.runs = list(runs)
        self.experiments = list(experiments)
        self.options = options
        self.state_path = Path(state_path)
        self.out = WatchOutput(stream=stream or sys.stdout, log_path=Path(log_path),
                               status_every=options.status_every)
        self.log_size = 0
        self.resumed = False

    # -- the state file ----------------------------------------------------------------------
    def load_state(self) -> None:
        """Resume from the state file when it exists (checked whole before anything is used)."""
        if not self.state_path.exists():
            return
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise ValueError(f"state file {self.state_path} cannot be read ({exc}); move it "
                             "away to start afresh.") from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION or \
                not isinstance(state.get("runs"), dict):
            raise ValueError(f"state file {self.state_path} is not a satmon watch state "
                             f"(version {STATE_VERSION} with 'runs'); move it away to start "
                             "afresh.")
        saved = state["runs"]
        saved_experiments = state.get("experiments") or {}
        # The runs an experiment had found are watched again (before their states load).
        runs = list(self.runs)
        known = {r.run_id for r in runs}
        try:
            for e in self.experiments:
                if e.source in saved_experiments:
                    e.load_state_dict(saved_experiments[e.source])
                    runs += [r for r in e.restore_runs(saved) if r.run_id not in known]
                    known = {r.run_id for r in runs}
        except (ValueError, TypeError, AttributeError) as exc:
            for e in self.experiments:
                e._reset()
            raise ValueError(f"state file {self.state_path}: {exc}") from None
        fresh = [RunWatch(run_id=r.run_id, name=r.name, follower=r.follower, keys=r.keys,
                          options=r.options, checkpoint_dir=r.checkpoint_dir) for r in runs]
        # Check every run on copies first: nothing is applied unless all load.
        for probe, run in zip(fresh, runs):
            if run.run_id in saved:
                probe.follower = copy.deepcopy(run.follower)
                try:
                    probe.load_state_dict(saved[run.run_id])
                except ValueError as exc:
                    raise ValueError(f"state file {self.state_path}: {exc}") from None
        for run in runs:
            if run.run_id in saved:
                run.load_state_dict(saved[run.run_id])
                run.changed = False
        self.runs = runs
        for e in self.experiments:
            e.changed = False
        self.log_size = int(state.get("log_size", 0))
        self._truncate_log()
        self.resumed = True

    def _truncate_log(self) -> None:
        path = self.out.log_path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size > self.log_size:
            # Entries written after the last saved state: they are made again, identically.
            with open(path, "r+b") as fh:
                fh.truncate(self.log_size)

    def save_state(self) -> None:
        self.log_size = self.out.write_log()
        state = {"version": STATE_VERSION, "saved_at": _now_iso(), "log_size": self.log_size,
                 "decision_log": str(self.out.log_path),
                 "runs": {r.run_id: r.state_dict() for r in self.runs},
                 "experiments": {e.source: e.state_dict() for e in self.experiments}}
        text = json.dumps(state, allow_nan=False)
        path = self.state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text, durable=True)
        for r in (*self.runs, *self.experiments):
            r.changed = False

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Watch until every run is done (or --once / --timeout); returns the exit status."""
        start = time.monotonic()
        for r in self.runs:
            if self.resumed and r.last_fed >= 0:
                self.out.event(r, "note", f"resumed from {self.state_path}: {r.status}, last "
                                          f"step fed {r.last_fed}")
        ended_by = None
        while True:
            self.poll_pass()
            if self.done:
                break
            if self.options.once:
                ended_by = "--once: one pass done"
                break
            elapsed = time.monotonic() - start
            if self.options.timeout is not None and elapsed >= self.options.timeout:
                ended_by = f"--timeout {self.options.timeout:g} s reached"
                break
            time.sleep(self._sleep_for(elapsed))
        for r in self.runs:
            r.flush_tags(self.out)
        if ended_by is not None:
            for r in (*self.runs, *self.experiments):
                if not r.done:
                    self.out.event(r, "stopped_watching", f"{ended_by}; the run is still "
                                                          f"{r.status} (state in "
                                                          f"{self.state_path})")
        self.out.status(self.runs, time.monotonic(), force=True)
        self.out.end_status()
        self.save_state()
        return self.exit_status()

    @property
    def done(self) -> bool:
        """Every run and every experiment is done."""
        return all(r.done for r in (*self.runs, *self.experiments))

    def poll_pass(self) -> None:
        """One pass: search the experiments, poll every run due, print, save what changed."""
        now_wall = time.time()
        for e in self.experiments:
            self.runs += e.discover(now_wall, self.out, {r.run_id: r for r in self.runs})
        for r in self.runs:
            if r.done and not r.pending_tags:
                continue  # finished or dropped: never polled again
            r.poll_once(now_wall, self.out, self.save_state)
            r.flush_tags(self.out)
        # Runs that are done are dropped from the status lines (their last line was shown).
        self.out.status([r for r in self.runs if not r.done or r.changed], time.monotonic())
        if any(r.changed for r in (*self.runs, *self.experiments)) or self.out.has_entries:
            self.save_state()

    def _sleep_for(self, elapsed: float) -> float:
        now = time.time()
        due = [max(r.next_poll - now, 0.0) for r in (*self.runs, *self.experiments)
               if not r.done]
        wait = max(self.options.interval, min(due, default=0.0))
        if self.options.timeout is not None:
            wait = min(wait, max(self.options.timeout - elapsed, 0.0))
        return max(wait, 0.01)

    def exit_status(self) -> int:
        statuses = [r.status for r in self.runs]
        if "failed" in statuses or "failed" in (e.status for e in self.experiments):
            return EXIT_FAILED
        if "halted" in statuses or "flagged" in statuses:
            return EXIT_HALTED
        if any(s not in _DONE for s in statuses) or not all(e.done for e in self.experiments):
            return EXIT_WATCHING
        return EXIT_FINISHED

    def report_runs(self) -> list:
        return [run for run in (r.to_run() for r in self.runs) if run is not None]


__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_FINISHED", "EXIT_HALTED", "EXIT_WATCHING",
           "ExperimentWatch", "RunWatch", "WatchOptions", "WatchOutput", "Watcher"]
