"""The decision: a pure, priority-ordered rule over typed evidence.

:class:`DecisionInput` is everything the rule reads, gathered by the engine at one update;
:func:`decide` turns it into ``(action, reason, message)``. No state, no I/O: the table tests
in ``tests/test_decide.py`` pin every branch.

Order (the first that applies wins):

1. **NON_FINITE** (HALT) - too many consecutive non-finite training rewards or held-out values.
2. **DIVERGED** (HALT) - the training reward left its range far beyond its noise.
3. Warm-up (CONTINUE) - before ``warmup_steps``.
4. No held-out series - FLAG SATURATED when the training reward is surely saturated (HALT only
   with ``halt_without_heldout``); the regime cannot be called.
5. Too few evaluations (CONTINUE) - some series has fewer than ``min_heldout_points``.
6. No planned steps left (CONTINUE) - nothing to save.
7. ``P(gain) < risk`` - HALT; ``P(gain) < flag_risk`` - FLAG. ``P(gain)`` is the probability that
   *some* held-out series still gains ``min_heldout_gain`` (``1 - prod(1 - p_i)``), so a halt
   needs every series to agree. The reason says what the evidence is:
   **COLLAPSE** when a series declined significantly over its last evaluations (never one
   outlier); **MEMORIZING** when the training reward saturated early (its online t_sat estimate within
   the first ``memorizing_before`` of the planned steps, the paper's rapid saturation) or
   held-out accuracy never gained while the reward moved; **SATURATED** when held-out accuracy
   gained earlier in a run that saturated late, and is now flat.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from satmon.decision import Action, Reason
from satmon.monitor.config import MonitorConfig
from satmon.monitor.posterior import HeldoutPosterior
from satmon.results import format_number

#: P(saturated) needed to FLAG (or HALT) on saturation alone when there is no held-out series.
SAT_SURE = 0.95


@dataclass(frozen=True)
class DecisionInput:
    """The evidence one decision rests on.

    Attributes
    ----------
    step: the update's step.
    non_finite: consecutive non-finite training rewards.
    heldout_non_finite: ``{series: consecutive non-finite values}``.
    diverge_streak: consecutive training rewards outside the divergence band.
    last_reward: the latest training reward.
    warm: True during warm-up.
    p_saturated: P(training reward saturated).
    t_sat_estimate, t_sat_interval: the online saturation-step estimate and its interval.
    n_heldout: held-out series seen.
    min_points: the fewest evaluations of any series.
    horizon: remaining planned steps.
    posteriors: ``{series: HeldoutPosterior}`` at the latest evaluation of each.
    collapsed: ``{series: (drop, threshold)}`` for series whose decline is significant.
    """

    step: int
    non_finite: int = 0
    heldout_non_finite: Mapping[str, int] = field(default_factory=dict)
    diverge_streak: int = 0
    last_reward: float = math.nan
    warm: bool = False
    p_saturated: float = 0.0
    t_sat_estimate: float = math.nan
    t_sat_interval: tuple[float, float] = (math.nan, math.nan)
    n_heldout: int = 0
    min_points: int = 0
    horizon: float = math.inf
    posteriors: Mapping[str, HeldoutPosterior] = field(default_factory=dict)
    collapsed: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def p_gain(self) -> float:
        """P(some series still gains min_gain): 1 - prod(1 - p_i); 1 without posteriors."""
        if not self.posteriors:
            return 1.0
        p_none = 1.0
        for post in self.posteriors.values():
            p_none *= 1.0 - post.p_gain
        return 1.0 - p_none


def decide(ev: DecisionInput, config: MonitorConfig) -> tuple[Action, Reason | None, str]:
    """The action, reason and message for the evidence (see the module docstring)."""
    c = config
    s = ev.step
    bad = {k: v for k, v in ev.heldout_non_finite.items() if v >= c.max_non_finite}
    if ev.non_finite > c.max_non_finite or bad:
        what = (f"{ev.non_finite} consecutive non-finite training rewards"
                if ev.non_finite > c.max_non_finite else
                ", ".join(f"held-out '{k}' non-finite {v} times in a row" for k, v in bad.items()))
        return _halt(c, Reason.NON_FINITE,
                     f"NON_FINITE at step {s}: {what} (limit {c.max_non_finite})")
    if ev.diverge_streak >= c.diverge_patience:
        return _halt(c, Reason.DIVERGED,
                     f"DIVERGED at step {s}: training reward {format_number(ev.last_reward)} "
                     f"outside its range for {ev.diverge_streak} steps")
    sat = (f"P(saturated)={ev.p_saturated:.2f}, online t_sat estimate "
           f"{_step(ev.t_sat_estimate)} [{_step(ev.t_sat_interval[0])}, "
           f"{_step(ev.t_sat_interval[1])}]")
    if ev.warm:
        return Action.CONTINUE, None, f"warm-up until step {c.warmup_steps}: {sat}"
    if ev.n_heldout == 0:
        if ev.p_saturated >= SAT_SURE:
            msg = (f"SATURATED at step {s}: training reward saturated ({sat}); no held-out "
                   "series, so the regime cannot be called")
            if c.halt_without_heldout:
                return _halt(c, Reason.SATURATED, msg)
            return Action.FLAG, Reason.SATURATED, msg
        return (Action.CONTINUE, None,
                f"step {s} ({sat}); no held-out series: regime cannot be called")
    if ev.min_points < c.min_heldout_points:
        return (Action.CONTINUE, None,
                f"step {s} ({sat}); {ev.min_points} of {c.min_heldout_points} held-out "
                "evaluations needed before a halt")
    p = ev.p_gain
    held = _heldout_text(ev, c)
    if ev.horizon <= 0:
        return (Action.CONTINUE, None,
                f"step {s}: no planned steps left, so no compute to save; {held}")
    if p >= c.flag_risk:
        return Action.CONTINUE, None, f"step {s}: {held}; {sat}"
    if ev.collapsed:
        name, (drop, limit) = max(ev.collapsed.items(), key=lambda kv: kv[1][0])
        reason = Reason.COLLAPSE
        why = (f"held-out '{name}' fell {100 * drop:.1f} points below its best earlier level "
               f"(the first evaluation or a 3-evaluation median; each of the last 3 "
               f"evaluations below it by more than {100 * limit:.1f})")
    elif (ev.p_saturated >= 0.5 and math.isfinite(ev.t_sat_estimate)
          and ev.t_sat_estimate <= c.memorizing_before * (ev.step + ev.horizon)):
        reason = Reason.MEMORIZING
        why = (f"the training reward saturated early (online t_sat estimate "
               f"{_step(ev.t_sat_estimate)}) and held-out accuracy is flat since")
    elif any(post.p_gained >= 0.5 for post in ev.posteriors.values()):
        reason = Reason.SATURATED
        why = "held-out accuracy gained earlier in the run and is now flat"
    else:
        reason = Reason.MEMORIZING
        why = "held-out accuracy has not gained while the training reward moved"
    msg = f"{reason.name} at step {s}: {why}; {held}; {sat}"
    if p < c.risk:
        return _halt(c, reason, msg)
    return Action.FLAG, reason, msg + f" (halt below P={c.risk:.3g})"


def _step(value: float) -> str:
    """A step estimate as a whole step ('never' / 'n/a' when not finite)."""
    if not math.isfinite(value):
        return format_number(value)
    return str(int(round(value)))


def _halt(c: MonitorConfig, reason: Reason, message: str) -> tuple[Action, Reason, str]:
    if reason.value in c.halt_on:
        return Action.HALT, reason, message
    return Action.FLAG, reason, message + f" (halting on {reason.value} is disabled)"


def _heldout_text(ev: DecisionInput, c: MonitorConfig) -> str:
    parts = [_series_text(name, post, c.min_heldout_gain) for name, post in ev.posteriors.items()]
    text = "; ".join(parts)
    if len(parts) > 1:
        text = f"P(any series gains)={ev.p_gain:.3f}: " + text
    return text


@functools.lru_cache(maxsize=64)
def _series_text(name: str, post: HeldoutPosterior, min_gain: float) -> str:
    # One series' posterior as the message says it: the same text at every step until the next
    # evaluation (the horizon is the one the posterior was computed for), so it is cached.
    frozen = f", P(policy frozen)={post.p_frozen:.2f}" if post.p_frozen > 0 else ""
    return (f"'{name}': P(gain >= {100 * min_gain:g} pt in the remaining "
            f"{format_number(post.horizon)} steps)={post.p_gain:.3f}, expected "
            f"{100 * post.expected_gain:+.1f} pt (95% upper {100 * post.gain_upper:+.1f}) over "
            f"{post.n_points} evaluations, noise dispersion {post.dispersion:.2f}{frozen}")


__all__ = ["DecisionInput", "SAT_SURE", "decide"]
