"""Regime evidence: binomial-noise slopes, co-movement, collapse, and the gain posterior."""

from __future__ import annotations

import numpy as np
import pytest

from satmon.regime import (CLASSES, classify_regime, regime_features,
                           regime_probabilities, wls_slope)

TRAIN_S = np.arange(1, 401)
TRAIN_V = 0.2 + 0.7 * (1 - np.exp(-TRAIN_S / 80))


def _heldout(kind, rng, n=500):
    steps = np.arange(0, 401, 20)
    if kind == "generalizing":
        clean = 0.3 + 0.2 * (1 - np.exp(-steps / 80))
    elif kind == "memorizing":
        clean = 0.3 + 0.0 * steps
    else:
        clean = 0.3 + 0.05 * (1 - np.exp(-steps / 80)) - 0.2 / (1 + np.exp(-(steps - 250) / 10))
    return steps, rng.binomial(n, clean) / n, np.full(steps.size, n)


@pytest.mark.parametrize("kind,expected", [("generalizing", "generalizing"),
                                           ("memorizing", "memorizing"),
                                           ("collapse", "collapsing")])
def test_classify_obvious_regimes(kind, expected):
    rng = np.random.default_rng(0)
    s, v, n = _heldout(kind, rng)
    ev = classify_regime(s, v, n, train_steps=TRAIN_S, train_values=TRAIN_V)
    assert max(ev.probabilities, key=ev.probabilities.get) == expected
    assert set(ev.probabilities) == set(CLASSES)


def test_too_few_points_gives_no_call():
    ev = classify_regime([0, 10], [0.3, 0.31], [500, 500])
    assert ev.probabilities == {} and ev.n_points == 2


def test_unknown_sample_size_uses_series_noise():
    rng = np.random.default_rng(1)
    s, v, _ = _heldout("generalizing", rng)
    f = regime_features(s, v, np.zeros(s.size))
    assert f["z_time"] > 2


def test_wls_slope_matches_ols_with_equal_weights():
    x = np.arange(10.0)
    y = 2 * x + np.array([0.1, -0.1] * 5)
    b, se = wls_slope(x, y, np.full(10, 0.01))
    assert b == pytest.approx(np.polyfit(x, y, 1)[0])
    assert se > 0


def test_probabilities_sum_to_one():
    p = regime_probabilities({"z_time": 3.0, "z_drop": 1.0})
    assert sum(p.values()) == pytest.approx(1.0)


def test_regime_model_file_agrees_with_the_feature_list():
    import json
    from importlib import resources

    from satmon.regime import FEATURES, REGIME_COEFFICIENTS

    raw = json.loads(resources.files("satmon").joinpath("regime_model.json").read_text())
    assert raw["fields"] == list(FEATURES)
    assert sorted(raw["coefficients"]) == sorted(CLASSES)
    assert all(len(v) == len(FEATURES) + 1 for v in raw["coefficients"].values())
    assert REGIME_COEFFICIENTS["memorizing"] == (0.0,) * (len(FEATURES) + 1)
