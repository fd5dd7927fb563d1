"""Windowed OLS slope test whose horizon is the remaining training budget."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from scipy.stats import norm

from satmon.detectors.base import Detector, Event, check_number


class SlopeTest(Detector):
    """Is the recent slope too small to matter over the rest of the run?

    Over the last ``window`` accepted points it fits an OLS line and asks whether even the
    optimistic end of the slope's confidence interval, extrapolated over the remaining budget
    (``total_steps - step``), would add less than ``min_gain``. Saturation is a change of slope,
    not of level, so a smooth ramp never looks like a plateau here - a level detector fires all
    along it. The horizon is the remaining budget, never the window: a slope of 1e-4/step is
    nothing with 10 steps left and 5 points with 500 left.

    The slope's standard error allows for AR(1) noise: the lag-1 autocorrelation is estimated
    from the ratio of the variance of first differences to the residual variance, and the
    variance is inflated by ``(1 + phi) / (1 - phi)``.

    Parameters
    ----------
    total_steps:
        The run's planned last step. None: the horizon is the number of steps run so far (the
        run is assumed to last as long again).
    window:
        Number of recent points in the regression.
    min_gain:
        Gain over the remaining budget that still counts as progress (value units).
    confidence:
        One-sided confidence of the bound on the slope (e.g. 0.95).
    min_points:
        Points needed before any event (at most ``window``).
    min_horizon:
        Lower bound on the remaining budget, so the test does not fire trivially at the end.

    Events: ``"plateau"`` when the upper bound of the remaining gain drops below ``min_gain``;
    ``"rise"`` after a plateau when the lower bound exceeds ``min_gain`` again.

    Example
    -------
    >>> t = SlopeTest(total_steps=300, window=30, min_gain=0.02)
    >>> events = [t.update(min(1.0, 0.01 * s) + 0.005 * (-1) ** s, s) for s in range(1, 200)]
    >>> [e.step for e in events if e is not None]
    [163]
    """

    _PARAMS = ("total_steps", "window", "min_gain", "confidence", "min_points", "min_horizon")
    _STATE = ("points", "sums", "plateau", "slope", "slope_se", "gain_upper", "gain_lower",
              "phi")

    def __init__(self, *, total_steps: int | None = None, window: int = 50,
                 min_gain: float = 0.01, confidence: float = 0.95, min_points: int = 10,
                 min_horizon: int = 10) -> None:
        self.total_steps = total_steps
        self.window = window
        self.min_gain = min_gain
        self.confidence = confidence
        self.min_points = min_points
        self.min_horizon = min_horizon
        owner = type(self).__name__
        if total_steps is not None:
            check_number(total_steps, "total_steps", owner, low=1, integer=True)
        check_number(window, "window", owner, low=3, integer=True)
        check_number(min_gain, "min_gain", owner, low=0, low_open=True)
        check_number(confidence, "confidence", owner, low=0.5, high=0.999999)
        check_number(min_points, "min_points", owner, low=3, high=window, integer=True)
        check_number(min_horizon, "min_horizon", owner, low=0, integer=True)
        self._z = float(norm.ppf(confidence))
        self.reset()

    def _reset(self) -> None:
        self._points: deque[tuple[int, float]] = deque(maxlen=self.window)
        # Running sums over the window (x = step - anchor, the first step seen):
        # [anchor, n, sx, sy, sxx, sxy, syy, and over consecutive pairs inside the window:
        #  sum dx^2, sum dx dy, sum dy^2]. Kept in the state, so a resumed detector carries the
        # same sums (and rounding) as an uninterrupted one.
        self._sums: list[float] = [math.nan] + [0.0] * 9
        self._plateau = False
        self._slope = math.nan
        self._slope_se = math.nan
        self._gain_upper = math.nan
        self._gain_lower = math.nan
        self._phi = 0.0

    def _restore(self, key: str, value: Any) -> Any:
        if key == "points":
            return deque([(int(s), float(v)) for s, v in value], maxlen=self.window)
        return super()._restore(key, value)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict` (also one saved before the running window
        sums were kept: they are rebuilt from the saved points)."""
        super().load_state_dict(state)
        inner = state.get("state", {})
        if "sums" not in inner and self._points:
            # A state saved before the running sums existed: rebuild them from the window.
            pts = list(self._points)
            self._sums = [float(pts[0][0])] + [0.0] * 9
            for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
                self._accumulate_pair(s1 - s0, v1 - v0, 1.0)
            for s, v in pts:
                self._accumulate(s, v, 1.0)

    @property
    def slope(self) -> float:
        """OLS slope per step over the window (NaN before ``min_points``)."""
        return self._slope

    @property
    def slope_se(self) -> float:
        """Standard error of the slope, AR(1)-inflated."""
        return self._slope_se

    @property
    def gain_upper(self) -> float:
        """Upper confidence bound of the gain over the remaining budget."""
        return self._gain_upper

    @property
    def gain_lower(self) -> float:
        """Lower confidence bound of the gain over the remaining budget."""
        return self._gain_lower

    @property
    def in_plateau(self) -> bool:
        """True between a ``plateau`` event and the next ``rise``."""
        return self._plateau

    def remaining(self, step: int) -> float:
        """The horizon used at ``step``."""
        left = (self.total_steps - step) if self.total_steps is not None else step
        return float(max(left, self.min_horizon))

    def p_gain_below(self, gain: float, step: int | None = None) -> float:
        """P(slope x remaining budget < ``gain``) under the normal slope posterior."""
        if not math.isfinite(self._slope) or not self._slope_se > 0:
            return math.nan
        h = self.remaining(self._last_step if step is None else step)
        # math.erfc instead of scipy.stats.norm.cdf: this runs on every monitor update.
        return 0.5 * math.erfc(-((gain / h - self._slope) / self._slope_se) / math.sqrt(2.0))

    def _accumulate(self, step: float, value: float, sign: float) -> None:
        sm = self._sums
        x = step - sm[0]
        sm[1] += sign
        sm[2] += sign * x
        sm[3] += sign * value
        sm[4] += sign * x * x
        sm[5] += sign * x * value
        sm[6] += sign * value * value

    def _accumulate_pair(self, dx: float, dy: float, sign: float) -> None:
        sm = self._sums
        sm[7] += sign * dx * dx
        sm[8] += sign * dx * dy
        sm[9] += sign * dy * dy

    def _update(self, value: float, step: int) -> Event | None:
        # O(1) per update: the window's sums are updated as a point enters and the oldest
        # leaves, and the residual sums follow from them algebraically (no pass over the window
        # on the monitor's per-step path).
        sm = self._sums
        if math.isnan(sm[0]):
            sm[0] = float(step)
        pts = self._points
        if len(pts) == pts.maxlen:
            (s0, v0), (s1, v1) = pts[0], pts[1]
            self._accumulate(s0, v0, -1.0)
            self._accumulate_pair(s1 - s0, v1 - v0, -1.0)
        if pts:
            s_prev, v_prev = pts[-1]
            self._accumulate_pair(step - s_prev, value - v_prev, 1.0)
        self._accumulate(step, value, 1.0)
        pts.append((step, value))
        n = len(pts)
        if n < self.min_points:
            return None
        _, _, sx, sy, sxx, sxy, syy, sdxx, sdxy, sdyy = sm
        mx, my = sx / n, sy / n
        vxx = sxx - n * mx * mx
        if vxx <= 0:
            return None
        cxy = sxy - n * mx * my
        b = cxy / vxx
        # Residuals r = y - a - b x: sum r^2 = Syy_c - b Sxy_c; consecutive differences of r
        # are dy - b dx, so their sum of squares needs only the pair sums.
        rss = syy - n * my * my - b * cxy
        sdd = max(sdyy - 2.0 * b * sdxy + b * b * sdxx, 0.0)
        if rss <= 1e-12 * syy:
            rss = 0.0  # an exact line: what is left is rounding in the sums
        sigma2 = rss / (n - 2) if n > 2 else math.nan
        phi = 0.0
        if rss > 0:
            # var(diff) = 2 sigma^2 (1 - phi) for AR(1) noise.
            phi = 1.0 - (sdd / (n - 1)) / (2.0 * rss / n)
            phi = min(max(phi, 0.0), 0.9)
        se = math.sqrt(max(sigma2, 1e-18) / vxx * (1 + phi) / (1 - phi))
        self._slope, self._slope_se, self._phi = b, se, phi
        h = self.remaining(step)
        self._gain_upper = (b + self._z * se) * h
        self._gain_lower = (b - self._z * se) * h
        if not self._plateau and self._gain_upper < self.min_gain:
            self._plateau = True
            return Event(step, "plateau", type(self).__name__, self._gain_upper,
                         location=float(self._points[0][0]),
                         details={"slope": b, "slope_se": se, "horizon": h})
        if self._plateau and self._gain_lower > self.min_gain:
            self._plateau = False
            return Event(step, "rise", type(self).__name__, self._gain_lower,
                         location=float(self._points[0][0]),
                         details={"slope": b, "slope_se": se, "horizon": h})
        return None
