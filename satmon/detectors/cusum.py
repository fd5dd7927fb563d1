"""Two-sided CUSUM on standardized residuals of a reference curve."""

from __future__ import annotations

import math
from typing import Any

from satmon.detectors.base import Detector, Event, as_finite, as_step, check_number


class ResidualCUSUM(Detector):
    """CUSUM of standardized residuals ``(value - expected) / scale``.

    A raw-level CUSUM fires all along a smooth ramp; on residuals of the current fit it fires
    only when the curve leaves the fit: an early plateau under a rising fit, a collapse, or a
    second rise. The reference comes from the caller (``update(value, step, expected=...,
    scale=...)``, e.g. the saturation-curve ensemble's prediction) or, when not given, from the
    detector's own damped linear trend (Holt smoothing with rates ``alpha`` / ``beta``) and an
    exponentially weighted residual scale.

    Parameters
    ----------
    drift:
        Allowance ``k`` per update, in residual sd units (detects shifts of about 2k).
    threshold:
        Decision threshold ``h`` on either cumulative sum.
    alpha, beta:
        Smoothing rates of the built-in trend's level and slope.
    burn_in:
        Updates used to settle the built-in trend and scale before any event.
    scale_floor:
        Smallest residual scale allowed (value units), so a noiseless stream does not divide
        by zero.

    Events: ``"rise"`` (upper sum crossed) and ``"drop"`` (lower sum crossed); ``location`` is
    the step after which the sum last left zero (the change onset estimate). Sums restart
    after an event.

    Example
    -------
    >>> c = ResidualCUSUM(threshold=5.0)
    >>> ys = [0.5 + 0.01 * (-1) ** s for s in range(60)] + [0.4] * 20
    >>> [e.kind for e in (c.update(y, s) for s, y in enumerate(ys)) if e is not None]
    ['drop']
    """

    _PARAMS = ("drift", "threshold", "alpha", "beta", "burn_in", "scale_floor")
    _STATE = ("level", "trend", "scale2", "upper", "lower", "upper_start", "lower_start",
              "last_z", "prev_step", "burn")

    def __init__(self, *, drift: float = 0.5, threshold: float = 6.0, alpha: float = 0.1,
                 beta: float = 0.05, burn_in: int = 20, scale_floor: float = 1e-4) -> None:
        self.drift = drift
        self.threshold = threshold
        self.alpha = alpha
        self.beta = beta
        self.burn_in = burn_in
        self.scale_floor = scale_floor
        owner = type(self).__name__
        check_number(drift, "drift", owner, low=0)
        check_number(threshold, "threshold", owner, low=0, low_open=True)
        check_number(alpha, "alpha", owner, low=0, high=1, low_open=True)
        check_number(beta, "beta", owner, low=0, high=1)
        check_number(burn_in, "burn_in", owner, low=2, integer=True)
        check_number(scale_floor, "scale_floor", owner, low=0, low_open=True)
        self._expected: float | None = None
        self._given_scale: float | None = None
        self.reset()

    def _reset(self) -> None:
        self._level = math.nan
        self._trend = 0.0
        self._scale2 = math.nan
        self._upper = 0.0
        self._lower = 0.0
        self._upper_start = -1
        self._lower_start = -1
        self._last_z = math.nan
        self._prev_step = -1
        self._burn: list[list[float]] = []

    @property
    def upper(self) -> float:
        """Upper cumulative sum (evidence the values run above the reference)."""
        return self._upper

    @property
    def lower(self) -> float:
        """Lower cumulative sum (evidence the values run below the reference)."""
        return self._lower

    @property
    def last_z(self) -> float:
        """The last standardized residual."""
        return self._last_z

    def update(self, value: Any, step: Any, *, expected: float | None = None,
               scale: float | None = None) -> Event | None:
        """Feed one value; ``expected`` / ``scale`` override the built-in reference."""
        owner = type(self).__name__
        self._expected = as_finite(expected, owner) if expected is not None else None
        self._given_scale = as_finite(scale, owner) if scale is not None else None
        if self._given_scale is not None and self._given_scale <= 0:
            raise ValueError(f"{owner}.update needs scale > 0. Got {scale!r} instead.")
        as_step(step, owner)
        try:
            return super().update(value, step)
        finally:
            self._expected = None
            self._given_scale = None

    def _update(self, value: float, step: int) -> Event | None:
        if self._n <= self.burn_in:
            # Burn-in: start the trend from an OLS line through the first points, so a ramp
            # does not read as a run of positive residuals while a flat start trend catches up.
            self._burn.append([float(step), value])
            self._prev_step = step
            if self._n < self.burn_in:
                return None
            xs = [b[0] for b in self._burn]
            ys = [b[1] for b in self._burn]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            sxx = sum((x - mx) ** 2 for x in xs)
            b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
            resid = [y - my - b * (x - mx) for x, y in zip(xs, ys)]
            self._trend = b
            self._level = my + b * (xs[-1] - mx)
            self._scale2 = sum(r * r for r in resid) / max(len(resid) - 2, 1)
            self._burn = []
            return None
        dt = step - self._prev_step
        own_pred = self._level + self._trend * dt
        pred = own_pred if self._expected is None else self._expected
        resid = value - pred
        own_resid = value - own_pred
        if math.isnan(self._scale2):
            self._scale2 = own_resid * own_resid
        scale = self._given_scale if self._given_scale is not None else math.sqrt(
            max(self._scale2, self.scale_floor ** 2))
        z = resid / max(scale, self.scale_floor)
        self._last_z = z
        # The built-in trend and scale learn only from points that are not outliers, so a
        # step change is not absorbed before the sums can see it.
        if abs(own_resid) <= 4 * math.sqrt(max(self._scale2, self.scale_floor ** 2)):
            new_level = own_pred + self.alpha * own_resid
            self._trend += self.beta * (new_level - self._level - self._trend * dt) / max(dt, 1)
            self._level = new_level
            self._scale2 += 0.05 * (own_resid * own_resid - self._scale2)
        else:
            self._level = own_pred
        self._prev_step = step
        if self._upper == 0.0:
            self._upper_start = step
        if self._lower == 0.0:
            self._lower_start = step
        self._upper = max(0.0, self._upper + z - self.drift)
        self._lower = max(0.0, self._lower - z - self.drift)
        if self._upper > self.threshold:
            stat, loc = self._upper, self._upper_start
            self._upper = self._lower = 0.0
            self._level = value
            return Event(step, "rise", type(self).__name__, stat, location=float(loc),
                         details={"z": z})
        if self._lower > self.threshold:
            stat, loc = self._lower, self._lower_start
            self._upper = self._lower = 0.0
            self._level = value
            return Event(step, "drop", type(self).__name__, stat, location=float(loc),
                         details={"z": z})
        return None
