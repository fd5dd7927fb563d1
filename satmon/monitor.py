"""The online saturation and regime monitor: one ``update`` per logged step, one Decision back.

Per update the monitor feeds the training reward to three detectors (a slope test whose horizon
is the remaining budget, linear-segment BOCPD, a residual CUSUM), refits the saturation-curve
ensemble on a schedule (at least ``refit_every`` steps apart, postponed while the rewards since
the last refit agree with the fitted curve), and on every held-out evaluation recomputes the regime
evidence and the posterior of the remaining held-out gain. The decision:

* **NON_FINITE** (HALT): more than ``max_non_finite`` consecutive non-finite training rewards,
  or as many consecutive non-finite values of one held-out benchmark.
* **DIVERGED** (HALT): ``diverge_patience`` consecutive training rewards outside the range seen
  so far (widened by its span) and more than ``diverge_sigmas`` noise sds from the recent median.
* **COLLAPSE**: held-out accuracy more than max(5 points, 3 noise sds) below its best
  3-evaluation mean; the score is max(P(collapsing), the stop score below).
* **MEMORIZING** / **SATURATED**: after saturation (P(saturated) >= 0.5), the stop score
  ``1 - P(held-out gain > min_heldout_gain over the remaining budget | evidence)`` from the
  calibrated empirical-Bayes model of :mod:`satmon.stopping`; MEMORIZING when the regime
  evidence favours memorizing over generalizing, else SATURATED. The default
  ``halt_threshold`` is the one chosen on the calibration suite for a false-halt rate <= 1%.

Guard rails. The stop score comes from a model fitted on synthetic runs, and a learned model
can be confidently wrong outside its training distribution (a 60-step run near the end of its
budget, a min_heldout_gain of 5 points). Two vetoes that rest only on the evidence itself are
applied before any MEMORIZING or SATURATED flag or halt (a vetoed evaluation also resets the
patience count):

* **not surely saturated**: P(saturated) below ``min_p_saturated`` (default 0.9). P(saturated)
  averages a trend test with the curve fits, so 0.5 means they disagree: one says the reward
  still rises by more than the paper's tolerance over the remaining budget.
* **held-out still rising**: on some benchmark the recent held-out slope (the points since the
  saturation estimate, at least the last 6; weighted least squares with binomial variances,
  overdispersion-inflated) has ``z = slope / se > rising_z`` (default 2) and its projection
  ``slope x remaining steps`` exceeds ``min_heldout_gain``. A run whose held-out accuracy is
  measurably climbing fast enough to matter is not memorizing and not saturated, whatever a
  model extrapolates.

A third, trivial one: at or after the planned last step there is no compute left to save, so
MEMORIZING and SATURATED are not raised there.

P(saturated) is the mean of a trend part (the BOCPD segment slope extrapolated over the
remaining budget against the tolerance ``(1 - eps) x level``; the windowed slope test when BOCPD
has no posterior yet) and the curve-fit part (the share of t_sat samples at or before the step).
A reward cannot rise above its ceiling: once the training reward has touched
``reward_ceiling`` (default 1.0) and never exceeded it, a headroom ``ceiling - level`` below the
tolerance makes the trend part 1, so the slow creep of a reward pinned at 1.0 (0.97 -> 1.0) is
not read as a gain still to come. A reward seen above the ceiling disables this (unbounded proxy
rewards).

A score at or above ``flag_threshold`` gives FLAG; at or above ``halt_threshold`` on ``patience``
consecutive held-out evaluations gives HALT (sticky: every later update repeats it). Nothing is
flagged or halted before ``warmup_steps`` or with fewer than ``min_heldout_points`` held-out
evaluations (except NON_FINITE / DIVERGED). Without any held-out series the monitor still
reports saturation (FLAG SATURATED when sure) and says it cannot call the regime; it halts on
saturation alone only with ``halt_without_heldout=True``.

Input policy:

* ``train_reward`` NaN / inf counts as non-finite. ``None`` means "not logged in this update"
  when the update carries held-out values (an evaluation-only record), else it counts as
  non-finite (TRL logs None for an all-NaN metric).
* A step not above the last training step (a resumed run logging steps again, or an out-of-order
  record) is not fed to the statistics; the previous decision is returned again with this step.
  Held-out values at a step not above that benchmark's last evaluation are ignored likewise.
* Rewards outside [0, 1] are accepted (proxy rewards are unbounded).
* A held-out value is ``(value, n)`` or a bare value (``n`` unknown: its noise is estimated from
  the series itself).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from satmon.curves import FAMILIES, curve_value, forecast_saturation
from satmon.decision import Action, Decision, Evidence, Phase, Reason
from satmon.detectors import LinearBOCPD, ResidualCUSUM, SlopeTest
from satmon.detectors.base import as_step, from_primitive, to_primitive
from satmon.regime import (CLASSES, _features, _gain_posterior, _point_variance,
                           regime_probabilities)
from satmon.results import format_number
from satmon.stopping import (default_halt_threshold, default_patience, p_heldout_gain,
                             stop_features, stop_score)

STATE_VERSION = 1
#: A drop of held-out accuracy (best 3-evaluation mean minus the latest) counts as a collapse
#: only above this size and above ``_COLLAPSE_SDS`` noise sds: the synthetic memorizing runs
#: drift down by up to 3 points, collapses drop 10-30.
_COLLAPSE_DROP = 0.05
_COLLAPSE_SDS = 3.0
#: P(saturated) needed to FLAG (or HALT) on saturation alone when there is no held-out series.
_SAT_SURE = 0.95


def _phi(x: float) -> float:
    """Standard normal CDF (math.erfc: scipy.stats costs ~50 us per scalar call)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))
_UNDETERMINED = {"generalizing": 0.0, "memorizing": 0.0, "collapsing": 0.0, "undetermined": 1.0}


@dataclass(frozen=True)
class MonitorConfig:
    """The monitor's immutable, keyword-only configuration (see :class:`SaturationMonitor`)."""

    total_steps: int | None = None
    warmup_steps: int = 50
    min_heldout_points: int = 6
    eval_every: int | None = None
    flag_threshold: float = 0.8
    halt_threshold: float = default_halt_threshold()
    patience: int = default_patience()
    min_p_saturated: float = 0.9
    rising_z: float = 2.0
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
        for name, low in (("warmup_steps", 0), ("min_heldout_points", 3), ("patience", 1),
                          ("end_margin", 0), ("refit_every", 1), ("bootstrap", 0),
                          ("max_non_finite", 1), ("diverge_patience", 1), ("slope_window", 10),
                          ("max_history", 64), ("seed", 0)):
            v = getattr(self, name)
            if not is_int(v) or v < low:
                fail(name, f"an int >= {low}")
        for name in ("flag_threshold", "halt_threshold", "min_p_saturated"):
            v = getattr(self, name)
            if not is_num(v) or not 0 < v <= 1:
                fail(name, "a float in (0, 1]")
        if not is_num(self.rising_z) or self.rising_z <= 0:
            fail("rising_z", "a float > 0")
        if not is_num(self.refit_z) or self.refit_z < 0:
            fail("refit_z", "a float >= 0")
        if self.reward_ceiling is not None and not is_num(self.reward_ceiling):
            fail("reward_ceiling", "a finite float or None")
        if self.flag_threshold > self.halt_threshold:
            raise ValueError(f"'flag_threshold' ({self.flag_threshold}) must not exceed "
                             f"'halt_threshold' ({self.halt_threshold}).")
        if not is_num(self.eps) or not 0 < self.eps <= 1:
            fail("eps", "a float in (0, 1]")
        for name in ("min_heldout_gain", "diverge_sigmas"):
            v = getattr(self, name)
            if not is_num(v) or v <= 0:
                fail(name, "a float > 0")
        if not isinstance(self.halt_without_heldout, bool):
            fail("halt_without_heldout", "a bool")
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
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}


class SaturationMonitor:
    """Online saturation and regime monitor (framework-agnostic).

    Parameters (keyword-only; stored in :attr:`config`)
    ----------
    total_steps:
        The run's planned last step T (horizon of every "remaining budget" question). None:
        the run is assumed to last as long again as it has so far.
    warmup_steps:
        No FLAG/HALT on saturation, memorization or collapse before this step.
    min_heldout_points:
        Held-out evaluations needed before the regime is called.
    eval_every:
        Expected held-out interval (used in messages about missing evaluations).
    flag_threshold, halt_threshold:
        Score needed for FLAG / HALT (see the module docstring).
    patience:
        Consecutive held-out evaluations at or above ``halt_threshold`` needed to HALT (default:
        chosen with the threshold on the calibration suite).
    min_p_saturated:
        P(saturated) needed before any MEMORIZING or SATURATED flag or halt (guard rail).
    rising_z:
        A recent held-out slope with ``z`` above this whose projection over the remaining
        budget exceeds ``min_heldout_gain`` vetoes MEMORIZING and SATURATED (guard rail).
    reward_ceiling:
        Highest possible training reward (None: unbounded). Used only once the reward has
        touched it and never exceeded it (see the module docstring).
    min_heldout_gain:
        Held-out gain (accuracy units; 0.01 = 1 point) that still justifies training.
    eps, end_margin:
        The paper's t_sat rule parameters.
    refit_every:
        Minimum steps between saturation-curve refits (refits are also at least 15% of the
        steps so far and 5% of ``total_steps`` apart).
    refit_z:
        A due refit is postponed (by at most three gaps) while the training rewards since the
        last refit agree with the fitted curve: their mean residual is within ``refit_z``
        standard errors of zero. 0 refits on the schedule alone.
    bootstrap:
        Bootstrap refits per family at each refit.
    families:
        Curve families of the ensemble.
    max_non_finite, diverge_sigmas, diverge_patience:
        NON_FINITE and DIVERGED rules.
    halt_without_heldout:
        Allow HALT SATURATED from the training reward alone when no held-out series exists.
    halt_on:
        Reasons allowed to HALT (others are downgraded to FLAG).
    slope_window:
        Window of the slope test.
    max_history:
        Training points kept for curve fits; beyond it adjacent points are averaged in pairs,
        so memory stays bounded on long runs.
    seed:
        Seed of the bootstrap and simulations (each refit uses ``seed + step``).

    Example
    -------
    >>> mon = SaturationMonitor(total_steps=300, warmup_steps=20)
    >>> d = mon.update(1, train_reward=0.2, heldout={"math": (0.41, 500)})
    >>> d.action.value, d.evidence.phase.value
    ('continue', 'unknown')
    """

    def __init__(self, **kwargs: Any) -> None:
        try:
            self.config = MonitorConfig(**kwargs)
        except TypeError:
            valid = [f.name for f in fields(MonitorConfig)]
            unknown = sorted(set(kwargs) - set(valid))
            raise TypeError(f"SaturationMonitor got unknown parameters {unknown}; "
                            f"valid parameters: {valid}.") from None
        self.reset()

    # -- construction ------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything seen (the configuration is kept)."""
        c = self.config
        horizon = c.total_steps or 500
        self._slope = SlopeTest(total_steps=c.total_steps, window=c.slope_window,
                                min_gain=c.min_heldout_gain, min_points=10)
        self._bocpd = LinearBOCPD(time_scale=float(horizon), hazard=1.0 / max(horizon / 2, 20))
        self._cusum = ResidualCUSUM()
        self._train_steps: list[float] = []
        self._train_values: list[float] = []
        self._train_weights: list[int] = []
        self._last_step = -1
        self._heldout: dict[str, dict[str, list[float]]] = {}
        self._heldout_bad: dict[str, int] = {}
        self._aux: dict[str, float] = {}
        self._non_finite = 0
        self._diverge_streak = 0
        self._range = [math.inf, -math.inf]
        self._recent = _RecentWindow()
        self._halt_streak = 0
        self._fit: dict[str, Any] = {}
        self._warm: dict[str, list[float]] = {}
        self._tsat_samples: list[float] = []
        self._last_refit = -1
        self._regime: dict[str, float] = dict(_UNDETERMINED)
        self._regime_features: dict[str, float] = {}
        self._gain: dict[str, float] = {}
        self._halted: Decision | None = None
        self._last_decision: Decision | None = None
        self._decisions: list[Decision] = []
        self._events: list[dict[str, Any]] = []

    # -- read-only views ---------------------------------------------------------------------
    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Decisions returned since construction or the last :meth:`load_state_dict`."""
        return tuple(self._decisions)

    @property
    def last_decision(self) -> Decision | None:
        return self._last_decision

    @property
    def halted(self) -> bool:
        return self._halted is not None

    @property
    def last_step(self) -> int:
        """The last training step fed to the statistics (-1 before any)."""
        return self._last_step

    @property
    def events(self) -> tuple[dict[str, Any], ...]:
        """Detector events so far (as dicts), most recent last (the last 100 are kept)."""
        return tuple(self._events)

    # -- update ------------------------------------------------------------------------------
    def update(self, step: Any, train_reward: Any = None, *,
               heldout: Mapping[str, Any] | None = None,
               aux: Mapping[str, Any] | None = None) -> Decision:
        """Feed one logged step and get the decision (see the module docstring for the policy).

        Parameters
        ----------
        step:
            The training step (whole number >= 0).
        train_reward:
            The step's mean training reward (None/NaN allowed, see the input policy).
        heldout:
            ``{benchmark: (value, n)}`` or ``{benchmark: value}`` at this step.
        aux:
            Auxiliary numbers (``frac_reward_zero_std``, ``entropy`` ...), reported in the
            evidence details.
        """
        s = as_step(step, "SaturationMonitor")
        value = _number(train_reward, "train_reward")
        parsed = self._parse_heldout(heldout)
        if aux is not None:
            if not isinstance(aux, Mapping):
                raise TypeError(f"'aux' must be a mapping of name -> number. "
                                f"Got {type(aux).__name__}.")
            for k, v in aux.items():
                fv = _number(v, f"aux[{k!r}]")
                if fv is not None and math.isfinite(fv):
                    self._aux[str(k)] = fv
        if self._halted is not None:
            return self._record(_restep(self._halted, s))
        if s <= self._last_step and (value is not None or not parsed):
            prev = self._last_decision or Decision(step=s, message="no decision yet")
            msg = (f"step {s} is not after the last step {self._last_step} (repeated or "
                   f"out-of-order record); ignored, previous decision repeated")
            return self._record(Decision(step=s, action=prev.action, reason=prev.reason,
                                         message=msg, evidence=prev.evidence))
        new_heldout = self._add_heldout(s, parsed)
        if value is None and not parsed:
            self._non_finite += 1
        elif value is not None and not math.isfinite(value):
            self._non_finite += 1
        elif value is not None:
            self._non_finite = 0
            if s > self._last_step:
                self._add_train(s, value)
        if self._refit_due(s, new_heldout):
            self._refit(s)
        return self._record(self._decide(s, new_heldout))

    def _parse_heldout(self, heldout: Mapping[str, Any] | None) -> dict[str, tuple[float, int]]:
        if heldout is None:
            return {}
        if not isinstance(heldout, Mapping):
            raise TypeError(f"'heldout' must be a mapping {{name: (value, n)}} or "
                            f"{{name: value}}. Got {type(heldout).__name__}.")
        out: dict[str, tuple[float, int]] = {}
        for name, raw in heldout.items():
            n = 0
            if isinstance(raw, (tuple, list)):
                if len(raw) != 2:
                    raise ValueError(f"Held-out '{name}' must be (value, n) or a bare value. "
                                     f"Got a sequence of length {len(raw)}.")
                raw, size = raw
                if size is not None:
                    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
                            or size <= 0:
                        raise ValueError(f"Held-out '{name}': n must be an int > 0 or None. "
                                         f"Got {size!r} instead.")
                    n = int(size)
            v = _number(raw, f"heldout[{name!r}]")
            out[str(name)] = (math.nan if v is None else v, n)
        return out

    def _add_heldout(self, step: int, parsed: Mapping[str, tuple[float, int]]) -> bool:
        added = False
        for name, (v, n) in parsed.items():
            h = self._heldout.setdefault(name, {"steps": [], "values": [], "sizes": []})
            if not math.isfinite(v):
                self._heldout_bad[name] = self._heldout_bad.get(name, 0) + 1
                continue
            self._heldout_bad[name] = 0
            if h["steps"] and step <= h["steps"][-1]:
                continue
            if not 0 <= v <= 1:
                n = 0  # not a proportion: binomial noise does not apply
            h["steps"].append(float(step))
            h["values"].append(v)
            h["sizes"].append(float(n))
            added = True
        return added

    def _add_train(self, step: int, value: float) -> None:
        self._last_step = step
        self._check_divergence(value)
        for det in (self._slope, self._bocpd, self._cusum):
            ev = det.update(value, step)
            if ev is not None:
                self._events.append(ev.to_dict())
                del self._events[:-100]
        self._train_steps.append(float(step))
        self._train_values.append(value)
        self._train_weights.append(1)
        self._recent.push(value)
        if len(self._train_steps) > self.config.max_history:
            self._compress_history()
            self._recent = _RecentWindow(self._train_values)

    def _refit_due(self, step: int, new_heldout: bool) -> bool:
        c = self.config
        if step < min(c.warmup_steps, 20) or len(self._train_steps) < 10:
            return False
        if self._last_refit < 0:
            return True
        # Geometric schedule: refits at least `refit_every` steps and 15% of the steps run so
        # far apart, so the amortized cost per update falls as a run gets longer; and at least
        # 5% of the planned budget apart, so a run's refit count does not grow with its length
        # (the forecast's horizon is the budget: a few steps more data barely move it). With
        # held-out series a refit waits for the next evaluation, where a decision can use it
        # (unless evaluations are rarer than three refit gaps).
        gap = max(c.refit_every, int(0.15 * step), int(0.05 * (c.total_steps or 0)))
        since = step - self._last_refit
        if since < gap:
            return False
        if not (new_heldout or not self._heldout or since >= 3 * gap):
            return False
        # A refit costs milliseconds (most of the monitor's time); while the new rewards lie
        # on the fitted curve it would return nearly the same fit, so it waits, up to a limit.
        return since >= 4 * gap or not self._fit_agrees()

    def _fit_agrees(self) -> bool:
        """True when the training rewards since the last refit agree with the fitted curve:
        their (weighted) mean residual from the ensemble's curve is within ``refit_z``
        standard errors of zero (the fit's residual sd)."""
        fit = self._fit
        params = fit.get("params")
        z_max = self.config.refit_z
        if not params or z_max <= 0 or not fit.get("weights"):
            return False
        i0 = bisect.bisect_right(self._train_steps, self._last_refit)
        if len(self._train_steps) - i0 < 5:
            return False
        steps = np.asarray(self._train_steps[i0:])
        w = np.asarray(self._train_weights[i0:], dtype=float)
        pred = np.zeros(steps.size)
        for fam, weight in fit["weights"].items():
            pred += weight * curve_value(fam, params[fam], steps, fit["time_scale"])
        resid = np.asarray(self._train_values[i0:]) - pred
        w_sum = float(w.sum())
        se = max(float(fit.get("noise_sd", math.nan)), 1e-4) / math.sqrt(w_sum)
        z = abs(float(resid @ w) / w_sum) / se
        return bool(z < z_max)  # False for a NaN z: refit

    def _compress_history(self) -> None:
        # Average adjacent pairs of the older half, keeping recent points at full resolution.
        k = len(self._train_steps) // 2
        k -= k % 2
        st, va, wt = self._train_steps, self._train_values, self._train_weights
        new_s, new_v, new_w = [], [], []
        for i in range(0, k, 2):
            w = wt[i] + wt[i + 1]
            new_s.append((st[i] * wt[i] + st[i + 1] * wt[i + 1]) / w)
            new_v.append((va[i] * wt[i] + va[i + 1] * wt[i + 1]) / w)
            new_w.append(w)
        self._train_steps = new_s + st[k:]
        self._train_values = new_v + va[k:]
        self._train_weights = new_w + wt[k:]

    def _check_divergence(self, value: float) -> None:
        # The reference excludes the current run of suspect values, so a blow-up does not
        # widen the range it is judged against.
        n_ref = len(self._train_values) - self._diverge_streak
        if n_ref < 20:
            self._extend_range(value)
            return
        # The reference window ends before the suspect run; the running window holds that run
        # too, so while one is in progress (rarely) the window is built for the call.
        window = self._recent if not self._diverge_streak else _RecentWindow(
            self._train_values[max(n_ref - _DIVERGE_WINDOW, 0):n_ref])
        med, noise = window.medians()
        noise = noise / 0.6745 / math.sqrt(2)
        noise = max(noise, 0.01 * max(1.0, abs(med)))
        lo, hi = self._range
        span = max(hi - lo, noise)
        outside = value < lo - span or value > hi + span
        if outside and abs(value - med) > self.config.diverge_sigmas * noise:
            self._diverge_streak += 1
        else:
            self._diverge_streak = 0
            self._extend_range(value)

    def _extend_range(self, value: float) -> None:
        # Running range of the accepted (non-suspect) rewards: O(1) per update.
        lo, hi = self._range
        self._range = [min(lo, value), max(hi, value)]

    def _refit(self, step: int) -> None:
        c = self.config
        total = c.total_steps if c.total_steps is not None else 2 * step
        self._last_refit = step
        try:
            fc = forecast_saturation(
                self._train_steps, self._train_values, total_steps=max(total, step),
                families=c.families, eps=c.eps, end_margin=c.end_margin,
                bootstrap=c.bootstrap, n_paths=64, warm_start=self._warm, seed=c.seed + step)
        except ValueError as exc:
            self._fit = {"error": str(exc)}
            return
        # Every fit that converged to finite parameters warm-starts the next refit, rejected
        # ones too: a fit rejected for its asymptote on the bound is usually rejected again,
        # and a restart from scratch walks all the way back to that bound.
        # A family not fitted this time (pow3 without a saturation claim) keeps its last start.
        self._warm.update({k: list(f.params) for k, f in fc.fits.items()
                           if math.isfinite(f.rss) and all(map(math.isfinite, f.params))})
        self._fit = {
            "usable": fc.usable, "asymptote": fc.asymptote,
            "forecast_final": fc.forecast_final, "t_sat_estimate": fc.t_sat_estimate,
            "t_sat_low": fc.t_sat_interval[0], "t_sat_high": fc.t_sat_interval[1],
            "t_sat_raw_estimate": fc.t_sat_raw_estimate,
            "remaining_gain": fc.remaining_gain, "vetoed": fc.vetoed,
            "weights": dict(fc.weights), "noise_sd": fc.noise_sd, "step": step,
            # The weighted families' curves, for the staleness test of later refits.
            "params": {k: list(fc.fits[k].params) for k in fc.weights},
            "time_scale": next((fc.fits[k].time_scale for k in fc.weights), math.nan),
        }
        self._tsat_samples = list(fc.t_sat_samples) if fc.usable else []

    # -- the decision ------------------------------------------------------------------------
    def _p_saturated(self, step: int) -> tuple[float, dict[str, float]]:
        c = self.config
        parts: dict[str, float] = {}
        level = statistics.median(self._train_values[-20:]) if self._train_values else math.nan
        tol = max((1 - c.eps) * abs(level), 1e-3) if math.isfinite(level) else math.nan
        p_slope = self._slope.p_gain_below(tol, step) if math.isfinite(tol) else math.nan
        # A reward pinned at its ceiling still creeps upward (0.97 -> 1.0), which a linear
        # extrapolation reads as a gain still to come; the ceiling rules that gain out.
        capped = self._at_ceiling(level, tol)
        if capped:
            parts["at_ceiling"] = 1.0
        if math.isfinite(p_slope):
            parts["p_sat_slope"] = 1.0 if capped else p_slope
        # The BOCPD segment covers the whole current regime (often far longer than the slope
        # window), so its slope posterior is the sharper trend-based test.
        m, sd = self._bocpd.segment_slope()
        if math.isfinite(m) and sd > 0 and math.isfinite(tol):
            left = self._slope.remaining(step)
            parts["p_sat_bocpd"] = 1.0 if capped else _phi((tol / left - m) / sd)
        if self._tsat_samples:
            # The samples are sorted (forecast_saturation returns them so): a bisection gives
            # the share at or below `step` without an array per update.
            parts["p_sat_fit"] = bisect.bisect_right(self._tsat_samples, step) / len(
                self._tsat_samples)
        if capped:
            p = 1.0
        elif "p_sat_fit" in parts:
            # The fits' share of t_sat samples is the prior; the local slope updates it by the
            # likelihood ratio of "slope at most tol / left" (saturated) to "slope above it",
            # each at its best slope (profile likelihood, normal slope estimate).
            # A finite sample never gives a certain prior: (k + 1/2) / (n + 1) of n samples.
            n_s = len(self._tsat_samples)
            p = prior = (parts["p_sat_fit"] * n_s + 0.5) / (n_s + 1)
            b, se = self._slope.slope, self._slope.slope_se
            if math.isfinite(b) and se > 0 and math.isfinite(tol):
                z = min(max((b - tol / self._slope.remaining(step)) / se, -8.0), 8.0)
                lr = math.exp(-math.copysign(0.5 * z * z, z))
                p = prior * lr / (prior * lr + 1.0 - prior)
                parts["sat_slope_z"] = z
        else:
            # No usable fit: the trend tests alone (BOCPD's segment posterior is the sharper).
            vals = [parts[k] for k in ("p_sat_bocpd", "p_sat_slope") if k in parts]
            if not vals:
                return 0.0, parts
            p = vals[0]
        if self._fit.get("vetoed") and "p_sat_slope" in parts:
            p = min(p, parts["p_sat_slope"])
        return p, parts

    def _at_ceiling(self, level: float, tol: float) -> bool:
        """True when the reward cannot gain ``tol`` more: it touched its ceiling (never above)
        and the recent level is within ``tol`` of it."""
        top = self.config.reward_ceiling
        if top is None or not math.isfinite(level):
            return False
        # 1e-6: batch means logged as float32 land within ~1e-7 of an exact 1.0.
        return abs(self._range[1] - top) <= 1e-6 and top - level < tol

    def _decide(self, step: int, new_heldout: bool) -> Decision:
        c = self.config
        details: dict[str, float] = {}
        # Hard failures first: they do not wait for warm-up.
        bad_heldout = {k: v for k, v in self._heldout_bad.items() if v >= c.max_non_finite}
        if self._non_finite > c.max_non_finite or bad_heldout:
            what = (f"{self._non_finite} consecutive non-finite training rewards"
                    if self._non_finite > c.max_non_finite else
                    ", ".join(f"held-out '{k}' non-finite {v} times in a row"
                              for k, v in bad_heldout.items()))
            return self._final(step, Reason.NON_FINITE,
                               f"NON_FINITE at step {step}: {what} (limit {c.max_non_finite})",
                               Evidence(details={"non_finite": float(self._non_finite)}))
        if self._diverge_streak >= c.diverge_patience:
            last = self._train_values[-1] if self._train_values else math.nan
            return self._final(step, Reason.DIVERGED,
                               f"DIVERGED at step {step}: training reward {format_number(last)} "
                               f"outside its range for {self._diverge_streak} steps", Evidence())
        p_sat, parts = self._p_saturated(step)
        details.update(parts)
        seg_slope, seg_sd = self._bocpd.segment_slope()
        details.update({
            "slope": self._slope.slope, "slope_se": self._slope.slope_se,
            "bocpd_segment_start": float(self._bocpd.segment_start),
            "bocpd_slope": seg_slope, "bocpd_slope_sd": seg_sd,
            "cusum_upper": self._cusum.upper, "cusum_lower": self._cusum.lower,
        })
        details.update({f"aux/{k}": v for k, v in self._aux.items()})
        for k, v in self._fit.get("weights", {}).items():
            details[f"weight/{k}"] = v
        warm = step < c.warmup_steps or len(self._train_values) < 10
        phase = Phase.UNKNOWN if warm else (Phase.POST if p_sat >= 0.5 else Phase.PRE)
        t_est = self._fit.get("t_sat_estimate", math.nan)
        interval = (self._fit.get("t_sat_low", math.nan), self._fit.get("t_sat_high", math.nan))
        since = t_est if phase is Phase.POST and math.isfinite(t_est) else None
        if new_heldout:
            self._update_heldout_evidence(step, since, p_sat)
        n_points = max((len(h["steps"]) for h in self._heldout.values()), default=0)
        details.update(self._gain)
        details.update({f"regime/{k}": v for k, v in self._regime_features.items()})
        evidence = Evidence(
            phase=phase, p_saturated=p_sat, t_sat_estimate=t_est, t_sat_interval=interval,
            asymptote=self._fit.get("asymptote", math.nan),
            forecast_final=self._fit.get("forecast_final", math.nan),
            regime=dict(self._regime), heldout_points=n_points,
            heldout_slope=self._gain.get("heldout_slope", math.nan), details=details)
        sat_text = (f"P(saturated)={p_sat:.2f}, t_sat estimate {format_number(t_est)} "
                    f"[{format_number(interval[0])}, {format_number(interval[1])}]")
        if warm:
            return Decision(step, Action.CONTINUE, None,
                            f"warm-up until step {c.warmup_steps}: {sat_text}", evidence)
        if not self._heldout:
            if p_sat >= _SAT_SURE:
                can_halt = c.halt_without_heldout and Reason.SATURATED.value in c.halt_on
                msg = (f"SATURATED at step {step}: training reward saturated ({sat_text}); "
                       "no held-out series, so the regime cannot be called")
                if can_halt:
                    return self._final(step, Reason.SATURATED, msg, evidence)
                return Decision(step, Action.FLAG, Reason.SATURATED, msg, evidence)
            return Decision(step, Action.CONTINUE, None,
                            f"{phase.value} ({sat_text}); no held-out series: regime cannot "
                            "be called", evidence)
        if n_points < c.min_heldout_points:
            return Decision(step, Action.CONTINUE, None,
                            f"{phase.value} ({sat_text}); {n_points} of "
                            f"{c.min_heldout_points} held-out evaluations needed to call the "
                            "regime", evidence)
        p_gain = self._gain.get("p_heldout_gain", 1.0)
        dropped = self._gain.get("drop_significant", 0.0) > 0
        # The stop score is the calibrated P(no held-out gain > min_heldout_gain over the rest of
        # the budget); it counts only once the training reward has saturated (the reasons it
        # gives, MEMORIZING and SATURATED, are post-saturation statements). Held-out accuracy
        # more than max(5 points, 3 noise sds) below its best 3-evaluation mean makes it at
        # least P(collapsing), with the drop as the reason a person needs. Otherwise the guard
        # rails (module docstring) may veto it: evidence a learned score cannot override.
        score, veto = stop_score(
            p_gain, post=phase is Phase.POST, dropped=dropped,
            p_collapse=self._regime["collapsing"], p_saturated=p_sat,
            rising_z=self._gain.get("rising_z", 0.0),
            rising_gain=self._gain.get("rising_gain", 0.0),
            horizon=self._gain.get("horizon", 1.0), flag_threshold=c.flag_threshold,
            min_p_saturated=c.min_p_saturated, rising_z_limit=c.rising_z,
            min_gain=c.min_heldout_gain)
        if dropped:
            reason = Reason.COLLAPSE
        elif self._regime["memorizing"] >= self._regime["generalizing"]:
            reason = Reason.MEMORIZING
        else:
            reason = Reason.SATURATED
        details["stop_score"] = score
        details["vetoed"] = float(bool(veto))
        if new_heldout:
            self._halt_streak = (self._halt_streak + 1 if score >= c.halt_threshold and not veto
                                 else 0)
        horizon = self._gain.get("horizon", math.nan)
        slope = self._gain.get("heldout_slope", math.nan)
        held = (f"held-out slope {slope:+.2e}/step over "
                f"{int(self._gain.get('heldout_window_points', 0))} evaluations (linear "
                f"projection {slope * horizon:+.3f}), P(gain > {c.min_heldout_gain:g} in the "
                f"remaining {format_number(horizon)} steps)={p_gain:.3f}")
        regime_text = ", ".join(f"P({k})={self._regime[k]:.2f}" for k in CLASSES)
        if veto:
            return Decision(step, Action.CONTINUE, None,
                            f"{phase.value} at step {step}: stop score {score:.3f} vetoed, "
                            f"{veto}; {sat_text}; {held}; {regime_text}", evidence)
        if reason is Reason.COLLAPSE:
            body = (f"held-out {self._gain.get('heldout_drop', math.nan):.3f} below its best "
                    f"3-evaluation mean (noise sd {self._gain.get('heldout_drop_sd', math.nan):.3f};"
                    f" {regime_text})")
        else:
            body = f"{sat_text}; {held}; {regime_text}"
        msg = f"{reason.name} at step {step}: {body}"
        if score >= c.halt_threshold and self._halt_streak >= c.patience \
                and reason.value in c.halt_on:
            return self._final(step, reason, msg, evidence)
        if score >= c.flag_threshold:
            return Decision(step, Action.FLAG, reason, msg + (
                f" (halt after {c.patience} evaluations at score >= {c.halt_threshold:.3f}; "
                f"{self._halt_streak} so far)"), evidence)
        return Decision(step, Action.CONTINUE, None,
                        f"{phase.value} at step {step}: {sat_text}; {held}; {regime_text}",
                        evidence)

    def _update_heldout_evidence(self, step: int, since: float | None, p_sat: float) -> None:
        c = self.config
        total = c.total_steps if c.total_steps is not None else 2 * step
        horizon = max(total - step, 0)
        probs = {k: 0.0 for k in CLASSES}
        n_called = 0
        feats_sum: dict[str, float] = {}
        best: dict[str, float] | None = None
        drop = drop_sd = 0.0
        dropped = False
        rising = (0.0, 0.0)
        t_sat = float(self._fit.get("t_sat_estimate", math.nan))
        train_steps = np.asarray(self._train_steps)
        train_values = np.asarray(self._train_values)
        for h in self._heldout.values():
            if len(h["steps"]) < 3:
                continue
            x = np.asarray(h["steps"])
            y = np.asarray(h["values"])
            var = _point_variance(y, np.asarray(h["sizes"]))
            # The pieces of classify_regime / heldout_gain_posterior on the arrays built once.
            ev = _features(x, y, var, train_steps, train_values, since, total)
            # Below min_heldout_points there is no regime call, and no regime features.
            called = x.size >= c.min_heldout_points
            if called:
                n_called += 1
                for k, v in regime_probabilities(ev.features).items():
                    probs[k] += v
                for k, v in ev.features.items():
                    feats_sum[k] = feats_sum.get(k, 0.0) + v
            g = _gain_posterior(x, y, var, horizon=horizon, min_gain=c.min_heldout_gain,
                                since_step=since)
            feats = stop_features(regime=ev.features if called else {},
                                  slope_recent=(g.slope, g.slope_se),
                                  slope_all=ev.slope_all, horizon=horizon,
                                  total_steps=total, step=step, t_sat=t_sat, p_saturated=p_sat,
                                  n_points=x.size, min_gain=c.min_heldout_gain)
            p = p_heldout_gain(feats)
            # Guard rail (b): the strongest significant recent rise over all benchmarks.
            if math.isfinite(g.slope) and g.slope_se > 0 and g.slope / g.slope_se > rising[0]:
                rising = (g.slope / g.slope_se, g.slope * g.horizon)
            # Several benchmarks: keep the one that most favours continuing.
            if best is None or p > best["p_heldout_gain"]:
                best = {"p_heldout_gain": p, "p_gain_linear": g.p_gain, "heldout_slope": g.slope,
                        "heldout_slope_se": g.slope_se, "horizon": g.horizon,
                        "heldout_window_points": float(g.n_points)}
                best.update({f"stop/{k}": v for k, v in feats.items()})
            roll, roll_var = ev.roll, ev.roll_var
            j = int(np.argmax(roll))
            d = float(roll[j] - roll[-1])
            sd = math.sqrt(float(roll_var[j] + roll_var[-1]))
            if d > drop:
                drop, drop_sd = d, sd
            dropped = dropped or d > max(_COLLAPSE_DROP, _COLLAPSE_SDS * sd)
        if n_called:
            self._regime = {k: v / n_called for k, v in probs.items()}
            self._regime["undetermined"] = 0.0
            self._regime_features = {k: v / n_called for k, v in feats_sum.items()}
        if best is not None:
            best.update(heldout_drop=drop, heldout_drop_sd=drop_sd,
                        drop_significant=float(dropped), rising_z=rising[0],
                        rising_gain=rising[1])
            self._gain = best

    def _final(self, step: int, reason: Reason, message: str, evidence: Evidence) -> Decision:
        if reason.value not in self.config.halt_on:
            return Decision(step, Action.FLAG, reason, message, evidence)
        d = Decision(step, Action.HALT, reason, message, evidence)
        self._halted = d
        return d

    def _record(self, d: Decision) -> Decision:
        self._last_decision = d
        self._decisions.append(d)
        return d

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-safe running state (with ``version`` and the configuration).

        The decision history is not included (only the last decision and any halt), so the
        state stays small on long runs.
        """
        return {
            "version": STATE_VERSION,
            "config": to_primitive(self.config.to_dict()),
            "detectors": {"slope": self._slope.state_dict(), "bocpd": self._bocpd.state_dict(),
                          "cusum": self._cusum.state_dict()},
            "train": to_primitive({"steps": self._train_steps, "values": self._train_values,
                                   "weights": self._train_weights}),
            "last_step": self._last_step,
            "heldout": to_primitive(self._heldout),
            "heldout_bad": dict(self._heldout_bad),
            "aux": to_primitive(self._aux),
            "non_finite": self._non_finite,
            "diverge_streak": self._diverge_streak,
            "range": to_primitive(self._range),
            "halt_streak": self._halt_streak,
            "fit": to_primitive(self._fit),
            "warm": to_primitive(self._warm),
            "tsat_samples": to_primitive(self._tsat_samples),
            "last_refit": self._last_refit,
            "regime": to_primitive(self._regime),
            "regime_features": to_primitive(self._regime_features),
            "gain": to_primitive(self._gain),
            "halted": None if self._halted is None else _decision_state(self._halted),
            "last_decision": (None if self._last_decision is None
                              else _decision_state(self._last_decision)),
            "events": to_primitive(self._events),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict` (missing keys keep their defaults).

        The configuration in the state must match this monitor's, except for keys the state
        does not have.
        """
        if not isinstance(state, Mapping) or "version" not in state:
            raise ValueError("SaturationMonitor.load_state_dict needs a dict made by "
                             "state_dict() (with a 'version' key).")
        if int(state["version"]) > STATE_VERSION:
            raise ValueError(f"Monitor state version {state['version']} is newer than this "
                             f"satmon understands ({STATE_VERSION}).")
        saved = from_primitive(state.get("config", {}))
        mine = self.config.to_dict()
        diff = {k: (saved[k], mine[k]) for k in saved if k in mine and saved[k] != mine[k]}
        if diff:
            raise ValueError(f"The saved monitor used a different configuration: "
                             f"{ {k: f'saved {a!r}, now {b!r}' for k, (a, b) in diff.items()} }. "
                             "Build the monitor with the saved parameters.")
        self.reset()
        det = state.get("detectors", {})
        for key, obj in (("slope", self._slope), ("bocpd", self._bocpd),
                         ("cusum", self._cusum)):
            if key in det:
                obj.load_state_dict(det[key])
        train = from_primitive(state.get("train", {}))
        self._train_steps = [float(v) for v in train.get("steps", [])]
        self._train_values = [float(v) for v in train.get("values", [])]
        self._recent = _RecentWindow(self._train_values)
        self._train_weights = [int(v) for v in train.get("weights", [1] * len(
            self._train_steps))]
        self._last_step = int(state.get("last_step", -1))
        self._heldout = {k: {kk: [float(x) for x in vv] for kk, vv in v.items()}
                         for k, v in from_primitive(state.get("heldout", {})).items()}
        self._heldout_bad = {k: int(v) for k, v in state.get("heldout_bad", {}).items()}
        self._aux = {k: float(v) for k, v in from_primitive(state.get("aux", {})).items()}
        self._non_finite = int(state.get("non_finite", 0))
        self._diverge_streak = int(state.get("diverge_streak", 0))
        rng = from_primitive(state.get("range", None))
        if rng is None:  # a state saved before the running range existed
            rng = [min(self._train_values, default=math.inf),
                   max(self._train_values, default=-math.inf)]
        self._range = [float(rng[0]), float(rng[1])]
        self._halt_streak = int(state.get("halt_streak", 0))
        self._fit = from_primitive(state.get("fit", {}))
        self._warm = from_primitive(state.get("warm", {}))
        self._tsat_samples = [float(v) for v in from_primitive(state.get("tsat_samples", []))]
        self._last_refit = int(state.get("last_refit", -1))
        self._regime = from_primitive(state.get("regime", dict(_UNDETERMINED)))
        self._regime_features = from_primitive(state.get("regime_features", {}))
        self._gain = from_primitive(state.get("gain", {}))
        h = state.get("halted")
        self._halted = None if h is None else _decision_from_state(h)
        ld = state.get("last_decision")
        self._last_decision = None if ld is None else _decision_from_state(ld)
        self._events = from_primitive(state.get("events", []))

    def __repr__(self) -> str:
        return (f"SaturationMonitor(total_steps={self.config.total_steps}, "
                f"last_step={self._last_step}, halted={self.halted})")


#: Training rewards in the divergence check's reference window.
_DIVERGE_WINDOW = 50


class _RecentWindow:
    """The last :data:`_DIVERGE_WINDOW` training rewards, kept sorted along with the absolute
    differences of consecutive ones, so both medians cost a lookup instead of a sort per update.
    Same values as ``statistics.median`` over the window (the same middle elements)."""

    def __init__(self, values: Sequence[float] = ()) -> None:
        self._values: deque[float] = deque()
        self._sorted: list[float] = []
        self._diffs: list[float] = []
        for v in values[-_DIVERGE_WINDOW:]:
            self.push(v)

    def push(self, value: float) -> None:
        vals = self._values
        if len(vals) == _DIVERGE_WINDOW:
            old = vals.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
            gone = abs(vals[0] - old)
            del self._diffs[bisect.bisect_left(self._diffs, gone)]
        if vals:
            bisect.insort(self._diffs, abs(value - vals[-1]))
        vals.append(value)
        bisect.insort(self._sorted, value)

    def medians(self) -> tuple[float, float]:
        """Median of the values and of the absolute consecutive differences."""
        return _median_sorted(self._sorted), _median_sorted(self._diffs)


def _median_sorted(data: list[float]) -> float:
    # statistics.median's arithmetic on already sorted data (NaN when empty).
    n = len(data)
    if n == 0:
        return math.nan
    if n % 2 == 1:
        return data[n // 2]
    return (data[n // 2 - 1] + data[n // 2]) / 2


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"'{what}' must be a number or None. Got {value!r} "
                        f"({type(value).__name__}).") from None


def _restep(d: Decision, step: int) -> Decision:
    return Decision(step, d.action, d.reason, d.message, d.evidence)


def _decision_state(d: Decision) -> dict[str, Any]:
    e = d.evidence
    return to_primitive({
        "step": d.step, "action": d.action.value,
        "reason": None if d.reason is None else d.reason.value, "message": d.message,
        "evidence": {"phase": e.phase.value, "p_saturated": e.p_saturated,
                     "t_sat_estimate": e.t_sat_estimate, "t_sat_interval": list(e.t_sat_interval),
                     "asymptote": e.asymptote, "forecast_final": e.forecast_final,
                     "regime": dict(e.regime), "heldout_points": e.heldout_points,
                     "heldout_slope": e.heldout_slope, "details": dict(e.details)}})


def _decision_from_state(raw: Mapping[str, Any]) -> Decision:
    r = from_primitive(dict(raw))
    e = r.get("evidence", {})
    ev = Evidence(phase=Phase(e.get("phase", Phase.UNKNOWN.value)),
                  p_saturated=float(e.get("p_saturated", 0.0)),
                  t_sat_estimate=float(e.get("t_sat_estimate", math.nan)),
                  t_sat_interval=tuple(float(v) for v in e.get("t_sat_interval",
                                                               [math.nan, math.nan])),
                  asymptote=float(e.get("asymptote", math.nan)),
                  forecast_final=float(e.get("forecast_final", math.nan)),
                  regime={k: float(v) for k, v in e.get("regime", _UNDETERMINED).items()},
                  heldout_points=int(e.get("heldout_points", 0)),
                  heldout_slope=float(e.get("heldout_slope", math.nan)),
                  details={k: float(v) for k, v in e.get("details", {}).items()})
    return Decision(step=int(r["step"]), action=Action(r["action"]),
                    reason=None if r.get("reason") is None else Reason(r["reason"]),
                    message=str(r.get("message", "")), evidence=ev)


__all__ = ["MonitorConfig", "SaturationMonitor"]
