"""Benchmark of the online saturation monitor against early-stopping baselines.

Run from the repository root:

    python benchmarks/bench_monitor.py            # full: 1,002 standard + 300 hard runs
    python benchmarks/bench_monitor.py --quick    # 120 + 60 runs, for a smoke check
    python benchmarks/bench_monitor.py --cost-only  # Tables 5 and 5b alone (about 8 minutes)

It prints tables and never asserts: the issue's targets are printed next to the measured
numbers. Everything is seeded; the suite used here (seeds 0 and 1) is disjoint from the one the
regime coefficients were calibrated on (benchmarks/_calibrate_regime.py, seed 100).

Definitions (truth from satmon.datasets):

* false halt: a halt at step t with ``truth.remaining_gain_at(t) > 0.01`` (held-out accuracy would
  still have gained more than 1 point);
* compute saved: ``(T - halt) / T`` (0 without a halt), on memorizing runs (regimes memorizing and
  noisy_label) and on saturated generalizing runs (generalizing and
  post_saturation_generalization, whose training reward saturates inside the run);
* regret: ``100 * remaining_gain_at(halt)`` on the noiseless held-out curve (held-out points);
* |t_sat error|: ``|evidence.t_sat_estimate - truth.t_sat_clean| / truth.t_sat_clean`` at the
  decision (the halt, else the last update), over runs with a finite true t_sat;
* regime AUROC / ECE: one-vs-rest AUROC of each class probability and top-label expected
  calibration error (10 bins), from the held-out evidence after 10 / 20 / 40 evaluations on the
  hard mix (training speed uninformative), evaluation every 10 steps.

Baselines, each at its best setting on the suite (the setting with the most compute saved on
memorizing runs among those with false-halt rate <= 1%, else the lowest false-halt rate):
transformers EarlyStoppingCallback (patience on held-out), Lightning EarlyStopping (min_delta and
patience on training reward), Ray Tune TrialPlateauStopper (std of training reward over a window),
Page-Hinkley on training reward, fixed budget, never stop, and the paper's exact rule applied post
hoc at the end of the run (an oracle: it halts at t_sat knowing the whole curve).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parents[1]
# All six real logs live beside the repo on a developer's machine; a clone has the three whose
# licence allows shipping them (tests/data/real-logs/PROVENANCE.md).
REAL_LOGS = next((p for p in (REPO.parent / "shared" / "real-logs" / "raw",
                              REPO / "tests" / "data" / "real-logs" / "raw") if p.is_dir()))
sys.path.insert(0, str(REPO))

from satmon.datasets import (LAGGED_REGIME_LABELS, REGIME_LABELS, make_lagged_suite,  # noqa
                             make_run, make_suite)
from satmon.detectors import DETECTORS, LinearBOCPD, SlopeTest  # noqa: E402
from satmon.monitor import SaturationMonitor  # noqa: E402
from satmon.monitor.config import default_risk  # noqa: E402
from satmon.regime import CLASSES, classify_regime  # noqa: E402
from satmon.replay import replay  # noqa: E402
from satmon.results import text_table  # noqa: E402

MEMORIZING = {"memorizing", "noisy_label", "lagged_memorizing"}
SATURATED_GEN = {"generalizing", "post_saturation_generalization", "lagged_generalizing",
                 "delayed_generalization"}
ALL_LABELS = {**REGIME_LABELS, **LAGGED_REGIME_LABELS}


def fmt(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "never"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.{digits}f}"


# -- monitor replays (worker) ------------------------------------------------------------------
def _monitor_one(args):
    suite_kind, seed0, i, n_runs = args
    sr = _suite_run(suite_kind, seed0, i, n_runs)
    res = replay(sr.run)
    d = res.decisions[-1]
    return {"i": i, "regime": sr.truth.regime, "T": sr.run.last_step,
            "halt": res.halt_step, "reason": None if res.reason is None else res.reason.value,
            "t_sat_est": d.evidence.t_sat_estimate, "t_sat_clean": sr.truth.t_sat_clean,
            "t_sat_noisy": sr.truth.t_sat_noisy, "seconds": res.seconds,
            "n_updates": len(res.decisions)}


_SUITE_CACHE: dict = {}


def _suite_run(kind, seed0, i, n_runs):
    key = (kind, seed0, n_runs)
    if key not in _SUITE_CACHE:
        _SUITE_CACHE.clear()
        _SUITE_CACHE[key] = make_family(kind, n_runs, seed0)
    return _SUITE_CACHE[key][i]


def make_family(kind, n_runs, seed0):
    """The benchmark's suites: ``standard`` / ``hard`` mixes of satmon.datasets, or the lagged
    family (satmon.datasets.make_lagged_suite)."""
    if kind == "lagged":
        return make_lagged_suite(n_runs, seed=seed0)
    return make_suite(n_runs, seed=seed0, mix=kind)


def _p_series_one(args):
    """Every evaluation's P(held-out gain) of a monitor that never halts (calibrated, and the
    model's), with the truth."""
    kind, seed0, i, n_runs = args
    sr = _suite_run(kind, seed0, i, n_runs)
    # halt_on=(): a halted monitor repeats its halt and computes nothing more, so a monitor
    # that may halt (P(gain) can underflow below any risk) would lose the later evaluations.
    res = replay(sr.run, risk=1e-300, flag_risk=1e-300, halt_on=(), stop_at_halt=False)
    evals = set(sr.run.heldout["heldout"].steps.tolist())
    out = []
    for d in res.decisions:
        p = d.evidence.details.get("p_heldout_gain")
        if d.step in evals and p is not None and d.step >= 50 \
                and d.evidence.heldout_points >= 6 and d.step < sr.run.last_step:
            out.append((int(d.step), float(p), sr.truth.remaining_gain_at(d.step) > 0.01,
                        float(d.evidence.details["heldout/p_gain_model"])))
    return i, out


# -- baselines ---------------------------------------------------------------------------------
def hf_early_stopping(h_steps, h_values, patience, threshold):
    """transformers EarlyStoppingCallback: stop after `patience` evaluations without an
    improvement greater than `threshold` over the best held-out value so far."""
    best, bad = -math.inf, 0
    for s, v in zip(h_steps, h_values):
        if v > best + threshold or best == -math.inf:
            best, bad = max(v, best), 0
        else:
            bad += 1
            if bad >= patience:
                return int(s)
    return None


def lightning_early_stopping(t_steps, t_values, min_delta, patience):
    """Lightning EarlyStopping(mode='max') on the training reward, checked every logged step."""
    best, wait = -math.inf, 0
    for s, v in zip(t_steps, t_values):
        if v - min_delta > best:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return int(s)
    return None


def plateau_stopper(t_steps, t_values, std, num_results, grace_period):
    """Ray Tune TrialPlateauStopper: stop when the std of the last `num_results` training
    rewards is below `std` (after `grace_period` results)."""
    v = np.asarray(t_values)
    if v.size < num_results:
        return None
    win = np.lib.stride_tricks.sliding_window_view(v, num_results)
    sd = win.std(axis=1)
    idx = np.arange(num_results - 1, v.size)
    ok = (sd < std) & (idx + 1 >= max(grace_period, num_results))
    if not ok.any():
        return None
    return int(t_steps[idx[np.argmax(ok)]])


def page_hinkley(t_steps, t_values, delta, threshold, min_instances=30, alpha=0.9999):
    """Page-Hinkley test (two-sided, as in river) on the training reward; stop at the first
    alarm."""
    mean, n, s_up, s_dn, m_up, m_dn = 0.0, 0, 0.0, 0.0, 0.0, 0.0
    for s, x in zip(t_steps, t_values):
        n += 1
        mean += (x - mean) / n
        s_up = alpha * s_up + (x - mean - delta)
        s_dn = alpha * s_dn + (mean - x - delta)
        m_up, m_dn = min(m_up, s_up), min(m_dn, s_dn)
        if n >= min_instances and (s_up - m_up > threshold or s_dn - m_dn > threshold):
            return int(s)
    return None


BASELINE_GRIDS = {
    "HF EarlyStopping (held-out)": [
        {"patience": p, "threshold": t} for p in (2, 3, 5, 8, 12) for t in (0.0, 0.005, 0.01)],
    "Lightning min_delta/patience (train)": [
        {"min_delta": d, "patience": p} for d in (0.0, 0.005, 0.01, 0.02)
        for p in (10, 25, 50, 100)],
    "Ray TrialPlateauStopper (train std)": [
        {"std": s, "num_results": w, "grace_period": 50} for s in (0.005, 0.01, 0.02, 0.04)
        for w in (10, 25, 50)],
    "Page-Hinkley (train)": [
        {"delta": d, "threshold": t} for d in (0.005, 0.01, 0.02) for t in (0.5, 2.0, 8.0)],
    "fixed budget": [{"fraction": f} for f in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)],
    "never stop": [{}],
    "paper rule post hoc (oracle)": [{}],
}


def baseline_halt(name, params, sr):
    run, truth = sr.run, sr.truth
    tr = run.train_reward
    h = run.heldout["heldout"]
    T = run.last_step
    if name.startswith("HF"):
        return hf_early_stopping(h.steps, h.values, **params)
    if name.startswith("Lightning"):
        return lightning_early_stopping(tr.steps, tr.values, **params)
    if name.startswith("Ray"):
        return plateau_stopper(tr.steps, tr.values, **params)
    if name.startswith("Page"):
        return page_hinkley(tr.steps, tr.values, **params)
    if name == "fixed budget":
        return int(math.ceil(params["fraction"] * T))
    if name == "never stop":
        return None
    t = truth.t_sat_noisy
    return int(t) if math.isfinite(t) else None


def _baselines_one(args):
    kind, seed0, i, n_runs = args
    sr = _suite_run(kind, seed0, i, n_runs)
    out = {}
    for name, grid in BASELINE_GRIDS.items():
        out[name] = [baseline_halt(name, p, sr) for p in grid]
    return i, out


# -- metrics -----------------------------------------------------------------------------------
def outcome(halt, sr):
    T = sr.run.last_step
    if halt is None:
        return {"halted": False, "false": False, "saved": 0.0, "regret": 0.0}
    rem = sr.truth.remaining_gain_at(halt)
    return {"halted": True, "false": rem > 0.01, "saved": max(T - halt, 0) / T,
            "regret": 100 * rem}


def summarize(halts, suite):
    outs = [outcome(h, sr) for h, sr in zip(halts, suite)]
    regimes = [sr.truth.regime for sr in suite]

    def mean(key, sel=None):
        vals = [o[key] for o, r in zip(outs, regimes) if sel is None or r in sel]
        return float(np.mean(vals)) if vals else math.nan

    return {"false_halt": mean("false"), "saved_mem": mean("saved", MEMORIZING),
            "saved_sat": mean("saved", SATURATED_GEN), "saved_all": mean("saved"),
            "regret": mean("regret"), "halt_rate": mean("halted"),
            "per_regime": {r: {"halt_rate": mean("halted", {r}), "false_halt": mean("false", {r}),
                               "saved": mean("saved", {r}), "regret": mean("regret", {r})}
                           for r in ALL_LABELS if r in regimes}}


def pick_best(rows):
    ok = [r for r in rows if r["false_halt"] <= 0.01]
    if ok:
        return max(ok, key=lambda r: (r["saved_mem"], r["saved_sat"]))
    return min(rows, key=lambda r: (r["false_halt"], -r["saved_mem"]))


def auroc(scores, labels):
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=bool)
    n1, n0 = labels.sum(), (~labels).sum()
    if n1 == 0 or n0 == 0:
        return math.nan
    r = rankdata(scores)
    return float((r[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def ece(probs, labels, bins=10):
    """Top-label expected calibration error."""
    probs = np.asarray(probs)
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = pred == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    err = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            err += sel.mean() * abs(conf[sel].mean() - correct[sel].mean())
    return float(err)


def regime_scores(suite, k=None):
    """Regime probabilities after the first ``k`` evaluations (None: at the end of the run)."""
    probs, labels = [], []
    for sr in suite:
        h = sr.run.heldout["heldout"]
        kk = len(h) if k is None else k
        if len(h) < kk:
            continue
        last = h.steps[kk - 1]
        tr = sr.run.train_reward
        m = tr.steps <= last
        ev = classify_regime(h.steps[:kk], h.values[:kk], [h.sample_size or 0] * kk,
                             train_steps=tr.steps[m], train_values=tr.values[m],
                             total_steps=sr.run.last_step)
        probs.append([ev.probabilities[c] for c in CLASSES])
        labels.append(CLASSES.index(sr.truth.label))
    return np.asarray(probs), np.asarray(labels)


def regime_rows(n_runs):
    """Table 4 rows: reading (a) end-of-run calls of runs whose budget holds ~k evaluations
    (primary), reading (b) the call after the first k evaluations (evaluation every 10 / 25)."""
    gen, mem = CLASSES.index("generalizing"), CLASSES.index("memorizing")
    rows, primary = [], {}
    cases = [("(a) end of run", mix, k, dict(eval_every=500 // k), None)
             for mix in ("hard", "standard") for k in (10, 20, 40)]
    cases += [(f"(b) first k, every {e}", mix, k, dict(eval_every=e), k)
              for mix in ("hard", "standard") for e in (10, 25) for k in (10, 20, 40)
              if k * e <= 500]
    suites = {}
    for reading, mix, k, kw, take in cases:
        key = (mix, kw["eval_every"])
        if key not in suites:
            suites[key] = make_suite(n_runs, seed=1 if mix == "hard" else 2, mix=mix, **kw)
        probs, labels = regime_scores(suites[key], take)
        aucs = [auroc(probs[:, j], labels == j) for j in range(len(CLASSES))]
        sel = (labels == gen) | (labels == mem)
        pg = probs[sel, gen] / np.maximum(probs[sel, gen] + probs[sel, mem], 1e-12)
        binary = auroc(pg, labels[sel] == gen)
        macro = float(np.nanmean(aucs))
        e = ece(probs, labels)
        if reading.startswith("(a)") and mix == "hard" and k == 20:
            primary = {"macro": macro, "ece": e, "binary": binary}
        rows.append([reading, mix, str(k), str(len(labels))] + [fmt(a) for a in aucs]
                    + [fmt(macro), fmt(binary), fmt(e)])
    return rows, primary


# -- cost --------------------------------------------------------------------------------------
def detector_costs(n=5000):
    rng = np.random.default_rng(0)
    ys = np.minimum(0.2 + 0.002 * np.arange(n), 0.9) + 0.02 * rng.standard_normal(n)
    rows = []
    for cls in DETECTORS:
        det = (cls(total_steps=n) if cls is SlopeTest else cls(time_scale=float(n))
               if cls is LinearBOCPD else cls())
        times = []
        sizes = {}
        for s, y in enumerate(ys):
            t0 = time.perf_counter_ns()
            det.update(float(y), s)
            times.append(time.perf_counter_ns() - t0)
            if s + 1 in (1000, n):
                sizes[s + 1] = len(json.dumps(det.state_dict()))
        t = np.asarray(times) / 1000
        rows.append([cls.__name__, fmt(np.percentile(t, 50), 1), fmt(np.percentile(t, 99), 1),
                     str(sizes[1000]), str(sizes[n])])
    return rows


#: Timed in a subprocess for each source tree (this one and the release it is compared with),
#: so both run the same code path on the same 10,000-step run and the ratio says what changed.
#: The timing and the memory measurement are separate processes: the release keeps every
#: decision (~340 MB after 100,000 updates), and a timing run right after that allocation ran
#: measurably slower, which alternating the trees would have charged to this tree.
_COST_SNIPPETS = {"time": r"""
import json, time
import numpy as np
from satmon.datasets import make_run
from satmon.monitor import SaturationMonitor
sr = make_run("generalizing", seed=1, total_steps=10_000, eval_every=25)
tr, h = sr.run.train_reward, sr.run.heldout["heldout"]
hv = dict(zip(h.steps.tolist(), h.values.tolist()))
mon = SaturationMonitor(total_steps=10_000, halt_on=())
times = []
for s, v in zip(tr.steps.tolist(), tr.values.tolist()):
    held = {"heldout": (hv[s], h.sample_size)} if s in hv else None
    t0 = time.perf_counter_ns()
    mon.update(s, v, heldout=held)
    times.append(time.perf_counter_ns() - t0)
t = np.asarray(times) / 1e6
print(json.dumps({"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99)),
                  "mean": float(t.mean()), "max": float(t.max())}))
""", "memory": r"""
import json, tracemalloc
import numpy as np
from satmon.monitor import SaturationMonitor
# Memory the monitor keeps after 100,000 cheap updates (evaluations every 1,000 steps). A short
# warm-up run first, so the lazily imported modules (scipy.optimize ...) are not counted.
rng = np.random.default_rng(0)
warm = SaturationMonitor(total_steps=3_000, halt_on=())
for s in range(1, 3_001):
    warm.update(s, 0.5 + 0.01 * float(rng.standard_normal()),
                heldout={"heldout": (0.5, 500)} if s % 500 == 0 else None)
del warm
tracemalloc.start()
before = tracemalloc.take_snapshot()
mon = SaturationMonitor(total_steps=100_000, halt_on=(), refit_every=5_000)
for s in range(1, 100_001):
    held = {"heldout": (0.5, 500)} if s % 1000 == 0 else None
    mon.update(s, 0.5 + 0.01 * float(rng.standard_normal()), heldout=held)
size = sum(st.size_diff for st in tracemalloc.take_snapshot().compare_to(before, "filename"))
tracemalloc.stop()
print(json.dumps({"mb_100k": size / 2 ** 20}))
"""}


def _tree_costs(src: Path, part: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, "-c", _COST_SNIPPETS[part]], env=env, cwd=str(src),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


#: Alternating timed runs per tree in Table 5b (each measure is the median of its runs).
COST_REPEATS = 3


def _paired_costs(here_src: Path, base_src: Path | None) -> tuple[dict, dict | None]:
    """This tree's and the baseline's costs: the timing runs alternate between the trees
    ``COST_REPEATS`` times each (each measure the median of its runs; the speed of this
    machine drifts by up to 1.7x between minutes, and alternating puts both trees under the
    same drift), then one memory run each. A baseline that fails to run (None) is dropped;
    this tree failing raises."""
    srcs = {"here": here_src} | ({"base": base_src} if base_src else {})
    runs: dict[str, list[dict]] = {k: [] for k in srcs}
    for _ in range(COST_REPEATS):
        for k in list(runs):
            try:
                runs[k].append(_tree_costs(srcs[k], "time"))
            except subprocess.CalledProcessError:
                if k == "here":
                    raise
                del runs[k]
    out: dict[str, dict] = {}
    for k, rs in runs.items():
        out[k] = {m: float(np.median([r[m] for r in rs])) for m in rs[0]}
        try:
            out[k].update(_tree_costs(srcs[k], "memory"))
        except subprocess.CalledProcessError:
            if k == "here":
                raise
            out[k]["mb_100k"] = math.nan
    return out["here"], out.get("base")


def release_tree(rev: str) -> Path | None:
    """The package source of ``rev`` (git archive into a temporary folder), or None."""
    dest = Path(tempfile.mkdtemp(prefix="satmon-release-"))
    try:
        arch = subprocess.run(["git", "-C", str(REPO), "archive", rev, "satmon", "callbacks",
                               "analysis"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    return dest


def monitor_costs(baseline_rev: str | None = None):
    # The monitor's per-update cost on 1,000-step runs (the report benchmark replays 1,000
    # such runs), with halting disabled so every step is timed.
    thousand = []
    for i, regime in enumerate(("generalizing", "memorizing", "collapse", "slow")):
        sr = make_run(regime, seed=i, total_steps=1000, eval_every=25)
        res = replay(sr.run, lambda: SaturationMonitor(total_steps=1000, halt_on=()),
                     stop_at_halt=False)
        thousand.append(res.seconds)
    sr = make_run("generalizing", seed=0)
    mon = SaturationMonitor(total_steps=sr.run.last_step)
    tr = sr.run.train_reward
    h = sr.run.heldout["heldout"]
    hv = dict(zip(h.steps.tolist(), h.values.tolist()))
    times = []
    for s, v in zip(tr.steps.tolist(), tr.values.tolist()):
        held = {"heldout": (hv[s], h.sample_size)} if s in hv else None
        t0 = time.perf_counter_ns()
        mon.update(s, v, heldout=held)
        times.append(time.perf_counter_ns() - t0)
    t = np.asarray(times) / 1000
    long = make_run("generalizing", seed=1, total_steps=10_000, eval_every=100)
    t0 = time.perf_counter()
    res = replay(long.run, stop_at_halt=False)
    secs = time.perf_counter() - t0
    # Memory is traced in a second replay: tracemalloc slows Python down several-fold.
    tracemalloc.start()
    replay(long.run, stop_at_halt=False)
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    tree = release_tree(baseline_rev) if baseline_rev else None
    here, base = _paired_costs(REPO, tree)
    return {"replay_1k_s": float(np.mean(thousand)),
            "p50_us": float(np.percentile(t, 50)), "p99_us": float(np.percentile(t, 99)),
            "mean_us": float(t.mean()), "replay_10k_s": secs, "peak_mb_10k": peak,
            "n_updates_10k": len(res.decisions), "p99_10k_ms": here["p99"],
            "mean_10k_ms": here["mean"], "mb_100k": here["mb_100k"], "here": here,
            "release": base}


#: Held-out sets whose size is known though the logs do not say it (GSM8K's test split).
KNOWN_SIZES = {"gsm8k": 1319}


def _three_mean_gain(series, step):
    """Best later 3-evaluation mean minus the 3-evaluation mean at ``step``, and the limit
    max(1 point, 2 binomial standard errors of that difference) (NaN without 3 on each side)."""
    st = np.asarray(series.steps, float)
    va = np.asarray(series.values, float)
    k = int((st <= step).sum())
    if k < 3 or st.size - k < 3:
        return math.nan, math.nan
    at = float(va[k - 3:k].mean())
    later = float(np.convolve(va[k:], np.ones(3) / 3, mode="valid").max())
    n = series.sample_size or next((v for key, v in KNOWN_SIZES.items()
                                    if key in series.name.lower()), 0)
    sd = math.sqrt(max(at * (1 - at), 0.0196) / n) if n else 0.02
    return later - at, max(0.01, 2 * math.sqrt(2 / 3) * sd)


def real_log_rows():
    """Every real log replayed: the halt, whether a later gain beat max(1 point, 2 standard
    errors) (a false halt), and how many evaluations after held-out stopped improving."""
    from satmon.analysis import read_run
    from satmon.run import Run

    rows, lags, false_halts = [], [], 0
    for path in sorted(glob.glob(str(REAL_LOGS / "*"))):
        try:
            run = read_run(path)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            rows.append([Path(path).name[:48], "-", "-", "-", "-", "-", "-", "-",
                         f"unreadable: {exc}"])
            continue
        held = {}
        for name, series in run.heldout.items():
            n = next((v for k, v in KNOWN_SIZES.items() if k in name.lower()), None)
            held[name] = (series if series.sample_size or not n else
                          type(series)(series.name, series.steps, series.values,
                                       sample_size=n))
        run = Run(run.train_reward, heldout=held, aux=run.aux, metadata=run.metadata,
                  name=run.name)
        res = replay(run)
        false = "-"
        lag = "-"
        if run.heldout and res.halt_step is not None:
            worst = max((_three_mean_gain(s, res.halt_step) for s in run.heldout.values()),
                        key=lambda g: g[0] - g[1] if math.isfinite(g[0]) else -1)
            is_false = math.isfinite(worst[0]) and worst[0] > worst[1]
            false_halts += is_false
            false = f"{'yes' if is_false else 'no'} ({100 * worst[0]:+.1f} pt)" \
                if math.isfinite(worst[0]) else "n/a"
        if run.heldout:
            # The first evaluation after which no later 3-evaluation mean beats the limit.
            series = next(iter(run.heldout.values()))
            stop = next((int(st) for st in series.steps
                         if not (_three_mean_gain(series, st)[0]
                                 > _three_mean_gain(series, st)[1])), None)
            # No halt can come before the warm-up (50 steps and 6 evaluations): lateness is
            # counted from the later of that and the step held-out stopped improving.
            floor = max(50.0, float(series.steps[min(5, len(series.steps) - 1)]))
            stop = None if stop is None else max(stop, floor)
            if stop is not None and res.halt_step is not None:
                k = int(((series.steps > stop) & (series.steps <= res.halt_step)).sum())
                lag = str(k if res.halt_step >= stop else -int(
                    ((series.steps > res.halt_step) & (series.steps <= stop)).sum()))
                if run.last_step <= 150:
                    lags.append(int(lag))
        rows.append([Path(path).name[:48], str(run.last_step),
                     "-" if res.halt_step is None else str(res.halt_step),
                     "-" if res.reason is None else res.reason.value, fmt(res.compute_saved),
                     false, lag, fmt(res.regret), res.message[:100]])
    return rows, lags, false_halts


# -- main --------------------------------------------------------------------------------------
def family_tables(kind, seed0, n_runs, workers, label):
    """Tables 1-2 for one suite: the monitor against every baseline, and per regime."""
    suite = make_family(kind, n_runs, seed0)
    jobs = [(kind, seed0, i, n_runs) for i in range(n_runs)]
    with Pool(workers) as pool:
        mon = sorted(pool.map(_monitor_one, jobs, chunksize=8), key=lambda r: r["i"])
        base = dict(pool.map(_baselines_one, jobs, chunksize=16))
    mon_sum = summarize([r["halt"] for r in mon], suite)
    header = ["method", "setting", "false-halt", "saved (mem)", "saved (sat)", "saved (all)",
              "regret (pts)", "monitor dominates"]
    rows = [["satmon SaturationMonitor", "defaults", fmt(mon_sum["false_halt"]),
             fmt(mon_sum["saved_mem"]), fmt(mon_sum["saved_sat"]), fmt(mon_sum["saved_all"]),
             fmt(mon_sum["regret"]), "-"]]
    dominated = []
    for name, grid in BASELINE_GRIDS.items():
        cands = []
        for j, params in enumerate(grid):
            sm = summarize([base[i][name][j] for i in range(n_runs)], suite)
            sm["params"] = params
            cands.append(sm)
        best = pick_best(cands)
        dom = (mon_sum["false_halt"] <= best["false_halt"]
               and mon_sum["saved_mem"] >= best["saved_mem"])
        if name != "paper rule post hoc (oracle)":
            dominated.append((name, dom))
        setting = ", ".join(f"{k}={v}" for k, v in best["params"].items()) or "-"
        rows.append([name, setting, fmt(best["false_halt"]), fmt(best["saved_mem"]),
                     fmt(best["saved_sat"]), fmt(best["saved_all"]), fmt(best["regret"]),
                     "yes" if dom else "no"])
    print(f"Table 1{label}. Monitor vs baselines on {kind} (seed {seed0}, {n_runs} runs; each "
          "baseline at its best grid setting on the suite)")
    print(text_table(header, rows))
    rows = []
    for r, m in mon_sum["per_regime"].items():
        reasons = {}
        for row in mon:
            if row["regime"] == r and row["reason"]:
                reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        rows.append([r, ALL_LABELS[r], fmt(m["halt_rate"]), fmt(m["false_halt"]),
                     fmt(m["saved"]), fmt(m["regret"]),
                     ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "-"])
    print(f"\nTable 2{label}. Monitor per regime ({kind})")
    print(text_table(["regime", "label", "halt rate", "false-halt", "saved", "regret (pts)",
                      "halt reasons"], rows))
    print()
    return suite, mon, mon_sum, dominated


#: The alphas of Table R2 (the default risk is added).
RISK_LEVELS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def reliability_tables(kind, seed0, n_runs, workers):
    """Calibration of the monitor's P(gain): bins of every evaluation, and among runs halted
    at P < alpha the fraction that later gains more than a point."""
    jobs = [(kind, seed0, i, n_runs) for i in range(n_runs)]
    with Pool(workers) as pool:
        series = dict(pool.map(_p_series_one, jobs, chunksize=8))
    suite = make_family(kind, n_runs, seed0)
    pairs = [(p, g, pm) for i in range(n_runs) for _, p, g, pm in series[i]]
    bins = ((0, 0.005), (0.005, 0.01), (0.01, 0.02), (0.02, 0.05), (0.05, 0.1), (0.1, 0.3),
            (0.3, 0.7), (0.7, 1.0001))
    rows = []
    for lo, hi in bins:
        sel = [t for t in pairs if lo <= t[0] < hi]
        rows.append([kind, f"[{lo:g}, {min(hi, 1):g})", str(len(sel))]
                    + [fmt(float(np.mean([t[c] for t in sel]))) if sel else "-"
                       for c in (0, 2, 1)])
    halts = []
    frontier = []
    for alpha in sorted(set(RISK_LEVELS) | {default_risk()}):
        n_halt = n_false = 0
        saved = []
        for i, sr in enumerate(suite):
            hit = next(((st, g) for st, p, g, _ in series[i] if p < alpha), None)
            if hit is not None:
                n_halt += 1
                n_false += hit[1]
            if sr.truth.regime in MEMORIZING:
                T = sr.run.last_step
                saved.append(0.0 if hit is None else (T - hit[0]) / T)
        halts.append([kind, f"{alpha:.4g}", str(n_halt), str(n_false),
                      fmt(n_false / n_halt) if n_halt else "-", fmt(n_false / n_runs, 4),
                      fmt(float(np.mean(saved)))])
        frontier.append({"alpha": alpha, "false": n_false / n_runs,
                         "saved_mem": float(np.mean(saved))})
    return rows, halts, frontier


def bayes_reference(kind, n_runs, workers):
    """The held-out-only (blind) Bayes observer's best saved (mem) at <= 1% false halts on the
    suite (benchmarks/bound_memorizing.py for the datasets family, bound_lagged.py for the
    lagged one), or None when its module is missing."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        if kind == "lagged":
            import bound_lagged as bl
            return bl.best_saved_at(cap=0.01, runs=n_runs, workers=workers)
        import bound_memorizing as bm
    except ImportError:
        return None
    suite = make_suite(1002, seed=0, mix="standard")[:n_runs]
    with Pool(workers) as pool:
        posts = pool.map(_bound_one, range(len(suite)), chunksize=8)
    best = bm.best_at(bm.frontier(posts, suite, "blind", bm.ALPHAS_FINE))
    return None if best is None else {"false": best["false"], "saved_mem": best["saved_mem"],
                                      "alpha": best["alpha"]}


def _bound_one(i):
    import bound_memorizing as bm
    sr = _suite_run("standard", 0, i, 1002)
    return bm.run_posterior(sr, bm.Resolution(), stop_below=min(bm.ALPHAS))


def cost_tables(baseline_rev: str | None, suite_run_s: float = math.nan):
    """Print Tables 5 and 5b; return the detector rows and the monitor costs."""
    print("Table 5. Cost")
    det_rows = detector_costs()
    print(text_table(["detector", "us/update p50", "us/update p99", "state bytes @1k",
                      "state bytes @5k"], det_rows))
    mc = monitor_costs(baseline_rev)
    print(text_table(["monitor (with fits)", "value"], [
        ["us/update p50", fmt(mc["p50_us"], 1)], ["us/update p99", fmt(mc["p99_us"], 1)],
        ["us/update mean (amortized)", fmt(mc["mean_us"], 1)],
        ["10,000-step replay (s)", fmt(mc["replay_10k_s"], 2)],
        ["1,000-step replay, every step (s, mean of 4 runs)", fmt(mc["replay_1k_s"], 3)],
        ["peak traced memory, 10,000-step replay (MiB)", fmt(mc["peak_mb_10k"], 1)],
        ["mean replay of a 500-step suite run (s)", fmt(suite_run_s, 3)]]))
    print("  targets: detectors <= 20 us p50; with fits <= 500 us amortized; 10k replay <= 10 s")
    rel = mc["release"]
    rows = []
    for key, label in (("p50", "update p50 (ms)"), ("p99", "update p99 (ms)"),
                       ("mean", "update mean (ms)"), ("max", "update max (ms)"),
                       ("mb_100k", "memory kept after 100,000 updates (MiB)")):
        a = mc["here"][key]
        b = rel[key] if rel else math.nan
        rows.append([label, fmt(a, 3), fmt(b, 3), fmt(a / b if b else math.nan, 2)])
    print(f"\nTable 5b. Side by side on one 10,000-step run (evaluation every 25 steps): this "
          f"tree and the release {baseline_rev or '(none)'}, timed alternately "
          f"{COST_REPEATS} times each (medians)")
    print(text_table(["measure", "now", "release", "ratio"], rows))
    print("  targets: p99 <= 2 ms, amortized <= 0.3 ms, 100k-step memory <= 10 MB\n")
    return det_rows, mc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small suites (smoke check)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--baseline-rev", default="f3d789c",
                    help="git revision whose monitor the cost table is compared with "
                         "(default: the release before Engine v2)")
    ap.add_argument("--no-bayes", action="store_true",
                    help="skip the Bayes reference observers (Table F)")
    ap.add_argument("--cost-only", action="store_true",
                    help="only the cost tables (5 and 5b), on a quiet machine")
    args = ap.parse_args(argv)
    if args.cost_only:
        _, mc = cost_tables(args.baseline_rev)
        here = mc["here"]
        print(f"p99 {here['p99']:.3f} ms (target 2), amortized {here['mean']:.3f} ms (target "
              f"0.3), memory after 100,000 updates {here['mb_100k']:.1f} MiB (target 10)")
        return 0
    n_std, n_hard, n_lag, n_rel = (120, 60, 120, 60) if args.quick else (1002, 300, 1002, 400)
    t_start = time.perf_counter()
    print(f"Suites: satmon.datasets standard mix ({n_std} runs, seed 0, T = 500) and the lagged "
          f"family ({n_lag} runs, seed 0, T 100-2,000); hard mix {n_hard} runs (seed 1) for the "
          "regime call. The prior was fitted on seed 100 of the datasets family, the lab runs and "
          "the real logs (calibrate_prior.py); the lagged family is held out.\n")
    suite, mon, mon_sum, dominated = family_tables("standard", 0, n_std, args.workers, "a")
    lag_suite, lag_mon, lag_sum, lag_dom = family_tables("lagged", 0, n_lag, args.workers, "b")
    t_replays = time.perf_counter() - t_start

    # Calibration of the posterior.
    rel_rows, halt_rows, frontiers = [], [], {}
    for kind in ("standard", "lagged"):
        r, h, f = reliability_tables(kind, 0, n_rel, args.workers)
        rel_rows += r
        halt_rows += h
        frontiers[kind] = f
    print(f"Table R1. Reliability of P(held-out gain >= 1 point) at every evaluation after "
          f"warm-up (first {n_rel} runs of each suite, a monitor that never halts; bins of the "
          "calibrated P the monitor reports, the posterior model's own mean P beside it)")
    print(text_table(["suite", "P bin", "evaluations", "mean P", "mean model P",
                      "observed gain frequency"], rel_rows))
    print("\nTable R2. Halting at the first evaluation with P < alpha: among the runs halted, "
          "the fraction that later gained more than a point (target: at most about alpha)")
    print(text_table(["suite", "alpha", "runs halted", "later gained", "fraction",
                      "false-halt (all runs)", "saved (mem)"], halt_rows))
    print()

    # The reference frontier.
    ref_rows = []
    bayes = {}
    for kind, summ, n in (("standard", mon_sum, n_std), ("lagged", lag_sum, n_lag)):
        b = None if args.no_bayes else bayes_reference(kind, n, args.workers)
        bayes[kind] = b
        ratio = (summ["saved_mem"] / b["saved_mem"]) if b and b["saved_mem"] > 0 else math.nan
        ref_rows.append([kind, fmt(summ["false_halt"], 4), fmt(summ["saved_mem"]),
                         "n/a" if b is None else fmt(b["false"], 4),
                         "n/a" if b is None else fmt(b["saved_mem"]),
                         "n/a" if b is None else f"{b['alpha']:.3g}", fmt(ratio)])
    print("Table F. The monitor against the held-out-only Bayes observer that knows the suite's "
          "generator priors exactly (its best point at <= 1% false halts)")
    print(text_table(["suite", "monitor false-halt", "monitor saved (mem)", "Bayes false-halt",
                      "Bayes saved (mem)", "Bayes alpha", "ratio"], ref_rows))
    print("  target: ratio >= 0.85 at <= 1% false halts\n")

    # 3. t_sat error.
    rows = []
    tsat_median = math.nan
    for which in ("t_sat_clean", "t_sat_noisy"):
        errs = [abs(r["t_sat_est"] - r[which]) / r[which] for r in mon
                if math.isfinite(r[which]) and math.isfinite(r["t_sat_est"])]
        n_true = sum(math.isfinite(r[which]) for r in mon)
        if which == "t_sat_clean" and errs:
            tsat_median = float(np.median(errs))
        rows.append([which, str(n_true), str(len(errs)), fmt(float(np.median(errs))) if errs
                     else "n/a", fmt(float(np.percentile(errs, 90))) if errs else "n/a"])
    print("Table 3. |estimated t_sat - true t_sat| / true t_sat at the decision "
          "(halt, else last update)")
    print(text_table(["truth", "runs with finite truth", "with an estimate", "median rel. err",
                      "p90 rel. err"], rows))
    print("  target: median <= 0.15\n")

    # 4. Regime call.
    rows, primary = regime_rows(n_hard)
    print("Table 4. Regime call from held-out evidence (one-vs-rest AUROC, memorizing-vs-"
          "generalizing AUROC, top-label ECE)")
    print("  (a) primary: runs whose 500-step budget holds ~k evaluations (every 500/k steps), "
          "called at the last step;")
    print("  (b) the call after the first k evaluations of runs evaluated every 10 or 25 steps.")
    print(text_table(["reading", "mix", "k", "runs"] + [f"AUROC {c}" for c in CLASSES]
                     + ["macro AUROC", "mem-vs-gen AUROC", "ECE"], rows))
    print("  target (hard mix, 20 points, reading (a)): AUROC >= 0.90, ECE <= 0.05\n")

    # 5. Cost.
    det_rows, mc = cost_tables(args.baseline_rev,
                               float(np.mean([r["seconds"] for r in mon])))

    # 6. Real logs.
    print("Table 6. Replay of the real logs in ../shared/real-logs (no labels; GSM8K's held-out "
          "size 1,319). 'false halt': a later 3-evaluation mean beats the one at the halt by "
          "more than max(1 point, 2 SE); 'evals late': evaluations between the step after which "
          "held-out stopped improving (by that rule; no earlier than the warm-up) and the halt")
    real_rows, lags, real_false = real_log_rows()
    print(text_table(["log", "T", "halt step", "reason", "compute saved", "false halt",
                      "evals late", "regret", "message"], real_rows))
    lag_median = float(np.median(lags)) if lags else math.nan

    # 7. Targets.
    def met(ok):
        return "met" if ok else "NOT MET"

    det_p50 = max(float(r[1]) for r in det_rows)
    bounded = all(int(r[4]) <= 1.5 * int(r[3]) for r in det_rows)
    not_dominated = [n for n, d in dominated + lag_dom if not d]
    targets = []
    for kind, summ in (("datasets", mon_sum), ("lagged", lag_sum)):
        b = bayes.get("standard" if kind == "datasets" else "lagged")
        ratio = summ["saved_mem"] / b["saved_mem"] if b and b["saved_mem"] > 0 else math.nan
        # The ratio compares points on the frontier only when both are at <= 1% false halts.
        comparable = summ["false_halt"] <= 0.01
        targets += [
            [f"{kind}: false-halt rate <= 0.010", fmt(summ["false_halt"], 4),
             met(summ["false_halt"] <= 0.01)],
            [f"{kind}: saved (mem) >= 0.85 x Bayes held-out-only observer",
             f"{fmt(summ['saved_mem'])} / {fmt(b['saved_mem']) if b else 'n/a'} = {fmt(ratio)}"
             + ("" if comparable else " (monitor above 1% false halts)"),
             (met(ratio >= 0.85) if comparable else "NOT MET") if math.isfinite(ratio)
             else "not measured"],
            [f"{kind}: mean regret <= 0.3 points", fmt(summ["regret"]),
             met(summ["regret"] <= 0.3)]]
    targets += [
        ["real logs: no false halt (later gain > max(1 pt, 2 SE))", str(real_false),
         met(real_false == 0)],
        ["105-step verl runs: median evaluations late <= 6", fmt(lag_median, 1),
         met(lag_median <= 6) if math.isfinite(lag_median) else "not measured"],
        ["dominates every baseline (false-halt, saved mem), both suites",
         "all" if not not_dominated else "not: " + ", ".join(sorted(set(not_dominated))),
         met(not not_dominated)],
        ["median |t_sat error| <= 15% of true t_sat", fmt(tsat_median),
         met(tsat_median <= 0.15)],
        ["regime macro AUROC >= 0.90 (hard, 20 points, (a))", fmt(primary.get("macro")),
         met(primary.get("macro", 0) >= 0.9)],
        ["regime ECE <= 0.05 (hard, 20 points, (a))", fmt(primary.get("ece")),
         met(primary.get("ece", 1) <= 0.05)],
        ["detectors <= 20 us/update p50 (slowest)", fmt(det_p50, 1), met(det_p50 <= 20)],
        ["monitor with fits <= 500 us/update amortized", fmt(mc["mean_us"], 1),
         met(mc["mean_us"] <= 500)],
        ["10,000-step replay <= 10 s", fmt(mc["replay_10k_s"], 2),
         met(mc["replay_10k_s"] <= 10)],
        ["detector memory bounded (state @5k <= 1.5 x @1k)", "yes" if bounded else "no",
         met(bounded)],
        ["update p99 <= 2 ms (10,000-step run)", fmt(mc["p99_10k_ms"], 2),
         met(mc["p99_10k_ms"] <= 2)],
        ["update amortized <= 0.3 ms (10,000-step run)", fmt(mc["mean_10k_ms"], 3),
         met(mc["mean_10k_ms"] <= 0.3)],
        ["monitor memory at 100,000 steps <= 10 MB", fmt(mc["mb_100k"], 1),
         met(mc["mb_100k"] <= 10)],
    ]
    print("\nTable 7. Targets (issues 3 and 11)")
    print(text_table(["target", "measured", "status"], targets))
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s "
          f"(suite replays and baselines {t_replays:.0f} s, {args.workers} workers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
