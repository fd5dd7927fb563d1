"""Replay a logged run through a :class:`~satmon.monitor.SaturationMonitor`, step by step.

Replay feeds the monitor exactly what it would have seen online: at each logged step the
training reward, the held-out evaluations logged at that step and the auxiliary values; an
evaluation logged at a step without a training reward (e.g. step 0, before RL) is fed as an
evaluation-only update. Replay stops at the first HALT.

Outcome metrics (no labels needed):

* ``compute_saved``: fraction of the run's steps not run after the halt,
  ``(T - halt_step) / T`` with T the planned (default: logged) last step; 0 without a halt.
* ``regret``: best held-out accuracy evaluated after the halt minus the accuracy at the halt (the
  last evaluation at or before the halt step), averaged over held-out benchmarks and floored at 0;
  0 without a halt, NaN without held-out series.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from satmon.decision import Action, Decision, Reason
from satmon.monitor import SaturationMonitor
from satmon.results import Result, format_number, json_safe, text_table
from satmon.run import Run


class ReplayResult(Result):
    """What the monitor did on one replayed run."""

    def __init__(self, *, run_name: str, total_steps: int, halt_step: int | None,
                 reason: Reason | None, decisions: Sequence[Decision], compute_saved: float,
                 regret: float, regret_by_benchmark: Mapping[str, float], first_flag: int | None,
                 seconds: float, message: str) -> None:
        self.run_name = run_name
        self.total_steps = total_steps
        self.halt_step = halt_step
        self.reason = reason
        self.decisions = tuple(decisions)
        self.compute_saved = compute_saved
        self.regret = regret
        self.regret_by_benchmark = dict(regret_by_benchmark)
        self.first_flag = first_flag
        self.seconds = seconds
        self.message = message

    @property
    def halted(self) -> bool:
        return self.halt_step is not None

    @property
    def final_decision(self) -> Decision | None:
        return self.decisions[-1] if self.decisions else None

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "run": self.run_name, "total_steps": self.total_steps, "halt_step": self.halt_step,
            "reason": None if self.reason is None else self.reason.value,
            "compute_saved": self.compute_saved, "regret": self.regret,
            "regret_by_benchmark": self.regret_by_benchmark, "first_flag": self.first_flag,
            "n_decisions": len(self.decisions), "seconds": self.seconds,
            "message": self.message,
            "final_decision": None if not self.decisions else self.decisions[-1].to_dict()})

    def summary(self) -> str:
        f = format_number
        rows = [[self.run_name, f(self.total_steps),
                 "-" if self.halt_step is None else str(self.halt_step),
                 "-" if self.reason is None else self.reason.value,
                 "-" if self.first_flag is None else str(self.first_flag),
                 f(self.compute_saved), f(self.regret)]]
        table = text_table(["run", "T", "halt step", "reason", "first flag", "compute saved",
                            "regret"], rows)
        return f"{table}\n{self.message}"


def replay(run: Run, monitor_factory: Callable[[], SaturationMonitor] | None = None, *,
           total_steps: int | None = None, stop_at_halt: bool = True,
           **monitor_kwargs: Any) -> ReplayResult:
    """Replay ``run`` through a monitor and measure what its halt would have cost and saved.

    Parameters
    ----------
    run:
        A :class:`satmon.Run` with a training reward.
    monitor_factory:
        A zero-argument callable returning a fresh monitor. When None a
        :class:`SaturationMonitor` is built from ``monitor_kwargs`` with ``total_steps``
        defaulting to the run's last logged step.
    total_steps:
        The planned last step T, for ``compute_saved`` and (without ``monitor_factory``) as the
        monitor's ``total_steps`` (default: the monitor's ``total_steps``, else the run's last
        step).
    stop_at_halt:
        Stop feeding the run at the first HALT (default); False replays every step (the
        monitor repeats its halt).
    monitor_kwargs:
        Parameters of :class:`SaturationMonitor` (only without ``monitor_factory``).

    Returns
    -------
    A :class:`ReplayResult`.

    Example
    -------
    >>> from satmon.datasets import make_run
    >>> res = replay(make_run("memorizing", seed=1).run)
    >>> res.reason.value if res.halted else None
    'memorizing'
    """
    tr = run.require_train_reward()
    if monitor_factory is not None and monitor_kwargs:
        raise ValueError("Pass either monitor_factory or monitor parameters, not both; got "
                         f"parameters {sorted(monitor_kwargs)}.")
    last = int(tr.steps[-1])
    if monitor_factory is None:
        # The planned budget is the horizon of every "remaining gain" question: a replay of a
        # run halted live ends at its halt step, and must still ask about the planned T.
        monitor_kwargs.setdefault("total_steps", total_steps or last)
        monitor = SaturationMonitor(**monitor_kwargs)
    else:
        monitor = monitor_factory()
        if not isinstance(monitor, SaturationMonitor):
            raise TypeError(f"monitor_factory must return a SaturationMonitor. "
                            f"Got {type(monitor).__name__}.")
    planned = int(total_steps or monitor.config.total_steps or last)
    held = {k: (dict(zip(v.steps.tolist(), v.values.tolist())), v.sample_size)
            for k, v in run.heldout.items()}
    aux = {k: dict(zip(v.steps.tolist(), v.values.tolist())) for k, v in run.aux.items()}
    train = dict(zip(tr.steps.tolist(), tr.values.tolist()))
    all_steps = sorted(set(train) | {s for d, _ in held.values() for s in d})
    decisions: list[Decision] = []
    halt: Decision | None = None
    first_flag = None
    t0 = time.perf_counter()
    for s in all_steps:
        h = {k: (d[s], n) for k, (d, n) in held.items() if s in d}
        a = {k: d[s] for k, d in aux.items() if s in d}
        dec = monitor.update(s, train.get(s), heldout=h or None, aux=a or None)
        decisions.append(dec)
        if dec.action is Action.FLAG and first_flag is None:
            first_flag = s
        if dec.action is Action.HALT and halt is None:
            halt = dec
            if stop_at_halt:
                break
    seconds = time.perf_counter() - t0
    halt_step = None if halt is None else int(halt.step)
    saved = 0.0 if halt_step is None else max(planned - halt_step, 0) / planned
    regret_by: dict[str, float] = {}
    for name, series in run.heldout.items():
        regret_by[name] = heldout_regret(series.steps, series.values, halt_step)
    finite = [v for v in regret_by.values() if math.isfinite(v)]
    regret = float(np.mean(finite)) if finite else math.nan
    msg = (halt.message if halt is not None else
           (decisions[-1].message if decisions else "no updates"))
    return ReplayResult(run_name=run.name, total_steps=planned, halt_step=halt_step,
                        reason=None if halt is None else halt.reason, decisions=decisions,
                        compute_saved=saved, regret=regret, regret_by_benchmark=regret_by,
                        first_flag=first_flag, seconds=seconds, message=msg)


def heldout_regret(steps: Any, values: Any, halt_step: int | None) -> float:
    """Best held-out value evaluated after ``halt_step`` minus the value at the halt (>= 0).

    The value at the halt is the last evaluation at or before it (what the halted run keeps);
    0 without a halt or without a later evaluation; NaN without any evaluation at or before it.
    """
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if halt_step is None or s.size == 0:
        return 0.0 if s.size else math.nan
    before = s <= halt_step
    if not before.any():
        return math.nan
    at = float(v[before][-1])
    after = s > halt_step
    if not after.any():
        return 0.0
    return max(float(v[after].max()) - at, 0.0)


__all__ = ["ReplayResult", "heldout_regret", "replay"]
