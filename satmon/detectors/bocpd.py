"""Bayesian online changepoint detection with linear-regression segments (Adams & MacKay 2007)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import gammaln

from satmon.detectors.base import Detector, Event, check_number

# Sufficient statistics per run-length hypothesis, one row each:
# n, sum x, sum y, sum x^2, sum x*y, sum y^2 (x = step / time_scale, y = value / noise scale).
_N, _SX, _SY, _SXX, _SXY, _SYY = range(6)
#: Segment lengths whose log-gamma ratio is cached (about 0.3 MB).
_GAMMA_TABLE = 2048


def _row_posterior(row: tuple[float, ...], lam0: float, lam1: float,
                   b0: float) -> tuple[float, float, float, float, float, float]:
    """Normal-gamma posterior of one run-length hypothesis from its sufficient statistics.

    Returns ``(i00, i01, i11, m0, m1, bn)``: the inverse of the posterior precision of
    (intercept, slope), the posterior mean of both, and the gamma rate. Scalar arithmetic in
    the same order as the vectorised :meth:`LinearBOCPD._posterior`, so the bits agree.
    """
    n, sx, sy, sxx, sxy, syy = row
    l00 = n + lam0
    l11 = sxx + lam1
    det = l00 * l11 - sx * sx
    i00, i01, i11 = l11 / det, -sx / det, l00 / det
    m0 = i00 * sy + i01 * sxy
    m1 = i01 * sy + i11 * sxy
    r = syy - m0 * sy - m1 * sxy
    return i00, i01, i11, m0, m1, b0 + 0.5 * (r if r > 0.0 else 0.0)


class LinearBOCPD(Detector):
    """Run-length posterior over segments that are straight lines with unknown noise.

    Each segment is a Bayesian linear regression ``y = a + b x + e`` with a Normal-Inverse-Gamma
    prior (vague on the intercept, ``slope_prior_sd`` on the slope), so a smooth ramp is one
    segment and the bend into a plateau is a changepoint - a mean-shift model would cut a ramp
    into a staircase. Hypotheses are pruned by posterior mass: the least probable run lengths
    whose total mass is below ``prune_mass`` are dropped each step; ``max_hypotheses`` is only a
    memory safeguard.

    Values are divided by a noise scale: ``noise_sd`` when given, else the median absolute
    first difference of the first ``calibration`` values divided by 0.6745 * sqrt(2), after which
    detection starts.

    Parameters
    ----------
    hazard:
        Prior probability of a changepoint at each step (1 / expected segment length).
    time_scale:
        Steps per unit of x (the run's planned length is a good choice).
    slope_prior_sd:
        Prior sd of a segment's slope, in noise-sd units per ``time_scale`` steps.
    noise_sd:
        Known noise sd of the values, or None to estimate it (see above).
    calibration:
        Values used to estimate the noise scale when ``noise_sd`` is None.
    prune_mass:
        Total posterior mass that may be dropped per step.
    max_hypotheses:
        Hard bound on retained run lengths (memory safeguard).
    min_separation:
        Steps between the previous segment start and a new one for a ``changepoint`` event.

    Events: ``"changepoint"`` when the most probable run length resets, with ``location`` the
    estimated first step of the new segment.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> det = LinearBOCPD(time_scale=200, noise_sd=0.01)
    >>> ys = [min(0.005 * s, 0.5) + 0.01 * rng.standard_normal() for s in range(200)]
    >>> ev = [e for e in (det.update(y, s) for s, y in enumerate(ys)) if e is not None]
    >>> 95 <= ev[0].location <= 105
    True
    """

    _PARAMS = ("hazard", "time_scale", "slope_prior_sd", "noise_sd", "calibration",
               "prune_mass", "max_hypotheses", "min_separation")
    _STATE = ("stats", "logp", "starts", "scale", "offset", "calib", "map_start",
              "prev_map_start")

    def __init__(self, *, hazard: float = 1 / 200, time_scale: float = 500.0,
                 slope_prior_sd: float = 50.0, noise_sd: float | None = None,
                 calibration: int = 20, prune_mass: float = 1e-4,
                 max_hypotheses: int = 300, min_separation: int = 5) -> None:
        self.hazard = hazard
        self.time_scale = time_scale
        self.slope_prior_sd = slope_prior_sd
        self.noise_sd = noise_sd
        self.calibration = calibration
        self.prune_mass = prune_mass
        self.max_hypotheses = max_hypotheses
        self.min_separation = min_separation
        owner = type(self).__name__
        check_number(hazard, "hazard", owner, low=0, high=0.5, low_open=True)
        check_number(time_scale, "time_scale", owner, low=0, low_open=True)
        check_number(slope_prior_sd, "slope_prior_sd", owner, low=0, low_open=True)
        if noise_sd is not None:
            check_number(noise_sd, "noise_sd", owner, low=0, low_open=True)
        check_number(calibration, "calibration", owner, low=3, integer=True)
        check_number(prune_mass, "prune_mass", owner, low=0, high=0.5)
        check_number(max_hypotheses, "max_hypotheses", owner, low=2, integer=True)
        check_number(min_separation, "min_separation", owner, low=0, integer=True)
        self._a0 = 3.0
        self._b0 = 2.0  # prior mean of the noise variance: b0 / (a0 - 1) = 1 (noise units)
        self._lam = np.array([1e-6, 1.0 / slope_prior_sd ** 2])
        self._gamma_table: list[tuple[float, float, float]] = []
        self.reset()

    def _reset(self) -> None:
        # The running state lives in plain Python lists: with the few hypotheses usually
        # retained, scalar arithmetic beats numpy, whose every call costs ~1 us whatever the
        # array size. The arrays the read-only views and state_dict() use are built on demand.
        self._rows: list[tuple[float, ...]] = []
        self._lp: list[float] = []
        self._st: list[int] = []
        self._scale = float(self.noise_sd) if self.noise_sd is not None else math.nan
        self._offset = math.nan
        self._calib: list[list[float]] = []
        self._map_start = -1
        self._prev_map_start = -1

    @property
    def _stats(self) -> np.ndarray:
        return np.array(self._rows, dtype=float).reshape(-1, 6)

    @_stats.setter
    def _stats(self, value: np.ndarray) -> None:
        self._rows = [tuple(r) for r in np.asarray(value, dtype=float).reshape(-1, 6).tolist()]

    @property
    def _logp(self) -> np.ndarray:
        return np.array(self._lp, dtype=float)

    @_logp.setter
    def _logp(self, value: np.ndarray) -> None:
        self._lp = np.asarray(value, dtype=float).tolist()

    @property
    def _starts(self) -> np.ndarray:
        return np.array(self._st, dtype=np.int64)

    @_starts.setter
    def _starts(self, value: np.ndarray) -> None:
        self._st = np.asarray(value, dtype=np.int64).tolist()

    def _restore(self, key: str, value: Any) -> Any:
        v = super()._restore(key, value)
        if key == "stats":
            return np.asarray(v, dtype=float).reshape(-1, 6)
        if key == "logp":
            return np.asarray(v, dtype=float)
        if key == "starts":
            return np.asarray(v, dtype=np.int64)
        return v

    def _log_gamma_ratio(self, n: int) -> tuple[float, float, float]:
        """``(an, an + 0.5, lgamma(an + 0.5) - lgamma(an))`` for a segment of ``n`` points.

        Cached by n, computed with scipy's gammaln so the values are those of the array code.
        """
        table = self._gamma_table
        if n >= _GAMMA_TABLE:
            # Beyond the table (segments longer than _GAMMA_TABLE points, a handful of
            # hypotheses on a long run): computed each time, so memory stays bounded.
            an = self._a0 + 0.5 * float(n)
            ap = an + 0.5
            return an, ap, float(gammaln(ap) - gammaln(an))
        while len(table) <= n:
            an = self._a0 + 0.5 * float(len(table))
            ap = an + 0.5
            table.append((an, ap, float(gammaln(ap) - gammaln(an))))
        return table[n]

    # -- read-only views ---------------------------------------------------------------------
    @property
    def n_hypotheses(self) -> int:
        """Run-length hypotheses currently retained."""
        return int(self._logp.size)

    @property
    def segment_start(self) -> int:
        """First step of the most probable current segment (-1 before detection starts)."""
        return int(self._map_start)

    def run_length_posterior(self) -> dict[int, float]:
        """``{segment start step: posterior probability}`` over retained hypotheses."""
        p = np.exp(self._logp - self._logp.max()) if self._logp.size else self._logp
        p = p / p.sum() if p.size else p
        return {int(s): float(q) for s, q in zip(self._starts, p)}

    def p_changed_since(self, step: int) -> float:
        """Posterior probability that the current segment started after ``step``."""
        if not self._logp.size:
            return math.nan
        p = np.exp(self._logp - self._logp.max())
        return float(p[self._starts > step].sum() / p.sum())

    def segment_slope(self) -> tuple[float, float]:
        """Posterior mean and sd of the current segment's slope, per step, in value units.

        Mixed over run lengths by their posterior probability.
        """
        # Memoised on the identity of the log-probability list, which every update (and every
        # state load) replaces: callers ask several times per step, and the answer is a pure
        # function of that state. The memo holds the list, so its identity cannot be reused.
        memo = self.__dict__.get("_slope_memo")
        if memo is not None and memo[0] is self._lp:
            return memo[1]
        if not self._lp:
            out = (math.nan, math.nan)
        elif len(self._lp) <= 16:
            out = self._segment_slope_scalar()
        else:
            logp = self._logp
            p = np.exp(logp - logp.max())
            p /= p.sum()
            m, v = self._slope_posterior(self._stats)
            mean = float(np.sum(p * m))
            var = float(np.sum(p * (v + m * m)) - mean * mean)
            k = self._scale / self.time_scale
            out = (mean * k, math.sqrt(max(var, 0.0)) * k)
        self._slope_memo = (self._lp, out)
        return out

    # -- internals ---------------------------------------------------------------------------
    def _segment_slope_scalar(self) -> tuple[float, float]:
        # Most of the time only a few hypotheses are retained (median 2 on the synthetic suite),
        # where scalar Python beats numpy's per-call overhead; same formulas as _posterior.
        a0, b0 = self._a0, self._b0
        lam0, lam1 = float(self._lam[0]), float(self._lam[1])
        top = max(self._lp)
        weights = [math.exp(lp - top) for lp in self._lp]
        total = sum(weights)
        mean = second = 0.0
        for row, w in zip(self._rows, weights):
            _, _, i11, _, m1, bn = _row_posterior(row, lam0, lam1, b0)
            an = a0 + 0.5 * row[0]
            var = bn / an * i11 * (2 * an) / max(2 * an - 2, 1e-9)
            w /= total
            mean += w * m1
            second += w * (var + m1 * m1)
        k = self._scale / self.time_scale
        return mean * k, math.sqrt(max(second - mean * mean, 0.0)) * k

    def _posterior(self, st: np.ndarray):
        l00 = st[:, _N] + self._lam[0]
        l01 = st[:, _SX]
        l11 = st[:, _SXX] + self._lam[1]
        det = l00 * l11 - l01 * l01
        i00, i01, i11 = l11 / det, -l01 / det, l00 / det
        m0 = i00 * st[:, _SY] + i01 * st[:, _SXY]
        m1 = i01 * st[:, _SY] + i11 * st[:, _SXY]
        an = self._a0 + 0.5 * st[:, _N]
        bn = self._b0 + 0.5 * np.maximum(st[:, _SYY] - m0 * st[:, _SY] - m1 * st[:, _SXY], 0.0)
        return m0, m1, i00, i01, i11, an, bn

    def _slope_posterior(self, st: np.ndarray):
        _, m1, _, _, i11, an, bn = self._posterior(st)
        # Marginal of the slope is Student-t with 2 an dof; its variance is scale * dof/(dof-2).
        var = bn / an * i11 * (2 * an) / np.maximum(2 * an - 2, 1e-9)
        return m1, var

    def _update(self, value: float, step: int) -> Event | None:
        if math.isnan(self._offset):
            self._offset = value
        if math.isnan(self._scale):
            self._calib.append([float(step), value])
            if len(self._calib) < self.calibration:
                return None
            ys = np.array([c[1] for c in self._calib])
            mad = float(np.median(np.abs(np.diff(ys))))
            self._scale = mad / (0.6745 * math.sqrt(2)) if mad > 0 else max(
                float(np.std(ys)), 1e-6)
            pending = self._calib
            self._calib = []
            event = None
            for s, v in pending:
                event = self._step(int(s), float(v)) or event
            return event
        return self._step(step, value)

    def _step(self, step: int, value: float) -> Event | None:
        # Few hypotheses are retained (typically < 20) and every numpy call costs ~1 us whatever
        # the array size, so the arithmetic is scalar Python over the hypotheses, in the same
        # order as the vectorised formulas of _posterior (IEEE arithmetic, so the same bits).
        # exp, log, log1p and sums stay in numpy: its SIMD exp/log differ from the math
        # module's in the last bit, and numpy sums pairwise; keeping them keeps the output
        # bit-identical to the array implementation.
        x = step / self.time_scale
        y = (value - self._offset) / self._scale
        a0, b0 = self._a0, self._b0
        lam0, lam1 = float(self._lam[0]), float(self._lam[1])
        # Predictive log density under the prior (a changepoint now).
        s2 = b0 / a0 * (1.0 + 1.0 / lam0 + x * x / lam1)
        dof0 = 2 * a0
        cp_pred = (math.lgamma(a0 + 0.5) - math.lgamma(a0) - 0.5 * math.log(dof0 * math.pi * s2)
                   - (dof0 + 1) / 2 * math.log1p(y * y / (s2 * dof0)))
        xx, xy, yy = x * x, x * y, y * y
        stay = math.log1p(-self.hazard)
        pi = math.pi
        table = self._gamma_table
        rows: list[tuple[float, ...]] = []
        base: list[float] = []
        spread: list[float] = []
        tail: list[float] = []
        gamma: list[tuple[float, float, float]] = []
        beyond: list[int] = []
        for row, lp in zip(self._rows, self._lp):
            n, sx, sy, sxx, sxy, syy = row
            i00, i01, i11, m0, m1, bn = _row_posterior(row, lam0, lam1, b0)
            k = int(n)
            if k < len(table) or k < _GAMMA_TABLE:
                g = table[k] if k < len(table) else self._log_gamma_ratio(k)
            else:
                # Beyond the table: the ratio is filled in below, one vectorised call for all.
                an_k = self._a0 + 0.5 * float(k)
                g = (an_k, an_k + 0.5, math.nan)
                beyond.append(len(gamma))
            an = g[0]
            gamma.append(g)
            scale2 = bn / an * (1.0 + i00 + 2 * i01 * x + i11 * x * x)
            dof = 2 * an
            resid = y - m0 - m1 * x
            base.append(lp + stay)
            spread.append(dof * pi * scale2)
            tail.append(resid * resid / (scale2 * dof))
            rows.append((n + 1.0, sx + x, sy + y, sxx + xx, sxy + xy, syy + yy))
        if beyond:
            an_b = np.array([gamma[i][0] for i in beyond])
            ratio = (gammaln(an_b + 0.5) - gammaln(an_b)).tolist()
            for i, r in zip(beyond, ratio):
                gamma[i] = (gamma[i][0], gamma[i][1], r)
        if rows:
            logp = [b + (g[2] - 0.5 * u - g[1] * v)
                    for b, g, u, v in zip(base, gamma, np.log(spread).tolist(),
                                           np.log1p(tail).tolist())]
            # The retained log-probabilities are normalised, so the mass flowing into
            # "changepoint now" is the hazard.
            logp.append(math.log(self.hazard) + cp_pred)
        else:
            logp = [cp_pred]
        rows.append((1.0, x, y, xx, xy, yy))
        starts = self._st + [step]
        arr = np.array(logp)
        top = max(logp)
        arr -= top + math.log(np.exp(arr - top).sum())
        # Prune by mass: hypotheses below prune_mass / count carry less than prune_mass in
        # total; the cap is a memory safeguard.
        size = len(logp)
        if size > 2:
            p = np.exp(arr)
            keep = p >= self.prune_mass / size
            kept = int(np.count_nonzero(keep))
            if kept > self.max_hypotheses:
                keep[:] = False
                keep[np.argsort(p)[-self.max_hypotheses:]] = True
                kept = self.max_hypotheses
            if kept < size:
                arr = arr[keep]
                arr -= math.log(p[keep].sum())
                idx = np.flatnonzero(keep).tolist()
                rows = [rows[i] for i in idx]
                starts = [starts[i] for i in idx]
        logp = arr.tolist()
        self._lp, self._rows, self._st = logp, rows, starts
        prev = self._map_start
        top = max(logp)
        i_map = logp.index(top)
        self._map_start = starts[i_map]
        if (prev >= 0 and self._map_start > prev
                and self._map_start - max(prev, self._prev_map_start) >= self.min_separation
                and self._map_start < step):
            self._prev_map_start = self._map_start
            return Event(step, "changepoint", type(self).__name__,
                         float(math.exp(top)), location=float(self._map_start),
                         details={"previous_segment_start": float(prev),
                                  "n_hypotheses": float(len(logp))})
        return None
