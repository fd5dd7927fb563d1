"""A Bayes reference frontier for issue 3's compute-saving target on memorizing runs.

Run from the repository root:

    python benchmarks/bound_memorizing.py             # all 1,002 runs of the bench_monitor suite
    python benchmarks/bound_memorizing.py --runs 120  # first 120 runs (every regime, 20 each)
    python benchmarks/bound_memorizing.py --validate 0  # skip the refined-grid check (24 runs)

It prints tables and asserts nothing. Single process, numpy/scipy only; about two minutes for
the full suite on one core, plus about half a minute for the refined-grid check.

Question. Issue 3 asks for a false-halt rate <= 1% over the suite together with >= 60% of the
planned compute saved on memorizing runs. Is that reachable at all on
``make_suite(1002, seed=0, mix="standard")``, where a memorizing run (flat held-out) must be told
apart from the slow tail of ``post_saturation_generalization`` (held-out still rising slowly after
training saturated)?

Reference policy. At every held-out evaluation t (steps 0, K, 2K, ...) a Bayes observer computes

    P_t = P(remaining held-out gain after t > 0.01 | what it knows at t)

and halts at the first evaluation with ``P_t <= alpha``; sweeping alpha gives a frontier. The
observer knows the generator (``satmon.datasets.make_run``) exactly: the regime priors, each
regime's held-out model and parameter priors, T, K, n, and the run's *clean* normalised training
progress g(t) (``truth.params``: shape, t_target, r0, rmax, gamma), for every step including the
future; it sees the noisy held-out points ``Binomial(n, clean) / n`` up to t. It integrates over
the unknowns: the regime and that regime's held-out parameters

    generalizing, slow       m0 + gain * g(t)**rho                        (m0, gain, rho)
    memorizing, noisy_label  m0 + local * g(t) - drift * t / T            (m0, local, drift)
    post_saturation_gen.     m0 + gain * (1 - exp(-t / tau_h))            (m0, gain, tau_h)
    collapse                 m0 + gain * g(t) - drop * sigmoid((t - t_c) / width)
                                                              (m0, gain, drop, t_c, width)

with the exact binomial likelihood. Memorizing and noisy_label runs can never gain more than
``local < 0.01`` later, so they contribute P = 0; the question is how fast the other regimes are
ruled out.

Three variants differ only in what the observer knows about the regime from training:

* ``full``: the training parameters' density under each regime's prior (t_target, rmax and the
  two-stage noisy-label curve) enters the regime posterior, from step 0. This is strictly more
  information than any monitor has (a monitor sees noisy training rewards up to t only): it
  knows a noisy-label run is one before training starts. A monitor is unlikely to beat it.
* ``causal``: the training parameters become known at t >= t_target (when the clean curve
  reaches 0.99 of rmax, the paper's saturation); before that the observer only uses
  ``t_target > t``. Still more than a monitor after saturation (exact rmax and t_target), less
  before it (a monitor sees the partial curve). The closest of the three to a real monitor.
* ``blind``: no training information about the regime (prior share of regimes only), with g(t)
  still known to the held-out models: a held-out-only reference.

The held-out evidence of each model family is shared by the variants (generalizing and slow have
the same held-out model given g; so do memorizing and noisy_label).

A posterior-threshold rule is a strong reference, not a proof of optimality: the Bayes-optimal
stopping rule for a given trade-off could differ (it weighs future evidence); but because the
``full`` observer uses strictly more information than a monitor, a monitor is unlikely to beat
its frontier.

Numerics. m0 is integrated on a per-run midpoint grid (spacing at most 2/3 of the sharpest
conditional posterior sd of m0, over a window of +-7 sd around the step-0 point: outside it the
step-0 likelihood alone is below e^-24); the linear gain and the nonlinear rho / tau_h on product
midpoint grids; local / drift on a grid; the four collapse parameters by a scrambled Sobol set.
Log-likelihoods accumulate per evaluation, so a run costs O(nodes x evaluations). Reported: the
effective number of nodes carrying the posterior (ESS = (sum w)^2 / sum w^2 over all nodes) and,
on 24 runs (4 per regime), the largest change of P_t and of the halt step on grids refined 2x in
every axis (4x Sobol points); and the calibration of P_t against the truth over every
evaluation. The collapse remaining gain ignores the clip of held-out at 0 (it only binds after
the drop, where the remaining gain is 0 either way).

Caveat beyond optimality: every variant knows the generator's priors exactly, e.g. that a
post-saturation run gains at least 0.08 with tau_h <= 2T and that a memorizing run never rises by
0.01; a monitor can only learn such bounds approximately, and they are what lets the observer
rule out the slow post-saturation tail on a flat held-out series.

Definitions as in benchmarks/bench_monitor.py: a halt at step t is false when
``truth.remaining_gain_at(t) > 0.01``; compute saved = (T - halt) / T (0 without a halt),
averaged over memorizing runs (memorizing, noisy_label) and over saturated generalizing runs
(generalizing, post_saturation_generalization); regret = 100 * remaining_gain_at(halt).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from scipy.stats import qmc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from satmon.datasets import REGIMES, make_suite  # noqa: E402
from satmon.results import text_table  # noqa: E402

MEMORIZING = ("memorizing", "noisy_label")
SATURATED_GEN = ("generalizing", "post_saturation_generalization")
GAIN_THRESHOLD = 0.01
FAMILIES = ("GS", "MN", "PSG", "COL")
FAMILY_OF = {"generalizing": "GS", "slow": "GS", "memorizing": "MN", "noisy_label": "MN",
             "post_saturation_generalization": "PSG", "collapse": "COL"}
VARIANTS = ("full", "causal", "blind")
ALPHAS = (0.5, 0.3, 0.2, 0.1, 0.07, 0.05, 0.03, 0.02, 0.015, 0.01, 0.007, 0.005, 0.003, 0.002,
          0.001, 3e-4, 1e-4)
ALPHAS_FINE = tuple(np.geomspace(1e-4, 0.5, 121))
# t_target ranges of the standard mix at T = 500 (datasets._draw_target), scaled by T / 500.
T_TARGET_RANGE = {"generalizing": (150, 400), "memorizing": (20, 100),
                  "post_saturation_generalization": (20, 100), "collapse": (50, 250),
                  "noisy_label": (15, 80)}
RMAX_HIGH = ("memorizing", "noisy_label", "collapse")  # rmax ~ U(0.9, 1.0); others U(0.75, 0.98)


@dataclass(frozen=True)
class Resolution:
    """Grid sizes of the quadrature (``refine`` multiplies every axis)."""

    gs_gain: int = 56
    gs_rho: int = 15
    psg_gain: int = 44
    psg_tau: int = 24
    mn_local: int = 6
    mn_drift: int = 16
    col_sobol: int = 1024
    m0_sd_fraction: float = 2 / 3

    def refined(self, k: int) -> Resolution:
        return Resolution(self.gs_gain * k, self.gs_rho * k, self.psg_gain * k,
                          self.psg_tau * k, self.mn_local * k, self.mn_drift * k,
                          self.col_sobol * k * k, self.m0_sd_fraction / k)


def midpoints(lo: float, hi: float, k: int) -> np.ndarray:
    return lo + (np.arange(k) + 0.5) * (hi - lo) / k


def reverse_cummax(a: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(a[..., ::-1], axis=-1)[..., ::-1]


def family_curve(fam: str, theta: dict, g: np.ndarray, T: int) -> np.ndarray:
    """Held-out curve minus m0 on steps 0..T, shape (M, T+1), for M parameter nodes.

    ``theta`` holds arrays under ``truth.params``'s names (gain, rho, tau_h, local_gain, drift,
    drop, t_collapse, width), so the formulas can be checked against ``make_run``.
    """
    s = np.arange(T + 1, dtype=float)[None, :]
    gc = np.clip(g, 0.0, 1.0)[None, :]
    col = {k: np.asarray(v, dtype=float)[:, None] for k, v in theta.items()}
    if fam == "GS":
        return col["gain"] * np.power(gc, col["rho"])
    if fam == "PSG":
        return col["gain"] * -np.expm1(-s / col["tau_h"])
    if fam == "MN":
        return col["local_gain"] * gc - col["drift"] * s / T
    if fam == "COL":
        z = (s - col["t_collapse"]) / col["width"]
        return col["gain"] * gc - col["drop"] * 0.5 * (1 + np.tanh(0.5 * z))
    raise ValueError(f"Unknown family {fam!r}; choose from {FAMILIES}.")


def family_nodes(fam: str, t_target: float, T: int, res: Resolution) -> dict:
    """Quadrature nodes of one family's non-m0 parameters, each with prior weight 1/M
    (midpoint product grids over the uniform priors; scrambled Sobol points for collapse)."""
    if fam == "GS":
        rho, gain = np.meshgrid(midpoints(0.8, 1.25, res.gs_rho),
                                midpoints(0.08, 0.3, res.gs_gain), indexing="ij")
        return {"gain": gain.ravel(), "rho": rho.ravel()}
    if fam == "PSG":
        tau, gain = np.meshgrid(midpoints(0.6 * T, 2.0 * T, res.psg_tau),
                                midpoints(0.08, 0.25, res.psg_gain), indexing="ij")
        return {"gain": gain.ravel(), "tau_h": tau.ravel()}
    if fam == "MN":
        local, drift = np.meshgrid(midpoints(0.0, 0.01, res.mn_local),
                                   midpoints(0.0, 0.03, res.mn_drift), indexing="ij")
        return {"local_gain": local.ravel(), "drift": drift.ravel()}
    if fam == "COL":
        u = qmc.Sobol(4, scramble=True, seed=12345).random(res.col_sobol)
        return {"gain": 0.03 + 0.09 * u[:, 0], "drop": 0.1 + 0.2 * u[:, 1],
                "t_collapse": t_target + (20 + 130 * u[:, 2]) * T / 500,
                "width": 5 + 20 * u[:, 3]}
    raise ValueError(f"Unknown family {fam!r}; choose from {FAMILIES}.")


def normalised_progress(truth) -> np.ndarray:
    """g(t) on steps 0..T recovered from the clean training curve (g(0) = 0 for every shape)."""
    p = truth.params
    return np.concatenate([[0.0], (truth.train_clean - p["r0"]) / (p["rmax"] - p["r0"])])


def training_log_density(regime: str, params: dict, T: int) -> float:
    """log p(t_target, rmax, two-stage flag | regime) in the standard mix (shared terms dropped)."""
    two_stage = "gamma" in params
    if two_stage != (regime == "noisy_label"):
        return -math.inf
    t_target, rmax = params["t_target"], params["rmax"]
    if regime == "slow":
        lo, hi = 1.3 * T, 3.0 * T
    else:
        lo, hi = (v * T / 500 for v in T_TARGET_RANGE[regime])
    if not lo <= t_target <= hi:
        return -math.inf
    rlo, rhi = (0.9, 1.0) if regime in RMAX_HIGH else (0.75, 0.98)
    if not rlo <= rmax <= rhi:
        return -math.inf
    out = -math.log(hi - lo) - math.log(rhi - rlo)
    if two_stage:
        out += -math.log(0.4)  # gamma ~ U(0.1, 0.5)
    return out


def log_survival_t_target(regime: str, t: float, T: int) -> float:
    """log P(t_target > t | regime): what the causal observer knows before saturation."""
    lo, hi = (1.3 * T, 3.0 * T) if regime == "slow" else (v * T / 500
                                                          for v in T_TARGET_RANGE[regime])
    frac = (hi - max(t, lo)) / (hi - lo)
    return math.log(frac) if frac > 0 else -math.inf


@dataclass
class RunPosterior:
    """Per-evaluation output for one run."""

    steps: np.ndarray          # evaluation steps processed
    prob: dict                 # variant -> P_t array
    ess: dict                  # variant -> ESS array (nodes carrying the posterior)
    regime_post: dict          # variant -> (n_steps, 6) regime posterior


def run_posterior(sr, res: Resolution = Resolution(), stop_below: float | None = None):
    """P(remaining gain > 0.01 | data up to t) at each evaluation, for every variant."""
    truth, run = sr.truth, sr.run
    T = int(run.last_step)
    h = run.heldout["heldout"]
    n = int(h.sample_size)
    steps = np.asarray(h.steps, dtype=int)
    y = np.rint(np.asarray(h.values) * n)
    p = truth.params
    g = normalised_progress(truth)
    J = steps.size

    # m0 grid: window from the step-0 point (the collapse curve can start up to 0.017 below m0)
    # and spacing from the sharpest conditional sd of m0 (all n*J trials at the lowest level).
    sd0 = math.sqrt(0.25 / n)
    lo = max(0.1, y[0] / n - 7 * sd0)
    hi = min(0.5, y[0] / n + 7 * sd0 + 0.02)
    p_ref = float(np.clip(np.min(y / n), 0.05, 0.5))
    sd_min = math.sqrt(p_ref * (1 - p_ref) / (n * J))
    G0 = max(int(math.ceil((hi - lo) / (res.m0_sd_fraction * sd_min))), 8)
    m0 = midpoints(lo, hi, G0)

    ybar = y / n
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.where(y > 0, y * np.log(ybar), 0.0) + np.where(y < n, (n - y) * np.log1p(-ybar),
                                                                0.0)
    curves, rem_big, loglik = {}, {}, {}
    for fam in FAMILIES:
        f = family_curve(fam, family_nodes(fam, p["t_target"], T, res), g, T)
        rem = reverse_cummax(f) - f
        curves[fam] = f[:, steps]
        rem_big[fam] = rem[:, steps] > GAIN_THRESHOLD
        loglik[fam] = np.zeros((G0, f.shape[0]))
    # Regime log-priors per variant (the causal one changes with t).
    log_share = -math.log(len(REGIMES))
    dens = {r: training_log_density(r, p, T) for r in REGIMES}

    out_p = {v: [] for v in VARIANTS}
    out_e = {v: [] for v in VARIANTS}
    out_r = {v: [] for v in VARIANTS}
    eps = 1e-12
    for j in range(J):
        logz, pbig, s1, s2, ref = {}, {}, {}, {}, {}
        for fam in FAMILIES:
            hj = np.clip(m0[:, None] + curves[fam][None, :, j], eps, 1 - eps)
            L = loglik[fam]
            L += y[j] * np.log(hj) + (n - y[j]) * np.log1p(-hj) - sat[j]
            mx = float(L.max())
            E = np.exp(L - mx)
            col = E.sum(axis=0)
            tot = float(col.sum())
            ref[fam] = mx
            logz[fam] = mx + math.log(tot) - math.log(L.size)
            pbig[fam] = float(col[rem_big[fam][:, j]].sum()) / tot
            s1[fam] = tot
            s2[fam] = float(np.einsum("ij,ij->", E, E))
        t = steps[j]
        for v in VARIANTS:
            lw = np.empty(len(REGIMES))
            for k, r in enumerate(REGIMES):
                if v == "full" or (v == "causal" and t >= p["t_target"]):
                    prior = log_share + dens[r]
                elif v == "causal":
                    prior = log_share + log_survival_t_target(r, t, T)
                else:
                    prior = log_share
                lw[k] = prior + logz[FAMILY_OF[r]]
            post = np.exp(lw - logsumexp(lw))
            out_r[v].append(post)
            out_p[v].append(sum(post[k] * pbig[FAMILY_OF[r]] for k, r in enumerate(REGIMES)))
            # ESS over all nodes: node weight = regime posterior * E / sum(E) within the family.
            fam_w = {}
            for k, r in enumerate(REGIMES):
                fam_w[FAMILY_OF[r]] = fam_w.get(FAMILY_OF[r], 0.0) + post[k]
            num = sum(fam_w.values()) ** 2
            den = sum(w * w * s2[f] / s1[f] ** 2 for f, w in fam_w.items() if w > 0)
            out_e[v].append(num / den)
        if stop_below is not None and all(out_p[v][-1] <= stop_below for v in VARIANTS):
            break
    done = len(out_p["full"])
    return RunPosterior(steps=steps[:done], prob={v: np.asarray(a) for v, a in out_p.items()},
                        ess={v: np.asarray(a) for v, a in out_e.items()},
                        regime_post={v: np.asarray(a) for v, a in out_r.items()})


def halt_step(post: RunPosterior, variant: str, alpha: float) -> int | None:
    hit = np.flatnonzero(post.prob[variant] <= alpha)
    return int(post.steps[hit[0]]) if hit.size else None


def outcome(halt, sr):
    T = sr.run.last_step
    if halt is None:
        return False, 0.0, 0.0
    rem = sr.truth.remaining_gain_at(halt)
    return rem > GAIN_THRESHOLD, max(T - halt, 0) / T, 100 * rem


def frontier(posts, suite, variant, alphas=ALPHAS):
    regimes = np.array([sr.truth.regime for sr in suite])
    mem = np.isin(regimes, MEMORIZING)
    satg = np.isin(regimes, SATURATED_GEN)
    rows = []
    for a in alphas:
        res = [outcome(halt_step(p, variant, a), sr) for p, sr in zip(posts, suite)]
        false = np.array([r[0] for r in res])
        saved = np.array([r[1] for r in res])
        regret = np.array([r[2] for r in res])
        rows.append({"alpha": a, "false": false.mean(), "saved_mem": saved[mem].mean(),
                     "saved_sat": saved[satg].mean(), "regret": regret.mean(),
                     "false_by_regime": {r: int(false[regimes == r].sum()) for r in REGIMES},
                     "saved_by_regime": {r: float(saved[regimes == r].mean()) for r in REGIMES}})
    return rows


def fmt(v, d=3):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def best_at(rows, cap=0.01):
    ok = [r for r in rows if r["false"] <= cap]
    return max(ok, key=lambda r: (r["saved_mem"], r["saved_sat"])) if ok else None


def calibration_rows(posts, suite, variant):
    """Reliability of P_t over every (run, evaluation) processed: mean P_t against the frequency
    of a true remaining gain > 0.01. The suite is drawn from the prior the 'full' observer
    uses, so its P_t must be calibrated; 'causal' and 'blind' ignore part of what g(t) says about
    the regime while their held-out models use g, so they need not be exactly calibrated."""
    prob = np.concatenate([p.prob[variant] for p in posts])
    truth = np.concatenate([[sr.truth.remaining_gain_at(int(s)) > GAIN_THRESHOLD
                             for s in p.steps] for p, sr in zip(posts, suite)])
    sizes = [p.steps.size for p in posts]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    run_id = np.repeat(np.arange(len(posts)), sizes)
    edges = (0.0, 1e-3, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 1.0 + 1e-9)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (prob >= lo) & (prob < hi)
        if sel.any():
            k = int(sel.sum())
            # Evaluations of one run are correlated: the standard error of (frequency - mean P)
            # sums the residuals per run first (cluster-robust).
            resid = np.where(sel, truth - prob, 0.0)
            per_run = np.add.reduceat(resid, offsets)
            se = math.sqrt(float(np.sum(per_run ** 2))) / k
            rows.append([f"[{lo:g}, {min(hi, 1.0):g})", str(k),
                         str(len(np.unique(run_id[sel]))), fmt(float(prob[sel].mean()), 4),
                         fmt(float(truth[sel].mean()), 4), fmt(se, 4)])
    return rows


def breakdown_rows(posts, suite, variant, alpha):
    """Saved compute on memorizing runs at one alpha, by held-out size and evaluation interval."""
    rows = []
    for n in (200, 500, 1000):
        for K in (10, 25):
            sel = [(p, sr) for p, sr in zip(posts, suite) if sr.truth.regime in MEMORIZING
                   and sr.run.heldout["heldout"].sample_size == n
                   and int(np.diff(sr.run.heldout["heldout"].steps[:2])[0]) == K]
            if not sel:
                continue
            halts = [halt_step(p, variant, alpha) for p, _ in sel]
            saved = [outcome(h, sr)[1] for h, (_, sr) in zip(halts, sel)]
            med = np.median([h if h is not None else sr.run.last_step
                             for h, (_, sr) in zip(halts, sel)])
            rows.append([str(n), str(K), str(len(sel)), fmt(float(np.mean(saved))),
                         f"{med:.0f}"])
    return rows


def validate(suite, idx, res):
    """P_t on the default grids versus grids refined 2x per axis (4x Sobol points)."""
    rows = []
    fine = res.refined(2)
    for i in idx:
        t0 = time.perf_counter()
        a = run_posterior(suite[i], res)
        b = run_posterior(suite[i], fine)
        secs = time.perf_counter() - t0
        for v in VARIANTS:
            dp = float(np.max(np.abs(a.prob[v] - b.prob[v])))
            # Relative change of small probabilities matters for the low alphas.
            small = (a.prob[v] < 0.1) | (b.prob[v] < 0.1)
            rel = (float(np.max(np.abs(np.log10(np.maximum(a.prob[v][small], 1e-12))
                                      - np.log10(np.maximum(b.prob[v][small], 1e-12)))))
                   if small.any() else 0.0)
            moved = sum(halt_step(a, v, al) != halt_step(b, v, al) for al in ALPHAS)
            rows.append([str(i), suite[i].truth.regime[:22], v, fmt(dp, 4), fmt(rel, 2),
                         f"{moved}/{len(ALPHAS)}", fmt(float(a.ess[v].min()), 1),
                         fmt(float(b.ess[v].min()), 1), f"{secs:.1f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1002,
                    help="use the first N runs of the 1,002-run suite (regimes cycle, so any "
                         "N >= 6 keeps every regime)")
    ap.add_argument("--validate", type=int, default=24,
                    help="re-run this many runs (spread over regimes) on refined grids")
    args = ap.parse_args(argv)
    if not 6 <= args.runs <= 1002:
        raise ValueError(f"The 'runs' option must be in [6, 1002]. Got {args.runs}.")

    t_start = time.perf_counter()
    suite = make_suite(1002, seed=0, mix="standard")[: args.runs]
    res = Resolution()
    posts = []
    t0 = time.perf_counter()
    for i, sr in enumerate(suite):
        posts.append(run_posterior(sr, res, stop_below=min(ALPHAS)))
        if (i + 1) % 100 == 0:
            print(f"  {i + 1}/{len(suite)} runs, {time.perf_counter() - t0:.0f} s", flush=True)
    secs = time.perf_counter() - t0

    print(f"\nBayes reference frontier on make_suite(1002, seed=0, mix='standard')"
          f"{'' if args.runs == 1002 else f'[:{args.runs}]'}: {len(suite)} runs")
    print("Policy: halt at the first evaluation with P(remaining held-out gain > 0.01 | info) "
          "<= alpha.\nA posterior-threshold rule is a strong reference, not a proof of "
          "optimality; the 'full' observer\nknows strictly more than any monitor, so a monitor "
          "is unlikely to beat its frontier.\nVariants: 'full' knows the training parameters from "
          "step 0 (so a noisy_label run is known\nbefore training starts); 'causal' learns them at "
          "t_target and before that only t_target > t;\n'blind' uses held-out evidence alone "
          "(g(t) still known to the held-out models).\nEvery variant knows the generator's priors "
          "exactly (e.g. post-saturation gain >= 0.08, tau_h <= 2T).\n")
    best = {}
    for v in VARIANTS:
        rows = frontier(posts, suite, v)
        print(f"Variant '{v}'")
        print(text_table(["alpha", "false-halt", "saved (mem)", "saved (sat)", "regret (pts)"],
                         [[f"{r['alpha']:g}", fmt(r["false"], 4), fmt(r["saved_mem"]),
                           fmt(r["saved_sat"]), fmt(r["regret"])] for r in rows]))
        # The best point is searched on a finer alpha grid (tuned on the suite itself, as
        # bench_monitor tunes each baseline).
        b = best_at(frontier(posts, suite, v, ALPHAS_FINE))
        best[v] = b
        if b is None:
            print("  no alpha reaches false-halt <= 1%\n")
            continue
        print(f"  best saved (mem) at false-halt <= 1%: {b['saved_mem']:.3f} "
              f"(alpha {b['alpha']:g}, false-halt {b['false']:.4f}, "
              f"saved (sat) {b['saved_sat']:.3f}, regret {b['regret']:.3f})")
        print("  at that alpha, false halts / runs and saved, per regime:")
        print(text_table(["regime", "false halts", "runs", "saved"],
                         [[r, str(b["false_by_regime"][r]),
                           str(sum(sr.truth.regime == r for sr in suite)),
                           fmt(b["saved_by_regime"][r])] for r in REGIMES]))
        print("  at that alpha, memorizing + noisy_label runs by held-out size n and interval K:")
        print(text_table(["n", "K", "runs", "saved (mem)", "median halt step"],
                         breakdown_rows(posts, suite, v, b["alpha"])) + "\n")

    for v in VARIANTS:
        print(f"Calibration of P_t, variant '{v}' (all processed evaluations; 'true' = remaining "
              "gain > 0.01)")
        print(text_table(["P_t bin", "evaluations", "runs", "mean P_t", "true frequency",
                          "se (by run)"],
                         calibration_rows(posts, suite, v)) + "\n")

    ess_rows = []
    for v in VARIANTS:
        mins = np.array([p.ess[v].min() for p in posts])
        allv = np.concatenate([p.ess[v] for p in posts])
        ess_rows.append([v, fmt(float(mins.min()), 1), fmt(float(np.median(mins)), 1),
                         fmt(float(np.median(allv)), 1)])
    print("Effective number of quadrature nodes carrying the posterior (per run: min over its "
          "evaluations)")
    print(text_table(["variant", "min over runs", "median over runs", "median, all evals"],
                     ess_rows))
    worst = sorted(range(len(posts)), key=lambda i: posts[i].ess["full"].min())[:5]
    print("  lowest 'full' ESS: " + ", ".join(
        f"#{i} {suite[i].truth.regime} ({posts[i].ess['full'].min():.1f})" for i in worst))

    if args.validate:
        per = max(1, args.validate // len(REGIMES))
        idx = []
        for k in range(len(REGIMES)):
            idx += [i for i in range(k, len(suite), len(REGIMES))][:per]
        idx = idx[: args.validate]
        print("\nValidation: default grids vs grids refined 2x per axis (Sobol 4x)")
        print(text_table(["run", "regime", "variant", "max |dP|", "max |dlog10 P| (P<0.1)",
                          "halts moved", "min ESS", "min ESS fine", "s"],
                         validate(suite, idx, res)))

    print("\nSummary: best saved (mem) at false-halt <= 1% (issue 3 target: >= 0.60)")
    print(text_table(["variant", "alpha", "false-halt", "saved (mem)", "saved (sat)", "regret"],
                     [[v, "none" if b is None else f"{b['alpha']:.3g}"]
                      + (["-"] * 4 if b is None else
                         [fmt(b["false"], 4), fmt(b["saved_mem"]), fmt(b["saved_sat"]),
                          fmt(b["regret"])]) for v, b in best.items()]))
    print(f"\nWall time: {secs:.0f} s for {len(suite)} runs "
          f"({secs / len(suite):.2f} s per run; total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
