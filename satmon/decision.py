"""What the online monitor tells a trainer after each update: an action, a reason, evidence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from satmon.results import json_safe


class Action(str, Enum):
    """What the trainer should do. Ordered by severity: CONTINUE < FLAG < HALT."""

    CONTINUE = "continue"
    FLAG = "flag"
    HALT = "halt"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.CONTINUE: 0, Action.FLAG: 1, Action.HALT: 2}


class Reason(str, Enum):
    """Why the monitor flagged or halted a run."""

    #: Saturated training reward, held-out accuracy not improving: the run memorizes.
    MEMORIZING = "memorizing"
    #: Post-saturation and held-out accuracy flat: more RL compute is unlikely to help.
    SATURATED = "saturated"
    #: Held-out accuracy falling while the reward holds or spikes (reward hacking, proxy collapse).
    COLLAPSE = "collapse"
    #: The training reward or a held-out value was NaN / inf for too many consecutive updates.
    NON_FINITE = "non_finite"
    #: The training reward left its established range far beyond its noise (a blow-up).
    DIVERGED = "diverged"


class Phase(str, Enum):
    """Where the run is relative to the saturation step."""

    PRE = "pre_saturation"
    POST = "post_saturation"
    UNKNOWN = "unknown"


REGIMES = ("generalizing", "memorizing", "collapsing", "undetermined")

#: The metrics :meth:`Decision.metrics` logs by default (before the prefix).
METRICS = ("p_heldout_gain", "heldout_expected_gain", "heldout_gain_upper95", "p_saturated",
           "t_sat_online_estimate", "t_sat_online_low", "t_sat_online_high", "post_saturation",
           "flag", "halt") + tuple(f"p_{r}" for r in REGIMES)


@dataclass(frozen=True)
class Evidence:
    """The numbers behind a decision, as of one update.

    Attributes
    ----------
    phase: pre- or post-saturation (UNKNOWN during warm-up).
    p_saturated: posterior probability that the training reward has saturated.
    t_sat_estimate: the monitor's *online* estimate of the saturation step, from the data so
        far (NaN while unknown). Not the paper's exact, post-hoc t_sat
        (:func:`satmon.saturation.saturation_step`), which needs the whole run.
    t_sat_interval: ``(low, high)`` interval for that estimate (NaN while unknown).
    asymptote: fitted asymptote of the training-reward curve (NaN without a fit).
    forecast_final: fitted training reward at the run's last planned step (NaN without a fit).
    regime: probabilities of ``generalizing``, ``memorizing``, ``collapsing``, ``undetermined``
        (they sum to 1).
    heldout_points: held-out evaluations seen so far (per benchmark, the largest count).
    heldout_slope: per-step slope of held-out accuracy since saturation (NaN when unknown).
    details: further named numbers (detector statistics, fit family weights ...).
    """

    phase: Phase = Phase.UNKNOWN
    p_saturated: float = 0.0
    t_sat_estimate: float = math.nan
    t_sat_interval: tuple[float, float] = (math.nan, math.nan)
    asymptote: float = math.nan
    forecast_final: float = math.nan
    regime: dict[str, float] = field(
        default_factory=lambda: {"generalizing": 0.0, "memorizing": 0.0, "collapsing": 0.0,
                                 "undetermined": 1.0})
    heldout_points: int = 0
    heldout_slope: float = math.nan
    details: dict[str, float] = field(default_factory=dict)

    @property
    def most_likely_regime(self) -> str:
        return max(self.regime, key=self.regime.get)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "phase": self.phase.value,
            "p_saturated": self.p_saturated,
            "t_sat_estimate": self.t_sat_estimate,
            "t_sat_interval": list(self.t_sat_interval),
            "asymptote": self.asymptote,
            "forecast_final": self.forecast_final,
            "regime": dict(self.regime),
            "heldout_points": self.heldout_points,
            "heldout_slope": self.heldout_slope,
            "details": dict(self.details),
        })


@dataclass(frozen=True)
class Decision:
    """The monitor's answer to one update.

    ``message`` is written for a person and carries the numbers behind the call, e.g.
    "MEMORIZING at step 110: the training reward saturated early (online t_sat estimate 31)
    and held-out accuracy is flat since; 'heldout': P(gain >= 2 pt in the remaining 190
    steps)=0.003, expected +0.1 pt (95% upper +0.9 pt) over 12 evaluations, noise dispersion
    1.00; P(saturated)=0.99, online t_sat estimate 31 [24, 40]".
    """

    step: int
    action: Action = Action.CONTINUE
    reason: Reason | None = None
    message: str = ""
    evidence: Evidence = field(default_factory=Evidence)

    @property
    def should_stop(self) -> bool:
        return self.action is Action.HALT

    def metrics(self, prefix: str = "satmon/", *, verbose: bool = False) -> dict[str, float]:
        """Flat numeric view for metric loggers (non-finite values omitted).

        The default set (:data:`METRICS`) is what a person reads on a dashboard: the decision
        quantity P(held-out gain) with the expected gain and its 95% upper bound (of the
        series that most favours continuing), P(saturated) and the online t_sat estimate with
        its interval, the post-saturation phase, the regime probabilities, and ``flag`` /
        ``halt`` as 0/1. ``verbose=True`` adds every internal number behind them (detector
        statistics, fit weights, the posterior's parts), under their own names.
        """
        e = self.evidence
        d = e.details
        raw: dict[str, float] = {
            "p_heldout_gain": d.get("p_heldout_gain", math.nan),
            "heldout_expected_gain": d.get("heldout/expected_gain", math.nan),
            "heldout_gain_upper95": d.get("heldout/gain_upper", math.nan),
            "p_saturated": e.p_saturated,
            "t_sat_online_estimate": e.t_sat_estimate,
            "t_sat_online_low": e.t_sat_interval[0],
            "t_sat_online_high": e.t_sat_interval[1],
            "post_saturation": 1.0 if e.phase is Phase.POST else 0.0,
            "flag": 1.0 if self.action is not Action.CONTINUE else 0.0,
            "halt": 1.0 if self.action is Action.HALT else 0.0,
        }
        raw.update({f"p_{k}": v for k, v in e.regime.items()})
        if verbose:
            raw.update({"asymptote": e.asymptote, "forecast_final": e.forecast_final,
                        "heldout_slope": e.heldout_slope})
            raw.update({k: v for k, v in d.items() if k not in raw})
        return {prefix + k: float(v) for k, v in raw.items()
                if v is not None and math.isfinite(float(v))}

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "step": self.step,
            "action": self.action.value,
            "reason": None if self.reason is None else self.reason.value,
            "message": self.message,
            "evidence": self.evidence.to_dict(),
        })


@dataclass(frozen=True)
class UpdateRecord:
    """One monitor update as the callback's history, the lab's trace, the replay and the plots
    share it: the inputs, the decision, and the two probabilities a plot shows.

    ``p_heldout_gain`` is the quantity the halt is decided on (NaN before there is held-out
    evidence); ``t_sat_estimate`` is the monitor's *online* estimate of the saturation step.
    """

    step: int
    train_reward: float | None = None
    heldout: dict[str, float] = field(default_factory=dict)
    heldout_n: dict[str, int | None] = field(default_factory=dict)
    aux: dict[str, float] = field(default_factory=dict)
    action: str = Action.CONTINUE.value
    reason: str | None = None
    phase: str = Phase.UNKNOWN.value
    p_saturated: float = math.nan
    p_heldout_gain: float = math.nan
    t_sat_estimate: float = math.nan
    regime: str = "undetermined"
    message: str = ""

    @classmethod
    def from_decision(cls, decision: Decision, *, train_reward: float | None = None,
                      heldout: dict[str, tuple[float, int | None]] | None = None,
                      aux: dict[str, float] | None = None) -> "UpdateRecord":
        """The record of ``decision`` with the inputs that produced it
        (``heldout``: ``{name: (value, n)}``)."""
        e = decision.evidence
        held = dict(heldout or {})
        return cls(step=int(decision.step), train_reward=train_reward,
                   heldout={k: v for k, (v, _) in held.items()},
                   heldout_n={k: n for k, (_, n) in held.items()}, aux=dict(aux or {}),
                   action=decision.action.value,
                   reason=None if decision.reason is None else decision.reason.value,
                   phase=e.phase.value, p_saturated=e.p_saturated,
                   p_heldout_gain=e.details.get("p_heldout_gain", math.nan),
                   t_sat_estimate=e.t_sat_estimate, regime=e.most_likely_regime,
                   message=decision.message)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "UpdateRecord":
        """Back from :meth:`to_dict` (missing fields keep their defaults; None numbers NaN)."""
        def num(key: str) -> float:
            v = row.get(key)
            return math.nan if v is None else float(v)

        return cls(step=int(row["step"]), train_reward=row.get("train_reward"),
                   heldout=dict(row.get("heldout") or {}),
                   heldout_n=dict(row.get("heldout_n") or {}), aux=dict(row.get("aux") or {}),
                   action=row.get("action") or Action.CONTINUE.value, reason=row.get("reason"),
                   phase=row.get("phase") or Phase.UNKNOWN.value, p_saturated=num("p_saturated"),
                   p_heldout_gain=num("p_heldout_gain"), t_sat_estimate=num("t_sat_estimate"),
                   regime=row.get("regime") or "undetermined", message=row.get("message") or "")

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "step": self.step, "train_reward": self.train_reward, "heldout": dict(self.heldout),
            "heldout_n": dict(self.heldout_n), "aux": dict(self.aux), "action": self.action,
            "reason": self.reason, "phase": self.phase, "p_saturated": self.p_saturated,
            "p_heldout_gain": self.p_heldout_gain, "t_sat_estimate": self.t_sat_estimate,
            "regime": self.regime, "message": self.message})
