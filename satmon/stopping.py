"""Empirical-Bayes stopping rule: P(held-out accuracy still gains more than a point).

Extrapolating the held-out slope linearly over the remaining budget cannot rule out a one-point
gain early in a run: with binomial noise (sd ~0.02 at n = 500) and ~8 evaluations, the slope's
standard error times a 300-step horizon is ~3 points, so such a rule waits until the very end.
What a person actually knows at that point is more than the slope: how held-out accuracy moved
while the training reward rose, whether the reward has saturated and for how long, how noisy
the evaluations are, and how much of the budget is left. This module turns that evidence into
``P(remaining held-out gain > min_gain | evidence)`` with a logistic model whose coefficients were
fitted on a seeded synthetic calibration suite (``benchmarks/_calibrate_stopping.py``; its seeds
are disjoint from the benchmark's), where the truth ``remaining_gain_at(step)`` is known.

Features (all from the evidence available online at a held-out evaluation):

``gain_z_recent``  ``(b H - g) / (se H)`` for the held-out WLS slope ``b`` since the saturation
                   estimate (else the later half of the points), horizon ``H`` = remaining steps,
                   ``g`` = ``min_gain``: the linear extrapolation's z-score;
``gain_z_all``     the same with the slope over all evaluations;
``z_recent``       ``b / se`` since saturation;
``z_all``          ``b / se`` over all evaluations;
``z_train``        co-movement of held-out accuracy with the training reward (pre-saturation);
``z_drop``         best 3-point mean minus the latest, in sds;
``z_gain``         latest 3-point mean minus the first evaluation, in sds;
``p_saturated``    the monitor's P(training reward saturated);
``since_sat``      steps since the saturation estimate, as a fraction of the budget (0 before);
``frac_left``      remaining budget as a fraction of the planned steps;
``log_points``     log of the number of evaluations;
``log_sd_gain``    log of the extrapolated gain's sd in ``min_gain`` units.

z-scores are clipped to +/-8 (a huge z is no more evidence than a large one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from satmon import _stop_model

STOP_FEATURES: tuple[str, ...] = (
    "gain_z_recent", "gain_z_all", "z_recent", "z_all", "z_train", "z_drop", "z_gain",
    "p_saturated", "since_sat", "frac_left", "log_points", "log_sd_gain")
_CLIP = 8.0


def stop_features(*, regime: Mapping[str, float], slope_recent: tuple[float, float],
                  slope_all: tuple[float, float], horizon: float, total_steps: float,
                  step: float, t_sat: float, p_saturated: float, n_points: int,
                  min_gain: float) -> dict[str, float]:
    """The stopping model's features (see the module docstring) from the monitor's evidence.

    Parameters
    ----------
    regime:
        The regime features of :func:`satmon.regime.regime_features` (``z_train``, ``z_drop``,
        ``z_gain``).
    slope_recent, slope_all:
        ``(slope, standard error)`` per step, since saturation and over all evaluations.
    horizon:
        Remaining planned steps.
    total_steps:
        Planned last step.
    step:
        The current step.
    t_sat:
        Saturation step estimate (NaN / inf when unknown).
    p_saturated:
        P(training reward saturated).
    n_points:
        Held-out evaluations so far.
    min_gain:
        Gain that still justifies training (accuracy units).
    """
    h = max(float(horizon), 0.0)
    total = max(float(total_steps), 1.0)

    def clip(v: float) -> float:
        return float(min(max(v, -_CLIP), _CLIP)) if math.isfinite(v) else 0.0

    def gain_z(b: float, se: float) -> float:
        if not (math.isfinite(b) and math.isfinite(se)) or se <= 0:
            return 0.0
        if h == 0:
            return -_CLIP
        return clip((b * h - min_gain) / (se * h))

    b_r, se_r = slope_recent
    b_a, se_a = slope_all
    sd_gain = se_r * h / min_gain if math.isfinite(se_r) and se_r > 0 else math.nan
    since = (step - t_sat) / total if math.isfinite(t_sat) and t_sat <= step else 0.0
    return {
        "gain_z_recent": gain_z(b_r, se_r),
        "gain_z_all": gain_z(b_a, se_a),
        "z_recent": clip(b_r / se_r) if se_r > 0 else 0.0,
        "z_all": clip(b_a / se_a) if se_a > 0 else 0.0,
        "z_train": clip(regime.get("z_train", 0.0)),
        "z_drop": clip(regime.get("z_drop", 0.0)),
        "z_gain": clip(regime.get("z_gain", 0.0)),
        "p_saturated": float(min(max(p_saturated, 0.0), 1.0)),
        "since_sat": float(min(max(since, 0.0), 1.0)),
        "frac_left": float(min(max(h / total, 0.0), 1.0)),
        "log_points": math.log(max(n_points, 1)),
        "log_sd_gain": math.log(min(max(sd_gain, 1e-3), 1e4)) if math.isfinite(sd_gain)
        else math.log(1e4),
    }


def p_heldout_gain(features: Mapping[str, float],
                   coefficients: Sequence[float] | None = None) -> float:
    """``P(remaining held-out gain > min_gain | features)`` under the calibrated logistic model.

    Parameters
    ----------
    features:
        Output of :func:`stop_features` (missing keys count as 0).
    coefficients:
        ``(intercept, *weights in STOP_FEATURES order)``; default: the calibrated model.
    """
    coef = _stop_model.COEFFICIENTS if coefficients is None else tuple(coefficients)
    if len(coef) != len(STOP_FEATURES) + 1:
        raise ValueError(f"Stopping-model coefficients must have {len(STOP_FEATURES) + 1} "
                         f"values (intercept + {list(STOP_FEATURES)}). Got {len(coef)}.")
    z = coef[0] + sum(w * features.get(k, 0.0) for w, k in zip(coef[1:], STOP_FEATURES))
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def stop_score(p_gain: float, *, post: bool, dropped: bool, p_collapse: float,
               p_saturated: float, rising_z: float, rising_gain: float, horizon: float,
               flag_threshold: float, min_p_saturated: float, rising_z_limit: float,
               min_gain: float) -> tuple[float, str]:
    """The monitor's stop score at a held-out evaluation and the guard-rail veto on it.

    The score is ``1 - p_gain`` once the training reward has saturated (``post``), else 0; after
    a significant held-out drop (``dropped``) it is at least ``p_collapse`` and nothing vetoes
    it. Otherwise a score at or above ``flag_threshold`` is vetoed (see
    :mod:`satmon.monitor`) when P(saturated) is below ``min_p_saturated``, when no planned steps
    are left, or when held-out accuracy still rises (``rising_z > rising_z_limit`` with a
    projected gain above ``min_gain``). One rule for the monitor and its calibration
    (``benchmarks/_calibrate_stopping.py``).

    Returns
    -------
    ``(score, veto)``: ``veto`` is the reason, with its numbers, or ``""``.
    """
    p_stop = 1.0 - p_gain if post else 0.0
    if dropped:
        return max(p_collapse, p_stop), ""
    if p_stop < flag_threshold:
        return p_stop, ""
    if p_saturated < min_p_saturated:
        return p_stop, (f"P(saturated)={p_saturated:.2f} below {min_p_saturated:g} (trend and "
                        "curve fits disagree)")
    if horizon <= 0:
        return p_stop, "no planned steps left, so no compute to save"
    if rising_z > rising_z_limit and rising_gain > min_gain:
        return p_stop, (f"held-out still rising: slope z={rising_z:.1f} > {rising_z_limit:g}, "
                        f"projected gain {rising_gain:+.3f} > {min_gain:g} over the remaining "
                        "budget")
    return p_stop, ""


def default_halt_threshold() -> float:
    """The stop score (``1 - P(gain)``) chosen on the calibration suite for a <= 1% false halt."""
    return float(_stop_model.HALT_THRESHOLD)


def default_patience() -> int:
    """Consecutive evaluations at or above the threshold, chosen with it on the calibration
    suite."""
    return int(_stop_model.PATIENCE)


def feature_matrix(rows: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Stack feature dicts into a design matrix with a leading intercept column."""
    return np.asarray([[1.0] + [r.get(k, 0.0) for k in STOP_FEATURES] for r in rows])


__all__ = ["STOP_FEATURES", "default_halt_threshold", "default_patience", "feature_matrix",
           "p_heldout_gain", "stop_features", "stop_score"]
