"""The monitor's immutable, keyword-only configuration."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from satmon.curves import FAMILIES
from satmon.decision import Reason
from satmon import _data
from satmon.monitor.calibration import ProbabilityMap
from satmon.monitor.posterior import GainPrior


def default_risk() -> float:
    """The halt level of the calibrated P(held-out gain) chosen on the calibration mixture
    (``satmon/monitor/prior.json``, written by ``benchmarks/calibrate_prior.py``: the image
    under the calibration map of the level fitted on the model's scale, its ``model_risk``)."""
    return float(_data.load("prior.json", list(GainPrior.__dataclass_fields__))["risk"])


def momentum_steps(beta1: float, beta2: float, fraction: float = 0.01) -> int:
    """Steps after the gradient vanishes until Adam's update has decayed to ``fraction`` of its
    last size: the update ``j`` steps later is ``(beta1 / sqrt(beta2)) ** j`` of it, so
    ``ceil(log(fraction) / log(beta1 / sqrt(beta2)))`` (0 without momentum).

    >>> momentum_steps(0.9, 0.999), momentum_steps(0.0, 0.999), momentum_steps(0.5, 0.999)
    (44, 0, 7)
    """
    if not (0 <= beta1 < 1 and 0 < beta2 <= 1):
        raise ValueError(f"momentum_steps needs 0 <= beta1 < 1 and 0 < beta2 <= 1. Got "
                         f"beta1={beta1!r}, beta2={beta2!r}.")
    if beta1 == 0:
        return 0
    rate = beta1 / math.sqrt(beta2)
    if rate >= 1:
        raise ValueError(f"Adam's update does not decay with beta1={beta1!r}, beta2={beta2!r} "
                         f"(beta1 / sqrt(beta2) = {rate:.4g} >= 1).")
    return math.ceil(math.log(fraction) / math.log(rate))


@dataclass(frozen=True)
class MonitorConfig:
    """The monitor's configuration (see :class:`satmon.SaturationMonitor` for each field).

    A pre-RL probe enters through ``prior`` and nowhere else (off by default: ``prior=None`` is
    the fitted prior, and every decision is what it was without the probe):
    ``MonitorConfig(prior=probe_result.monitor_prior())`` moves the flat-vs-gain shape mass of
    the held-out posterior by one likelihood ratio capped at 4
    (:meth:`satmon.monitor.posterior.GainPrior.with_probe`), so the halt still reads one
    probability, P(held-out gain), and the probe adds no gate or veto of its own.
    """

    total_steps: int | None = None
    warmup_steps: int = 50
    min_heldout_points: int = 6
    eval_every: int | None = None
    risk: float = default_risk()
    flag_risk: float = 0.2
    prior: Any = None
    calibration: Any = None
    frozen_zero_std: float | None = 0.999
    frozen_after: int = momentum_steps(0.9, 0.999)  # the transformers / torch defaults
    memorizing_before: float = 0.25
    reward_ceiling: float | None = 1.0
    min_heldout_gain: float = 0.01
    eps: float = 0.99
    end_margin: int = 50
    refit_every: int = 25
    refit_z: float = 2.0
    bootstrap: int = 0
    families: tuple[str, ...] = FAMILIES
    max_non_finite: int = 10
    diverge_sigmas: float = 12.0
    diverge_patience: int = 3
    halt_without_heldout: bool = False
    halt_on: tuple[str, ...] = tuple(r.value for r in Reason)
    slope_window: int = 50
    max_history: int = 4096
    decision_history: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(name: str, want: str) -> None:
            raise ValueError(f"The '{name}' parameter of SaturationMonitor must be {want}. "
                             f"Got {getattr(self, name)!r} instead.")

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
                v, bool) and math.isfinite(float(v))

        if self.total_steps is not None and (not is_int(self.total_steps) or self.total_steps < 1):
            fail("total_steps", "an int >= 1 or None")
        if self.eval_every is not None and (not is_int(self.eval_every) or self.eval_every < 1):
            fail("eval_every", "an int >= 1 or None")
        for name, low in (("warmup_steps", 0), ("min_heldout_points", 3), ("end_margin", 0),
                          ("refit_every", 1), ("bootstrap", 0), ("max_non_finite", 1),
                          ("diverge_patience", 1), ("slope_window", 10), ("max_history", 64),
                          ("decision_history", 1), ("frozen_after", 0), ("seed", 0)):
            v = getattr(self, name)
            if not is_int(v) or v < low:
                fail(name, f"an int >= {low}")
        for name in ("risk", "flag_risk", "memorizing_before"):
            v = getattr(self, name)
            if not is_num(v) or not 0 < v < 1:
                fail(name, "a float in (0, 1)")
        if self.flag_risk < self.risk:
            raise ValueError(f"'flag_risk' ({self.flag_risk}) must not be below 'risk' "
                             f"({self.risk}): a run is flagged before it is halted.")
        if self.frozen_zero_std is not None and (not is_num(self.frozen_zero_std)
                                                 or not 0 < self.frozen_zero_std <= 1):
            fail("frozen_zero_std", "a float in (0, 1] or None")
        if not is_num(self.refit_z) or self.refit_z < 0:
            fail("refit_z", "a float >= 0")
        if self.reward_ceiling is not None and not is_num(self.reward_ceiling):
            fail("reward_ceiling", "a finite float or None")
        if not is_num(self.eps) or not 0 < self.eps <= 1:
            fail("eps", "a float in (0, 1]")
        for name in ("min_heldout_gain", "diverge_sigmas"):
            v = getattr(self, name)
            if not is_num(v) or v <= 0:
                fail(name, "a float > 0")
        if not isinstance(self.halt_without_heldout, bool):
            fail("halt_without_heldout", "a bool")
        if isinstance(self.prior, Mapping):
            object.__setattr__(self, "prior", GainPrior.from_dict(self.prior))
        elif self.prior is not None and not isinstance(self.prior, GainPrior):
            fail("prior", "a GainPrior, a dict of its fields, or None (the fitted default)")
        if isinstance(self.calibration, Mapping):
            object.__setattr__(self, "calibration", ProbabilityMap.from_dict(self.calibration))
        elif self.calibration is not None and not isinstance(self.calibration, ProbabilityMap):
            fail("calibration", "a ProbabilityMap, a dict of its knots, or None (the map fitted "
                 "with the default prior)")
        fam = tuple(self.families)
        if not fam or any(f not in FAMILIES for f in fam) or all(f == "pow3" for f in fam):
            fail("families", f"a non-empty tuple from {FAMILIES} with a saturating family")
        object.__setattr__(self, "families", fam)
        valid = tuple(r.value for r in Reason)
        halt_on = tuple(r.value if isinstance(r, Reason) else r for r in self.halt_on)
        if any(r not in valid for r in halt_on):
            fail("halt_on", f"a tuple of reasons from {valid}")
        object.__setattr__(self, "halt_on", halt_on)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, (GainPrior, ProbabilityMap)):
                v = v.to_dict()
            out[f.name] = v
        return out


__all__ = ["MonitorConfig", "default_risk"]
