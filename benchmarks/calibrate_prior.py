"""Fit the held-out shape prior and the halt level ``risk`` on a mixture of run families.

Run from the repository root:

    python benchmarks/calibrate_prior.py                 # fit, print the tables
    python benchmarks/calibrate_prior.py --write         # ... and write satmon/monitor/prior.json
    python benchmarks/calibrate_prior.py --runs 240      # smaller suites (smoke check)
    python benchmarks/calibrate_prior.py --grid wide     # the wider search (README: not shipped)
    python benchmarks/calibrate_prior.py --keep-prior --write  # refit only the calibration map

Families (seeds disjoint from the benchmark's, which uses seed 0):

* ``datasets``: ``satmon.datasets.make_suite(N, seed=100)`` (standard mix, varied noise);
* ``lagged``: ``satmon.datasets.make_lagged_suite(N, seed=100)`` (held-out a lagged function of
  training progress, delayed rises, correlated evaluation noise, n 100-5,000, runs of
  100-2,000 steps, evaluations every 5-50 steps);
* ``lab``: the committed lab sweep in ``benchmarks/lab_runs`` (27 real GRPO runs of the CPU
  miniature, greedy held-out on 256 prompts every 10 steps; truth as for ``real``);
* ``real``: the real logs in ``../shared/real-logs/raw`` that have a held-out series (truth: the
  later observed held-out; a halt is false when a later evaluation beats the one at the halt by
  more than max(1 point, 2 standard errors of the difference)).

How. Each run is replayed once through the default monitor with every halt downgraded to a flag
(``halt_on=()``: a halted monitor computes nothing more) and every call of the held-out posterior is recorded with its inputs; a
candidate prior then only recomputes the posteriors (closed form, about a millisecond each; a
change of the prior masses alone reweights cached per-shape evidence) and the halt step for
every ``risk`` on a grid. The monitor's other parts (fits, reward levels, the frozen
count) do not depend on the prior, so this is exact.

Fit. Coordinate search over the prior's shape masses, time-scale range and dispersion prior
(two rounds over a grid per field). The bounds of the gain (``gain_low``, ``gain_high``: -50 to
+80 points) are generic, not fitted: the synthetic families never gain more than 30 points, and
a prior fitted to that would halt a real run whose held-out accuracy climbs 50 points (format
learning does). A candidate's score is the mean compute saved on memorizing runs over the
families in the fit that have them (synthetic and lab), at the ``risk`` on the grid that keeps
the false-halt rate at most 1% over the pooled synthetic families (equal weights: the prior is
fitted to their mixture) and zero on the lab and real runs, and whose share of halted runs that
later gained is at most 2 x ``risk`` (plus one run's share) over the pooled synthetic families:
the calibration issue 11 asks for, so the search cannot buy savings with an overconfident
posterior at a tiny ``risk``; infeasible candidates rank below feasible ones, by their
penalised score. Leave-one-family-out refits the masses and ``risk``
without the family (one round; the other fields stay at the full fit's) and scores the family.

Calibration map. The fit above works on the model's P(gain) (``model_risk``). Then the map
from it to the observed frequency of a later gain (:class:`satmon.monitor.calibration.
ProbabilityMap`, isotonic) is fitted on every evaluation after warm-up of the fitted families'
runs with one held-out series, and the shipped ``risk`` is the map's image of ``model_risk``:
the same halts, on a probability that means what it says on the fitted families.

Printed: the fitted prior, the per-family table at the chosen ``risk`` (false halts, saved,
regret), the reliability table (calibrated P(gain) bins against the observed frequency of a
later gain, with the model's mean P beside it) per family, and the leave-one-out table.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import fields, replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# All six real logs live beside the repo on a developer's machine; a clone has the three whose
# licence allows shipping them (tests/data/real-logs/PROVENANCE.md).
REAL_LOGS = next((p for p in (REPO.parent / "shared" / "real-logs" / "raw",
                              REPO / "tests" / "data" / "real-logs" / "raw") if p.is_dir()))
sys.path.insert(0, str(REPO))


def _where(path: Path) -> str:
    """``path`` as the provenance names it: relative to the repository (``../`` beside it)."""
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return "../" + path.relative_to(REPO.parent).as_posix()

import satmon.monitor.engine as engine  # noqa: E402
from bench_monitor import MEMORIZING  # noqa: E402  (the benchmark's definitions, one place)
from satmon.datasets import make_lagged_suite, make_suite  # noqa: E402
from satmon.monitor.calibration import ProbabilityMap  # noqa: E402
from satmon.monitor.posterior import GainPrior, _evidence, _posterior, default_prior  # noqa
from satmon.replay import replay  # noqa: E402
from satmon.results import text_table  # noqa: E402

#: Families whose truth is the later observed held-out series (no generator to ask).
OBSERVED = ("lab", "real")
FAMILIES = ("datasets", "lagged", "lab", "real")
RISKS = (0.0005, 0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1)
WARMUP, MIN_POINTS, MIN_GAIN = 50, 6, 0.01
#: Halted runs that later gain, as a multiple of ``risk``, that a fitted prior may show
#: (issue 11: "at most about alpha"; see :func:`objective`).
CALIBRATION_SLACK = 2.0
GRID = {
    "p_flat": (0.3, 0.4, 0.5, 0.6, 0.7),
    "p_onset": (0.05, 0.1, 0.2, 0.3),
    "p_comove": (0.05, 0.1, 0.2, 0.3),
    "p_delayed": (1e-6, 0.005, 0.02, 0.05),
    "tau_high": (2.0, 4.0, 8.0),
    "p_lead": (0.1, 0.3, 0.5),
    "dispersion_dof": (2.0, 4.0, 8.0, 16.0),
    "dispersion_floor": (0.05, 0.25, 0.5, 1.0),
}
#: ``--grid wide``: the grid above extended past the edges its fit lands on (p_onset, p_lead,
#: tau_high, dispersion_dof, dispersion_floor) and over the onset shapes' powers. Its fit is
#: reported in the README, not shipped (see there: it saves more at the 1% limit of the fitted
#: suites, with a P(gain) less calibrated, and exceeds the limit on the benchmark's suite).
GRID_WIDE = {
    "p_flat": (0.3, 0.4, 0.5, 0.6, 0.7),
    "p_onset": (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3),
    "onset_powers": ((1.5, 2.0, 3.0, 4.0), (1.5, 2.0, 3.0), (1.5, 2.0)),
    "p_comove": (0.05, 0.1, 0.2, 0.3),
    "p_delayed": (1e-6, 0.005, 0.02, 0.05),
    "tau_high": (1.0, 2.0, 4.0, 8.0),
    "p_lead": (0.1, 0.3, 0.5, 0.7),
    "dispersion_dof": (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    "dispersion_floor": (0.01, 0.02, 0.05, 0.25, 0.5, 1.0),
}


# -- recording -----------------------------------------------------------------------------------
def _record_run(sr_or_run, family: str) -> dict:
    """Replay one run and keep every posterior call's inputs (and the truth at its step)."""
    calls: list[dict] = []
    original = engine.heldout_gain_posterior

    def recorder(x, y, **kw):
        calls.append({"step": float(kw["step"]), "x": np.asarray(x).tolist(),
                      "y": np.asarray(y).tolist(),
                      "var": np.asarray(kw["variances"]).tolist(),
                      "total": float(kw["total_steps"]),
                      "levels": None if kw["reward_levels"] is None
                      else np.asarray(kw["reward_levels"]).tolist(),
                      "rise": float(kw["reward_rise_left"]), "frozen": int(kw["frozen_steps"])})
        return original(x, y, **kw)

    engine.heldout_gain_posterior = recorder
    try:
        if family in OBSERVED:
            run, truth = sr_or_run, None
        else:
            run, truth = sr_or_run.run, sr_or_run.truth
        # halt_on=(): a halted monitor repeats its halt and computes nothing more, and P(gain)
        # can underflow below any risk, so only a monitor that cannot halt records every call.
        replay(run, risk=1e-300, flag_risk=1e-300, halt_on=(), stop_at_halt=False)
    finally:
        engine.heldout_gain_posterior = original
    steps = sorted({c["step"] for c in calls})
    by_step = {s: [c for c in calls if c["step"] == s] for s in steps}
    evals = []
    for s in steps:
        cs = by_step[s]
        # Real runs: the truth comes from the whole observed series (_fix_real_truth).
        gain_true = truth.remaining_gain_at(int(s)) if truth is not None else 0.0
        false = gain_true > MIN_GAIN
        evals.append({"step": s, "calls": cs, "false": bool(false), "gain": float(gain_true),
                      "n_min": min(len(c["x"]) for c in cs)})
    regime = truth.regime if truth is not None else str(run.metadata.get("setting", family))
    return {"family": family, "regime": regime, "name": run.name, "T": float(run.last_step),
            "evals": evals}


def code_digest() -> str:
    """A digest of what the records depend on: the core package's source (the monitor, its
    detectors and fits, the generators), the shipped prior, this script and the lab and real
    runs. The record cache is keyed by it, so a change to any of them records again."""
    h = hashlib.sha256()
    paths = sorted((REPO / "satmon").rglob("*.py")) + [REPO / "satmon" / "monitor" /
                                                       "prior.json", Path(__file__).resolve()]
    paths += sorted((REPO / "benchmarks" / "lab_runs").rglob("*.csv"))
    paths += sorted(p for p in REAL_LOGS.rglob("*") if p.is_file())
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def record_family(family: str, n: int, workers: int) -> list[dict]:
    if family == "datasets":
        items = make_suite(n, seed=100, mix="standard")
    elif family == "lagged":
        items = make_lagged_suite(n, seed=100)
    elif family == "lab":
        items = lab_runs()
    else:
        items = real_runs()
    with Pool(workers) as pool:
        return pool.starmap(_record_run, [(it, family) for it in items], chunksize=4)


def lab_runs():
    """The committed lab sweep (benchmarks/lab_runs): real GRPO runs of the miniature, greedy
    held-out on 256 prompts, evaluated every 10 steps."""
    from satmon.lab.runner import read_lab_run

    return [read_lab_run(p.parent) for p in sorted((REPO / "benchmarks" / "lab_runs").glob(
        "*/s*/curves.csv"))]


def real_runs():
    from satmon.analysis import read_run

    out = []
    for path in sorted(glob.glob(str(REAL_LOGS / "*"))):
        try:
            run = read_run(path)
        except (ValueError, KeyError, TypeError, OSError):
            continue
        if run.heldout:
            out.append(with_known_sizes(run))
    return out


#: Held-out sets whose size is known though the logs do not say it (GSM8K's test split, which
#: verl validates on).
KNOWN_SIZES = {"gsm8k": 1319}


def with_known_sizes(run):
    """The run with the sample size of a known held-out set filled in where the log lacks it."""
    from dataclasses import replace as dc_replace

    from satmon.run import Run

    held = {}
    for name, series in run.heldout.items():
        n = next((v for k, v in KNOWN_SIZES.items() if k in name.lower()), None)
        held[name] = (dc_replace(series, sample_size=n) if series.sample_size is None and n
                      else series)
    return Run(run.train_reward, heldout=held, aux=run.aux, metadata=run.metadata,
               name=run.name)


def _fix_real_truth(rec: dict, run) -> None:
    """Truth of a real run from its whole observed held-out series: a halt is false when some
    series' best 3-evaluation mean after the halt beats its 3-evaluation mean at the halt by
    more than max(1 point, 2 standard errors of that difference). (Means of three, not single
    points: the maximum of dozens of later noisy points beats any one point by chance.)"""
    for ev in rec["evals"]:
        s = ev["step"]
        false, worst = False, 0.0
        for series in run.heldout.values():
            st = np.asarray(series.steps, float)
            va = np.asarray(series.values, float)
            before, after = st <= s, st > s
            if not before.any() or not after.any():
                continue
            k = int(before.sum())
            if k < 3 or int(after.sum()) < 3:
                continue
            at = float(va[k - 3:k].mean())
            gain = float(np.convolve(va[k:], np.ones(3) / 3, mode="valid").max()) - at
            n = series.sample_size or 0
            if n:
                sd = math.sqrt(max(at * (1 - at), 0.02 * 0.98) / n)
            else:
                d = np.diff(va)
                sd = float(np.median(np.abs(d)) / 0.6745 / math.sqrt(2)) if d.size >= 2 else 0.02
            limit = max(MIN_GAIN, 2 * math.sqrt(2 / 3) * sd)
            worst = max(worst, gain)
            false = false or gain > limit
        ev["false"], ev["gain"] = false, worst


# -- evaluation ----------------------------------------------------------------------------------
_RECORDS: list[dict] = []


#: Fields of the prior that change the per-shape evidence; the rest are prior masses, which a
#: sweep reapplies to cached evidence (satmon.monitor.posterior._posterior).
MASSES = ("p_flat", "p_comove", "p_onset", "p_delayed", "p_lead")
_EV_CACHE: dict = {"key": None, "evidence": {}}


def _design_key(prior: GainPrior):
    return tuple((k, v) for k, v in sorted(prior.to_dict().items()) if k not in MASSES
                 for v in [tuple(v) if isinstance(v, list) else v])


def _shard_posteriors(args):
    """P(gain) at every recorded evaluation of the records in ``indices`` under ``prior``.

    The per-shape evidence is cached per design (this process keeps its shard), so a change
    of the prior masses alone costs only the mixture."""
    indices, prior_dict = args
    prior = GainPrior.from_dict(prior_dict)
    key = _design_key(prior)
    if _EV_CACHE["key"] != key:
        _EV_CACHE["key"], _EV_CACHE["evidence"] = key, {}
    cache = _EV_CACHE["evidence"]
    out: dict[int, list[list[float]]] = {}
    for idx in indices:
        rec = _RECORDS[idx]
        if idx not in cache:
            cache[idx] = [[(_evidence(prior, np.asarray(c["x"]), np.asarray(c["y"]),
                                      np.asarray(c["var"]),
                                      None if c["levels"] is None else np.asarray(c["levels"]),
                                      c["rise"], c["step"], c["total"]),
                            c["frozen"], max(c["total"] - c["step"], 0.0))
                           for c in ev["calls"]] for ev in rec["evals"]]
        out[idx] = [[_posterior(e, prior, min_gain=MIN_GAIN, frozen_steps=frozen,
                                horizon=horizon, full=False).p_gain
                     for e, frozen, horizon in calls] for calls in cache[idx]]
    return out


class Shards:
    """One single-process pool per shard, so each shard's evidence cache stays warm."""

    def __init__(self, n: int):
        self.pools = [Pool(1) for _ in range(n)]

    def close(self):
        for p in self.pools:
            p.close()
            p.join()

    def posteriors(self, prior: GainPrior, indices) -> dict[int, list[list[float]]]:
        pd = prior.to_dict()
        n = len(self.pools)
        jobs = [pool.apply_async(_shard_posteriors, (([i for i in indices if i % n == k], pd),))
                for k, pool in enumerate(self.pools)]
        out: dict[int, list[list[float]]] = {}
        for j in jobs:
            out.update(j.get())
        return out


def combine(series_ps: list[float], cal: ProbabilityMap | None = None) -> float:
    """P(some series gains) from each series' P(gain), each read through ``cal`` first (as the
    monitor does: ``1 - prod(1 - p_i)``)."""
    p_none = 1.0
    for p in series_ps:
        p_none *= 1.0 - (p if cal is None else cal(p))
    return 1.0 - p_none


def posteriors(shards: Shards, prior: GainPrior, indices,
               cal: ProbabilityMap | None = None) -> dict[int, list[float]]:
    """P(gain) at every recorded evaluation: the model's (``cal`` None) or calibrated."""
    return {i: [combine(ev, cal) for ev in per_eval]
            for i, per_eval in shards.posteriors(prior, indices).items()}


def fit_calibration(records, ps, fams) -> tuple[ProbabilityMap, int]:
    """The isotonic map from the model's P(gain) (``ps``) to a later gain, fitted on every
    evaluation after warm-up of the runs of ``fams`` with one held-out series; and the number
    of evaluations it rests on (ValueError when there are none)."""
    pairs = [(p, ev["false"]) for i, r in enumerate(records) if r["family"] in fams
             and i in ps for ev, p in zip(r["evals"], ps[i])
             if ev["step"] >= WARMUP and ev["n_min"] >= MIN_POINTS and len(ev["calls"]) == 1]
    if not pairs:
        raise ValueError(f"no single-series evaluations in the families {fams} to fit a map on")
    p, y = zip(*pairs)
    return ProbabilityMap.fit(p, y), len(pairs)


def halts(rec: dict, ps: list[float], risk: float):
    for ev, p in zip(rec["evals"], ps):
        if ev["step"] >= WARMUP and ev["n_min"] >= MIN_POINTS and ev["step"] < rec["T"] \
                and p < risk:
            return ev
    return None


def score(records, ps, risk):
    """Per family: false-halt rate, saved on memorizing runs, saved on the rest, regret."""
    out = {}
    for fam in sorted({r["family"] for r in records}):
        rows = [(r, ps[i]) for i, r in enumerate(records) if r["family"] == fam and i in ps]
        false = saved_mem = saved_other = regret = 0.0
        n_mem = n_other = n_halted = 0
        for r, p in rows:
            ev = halts(r, p, risk)
            saved = 0.0 if ev is None else (r["T"] - ev["step"]) / r["T"]
            n_halted += ev is not None
            if ev is not None:
                false += ev["false"]
                regret += 100 * ev["gain"] if fam not in OBSERVED else 0.0
            if r["regime"] in MEMORIZING:
                saved_mem += saved
                n_mem += 1
            else:
                saved_other += saved
                n_other += 1
        out[fam] = {"runs": len(rows), "false": false / max(len(rows), 1),
                    "n_false": int(false), "n_halted": n_halted,
                    "saved_mem": saved_mem / n_mem if n_mem else math.nan,
                    "saved_other": saved_other / n_other if n_other else math.nan,
                    "regret": regret / max(len(rows), 1)}
    return out


def objective(sc, fams, risk):
    """``(value, feasible)``: the mean saved (mem) over the fitted families that have
    memorizing runs, less a penalty for false halts beyond the limits - at most 1% over the
    pooled synthetic families (each weighted equally: the prior is fitted to their mixture),
    none on the observed (lab, real) runs - and for a posterior that is not calibrated at the
    halt: over the pooled synthetic families, the share of halted runs that later gained may
    be at most ``CALIBRATION_SLACK x risk`` (plus one run's share, the resolution of a few
    hundred runs) - so the search moves toward feasibility from anywhere. Without that last
    limit the search trades calibration for savings: an overconfident posterior (few degrees
    of freedom for the dispersion, little mass on late rises) at a tiny ``risk`` reaches the
    1% limit on the fitted suites with a P(gain) that is not what it says, and exceeds the
    limit on a suite it was not fitted on (README, calibration)."""
    saved = [sc[f]["saved_mem"] for f in fams
             if f != "real" and f in sc and math.isfinite(sc[f]["saved_mem"])]
    synthetic = [f for f in fams if f in sc and f not in OBSERVED]
    excess = 0.0
    if synthetic:
        excess = max(float(np.mean([sc[f]["false"] for f in synthetic])) - 0.01, 0.0) * 10
        halted = sum(sc[f]["n_halted"] for f in synthetic)
        gained = sum(sc[f]["n_false"] for f in synthetic)
        if halted:
            excess += max(gained / halted - CALIBRATION_SLACK * risk - 1.0 / halted, 0.0)
    excess += sum(0.05 * sc[f]["n_false"] for f in fams if f in sc and f in OBSERVED)
    return (float(np.mean(saved)) if saved else 0.0) - excess, excess == 0


def best_risk(records, ps, fams):
    """The risk on the grid with the best objective (feasible ones first), and its score."""
    best = (RISKS[0], -math.inf, None, False)
    for risk in RISKS:
        sc = score(records, ps, risk)
        val, feasible = objective(sc, fams, risk)
        if (feasible, val) > (best[3], best[1]):
            best = (risk, val, sc, feasible)
    return best


def fit(pool, records, fams, start: GainPrior, log=print, rounds: int = 2,
        fields: tuple[str, ...] | None = None, grid: dict | None = None):
    idx = [i for i, r in enumerate(records) if r["family"] in fams]
    cur = start
    ps = posteriors(pool, cur, idx)
    risk, val, _, feas = best_risk(records, ps, fams)
    log(f"  start: objective {val:.3f} at risk {risk} ({'feasible' if feas else 'infeasible'})")
    for rnd in range(rounds):
        for name, values in (grid or GRID).items():
            if fields is not None and name not in fields:
                continue
            for v in values:
                if getattr(cur, name) == v:
                    continue
                try:
                    cand = replace(cur, **{name: v})
                except ValueError:
                    continue
                ps_c = posteriors(pool, cand, idx)
                r_c, val_c, _, feas_c = best_risk(records, ps_c, fams)
                if (feas_c, val_c) > (feas, val + 1e-4):
                    cur, val, risk, feas = cand, val_c, r_c, feas_c
                    log(f"  round {rnd + 1}: {name}={v} -> objective {val:.3f} at risk {risk}"
                        f" ({'feasible' if feas else 'infeasible'})")
    return cur, risk, val


RELIABILITY_HEADER = ["family", "P(gain) bin", "evaluations", "mean P", "mean model P",
                      "observed"]


def reliability(records, ps, fam, ps_model=None):
    """Rows of (bin of ``ps``, evaluations, mean P, [mean model P,] observed gain frequency)."""
    bins = ((0, 0.01), (0.01, 0.03), (0.03, 0.1), (0.1, 0.3), (0.3, 0.7), (0.7, 1.0001))
    pairs = [(p, ev["false"], pm) for i, r in enumerate(records) if r["family"] == fam
             and i in ps for ev, p, pm in zip(r["evals"], ps[i], (ps_model or ps)[i])
             if ev["step"] >= WARMUP and ev["n_min"] >= MIN_POINTS]
    rows = []
    for lo, hi in bins:
        sel = [t for t in pairs if lo <= t[0] < hi]
        row = [fam, f"[{lo:g}, {min(hi, 1):g})", str(len(sel))]
        cols = [0] + ([2] if ps_model is not None else []) + [1]
        row += [f"{np.mean([t[c] for t in sel]):.3f}" if sel else "-" for c in cols]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=400, help="runs per synthetic family")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--write", action="store_true", help="write satmon/monitor/prior.json")
    ap.add_argument("--out", default=None,
                    help="write the fitted prior file here instead (for score_prior.py)")
    ap.add_argument("--grid", choices=("standard", "wide"), default="standard",
                    help="the search grid: the shipped prior's, or GRID_WIDE (reported in the "
                         "README, not shipped)")
    ap.add_argument("--fit-families", default="datasets,lab,real",
                    help="families the default prior is fitted on (the others are held out "
                         "and only scored)")
    ap.add_argument("--keep-prior", action="store_true",
                    help="keep the shipped prior and its model_risk; fit only the calibration "
                         "map")
    ap.add_argument("--cache", default=str(REPO / "benchmarks" / "results" / "prior-records.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cache = Path(args.cache)
    key = {"runs": args.runs, "code": code_digest()}
    records = None
    if cache.exists():
        raw = json.loads(cache.read_text())
        if raw.get("key") == key:
            records = raw["records"]
            print(f"records from {cache} ({len(records)} runs)")
        else:
            print(f"records in {cache} are for {raw.get('key')}, not {key}: recording again")
    if records is None:
        records = []
        for fam in FAMILIES:
            t = time.perf_counter()
            recs = record_family(fam, args.runs, args.workers)
            if fam in OBSERVED:
                for rec, run in zip(recs, lab_runs() if fam == "lab" else real_runs()):
                    _fix_real_truth(rec, run)
            records += recs
            print(f"recorded {fam}: {len(recs)} runs in {time.perf_counter() - t:.0f} s")
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "records": records}))
    global _RECORDS
    _RECORDS = records
    fams_all = list(FAMILIES)
    fams_fit = [f for f in args.fit_families.split(",") if f]
    unknown = sorted(set(fams_fit) - set(FAMILIES))
    if unknown or not fams_fit:
        raise ValueError(f"--fit-families must name some of {list(FAMILIES)}. Got {unknown}.")
    pool = Shards(args.workers)
    try:
        if args.keep_prior:
            shipped = json.loads((REPO / "satmon" / "monitor" / "prior.json").read_text())
            prior = default_prior()
            # A file written before the calibration map: its risk is on the model's scale.
            risk = float(shipped.get("model_risk", shipped["risk"]))
            val = float(shipped["provenance"].get("saved_mem", math.nan))
            print(f"\nKept the shipped prior at model_risk {risk:g}")
        else:
            print(f"\nFit on {', '.join(fams_fit)}:")
            prior, risk, val = fit(pool, records, fams_fit, default_prior(),
                                   grid=GRID_WIDE if args.grid == "wide" else GRID)
        idx_all = list(range(len(records)))
        ps = posteriors(pool, prior, idx_all)
        sc = score(records, ps, risk)
        cal, n_cal = fit_calibration(records, ps, fams_fit)
        ps_cal = posteriors(pool, prior, idx_all, cal)
        print(f"\nFitted prior: {prior.to_dict()}\nmodel_risk = {risk}; calibration map "
              f"({n_cal} evaluations): {cal.to_dict()}\nrisk = cal(model_risk) = {cal(risk)}")
        rows = [[f, str(s["runs"]), f"{s['false']:.4f}", str(s["n_false"]),
                 f"{s['saved_mem']:.3f}", f"{s['saved_other']:.3f}", f"{s['regret']:.3f}"]
                for f, s in sc.items()]
        print(f"\nTable C1. Fitted on {', '.join(fams_fit)}, at the fitted risk (a family not "
              "in the fit is scored as a held-out family)")
        print(text_table(["family", "runs", "false-halt", "false halts", "saved (mem)",
                          "saved (other)", "regret (pts)"], rows))
        print("\nTable C2. Reliability: calibrated P(gain) bins against the observed frequency "
              "of a later gain (every evaluation after warm-up; the model's mean P beside it)")
        rel = []
        for f in fams_all:
            rel += reliability(records, ps_cal, f, ps)
        print(text_table(RELIABILITY_HEADER, rel))
        print("\nTable C2b. The calibration map left out: each fitted family's reliability under "
              "a map fitted on the other fitted families' evaluations (the prior unchanged)")
        rel = []
        for held in fams_fit:
            rest = [f for f in fams_fit if f != held]
            try:
                cal_l, n_l = fit_calibration(records, ps, rest)
            except ValueError:  # the other families have no evaluations to fit on
                continue
            ps_l = posteriors(pool, prior, idx_all, cal_l)
            rel += [[f"{row[0]} (map on {n_l})"] + row[1:]
                    for row in reliability(records, ps_l, held, ps)]
        print(text_table(RELIABILITY_HEADER, rel))
        print("\nTable C3. Leave one family out: fitted on the others, scored on it (a family "
              "outside the default fit is scored under the default fit)")
        loo = []
        for held in fams_all:
            rest = [f for f in fams_fit if f != held]
            if held not in fams_fit:
                s = sc[held]
                loo.append([held, f"{risk:g}", f"{s['false']:.4f}", str(s["n_false"]),
                            f"{s['saved_mem']:.3f}", f"{s['saved_other']:.3f}",
                            f"{s['regret']:.3f}"])
                continue
            print(f" fit without {held}:")
            # The masses (and risk) are refitted without the family; the design fields
            # (time scales, dispersion prior) stay at the full fit's, which keeps this cheap.
            p_l, r_l, _ = fit(pool, records, rest, prior, log=lambda *_: None, rounds=1,
                              fields=MASSES)
            ps_l = posteriors(pool, p_l, idx_all)
            s = score(records, ps_l, r_l)[held]
            loo.append([held, f"{r_l:g}", f"{s['false']:.4f}", str(s["n_false"]),
                        f"{s['saved_mem']:.3f}", f"{s['saved_other']:.3f}",
                        f"{s['regret']:.3f}"])
        print(text_table(["held-out family", "model risk", "false-halt", "false halts",
                          "saved (mem)", "saved (other)", "regret (pts)"], loo))
    finally:
        pool.close()
    if args.write or args.out:
        out = {"fields": [f.name for f in fields(GainPrior)], "prior": prior.to_dict(),
               "risk": cal(risk), "model_risk": risk, "calibration": cal.to_dict(),
               "provenance": {"script": "benchmarks/calibrate_prior.py",
                              "command": "python benchmarks/calibrate_prior.py "
                              + (f"--out {args.out}" if args.out else "--write")
                              + (f" --runs {args.runs}" if args.runs != 400 else "")
                              + (" --grid wide" if args.grid == "wide" else "")
                              + (" --keep-prior" if args.keep_prior else ""),
                              "fitted_on": fams_fit,
                              "calibration_evaluations": n_cal,
                              "families": {"datasets": f"make_suite({args.runs}, seed=100)",
                                           "lagged": f"make_lagged_suite({args.runs}, seed=100)",
                                           "lab": "benchmarks/lab_runs",
                                           "real": f"{_where(REAL_LOGS)} with held-out"},
                              "saved_mem": round(val, 4)}}
        dest = Path(args.out) if args.out else REPO / "satmon" / "monitor" / "prior.json"
        dest.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {dest}")
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
