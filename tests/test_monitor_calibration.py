"""Calibration of the halt: among runs halted at P(gain) < alpha, the fraction that later gains
more than a point stays near alpha (a seeded suite the prior was not fitted on)."""

from __future__ import annotations

import pytest

from satmon.datasets import make_suite
from satmon.monitor.config import default_risk
from satmon.replay import replay


@pytest.fixture(scope="module")
def suite():
    # Seed 7: disjoint from the prior's calibration (seed 100) and the benchmark (seed 0).
    return make_suite(60, seed=7)


@pytest.mark.parametrize("risk,limit", [(default_risk(), 0.05), (0.2, 0.2)])
def test_halted_runs_rarely_gain_later(suite, risk, limit):
    # Measured on these 60 runs (P(gain) calibrated): at the default risk (0.0124), 58 halted
    # and 2 of them later gained more than a point (0.034); at risk 0.2, 59 halted and 6 gained
    # (0.10). The benchmark's Table R2 (400 runs, bench_monitor.py) has the larger sample.
    halted = gained = 0
    for sr in suite:
        res = replay(sr.run, risk=risk, flag_risk=max(0.2, risk))
        if res.halted:
            halted += 1
            gained += sr.truth.remaining_gain_at(res.halt_step) > 0.01
    assert halted >= 50
    assert gained / halted <= limit, (gained, halted)
