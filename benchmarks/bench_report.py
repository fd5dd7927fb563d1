"""Scale benchmark: a report over many synthetic runs (default 1,000 runs of 1,000 steps).

Prints a table of wall time and peak memory per stage; asserts nothing about timings.

Stages: drawing the runs (:func:`satmon.datasets.make_suite`; not part of the report), the exact
analysis of every run (:func:`satmon.analysis.report.build_report` without replay), writing the
CSV / Markdown / JSON / text tables, and the self-contained HTML page (overview grid plus
``--max-run-plots`` per-run figures). The online-monitor replay is far slower than the rest
(about 0.15 s per 1,000-step run on one core), so by default it is timed on a sample of runs
and extrapolated; ``--replay full`` replays every run (use ``--workers`` to spread it over
processes), ``--no-replay`` skips it.

Peak memory: the process's peak resident set size (``ru_maxrss``) after each stage, and with
``--tracemalloc`` the peak of Python allocations inside each stage (slower).

Example::

    python benchmarks/bench_report.py                       # 1,000 x 1,000, replay sampled
    python benchmarks/bench_report.py --runs 200 --replay full --workers 2
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from satmon.analysis.report import build_report
from satmon.datasets import make_suite
from satmon.results import text_table


def _rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 / 1024 / 1024 if sys.platform == "darwin" else 1 / 1024
    return resource.getrusage(who).ru_maxrss * scale


class Stages:
    """Times stages and records memory after each."""

    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.rows: list[list[str]] = []

    def run(self, name: str, fn: Callable[[], Any], *, note: str = "") -> tuple[Any, float]:
        if self.trace:
            tracemalloc.start()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        traced = "-"
        if self.trace:
            traced = f"{tracemalloc.get_traced_memory()[1] / 2**20:.1f}"
            tracemalloc.stop()
        self.rows.append([name, f"{dt:.2f}", f"{_rss_mb():.0f}",
                          f"{_rss_mb(resource.RUSAGE_CHILDREN):.0f}", traced, note])
        return out, dt

    def table(self) -> str:
        return text_table(["stage", "seconds", "peak RSS MB", "peak RSS MB (workers)",
                           "traced peak MB", "note"], self.rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000, help="number of runs (1000)")
    p.add_argument("--steps", type=int, default=1000, help="training steps per run (1000)")
    p.add_argument("--seed", type=int, default=0, help="suite seed (0)")
    p.add_argument("--replay", choices=["off", "sample", "full"], default="sample",
                   help="monitor replay: off, timed on a sample and extrapolated, or full")
    p.add_argument("--no-replay", dest="replay", action="store_const", const="off",
                   help="same as --replay off")
    p.add_argument("--replay-sample", type=int, default=12,
                   help="runs replayed in --replay sample mode (12)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes for the analysis and replay (1)")
    p.add_argument("--max-run-plots", type=int, default=12,
                   help="per-run figures in the HTML page (12)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the report files (default: a temporary folder)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="also trace Python allocations per stage (slower)")
    args = p.parse_args(argv)
    if args.runs < 1 or args.steps < 60 or args.replay_sample < 1 or args.workers < 1:
        p.error("--runs, --replay-sample and --workers must be >= 1 and --steps >= 60")

    out = args.out or Path(tempfile.mkdtemp(prefix="satmon-bench-report-"))
    stages = Stages(args.tracemalloc)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # Other work on the machine slows every stage: print the load so timings can be judged.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"satmon report benchmark: {args.runs} runs x {args.steps} steps, replay "
          f"{args.replay}, workers {args.workers}, CPUs available {cpus}, load average "
          f"{load:.1f} at start")

    suite, _ = stages.run("draw synthetic runs",
                          lambda: make_suite(args.runs, seed=args.seed, total_steps=args.steps),
                          note="not part of the report")
    runs = [s.run for s in suite]
    del suite
    full_replay = args.replay == "full"
    report, t_analysis = stages.run(
        "analysis" + (" + replay" if full_replay else ""),
        lambda: build_report(runs, replay=full_replay, workers=args.workers),
        note=f"{args.runs} runs")
    _, t_tables = stages.run("write csv, md, json, txt",
                             lambda: report.write(out, formats=["csv", "md", "json", "txt"]))
    _, t_html = stages.run(
        "write html",
        lambda: report.write(out, formats=["html"], max_run_plots=args.max_run_plots),
        note=f"overview + {min(args.max_run_plots, args.runs)} run figures")
    total = t_analysis + t_tables + t_html

    replay_note = ""
    if args.replay == "sample":
        k = min(args.replay_sample, args.runs)
        _, t_sample = stages.run("replay sample", lambda: build_report(runs[:k], replay=True))
        per_run = t_sample / k
        stages.rows[-1][-1] = f"{k} runs, {per_run:.2f} s/run"
        est = per_run * args.runs
        replay_note = (f"monitor replay, extrapolated from {k} runs: {per_run:.2f} s/run -> "
                       f"{est:.0f} s for {args.runs} runs on one process "
                       f"(~{est / max(args.workers, 2):.0f} s with {max(args.workers, 2)} "
                       "workers); run with --replay full to measure it")

    print()
    print(stages.table())
    print()
    c = report.counts()
    print(f"report ({'with' if full_replay else 'without'} replay): {total:.1f} s for "
          f"{c['runs']} runs ({c['saturated']} saturated, {c['halted']} halted); files in {out}")
    if replay_note:
        print(replay_note)
    sizes = ", ".join(f"{f.name} {f.stat().st_size / 1024:.0f} KiB"
                      for f in sorted(out.glob("report.*")))
    print(f"files: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
