"""Regime call from held-out evidence: generalizing, memorizing or collapsing.

The call rests on held-out accuracy, whose binomial noise is known from the held-out sample size
(DESIGN.md section 3); the training curve enters only through the co-movement of held-out accuracy
with training reward. Evidence, as z-statistics of weighted least squares with the binomial
variance ``p(1-p)/n`` per point (inflated when the residuals are overdispersed):

``z_time``    slope of held-out accuracy over steps, all points;
``z_recent``  the same over the later half of the points (or since saturation);
``z_train``   slope of held-out accuracy against the (smoothed) training reward at the same
              steps - the co-movement of the pre-saturation phase;
``z_drop``    fall of the latest 3-point mean below the best 3-point mean (collapse);
``z_gain``    latest 3-point mean minus the first evaluation;
``z_peak``    best 3-point mean minus the first evaluation (a collapse rises first);
``log_points`` log of the number of evaluations (how much the z-statistics can say);
``elapsed``   last evaluated step over the planned steps (0.5 when the plan is unknown): late in
              a run a flat held-out curve has had its chance to rise and a collapse to happen.

A multinomial logistic model maps the evidence to probabilities. Its coefficients
(:data:`REGIME_COEFFICIENTS`, stored in ``satmon/regime_model.json``) were fitted on a seeded
synthetic calibration suite by ``benchmarks/_calibrate_regime.py`` (seeds 100-101, disjoint from
the benchmark's; standard and hard mixes; snapshots after 6 to 40 evaluations of runs evaluated
every 10 or 25 steps, and end-of-run calls of runs whose budget holds 10, 20 or 40 evaluations),
then temperature-scaled on a separate suite: the temperature is ``exp(a + b * elapsed)``
(:data:`REGIME_TEMPERATURE` holds ``(a, b)``), because one linear model fitted to early and
end-of-run calls together is under-confident at the end of a run, where the evidence is
clearest, and a single temperature cannot fix both ends. Rerun
the script after changing the features: it rewrites the module.

The regime call is reported with every decision; the halt itself rests on the held-out gain
posterior of :mod:`satmon.monitor.posterior`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from satmon import _data
from satmon.results import json_safe

CLASSES = ("generalizing", "memorizing", "collapsing")
FEATURES = ("z_time", "z_recent", "z_train", "z_drop", "z_gain", "z_peak", "log_points",
            "elapsed")

_MODEL = _data.load("regime_model.json", list(FEATURES), package="satmon")
#: Multinomial logistic coefficients: ``{class: (intercept, *weights in FEATURES order)}``;
#: memorizing is the reference class (all zeros). Fitted by benchmarks/_calibrate_regime.py,
#: stored in satmon/regime_model.json (checked against FEATURES on load).
REGIME_COEFFICIENTS: dict[str, tuple[float, ...]] = {
    k: tuple(float(x) for x in v) for k, v in _MODEL["coefficients"].items()}
#: ``(a, b)``: scores are divided by ``exp(a + b * elapsed)`` before the softmax (fitted for
#: calibration by benchmarks/_calibrate_regime.py).
REGIME_TEMPERATURE: tuple[float, float] = (float(_MODEL["temperature"][0]),
                                           float(_MODEL["temperature"][1]))
#: Features are clipped to this range before the logistic model (a huge z is not more evidence
#: than a large one, and clipping keeps the calibration stable on long runs).
FEATURE_CLIP = 8.0


def binomial_variance(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per-point variance ``p(1-p)/n`` (p clipped to [0.02, 0.98]); NaN where n is unknown."""
    # np.minimum/np.maximum: np.clip's values at a fraction of its per-call cost (this runs on
    # every held-out evaluation); sizes of 0 are divided as 1 and then masked.
    p = np.minimum(np.maximum(values, 0.02), 0.98)
    known = sizes > 0
    return np.where(known, p * (1 - p) / np.where(known, sizes, 1.0), np.nan)


def point_variance(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per-evaluation variance: binomial where ``n`` is known (0 = unknown), the median of the
    known ones where some are, a robust scale from successive differences where none are."""
    var = binomial_variance(values, sizes)
    missing = np.isnan(var)
    if missing.all():
        # Unknown n: a robust scale from successive differences (trend-free), floored.
        d = np.diff(values)
        s = float(np.median(np.abs(d)) / 0.6745 / math.sqrt(2)) if d.size >= 2 else 0.02
        return np.full(values.size, max(s, 0.005) ** 2)
    if not missing.any():
        return var
    return np.where(missing, np.nanmedian(var), var)


def wls_slope(x: np.ndarray, y: np.ndarray, var: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares slope and its standard error (overdispersion-inflated).

    The residual chi-square over its degrees of freedom inflates the variance when it exceeds
    1 (e.g. held-out sampled at temperature, or a curve that bends); it never deflates it.
    """
    if x.size < 3 or x.max() == x.min():
        return math.nan, math.nan
    w = 1.0 / var
    sw = w.sum()
    # Centred on the weighted means (dot products: this runs three times per evaluation).
    dx = x - (w @ x) / sw
    dy = y - (w @ y) / sw
    wdx = w * dx
    sxx = wdx @ dx
    b = (wdx @ dy) / sxx
    r = dy - b * dx
    chi2 = float((w * r) @ r)
    disp = max(1.0, chi2 / (x.size - 2))
    return float(b), float(math.sqrt(disp / sxx))


@dataclass(frozen=True)
class RegimeEvidence:
    """Held-out evidence and the regime probabilities it gives.

    Attributes
    ----------
    n_points: held-out evaluations used.
    features: the z-statistics (see the module docstring).
    probabilities: ``{class: probability}`` over :data:`CLASSES` (sum 1), or empty when the
        evidence is insufficient.
    """

    n_points: int
    features: dict[str, float] = field(default_factory=dict)
    probabilities: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"n_points": self.n_points, "features": dict(self.features),
                          "probabilities": dict(self.probabilities)})


def _smooth_at(train_steps: np.ndarray, train_values: np.ndarray, at: np.ndarray,
               half_width: int = 5, *, csum: np.ndarray | None = None) -> np.ndarray:
    """The mean training reward within ``half_width`` steps of each of ``at`` (NaN where none
    is logged). ``csum``: the rewards' prefix sums ``[0, cumsum(train_values)]`` when the caller
    keeps them (the monitor does, so a call costs O(len(at) log n), not O(n))."""
    out = np.full(at.size, np.nan)
    if train_steps.size == 0:
        return out
    lo = np.searchsorted(train_steps, at - half_width, side="left")
    hi = np.searchsorted(train_steps, at + half_width, side="right")
    if csum is None:
        csum = np.concatenate([[0.0], np.cumsum(train_values)])
    cnt = hi - lo
    ok = cnt > 0
    out[ok] = (csum[hi[ok]] - csum[lo[ok]]) / cnt[ok]
    return out


def regime_features(steps: Sequence[float], values: Sequence[float], sizes: Sequence[float],
                    *, train_steps: Sequence[float] = (), train_values: Sequence[float] = (),
                    since_step: float | None = None,
                    total_steps: float | None = None) -> dict[str, float]:
    """The held-out evidence features (see the module docstring).

    Parameters
    ----------
    steps, values, sizes:
        Held-out evaluations; ``sizes`` holds each evaluation's sample size (0 when unknown).
    train_steps, train_values:
        The training reward so far (for the co-movement feature).
    since_step:
        Saturation step estimate: ``z_recent`` uses points from there on when at least 4 exist.
    total_steps:
        The run's planned last step (for ``elapsed``); None: unknown.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    var = point_variance(y, np.asarray(sizes, dtype=float))
    return _features(x, y, var, np.asarray(train_steps, dtype=float),
                     np.asarray(train_values, dtype=float), since_step, total_steps).features


@dataclass(frozen=True)
class _Features:
    """:func:`regime_features` with the pieces the monitor reuses instead of recomputing."""

    features: dict[str, float]
    slope_all: tuple[float, float] = (math.nan, math.nan)  # wls_slope over all the points
    roll: np.ndarray | None = None  # 3-point rolling means of the values
    roll_var: np.ndarray | None = None  # their variances


def _features(x: np.ndarray, y: np.ndarray, var: np.ndarray, ts: np.ndarray, tv: np.ndarray,
              since_step: float | None, total_steps: float | None, *,
              smoothed: np.ndarray | None = None) -> _Features:
    # smoothed: _smooth_at(ts, tv, x) when the caller already has it.
    out = {f: 0.0 for f in FEATURES}
    if x.size < 3:
        return _Features(out)
    b, se = wls_slope(x, y, var)
    out["z_time"] = b / se if se > 0 else 0.0
    if since_step is not None and math.isfinite(since_step) and np.sum(x >= since_step) >= 4:
        sel = x >= since_step
    else:
        sel = x >= x[x.size // 2]
    if sel.sum() >= 3:
        b2, se2 = wls_slope(x[sel], y[sel], var[sel])
        out["z_recent"] = b2 / se2 if se2 > 0 else 0.0
    if ts.size >= 3:
        r = _smooth_at(ts, tv, x) if smoothed is None else smoothed
        ok = np.isfinite(r)
        if ok.sum() >= 3 and np.ptp(r[ok]) > 0.02:
            b3, se3 = wls_slope(r[ok], y[ok], var[ok])
            out["z_train"] = b3 / se3 if se3 > 0 else 0.0
    k = min(3, x.size)
    roll = np.convolve(y, np.ones(k) / k, mode="valid")
    roll_var = np.convolve(var, np.ones(k) / k ** 2, mode="valid")
    last, best = roll[-1], roll.max()
    j = int(np.argmax(roll))
    sd = math.sqrt(roll_var[-1] + roll_var[j]) if j != roll.size - 1 else math.sqrt(roll_var[-1])
    out["z_drop"] = (best - last) / sd if sd > 0 else 0.0
    out["z_gain"] = (last - y[0]) / math.sqrt(roll_var[-1] + var[0])
    out["z_peak"] = (best - y[0]) / math.sqrt(roll_var[j] + var[0])
    # min/max, not np.clip: the same values (NaN stays NaN) without a numpy call per feature.
    out = {k2: min(max(float(v), -FEATURE_CLIP), FEATURE_CLIP) for k2, v in out.items()}
    out["log_points"] = math.log(x.size)
    out["elapsed"] = (min(max(float(x[-1]) / float(total_steps), 0.0), 1.0)
                      if total_steps else 0.5)
    return _Features(out, (b, se), roll, roll_var)


def regime_probabilities(features: dict[str, float],
                         coefficients: dict[str, Sequence[float]] | None = None,
                         temperature: tuple[float, float] | None = None) -> dict[str, float]:
    """Multinomial logistic probabilities of :data:`CLASSES` from the features.

    ``temperature`` is ``(a, b)`` of the temperature ``exp(a + b * elapsed)`` (default: the
    calibrated :data:`REGIME_TEMPERATURE`; ``(0, 0)`` gives the raw model).
    """
    coef = coefficients or REGIME_COEFFICIENTS
    a, b = REGIME_TEMPERATURE if temperature is None else temperature
    temp = math.exp(float(a) + float(b) * features.get("elapsed", 0.5))
    missing = [c for c in CLASSES if c not in coef]
    if missing:
        raise KeyError(f"Regime coefficients lack classes {missing}; they have {sorted(coef)}.")
    f = np.array([1.0] + [features.get(k, 0.0) for k in FEATURES])
    scores = np.array([float(np.dot(np.asarray(coef[c], dtype=float), f)) for c in CLASSES])
    scores = scores / temp
    scores -= scores.max()
    p = np.exp(scores)
    p /= p.sum()
    return {c: float(v) for c, v in zip(CLASSES, p)}


def classify_regime(steps: Sequence[float], values: Sequence[float], sizes: Sequence[float],
                    *, train_steps: Sequence[float] = (), train_values: Sequence[float] = (),
                    since_step: float | None = None, min_points: int = 6,
                    total_steps: float | None = None) -> RegimeEvidence:
    """Regime probabilities from held-out evaluations (empty below ``min_points``).

    Example
    -------
    >>> steps = list(range(0, 300, 25))
    >>> ev = classify_regime(steps, [0.3 + 0.0008 * s for s in steps], [500] * len(steps),
    ...                      train_steps=list(range(1, 300)),
    ...                      train_values=[0.2 + 0.002 * s for s in range(1, 300)])
    >>> max(ev.probabilities, key=ev.probabilities.get)
    'generalizing'
    """
    n_points = len(steps)
    if n_points < max(min_points, 3):
        return RegimeEvidence(n_points)
    feats = regime_features(steps, values, sizes, train_steps=train_steps,
                            train_values=train_values, since_step=since_step,
                            total_steps=total_steps)
    return RegimeEvidence(n_points, feats, regime_probabilities(feats))
