"""When the monitor refits its curve ensemble: the schedule, the staleness test, the state."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

from satmon.monitor import SaturationMonitor
from satmon.monitor.engine import _RecentWindow

T = 1000


def _curve(step: int, second_rise_at: int | None) -> float:
    value = 0.3 + 0.4 * (1.0 - math.exp(-step / 120.0))
    if second_rise_at is not None and step > second_rise_at:
        value += 0.25 * (1.0 - math.exp(-(step - second_rise_at) / 40.0))
    return value


def _refit_steps(refit_z: float, second_rise_at: int | None = None, stop: int = T,
                 seed: int = 0) -> list[int]:
    """Steps at which the monitor refitted, feeding a smooth curve plus noise (evaluations
    every 10 steps on a flat held-out series, so nothing halts)."""
    rng = np.random.default_rng(seed)
    mon = SaturationMonitor(total_steps=T, refit_z=refit_z, halt_on=())
    refits: list[int] = []
    last = -1
    for s in range(1, stop + 1):
        held = {"acc": (0.4 + 0.01 * rng.standard_normal(), 1000)} if s % 10 == 0 else None
        mon.update(s, _curve(s, second_rise_at) + 0.02 * rng.standard_normal(), heldout=held)
        at = mon.state_dict()["last_refit"] if s % 10 == 0 or s < 30 else last
        if at != last:
            refits.append(at)
            last = at
    return refits


def test_refits_wait_while_the_rewards_follow_the_fit():
    scheduled = _refit_steps(0.0)
    gated = _refit_steps(2.0)
    assert len(gated) < len(scheduled)
    assert gated[:2] == scheduled[:2]  # the first refits have no fit to compare with yet
    # The wait is bounded: four gaps (gap: max(refit_every, 15% of the step, 5% of T)), plus
    # the wait for the next evaluation.
    for a, b in zip(gated, gated[1:]):
        assert b - a <= 4 * max(25, int(0.15 * b), int(0.05 * T)) + 10


def test_a_departure_from_the_fit_triggers_the_refit():
    # A second rise at step 500, after the curve has flattened: the refit due at the first
    # evaluation once the departure shows must not wait.
    flat = _refit_steps(2.0, None, stop=700)
    rising = _refit_steps(2.0, 500, stop=700)
    after_flat = [s for s in flat if 500 < s <= 700]
    after_rise = [s for s in rising if 500 < s <= 700]
    assert len(after_rise) > len(after_flat)
    # The first refit after the rise comes at the first due evaluation: one gap after the
    # refit before it, not up to four.
    before = max(s for s in rising if s <= 500)
    first = min(after_rise)
    assert first - before <= max(25, int(0.15 * first), int(0.05 * T)) + 10


def test_refit_z_is_validated():
    with pytest.raises(ValueError, match="refit_z"):
        SaturationMonitor(refit_z=-1.0)
    with pytest.raises(ValueError, match="refit_z"):
        SaturationMonitor(refit_z=math.nan)


def test_a_state_without_fit_curves_refits_instead_of_failing():
    # States saved before the fit kept its curves have no "params": the staleness test then
    # cannot run, so the due refit happens; nothing fails.
    rng = np.random.default_rng(1)
    mon = SaturationMonitor(total_steps=T)
    for s in range(1, 201):
        mon.update(s, _curve(s, None) + 0.02 * rng.standard_normal(),
                   heldout={"acc": (0.4, 1000)} if s % 10 == 0 else None)
    state = json.loads(json.dumps(mon.state_dict(), allow_nan=False))
    assert "params" in state["fit"]
    del state["fit"]["params"]
    old = SaturationMonitor(total_steps=T)
    old.load_state_dict(state)
    last = state["last_refit"]
    for s in range(201, 400):
        old.update(s, _curve(s, None) + 0.02 * rng.standard_normal(),
                   heldout={"acc": (0.4, 1000)} if s % 10 == 0 else None)
    assert old.state_dict()["last_refit"] > last


@pytest.mark.parametrize("seed", range(5))
def test_recent_window_medians_match_statistics_median(seed):
    rng = np.random.default_rng(seed)
    # Coarse values, so ties and repeated differences occur.
    values = np.round(rng.standard_normal(300), 1).tolist()
    win = _RecentWindow()
    for i, v in enumerate(values):
        win.push(v)
        ref = values[max(0, i - 49):i + 1]
        med, mad = win.medians()
        assert med == statistics.median(ref)
        if len(ref) > 1:
            assert mad == statistics.median([abs(b - a) for a, b in zip(ref, ref[1:])])
    rebuilt = _RecentWindow(values)
    assert rebuilt.medians() == win.medians()


def test_running_residual_sums_match_the_kept_series_and_old_states_load():
    # The staleness test reads running sums of the residuals since the last refit (O(1) per
    # update); they must equal the sums recomputed from the kept series, and a state saved
    # before they existed recomputes them on load and continues with the same decisions.
    rng = np.random.default_rng(4)
    mon = SaturationMonitor(total_steps=T, halt_on=())
    feed = [(s, _curve(s, None) + 0.02 * rng.standard_normal(),
             {"acc": (0.4 + 0.01 * rng.standard_normal(), 1000)} if s % 10 == 0 else None)
            for s in range(1, 601)]
    for s, v, held in feed[:350]:
        mon.update(s, v, heldout=held)
    total, count = mon._fit_resid
    again_total, again_count = mon._residuals_since_refit()
    assert count == again_count > 5
    assert total == pytest.approx(again_total, abs=1e-12)
    state = json.loads(json.dumps(mon.state_dict(), allow_nan=False))
    del state["fit_residuals"]
    old = SaturationMonitor(total_steps=T, halt_on=())
    old.load_state_dict(state)
    assert old._fit_resid[1] == count
    for s, v, held in feed[350:]:
        a, b = mon.update(s, v, heldout=held), old.update(s, v, heldout=held)
        assert (a.action, a.reason, a.message) == (b.action, b.reason, b.message)
