"""Benchmark, lab tier: does the pre-RL probe predict the regime RL then shows?

Run from the repository root:

    python benchmarks/bench_probe.py --quick      # 5 variants x 3 seeds x 100 GRPO steps
    python benchmarks/bench_probe.py              # 5 variants x 8 seeds x 300 GRPO steps
    python benchmarks/bench_probe.py --quick --original   # the first design (see below)

Pre-RL variants, all on the lab's running-sum task with 8 RL prompts and 128 SFT prompts that
never contain the symbol ``"d"`` (``sft_withheld``; RL and held-out prompts are drawn from every
prompt, ~88% of held-out prompts contain ``"d"``), 400 SFT steps each:

* ``answers-withheld``: SFT on final answers only (no scratchpad: the exact rubric scores 0);
* ``traces-unfaithful-R`` for R in 0, 0.25, 0.5, 0.75: SFT on scratchpads of which a share R
  is unfaithful (``sft_unfaithful``: the true answer after steps that do not conclude it,
  rubric 0). R = 0 is the ``sft-traces-withheld`` preset, R = 0.5 ``sft-traces-unfaithful``.

Why this design. The first one (``--original``: SFT on every symbol for 40 / 150 / 400 steps)
made faithfulness and held-out accuracy the same measurement: a scratchpad whose every step is
valid concludes the right answer, so the most faithful models solved the held-out set before RL
(no headroom), the others had not learned the steps, and the faithfulness axis only ran along
SFT length. Withholding one symbol leaves every seed the same, measurable headroom (held-out
prompts without ``"d"`` are solved before RL, the others are not), and the unfaithful share
moves faithfulness at a fixed SFT length and fixed competence.

For each variant and seed the benchmark rebuilds the pre-RL model exactly as
``satmon.lab.runner.run_lab`` does (same seed, same splits, same SFT pairs from
``LabSetting.sft_pairs``), probes it with :func:`satmon.probe.probe` (8 held-out prompts x 16
rollouts, exact judge, temperature 1 - the prompts and seed ``run_lab`` uses for its own
``pre_rl`` faithfulness, which the benchmark checks it reproduces), then runs RL with
``run_lab`` (flag mode, nothing halted) and reads the observed regime from held-out accuracy
against true labels: **generalizing** when the held-out gain over the run,
``mean(last 3 evaluations) - M(0)``, is at least ``--min-gain`` (0.05). The table also shows the
training reward at step 1 and over the last 10 steps: a reward that climbs while held-out
accuracy does not is memorization.

It reports the AUROC of each pre-RL measure (faithfulness, raw diversity = distinct final
answers per prompt, faithful diversity) for the observed regime, with a 95% bootstrap interval
over seeds (seeds resampled within each variant), and what the runs say about the probe's
faithfulness threshold (``satmon.probe`` default 0.75, uncalibrated). AUROC is undefined when
every run shows the same regime; the table then says so. It prints tables and never asserts.

What the probe's prior changes in the monitor (no torch, about 5 minutes on one core):

    python benchmarks/bench_probe.py --monitor-prior [--runs 300] [--q 0.5 0.7 0.9 1.0]

On a seeded synthetic suite (``satmon.datasets.make_suite(runs, seed=0)``, every regime in
turn) each run is replayed by the default monitor (prior off) and with the probe's prior on
(``GainPrior.with_probe``, a confident call, so at the cap: likelihood ratio 4 on the odds of
a flat held-out series). The probe is simulated: with probability ``q`` it calls a run's true
class (generalizing for generalizing runs, memorizing for memorizing and collapsing runs), else
the other one (``q = 0.5``: a coin). One uniform draw per run serves every ``q``, so the rows
differ only by the probe's accuracy. False halt, compute saved and regret are defined as in
``benchmarks/bench_monitor.py`` (its ``summarize``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROBE_PROMPTS = 8
PROBE_ROLLOUTS = 16


#: Fractions of unfaithful SFT scratchpads of the validation variants.
UNFAITHFUL_RATES = (0.0, 0.25, 0.5, 0.75)


def variants(original: bool = False):
    """The pre-RL variants: the headroom design (default) or the first, original one."""
    from satmon.lab.settings import SETTINGS

    answers, traces = SETTINGS["sft-answers"], SETTINGS["sft-traces"]
    if original:
        return {"sft-answers": answers,
                "sft-traces-40": traces.with_overrides(name="sft-traces-40", sft_steps=40),
                "sft-traces": traces,
                "sft-traces-400": traces.with_overrides(name="sft-traces-400", sft_steps=400)}
    withheld = SETTINGS["sft-traces-withheld"]
    out = {"answers-withheld": answers.with_overrides(
        name="answers-withheld", sft_steps=withheld.sft_steps,
        sft_withheld=withheld.sft_withheld)}
    for rate in UNFAITHFUL_RATES:
        name = f"traces-unfaithful-{rate:g}"
        out[name] = withheld.with_overrides(name=name, sft_unfaithful=rate)
    return out


def pre_rl_model(setting, seed):
    """The model ``run_lab`` trains with RL, before RL (same construction, public functions)."""
    from satmon.lab.models import build_char_tokenizer, build_tiny_model
    from satmon.lab.sft import supervised_finetune

    splits = setting.splits(seed)
    tok = build_char_tokenizer(setting.task.alphabet)
    model = build_tiny_model(tok, seed=seed)
    if splits.format:
        supervised_finetune(model, tok, [(e.prompt, e.answer) for e in splits.format],
                            steps=setting.format_steps,
                            learning_rate=setting.sft_learning_rate, seed=seed + 1)
    supervised_finetune(model, tok, setting.sft_pairs(splits, seed), steps=setting.sft_steps,
                        learning_rate=setting.sft_learning_rate, seed=seed)
    return model, tok, splits


def probe_pre_rl(setting, seed):
    from satmon.lab.traces import final_answer, scratchpad
    from satmon.probe import ExactJudge, probe

    model, tok, splits = pre_rl_model(setting, seed)
    prompts = list(splits.rl.heldout_prompts[:PROBE_PROMPTS])
    answers = [setting.task.answer(p) for p in prompts]
    with_trace = setting.with_trace

    def extract(c):
        return final_answer(c, with_trace=with_trace)

    return probe(model, prompts, answers, tokenizer=tok, verifier=setting.verifier(),
                 judge=ExactJudge(setting.task), k=PROBE_ROLLOUTS, temperature=1.0, seed=seed,
                 max_new_tokens=setting.task.length + 2, batch_size=PROBE_PROMPTS,
                 extract_answer=extract,
                 extract_reasoning=scratchpad if with_trace else (lambda c: None))


def auroc(scores, labels):
    """P(score of a positive > score of a negative), ties half; NaN without both classes."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def bootstrap_auroc(rows, key, *, seed=0, resamples=2000):
    """AUROC and a 95% interval, resampling seeds within each variant."""
    rng = np.random.default_rng(seed)
    groups = {}
    for r in rows:
        groups.setdefault(r["variant"], []).append(r)
    point = auroc([r[key] for r in rows], [r["generalizing"] for r in rows])
    values = []
    for _ in range(resamples):
        sample = [g[i] for g in groups.values() for i in rng.integers(0, len(g), len(g))]
        values.append(auroc([r[key] for r in sample], [r["generalizing"] for r in sample]))
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    if values.size < resamples // 2:
        return point, math.nan, math.nan
    return point, float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def threshold_evidence(rows) -> str:
    """What the table says about the probe's faithfulness threshold (a line of text)."""
    from satmon.probe.measure import DEFAULT_FAITHFULNESS_THRESHOLD as default

    y = np.array([r["generalizing"] for r in rows], bool)
    f = np.array([r["faith"] for r in rows], float)
    n_gen = int(y.sum())

    def agree(t):
        return float(np.mean((f > t) == y))

    line = (f"threshold: the default {default:g} calls {int((f > default).sum())} of {len(rows)} "
            f"runs generalizing and agrees with {agree(default):.0%} of observed regimes")
    if n_gen in (0, len(rows)):
        return line + "; every run shows one regime, so the table cannot calibrate it"
    cuts = np.unique(f)
    best = max(cuts, key=agree)
    return line + (f"; the best cut of these runs (faithfulness > {best:.3f}) agrees with "
                   f"{agree(best):.0%} ({n_gen} generalizing runs: too few to calibrate on)"
                   if n_gen < 5 else f"; the best cut, faithfulness > {best:.3f}, agrees "
                   f"with {agree(best):.0%}")


def fmt(x, digits=3):
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) \
        else f"{x:.{digits}f}"


_SUITE: dict = {}


def _replay_three(i_runs):
    """Halt steps of run ``i`` with the prior off, a generalizing probe and a memorizing one."""
    i, n_runs = i_runs
    from satmon.datasets import make_suite
    from satmon.monitor.posterior import default_prior
    from satmon.replay import replay

    if n_runs not in _SUITE:
        _SUITE[n_runs] = make_suite(n_runs, seed=0)
    sr = _SUITE[n_runs][i]
    base = default_prior()
    return {"off": replay(sr.run).halt_step,
            "gen": replay(sr.run, prior=base.with_probe(1.0)).halt_step,
            "mem": replay(sr.run, prior=base.with_probe(0.0)).halt_step}


def monitor_prior_tables(n_runs, qs, workers) -> None:
    """Print what the probe's prior changes on the synthetic suite (see the module docstring)."""
    from multiprocessing import Pool

    from bench_monitor import summarize
    from satmon.datasets import make_suite
    from satmon.results import text_table

    start = time.perf_counter()
    suite = make_suite(n_runs, seed=0)
    jobs = [(i, n_runs) for i in range(n_runs)]
    if workers > 1:
        with Pool(workers) as pool:
            halts = pool.map(_replay_three, jobs, chunksize=4)
    else:
        halts = [_replay_three(j) for j in jobs]
    draws = np.random.default_rng(12345).random(n_runs)
    is_gen = np.array([sr.truth.label == "generalizing" for sr in suite])

    def row(label, chosen):
        s = summarize(chosen, suite)
        per = s["per_regime"]
        return [label, fmt(100 * s["false_halt"], 1), fmt(100 * s["saved_mem"], 1),
                fmt(100 * s["saved_sat"], 1), fmt(100 * s["saved_all"], 1), fmt(s["regret"], 2),
                fmt(100 * per.get("slow", {}).get("halt_rate", math.nan), 1)]

    rows = [row("prior off (default)", [h["off"] for h in halts])]
    for q in qs:
        says_gen = np.where(draws < q, is_gen, ~is_gen)
        rows.append(row(f"probe prior, q = {q:g}",
                        [h["gen"] if g else h["mem"] for h, g in zip(halts, says_gen)]))
    rows.append(row("prior, probe always 'mem'", [h["mem"] for h in halts]))
    rows.append(row("prior, probe always 'gen'", [h["gen"] for h in halts]))
    changed = sum(h["gen"] != h["off"] or h["mem"] != h["off"] for h in halts)
    print(f"Probe prior in the monitor: {n_runs} synthetic runs (make_suite seed 0, "
          f"{int(is_gen.sum())} generalizing), likelihood ratio cap 4; "
          f"q = P(probe calls the true class)")
    print(text_table(["monitor", "false halt %", "saved mem %", "saved sat-gen %",
                      "saved all %", "regret (pts)", "slow halted %"], rows))
    print(f"runs whose halt step moves with either call: {changed} of {n_runs}; "
          f"wall time {time.perf_counter() - start:.0f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--monitor-prior", action="store_true",
                    help="measure what the probe's prior changes in the monitor, on synthetic "
                         "runs with a simulated probe (no lab runs)")
    ap.add_argument("--runs", type=int, default=300, help="--monitor-prior: suite size")
    ap.add_argument("--q", type=float, nargs="+", default=[0.5, 0.7, 0.9, 1.0],
                    help="--monitor-prior: the simulated probe's accuracies")
    ap.add_argument("--workers", type=int, default=1, help="--monitor-prior: processes")
    ap.add_argument("--quick", action="store_true",
                    help="3 seeds x 100 GRPO steps (about 15 minutes on 1-2 loaded cores)")
    ap.add_argument("--original", action="store_true",
                    help="the first design's variants (SFT on every symbol, 40-400 steps)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3 / 8)")
    ap.add_argument("--steps", type=int, default=None,
                    help="GRPO steps per run (default 100 with --quick, else the presets' 300)")
    ap.add_argument("--min-gain", type=float, default=0.05,
                    help="held-out gain that counts as generalizing (default 0.05)")
    ap.add_argument("--out", default=None, help="folder for the lab runs (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.monitor_prior:
        monitor_prior_tables(args.runs, args.q, args.workers)
        return 0
    from satmon._optional import require
    from satmon.lab.runner import run_lab

    require("torch").set_num_threads(1)
    seeds = list(range(args.seeds or (3 if args.quick else 8)))
    steps = args.steps or (100 if args.quick else None)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        root = Path(args.out or tmp)
        for name, setting in variants(args.original).items():
            if steps is not None:
                setting = setting.with_overrides(max_steps=steps)
            for seed in seeds:
                result = probe_pre_rl(setting, seed)
                run = run_lab(setting, seed=seed, out_dir=root / name / f"s{seed}",
                              action="flag", experiment="bench-probe")
                curve = run.curves["heldout_acc"]
                m0 = curve[0][1]
                late = float(np.mean([v for _, v in curve[-3:]]))
                reward = [v for _, v in run.curves["train_reward"]]
                reward_end = float(np.mean(reward[-10:]))
                lab_faith = run.pre_rl.get("faithfulness", {}).get("mean")
                d = result.diversity
                rows.append({"variant": name, "seed": seed, "faith": result.faithfulness,
                             "faith_lo": result.faithfulness_interval[0],
                             "faith_hi": result.faithfulness_interval[1],
                             "lab_faith": lab_faith, "acc": result.accuracy,
                             "raw_div": d["distinct_answers"],
                             "faith_div": d["faithful_diversity"], "m0": m0, "late": late,
                             "reward0": reward[0], "reward_end": reward_end,
                             "gain": late - m0, "generalizing": late - m0 >= args.min_gain})
                print(f"  {name} s{seed}: faithfulness {fmt(result.faithfulness)} "
                      f"(lab {fmt(lab_faith)}), held-out {fmt(m0)} -> {fmt(late)}",
                      file=sys.stderr, flush=True)
    print(f"Pre-RL probe vs observed regime ({len(seeds)} seeds, "
          f"{steps or 'preset'} GRPO steps, generalizing = held-out gain >= {args.min_gain})")
    header = ["variant", "seed", "faith", "95% CI", "acc", "raw div", "faith div",
              "reward 1->end", "M(0)", "M(end)", "gain", "regime"]
    table = [[r["variant"], str(r["seed"]), fmt(r["faith"]),
              f"{fmt(r['faith_lo'])}-{fmt(r['faith_hi'])}", fmt(r["acc"]),
              fmt(r["raw_div"], 2), fmt(r["faith_div"]),
              f"{fmt(r['reward0'], 2)}->{fmt(r['reward_end'], 2)}", fmt(r["m0"]),
              fmt(r["late"]), f"{r['gain']:+.3f}", "gen" if r["generalizing"] else "mem"]
             for r in rows]
    from satmon.results import text_table

    print(text_table(header, table))
    print()
    print("AUROC for the observed regime (95% bootstrap interval over seeds)")
    n_gen = sum(r["generalizing"] for r in rows)
    auc_rows = []
    for key, label in (("faith", "faithfulness"), ("raw_div", "raw diversity (distinct "
                                                              "answers)"),
                       ("faith_div", "faithful diversity")):
        point, lo, hi = bootstrap_auroc(rows, key)
        auc_rows.append([label, fmt(point), f"{fmt(lo)}-{fmt(hi)}"])
    print(text_table(["pre-RL measure", "AUROC", "95% CI"], auc_rows))
    print(f"{n_gen} of {len(rows)} runs generalizing"
          + (" - AUROC undefined: every run shows the same regime" if n_gen in (0, len(rows))
             else ""))
    print(threshold_evidence(rows))
    mismatch = [r for r in rows if r["lab_faith"] is not None
                and abs(r["lab_faith"] - r["faith"]) > 1e-9]
    print(f"probe reproduces run_lab's own pre-RL faithfulness: "
          f"{'yes' if not mismatch else f'NO ({len(mismatch)} runs differ)'}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
