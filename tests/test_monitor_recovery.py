"""Recovery on seeded synthetic runs, with stated margins (measured, not aspirational).

Margins hold for the default monitor on these seeds; the benchmark (benchmarks/bench_monitor.py)
reports the same quantities on 1,002 runs.
"""

from __future__ import annotations

import pytest

from satmon.datasets import make_run
from satmon.decision import Reason
from satmon.replay import replay


def _replays(regime, seeds):
    out = []
    for seed in seeds:
        sr = make_run(regime, seed=1000 + seed)
        out.append((sr, replay(sr.run)))
    return out


@pytest.mark.parametrize("regime", ["generalizing", "post_saturation_generalization", "slow"])
def test_no_halt_while_heldout_still_gains_more_than_a_point(regime):
    # Margin: at most 1 false halt in 15 seeds per generalizing regime.
    false = [sr.run.name for sr, res in _replays(regime, range(15))
             if res.halted and sr.truth.remaining_gain_at(res.halt_step) > 0.01]
    assert len(false) <= 1, false


def test_memorizing_runs_halt_as_memorizing():
    # Margin: >= 70% of 20 seeds halted with MEMORIZING before the end of the run, and no
    # memorizing run halted for a reason that says it generalizes (SATURATED) more than twice.
    results = _replays("memorizing", range(20))
    mem = sum(res.reason is Reason.MEMORIZING for _, res in results)
    sat = sum(res.reason is Reason.SATURATED for _, res in results)
    assert mem >= 14, mem
    assert sat <= 2, sat


def test_collapse_runs_halt_as_collapse_after_the_drop_starts():
    # Margin: >= 90% of 12 seeds halted with COLLAPSE, never earlier than 50 steps before the
    # drawn collapse midpoint.
    results = _replays("collapse", range(12))
    ok = [res for sr, res in results if res.reason is Reason.COLLAPSE
          and res.halt_step >= sr.truth.params["t_collapse"] - 50]
    assert len(ok) >= 11, [(r.halt_step, r.reason) for _, r in results]
