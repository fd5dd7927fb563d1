"""replay(): feeding a Run through the monitor, compute saved and regret."""

from __future__ import annotations

import json
import math

import pytest

from satmon import Run, SaturationMonitor
from satmon.datasets import make_run
from satmon.decision import Action, Reason
from satmon.replay import ReplayResult, heldout_regret, replay


def test_replay_memorizing_run_halts_with_reason():
    res = replay(make_run("memorizing", seed=1).run)
    assert isinstance(res, ReplayResult)
    assert res.halted and res.reason is Reason.MEMORIZING
    assert res.compute_saved == pytest.approx((500 - res.halt_step) / 500)
    assert res.decisions[-1].action is Action.HALT
    json.dumps(res.to_dict())
    assert "halt step" in res.summary()


def test_replay_with_factory_and_total_steps():
    run = make_run("generalizing", seed=2).run
    res = replay(run, lambda: SaturationMonitor(total_steps=1000), stop_at_halt=False)
    assert res.total_steps == 1000
    assert len(res.decisions) == len(set(run.train_reward.steps.tolist())
                                      | set(run.heldout["heldout"].steps.tolist()))
    with pytest.raises(ValueError, match="either monitor_factory"):
        replay(run, lambda: SaturationMonitor(), total_steps=3, warmup_steps=4)


def test_replay_run_without_heldout():
    run = Run(train_reward=(list(range(1, 301)), [min(0.01 * s, 0.9) for s in range(1, 301)]))
    res = replay(run)
    assert not res.halted and math.isnan(res.regret)
    assert "cannot be called" in res.decisions[-1].message


@pytest.mark.parametrize("steps,values,halt,expected", [
    ([0, 10, 20, 30], [0.1, 0.2, 0.5, 0.3], 10, 0.3),
    ([0, 10, 20, 30], [0.1, 0.2, 0.5, 0.3], 15, 0.3),   # value at halt = last eval before it
    ([0, 10, 20, 30], [0.5, 0.4, 0.3, 0.2], 10, 0.0),   # nothing better later: 0
    ([0, 10, 20, 30], [0.1, 0.2, 0.5, 0.3], None, 0.0),
    ([0, 10], [0.1, 0.2], 30, 0.0),
])
def test_heldout_regret_table(steps, values, halt, expected):
    assert heldout_regret(steps, values, halt) == pytest.approx(expected)


def test_heldout_regret_before_first_eval_is_nan():
    assert math.isnan(heldout_regret([10, 20], [0.1, 0.2], 5))
