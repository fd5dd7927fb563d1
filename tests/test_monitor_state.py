"""A damaged monitor state is refused whole: StateError names the problem, nothing is applied.

Each case takes a real state (a monitor fed 120 steps of a synthetic run), damages it the way
a truncated write, a hand edit or another configuration would, and asserts both halves of the
promise: the error says what is wrong, and the monitor that refused it is unchanged (its state
and its next decision equal those of a monitor that was never offered the bad state).
"""

from __future__ import annotations

import copy
import json

import pytest

from satmon.datasets import make_run
from satmon.monitor import SaturationMonitor, StateError

KW = dict(total_steps=300, warmup_steps=30, refit_every=20)


def _fed(steps: int = 120) -> SaturationMonitor:
    run = make_run("memorizing", seed=3, total_steps=300, eval_every=10).run
    mon = SaturationMonitor(**KW)
    held = {k: dict(zip(s.steps, s.values)) for k, s in run.heldout.items()}
    for t, v in zip(run.train_reward.steps[:steps], run.train_reward.values[:steps]):
        h = {k: (vals[t], 500) for k, vals in held.items() if t in vals}
        mon.update(int(t), float(v), heldout=h or None)
    return mon


def _damage(state, how):
    s = copy.deepcopy(state)
    if how == "values_are_strings":
        s["train"]["values"] = ["x"] * len(s["train"]["values"])
    elif how == "lengths_differ":
        s["train"]["values"] = s["train"]["values"][:-5]
    elif how == "steps_not_increasing":
        s["train"]["steps"] = list(reversed(s["train"]["steps"]))
    elif how == "heldout_lengths_differ":
        (name,) = s["heldout"]
        s["heldout"][name]["values"] = s["heldout"][name]["values"][:-1]
    elif how == "posterior_garbage":
        (name,) = s["posteriors"]
        s["posteriors"][name] = {"p_gain": "high"}
    elif how == "version_not_a_number":
        s["version"] = "two"
    elif how == "newer_version":
        s["version"] = 99
    elif how == "not_a_dict":
        s = [1, 2, 3]
    return s


MESSAGES = {
    "values_are_strings": "damaged",
    "lengths_differ": "must be equal",
    "steps_not_increasing": "not increasing",
    "heldout_lengths_differ": "different lengths",
    "posterior_garbage": "damaged",
    "version_not_a_number": "not a number",
    "newer_version": "newer",
    "not_a_dict": "needs a dict",
}


@pytest.mark.parametrize("how", sorted(MESSAGES))
def test_damaged_state_is_refused_and_nothing_is_applied(how):
    good = _fed().state_dict()
    target = _fed(60)  # a monitor mid-run, to show the refusal leaves it exactly as it was
    before = json.dumps(target.state_dict(), sort_keys=True)
    with pytest.raises(StateError, match=MESSAGES[how]):
        target.load_state_dict(_damage(good, how))
    assert json.dumps(target.state_dict(), sort_keys=True) == before
    untouched = _fed(60)
    assert target.update(61, 0.9).to_dict() == untouched.update(61, 0.9).to_dict()


def test_state_of_another_configuration_is_refused():
    state = _fed().state_dict()
    other = SaturationMonitor(**{**KW, "total_steps": 500})
    with pytest.raises(StateError, match="total_steps"):
        other.load_state_dict(state)
    assert other.state_dict()["train"]["steps"] == []


def test_a_good_state_still_loads_exactly():
    a = _fed()
    b = SaturationMonitor(**KW)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.update(121, 0.95).to_dict() == a.update(121, 0.95).to_dict()
