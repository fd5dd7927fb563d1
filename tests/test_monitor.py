"""SaturationMonitor: API contract, split/resume equality, bad input, policy knobs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from satmon.datasets import make_run
from satmon.decision import Action, Decision, Phase, Reason
from satmon.monitor import SaturationMonitor


def _feed(mon, run, start=0, stop=None):
    tr = run.train_reward
    held = run.heldout["heldout"]
    hv = dict(zip(held.steps.tolist(), held.values.tolist()))
    zs = dict(zip(run.aux["frac_reward_zero_std"].steps.tolist(),
                  run.aux["frac_reward_zero_std"].values.tolist()))
    train = dict(zip(tr.steps.tolist(), tr.values.tolist()))
    steps = sorted(set(train) | set(hv))
    out = []
    for s in steps:
        if s < start or (stop is not None and s >= stop):
            continue
        h = {"heldout": (hv[s], held.sample_size)} if s in hv else None
        a = {"frac_reward_zero_std": zs[s]} if s in zs else None
        out.append(mon.update(s, train.get(s), heldout=h, aux=a))
    return out


def _key(d: Decision):
    e = d.evidence
    return (d.step, d.action, d.reason, d.message, round(e.p_saturated, 12),
            e.heldout_points, e.phase)


@pytest.mark.parametrize("regime,split", [("memorizing", 77), ("generalizing", 260),
                                          ("collapse", 140)])
def test_split_resume_gives_identical_decisions(regime, split):
    run = make_run(regime, seed=4).run
    kw = dict(total_steps=500, warmup_steps=40, refit_every=25)
    full = [_key(d) for d in _feed(SaturationMonitor(**kw), run)]
    first = SaturationMonitor(**kw)
    got = [_key(d) for d in _feed(first, run, stop=split)]
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    assert state["version"] == 2
    second = SaturationMonitor(**kw)
    second.load_state_dict(state)
    got += [_key(d) for d in _feed(second, run, start=split)]
    assert got == full


def test_decision_fields_and_message_numbers():
    run = make_run("memorizing", seed=1).run
    mon = SaturationMonitor(total_steps=500)
    decisions = _feed(mon, run)
    last = decisions[-1]
    assert isinstance(last.evidence.regime, dict)
    assert abs(sum(last.evidence.regime.values()) - 1) < 1e-9
    assert any(ch.isdigit() for ch in last.message)
    assert mon.decisions[-1] is last and isinstance(mon.decisions, tuple)
    assert "P(gain >= 1 pt" in last.message and "evaluations" in last.message
    assert last.evidence.heldout_points >= 6
    assert all(math.isfinite(v) for v in last.metrics().values())
    json.dumps(last.to_dict())


def test_halt_is_sticky_and_repeated_for_later_steps():
    mon = SaturationMonitor(total_steps=100, max_non_finite=3)
    for s in range(1, 10):
        mon.update(s, 0.5)
    for s in range(10, 14):
        d = mon.update(s, math.nan)
    assert d.action is Action.HALT and d.reason is Reason.NON_FINITE
    again = mon.update(20, 0.5)
    assert again.action is Action.HALT and again.reason is Reason.NON_FINITE and again.step == 20


def test_none_reward_with_heldout_is_an_eval_only_record():
    mon = SaturationMonitor(total_steps=100, max_non_finite=2)
    for s in range(0, 20):
        d = mon.update(s, None, heldout={"m": (0.4, 200)})
    assert d.action is Action.CONTINUE  # not counted as non-finite
    for s in range(20, 23):
        d = mon.update(s, None)
    assert d.reason is Reason.NON_FINITE and "non-finite" in d.message


def test_nonfinite_heldout_streak_halts():
    mon = SaturationMonitor(total_steps=100, max_non_finite=3)
    for s in range(1, 5):
        d = mon.update(s, 0.5, heldout={"m": (float("nan"), 100)})
    assert d.reason is Reason.NON_FINITE and "'m'" in d.message


def test_repeated_and_out_of_order_steps_are_ignored():
    mon = SaturationMonitor(total_steps=200)
    for s in range(1, 60):
        mon.update(s, 0.2 + 0.01 * s)
    before = mon.state_dict()
    d = mon.update(30, 0.99)  # a resumed run logs step 30 again
    assert "not after the last step" in d.message and d.step == 30
    assert mon.state_dict()["train"] == before["train"]
    d = mon.update(10, 0.1)
    assert mon.last_step == 59


def test_diverged_on_unbounded_blowup():
    mon = SaturationMonitor(total_steps=300)
    rng = np.random.default_rng(0)
    for s in range(1, 100):
        d = mon.update(s, 5.0 + 0.1 * rng.standard_normal())  # proxy reward, not in [0, 1]
    # A flat reward may be flagged SATURATED (no held-out series), never halted or DIVERGED.
    assert d.action is not Action.HALT and d.reason is not Reason.DIVERGED
    for s in range(100, 104):
        d = mon.update(s, 1e6)
    assert d.action is Action.HALT and d.reason is Reason.DIVERGED


def test_single_outlier_batch_is_not_divergence():
    mon = SaturationMonitor(total_steps=300)
    for s in range(1, 100):
        mon.update(s, 0.8 + 0.01 * (-1) ** s)
    d = mon.update(100, 0.2)
    d = mon.update(101, 0.8)
    assert d.reason is not Reason.DIVERGED


def test_without_heldout_reports_saturation_but_not_regime():
    mon = SaturationMonitor(total_steps=400, warmup_steps=30)
    rng = np.random.default_rng(1)
    for s in range(1, 400):
        d = mon.update(s, min(0.2 + 0.01 * s, 0.9) + 0.01 * rng.standard_normal())
    assert d.evidence.phase is Phase.POST and d.evidence.p_saturated > 0.9
    assert d.action is Action.FLAG and d.reason is Reason.SATURATED
    assert "cannot be called" in d.message
    assert d.evidence.regime["undetermined"] == 1.0
    assert 60 <= d.evidence.t_sat_estimate <= 120


def test_halt_without_heldout_knob():
    mon = SaturationMonitor(total_steps=400, warmup_steps=30, halt_without_heldout=True)
    rng = np.random.default_rng(1)
    halted = None
    for s in range(1, 400):
        d = mon.update(s, min(0.2 + 0.01 * s, 0.9) + 0.01 * rng.standard_normal())
        if d.action is Action.HALT:
            halted = d
            break
    assert halted is not None and halted.reason is Reason.SATURATED


@pytest.mark.parametrize("kwargs,err,match", [
    ({"total_steps": 0}, ValueError, "total_steps"),
    ({"risk": 0.2, "flag_risk": 0.1}, ValueError, "flag_risk"),
    ({"risk": 1.0}, ValueError, "risk"),
    ({"frozen_zero_std": 1.5}, ValueError, "frozen_zero_std"),
    ({"frozen_after": -1}, ValueError, "frozen_after"),
    ({"decision_history": 0}, ValueError, "decision_history"),
    ({"reward_ceiling": math.inf}, ValueError, "reward_ceiling"),
    ({"families": ("pow3",)}, ValueError, "families"),
    ({"halt_on": ("bogus",)}, ValueError, "halt_on"),
    ({"totl_steps": 10}, TypeError, "unknown parameters"),
])
def test_bad_config(kwargs, err, match):
    with pytest.raises(err, match=match):
        SaturationMonitor(**kwargs)


def test_bad_update_input():
    mon = SaturationMonitor(total_steps=10)
    with pytest.raises(TypeError, match="train_reward"):
        mon.update(1, "high")
    with pytest.raises(ValueError, match="n must be"):
        mon.update(1, 0.5, heldout={"m": (0.5, -3)})
    with pytest.raises(TypeError, match="heldout"):
        mon.update(1, 0.5, heldout=[0.5])
    with pytest.raises(ValueError, match="step"):
        mon.update(-1, 0.5)


def test_config_mismatch_on_load_is_an_error():
    a = SaturationMonitor(total_steps=100)
    b = SaturationMonitor(total_steps=200)
    with pytest.raises(ValueError, match="total_steps"):
        b.load_state_dict(a.state_dict())


def test_halt_on_downgrades_to_flag():
    mon = SaturationMonitor(total_steps=100, max_non_finite=2, halt_on=("memorizing",))
    for s in range(1, 6):
        d = mon.update(s, math.inf)
    assert d.action is Action.FLAG and d.reason is Reason.NON_FINITE


def test_incremental_arrays_equal_a_recomputation_across_compressions_and_unknown_sizes():
    """The engine keeps the training series' prefix sums and each held-out series' arrays and
    variances between evaluations (O(new points) per evaluation): they must equal what a
    recomputation from the kept lists gives, bit for bit, through history compressions (which
    rebuild them) and for a series whose sample size is sometimes unknown (pooled variance)."""
    from satmon.regime import _smooth_at, point_variance

    rng = np.random.default_rng(3)
    mon = SaturationMonitor(total_steps=2000, max_history=64, halt_on=())
    checked = 0
    for s in range(1, 2001):
        held = None
        if s % 20 == 0:
            size = None if s % 60 == 0 else 300
            held = {"a": (0.4 + 0.01 * float(rng.standard_normal()), size),
                    "b": (0.6 + 0.01 * float(rng.standard_normal()), 500)}
        mon.update(s, 0.5 + 0.05 * float(rng.standard_normal()), heldout=held)
        if held is None:
            continue
        ts, tv, csum = mon._train_series()
        np.testing.assert_array_equal(ts, np.asarray(mon._train_steps))
        np.testing.assert_array_equal(tv, np.asarray(mon._train_values))
        np.testing.assert_array_equal(csum, np.concatenate([[0.0], np.cumsum(tv)]))
        for name, h in mon._heldout.items():
            if len(h["steps"]) < 2:  # no posterior yet
                continue
            x, y, var = mon._series_arrays[name].get(h)
            np.testing.assert_array_equal(x, np.asarray(h["steps"]))
            np.testing.assert_array_equal(y, np.asarray(h["values"]))
            np.testing.assert_array_equal(var, point_variance(y, np.asarray(h["sizes"])))
            np.testing.assert_array_equal(_smooth_at(ts, tv, x, csum=csum),
                                          _smooth_at(ts, tv, x))
            checked += 1
    assert mon._compressions > 5 and checked == 2 * 99
