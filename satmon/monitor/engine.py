"""The online saturation and regime monitor: one ``update`` per logged step, one Decision back.

Per update the monitor feeds the training reward to three detectors (a slope test whose horizon
is the remaining budget, linear-segment BOCPD, a residual CUSUM), refits the saturation-curve
ensemble on a schedule (at least ``refit_every`` steps apart, postponed while the rewards since
the last refit agree with the fitted curve), and on every held-out evaluation recomputes, per
held-out series, the posterior of the gain still to come
(:func:`satmon.monitor.posterior.heldout_gain_posterior`). The decision is the pure rule of
:mod:`satmon.monitor.decide`: HALT when ``P(some series gains min_heldout_gain in the remaining
planned steps) < risk``, FLAG below ``flag_risk``; NON_FINITE and DIVERGED first. There is no
gate on P(saturated) and no patience count: the training reward enters the posterior softly,
through its co-moving shape (a reward still rising makes a held-out rise likely; a saturated
one predicts none) and through the mechanistic evidence of zero-variance GRPO groups.

A halt is sticky: every later update repeats it.

P(saturated) (reported, and used for the flag without held-out series) is the mean of a trend
part (the BOCPD segment slope extrapolated over the remaining budget against the tolerance
``(1 - eps) x level``; the windowed slope test when BOCPD has no posterior yet) and the
curve-fit part (the share of t_sat samples at or before the step). A reward cannot rise above
its ceiling: once the training reward has touched ``reward_ceiling`` (default 1.0) and never
exceeded it, a headroom ``ceiling - level`` below the tolerance makes the trend part 1.

Collapse. A series has *collapsed* when each of its last three evaluations lies more than
max(5 points, 3 noise sds) below its best 3-evaluation median: a decline over several
evaluations, never one outlier. It names the reason of a halt; the halt itself is the
posterior's.

Policy frozen. A step whose ``aux`` has ``frac_reward_zero_std >= frozen_zero_std`` and no
nonzero ``kl`` is a step at which GRPO's advantages, and so its policy gradient, are zero. A zero
gradient does not stop the model at once: Adam's momentum keeps moving the parameters, by
``(beta1 / sqrt(beta2)) ** k`` of the last update ``k`` steps later (1% after 44 steps at the
transformers defaults 0.9 and 0.999; the lab's memorization control gained 4 held-out items over
ten such steps). So the count of such steps in a row, less ``frozen_after``, enters the
posterior as the evidence that the policy is frozen (rule of succession).

Input policy:

* ``train_reward`` NaN / inf counts as non-finite. ``None`` means "not logged in this update"
  when the update carries held-out values (an evaluation-only record), else it counts as
  non-finite (TRL logs None for an all-NaN metric).
* A step not above the last training step (a resumed run logging steps again, or an out-of-order
  record) is not fed to the statistics; the previous decision is returned again with this step.
  Held-out values at a step not above that benchmark's last evaluation are ignored likewise.
* Rewards outside [0, 1] are accepted (proxy rewards are unbounded); a reward seen above
  ``reward_ceiling`` drops the co-moving shape (its normalisation needs a bounded reward).
* A held-out value is ``(value, n)`` or a bare value (``n`` unknown: its noise is estimated from
  the series itself).
"""

from __future__ import annotations

import bisect
import copy
import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from satmon.curves import curve_value, forecast_saturation
from satmon.decision import Action, Decision, Evidence, Phase, Reason
from satmon.detectors import LinearBOCPD, ResidualCUSUM, SlopeTest
from satmon.detectors.base import as_step, from_primitive, to_primitive
from satmon.monitor._grow import reserve
from satmon.monitor.calibration import default_calibration
from satmon.monitor.config import MonitorConfig
from satmon.monitor.decide import DecisionInput, decide
from satmon.monitor.posterior import (HeldoutPosterior, ShapeColumns, default_prior,
                                      heldout_gain_posterior,
                                      point_variance)
from satmon.regime import (CLASSES, _features, _smooth_at, binomial_variance,
                           regime_probabilities)

STATE_VERSION = 2
#: A decline counts as a collapse only when each of the last three evaluations is below the
#: best 3-evaluation median (or the first evaluation) by more than this size and
#: ``_COLLAPSE_SDS`` noise sds of the difference: the synthetic memorizing runs drift down by up to 3 points, collapses drop 10-30,
#: and three points each 2 sds low happen by chance about once in 10^5 evaluations.
_COLLAPSE_DROP = 0.05
_COLLAPSE_SDS = 2.0
#: From the first evaluation the margin is wider: its one noise draw is shared by all three
#: comparisons, so at 2 sds a flat series would read as a collapse at 1.4e-3 of evaluations;
#: at 3 sds it is 1.3e-5 (simulated), the median rule's rate.
_COLLAPSE_SDS_FIRST = 3.0


def _phi(x: float) -> float:
    """Standard normal CDF (math.erfc: scipy.stats costs ~50 us per scalar call)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


_UNDETERMINED = {"generalizing": 0.0, "memorizing": 0.0, "collapsing": 0.0, "undetermined": 1.0}


class StateError(ValueError):
    """A saved monitor state that cannot be loaded: malformed, damaged, from a newer satmon, or
    made with a different configuration. The message says which."""


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
    risk:
        HALT when P(some held-out series gains ``min_heldout_gain`` within the remaining
        planned steps) is below this (default: chosen on the calibration mixture for a
        false-halt rate <= 1%; see the README's calibration table).
    flag_risk:
        FLAG below this probability.
    prior:
        The held-out shape prior (:class:`satmon.monitor.posterior.GainPrior` or a dict of its
        fields); None: the fitted default.
    calibration:
        The map from the posterior model's P(gain) to the calibrated P(gain) that is reported,
        logged and compared with ``risk`` and ``flag_risk``
        (:class:`satmon.monitor.calibration.ProbabilityMap` or a dict of its knots); None: the
        map fitted with the default prior (kept for a prior moved by a probe; a prior of your
        own comes with its own map from ``benchmarks/calibrate_prior.py``, or use
        ``ProbabilityMap.identity()`` and a ``risk`` on the model's scale).
    frozen_zero_std:
        ``frac_reward_zero_std`` at or above which a step (with no nonzero ``kl``) counts as a
        zero-gradient step; None ignores that evidence.
    frozen_after:
        Zero-gradient steps in a row before the policy counts as frozen: the steps the
        optimizer's momentum still moves it (default 44, where Adam's update at beta1 0.9,
        beta2 0.999 has decayed to 1%: ``log(0.01) / log(beta1 / sqrt(beta2))``; 0 for an
        optimizer without momentum).
    memorizing_before:
        A halt is called MEMORIZING when the training reward saturated within this fraction of
        the planned steps (the paper's rapid saturation: t_sat < 100 of ~500 steps).
    reward_ceiling:
        Highest possible training reward (None: unbounded). It normalises the reward for the
        co-moving held-out shape, and once the reward has touched it (never exceeded it) a
        creep below it is not read as a rise still to come (see the module docstring).
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
    decision_history:
        Decisions kept in :attr:`decisions` (the most recent; older ones are dropped, so a
        long run's memory stays bounded).
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
        self._frozen = 0
        self._fit: dict[str, Any] = {}
        self._warm: dict[str, list[float]] = {}
        self._tsat_samples: list[float] = []
        self._last_refit = -1
        # Since the last refit: the training rewards' summed residual from the fitted curve,
        # their count (the staleness test of the next refit, O(1) per update).
        self._fit_resid = [0.0, 0]
        # Caches derived from the state (never saved): the fitted curve on aligned blocks of
        # steps, each held-out series' shape columns, the training series and each held-out
        # series as arrays.
        self._pred_block: tuple[int, np.ndarray] | None = None
        self._columns: dict[str, ShapeColumns] = {}
        self._train_arrays: tuple[int, int, np.ndarray] | None = None
        self._series_arrays: dict[str, _SeriesArrays] = {}
        self._details_cache: tuple[tuple[HeldoutPosterior, ...], dict[str, float]] | None = None
        self._compressions = 0
        self._regime: dict[str, float] = dict(_UNDETERMINED)
        self._regime_features: dict[str, float] = {}
        self._gain: dict[str, float] = {}
        self._posteriors: dict[str, HeldoutPosterior] = {}
        self._collapsed: dict[str, tuple[float, float]] = {}
        self._prior = c.prior or default_prior()
        self._calibration = (c.calibration if c.calibration is not None
                             else default_calibration())
        self._halted: Decision | None = None
        self._last_decision: Decision | None = None
        self._decisions: deque[Decision] = deque(maxlen=c.decision_history)
        self._events: list[dict[str, Any]] = []

    # -- read-only views ---------------------------------------------------------------------
    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The last ``decision_history`` decisions returned since construction or the last
        :meth:`load_state_dict`."""
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
        zero_std = None
        if aux is not None:
            if not isinstance(aux, Mapping):
                raise TypeError(f"'aux' must be a mapping of name -> number. "
                                f"Got {type(aux).__name__}.")
            for k, v in aux.items():
                fv = _number(v, f"aux[{k!r}]")
                if fv is not None and math.isfinite(fv):
                    self._aux[str(k)] = fv
                    if k == "frac_reward_zero_std":
                        zero_std = fv
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
                # Every group at zero reward variance and no KL term: zero advantages, so a
                # zero policy gradient (the model cannot change at this step).
                thr = self.config.frozen_zero_std
                frozen = (thr is not None and zero_std is not None and zero_std >= thr
                          and abs(self._aux.get("kl", 0.0)) < 1e-12)
                self._frozen = self._frozen + 1 if frozen else 0
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
        # The CUSUM runs on the residuals of the current saturation fit (its prediction and
        # residual sd), so it fires when the curve leaves the fit; before the first fit it uses
        # its own damped trend.
        expected, scale = self._fit_prediction(step)
        if expected is not None:
            self._fit_resid[0] += value - expected
            self._fit_resid[1] += 1
        for ev in (self._slope.update(value, step), self._bocpd.update(value, step),
                   self._cusum.update(value, step, expected=expected, scale=scale)):
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

    def _fit_prediction(self, step: int) -> tuple[float | None, float | None]:
        """The ensemble's fitted reward at ``step`` and the fit's residual sd (None, None
        without a usable fit)."""
        fit = self._fit
        params = fit.get("params")
        sd = float(fit.get("noise_sd", math.nan))
        if not params or not fit.get("weights") or not math.isfinite(sd) or sd <= 0:
            return None, None
        # The curve is evaluated on blocks of _PRED_BLOCK steps aligned to multiples of it (one
        # vectorised call per block instead of one per update; aligned, so a resumed monitor
        # evaluates the same blocks).
        start = step - step % _PRED_BLOCK
        block = self._pred_block
        if block is None or block[0] != start:
            xs = np.arange(start, start + _PRED_BLOCK, dtype=float)
            pred = np.zeros(_PRED_BLOCK)
            for fam, weight in fit["weights"].items():
                pred += weight * curve_value(fam, params[fam], xs, fit["time_scale"])
            block = self._pred_block = (start, pred)
        value = float(block[1][step - start])
        return (value, sd) if math.isfinite(value) else (None, None)

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
        their mean residual from the ensemble's curve is within ``refit_z`` standard errors of
        zero (the fit's residual sd)."""
        fit = self._fit
        z_max = self.config.refit_z
        total, count = self._fit_resid
        if not fit.get("params") or z_max <= 0 or not fit.get("weights") or count < 5:
            return False
        se = max(float(fit.get("noise_sd", math.nan)), 1e-4) / math.sqrt(count)
        z = abs(total / count) / se
        return bool(z < z_max)  # False for a NaN z: refit

    def _residuals_since_refit(self) -> list:
        """``[summed residual, count]`` of the training rewards after the last refit, from the
        kept series (for a state saved before the running sums were)."""
        i0 = bisect.bisect_right(self._train_steps, self._last_refit)
        total, count = 0.0, 0
        for st, v, w in zip(self._train_steps[i0:], self._train_values[i0:],
                            self._train_weights[i0:]):
            expected, _ = self._fit_prediction(int(round(st)))
            if expected is not None:
                total += w * (v - expected)
                count += w
        return [total, count]

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
        self._compressions += 1
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
        self._fit_resid = [0.0, 0]
        self._pred_block = None
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
        p_sat, parts = self._p_saturated(step)
        warm = step < c.warmup_steps or len(self._train_values) < 10
        phase = Phase.UNKNOWN if warm else (Phase.POST if p_sat >= 0.5 else Phase.PRE)
        t_est = self._fit.get("t_sat_estimate", math.nan)
        interval = (self._fit.get("t_sat_low", math.nan), self._fit.get("t_sat_high", math.nan))
        total = c.total_steps if c.total_steps is not None else 2 * step
        if new_heldout:
            since = t_est if phase is Phase.POST and math.isfinite(t_est) else None
            self._update_heldout_evidence(step, since, total)
        counts = [len(h["steps"]) for h in self._heldout.values()]
        inp = DecisionInput(
            step=step, non_finite=self._non_finite, heldout_non_finite=dict(self._heldout_bad),
            diverge_streak=self._diverge_streak,
            last_reward=self._train_values[-1] if self._train_values else math.nan,
            warm=warm, p_saturated=p_sat, t_sat_estimate=t_est, t_sat_interval=interval,
            n_heldout=len(self._heldout), min_points=min(counts, default=0),
            horizon=float(max(total - step, 0)), posteriors=dict(self._posteriors),
            collapsed=dict(self._collapsed))
        action, reason, message = decide(inp, c)
        details: dict[str, float] = dict(parts)
        seg_slope, seg_sd = self._bocpd.segment_slope()
        details.update({
            "slope": self._slope.slope, "slope_se": self._slope.slope_se,
            "bocpd_segment_start": float(self._bocpd.segment_start),
            "bocpd_slope": seg_slope, "bocpd_slope_sd": seg_sd,
            "cusum_upper": self._cusum.upper, "cusum_lower": self._cusum.lower,
            "frozen_steps": float(self._frozen),
        })
        details.update({f"aux/{k}": v for k, v in self._aux.items()})
        for k, v in self._fit.get("weights", {}).items():
            details[f"weight/{k}"] = v
        if self._posteriors:
            details["p_heldout_gain"] = inp.p_gain
            # The series that most favours continuing speaks for the run in the summary.
            details.update(self._posterior_details())
        details.update(self._gain)
        details["collapsed"] = float(bool(self._collapsed))
        evidence = Evidence(
            phase=phase, p_saturated=p_sat, t_sat_estimate=t_est, t_sat_interval=interval,
            asymptote=self._fit.get("asymptote", math.nan),
            forecast_final=self._fit.get("forecast_final", math.nan),
            regime=dict(self._regime), heldout_points=max(counts, default=0),
            heldout_slope=self._gain.get("heldout_slope", math.nan), details=details)
        d = Decision(step, action, reason, message, evidence)
        if action is Action.HALT:
            self._halted = d
        return d

    def _posterior_details(self) -> dict[str, float]:
        """The evidence details of the series that most favours continuing (it speaks for the
        run in the summary), kept until the posteriors change (at the next evaluation)."""
        posts = tuple(self._posteriors.values())
        cached = self._details_cache
        if (cached is None or len(cached[0]) != len(posts)
                or any(a is not b for a, b in zip(cached[0], posts))):
            post = max(self._posteriors.values(), key=lambda p: p.p_gain)
            cached = self._details_cache = (posts, {f"heldout/{k}": v
                                                  for k, v in post.to_dict().items()})
        return cached[1]

    def _train_series(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept training steps and rewards as arrays, and the rewards' prefix sums
        (``csum[i]`` = sum of the first ``i``): buffers grown by the points added since the last
        call, rebuilt after a compression of the history. The prefix sums are accumulated left
        to right from the previous total, so they equal ``np.cumsum`` over the whole series bit
        for bit (a resumed monitor, which rebuilds them, smooths to the same values)."""
        n = len(self._train_steps)
        state = self._train_arrays
        if state is None or state[0] != self._compressions or state[1] > n:
            state = (self._compressions, 0, np.zeros((3, 16)))  # rows: steps, values, csum
        _, k, a = state
        a = reserve(a, n + 1, k + 1)
        if n > k:
            a[0, k:n] = self._train_steps[k:]
            a[1, k:n] = self._train_values[k:]
            # np.cumsum from the running total: the same sequential sums as over everything.
            a[2, k:n + 1] = np.cumsum(np.concatenate([a[2, k:k + 1], a[1, k:n]]))
        self._train_arrays = (self._compressions, n, a)
        return a[0, :n], a[1, :n], a[2, :n + 1]

    def _reward_levels(self, x: np.ndarray,
                       smoothed: np.ndarray) -> tuple[np.ndarray | None, float]:
        """The training reward at each evaluation (``smoothed``: its local means at ``x``),
        normalised by its ceiling, and its forecast rise over the rest of the budget (None, 0
        when the reward is unbounded or unseen)."""
        top = self.config.reward_ceiling
        if top is None or top <= 0 or not self._train_values or self._range[1] > top + 1e-6:
            return None, 0.0
        ts, tv, _ = self._train_series()
        r = smoothed
        ok = np.isfinite(r)
        if not ok.any():
            return None, 0.0
        if not ok.all():
            # Evaluations between logged steps (or the one before RL): the nearest reward.
            idx = np.clip(np.searchsorted(ts, x), 0, ts.size - 1)
            r = np.where(ok, r, tv[idx])
        level = statistics.median(self._train_values[-20:])
        # The larger of the fits' forecast rise and the recent trend carried over the rest of
        # the budget: the fits call a slow creep saturated long before it stops (a creeping
        # reward that the held-out tracks is a gain still to come).
        forecast = float(self._fit.get("forecast_final", math.nan))
        rise = forecast - level if math.isfinite(forecast) else 0.0
        b = self._slope.slope
        if math.isfinite(b):
            rise = max(rise, b * self._slope.remaining(self._last_step))
        rise = min(max(rise, 0.0), max(top - level, 0.0))
        return r / top, rise / top

    def _update_heldout_evidence(self, step: int, since: float | None, total: int) -> None:
        c = self.config
        probs = {k: 0.0 for k in CLASSES}
        n_called = 0
        feats_sum: dict[str, float] = {}
        train_steps, train_values, csum = self._train_series()
        slopes = []
        for name, h in self._heldout.items():
            if len(h["steps"]) < 2:
                continue
            x, y, var = self._series_arrays.setdefault(name, _SeriesArrays()).get(h)
            smoothed = _smooth_at(train_steps, train_values, x, csum=csum)
            levels, rise = self._reward_levels(x, smoothed)
            self._posteriors[name] = heldout_gain_posterior(
                x, y, variances=var, step=step, total_steps=max(total, step),
                min_gain=c.min_heldout_gain, prior=self._prior, reward_levels=levels,
                reward_rise_left=rise,
                frozen_steps=max(self._frozen - c.frozen_after, 0),
                cache=self._columns.setdefault(name, ShapeColumns()),
                calibration=self._calibration)
            drop = _collapse_drop(y, var)
            if drop is not None:
                self._collapsed[name] = drop
            else:
                self._collapsed.pop(name, None)
            if x.size < 3:
                continue
            # The regime call (reported in the evidence; the halt does not use it).
            ev = _features(x, y, var, train_steps, train_values, since, total,
                           smoothed=smoothed)
            slopes.append(ev.slope_all[0])
            if x.size >= c.min_heldout_points:
                n_called += 1
                for k, v in regime_probabilities(ev.features).items():
                    probs[k] += v
                for k, v in ev.features.items():
                    feats_sum[k] = feats_sum.get(k, 0.0) + v
        if n_called:
            self._regime = {k: v / n_called for k, v in probs.items()}
            self._regime["undetermined"] = 0.0
            self._regime_features = {k: v / n_called for k, v in feats_sum.items()}
            self._gain = {f"regime/{k}": v for k, v in self._regime_features.items()}
        if slopes:
            self._gain["heldout_slope"] = float(max(slopes))

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
            "frozen": self._frozen,
            "posteriors": {k: p.to_dict() for k, p in self._posteriors.items()},
            "collapsed": {k: list(v) for k, v in self._collapsed.items()},
            "fit": to_primitive(self._fit),
            "warm": to_primitive(self._warm),
            "tsat_samples": to_primitive(self._tsat_samples),
            "last_refit": self._last_refit,
            "fit_residuals": list(self._fit_resid),
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

        All or nothing: the whole state is checked before this monitor changes. It must be a
        dict with a known ``version``, the same configuration as this monitor (except for keys
        the state does not have), series of matching lengths with increasing steps, and it must
        accept one further update; otherwise :class:`StateError` says what is wrong and this
        monitor is exactly as it was.
        """
        if not isinstance(state, Mapping) or "version" not in state:
            raise StateError("SaturationMonitor.load_state_dict needs a dict made by "
                             f"state_dict() (with a 'version' key); got {type(state).__name__}"
                             + (f" with keys {sorted(map(str, state))[:10]}"
                                if isinstance(state, Mapping) else "") + ".")
        try:
            version = int(state["version"])
        except (TypeError, ValueError):
            raise StateError(f"Monitor state version {state['version']!r} is not a number.")
        if version > STATE_VERSION:
            raise StateError(f"Monitor state version {version} is newer than this satmon "
                             f"understands ({STATE_VERSION}).")
        saved = from_primitive(state.get("config", {}))
        if not isinstance(saved, Mapping):
            raise StateError(f"The saved monitor's 'config' is a {type(saved).__name__}, "
                             "not a dict.")
        mine = self.config.to_dict()
        diff = {k: (saved[k], mine[k]) for k in saved if k in mine and saved[k] != mine[k]}
        if diff:
            raise StateError(f"The saved monitor used a different configuration: "
                             f"{ {k: f'saved {a!r}, now {b!r}' for k, (a, b) in diff.items()} }. "
                             "Build the monitor with the saved parameters.")
        backup = copy.deepcopy(self.__dict__)
        try:
            self._apply_state(state)
            self._check_state()
            probe = copy.deepcopy(self)
            last = self._train_values[-1] if self._train_values else None
            probe.update(self._last_step + 1, last)
        except Exception as exc:
            self.__dict__.clear()
            self.__dict__.update(backup)
            if isinstance(exc, StateError):
                raise
            raise StateError(f"The saved monitor state is damaged ({type(exc).__name__}: "
                             f"{exc}); nothing was loaded.") from exc

    def _check_state(self) -> None:
        """Cross-field consistency of a just-applied state (raises StateError)."""
        n = len(self._train_steps)
        if len(self._train_values) != n or len(self._train_weights) != n:
            raise StateError(f"The saved training series has {n} steps, "
                             f"{len(self._train_values)} values and {len(self._train_weights)} "
                             "weights; they must be equal.")
        if any(b <= a for a, b in zip(self._train_steps, self._train_steps[1:])):
            raise StateError("The saved training steps are not increasing.")
        if n and self._last_step < self._train_steps[-1]:
            raise StateError(f"The saved last_step {self._last_step} is before the last "
                             f"training step {self._train_steps[-1]:g}.")
        for name, series in self._heldout.items():
            lengths = {k: len(v) for k, v in series.items()}
            if len(set(lengths.values())) > 1:
                raise StateError(f"The saved held-out series {name!r} has lists of different "
                                 f"lengths: {lengths}.")
            steps = series.get("steps", [])
            if any(b <= a for a, b in zip(steps, steps[1:])):
                raise StateError(f"The saved held-out steps of {name!r} are not increasing.")
        if not all(math.isfinite(v) for v in self._train_values):
            raise StateError("The saved training values include non-finite numbers.")

    def _apply_state(self, state: Mapping[str, Any]) -> None:
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
        self._frozen = int(state.get("frozen", 0))
        self._posteriors = {
            k: HeldoutPosterior(**{f: (int(v) if f == "n_points" else float(v))
                                   for f, v in from_primitive(p).items()})
            for k, p in state.get("posteriors", {}).items()}
        self._collapsed = {k: (float(v[0]), float(v[1]))
                           for k, v in state.get("collapsed", {}).items()}
        self._fit = from_primitive(state.get("fit", {}))
        self._warm = from_primitive(state.get("warm", {}))
        self._tsat_samples = [float(v) for v in from_primitive(state.get("tsat_samples", []))]
        self._last_refit = int(state.get("last_refit", -1))
        resid = state.get("fit_residuals")
        self._fit_resid = ([float(resid[0]), int(resid[1])] if resid is not None
                           else self._residuals_since_refit())
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


#: Steps per block on which the fitted reward curve is evaluated at once.
_PRED_BLOCK = 256

class _SeriesArrays:
    """One held-out series' steps, values and per-evaluation variances as arrays, grown by
    the evaluations added since the last call (the series only ever grows; a shorter one, as
    after a state load, starts the arrays again). The binomial variance is per evaluation, so
    it is computed for the new ones only; with any sample size unknown the whole series'
    :func:`~satmon.regime.point_variance` is recomputed (it pools the known ones)."""

    def __init__(self) -> None:
        self._n = 0
        self._unknown = 0
        self._arrays = np.empty((4, 0))

    def get(self, h: Mapping[str, list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, k = len(h["steps"]), self._n
        if n < k:
            k = self._unknown = 0
        a = self._arrays = reserve(self._arrays, n, k)
        if n > k:
            a[0, k:n] = h["steps"][k:]
            a[1, k:n] = h["values"][k:]
            a[2, k:n] = h["sizes"][k:]
            a[3, k:n] = binomial_variance(a[1, k:n], a[2, k:n])
            self._unknown += int(np.count_nonzero(a[2, k:n] <= 0))
        self._n = n
        x, y, sizes = a[0, :n], a[1, :n], a[2, :n]
        return x, y, (a[3, :n] if not self._unknown else point_variance(y, sizes))


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


def _collapse_drop(y: np.ndarray, var: np.ndarray) -> tuple[float, float] | None:
    """``(drop, limit)`` when each of the last three values lies more than ``limit`` below the
    series' best earlier level, else None.

    The best earlier level is the best 3-value median (a level held over several evaluations,
    which no single outlier makes) or the first evaluation, the model's level before RL moved
    it: a decline from there that every later evaluation confirms is a collapse even when it
    happened at once (a proxy reward that halves accuracy in the first steps). ``limit`` is
    ``_COLLAPSE_DROP`` or ``_COLLAPSE_SDS`` (``_COLLAPSE_SDS_FIRST`` from the first evaluation)
    noise sds of the difference, whichever is larger.
    """
    if y.size < 6:
        return None
    # The median of each 3 consecutive values, exactly the middle one (no sort per window).
    a, b, c = y[:-2], y[1:-1], y[2:]
    best = float(np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c)).max())
    last_var = float(var[-3:].max())
    low = float(y[-3:].max())
    # The median of three has about 0.45 of one point's variance.
    found = []
    for level, var_level, sds in ((best, 0.45 * last_var, _COLLAPSE_SDS),
                                  (float(y[0]), float(var[0]), _COLLAPSE_SDS_FIRST)):
        limit = max(_COLLAPSE_DROP, sds * math.sqrt(var_level + last_var))
        if level - low > limit:
            found.append((level - float(np.median(y[-3:])), limit))
    return max(found) if found else None


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
