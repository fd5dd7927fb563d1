"""The mixture reference of benchmarks/bound_mixture.py: its known-progress lagged models reproduce
the lagged generator, the side information reads each family's saturation step off the other
family's curve, and the family posterior and P_t behave on pinned runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bound_mixture as mx  # noqa: E402
from satmon.datasets import LAGGED_REGIMES, make_lagged_run, make_run  # noqa: E402


@pytest.mark.parametrize("regime", LAGGED_REGIMES)
def test_known_progress_model_reproduces_the_lagged_generator(regime):
    for seed in range(3):
        sr = make_lagged_run(regime, seed=seed)
        t = sr.truth
        side = mx.side_info(sr, "lagged")
        theta = {k: np.array([t.params[k]]) for k in mx.KNOWN_PARAMS[regime]}
        f = mx.lagged_curve(regime, theta, side, np.arange(side.T + 1))[0]
        # g(t - lag) is interpolated between integer steps: error ~ g'' / 8, far below noise.
        np.testing.assert_allclose(np.clip(t.params["m0"] + f, 0, 1), t.heldout_clean,
                                   atol=2e-4)


def test_lagged_theta_keeps_the_generator_ranges():
    sr = make_lagged_run("lagged_collapse", seed=1)
    side = mx.side_info(sr, "lagged")
    theta = mx.lagged_theta("lagged_collapse", side, mx.unit_points("lagged_collapse", 256))
    delay = theta["t_collapse"] - side.t_sat
    assert np.all((delay >= 0.05 * side.T) & (delay <= 0.4 * side.T))
    assert np.all((theta["width"] >= 0.01 * side.T) & (theta["width"] <= 0.05 * side.T))


def test_saturation_steps_read_off_either_curve():
    sr = make_lagged_run("lagged_generalizing", seed=0)
    side = mx.side_info(sr, "lagged")
    p = sr.truth.params
    # t_target: where the clean reward reaches 0.99 rmax.
    prog = mx.bl._progress(np.array([side.t_target]), p["beta"], p["t_sat"])[0]
    assert p["r0"] + (p["rmax"] - p["r0"]) * prog == pytest.approx(0.99 * p["rmax"])
    sr = make_run("memorizing", seed=3)
    side = mx.side_info(sr, "datasets")
    assert side.t_target == sr.truth.params["t_target"]
    k = int(np.ceil(side.t_sat))
    assert side.g[k - 1] < mx.SAT_FRACTION <= side.g[k]


def test_family_posterior_on_pinned_runs():
    # A lagged run with correlated offsets and m0 = 0.56 (outside the datasets range): lagged.
    lag = mx.run_posterior(make_lagged_run("delayed_generalization", seed=6), "lagged")
    assert lag.family_post("own")[-1] < 1e-3
    # A clean datasets generalizing run reads as datasets by the end.
    gen = mx.run_posterior(make_run("generalizing", seed=6, heldout_n=500, eval_every=10),
                           "datasets")
    assert gen.family_post("own")[-1] > 0.9
    for post in (lag, gen):
        for v in mx.M0_VARIANTS:
            lo = np.minimum(post.observer("datasets", v), post.observer("lagged", v))
            hi = np.maximum(post.observer("datasets", v), post.observer("lagged", v))
            mix = post.observer("mixture", v)
            assert np.all((mix >= lo - 1e-12) & (mix <= hi + 1e-12))


def test_flat_datasets_run_is_halted_later_by_the_mixture():
    # A memorizing run: its own family's observer halts it early; the mixture keeps open a
    # delayed rise of the lagged family and halts later.
    post = mx.run_posterior(make_run("memorizing", seed=3, heldout_n=1000, eval_every=10),
                            "datasets")
    own = mx.halt_step(post, "datasets", 0.01)
    mix = mx.halt_step(post, "mixture", 0.01)
    assert own is not None and (mix is None or mix > own)
