"""benchmarks/score_prior.py: its table follows bench_monitor's definitions, and a replay under a
prior file equals the shipped monitor's when the file is the shipped one."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import score_prior as sp  # noqa: E402
from satmon.monitor.posterior import default_prior  # noqa: E402
from satmon.replay import replay  # noqa: E402


def test_score_counts_false_halts_calibration_savings_and_regret():
    rows = [("memorizing", 100, 400, 0.0),        # halted, nothing left: saved 0.75
            ("memorizing", None, 400, 0.0),       # never halted: saved 0
            ("post_saturation_generalization", 200, 400, 0.03),  # false halt, 3 points left
            ("generalizing", 300, 400, 0.005)]    # halted, 0.5 point left: not false
    table = {r[0]: r for r in sp.score(rows)}
    assert table["all"][1:] == ["4", "3", "0.2500", "0.3333", "0.375", "0.875"]
    assert table["memorizing"][2:5] == ["1", "0.0000", "0.0000"]
    assert table["saved (mem)"][5] == "0.375"


def test_replay_under_the_shipped_prior_file_equals_the_default_monitor():
    from satmon.monitor.calibration import default_calibration
    from satmon.monitor.config import default_risk

    sp._init("datasets", 6, default_prior().to_dict(), default_risk(),
             default_calibration().to_dict())
    for i, sr in enumerate(sp._SUITE):
        regime, halt, total, left = sp._one(i)
        res = replay(sr.run)
        assert (regime, halt, total) == (sr.truth.regime, res.halt_step, sr.run.last_step)
        assert left == (sr.truth.remaining_gain_at(halt) if halt is not None else 0.0)
