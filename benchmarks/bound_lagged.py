"""A held-out-only Bayes reference frontier for the *lagged* synthetic family.

Run from the repository root:

    python benchmarks/bound_lagged.py              # all 1,002 runs of make_lagged_suite(1002)
    python benchmarks/bound_lagged.py --runs 120   # first 120 runs (every regime, 30 each)
    python benchmarks/bound_lagged.py --validate 0 # skip the doubled-node check (12 runs)

It prints tables and asserts nothing. numpy/scipy only; one process unless ``--workers N``
(a process pool for the sweep). ``best_saved_at()`` returns the best point for another script
(bench_monitor's Table F); importing the module runs nothing.

Question. How much compute could any monitor save on ``lagged_memorizing`` runs of
``satmon.datasets.make_lagged_suite(1002, seed=0)`` at a false-halt rate <= 1%, when it has only
the held-out evaluations to go by? This is the lagged-family counterpart of
``benchmarks/bound_memorizing.py`` (its ``blind`` variant); definitions, tables and the
validation follow that script.

Reference policy. At every held-out evaluation t (the run's eval steps 0, K, 2K, ...) an
observer computes

    P_t = P(remaining held-out gain after t > 0.01 | held-out evaluations up to t)

and halts at the first evaluation with ``t >= max(50, step of the 6th evaluation)`` (the
monitor's warm-up) and ``P_t <= alpha``; sweeping alpha gives a frontier. The observer knows the
generator (``satmon.datasets.make_lagged_run``) exactly: the four regimes in equal shares, each
regime's held-out model and the prior of every parameter, T, the evaluation interval and the
held-out n. It does *not* see training: the progress parameters beta and t_sat, which shape
held-out through p(t) = 1 - exp(-(t / s)**beta) with p(t_sat) = 0.99, are integrated over like
the rest. With h(t) the noiseless held-out accuracy (m0 ~ U(0.05, 0.6) in every regime):

    lagged_generalizing     m0 + gain * p(t - lag)**rho     (gain, lag, rho, beta, t_sat)
    lagged_memorizing       m0 + drift * t / T              (drift in [-0.02, 0.005])
    delayed_generalization  m0 + gain * sigmoid((t - onset - 2 width) / width)
                                                            (gain, onset, width)
    lagged_collapse         m0 + gain * p(t) - drop * sigmoid((t - t_c) / width)
                                                            (gain, drop, t_c, width, beta, t_sat)

The remaining gain of a parameter node at t is max_{s >= t} h(s) - h(t) over integer steps,
with h clipped to [0, 1] as the generator does. Only the collapse curve can leave [0, 1] (the
others stay in [0.03, 0.9]); for it the clip at 0 is applied exactly per node and m0 (see
``m0_clip_threshold``). The generalizing and delayed curves are non-decreasing, so their future
maximum is h(T); the collapse curve's is found on a step grid (every step when T <= 128, else
33 grid points plus a golden-section search of the peak to the integer step), which assumes the
curve has one peak at the grid's resolution (a later bump is at most gain * (1 - p(t_c)) <= 0.0015,
below the 0.01 threshold). A memorizing run can gain at most 0.005 later (drift <= 0.005), so its
nodes contribute 0 to P_t; that is computed per node like the others.

Likelihood: approximate, so the observer is *approximately* Bayes, not exactly. The generator
draws ``Binomial(n, clip(h(t) + o_t, 0, 1)) / n`` with a correlated evaluation offset o_t:
AR(1) with sd ~ U(0, 0.015) and coefficient ~ U(0, 0.8) across evaluations. The observer uses a
normal approximation: y_t = h(t) + o_t + e_t with e_t ~ N(0, q_t (1 - q_t) / n), q_t the mean of
the last (up to) five observed proportions (a causal plug-in for the binomial variance, clipped
to [1/n, 1 - 1/n]), and the offsets integrated *exactly under that Gaussian model* by a Kalman
filter over (m0, o_t) per node, with (offset sd, AR(1) coefficient) on a midpoint grid of their
uniform priors. Ways this differs from the exact likelihood: the normal approximation of the
binomial with a plug-in variance; the clip of h + o_t at 0 is ignored in the likelihood (it
binds only after a collapse to ~0, where every surviving node has nothing left to gain); the
grid over the offset parameters.

Numerics. m0 is integrated analytically: the Kalman filter gives, per node, the likelihood as a
Gaussian in m0 (flat prior), which is then integrated over U(0.05, 0.6) with normal CDFs; the
probability that a clipped collapse node still gains > 0.01 is a normal CDF in m0 too. The
other parameters, and the two offset parameters, are integrated by importance sampling over
their uniform priors: a first sweep uses scrambled, seeded Sobol points (one set per regime,
scaled by T; the offset coordinates are binned onto the offset grid, so the filter's
covariances are shared by the nodes of a bin). Long, precise runs concentrate the posterior on
a small part of a 5- to 8-dimensional prior, where prior points alone leave few effective
nodes; so when a regime's posterior (or its "gain > 0.01" part) at some evaluation carries mass
>= 1e-3 on fewer than ADAPT_ESS effective nodes, the nodes are re-drawn from a defensive
mixture (population Monte Carlo, up to ADAPT_ROUNDS times): a quarter prior Sobol points, the
rest Sobol points mapped through Gaussians (in logit space, widened) fitted to the last sweep's
posterior at a few evaluations (4, 8, 16, ... and every J/8; those already carried by
>= 4 ADAPT_ESS nodes are left to the prior quarter), each node weighted by prior / mixture
density (deterministic-mixture weights), and the sweep is repeated. The proposal uses the whole
run, the estimand does not: P_t still conditions on the evaluations up to t only. Curves are
evaluated in float32 (error a few 1e-6). Reported: the effective number of nodes carrying the
posterior (ESS = (sum w)^2 / sum w^2) where it matters (0.001 <= P_t <= 0.999), and, on a few
runs (per regime the most informative run, the lowest-ESS one and the first one), the largest
change of P_t and of the halt step when every node count and the offset grid are doubled
(nested Sobol points), as bound_memorizing.py's ``validate`` does.

A posterior-threshold rule is a strong reference, not a proof of optimality: the Bayes-optimal
stopping rule for a given trade-off could differ (it weighs future evidence). The observer knows
the generator's priors exactly (e.g. that a generalizing run gains at least 0.04 with a lag of at
most 0.3 T), which a monitor can only learn approximately; it is held-out-only, so a monitor
that reads the training curve as well (e.g. fast saturation of lagged_memorizing and
delayed_generalization runs) has information this reference does not use.

Definitions as in benchmarks/bench_monitor.py: a halt at step t is false when
``truth.remaining_gain_at(t) > 0.01``; compute saved = (T - halt) / T (0 without a halt),
averaged over lagged_memorizing runs ("saved (mem)") and over the other three regimes ("saved
(other)"); regret = 100 * remaining_gain_at(halt).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Multi-threaded BLAS is much slower than one thread on the small products used here (and on
# a shared machine); this only takes effect when numpy is not imported yet (run as a script).
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import expit, logsumexp, ndtr, ndtri
from scipy.stats import qmc

HERE = Path(__file__).resolve().parent
for _p in (str(HERE.parent), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bound_memorizing as bm  # noqa: E402
from satmon.datasets import LAGGED_REGIMES, make_lagged_suite  # noqa: E402
from satmon.results import text_table  # noqa: E402

GAIN_THRESHOLD = 0.01
MEMORIZING = ("lagged_memorizing",)
OTHER = tuple(r for r in LAGGED_REGIMES if r not in MEMORIZING)
SHORT = {"lagged_generalizing": "LG", "lagged_memorizing": "LM", "delayed_generalization": "DG",
         "lagged_collapse": "LC"}
ALPHAS = bm.ALPHAS
ALPHAS_FINE = bm.ALPHAS_FINE
WARMUP_STEPS, WARMUP_EVALS = 50, 6
M0_LO, M0_HI = 0.05, 0.6
EVAL_SD_MAX, EVAL_AR1_MAX = 0.015, 0.8
LN100 = math.log(100.0)
# Parameters integrated by Sobol points, per regime (two offset coordinates follow them).
SOBOL_PARAMS = {
    "lagged_generalizing": ("gain", "lag", "rho", "beta", "t_sat"),
    "lagged_memorizing": ("drift",),
    "delayed_generalization": ("gain", "onset", "width"),
    "lagged_collapse": ("gain", "drop", "t_collapse", "width", "beta", "t_sat"),
}
SOBOL_SEED = {"lagged_generalizing": 101, "lagged_memorizing": 202,
              "delayed_generalization": 303, "lagged_collapse": 404}
# The flat prior of m0 is handled through a broad Gaussian one inside the Kalman filter, whose
# effect is then divided out exactly (see run_posterior).
M0_C, M0_TAU2 = 0.5 * (M0_LO + M0_HI), 1.0
VARIANCE_WINDOW = 5
COLLAPSE_EXACT_T = 128
COLLAPSE_GRID = 32
GOLDEN_ITERS = 14
# Adaptive importance sampling (see run_posterior).
ADAPT_ROUNDS = 6
SNAPSHOTS = 8
ADAPT_ESS = 100.0
ADAPT_SKIP = 4.0
ADAPT_MASS, ADAPT_MASS_BIG = 1e-3, 1e-3
ADAPT_INFLATE, ADAPT_FLOOR = 1.5, 0.05


@dataclass(frozen=True)
class Resolution:
    """Quadrature sizes: Sobol nodes per regime (powers of 2) and the offset (sd, AR(1)) grid.
    ``refined(k)`` multiplies each by k."""

    lg: int = 4096
    lm: int = 512
    dg: int = 2048
    lc: int = 4096
    n_sd: int = 6
    n_ar1: int = 4

    def nodes(self, regime: str) -> int:
        return getattr(self, SHORT[regime].lower())

    def refined(self, k: int) -> Resolution:
        return Resolution(self.lg * k, self.lm * k, self.dg * k, self.lc * k, self.n_sd * k,
                          self.n_ar1 * k)


@functools.lru_cache(maxsize=None)
def unit_points(regime: str, m: int) -> np.ndarray:
    """Scrambled Sobol points in [0, 1)^(d + 2) for one regime (nested: the first m of 2m are
    the m points)."""
    d = len(SOBOL_PARAMS[regime]) + 2
    pts = qmc.Sobol(d, scramble=True, seed=SOBOL_SEED[regime]).random(m)
    pts.setflags(write=False)
    return pts


def theta_from_units(regime: str, T: int, u: np.ndarray) -> dict:
    """A regime's held-out parameters (names as in ``truth.params``) at unit-cube points ``u``
    (columns in SOBOL_PARAMS order; the last two are the offset coordinates), mapped onto
    their uniform priors."""
    if regime == "lagged_generalizing":
        return {"gain": 0.04 + 0.26 * u[:, 0], "lag": 0.3 * T * u[:, 1], "rho": 0.6 + u[:, 2],
                "beta": 0.7 + 1.8 * u[:, 3], "t_sat": (0.2 + 0.6 * u[:, 4]) * T}
    if regime == "lagged_memorizing":
        return {"drift": -0.02 + 0.025 * u[:, 0]}
    if regime == "delayed_generalization":
        return {"gain": 0.04 + 0.16 * u[:, 0], "onset": (0.1 + 0.5 * u[:, 1]) * T,
                "width": (0.03 + 0.17 * u[:, 2]) * T}
    if regime == "lagged_collapse":
        t_sat = (0.2 + 0.6 * u[:, 5]) * T
        return {"gain": 0.02 + 0.13 * u[:, 0], "drop": 0.08 + 0.22 * u[:, 1],
                "t_collapse": t_sat + (0.05 + 0.35 * u[:, 2]) * T,
                "width": (0.01 + 0.04 * u[:, 3]) * T, "beta": 0.7 + 1.8 * u[:, 4],
                "t_sat": t_sat}
    raise ValueError(f"Unknown regime {regime!r}; choose from {LAGGED_REGIMES}.")


def family_nodes(regime: str, T: int, m: int) -> tuple[dict, np.ndarray]:
    """``m`` prior nodes (scrambled Sobol) of a regime's held-out parameters and their two
    offset coordinates in [0, 1)^2, each node with prior weight 1/m."""
    u = unit_points(regime, m)
    return theta_from_units(regime, T, u), u[:, -2:]


def _progress(t, beta, t_sat):
    """p(t) = 1 - exp(-(t / s)**beta) with p(t_sat) = 0.99, as in make_lagged_run."""
    s = t_sat / LN100 ** (1.0 / beta)
    return -np.expm1(-np.power(np.maximum(t, 0.0) / s, beta))


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def family_curve(regime: str, theta: dict, steps, T: int) -> np.ndarray:
    """Held-out curve minus m0, unclipped, for M nodes: shape (M, len(steps)).

    ``steps`` may also be an (M, k) array of per-node steps. ``theta`` holds arrays under
    ``truth.params``'s names, so the formulas can be checked against ``make_lagged_run``.
    """
    s = np.asarray(steps, dtype=float)
    if s.ndim < 2:
        s = s[None, :]
    c = {k: np.asarray(v, dtype=float)[:, None] for k, v in theta.items()}
    if regime == "lagged_generalizing":
        return c["gain"] * np.power(_progress(s - c["lag"], c["beta"], c["t_sat"]), c["rho"])
    if regime == "lagged_memorizing":
        return c["drift"] * s / T
    if regime == "delayed_generalization":
        return c["gain"] * _sigmoid((s - c["onset"] - 2 * c["width"]) / c["width"])
    if regime == "lagged_collapse":
        return (c["gain"] * _progress(s, c["beta"], c["t_sat"])
                - c["drop"] * _sigmoid((s - c["t_collapse"]) / c["width"]))
    raise ValueError(f"Unknown regime {regime!r}; choose from {LAGGED_REGIMES}.")


class FastCurve:
    """``family_curve`` in float32 with exp/log forms (several times faster; absolute error
    a few 1e-6, far below the evaluation noise), used by the sweeps."""

    def __init__(self, regime: str, theta: dict, T: int):
        self.regime, self.T = regime, T
        c = {k: np.asarray(v, dtype=np.float32)[:, None] for k, v in theta.items()}
        if "beta" in theta:
            beta = np.asarray(theta["beta"], dtype=float)
            c["inv_s"] = (LN100 ** (1.0 / beta) / np.asarray(theta["t_sat"]))[:, None].astype(
                np.float32)
        if "width" in theta:
            c["inv_w"] = (1.0 / np.asarray(theta["width"], dtype=float))[:, None].astype(
                np.float32)
        self.c = c

    def _p(self, s):
        c = self.c
        with np.errstate(divide="ignore"):
            return 1 - np.exp(-np.exp(c["beta"] * np.log(s * c["inv_s"])))

    def __call__(self, steps) -> np.ndarray:
        s = np.asarray(steps, dtype=np.float32)
        if s.ndim < 2:
            s = s[None, :]
        c, r = self.c, self.regime
        if r == "lagged_generalizing":
            p = self._p(np.maximum(s - c["lag"], 0))
            with np.errstate(divide="ignore"):
                return c["gain"] * np.exp(c["rho"] * np.log(p))
        if r == "lagged_memorizing":
            return c["drift"] * (s / np.float32(self.T))
        if r == "delayed_generalization":
            z = (s - c["onset"]) * c["inv_w"] - 2
            return c["gain"] * (0.5 + 0.5 * np.tanh(0.5 * z))
        z = (s - c["t_collapse"]) * c["inv_w"]
        return c["gain"] * self._p(np.maximum(s, 0)) - c["drop"] * (0.5 + 0.5 * np.tanh(0.5 * z))


class FutureMax:
    """max_{integer s in [t, T]} f(s) of a regime's unclipped curve ``f`` (a callable of steps,
    shape (k,) or per node (M, k)); the clip is handled apart."""

    def __init__(self, regime: str, f, T: int):
        self.regime, self.f, self.T = regime, f, T
        if regime == "lagged_collapse":
            self._collapse_setup()
        else:
            self.end = np.asarray(f(np.array([T])), dtype=float)[:, 0]

    def _collapse_setup(self):
        T, f = self.T, self.f
        if T <= COLLAPSE_EXACT_T:
            self.grid = np.arange(T + 1)
            self.rev = bm.reverse_cummax(f(self.grid))
            self.peak_s = self.peak_f = None
            return
        self.grid = np.unique(np.rint(np.linspace(0, T, COLLAPSE_GRID + 1)).astype(int))
        fg = f(self.grid)
        self.rev = bm.reverse_cummax(fg)
        i = np.argmax(fg, axis=1)
        m = fg.shape[0]
        lo = self.grid[np.maximum(i - 1, 0)].astype(float)[:, None]
        hi = self.grid[np.minimum(i + 1, self.grid.size - 1)].astype(float)[:, None]
        # Golden-section search of the peak inside the bracket around the grid's maximum.
        gr = (math.sqrt(5) - 1) / 2
        a, b = lo, hi
        c, d = b - gr * (b - a), a + gr * (b - a)
        fc, fd = f(c), f(d)
        for _ in range(GOLDEN_ITERS):
            left = fc > fd
            a = np.where(left, a, c)
            b = np.where(left, d, b)
            x = np.where(left, b - gr * (b - a), a + gr * (b - a))
            fx = f(x)
            c, d, fc, fd = (np.where(left, x, d), np.where(left, c, x),
                            np.where(left, fx, fd), np.where(left, fc, fx))
        xs = 0.5 * (a + b)
        cand = np.clip(np.concatenate([np.floor(xs), np.ceil(xs)], axis=1), lo, hi)
        fcand = f(cand)
        k = np.argmax(fcand, axis=1)
        rows = np.arange(m)
        self.peak_s = cand[rows, k]
        self.peak_f = fcand[rows, k]

    def at(self, steps: np.ndarray, f_steps: np.ndarray) -> np.ndarray:
        """Future maximum at ``steps`` given the curve there (``f_steps``, shape (M, k))."""
        if self.regime != "lagged_collapse":
            return np.maximum(f_steps, self.end[:, None])
        idx = np.searchsorted(self.grid, steps, side="left")
        ok = idx < self.grid.size
        out = np.full(f_steps.shape, -np.inf)
        out[:, ok] = self.rev[:, idx[ok]]
        out = np.maximum(out, f_steps)
        if self.peak_s is not None:
            out = np.maximum(out, np.where(self.peak_s[:, None] >= steps[None, :],
                                           self.peak_f[:, None], -np.inf))
        return out


def m0_clip_threshold(fmax: np.ndarray) -> np.ndarray:
    """With h = clip(m0 + f, 0, 1) and f <= 0.9 - m0, the clipped remaining gain at t exceeds
    0.01 iff the unclipped one does (max f - f(t) > 0.01) *and* m0 > 0.01 - max_{s>=t} f(s)
    (``fmax``): clip(x) = max(x, 0) is monotone and 1-Lipschitz."""
    return GAIN_THRESHOLD - fmax


def warmup_step(steps: np.ndarray) -> int:
    """The monitor's warm-up: no halt before max(50, step of the 6th evaluation)."""
    return max(WARMUP_STEPS, int(steps[min(WARMUP_EVALS, steps.size) - 1]))


@dataclass
class RunPosterior:
    """Per-evaluation output for one run (``prob``/``ess`` keyed 'blind' like
    bound_memorizing's, so its calibration table can be reused)."""

    steps: np.ndarray
    prob: dict
    ess: dict
    regime_post: np.ndarray    # (n_steps, 4), order LAGGED_REGIMES
    warmup: int
    rounds: int = 0            # adaptive importance-sampling rounds used


def _box_prob(za, zb):
    """Phi(zb) - Phi(za) for za <= zb, accurate in both tails."""
    flip = za > 0
    lo = np.where(flip, -zb, za)
    hi = np.where(flip, -za, zb)
    return ndtr(hi) - ndtr(lo)


def _m0_box(za, zb):
    """Phi(zb) - Phi(za), computed only where it differs from 1 by more than ~1e-15."""
    out = np.ones(za.shape)
    k = np.flatnonzero((za > -8.0) | (zb < 8.0))
    if k.size:
        out[k] = np.maximum(_box_prob(za[k], zb[k]), 1e-300)
    return out, k


def _single_thread_blas():
    """threadpoolctl's one-thread BLAS limit where it is installed (for imports after numpy)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class NodeSet:
    """Quadrature nodes of one regime: unit-cube points (columns as SOBOL_PARAMS, then the two
    offset coordinates) and log(prior density / proposal density) of each (0 for prior nodes)."""

    u: np.ndarray
    log_w: np.ndarray


def prior_nodes(regime: str, m: int) -> NodeSet:
    return NodeSet(unit_points(regime, m), np.zeros(m))


def _logit(u):
    u = np.clip(u, 1e-13, 1 - 1e-13)
    return np.log(u) - np.log1p(-u)


def _fit_component(z: np.ndarray, w: np.ndarray):
    """Gaussian in z = logit(u) fitted to normalised weights w, widened (variance x
    ADAPT_INFLATE, plus a floor) so that it keeps covering the posterior at neighbouring
    evaluations."""
    keep = w > 1e-8 * w.max()
    z, w = z[keep], w[keep] / w[keep].sum()
    mu = w @ z
    dz = z - mu
    cov = (dz * w[:, None]).T @ dz
    cov = ADAPT_INFLATE * cov + ADAPT_FLOOR ** 2 * np.eye(z.shape[1])
    return mu, np.linalg.cholesky(cov)


def _log_normal(z, mu, L):
    y = (z - mu) @ solve_triangular(L, np.eye(L.shape[0]), lower=True).T
    return (-0.5 * np.einsum("ij,ij->i", y, y) - np.log(np.diag(L)).sum()
            - 0.5 * z.shape[1] * math.log(2 * math.pi))


def mixture_nodes(regime: str, comps: list, m: int, rnd: int) -> NodeSet:
    """About ``m`` nodes: the first m/4 prior Sobol points plus, for each fitted component, an
    equal block of one scrambled Sobol sequence (consecutive blocks) mapped through it; the
    weights are prior / (deterministic mixture of all blocks), so the estimate stays consistent
    for any fit."""
    d = len(SOBOL_PARAMS[regime]) + 2
    m_prior = m // 4
    m_c = max(32, (m - m_prior) // len(comps))
    eng = qmc.Sobol(d, scramble=True, seed=np.random.default_rng([SOBOL_SEED[regime], rnd]))
    draw = eng.random(2 ** int(math.ceil(math.log2(m_c * len(comps)))))
    x_all = ndtri(np.clip(draw, 1e-12, 1 - 1e-12))
    parts = [unit_points(regime, m_prior)]
    for i, (mu, L) in enumerate(comps):
        x = x_all[i * m_c:(i + 1) * m_c]
        parts.append(expit(np.clip(mu + x @ L.T, -30, 30)))
    u = np.vstack(parts)
    z = _logit(u)
    log_jac = -np.sum(np.log(u) + np.log1p(-u), axis=1)
    total = u.shape[0]
    terms = [np.full(total, math.log(m_prior / total))]
    for mu, L in comps:
        terms.append(math.log(m_c / total) + _log_normal(z, mu, L) + log_jac)
    log_q = logsumexp(np.vstack(terms), axis=0)
    return NodeSet(u, -log_q)


def _adapt(nodes: dict, snaps: list, res: Resolution, rnd: int) -> dict | None:
    """New nodes for the regimes whose posterior (or whose gain > 0.01 part) at some snapshot
    carries mass but few effective nodes; None if no regime needs it."""
    new, changed, start = {}, False, 0
    for r in LAGGED_REGIMES:
        ns = nodes[r]
        m = ns.u.shape[0]
        sl = slice(start, start + m)
        start += m
        comps, needed = [], False
        z = _logit(ns.u)
        for w_all, big in snaps:
            w = w_all[sl]
            mass = float(w.sum())
            for sel, floor_mass in ((None, ADAPT_MASS), (big[sl], ADAPT_MASS_BIG)):
                ww = w if sel is None else w * sel
                mw = float(ww.sum())
                if mw < floor_mass or (sel is not None and mw > 0.9 * mass):
                    continue
                ess = mw * mw / float(np.einsum("i,i->", ww, ww))
                needed |= ess < ADAPT_ESS
                if ess < ADAPT_SKIP * ADAPT_ESS:  # else the prior quarter suffices
                    comps.append(_fit_component(z, ww / mw))
        if needed and comps:
            changed = True
            new[r] = mixture_nodes(r, comps, res.nodes(r), rnd)
        else:
            new[r] = ns
    return new if changed else None


def run_posterior(sr, res: Resolution = Resolution(), stop_below: float | None = None,
                  adapt_rounds: int = ADAPT_ROUNDS) -> RunPosterior:
    """P(remaining held-out gain > 0.01 | held-out up to t) at each evaluation of one run.

    A first sweep uses prior Sobol nodes; while some regime's posterior at a snapshot has
    fewer than ADAPT_ESS effective nodes, the nodes are re-drawn from Gaussians fitted to the
    snapshots (adaptive importance sampling, at most ``adapt_rounds`` times) and the sweep is
    repeated. The proposal uses the whole run, the estimand does not: P_t conditions on the
    evaluations up to t only. With ``stop_below``, a sweep stops after the first evaluation past
    the warm-up with P_t <= it (every alpha >= stop_below has halted by then)."""
    with _single_thread_blas():
        nodes = {r: prior_nodes(r, res.nodes(r)) for r in LAGGED_REGIMES}
        post, snaps = _pass(sr, nodes, res, stop_below, snapshots=adapt_rounds > 0)
        post.rounds = 0
        for rnd in range(1, adapt_rounds + 1):
            nodes = _adapt(nodes, snaps, res, rnd)
            if nodes is None:
                break
            post, snaps = _pass(sr, nodes, res, stop_below, snapshots=rnd < adapt_rounds)
            post.rounds = rnd
    return post


def _pass(sr, nodes: dict, res: Resolution, stop_below: float | None, chunk: int = 64,
          snapshots: bool = False):
    """One sweep over the run's evaluations with the given nodes (``{regime: NodeSet}``).
    Returns the RunPosterior and, with ``snapshots``, the normalised node weights and
    gain indicators (concatenated in LAGGED_REGIMES order) at evaluations 4, 8, 16, ..., at
    every ceil(J / SNAPSHOTS)-th from 4 on, and at the last one processed."""
    run = sr.run
    T = int(sr.truth.params["T"])
    h = run.heldout["heldout"]
    n = int(h.sample_size)
    steps = np.asarray(h.steps, dtype=int)
    ybar = np.asarray(h.values, dtype=float)
    J = steps.size
    warm = warmup_step(steps)
    csum = np.concatenate([[0.0], np.cumsum(ybar)])
    lo_idx = np.maximum(np.arange(J) - VARIANCE_WINDOW + 1, 0)
    q = (csum[1:] - csum[lo_idx]) / (np.arange(J) + 1 - lo_idx)
    q = np.clip(q, 1.0 / n, 1.0 - 1.0 / n)
    v = q * (1 - q) / n

    # Offset grid (sd, AR(1)); the nodes of every regime, concatenated, then sorted by offset
    # bin so that per-bin quantities expand to nodes with np.repeat.
    sd_lv = EVAL_SD_MAX * (np.arange(res.n_sd) + 0.5) / res.n_sd
    ar_lv = EVAL_AR1_MAX * (np.arange(res.n_ar1) + 0.5) / res.n_ar1
    sd_c = np.repeat(sd_lv, res.n_ar1)
    ar_c = np.tile(ar_lv, res.n_sd)
    C = sd_c.size
    thetas, fut, ci_parts, lp_parts, fam_parts = {}, {}, [], [], []
    sizes = {}
    for k, r in enumerate(LAGGED_REGIMES):
        ns = nodes[r]
        m = sizes[r] = ns.u.shape[0]
        thetas[r] = curve = FastCurve(r, theta_from_units(r, T, ns.u), T)
        fut[r] = FutureMax(r, curve, T)
        un = ns.u[:, -2:]
        ci_parts.append(np.minimum((un[:, 0] * res.n_sd).astype(int), res.n_sd - 1) * res.n_ar1
                        + np.minimum((un[:, 1] * res.n_ar1).astype(int), res.n_ar1 - 1))
        lp_parts.append(-math.log(len(LAGGED_REGIMES)) - math.log(m) + ns.log_w)
        fam_parts.append(np.full(m, k))
    order = np.argsort(np.concatenate(ci_parts), kind="stable")
    ci = np.concatenate(ci_parts)[order]
    counts = np.bincount(ci, minlength=C)
    log_prior = np.concatenate(lp_parts)[order]
    fam = np.concatenate(fam_parts)[order]
    col_pos = np.flatnonzero(fam == LAGGED_REGIMES.index("lagged_collapse"))
    col_start = sum(sizes[r] for r in LAGGED_REGIMES[:LAGGED_REGIMES.index("lagged_collapse")])
    M = ci.size
    phi_node = ar_c[ci]
    nfam = len(LAGGED_REGIMES)

    # Kalman state: per-node means of (m0, o_t) and log evidence, per-bin covariances.
    m_hat = np.full(M, M0_C)
    o_hat = np.zeros(M)
    logz = np.zeros(M)
    Pmm = np.full(C, M0_TAU2)
    Pmo = np.zeros(C)
    Poo = sd_c ** 2
    q_c = (1 - ar_c ** 2) * sd_c ** 2
    sum_log_s = np.zeros(C)

    out_p, out_e, out_r, snaps = [], [], [], []
    snap_every = max(1, -(-J // SNAPSHOTS))
    Ft = bigt = thrt = None
    j0, width = 0, 0
    for j in range(J):
        if j >= j0 + width:
            j0 = j
            cs = steps[j: j + chunk]
            width = cs.size
            F_parts, big_parts = [], []
            for r in LAGGED_REGIMES:
                fr = thetas[r](cs)
                fm = fut[r].at(cs, fr)
                F_parts.append(fr)
                big_parts.append(fm - fr > GAIN_THRESHOLD)
                if r == "lagged_collapse":
                    thr_col = m0_clip_threshold(fm)
            Ft = np.ascontiguousarray(np.concatenate(F_parts)[order].T)
            bigt = np.ascontiguousarray(np.concatenate(big_parts)[order].T).astype(float)
            # Clipping threshold of m0 for collapse nodes (rows: steps; columns: col_pos).
            thrt = np.ascontiguousarray(thr_col[order[col_pos] - col_start].T)
        jj = j - j0
        if j > 0:
            Poo = ar_c ** 2 * Poo + q_c
            Pmo = ar_c * Pmo
            o_hat *= phi_node
        S = Pmm + 2 * Pmo + Poo + v[j]
        Km = (Pmm + Pmo) / S
        Ko = (Pmo + Poo) / S
        Pmm, Pmo, Poo = Pmm - Km * Km * S, Pmo - Km * Ko * S, Poo - Ko * Ko * S
        sum_log_s += np.log(S)
        # Likelihood as a Gaussian in m0 under a flat prior, N(m0; mu, sL2) times a constant;
        # mu = a * m_hat - b. lw adds the flat-prior correction and the U(0.05, 0.6) prior.
        sL2 = 1.0 / (1.0 / Pmm - 1.0 / M0_TAU2)
        wide = sL2 + M0_TAU2
        const = -0.5 * sum_log_s + 0.5 * np.log(wide) - math.log(M0_HI - M0_LO)
        tab = np.stack([0.5 / S, Km, Ko, sL2 / Pmm, M0_C * sL2 / M0_TAU2, 1.0 / np.sqrt(sL2),
                        0.5 / wide, const])
        half_inv_s, km, ko, a_, b_, inv_sl, half_inv_w, cst = np.repeat(tab, counts, axis=1)
        nu = ybar[j] - Ft[jj]
        nu -= m_hat
        nu -= o_hat
        logz -= half_inv_s * nu * nu
        m_hat += km * nu
        o_hat += ko * nu
        mu = a_ * m_hat - b_
        za = (M0_LO - mu) * inv_sl
        zb = (M0_HI - mu) * inv_sl
        box, kb = _m0_box(za, zb)
        d = M0_C - mu
        lw = logz + half_inv_w * d * d + cst + log_prior
        if kb.size:
            lw[kb] += np.log(box[kb])
        lw -= lw.max()
        e = np.exp(lw)
        tot = float(e.sum())
        num = float(np.einsum("i,i->", e, bigt[jj]))
        # Clipped collapse nodes: the gain > 0.01 needs m0 > 0.01 - max future f as well.
        tj = thrt[jj]
        need = (tj > M0_LO) & (bigt[jj, col_pos] > 0)
        if need.any():
            k = col_pos[need]
            zt = (np.minimum(tj[need], M0_HI) - mu[k]) * inv_sl[k]
            frac = np.clip(_box_prob(zt, zb[k]) / box[k], 0.0, 1.0)
            num -= float(np.einsum("i,i->", e[k], 1.0 - frac))
        out_p.append(num / tot)
        out_e.append(tot * tot / float(np.einsum("i,i->", e, e)))
        out_r.append(np.bincount(fam, weights=e, minlength=nfam) / tot)
        stop = stop_below is not None and steps[j] >= warm and out_p[-1] <= stop_below
        if snapshots and (stop or j == J - 1 or (j >= 4 and ((j & (j - 1)) == 0
                                                            or j % snap_every == 0))):
            w_orig = np.empty(M)
            w_orig[order] = e / tot
            b_orig = np.empty(M, dtype=bool)
            b_orig[order] = bigt[jj] > 0
            snaps.append((w_orig, b_orig))
        if stop:
            break
    done = len(out_p)
    post = RunPosterior(steps=steps[:done], prob={"blind": np.asarray(out_p)},
                        ess={"blind": np.asarray(out_e)}, regime_post=np.asarray(out_r),
                        warmup=warm)
    return post, snaps


def halt_step(post: RunPosterior, alpha: float) -> int | None:
    hit = np.flatnonzero((post.steps >= post.warmup) & (post.prob["blind"] <= alpha))
    return int(post.steps[hit[0]]) if hit.size else None


def frontier(posts, suite, alphas=ALPHAS):
    regimes = np.array([sr.truth.regime for sr in suite])
    mem = np.isin(regimes, MEMORIZING)
    other = np.isin(regimes, OTHER)
    rows = []
    for a in alphas:
        res = [bm.outcome(halt_step(p, a), sr) for p, sr in zip(posts, suite)]
        false = np.array([r[0] for r in res])
        saved = np.array([r[1] for r in res])
        regret = np.array([r[2] for r in res])
        rows.append({"alpha": float(a), "false": float(false.mean()),
                     "saved_mem": float(saved[mem].mean()) if mem.any() else math.nan,
                     "saved_other": float(saved[other].mean()) if other.any() else math.nan,
                     "regret": float(regret.mean()),
                     "false_by_regime": {r: int(false[regimes == r].sum())
                                         for r in LAGGED_REGIMES},
                     "saved_by_regime": {r: float(saved[regimes == r].mean())
                                         if (regimes == r).any() else math.nan
                                         for r in LAGGED_REGIMES}})
    return rows


def best_at(rows, cap=0.01):
    ok = [r for r in rows if r["false"] <= cap]
    return max(ok, key=lambda r: (r["saved_mem"], r["saved_other"])) if ok else None


@functools.lru_cache(maxsize=2)
def _suite(runs: int) -> list:
    return make_lagged_suite(1002, seed=0)[:runs]


def _posterior_of_run(args) -> RunPosterior:
    runs, i, res = args
    return run_posterior(_suite(runs)[i], res, stop_below=min(ALPHAS))


def compute_posteriors(runs: int, res: Resolution = Resolution(), workers: int = 1,
                       progress: bool = False) -> list[RunPosterior]:
    """Posteriors of the first ``runs`` runs of make_lagged_suite(1002, seed=0), in order
    (``workers`` > 1: a process pool)."""
    jobs = [(runs, i, res) for i in range(runs)]
    t0 = time.perf_counter()
    if workers > 1:
        from multiprocessing import Pool
        with Pool(workers) as pool:
            it = pool.imap(_posterior_of_run, jobs, chunksize=8)
            posts = []
            for p in it:
                posts.append(p)
                if progress and len(posts) % 100 == 0:
                    print(f"  {len(posts)}/{runs} runs, {time.perf_counter() - t0:.0f} s",
                          flush=True)
        return posts
    posts = []
    for job in jobs:
        posts.append(_posterior_of_run(job))
        if progress and len(posts) % 100 == 0:
            print(f"  {len(posts)}/{runs} runs, {time.perf_counter() - t0:.0f} s", flush=True)
    return posts


@functools.lru_cache(maxsize=4)
def _suite_posteriors(runs: int, res: Resolution, workers: int):
    return _suite(runs), compute_posteriors(runs, res, workers)


def best_saved_at(cap: float = 0.01, runs: int = 1002, workers: int = 1,
                  res: Resolution = Resolution()) -> dict | None:
    """The best point at false-halt rate <= ``cap`` over the first ``runs`` runs of
    ``make_lagged_suite(1002, seed=0)``: ``{"false", "saved_mem", "alpha", "saved_other",
    "regret"}`` (the keys of bound_memorizing's rows), alpha searched on ALPHAS_FINE; None if no
    alpha reaches the cap. Posteriors are cached per (runs, res, workers) in the process."""
    if not 1 <= int(runs) <= 1002:
        raise ValueError(f"The 'runs' parameter must be in [1, 1002]. Got {runs!r}.")
    suite, posts = _suite_posteriors(int(runs), res, max(1, int(workers)))
    b = best_at(frontier(posts, suite, ALPHAS_FINE), cap)
    return None if b is None else {k: b[k] for k in ("false", "saved_mem", "alpha",
                                                     "saved_other", "regret")}


def breakdown_rows(posts, suite, alpha):
    """Saved compute on lagged_memorizing runs at one alpha, by held-out n and evaluations."""
    rows = []
    sel = [(p, sr) for p, sr in zip(posts, suite) if sr.truth.regime in MEMORIZING]
    for nlo, nhi in ((100, 300), (300, 1000), (1000, 5001)):
        for jlo, jhi in ((9, 20), (20, 60), (60, 402)):
            part = [(p, sr) for p, sr in sel
                    if nlo <= sr.run.heldout["heldout"].sample_size < nhi
                    and jlo <= sr.run.heldout["heldout"].steps.size < jhi]
            if not part:
                continue
            halts = [halt_step(p, alpha) for p, _ in part]
            saved = [bm.outcome(hh, sr)[1] for hh, (_, sr) in zip(halts, part)]
            rows.append([f"[{nlo}, {nhi})", f"[{jlo}, {jhi})", str(len(part)),
                         bm.fmt(float(np.mean(saved)))])
    return rows


def informative_ess(post: RunPosterior) -> float:
    """Smallest ESS over the evaluations where the estimate matters (0.001 <= P_t <= 0.999);
    after a collapse or a completed rise the posterior can sit on a few nodes that all agree."""
    p, e = post.prob["blind"], post.ess["blind"]
    sel = (p >= 1e-3) & (p <= 0.999)
    return float(e[sel].min()) if sel.any() else math.nan


def validate(suite, idx, res):
    """P_t with the default nodes versus every node count and the offset grid doubled (both
    stop as in the sweep, after the first evaluation past the warm-up with P_t <= 1e-4; P_t is
    compared on the evaluations both processed)."""
    rows = []
    fine = res.refined(2)
    worst = {"dp": 0.0, "dstep": 0, "dfrac": 0.0, "moved": 0}
    for i in idx:
        t0 = time.perf_counter()
        a = run_posterior(suite[i], res, stop_below=min(ALPHAS))
        b = run_posterior(suite[i], fine, stop_below=min(ALPHAS))
        secs = time.perf_counter() - t0
        k = min(a.steps.size, b.steps.size)
        pa, pb = a.prob["blind"][:k], b.prob["blind"][:k]
        dp = float(np.max(np.abs(pa - pb)))
        small = (pa < 0.1) | (pb < 0.1)
        rel = (float(np.max(np.abs(np.log10(np.maximum(pa[small], 1e-12))
                                   - np.log10(np.maximum(pb[small], 1e-12)))))
               if small.any() else 0.0)
        T = suite[i].truth.params["T"]
        moved, dstep = 0, 0
        for al in ALPHAS:
            ha, hb = halt_step(a, al), halt_step(b, al)
            if ha != hb:
                moved += 1
                dstep = max(dstep, abs((T if ha is None else ha) - (T if hb is None else hb)))
        worst["dp"] = max(worst["dp"], dp)
        worst["dstep"] = max(worst["dstep"], dstep)
        worst["dfrac"] = max(worst["dfrac"], dstep / T)
        worst["moved"] += moved
        h = suite[i].run.heldout["heldout"]
        rows.append([str(i), SHORT[suite[i].truth.regime], str(T), str(h.sample_size),
                     str(h.steps.size), bm.fmt(dp, 4), bm.fmt(rel, 2), f"{moved}/{len(ALPHAS)}",
                     str(dstep), bm.fmt(informative_ess(a), 1), bm.fmt(informative_ess(b), 1),
                     f"{secs:.1f}"])
    return rows, worst


def validation_runs(suite, k: int, posts=None) -> list[int]:
    """k runs spread over the regimes: per regime in turn the run with the most held-out
    information (n x evaluations), the one with the lowest ESS* in ``posts`` (if given), and
    the first runs of the suite."""
    per = max(1, k // len(LAGGED_REGIMES))
    idx = []
    for r in LAGGED_REGIMES:
        ids = [i for i, sr in enumerate(suite) if sr.truth.regime == r]
        orders = [sorted(ids, key=lambda i: -(suite[i].run.heldout["heldout"].sample_size
                                              * suite[i].run.heldout["heldout"].steps.size))]
        if posts is not None:
            ess = {i: informative_ess(posts[i]) for i in ids}
            orders.append(sorted(ids, key=lambda i: ess[i] if np.isfinite(ess[i]) else np.inf))
        orders.append(ids)
        pick = []
        for cands in zip(*orders):
            for c in cands:
                if c not in pick and len(pick) < per:
                    pick.append(c)
        idx += pick
    return idx[:k]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1002,
                    help="use the first N runs of make_lagged_suite(1002, seed=0) (regimes "
                         "cycle, so any N >= 4 keeps every regime)")
    ap.add_argument("--validate", type=int, default=12,
                    help="re-run this many runs (spread over regimes) with doubled nodes")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes for the sweep (default 1: one core)")
    args = ap.parse_args(argv)
    if not 4 <= args.runs <= 1002:
        raise ValueError(f"The 'runs' option must be in [4, 1002]. Got {args.runs}.")

    t_start = time.perf_counter()
    res = Resolution()
    suite = _suite(args.runs)
    t0 = time.perf_counter()
    posts = compute_posteriors(args.runs, res, max(1, args.workers), progress=True)
    secs = time.perf_counter() - t0

    print(f"\nHeld-out-only Bayes reference on make_lagged_suite(1002, seed=0)"
          f"{'' if args.runs == 1002 else f'[:{args.runs}]'}: {len(suite)} runs")
    print("Policy: halt at the first evaluation with t >= max(50, 6th evaluation step) and\n"
          "P(remaining held-out gain > 0.01 | held-out up to t) <= alpha. The observer knows the\n"
          "generator's priors exactly, sees no training signal, and uses a normal approximation\n"
          "with Kalman-integrated AR(1) offsets (approximately Bayes, not exactly).\n")
    rows = frontier(posts, suite)
    print(text_table(["alpha", "false-halt", "saved (mem)", "saved (other)", "regret (pts)"],
                     [[f"{r['alpha']:g}", bm.fmt(r["false"], 4), bm.fmt(r["saved_mem"]),
                       bm.fmt(r["saved_other"]), bm.fmt(r["regret"])] for r in rows]))
    b = best_at(frontier(posts, suite, ALPHAS_FINE))
    if b is None:
        print("  no alpha reaches false-halt <= 1%\n")
    else:
        print(f"  best saved (mem) at false-halt <= 1% (alpha on a fine grid): "
              f"{b['saved_mem']:.3f} (alpha {b['alpha']:.3g}, false-halt {b['false']:.4f}, "
              f"saved (other) {b['saved_other']:.3f}, regret {b['regret']:.3f})")
        print("  at that alpha, false halts / runs and saved, per regime:")
        print(text_table(["regime", "false halts", "runs", "saved"],
                         [[r, str(b["false_by_regime"][r]),
                           str(sum(sr.truth.regime == r for sr in suite)),
                           bm.fmt(b["saved_by_regime"][r])] for r in LAGGED_REGIMES]))
        print("  at that alpha, lagged_memorizing runs by held-out n and number of evaluations:")
        print(text_table(["n", "evaluations", "runs", "saved (mem)"],
                         breakdown_rows(posts, suite, b["alpha"])))
    print()

    print("Calibration of P_t (all processed evaluations; 'true' = remaining gain > 0.01)")
    print(text_table(["P_t bin", "evaluations", "runs", "mean P_t", "true frequency",
                      "se (by run)"], bm.calibration_rows(posts, suite, "blind")) + "\n")

    mins = np.array([informative_ess(p) for p in posts])
    ok = np.isfinite(mins)
    allv = np.concatenate([p.ess["blind"] for p in posts])
    rounds = np.bincount([p.rounds for p in posts], minlength=ADAPT_ROUNDS + 1)
    print("Effective number of quadrature nodes carrying the posterior (per run: min over its "
          "evaluations with\n0.001 <= P_t <= 0.999, where the estimate matters)")
    print(text_table(["min over runs", "10th pct over runs", "median over runs",
                      "median, all evals"],
                     [[bm.fmt(float(mins[ok].min()), 1),
                       bm.fmt(float(np.percentile(mins[ok], 10)), 1),
                       bm.fmt(float(np.median(mins[ok])), 1), bm.fmt(float(np.median(allv)), 1)]]))
    worst = np.argsort(np.where(ok, mins, np.inf))[:5]
    print("  lowest: " + ", ".join(f"#{i} {SHORT[suite[i].truth.regime]} ({mins[i]:.1f})"
                                   for i in worst))
    print("  adaptive importance-sampling rounds used, runs: "
          + ", ".join(f"{k}: {int(c)}" for k, c in enumerate(rounds)))

    if args.validate:
        idx = validation_runs(suite, args.validate, posts)
        print(f"\nStability: default nodes vs every node count and the offset grid doubled "
              f"({len(idx)} runs; per regime the most informative, the lowest-ESS* and the "
              "first runs)")
        vrows, w = validate(suite, idx, res)
        print(text_table(["run", "regime", "T", "n", "evals", "max |dP|",
                          "max |dlog10 P| (P<0.1)", "halts moved", "max |d halt| (steps)",
                          "min ESS*", "min ESS* fine", "s"], vrows))
        print("  (ESS*: over evaluations with 0.001 <= P_t <= 0.999; halts over the 17 alphas "
              "of the table)")
        print(f"  largest |dP_t| {w['dp']:.4f}; largest halt-step "
              f"change {w['dstep']} steps ({w['dfrac']:.3f} of T); {w['moved']} of "
              f"{len(idx) * len(ALPHAS)} (run, alpha) halts moved")

    print(f"\nWall time: {secs:.0f} s for {len(suite)} runs "
          f"({secs / len(suite):.2f} s per run; total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
