"""The calibration map of P(gain): fitting, its invariants, the shipped file, and that reading
P(gain) through it changes no halt."""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest

from satmon.datasets import make_suite
from satmon.monitor import SaturationMonitor
from satmon.monitor.calibration import ProbabilityMap, default_calibration
from satmon.monitor.config import MonitorConfig, default_risk
from satmon.replay import replay


def _distortion(p):
    # An overconfident model: the true log-odds are half the model's, shifted up.
    return 1.0 / (1.0 + np.exp(-(0.5 * np.log(p / (1 - p)) + 0.8)))


def test_fit_recovers_a_known_distortion():
    rng = np.random.default_rng(0)
    p = rng.beta(0.3, 0.3, 20000)
    m = ProbabilityMap.fit(p, rng.random(p.size) < _distortion(p))
    grid = np.array([0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    got = np.array([m(q) for q in grid])
    # Measured: at most 0.020 off (sampling noise of ~400 outcomes per group).
    assert np.max(np.abs(got - _distortion(grid))) < 0.05, got
    # The identity would be far off: the check can fail.
    assert np.max(np.abs(grid - _distortion(grid))) > 0.2


def test_a_calibrated_model_keeps_its_probabilities():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, 20000)
    m = ProbabilityMap.fit(p, rng.random(p.size) < p)
    for q in (0.05, 0.3, 0.6, 0.9):
        assert m(q) == pytest.approx(q, abs=0.04)  # measured: at most 0.014 off


def test_the_map_is_strictly_increasing_and_inverts():
    m = ProbabilityMap(model=(1e-4, 0.01, 0.2, 0.9), observed=(1e-3, 0.03, 0.4, 0.8))
    grid = np.concatenate([np.geomspace(1e-9, 0.4, 200), 1 - np.geomspace(1e-6, 0.4, 200)[::-1]])
    mapped = np.array([m(q) for q in grid])
    assert np.all(np.diff(mapped) > 0)
    assert np.allclose([m.inverse(v) for v in mapped], grid, rtol=1e-9, atol=1e-15)
    assert (m(0.0), m(1.0), m.inverse(0.0), m.inverse(1.0)) == (0.0, 1.0, 0.0, 1.0)
    # Beyond the end knots the odds keep the end knots' ratio.
    odds = lambda v: v / (1 - v)  # noqa: E731
    assert odds(m(1e-6)) / odds(1e-6) == pytest.approx(odds(1e-3) / odds(1e-4), rel=1e-9)
    assert math.isnan(m(math.nan))
    assert ProbabilityMap.identity()(0.123) == 0.123 and ProbabilityMap.identity().is_identity


def test_every_knot_maps_to_its_value_however_small():
    # The shipped map's first knot is a model P of ~1e-13 (the mean log-odds of the lowest
    # group): it must sit where it says, not at a clipped 1e-12.
    m = ProbabilityMap(model=(1e-14, 1e-5, 0.3), observed=(2e-3, 5e-3, 0.4))
    for a, b in zip(m.model, m.observed):
        assert m(a) == pytest.approx(b, rel=1e-9) and m.inverse(b) == pytest.approx(a, rel=1e-9)
    shipped = default_calibration()
    assert shipped.model[0] < 1e-12
    assert shipped(shipped.model[0]) == pytest.approx(shipped.observed[0], rel=1e-9)


@pytest.mark.parametrize("model,observed,words", [
    ((0.1, 0.2), (0.3,), "one 'observed' value per 'model' knot"),
    ((0.1, 0.05), (0.2, 0.3), "'model' knots must strictly increase"),
    ((0.1, 0.2), (0.3, 0.3), "'observed' knots must strictly increase"),
    ((0.0, 0.2), (0.1, 0.3), "inside (0, 1)"),
])
def test_bad_knots_are_named(model, observed, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ProbabilityMap(model=model, observed=observed)


def test_bad_input_to_fit_and_from_dict_is_named():
    with pytest.raises(ValueError, match="one outcome per probability"):
        ProbabilityMap.fit([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="at least 2 probabilities inside"):
        ProbabilityMap.fit([0.0, 1.0, 0.5], [False, True, True])
    with pytest.raises(ValueError, match=r"unknown keys \['knots'\]; valid keys: "
                                         r"\['model', 'observed'\]"):
        ProbabilityMap.from_dict({"knots": [0.1]})
    with pytest.raises(ValueError, match="'calibration' parameter of SaturationMonitor"):
        MonitorConfig(calibration="isotonic")


def test_the_shipped_map_and_risk_belong_together():
    raw = json.loads(resources.files("satmon.monitor").joinpath("prior.json").read_text())
    cal = default_calibration()
    assert not cal.is_identity and cal.to_dict() == raw["calibration"]
    # The shipped risk is the map's image of the level fitted on the model's scale.
    assert default_risk() == pytest.approx(cal(raw["model_risk"]), rel=1e-12)
    assert cal.inverse(default_risk()) == pytest.approx(raw["model_risk"], rel=1e-9)
    cfg = MonitorConfig(calibration=raw["calibration"])
    assert cfg.calibration == cal and cfg.to_dict()["calibration"] == raw["calibration"]


def test_reading_p_gain_through_the_map_changes_no_halt():
    """The default monitor (calibrated P, the shipped risk) halts every run at the step and for
    the reason of a monitor on the model's own P at model_risk; the reported P is the map's
    image of the model's."""
    raw = json.loads(resources.files("satmon.monitor").joinpath("prior.json").read_text())
    cal = default_calibration()
    halted = 0
    for sr in make_suite(24, seed=3):
        calibrated = replay(sr.run)
        model = replay(sr.run, calibration=ProbabilityMap.identity(),
                       risk=raw["model_risk"], flag_risk=cal.inverse(0.2))
        assert (calibrated.halt_step, calibrated.reason) == (model.halt_step, model.reason)
        assert [d.action for d in calibrated.decisions] == [d.action for d in model.decisions]
        halted += calibrated.halted
        for a, b in zip(calibrated.decisions, model.decisions):
            if "p_heldout_gain" in a.evidence.details:
                pa = a.evidence.details["heldout/p_gain"]
                pm = b.evidence.details["heldout/p_gain"]
                assert a.evidence.details["heldout/p_gain_model"] == pm
                assert pa == pytest.approx(cal(pm), rel=1e-12, abs=1e-300)
    assert halted >= 12  # the suite has halts to compare


def test_a_monitor_state_saved_before_the_map_restores():
    mon = SaturationMonitor(total_steps=200, warmup_steps=10)
    for s in range(0, 120):
        mon.update(s, 0.3 + 0.001 * s, heldout={"h": (0.4, 500)} if s % 10 == 0 else None)
    state = mon.state_dict()
    for post in state["posteriors"].values():
        post.pop("p_gain_model")
    again = SaturationMonitor(total_steps=200, warmup_steps=10)
    again.load_state_dict(state)
    post = again._posteriors["h"]
    assert post.p_gain_model == post.p_gain  # no model number saved: the reported one stands
