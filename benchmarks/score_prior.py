"""Score a held-out shape prior on the benchmark's synthetic suites (seed 0, not the fit's 100).

Run from the repository root:

    python benchmarks/score_prior.py                                  # the shipped prior
    python benchmarks/score_prior.py --prior my_prior.json --risk 0.002
    python benchmarks/score_prior.py --suite lagged --runs 400

``--prior`` takes a file in the format of ``satmon/monitor/prior.json`` (its ``prior``,
``risk`` and ``calibration`` map; ``--risk`` overrides the risk; a file without a map, written
before maps existed, is read on the model's scale). Every run is replayed through a
:class:`~satmon.monitor.SaturationMonitor` with that prior and halt level, the monitor's
defaults otherwise, exactly as ``bench_monitor.py`` replays the shipped one; the definitions
are bench_monitor's (a halt is false when the noiseless held-out accuracy still gains more
than a point after it; saved is the share of planned steps not run, on memorizing runs).

It prints one table and asserts nothing. This is how a prior found by
``calibrate_prior.py`` (fitted on seed 100) is checked on suites it was not fitted on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_monitor import MEMORIZING  # noqa: E402  (the benchmark's definitions, one place)
from satmon.datasets import make_lagged_suite, make_suite  # noqa: E402
from satmon.monitor import ProbabilityMap, SaturationMonitor  # noqa: E402
from satmon.monitor.posterior import GainPrior  # noqa: E402
from satmon.replay import replay  # noqa: E402
from satmon.results import text_table  # noqa: E402

GAIN = 0.01  # bench_monitor's false-halt threshold
_SUITE: list = []
_PRIOR: tuple[GainPrior, float, ProbabilityMap] | None = None


def _suite(name: str, runs: int) -> list:
    if name == "datasets":
        return make_suite(runs, seed=0, mix="standard")
    return make_lagged_suite(runs, seed=0)


def _init(name: str, runs: int, prior: dict, risk: float, calibration: dict | None = None
          ) -> None:
    global _SUITE, _PRIOR
    _SUITE = _suite(name, runs)
    _PRIOR = (GainPrior.from_dict(prior), risk, ProbabilityMap.from_dict(calibration or {}))


def _one(i: int) -> tuple[str, int | None, int, float]:
    sr = _SUITE[i]
    prior, risk, cal = _PRIOR
    total = int(sr.run.last_step)
    res = replay(sr.run, lambda: SaturationMonitor(total_steps=total, prior=prior, risk=risk,
                                                   calibration=cal))
    left = sr.truth.remaining_gain_at(res.halt_step) if res.halted else 0.0
    return sr.truth.regime, res.halt_step, total, float(left)


def score(rows: list[tuple[str, int | None, int, float]]) -> list[list[str]]:
    """Per regime and overall: runs, halted, false-halt rate (of all runs), the share of halted
    runs that later gained (the calibration at the halt, to compare with ``risk``), saved,
    regret (points)."""
    out = []
    groups = sorted({r[0] for r in rows}) + ["all"]
    for g in groups:
        sel = [r for r in rows if g in ("all", r[0])]
        halted = sum(h is not None for _, h, _, _ in sel)
        n_false = sum(h is not None and left > GAIN for _, h, _, left in sel)
        saved = np.mean([(t - h) / t if h is not None else 0.0 for _, h, t, _ in sel])
        regret = np.mean([100 * left if h is not None else 0.0 for _, h, _, left in sel])
        out.append([g, str(len(sel)), str(halted), f"{n_false / len(sel):.4f}",
                    f"{n_false / halted:.4f}" if halted else "-", f"{saved:.3f}",
                    f"{regret:.3f}"])
    mem = [r for r in rows if r[0] in MEMORIZING]
    saved_mem = np.mean([(t - h) / t if h is not None else 0.0 for _, h, t, _ in mem])
    out.append(["saved (mem)", str(len(mem)), "", "", "", f"{saved_mem:.3f}", ""])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default=str(REPO / "satmon" / "monitor" / "prior.json"))
    ap.add_argument("--risk", type=float, default=None, help="halt level (default: the file's)")
    ap.add_argument("--suite", choices=("datasets", "lagged"), default="datasets")
    ap.add_argument("--runs", type=int, default=1002)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    raw = json.loads(Path(args.prior).read_text())
    prior = GainPrior.from_dict(raw["prior"]).to_dict()
    risk = float(raw["risk"] if args.risk is None else args.risk)
    t0 = time.perf_counter()
    with Pool(args.workers, initializer=_init,
              initargs=(args.suite, args.runs, prior, risk, raw.get("calibration"))) as pool:
        rows = pool.map(_one, range(args.runs), chunksize=8)
    print(f"Prior {args.prior} at risk {risk:g} on the {args.suite} suite (seed 0, "
          f"{args.runs} runs; regret: points left after the halt, 0 without one)")
    print(text_table(["regime", "runs", "halted", "false-halt", "later gained / halted",
                      "saved", "regret (pts)"], score(rows)))
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
