"""Benchmark, lab tier: real miniature RLVR runs, scored exactly like the real logs.

Run from the repository root (reads the committed sweep, no training):

    python benchmarks/bench_lab.py                        # benchmarks/lab_runs/
    python benchmarks/bench_lab.py --runs satmon-lab-sweep

The committed logs were written by ``satmon lab sweep`` (the exact command is in
``benchmarks/lab_runs/sweep.json`` and printed below). Each run trained to its last step with
the callback in flag mode, so its whole curve is known and a halt can be scored against what
came after it.

Scoring is the one the real logs get in ``bench_monitor.py``: each run is read from its tidy
``curves.csv`` with ``satmon.analysis.read_run`` and replayed through a default
``SaturationMonitor`` (``satmon.replay.replay``): halt step, reason, compute saved
``(T - halt) / T``, regret (best held-out accuracy after the halt minus the one at the halt).
On top of that the lab knows more than a real log does:

* the regime of two settings holds by construction (a shared rule generalizes; random labels
  can only be memorized), so the regime call is checked against it;
* the exact post-hoc analysis (t_sat, delta_sat, delta_post*) of every run;
* the live callback's own first halt request during training (``run.json``), which must agree
  with the replay (same monitor, same values);
* what the noisy-label, proxy-reward and pre-RL settings did, reported as measured.

It prints tables and never asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from satmon.lab.runner import read_lab_run  # noqa: E402
from satmon.lab.sweep import SWEEP_FILE  # noqa: E402
from satmon.replay import replay  # noqa: E402
from satmon.results import text_table  # noqa: E402
from satmon.saturation import analyze_saturation  # noqa: E402

DEFAULT_RUNS = REPO / "benchmarks" / "lab_runs"


def fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    f = float(v)
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return "never"
    return f"{f:.{digits}g}" if not f.is_integer() else str(int(f))


def mean(values):
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else math.nan


def mean_sd(values, digits=3):
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return fmt(vals[0], digits)
    return f"{fmt(float(np.mean(vals)), digits)} +- {fmt(float(np.std(vals, ddof=1)), 2)}"


def score_run(folder: Path) -> dict:
    """Read one lab run and score it like a real log, plus what the lab knows."""
    run = read_lab_run(folder)
    meta = run.metadata
    res = replay(run)
    final = res.final_decision
    at = final.evidence if final is not None else None
    analysis = analyze_saturation(run)
    gain = analysis.gains.get("heldout_acc")
    held = run.heldout["heldout_acc"]
    aux = run.aux
    true_acc = aux.get("train_true_accuracy")
    live = meta.get("first_halt_decision") or {}
    faith = (meta.get("pre_rl") or {}).get("faithfulness") or {}
    faith_curve = aux.get("faithfulness")
    tr = run.train_reward
    return {
        "setting": meta["setting"], "seed": meta["seed"], "T": run.last_step,
        "expected": meta.get("expected_regime"),
        "halt": res.halt_step, "reason": None if res.reason is None else res.reason.value,
        "compute_saved": res.compute_saved, "regret": res.regret,
        "regime": at.most_likely_regime if at is not None else "undetermined",
        "p_memorizing": at.regime.get("memorizing", math.nan) if at is not None else math.nan,
        "live_halt": live.get("step"), "live_reason": live.get("reason"),
        "t_sat": analysis.t_sat,
        "delta_sat": gain.delta_sat if gain is not None else math.nan,
        "delta_post": gain.delta_post if gain is not None else math.nan,
        "m0": float(held.values[0]), "m_final": float(held.values[-1]),
        "m_max": float(held.values.max()),
        "reward_first10": float(np.mean(tr.values[:10])),
        "reward_last20": float(np.mean(tr.values[-20:])),
        "true_acc_last20": float(np.mean(true_acc.values[-20:])) if true_acc is not None
        else math.nan,
        "faith_pre_rl": faith.get("mean", math.nan),
        "faith_final": float(faith_curve.values[-1]) if faith_curve is not None else math.nan,
        "replay_s": res.seconds,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=str(DEFAULT_RUNS),
                    help="a satmon lab sweep folder (default benchmarks/lab_runs)")
    args = ap.parse_args(argv)
    root = Path(args.runs)
    folders = sorted(p.parent for p in root.glob("*/s*/run.json"))
    if not folders:
        print(f"no lab runs under {root}: run `satmon lab sweep --out {root}` first",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rows = [score_run(f) for f in folders]
    sweep = json.loads((root / SWEEP_FILE).read_text()) if (root / SWEEP_FILE).is_file() else {}
    print(f"Lab tier: {len(rows)} runs from {root}")
    if sweep:
        print(f"  regenerate with: {sweep.get('command')}  "
              f"(training took {fmt(sweep.get('wall_s'), 3)} s)")
    print()

    print("Table L1. Every run, scored like the real logs (replay of a default monitor)")
    print(text_table(
        ["setting", "seed", "T", "halt", "reason", "saved", "regret", "regime", "by design",
         "live halt", "t_sat", "M(0)", "M(T)", "dsat", "dpost*"],
        [[r["setting"], str(r["seed"]), str(r["T"]), fmt(r["halt"]), fmt(r["reason"]),
          fmt(r["compute_saved"], 2), fmt(r["regret"], 2), r["regime"],
          r["expected"] or "-",
          "-" if r["live_halt"] is None else f"{r['live_halt']} ({r['live_reason']})",
          fmt(r["t_sat"]), fmt(r["m0"], 2), fmt(r["m_final"], 2), fmt(r["delta_sat"], 2),
          fmt(r["delta_post"], 2)] for r in rows]))
    print()

    by = defaultdict(list)
    for r in rows:
        by[r["setting"]].append(r)
    print("Table L2. Per setting, mean +- sd over seeds")
    print(text_table(
        ["setting", "runs", "halted", "halt step", "compute saved", "regret", "t_sat",
         "M(0)", "max M", "M(T)", "reward last 20", "true acc last 20", "regime calls"],
        [[name, str(len(rs)), f"{sum(r['halt'] is not None for r in rs)}/{len(rs)}",
          mean_sd([r["halt"] for r in rs]), mean_sd([r["compute_saved"] for r in rs], 2),
          mean_sd([r["regret"] for r in rs], 2), mean_sd([r["t_sat"] for r in rs]),
          mean_sd([r["m0"] for r in rs], 2), mean_sd([r["m_max"] for r in rs], 2),
          mean_sd([r["m_final"] for r in rs], 2), mean_sd([r["reward_last20"] for r in rs], 2),
          mean_sd([r["true_acc_last20"] for r in rs], 2),
          ", ".join(f"{k} {v}" for k, v in sorted(
              {c: sum(r["regime"] == c for r in rs) for c in {r["regime"] for r in rs}}
              .items()))]
         for name, rs in by.items()]))
    print()

    print("Table L3. Settings whose regime holds by construction")
    checks = []
    for r in rows:
        if r["expected"] == "generalizing":
            ok = r["halt"] is None or r["regret"] <= 0.01
            checks.append([r["setting"], str(r["seed"]), "generalizing",
                           "not halted, or halted with regret <= 1 point",
                           "yes" if ok else "NO", fmt(r["halt"]), fmt(r["regret"], 2)])
        elif r["expected"] == "memorizing":
            ok = r["reason"] == "memorizing"
            checks.append([r["setting"], str(r["seed"]), "memorizing",
                           "halted with reason MEMORIZING", "yes" if ok else "NO",
                           fmt(r["halt"]), fmt(r["compute_saved"], 2)])
    print(text_table(["setting", "seed", "regime", "check", "passes", "halt", "saved/regret"],
                     checks))
    print()

    print("Table L4. Live callback vs replay (same monitor, same values: should agree)")
    agree = sum((r["live_halt"] == r["halt"]) for r in rows)
    print(f"  first halt request during training == replay halt step on {agree}/{len(rows)} runs")
    disagree = [[r["setting"], str(r["seed"]), fmt(r["live_halt"]), fmt(r["halt"])]
                for r in rows if r["live_halt"] != r["halt"]]
    if disagree:
        print(text_table(["setting", "seed", "live", "replay"], disagree))
    print()

    print("Table L5. Findings, as measured")
    find = []
    for name in ("generalizing", "noisy-25", "noisy-50"):
        rs = by.get(name)
        if rs:
            find.append([name, "labels: reward (noisy labels) vs true accuracy vs held-out",
                         f"reward {mean_sd([r['reward_last20'] for r in rs], 2)}; "
                         f"true acc {mean_sd([r['true_acc_last20'] for r in rs], 2)}; "
                         f"held-out M(T) {mean_sd([r['m_final'] for r in rs], 2)}"])
    for name in ("majority-vote", "self-certainty"):
        rs = by.get(name)
        if rs:
            find.append([name, "proxy: held-out max vs end (collapse = max - end)",
                         f"max {mean_sd([r['m_max'] for r in rs], 2)}; "
                         f"end {mean_sd([r['m_final'] for r in rs], 2)}; "
                         f"drop {mean_sd([r['m_max'] - r['m_final'] for r in rs], 2)}; "
                         f"M(0) {mean_sd([r['m0'] for r in rs], 2)}"])
    for name in ("sft-answers", "sft-traces"):
        rs = by.get(name)
        if rs:
            find.append([name, "pre-RL: faithfulness before RL, t_sat, gains",
                         f"faithfulness {mean_sd([r['faith_pre_rl'] for r in rs], 2)} -> "
                         f"{mean_sd([r['faith_final'] for r in rs], 2)}; "
                         f"t_sat {mean_sd([r['t_sat'] for r in rs])}; "
                         f"M(0) {mean_sd([r['m0'] for r in rs], 2)}; "
                         f"dsat {mean_sd([r['delta_sat'] for r in rs], 2)}; "
                         f"M(T) {mean_sd([r['m_final'] for r in rs], 2)}"])
    for name in ("scarce-8",):
        rs = by.get(name)
        if rs:
            find.append([name, "8 prompts of the shared rule",
                         f"t_sat {mean_sd([r['t_sat'] for r in rs])}; "
                         f"M(T) {mean_sd([r['m_final'] for r in rs], 2)}; "
                         f"halted {sum(r['halt'] is not None for r in rs)}/{len(rs)}"])
    print(text_table(["setting", "question", "measured"], find))
    print(f"\nscored {len(rows)} runs in {time.perf_counter() - t0:.1f} s "
          f"(replay {sum(r['replay_s'] for r in rows):.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
