"""The held-out-only Bayes reference of benchmarks/bound_lagged.py: its held-out models reproduce
the lagged generator, and its posterior goes to the known answer on pinned runs."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bound_lagged as bl  # noqa: E402
from satmon.datasets import LAGGED_REGIMES, make_lagged_run  # noqa: E402


@pytest.mark.parametrize("regime", LAGGED_REGIMES)
def test_heldout_model_reproduces_the_generator(regime):
    for seed in range(3):
        sr = make_lagged_run(regime, seed=seed)
        t = sr.truth
        T = t.params["T"]
        theta = {k: np.array([t.params[k]]) for k in bl.SOBOL_PARAMS[regime]}
        steps = np.arange(T + 1)
        f = bl.family_curve(regime, theta, steps, T)[0]
        np.testing.assert_allclose(np.clip(t.params["m0"] + f, 0, 1), t.heldout_clean,
                                   atol=1e-12)
        fast = bl.FastCurve(regime, theta, T)
        np.testing.assert_allclose(fast(steps)[0], f, atol=1e-5)
        # The remaining gain > 0.01, clip included, from the future maximum and m0.
        for curve in (fast, functools.partial(bl.family_curve, regime, theta, T=T)):
            g = np.asarray(curve(steps), dtype=float)
            fmax = bl.FutureMax(regime, curve, T).at(steps, g)[0]
            big = (fmax - g[0] > bl.GAIN_THRESHOLD) & (t.params["m0"]
                                                       > bl.m0_clip_threshold(fmax))
            np.testing.assert_array_equal(big, t.remaining_gain > bl.GAIN_THRESHOLD)


def test_prior_nodes_map_onto_the_generator_ranges():
    T = 700
    for regime in LAGGED_REGIMES:
        theta, noise = bl.family_nodes(regime, T, 256)
        assert noise.shape == (256, 2) and np.all((noise >= 0) & (noise < 1))
        if regime == "lagged_memorizing":
            # drift <= 0.005: a memorizing node can never gain 0.01 later.
            f = bl.family_curve(regime, theta, np.arange(T + 1), T)
            assert np.max(bl.bm.reverse_cummax(f) - f) <= 0.005 + 1e-12
        if regime == "lagged_collapse":
            lag = theta["t_collapse"] - theta["t_sat"]
            assert np.all((lag >= 0.05 * T) & (lag <= 0.4 * T))
    assert np.array_equal(bl.unit_points("lagged_generalizing", 64),
                          bl.unit_points("lagged_generalizing", 128)[:64])  # nested


def test_flat_memorizing_run_is_halted_late():
    sr = make_lagged_run("lagged_memorizing", seed=2)  # T = 1243, n = 4375, 33 evaluations
    post = bl.run_posterior(sr)
    p = post.prob["blind"]
    assert 0.6 < p[0] < 0.8  # one point cannot tell the regimes apart (3/4 of them gain)
    T = sr.truth.params["T"]
    assert p[post.steps >= 0.8 * T].max() < 0.05
    lm = LAGGED_REGIMES.index("lagged_memorizing")
    assert post.regime_post[-1, lm] > 0.9
    assert bl.halt_step(post, 0.05) is not None


def test_rising_generalizing_run_is_not_halted_early_in_its_rise():
    sr = make_lagged_run("lagged_generalizing", seed=6)  # T = 132, n = 3526, 14 evaluations
    t = sr.truth
    post = bl.run_posterior(sr)
    rise = t.heldout_clean[post.steps] - t.params["m0"]
    early = (rise > 0.25 * t.params["gain"]) & (rise < 0.6 * t.params["gain"])
    assert early.any()
    assert post.prob["blind"][early].min() > 0.9
    halt = bl.halt_step(post, 0.01)
    assert halt is None or t.remaining_gain_at(halt) <= bl.GAIN_THRESHOLD


def test_warmup_and_halt_rule():
    steps = np.arange(0, 200, 7)
    assert bl.warmup_step(steps) == 50
    assert bl.warmup_step(np.arange(0, 400, 25)) == 125
    post = bl.RunPosterior(steps=steps[:10], prob={"blind": np.r_[0.0, 0.0, np.full(8, 0.5)]},
                           ess={"blind": np.ones(10)}, regime_post=np.zeros((10, 4)),
                           warmup=50)
    assert bl.halt_step(post, 0.1) is None  # below alpha only inside the warm-up
    post.prob["blind"][8] = 0.05
    assert bl.halt_step(post, 0.1) == 56


def test_best_saved_at_returns_the_frontier_point():
    b = bl.best_saved_at(cap=0.25, runs=8)
    assert b is not None and set(b) >= {"false", "saved_mem", "alpha"}
    assert b["false"] <= 0.25 and 0.0 <= b["saved_mem"] <= 1.0 and 0 < b["alpha"] <= 0.5
    rows = bl.frontier(*reversed(bl._suite_posteriors(8, bl.Resolution(), 1)))
    assert b["saved_mem"] >= max(r["saved_mem"] for r in rows if r["false"] <= 0.25) - 1e-12
