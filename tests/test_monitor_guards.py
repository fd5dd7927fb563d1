"""SaturationMonitor guard rails: vetoes that a learned stop score cannot override.

The streams are hand-made so that each test isolates one rule; thresholds of 0.01 make the
learned stop score irrelevant (any score passes), so a test fails exactly when its veto is gone.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from satmon.decision import Action, Reason
from satmon.monitor import SaturationMonitor

_STOP = (Reason.MEMORIZING, Reason.SATURATED)
_ANY_SCORE = {"flag_threshold": 0.01, "halt_threshold": 0.01, "patience": 1}


def _pinned_reward(step: int, top: float = 1.0) -> float:
    # A ramp to 0.97 by step 40, then the slow creep of a reward pinned at its ceiling: the
    # mean climbs to 1.0 by step 200, batch means at the ceiling once the mean is within noise.
    if step < 40:
        return top * (0.3 + 0.67 * step / 40)
    base = 0.97 + 0.03 * min(step - 40, 160) / 160
    return top * min(1.0, base + 0.01 * (-1) ** step)


def _feed(mon, total, reward, heldout=None):
    out = []
    for s in range(total + 1):
        h = heldout(s) if heldout is not None else None
        out.append(mon.update(s, reward(s), heldout=h))
    return out


def test_reward_pinned_at_its_ceiling_is_saturated():
    kw = {"total_steps": 300, "warmup_steps": 20, "eps": 0.99}
    d = _feed(SaturationMonitor(**kw), 200, _pinned_reward)[-1]
    assert d.evidence.details.get("at_ceiling") == 1.0
    assert d.evidence.p_saturated == 1.0
    assert d.evidence.details["p_sat_bocpd"] == 1.0
    # Without the ceiling the creep reads as a gain still to come (the old P(saturated)=0.50).
    free = _feed(SaturationMonitor(reward_ceiling=None, **kw), 200, _pinned_reward)[-1]
    assert "at_ceiling" not in free.evidence.details
    assert free.evidence.details["p_sat_bocpd"] < 0.5


def test_a_reward_above_the_ceiling_disables_it():
    d = _feed(SaturationMonitor(total_steps=300, warmup_steps=20, eps=0.95), 200,
              lambda s: _pinned_reward(s, top=1.5))[-1]
    assert "at_ceiling" not in d.evidence.details


def test_rising_heldout_vetoes_memorizing_and_saturated():
    # The training reward is saturated for sure (pinned at 1.0) while held-out accuracy climbs
    # 1.3 points per step on 256 prompts: nothing may stop the run for MEMORIZING / SATURATED.
    rng = np.random.default_rng(0)

    def heldout(s):
        if s % 5:
            return None
        p = min(0.2 + 0.013 * s, 0.99)
        return {"math": (float(rng.binomial(256, p) / 256), 256)}

    kw = {"total_steps": 60, "warmup_steps": 20, "min_heldout_points": 4,
          "min_heldout_gain": 0.05, "eps": 0.95, **_ANY_SCORE}

    def reward(s):
        return 1.0 if s >= 10 else 0.5 + 0.05 * s

    guarded = _feed(SaturationMonitor(**kw), 60, reward, heldout)
    assert all(d.action is Action.CONTINUE for d in guarded), \
        [(d.step, d.message) for d in guarded if d.action is not Action.CONTINUE]
    vetoed = [d for d in guarded if "held-out still rising" in d.message]
    assert vetoed and all(d.evidence.details["vetoed"] == 1.0 for d in vetoed)
    assert "linear projection +" in vetoed[-1].message
    rng = np.random.default_rng(0)
    control = _feed(SaturationMonitor(**{**kw, "rising_z": 1e6}), 60, reward, heldout)
    assert any(d.action is Action.HALT and d.reason in _STOP for d in control)


def test_no_stop_unless_surely_saturated():
    # A flat reward (0.5, not at any ceiling) and flat held-out: the run is saturated, so a
    # stop is allowed at min_p_saturated=0.5 and vetoed when certainty is required.
    rng = np.random.default_rng(1)
    rewards = 0.5 + 0.02 * rng.standard_normal(301)
    held = {s: float(rng.binomial(500, 0.4) / 500) for s in range(0, 301, 10)}

    def run(p_min):
        mon = SaturationMonitor(total_steps=300, warmup_steps=20, min_p_saturated=p_min,
                                **_ANY_SCORE)
        return _feed(mon, 300, lambda s: float(rewards[s]),
                     lambda s: {"m": (held[s], 500)} if s in held else None)

    loose = run(0.5)
    assert any(d.action is Action.HALT and d.reason in _STOP for d in loose)
    strict = run(1.0)  # P(saturated) = 1 only at a known ceiling
    assert not any(d.reason in _STOP for d in strict)
    assert any("below 1 (trend and curve fits disagree)" in d.message for d in strict)


@pytest.mark.parametrize("kwargs,match", [
    ({"min_p_saturated": 0.0}, "min_p_saturated"),
    ({"min_p_saturated": 1.5}, "min_p_saturated"),
    ({"rising_z": -1.0}, "rising_z"),
    ({"reward_ceiling": math.inf}, "reward_ceiling"),
    ({"reward_ceiling": "1"}, "reward_ceiling"),
])
def test_bad_guard_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SaturationMonitor(**kwargs)
