"""Benchmark of the online saturation monitor against early-stopping baselines.

Run from the repository root:

    python benchmarks/bench_monitor.py            # full: 1,002 standard + 300 hard runs
    python benchmarks/bench_monitor.py --quick    # 120 + 60 runs, for a smoke check

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
import sys
import time
import tracemalloc
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from satmon.datasets import REGIME_LABELS, make_run, make_suite  # noqa: E402
from satmon.detectors import DETECTORS, LinearBOCPD, SlopeTest  # noqa: E402
from satmon.monitor import SaturationMonitor  # noqa: E402
from satmon.regime import CLASSES, classify_regime  # noqa: E402
from satmon.replay import replay  # noqa: E402
from satmon.results import text_table  # noqa: E402

MEMORIZING = {"memorizing", "noisy_label"}
SATURATED_GEN = {"generalizing", "post_saturation_generalization"}


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
        _SUITE_CACHE[key] = make_suite(n_runs, seed=seed0, mix=kind)
    return _SUITE_CACHE[key][i]


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
                           for r in REGIME_LABELS}}


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


def monitor_costs():
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
    return {"replay_1k_s": float(np.mean(thousand)),
            "p50_us": float(np.percentile(t, 50)), "p99_us": float(np.percentile(t, 99)),
            "mean_us": float(t.mean()), "replay_10k_s": secs, "peak_mb_10k": peak,
            "n_updates_10k": len(res.decisions)}


# -- real logs ---------------------------------------------------------------------------------
def real_log_rows():
    from satmon.analysis import read_run

    rows = []
    for path in sorted(glob.glob(str(REPO.parent / "shared" / "real-logs" / "raw" / "*"))):
        try:
            run = read_run(path)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            rows.append([Path(path).name[:48], "-", "-", "-", "-", "-", f"unreadable: {exc}"])
            continue
        res = replay(run)
        rows.append([Path(path).name[:48], str(run.last_step),
                     "-" if res.halt_step is None else str(res.halt_step),
                     "-" if res.reason is None else res.reason.value, fmt(res.compute_saved),
                     fmt(res.regret), res.message[:110]])
    return rows


# -- main --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small suite (smoke check)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    n_std, n_hard = (120, 60) if args.quick else (1002, 300)
    t_start = time.perf_counter()
    suite = make_suite(n_std, seed=0, mix="standard")
    print(f"Suite: {n_std} standard-mix runs (seed 0), {len(REGIME_LABELS)} regimes, "
          f"T = 500; hard mix {n_hard} runs (seed 1, eval every 10) for the regime call.\n")

    jobs = [("standard", 0, i, n_std) for i in range(n_std)]
    with Pool(args.workers) as pool:
        mon = sorted(pool.map(_monitor_one, jobs, chunksize=8), key=lambda r: r["i"])
        base = dict(pool.map(_baselines_one, jobs, chunksize=16))
    t_replays = time.perf_counter() - t_start

    # 1. Monitor vs baselines.
    mon_sum = summarize([r["halt"] for r in mon], suite)
    header = ["method", "setting", "false-halt", "saved (mem)", "saved (sat)", "saved (all)",
              "regret (pts)", "monitor dominates"]
    rows = [["satmon SaturationMonitor", "defaults", fmt(mon_sum["false_halt"]),
             fmt(mon_sum["saved_mem"]), fmt(mon_sum["saved_sat"]), fmt(mon_sum["saved_all"]),
             fmt(mon_sum["regret"]), "-"]]
    best_rows = {}
    dominated = []
    for name, grid in BASELINE_GRIDS.items():
        cands = []
        for j, params in enumerate(grid):
            sm = summarize([base[i][name][j] for i in range(n_std)], suite)
            sm["params"] = params
            cands.append(sm)
        best = pick_best(cands)
        best_rows[name] = best
        dom = (mon_sum["false_halt"] <= best["false_halt"]
               and mon_sum["saved_mem"] >= best["saved_mem"])
        if name != "paper rule post hoc (oracle)":
            dominated.append((name, dom))
        setting = ", ".join(f"{k}={v}" for k, v in best["params"].items()) or "-"
        rows.append([name, setting, fmt(best["false_halt"]), fmt(best["saved_mem"]),
                     fmt(best["saved_sat"]), fmt(best["saved_all"]), fmt(best["regret"]),
                     "yes" if dom else "no"])
    print("Table 1. Monitor vs baselines (each baseline at its best grid setting on the suite)")
    print(text_table(header, rows))
    print("  targets: false-halt <= 0.010 while saved (mem) >= 0.60; mean regret <= 0.5 points;"
          " monitor dominates every baseline on (false-halt, saved (mem)).\n")

    # 2. Per regime.
    rows = []
    for r, m in mon_sum["per_regime"].items():
        reasons = {}
        for row in mon:
            if row["regime"] == r and row["reason"]:
                reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        rows.append([r, REGIME_LABELS[r], fmt(m["halt_rate"]), fmt(m["false_halt"]),
                     fmt(m["saved"]), fmt(m["regret"]),
                     ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "-"])
    print("Table 2. Monitor per regime (standard mix)")
    print(text_table(["regime", "label", "halt rate", "false-halt", "saved", "regret (pts)",
                      "halt reasons"], rows))
    # Recovery margin of tests/test_monitor_recovery.py, on the whole suite: memorizing runs
    # halted with reason MEMORIZING before max(2 x t_sat, the step of the 8th evaluation).
    mem_rows = [(row, sr) for row, sr in zip(mon, suite) if sr.truth.regime in MEMORIZING]
    timely = 0
    for row, sr in mem_rows:
        h = sr.run.heldout["heldout"].steps
        limit = max(2 * sr.truth.t_sat_clean, float(h[min(7, h.size - 1)]))
        timely += row["reason"] == "memorizing" and row["halt"] is not None \
            and row["halt"] <= limit
    timely_frac = timely / max(len(mem_rows), 1)
    print(f"  memorizing + noisy_label runs halted MEMORIZING before max(2 t_sat, 8th "
          f"evaluation): {timely}/{len(mem_rows)} = {timely_frac:.3f}\n")

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
    print("Table 5. Cost")
    det_rows = detector_costs()
    print(text_table(["detector", "us/update p50", "us/update p99", "state bytes @1k",
                      "state bytes @5k"], det_rows))
    mc = monitor_costs()
    print(text_table(["monitor (with fits)", "value"], [
        ["us/update p50", fmt(mc["p50_us"], 1)], ["us/update p99", fmt(mc["p99_us"], 1)],
        ["us/update mean (amortized)", fmt(mc["mean_us"], 1)],
        ["10,000-step replay (s)", fmt(mc["replay_10k_s"], 2)],
        ["1,000-step replay, every step (s, mean of 4 runs)", fmt(mc["replay_1k_s"], 3)],
        ["peak traced memory, 10,000-step replay (MiB)", fmt(mc["peak_mb_10k"], 1)],
        ["mean replay of a 500-step suite run (s)",
         fmt(float(np.mean([r["seconds"] for r in mon])), 3)]]))
    print("  targets: detectors <= 20 us p50; with fits <= 500 us amortized; 10k replay <= 10 s\n")

    # 6. Real logs.
    print("Table 6. Replay of the real logs in ../shared/real-logs (no labels)")
    print(text_table(["log", "T", "halt step", "reason", "compute saved", "regret",
                      "message"], real_log_rows()))

    # 7. Targets.
    def met(ok):
        return "met" if ok else "NOT MET"

    det_p50 = max(float(r[1]) for r in det_rows)
    bounded = all(int(r[4]) <= 1.5 * int(r[3]) for r in det_rows)
    not_dominated = [n for n, d in dominated if not d]
    targets = [
        ["false-halt rate <= 0.010", fmt(mon_sum["false_halt"]),
         met(mon_sum["false_halt"] <= 0.01)],
        ["compute saved on memorizing runs >= 0.60", fmt(mon_sum["saved_mem"]),
         met(mon_sum["saved_mem"] >= 0.6)],
        ["mean regret <= 0.5 points", fmt(mon_sum["regret"]), met(mon_sum["regret"] <= 0.5)],
        ["dominates every baseline (false-halt, saved mem)",
         "all" if not not_dominated else "not: " + ", ".join(not_dominated),
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
        ["memorizing halted MEMORIZING before max(2 t_sat, 8th eval) >= 0.95",
         fmt(timely_frac), met(timely_frac >= 0.95)],
    ]
    print("\nTable 7. Targets (issue 3)")
    print(text_table(["target", "measured", "status"], targets))
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s "
          f"(suite replays and baselines {t_replays:.0f} s, {args.workers} workers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
