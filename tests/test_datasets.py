"""Seeded synthetic runs: determinism, invariants, and truth that matches the analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from satmon import saturation_step
from satmon.datasets import REGIME_LABELS, REGIMES, SHAPES, make_run, make_suite


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("mix", ["standard", "hard"])
def test_truth_matches_saturation_step_on_returned_curves(regime, mix):
    for seed in range(3):
        sr = make_run(regime, seed=seed, mix=mix, ar1=0.5, outlier_rate=0.02, missing_rate=0.05)
        t = sr.truth
        T = sr.run.last_step
        assert T == 500 and t.train_clean.shape == (T,) and t.heldout_clean.shape == (T + 1,)
        assert t.t_sat_clean == saturation_step(t.train_clean, np.arange(1, T + 1))
        tr = sr.run.train_reward
        assert t.t_sat_noisy == saturation_step(tr.values, tr.steps)
        assert t.label == REGIME_LABELS[regime] == sr.run.metadata["label"]


def test_determinism_under_a_seed():
    a = make_run("collapse", seed=11, ar1=0.6, missing_rate=0.1)
    b = make_run("collapse", seed=11, ar1=0.6, missing_rate=0.1)
    c = make_run("collapse", seed=12, ar1=0.6, missing_rate=0.1)
    assert np.array_equal(a.run.train_reward.values, b.run.train_reward.values)
    assert np.array_equal(a.run.heldout["heldout"].values, b.run.heldout["heldout"].values)
    assert a.truth.params == b.truth.params
    assert not np.array_equal(a.run.train_reward.values, c.run.train_reward.values)
    s1 = make_suite(12, seed=5)
    s2 = make_suite(12, seed=5)
    assert [r.run.name for r in s1] == [r.run.name for r in s2]
    assert all(np.array_equal(x.run.train_reward.values, y.run.train_reward.values)
               for x, y in zip(s1, s2))


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_rise_monotonically_to_their_maximum(shape):
    sr = make_run("generalizing", seed=2, shape=shape)
    clean = sr.truth.train_clean
    assert np.all(np.diff(clean) >= -1e-12)
    assert clean[-1] == pytest.approx(sr.truth.params["rmax"], rel=0.02)


def test_invariants_of_noise_and_heldout():
    sr = make_run("generalizing", seed=4, heldout_n=200, eval_every=10, total_steps=300)
    tr = sr.run.train_reward
    h = sr.run.heldout["heldout"]
    assert np.all((tr.values >= 0) & (tr.values <= 1))
    assert h.steps.tolist() == list(range(0, 301, 10)) and h.sample_size == 200
    assert np.allclose(h.values * 200, np.round(h.values * 200))      # binomial counts
    z = sr.run.aux["frac_reward_zero_std"].values
    assert np.all((z >= 0) & (z <= 1))
    # batch-mean noise of a 64 x 8 batch with Beta heterogeneity: sd in the 0.005-0.06 range
    resid = tr.values - sr.truth.train_clean[tr.steps - 1]
    assert 0.005 < resid.std() < 0.06
    # missing steps are absent from the run but the last step is always logged
    sparse = make_run("memorizing", seed=4, missing_rate=0.3)
    assert len(sparse.run.train_reward) < 500 and sparse.run.last_step == 500
    # remaining gain: non-negative, zero at the end, equals the forward max minus the value
    rg = sr.truth.remaining_gain
    assert rg.min() >= 0 and rg[-1] == 0
    assert rg[0] == pytest.approx(sr.truth.heldout_clean.max() - sr.truth.heldout_clean[0])


def test_regimes_behave_as_documented_on_average():
    def mean_over(regime, fn, mix="standard"):
        return np.mean([fn(make_run(regime, seed=s, mix=mix)) for s in range(20)])

    tsat = lambda sr: min(sr.truth.t_sat_clean, 1000)
    gain = lambda sr: sr.truth.remaining_gain[0]
    assert mean_over("memorizing", tsat) < 100 < mean_over("generalizing", tsat)
    assert mean_over("noisy_label", tsat) < 100
    assert mean_over("generalizing", gain) > 0.05 > mean_over("memorizing", gain)
    assert all(math.isinf(make_run("slow", seed=s).truth.t_sat_clean) for s in range(5))
    # post-saturation generalization: at t_sat there is still held-out gain to come
    post = [make_run("post_saturation_generalization", seed=s) for s in range(10)]
    assert np.mean([p.truth.remaining_gain_at(p.truth.t_sat_clean) for p in post]) > 0.03
    # collapse: held-out ends below its peak
    col = [make_run("collapse", seed=s) for s in range(10)]
    assert all(c.truth.heldout_clean[-1] < c.truth.heldout_clean.max() - 0.05 for c in col)
    # hard mix: training speed no longer separates memorizing from generalizing
    hard_gap = abs(mean_over("memorizing", tsat, "hard") - mean_over("generalizing", tsat, "hard"))
    assert hard_gap < 80


def test_suite_cycles_regimes_and_accepts_overrides():
    suite = make_suite(12, seed=1, total_steps=200, vary_noise=False)
    assert [s.truth.regime for s in suite[:6]] == list(REGIMES)
    assert all(s.run.last_step == 200 for s in suite)
    only = make_suite(4, regimes=["memorizing"], mix="hard")
    assert {s.truth.regime for s in only} == {"memorizing"}


@pytest.mark.parametrize("kwargs, match", [
    ({"regime": "grokking"}, "'regime' parameter must be one of"),
    ({"mix": "easy"}, "'mix' parameter must be one of"),
    ({"total_steps": 1}, "'total_steps' parameter must be an int >= 2. Got 1"),
    ({"ar1": 1.0}, "'ar1' parameter must be a float in"),
    ({"shape": "cubic"}, "'shape' parameter must be one of"),
])
def test_parameter_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_run(**kwargs)
    with pytest.raises(ValueError, match="Unknown regimes"):
        make_suite(3, regimes=["nope"])
