"""Safe halt: find the checkpoint at or after the halt step, then run the user's stop action.

Checkpoints (``--checkpoint-dir DIR``; the first one whose step is at or after the halt step
counts):

verl
    ``DIR/global_step_N/``. verl writes ``DIR/latest_checkpointed_iteration.txt`` (the step of
    the last complete checkpoint) after a synchronous save, so when that file exists a
    ``global_step_N/`` folder counts only once the file says a step >= N; without the file
    (``async_save``, or a verl that does not write it) the folder alone counts.
transformers / TRL
    ``DIR/checkpoint-N/``, counted once it holds ``trainer_state.json`` (the Trainer writes it
    last, after the model and optimizer).

Stop actions (any combination; they run in this order, once):

``--stop-file PATH``
    writes the decision as JSON to ``PATH`` (atomically: a temporary file renamed into place),
    for a training script that polls for it.
``--on-halt CMD``
    runs ``CMD`` through the shell (e.g. ``ray job stop $JOB``) with the decision in its
    environment: ``SATMON_RUN`` (run name), ``SATMON_SOURCE``, ``SATMON_HALT_STEP``,
    ``SATMON_LAST_STEP`` (last step seen), ``SATMON_REASON`` (``memorizing``, ...),
    ``SATMON_MESSAGE``, ``SATMON_CHECKPOINT`` (path, empty when none), ``SATMON_CHECKPOINT_STEP``,
    ``SATMON_NO_CHECKPOINT`` (``1`` when acting without a checkpoint: ``--no-wait-checkpoint``
    or the grace ran out), ``SATMON_MLFLOW_RUN_ID`` (MLflow sources) and ``SATMON_DECISION``
    (the whole decision as JSON). A command that exits non-zero, or runs past
    ``--action-timeout``, is reported as a failed stop action.
``--signal SIG --pid PID``
    sends ``SIG`` (``TERM``, ``SIGINT``, ``15`` ...) to process ``PID``. A process that no
    longer exists is a failed stop action.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satmon._files import atomic_write_text

VERL_MARKER = "latest_checkpointed_iteration.txt"
_VERL_DIR = re.compile(r"^global_step_(\d+)$")
_HF_DIR = re.compile(r"^checkpoint-(\d+)$")
_HF_COMPLETE = "trainer_state.json"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: str
    kind: str  # "verl" or "transformers"


def find_checkpoint(folder: str | os.PathLike, min_step: int) -> Checkpoint | None:
    """The first complete checkpoint at or after ``min_step`` in ``folder`` (None if none)."""
    root = Path(folder)
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return None
    marker = _marker_step(root / VERL_MARKER)
    found: list[Checkpoint] = []
    for entry in entries:
        if not entry.is_dir():
            continue
        m = _VERL_DIR.match(entry.name)
        if m:
            n = int(m.group(1))
            if n >= min_step and (marker is _NO_MARKER or (marker is not None and marker >= n)):
                found.append(Checkpoint(n, entry.path, "verl"))
            continue
        m = _HF_DIR.match(entry.name)
        if m and int(m.group(1)) >= min_step and os.path.exists(
                os.path.join(entry.path, _HF_COMPLETE)):
            found.append(Checkpoint(int(m.group(1)), entry.path, "transformers"))
    return min(found, key=lambda c: c.step) if found else None


_NO_MARKER: Any = object()


def _marker_step(path: Path) -> Any:
    """The step in verl's marker file; ``_NO_MARKER`` without the file, None if unreadable."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return _NO_MARKER
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def parse_signal(text: str) -> signal.Signals:
    """``TERM``, ``SIGTERM`` or ``15`` as a signal (ValueError naming the valid names)."""
    raw = str(text).strip().upper()
    try:
        return signal.Signals(int(raw))
    except ValueError:
        pass
    name = raw if raw.startswith("SIG") else "SIG" + raw
    try:
        return signal.Signals[name]
    except KeyError:
        valid = ", ".join(s.name for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                           signal.SIGKILL, signal.SIGUSR1, signal.SIGUSR2))
        raise ValueError(f"--signal {text!r} is not a signal; use a name such as {valid}, "
                         "or a number.") from None


@dataclass(frozen=True)
class StopActions:
    """The configured stop actions (all optional; see the module docstring)."""

    stop_file: str | None = None
    on_halt: str | None = None
    signal: signal.Signals | None = None
    pid: int | None = None
    action_timeout: float = 300.0

    def __post_init__(self) -> None:
        if (self.signal is None) != (self.pid is None):
            raise ValueError("--signal and --pid go together: --signal names the signal, "
                             "--pid the process that gets it.")
        if self.pid is not None and (isinstance(self.pid, bool) or self.pid <= 0):
            raise ValueError(f"--pid must be a process id > 0. Got {self.pid!r}.")
        if not self.action_timeout > 0:
            raise ValueError(f"--action-timeout must be > 0 seconds. Got {self.action_timeout}.")

    @property
    def any(self) -> bool:
        return bool(self.stop_file or self.on_halt or self.signal is not None)

    def describe(self) -> str:
        parts = []
        if self.stop_file:
            parts.append(f"write {self.stop_file}")
        if self.on_halt:
            parts.append(f"run {self.on_halt!r}")
        if self.signal is not None:
            parts.append(f"send {self.signal.name} to pid {self.pid}")
        return ", ".join(parts) or "none"

    def check_process(self) -> None:
        """Fail early when ``--pid`` names no process this user may signal."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            raise ValueError(f"--pid {self.pid}: no such process.") from None
        except PermissionError:
            raise ValueError(f"--pid {self.pid}: this user may not signal that process.") \
                from None

    def run(self, decision: dict[str, Any]) -> list[str]:
        """Run every configured action once; returns the problems (empty: all succeeded)."""
        problems: list[str] = []
        if self.stop_file:
            try:
                stop = Path(self.stop_file)
                stop.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(stop, json.dumps(decision, indent=2, allow_nan=False) + "\n",
                                  durable=True)
            except OSError as exc:
                problems.append(f"--stop-file {self.stop_file}: could not be written ({exc})")
        if self.on_halt:
            problems += self._command(decision)
        if self.signal is not None:
            try:
                os.kill(int(self.pid), self.signal)
            except ProcessLookupError:
                problems.append(f"--signal {self.signal.name}: process {self.pid} does not "
                                "exist (already ended?)")
            except PermissionError:
                problems.append(f"--signal {self.signal.name}: not allowed to signal process "
                                f"{self.pid}")
        return problems

    def _command(self, decision: dict[str, Any]) -> list[str]:
        env = dict(os.environ)
        env.update(decision_environment(decision))
        try:
            done = subprocess.run(self.on_halt, shell=True, env=env, capture_output=True,
                                  text=True, timeout=self.action_timeout)
        except subprocess.TimeoutExpired:
            return [f"--on-halt command did not finish within {self.action_timeout:g} s "
                    "(--action-timeout)"]
        except OSError as exc:
            return [f"--on-halt command could not be started ({exc})"]
        if done.returncode != 0:
            tail = (done.stderr or done.stdout or "").strip()[-500:]
            return [f"--on-halt command exited with status {done.returncode}"
                    + (f": {tail}" if tail else "")]
        return []


def decision_environment(decision: dict[str, Any]) -> dict[str, str]:
    """The ``SATMON_*`` variables an ``--on-halt`` command gets (see the module docstring)."""
    ckpt = decision.get("checkpoint") or {}
    return {
        "SATMON_RUN": str(decision.get("run", "")),
        "SATMON_SOURCE": str(decision.get("source", "")),
        "SATMON_HALT_STEP": str(decision.get("step", "")),
        "SATMON_LAST_STEP": str(decision.get("last_step", "")),
        "SATMON_REASON": str(decision.get("reason") or ""),
        "SATMON_MESSAGE": str(decision.get("message", "")),
        "SATMON_CHECKPOINT": str(ckpt.get("path", "")),
        "SATMON_CHECKPOINT_STEP": str(ckpt.get("step", "")),
        "SATMON_NO_CHECKPOINT": "" if ckpt else "1",
        "SATMON_MLFLOW_RUN_ID": str(decision.get("mlflow_run_id") or ""),
        "SATMON_DECISION": json.dumps(decision, allow_nan=False),
    }


__all__ = ["Checkpoint", "StopActions", "VERL_MARKER", "decision_environment",
           "find_checkpoint", "parse_signal"]
