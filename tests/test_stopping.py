"""The empirical-Bayes stopping model: features, probabilities, calibrated constants."""

from __future__ import annotations

import math

import pytest

from satmon import _stop_model
from satmon.stopping import (STOP_FEATURES, default_halt_threshold, feature_matrix,
                             p_heldout_gain, stop_features, stop_score)


def _features(slope, se=2e-5, step=300, t_sat=100.0, p_sat=0.99):
    return stop_features(regime={"z_train": 0.0, "z_drop": 0.0, "z_gain": 0.0},
                         slope_recent=(slope, se), slope_all=(slope, se), horizon=500 - step,
                         total_steps=500, step=step, t_sat=t_sat, p_saturated=p_sat,
                         n_points=step // 25 + 1, min_gain=0.01)


def test_feature_names_and_ranges():
    f = _features(0.0)
    assert tuple(f) == STOP_FEATURES
    assert all(math.isfinite(v) for v in f.values())
    assert f["frac_left"] == pytest.approx(0.4) and f["since_sat"] == pytest.approx(0.4)
    assert f["gain_z_recent"] == pytest.approx((0 - 0.01) / (2e-5 * 200))


def test_no_horizon_left_rules_out_gain():
    f = _features(1e-3, step=500)
    assert f["gain_z_recent"] == -8.0 and f["frac_left"] == 0.0


def test_unknown_slope_and_saturation_are_neutral():
    f = stop_features(regime={}, slope_recent=(math.nan, math.nan),
                      slope_all=(math.nan, math.nan), horizon=100, total_steps=500, step=400,
                      t_sat=math.inf, p_saturated=0.2, n_points=3, min_gain=0.01)
    assert f["gain_z_recent"] == 0.0 and f["since_sat"] == 0.0


def test_rising_heldout_is_more_likely_to_gain_than_flat():
    # Monotone in the evidence that matters most: a clearly rising held-out curve.
    assert p_heldout_gain(_features(2e-4)) > p_heldout_gain(_features(0.0))
    assert p_heldout_gain(_features(-1e-4)) < 0.5


def test_calibrated_constants_are_consistent():
    assert len(_stop_model.COEFFICIENTS) == len(STOP_FEATURES) + 1
    assert tuple(_stop_model.FEATURES) == STOP_FEATURES
    assert 0.8 <= default_halt_threshold() < 1.0
    assert feature_matrix([_features(0.0)]).shape == (1, len(STOP_FEATURES) + 1)


def test_wrong_coefficient_count_names_the_problem():
    with pytest.raises(ValueError, match="intercept"):
        p_heldout_gain(_features(0.0), coefficients=(1.0, 2.0))


def test_stop_score_rule_and_vetoes():
    base = dict(post=True, dropped=False, p_collapse=0.0, p_saturated=0.99, rising_z=0.0,
                rising_gain=0.0, horizon=100.0, flag_threshold=0.8, min_p_saturated=0.9,
                rising_z_limit=2.0, min_gain=0.01)
    assert stop_score(0.05, **base) == (pytest.approx(0.95), "")
    # Before saturation the score is 0; a low score is never vetoed.
    assert stop_score(0.05, **{**base, "post": False}) == (0.0, "")
    assert stop_score(0.5, **{**base, "p_saturated": 0.1})[1] == ""
    # The three guard rails, each named with its numbers.
    assert "P(saturated)=0.50 below 0.9" in stop_score(0.05, **{**base, "p_saturated": 0.5})[1]
    assert "no planned steps left" in stop_score(0.05, **{**base, "horizon": 0.0})[1]
    veto = stop_score(0.05, **{**base, "rising_z": 3.0, "rising_gain": 0.05})[1]
    assert "slope z=3.0 > 2" in veto and "+0.050 > 0.01" in veto
    # A significant drop: at least P(collapsing), and no veto applies.
    assert stop_score(0.9, **{**base, "dropped": True, "p_collapse": 0.97,
                              "p_saturated": 0.1}) == (0.97, "")
