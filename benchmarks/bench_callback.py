"""Overhead of SaturationCallback per training step (its own work, not held-out generation).

Run from the repository root:

    python benchmarks/bench_callback.py                # 300 steps, ~1 minute on 2 cores
    python benchmarks/bench_callback.py --steps 500 --grpo-steps 100

Two measurements, printed as tables (timings are never asserted):

1. **Hooks alone.** The callback's ``on_step_end`` and ``on_log`` are driven with real
   ``TrainingArguments`` / ``TrainerState`` / ``TrainerControl`` objects and log dicts shaped
   like TRL 1.x GRPO logs (25 keys; an ``eval_`` log every 25 steps). Rows: the engine alone
   (``SaturationMonitor.update`` with the same inputs), the callback without MLflow, and the
   callback with an MLflow sink on a local sqlite store (records are spooled on the training
   thread; the sender thread shares the process). The difference between "callback" and
   "engine" is what the adapter itself costs.
2. **Real GRPO.** A tiny GRPOTrainer run (CPU, ~84k parameters, one-token completions) with
   and without the callback (no held-out evaluator), seconds per step. With such a tiny model a
   step is a few hundredths of a second, so this is the worst case for the relative overhead;
   with a real LLM a GRPO step takes seconds to minutes.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from satmon.results import text_table  # noqa: E402


def trl_like_logs(steps: int, eval_every: int, seed: int = 0) -> list[tuple[int, dict, bool]]:
    """(step, log dict, is_eval) in the order a GRPO trainer emits them: a saturating reward."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(1, steps + 1):
        r = float(np.clip(0.9 - 0.7 * np.exp(-t / 60) + rng.normal(0, 0.03), 0, 1))
        logs = {"loss": float(rng.normal(0, 0.01)), "grad_norm": 1.0, "learning_rate": 1e-6,
                "num_tokens": 1000.0 * t, "completions/mean_length": 120.0,
                "completions/min_length": 30.0, "completions/max_length": 256.0,
                "completions/clipped_ratio": 0.05, "completions/mean_terminated_length": 110.0,
                "completions/min_terminated_length": 30.0,
                "completions/max_terminated_length": 250.0, "rewards/accuracy/mean": r,
                "rewards/accuracy/std": 0.3, "reward": r, "reward_std": 0.3,
                "frac_reward_zero_std": min(1.0, r), "entropy": 0.5, "clip_ratio/low_mean": 0.0,
                "clip_ratio/high_mean": 0.0, "clip_ratio/region_mean": 0.0,
                "clip_ratio/low_min": 0.0, "clip_ratio/high_max": 0.0, "step_time": 1.0,
                "epoch": t / steps}
        out.append((t, logs, False))
        if t % eval_every == 0:
            acc = float(np.clip(0.3 + 0.2 * (1 - np.exp(-t / 80)) + rng.normal(0, 0.02), 0, 1))
            out.append((t, {"eval_loss": 0.0, "eval_reward": acc,
                            "eval_rewards/accuracy/mean": acc, "epoch": t / steps}, True))
    return out


def time_engine(events: list, steps: int, eval_every: int) -> list[float]:
    from satmon.monitor import SaturationMonitor

    mon = SaturationMonitor(total_steps=steps, eval_every=eval_every)
    pending: dict[int, dict] = {}
    for step, logs, is_eval in events:
        pending.setdefault(step, {"heldout": None, "reward": None})
        if is_eval:
            pending[step]["heldout"] = {"accuracy": (logs["eval_rewards/accuracy/mean"], 64)}
        else:
            pending[step]["reward"] = logs["reward"]
    times = []
    for step in sorted(pending):
        p = pending[step]
        t0 = time.perf_counter()
        mon.update(step, p["reward"], heldout=p["heldout"],
                   aux={"entropy": 0.5, "frac_reward_zero_std": 0.5})
        times.append(time.perf_counter() - t0)
    return times


def time_callback(events: list, steps: int, eval_every: int, mlflow: Any,
                  workdir: str) -> tuple[list[float], float]:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from satmon.callbacks import SaturationCallback

    args = TrainingArguments(output_dir=workdir, max_steps=steps, eval_strategy="steps",
                             eval_steps=eval_every, logging_steps=1, report_to=[],
                             use_cpu=True)
    state = TrainerState(max_steps=steps)
    control = TrainerControl()
    cb = SaturationCallback(mlflow=mlflow, heldout_n=64)
    cb.on_train_begin(args, state, control)
    per_step: dict[int, float] = {}
    by_step: dict[int, list] = {}
    for step, logs, is_eval in events:
        by_step.setdefault(step, []).append((logs, is_eval))
    for step in range(1, steps + 1):
        state.global_step = step
        control.should_log = True
        control.should_evaluate = step % eval_every == 0
        t0 = time.perf_counter()
        cb.on_step_end(args, state, control)
        for logs, is_eval in by_step[step]:
            cb.on_log(args, state, control, logs=dict(logs))
            if is_eval:
                control.should_evaluate = False
        per_step[step] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cb.on_train_end(args, state, control)
    return list(per_step.values()), time.perf_counter() - t0


def time_grpo(steps: int, with_callback: bool, workdir: str) -> float:
    import torch
    from transformers import TrainerCallback

    from _callback_lab import grpo_trainer, lab_job
    from satmon.callbacks import SaturationCallback

    torch.set_num_threads(1)
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    callbacks: list[Any] = [Clock()]
    if with_callback:
        callbacks.insert(0, SaturationCallback(heldout="none", mlflow=False))
    job = lab_job("rule", seed=0)
    grpo_trainer(job, workdir, max_steps=steps, callbacks=callbacks).train()
    gaps = np.diff(stamps[5:])  # skip the first steps (warm-up, allocation)
    return float(np.median(gaps))


def _row(name: str, times: list[float]) -> list[str]:
    us = np.asarray(times) * 1e6
    return [name, f"{np.mean(us):.0f}", f"{np.median(us):.0f}", f"{np.percentile(us, 95):.0f}",
            f"{np.max(us):.0f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--grpo-steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-grpo", action="store_true")
    opts = parser.parse_args(argv)
    logging.disable(logging.WARNING)

    events = trl_like_logs(opts.steps, opts.eval_every)
    with tempfile.TemporaryDirectory() as tmp:
        engine = time_engine(events, opts.steps, opts.eval_every)
        plain, plain_end = time_callback(events, opts.steps, opts.eval_every, False, f"{tmp}/a")
        sink, sink_end = time_callback(events, opts.steps, opts.eval_every,
                             {"tracking_uri": f"sqlite:///{tmp}/mlflow.db",
                              "spool_dir": f"{tmp}/spool"}, f"{tmp}/b")
        rows = [_row("engine: SaturationMonitor.update", engine),
                _row("callback, MLflow off", plain),
                _row("callback + MLflow sink (sqlite)", sink)]
        adapter = statistics.median(plain) - statistics.median(engine)
        print(f"Per-step cost over {opts.steps} steps (held-out every {opts.eval_every}), "
              "microseconds:\n")
        print(text_table(["what", "mean", "median", "p95", "max"], rows))
        print(f"\nadapter overhead (median callback - median engine): {adapter * 1e6:.0f} us/step")
        print(f"on_train_end (final table and figure, sink drained and closed): "
              f"{plain_end:.2f} s without MLflow, {sink_end:.2f} s with the sqlite sink")

        if not opts.skip_grpo:
            # Alternate the two configurations and keep each one's best median, so that load
            # from other processes on a shared machine does not decide the comparison.
            base, with_cb = math.inf, math.inf
            for rep in range(opts.repeats):
                base = min(base, time_grpo(opts.grpo_steps, False, f"{tmp}/g0-{rep}"))
                with_cb = min(with_cb, time_grpo(opts.grpo_steps, True, f"{tmp}/g1-{rep}"))
            print(f"\nTiny GRPOTrainer on CPU ({opts.grpo_steps} steps, best of {opts.repeats} "
                  "median seconds per step; no held-out evaluator):\n")
            print(text_table(["run", "s/step", "relative"], [
                ["without satmon", f"{base:.4f}", "1.00"],
                ["with SaturationCallback", f"{with_cb:.4f}", f"{with_cb / base:.2f}"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
