"""Saturation-curve fits: parametric learning-curve families, BIC weights, t_sat forecasts.

Families (``t`` = step / ``time_scale``; every family but pow3 has an identified asymptote):

``exp3``      ``c - a exp(-b t)``
``hill4``     ``r0 + (A - r0) / (1 + (t_mid / t)^B)`` (a sigmoid in log-step)
``weibull4``  ``A - (A - r0) exp(-(k t)^d)``
``pow3``      ``c - a t^(-alpha)``: its asymptote is rarely identified, so it only vetoes a
              saturation claim (when it fits clearly better and still predicts a gain); it is
              fitted only when the saturating families make that claim.

Fits use scipy ``least_squares`` (trust-region reflective with bounds, soft-L1 loss so
outliers do not drag the curve), warm-started from the previous fit. A fit whose asymptote sits
on its bound is rejected: the data did not identify it. Families are weighted by BIC. Intervals
come from a residual block bootstrap of every accepted family, mixed across families by weight,
so they include the between-family spread (a single fit's covariance is overconfident); by
default the within-family spread comes from each fit's covariance widened by a fixed factor
instead of bootstrap refits (same idea, no refits: the fits dominate the monitor's cost). The
paper's t_sat is forecast by simulation: observed values so far, then sampled fitted curves plus
noise to the run's last step, and the exact rule applied to each path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from satmon.results import Result, format_number, json_safe, text_table

FAMILIES = ("exp3", "hill4", "weibull4", "pow3")
SATURATING_FAMILIES = ("exp3", "hill4", "weibull4")


def _exp3(p, t):
    c, a, b = p
    return c - a * np.exp(-b * t)


def _hill4(p, t):
    r0, big_a, t_mid, big_b = p
    return r0 + (big_a - r0) / (1.0 + (t_mid / t) ** big_b)


def _weibull4(p, t):
    big_a, r0, k, d = p
    return big_a - (big_a - r0) * np.exp(-((k * t) ** d))


def _pow3(p, t):
    c, a, alpha = p
    return c - a * t ** (-alpha)


# Analytic Jacobians (one column per parameter): a finite-difference Jacobian costs k + 1
# function evaluations per iteration and was most of the fitting time.
def _exp3_jac(p, t):
    c, a, b = p
    e = np.exp(-b * t)
    return np.column_stack([np.ones_like(t), -e, a * t * e])


def _hill4_jac(p, t):
    r0, big_a, t_mid, big_b = p
    ratio = t_mid / t
    u = ratio ** big_b
    inv = 1.0 / (1.0 + u)
    common = -(big_a - r0) * inv * inv * u
    return np.column_stack([u * inv, inv, common * big_b / t_mid, common * np.log(ratio)])


def _weibull4_jac(p, t):
    big_a, r0, k, d = p
    kt = k * t
    w = kt ** d
    e = np.exp(-w)
    amp = (big_a - r0) * e * w
    return np.column_stack([1.0 - e, e, amp * d / k, amp * np.log(kt)])


def _pow3_jac(p, t):
    c, a, alpha = p
    tp = t ** (-alpha)
    return np.column_stack([np.ones_like(t), -tp, a * tp * np.log(t)])


_FUNCS = {"exp3": _exp3, "hill4": _hill4, "weibull4": _weibull4, "pow3": _pow3}
_JACS = {"exp3": _exp3_jac, "hill4": _hill4_jac, "weibull4": _weibull4_jac, "pow3": _pow3_jac}
# Index of the asymptote among each family's parameters.
_ASYMPTOTE = {"exp3": 0, "hill4": 1, "weibull4": 0, "pow3": 0}


def curve_value(family: str, params: Sequence[float], steps: Any, time_scale: float) -> np.ndarray:
    """Evaluate a fitted family at ``steps``."""
    if family not in _FUNCS:
        raise ValueError(f"Unknown curve family {family!r}; choose one of {FAMILIES}.")
    t = np.maximum(np.asarray(steps, dtype=float), 0.5) / time_scale
    return _FUNCS[family](np.asarray(params, dtype=float), t)


@dataclass(frozen=True)
class CurveFit:
    """One family fitted to one curve.

    Attributes
    ----------
    family: family name.
    params: fitted parameters (family order, see the module docstring).
    asymptote: the curve's limit as t grows.
    rss: residual sum of squares (on the data the fit saw).
    bic: Bayesian information criterion ``n log(rss/n) + k log n``.
    n: data points fitted.
    accepted: False when the fit failed or its asymptote sits on a bound.
    note: why a fit was rejected.
    time_scale: steps per unit of the fit's t.
    covariance: Gauss-Newton covariance of the parameters ``s^2 (J'J)^-1`` at the solution
        (row-major, ``k * k`` values; empty when singular or not computed).
    lower, upper: the parameter bounds the fit used.
    """

    family: str
    params: tuple[float, ...]
    asymptote: float
    rss: float
    bic: float
    n: int
    accepted: bool
    note: str = ""
    time_scale: float = 1.0
    covariance: tuple[float, ...] = ()
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()

    def predict(self, steps: Any) -> np.ndarray:
        """The fitted curve at ``steps``."""
        return curve_value(self.family, self.params, steps, self.time_scale)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"family": self.family, "params": list(self.params),
                          "asymptote": self.asymptote, "rss": self.rss, "bic": self.bic,
                          "n": self.n, "accepted": self.accepted, "note": self.note,
                          "time_scale": self.time_scale})


def _bounds_and_start(family: str, t: np.ndarray, y: np.ndarray, lo: float, hi: float):
    """Parameter bounds and a data-driven starting point for one family."""
    y0 = float(np.mean(y[: max(3, len(y) // 10)]))
    y1 = float(np.mean(y[-max(3, len(y) // 10):]))
    span = max(hi - lo, 1e-6)
    tmid = float(np.median(t))
    if family == "exp3":
        lb, ub = [lo, -span * 4, 1e-3], [hi, span * 4, 2e3]
        x0 = [y1, y1 - y0, 3.0 / max(t[-1], 1e-3)]
    elif family == "hill4":
        lb, ub = [lo - span, lo, 1e-4, 0.2], [hi, hi, 1e3, 20.0]
        x0 = [y0, y1, tmid, 2.0]
    elif family == "weibull4":
        lb, ub = [lo, lo - span, 1e-3, 0.2], [hi, hi, 1e3, 10.0]
        x0 = [y1, y0, 1.0 / max(tmid, 1e-3), 1.5]
    else:  # pow3
        lb, ub = [lo, -span * 4, 1e-3], [hi + 4 * span, span * 4, 5.0]
        x0 = [y1, (y1 - y0) * max(t[0], 1e-3) ** 0.5, 0.5]
    x0 = np.clip(np.asarray(x0, float), np.asarray(lb) + 1e-9, np.asarray(ub) - 1e-9)
    return np.asarray(lb, float), np.asarray(ub, float), x0


def _grid_start(family: str, t: np.ndarray, y: np.ndarray, lb: np.ndarray,
                ub: np.ndarray) -> np.ndarray | None:
    """A cold start from a grid over the nonlinear parameters (None when nothing fits).

    Every family is ``u + v * b(t; theta)`` for a shape ``b`` set by its nonlinear parameters
    ``theta`` (exp3: b; pow3: alpha; hill4: t_mid, B; weibull4: k, d), so for each ``theta``
    on a small log-spaced grid the best ``u, v`` are a closed-form linear regression. The
    candidate with the least squared error (parameters clipped to the bounds) starts the
    robust fit: it lands near the optimum, where the default start can spend 100+
    evaluations on a poorly scaled family (pow3 most of all).
    """
    t_lo, t_hi = float(t[0]), float(t[-1])
    if family == "exp3":
        grid = [np.geomspace(0.3 / t_hi, 30.0 / max(t_lo, 1e-3), 16)]
    elif family == "pow3":
        grid = [np.geomspace(0.02, 4.0, 16)]
    elif family == "hill4":
        tm, bb = np.meshgrid(np.geomspace(max(t_lo, 1e-3), 3.0 * t_hi, 8),
                             np.array([0.5, 1.0, 2.0, 4.0]))
        grid = [tm.ravel(), bb.ravel()]
    else:  # weibull4
        kk, dd = np.meshgrid(1.0 / np.geomspace(max(t_lo, 1e-3), 3.0 * t_hi, 8),
                             np.array([0.5, 1.0, 2.0, 4.0]))
        grid = [kk.ravel(), dd.ravel()]
    ia = 1 if family in ("exp3", "pow3") else 2
    grid = [np.clip(g, lb[ia + i] * 1.0001 + 1e-12, ub[ia + i] * 0.9999)
            for i, g in enumerate(grid)]
    with np.errstate(all="ignore"):
        # The shape b is the family itself with its linear part set to (u, v) = (0, 1):
        # exp3 / pow3 are c - a b (c = 0, a = -1), hill4 / weibull4 put 0 and 1 at the ends.
        unit = [0.0, -1.0] if family in ("exp3", "pow3") else [0.0, 1.0]
        b = _FUNCS[family](tuple(unit) + tuple(g[:, None] for g in grid), t)
        # y ~ u + v b, one regression per grid row.
        bc = b - b.mean(axis=1, keepdims=True)
        v = (bc @ (y - y.mean())) / np.maximum(np.einsum("ij,ij->i", bc, bc), 1e-300)
        u = y.mean() - v * b.mean(axis=1)
        if family in ("exp3", "pow3"):  # c - a b: c = u, a = -v
            lin = [u, -v]
        elif family == "hill4":  # r0 (1 - s) + A s: r0 = u, A = u + v
            lin = [u, u + v]
        else:  # A (1 - e) + r0 e: A = u, r0 = u + v
            lin = [u, u + v]
        cand = np.column_stack(lin + grid)
        cand = np.clip(cand, lb + 1e-9, ub - 1e-9)
        pred = _FUNCS[family](tuple(cand.T[:, :, None]), t[None, :])
        sse = np.sum((pred - y) ** 2, axis=1)
    sse = np.where(np.isfinite(sse), sse, np.inf)
    if not np.isfinite(sse).any():
        return None
    return cand[int(np.argmin(sse))]


def fit_family(family: str, steps: Any, values: Any, *, time_scale: float,
               asymptote_bounds: tuple[float, float], x0: Sequence[float] | None = None,
               f_scale: float = 0.02, max_nfev: int = 200) -> CurveFit:
    """Fit one family by bounded, soft-L1 least squares.

    Parameters
    ----------
    family:
        One of :data:`FAMILIES`.
    steps, values:
        The curve (finite values).
    time_scale:
        Steps per unit of t (the run's planned length).
    asymptote_bounds:
        ``(low, high)`` allowed for the asymptote; a fit ending within 1% of the range from
        either bound is rejected.
    x0:
        Warm start (e.g. the previous fit's parameters); ignored when outside the bounds.
    f_scale:
        Residual size at which the soft-L1 loss turns linear (about the noise sd).
    max_nfev:
        Evaluation budget of the optimiser.
    """
    if family not in _FUNCS:
        raise ValueError(f"Unknown curve family {family!r}; choose one of {FAMILIES}.")
    s = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    lo, hi = map(float, asymptote_bounds)
    if not hi > lo:
        raise ValueError(f"'asymptote_bounds' must be (low, high) with low < high. "
                         f"Got {asymptote_bounds!r}.")
    t = np.maximum(s, 0.5) / time_scale
    lb, ub, start = _bounds_and_start(family, t, y, lo, hi)
    warm = False
    if x0 is not None:
        w = np.asarray(x0, dtype=float)
        if w.shape == start.shape and np.all(w > lb) and np.all(w < ub):
            start, warm = w, True
    if not warm:
        grid = _grid_start(family, t, y, lb, ub)
        if grid is not None:
            start = grid
    func = _FUNCS[family]
    jac_f = _JACS[family]
    k = start.size

    def resid(p):
        return func(p, t) - y

    def jac(p):
        return jac_f(p, t)

    try:
        with np.errstate(all="ignore"):
            sol = least_squares(resid, start, jac=jac, bounds=(lb, ub), method="trf",
                                loss="soft_l1", f_scale=f_scale, max_nfev=max_nfev,
                                ftol=1e-6, xtol=1e-6)
            p = sol.x
            r = resid(p)
            rss = float(np.sum(r * r))
            ok = bool(np.all(np.isfinite(r)))
            cov: tuple[float, ...] = ()
            if ok and y.size > k:
                j = jac(p)
                jtj = j.T @ j
                if np.all(np.isfinite(jtj)) and np.linalg.cond(jtj) < 1e14:
                    c = np.linalg.inv(jtj) * (rss / (y.size - k))
                    if np.all(np.isfinite(c)):
                        cov = tuple(float(v) for v in c.ravel())
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        # A degenerate start or data.
        return CurveFit(family, tuple(start.tolist()), math.nan, math.inf, math.inf, y.size,
                        False, f"fit failed: {exc}", time_scale)
    n = y.size
    bic = n * math.log(max(rss, 1e-300) / n) + k * math.log(n) if ok else math.inf
    ia = _ASYMPTOTE[family]
    asym = float(p[ia])
    note = ""
    accepted = ok
    if not ok:
        note = "non-finite residuals"
    elif family != "pow3":
        tol = 0.01 * (ub[ia] - lb[ia])
        if asym - lb[ia] < tol or ub[ia] - asym < tol:
            accepted, note = False, f"asymptote {asym:.4g} on its bound [{lb[ia]:.4g}, {ub[ia]:.4g}]"
    return CurveFit(family, tuple(float(v) for v in p), asym, rss, bic, n, accepted, note,
                    time_scale, cov, tuple(float(v) for v in lb), tuple(float(v) for v in ub))


def bic_weights(fits: Mapping[str, CurveFit]) -> dict[str, float]:
    """Normalised ``exp(-BIC/2)`` weights over accepted saturating fits (pow3 excluded)."""
    ok = {k: f.bic for k, f in fits.items() if f.accepted and k != "pow3" and math.isfinite(f.bic)}
    if not ok:
        return {}
    best = min(ok.values())
    raw = {k: math.exp(-0.5 * (b - best)) for k, b in ok.items()}
    tot = sum(raw.values())
    return {k: v / tot for k, v in raw.items()}


def paper_t_sat_paths(observed: np.ndarray, future: np.ndarray, first_future_step: int,
                      first_step: int, eps: float, end_margin: int) -> np.ndarray:
    """The paper's t_sat of many paths sharing an observed prefix (vectorised).

    ``observed`` is the raw curve at consecutive steps ``first_step ..``; ``future`` has one row
    per path for steps ``first_future_step .. T``. Returns one t_sat per path (inf if none).
    """
    n_paths = future.shape[0]
    full = np.hstack([np.broadcast_to(observed, (n_paths, observed.size)), future])
    last = first_future_step + future.shape[1] - 1 if future.shape[1] else \
        first_step + observed.size - 1
    peak = np.max(full, axis=1, keepdims=True)
    thr = eps * peak
    ok = full >= thr
    n_allowed = last - end_margin - first_step + 1
    if n_allowed <= 0:
        return np.full(n_paths, math.inf)
    ok = ok[:, :n_allowed]
    has = ok.any(axis=1)
    idx = np.argmax(ok, axis=1)
    return np.where(has, first_step + idx, math.inf).astype(float)


def _rule_on_grid(paths: np.ndarray, grid: np.ndarray, eps: float, end_margin: int) -> np.ndarray:
    """The paper's rule on paths sampled at the (increasing) steps in ``grid``."""
    peak = paths.max(axis=1, keepdims=True)
    ok = (paths >= eps * peak) & (grid <= grid[-1] - end_margin)
    has = ok.any(axis=1)
    return np.where(has, grid[np.argmax(ok, axis=1)], math.inf).astype(float)


class SaturationForecast(Result):
    """The ensemble's answer: asymptote, forecast at the last step, t_sat estimate, weights."""

    def __init__(self, *, step: int, total_steps: int, fits: Mapping[str, CurveFit],
                 weights: Mapping[str, float], asymptote: float,
                 asymptote_interval: tuple[float, float], forecast_final: float,
                 forecast_interval: tuple[float, float], current_fit: float,
                 remaining_gain: float, remaining_gain_interval: tuple[float, float],
                 p_saturated_by_now: float, t_sat_estimate: float,
                 t_sat_interval: tuple[float, float], vetoed: bool, noise_sd: float,
                 t_sat_raw_estimate: float = math.nan,
                 t_sat_raw_interval: tuple[float, float] = (math.nan, math.nan),
                 t_sat_samples: Sequence[float] = (), notes: Sequence[str] = ()) -> None:
        self.step = step
        self.total_steps = total_steps
        self.fits = dict(fits)
        self.weights = dict(weights)
        self.asymptote = asymptote
        self.asymptote_interval = asymptote_interval
        self.forecast_final = forecast_final
        self.forecast_interval = forecast_interval
        self.current_fit = current_fit
        self.remaining_gain = remaining_gain
        self.remaining_gain_interval = remaining_gain_interval
        self.p_saturated_by_now = p_saturated_by_now
        self.t_sat_estimate = t_sat_estimate
        self.t_sat_interval = t_sat_interval
        self.vetoed = vetoed
        self.t_sat_raw_estimate = t_sat_raw_estimate
        self.t_sat_raw_interval = t_sat_raw_interval
        self.t_sat_samples = tuple(t_sat_samples)
        self.noise_sd = noise_sd
        self.notes = tuple(notes)

    @property
    def usable(self) -> bool:
        """True when at least one saturating family was accepted."""
        return bool(self.weights)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "step": self.step, "total_steps": self.total_steps,
            "fits": {k: f.to_dict() for k, f in self.fits.items()},
            "weights": self.weights, "asymptote": self.asymptote,
            "asymptote_interval": list(self.asymptote_interval),
            "forecast_final": self.forecast_final,
            "forecast_interval": list(self.forecast_interval),
            "current_fit": self.current_fit, "remaining_gain": self.remaining_gain,
            "remaining_gain_interval": list(self.remaining_gain_interval),
            "p_saturated_by_now": self.p_saturated_by_now,
            "t_sat_estimate": self.t_sat_estimate, "t_sat_interval": list(self.t_sat_interval),
            "t_sat_raw_estimate": self.t_sat_raw_estimate,
            "t_sat_raw_interval": list(self.t_sat_raw_interval),
            "vetoed": self.vetoed, "noise_sd": self.noise_sd, "notes": list(self.notes)})

    def summary(self) -> str:
        f = format_number
        head = (f"Saturation forecast at step {self.step} of {self.total_steps}: asymptote "
                f"{f(self.asymptote)} [{f(self.asymptote_interval[0])}, "
                f"{f(self.asymptote_interval[1])}], forecast at T {f(self.forecast_final)}, "
                f"t_sat {f(self.t_sat_estimate)} [{f(self.t_sat_interval[0])}, "
                f"{f(self.t_sat_interval[1])}], P(saturated by now) "
                f"{f(self.p_saturated_by_now)}{' (pow3 veto)' if self.vetoed else ''}")
        rows = [[k, "yes" if fit.accepted else "no", f(self.weights.get(k, 0.0)), f(fit.asymptote),
                 f(fit.bic), fit.note or "-"] for k, fit in self.fits.items()]
        lines = [head, text_table(["family", "accepted", "weight", "asymptote", "BIC", "note"],
                                  rows)]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _binned(steps: np.ndarray, values: np.ndarray, max_points: int):
    if steps.size <= max_points:
        return steps.astype(float), values
    edges = np.linspace(0, steps.size, max_points + 1).astype(int)
    s = np.add.reduceat(steps.astype(float), edges[:-1]) / np.diff(edges)
    v = np.add.reduceat(values, edges[:-1]) / np.diff(edges)
    return s, v


#: Parametric intervals widen the Gauss-Newton covariance by this factor (in sd units): the
#: covariance of a single fit ignores misspecification and autocorrelated noise, and is
#: overconfident on its own (DESIGN.md section 3); the between-family mixture adds the rest.
COVARIANCE_INFLATION = 2.0


def _parametric_draws(fit: CurveFit, size: int, rng: np.random.Generator) -> np.ndarray:
    """Parameter sets drawn from N(params, inflated covariance), clipped to the fit's bounds."""
    p = np.asarray(fit.params, dtype=float)
    k = p.size
    if len(fit.covariance) != k * k:
        return np.broadcast_to(p, (size, k)).copy()
    cov = np.asarray(fit.covariance, dtype=float).reshape(k, k)
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))
    draws = p + COVARIANCE_INFLATION * rng.standard_normal((size, k)) @ root.T
    if fit.lower and fit.upper:
        draws = np.clip(draws, fit.lower, fit.upper)
    draws[0] = p  # the point fit is always one of the paths
    return draws


def _bootstrap_draws(fit: CurveFit, bs: np.ndarray, by: np.ndarray, size: int, bootstrap: int,
                     rng: np.random.Generator, asymptote_bounds: tuple[float, float],
                     noise: float) -> np.ndarray:
    """Parameter sets from residual block-bootstrap refits (AR structure kept by blocks)."""
    base = fit.predict(bs)
    res = by - base
    params = [fit.params]
    block = max(1, min(5, res.size // 10))
    for _ in range(bootstrap):
        starts = rng.integers(0, res.size - block + 1, size=res.size // block + 1)
        boot = np.concatenate([res[i:i + block] for i in starts])[: res.size]
        bf = fit_family(fit.family, bs, base + boot, time_scale=fit.time_scale,
                        asymptote_bounds=asymptote_bounds, x0=fit.params,
                        f_scale=max(noise, 1e-4), max_nfev=40)
        if bf.accepted:
            params.append(bf.params)
    arr = np.asarray(params, dtype=float)
    return arr[rng.integers(len(arr), size=size)]


def forecast_saturation(
    steps: Any, values: Any, *, total_steps: int, families: Sequence[str] = FAMILIES,
    eps: float = 0.99, end_margin: int = 50, asymptote_bounds: tuple[float, float] | None = None,
    bootstrap: int = 0, n_paths: int = 64, max_points: int = 40,
    warm_start: Mapping[str, Sequence[float]] | None = None, seed: int = 0,
    veto_margin: float = 2.0, min_gain: float = 0.01,
) -> SaturationForecast:
    """Fit the families to a training-reward curve and forecast saturation.

    Parameters
    ----------
    steps, values:
        The raw curve so far (finite values, increasing steps).
    total_steps:
        The run's planned last step T (the horizon of the forecast and of the t_sat rule).
    families:
        Families to fit (any of :data:`FAMILIES`).
    eps, end_margin:
        The paper's t_sat rule parameters.
    asymptote_bounds:
        Allowed asymptote range; default: the data range widened by its span (unbounded proxy
        rewards are allowed), clipped to [0, 1] margins only when the data lie in [0, 1].
    bootstrap:
        Residual block-bootstrap refits per accepted family. 0 (default): parameters are drawn
        from each fit's Gauss-Newton covariance widened by :data:`COVARIANCE_INFLATION`, which
        costs no refits.
    n_paths:
        Simulated future paths for the t_sat distribution.
    max_points:
        The curve is averaged into at most this many bins before fitting (speed).
    warm_start:
        ``{family: params}`` from a previous fit.
    seed:
        Seed of the bootstrap and simulation.
    veto_margin:
        pow3 vetoes a saturation claim when its BIC beats every saturating family by this much
        and it predicts a gain above ``min_gain`` by T. pow3 is fitted only when there is a
        claim to veto (P(saturated by now) >= 0.5 from the saturating families).
    min_gain:
        Remaining gain (value units) that still counts as "not saturated".

    Returns
    -------
    A :class:`SaturationForecast`.
    """
    s = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"'steps' and 'values' must be 1-d of equal length. "
                         f"Got {s.shape} and {y.shape}.")
    if s.size < 8:
        raise ValueError(f"forecast_saturation needs at least 8 points. Got {s.size}.")
    unknown = [f for f in families if f not in _FUNCS]
    if unknown:
        raise ValueError(f"Unknown curve families {unknown}; choose from {FAMILIES}.")
    if not np.all(np.isfinite(y)):
        raise ValueError("forecast_saturation needs finite values; clean the curve first "
                         "(satmon.Series.from_raw).")
    now = int(s[-1])
    total = int(max(total_steps, now))
    time_scale = float(max(total, 1))
    lo_d, hi_d = float(np.min(y)), float(np.max(y))
    span = max(hi_d - lo_d, 1e-3)
    if asymptote_bounds is None:
        lo, hi = lo_d - span, hi_d + span
        if lo_d >= 0 and hi_d <= 1:
            # A [0, 1] reward may still climb to 1; a bound just above 1 keeps "reaches 1"
            # identifiable, while a bound at the data maximum would reject every rising curve.
            lo, hi = -0.05, 1.05
        asymptote_bounds = (lo, hi)
    bs, by = _binned(s, y, max_points)
    # Noise sd from first differences of the raw curve (robust, trend-free).
    d = np.diff(y)
    noise = float(np.median(np.abs(d - np.median(d))) / 0.6745 / math.sqrt(2)) if d.size else 0.0
    noise = max(noise, 1e-4)
    fits: dict[str, CurveFit] = {}
    warm = warm_start or {}
    f_scale = max(noise / math.sqrt(max(s.size / bs.size, 1)), 1e-4)
    for fam in families:
        if fam != "pow3":
            fits[fam] = fit_family(fam, bs, by, time_scale=time_scale,
                                   asymptote_bounds=asymptote_bounds, x0=warm.get(fam),
                                   f_scale=f_scale)
    weights = bic_weights(fits)
    notes = [f"{k}: {f.note}" for k, f in fits.items() if not f.accepted and f.note]
    rng = np.random.default_rng(seed)
    nan2 = (math.nan, math.nan)
    if not weights:
        return SaturationForecast(
            step=now, total_steps=total, fits=fits, weights={}, asymptote=math.nan,
            asymptote_interval=nan2, forecast_final=math.nan, forecast_interval=nan2,
            current_fit=math.nan, remaining_gain=math.nan, remaining_gain_interval=nan2,
            p_saturated_by_now=math.nan, t_sat_estimate=math.nan, t_sat_interval=nan2,
            vetoed=False, noise_sd=noise, notes=notes + ["no saturating family accepted"])
    fams = list(weights)
    probs = np.array([weights[f] for f in fams])
    choice = rng.choice(len(fams), size=n_paths, p=probs)
    first = int(s[0])
    # Paths live on a grid of at most ~2,000 steps (a stride > 1 on long runs): t_sat is then
    # resolved to the stride, and the cost no longer grows with the run's length.
    stride = max(1, int(math.ceil((total - first + 1) / 2000)))
    grid = np.arange(first, total + 1, stride, dtype=float)
    if grid[-1] != total:
        grid = np.append(grid, float(total))
    i_now = int(np.searchsorted(grid, now, side="right")) - 1
    n_fut = grid.size - i_now - 1
    t_grid = np.maximum(grid, 0.5) / time_scale
    paths = np.empty((n_paths, grid.size))
    asyms = np.empty(n_paths)
    for fi, fam in enumerate(fams):
        idx = np.flatnonzero(choice == fi)
        if not idx.size:
            continue
        if bootstrap > 0:
            draws = _bootstrap_draws(fits[fam], bs, by, idx.size, bootstrap, rng,
                                     asymptote_bounds, noise)
        else:
            draws = _parametric_draws(fits[fam], idx.size, rng)
        with np.errstate(all="ignore"):
            vals = _FUNCS[fam](tuple(draws.T[:, :, None]), t_grid[None, :])
        finite = np.isfinite(vals)
        # A draw can overflow; its path falls back to the point fit (computed only then).
        paths[idx] = vals if finite.all() else np.where(finite, vals,
                                                        fits[fam].predict(grid)[None, :])
        asyms[idx] = draws[:, _ASYMPTOTE[fam]]
    curves_now = paths[:, i_now]
    finals = paths[:, -1]
    gains = finals - curves_now
    # The clean-curve t_sat of each sampled curve: the saturation of the underlying trend.
    tsat_clean = _rule_on_grid(paths, grid, eps, end_margin)
    # The raw-curve t_sat the paper would compute: observed values so far, then sampled curves
    # plus noise with the fit's residual sd (gaps in the observed steps are interpolated).
    best = max(weights, key=weights.get)  # type: ignore[arg-type]
    raw_resid = y - fits[best].predict(s)
    sd_raw = float(np.std(raw_resid)) if raw_resid.size > 2 else noise
    future = paths[:, i_now + 1:] + sd_raw * rng.standard_normal((n_paths, n_fut))
    if stride == 1:
        obs = np.interp(np.arange(first, now + 1), s, y)
        tsat_raw = paper_t_sat_paths(obs, future, now + 1, first, eps, end_margin)
    else:
        # On a strided grid the raw observed prefix is read at the grid steps.
        obs = np.interp(grid[: i_now + 1], s, y)
        tsat_raw = _rule_on_grid(np.hstack([np.broadcast_to(obs, (n_paths, obs.size)), future]),
                                 grid, eps, end_margin)
    p_sat_now = float(np.mean(tsat_clean <= now))

    def centre(ts: np.ndarray) -> tuple[float, tuple[float, float]]:
        # Order statistics, not interpolating quantiles: "never" (inf) is a legitimate value.
        srt = np.sort(ts)
        pick = lambda q: float(srt[min(int(q * srt.size), srt.size - 1)])  # noqa: E731
        return pick(0.5), (pick(0.1), pick(0.9))

    t_est, t_int = centre(tsat_clean)
    t_raw, t_raw_int = centre(tsat_raw)
    vetoed = False
    if "pow3" in families and p_sat_now < 0.5:
        # pow3 only vetoes a saturation claim; without one there is nothing to veto, and its
        # fit (the slowest of the four to converge) is skipped.
        notes.append("pow3: not fitted (no saturation claim to veto)")
    elif "pow3" in families:
        pw = fits["pow3"] = fit_family("pow3", bs, by, time_scale=time_scale,
                                       asymptote_bounds=asymptote_bounds, x0=warm.get("pow3"),
                                       f_scale=f_scale)
        if pw.accepted:
            best_sat = min(fits[k].bic for k in weights)
            pow_gain = float(pw.predict([total])[0] - pw.predict([now])[0])
            vetoed = pw.bic < best_sat - veto_margin and pow_gain > min_gain
    asym = float(sum(weights[k] * fits[k].asymptote for k in weights))
    final_point = float(sum(weights[k] * fits[k].predict([total])[0] for k in weights))
    cur_point = float(sum(weights[k] * fits[k].predict([now])[0] for k in weights))
    q = lambda a: (float(np.quantile(a, 0.05)), float(np.quantile(a, 0.95)))  # noqa: E731
    return SaturationForecast(
        step=now, total_steps=total, fits=fits, weights=weights, asymptote=asym,
        asymptote_interval=q(asyms), forecast_final=final_point, forecast_interval=q(finals),
        current_fit=cur_point, remaining_gain=final_point - cur_point,
        remaining_gain_interval=q(gains), p_saturated_by_now=p_sat_now, t_sat_estimate=t_est,
        t_sat_interval=t_int, t_sat_raw_estimate=t_raw, t_sat_raw_interval=t_raw_int,
        t_sat_samples=tuple(np.sort(tsat_clean).tolist()), vetoed=vetoed,
        noise_sd=sd_raw, notes=notes)
