"""The Bayes reference of benchmarks/bound_memorizing.py: its held-out models reproduce the
generator, and its posterior goes to the known answer on pinned runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bound_memorizing as bm  # noqa: E402
from satmon.datasets import REGIMES, make_run  # noqa: E402

THETA_KEYS = {"GS": ("gain", "rho"), "PSG": ("gain", "tau_h"), "MN": ("local_gain", "drift"),
              "COL": ("gain", "drop", "t_collapse", "width")}


@pytest.mark.parametrize("regime", REGIMES)
def test_family_curve_reproduces_the_generator(regime):
    for seed in range(3):
        sr = make_run(regime, seed=seed)
        t = sr.truth
        fam = bm.FAMILY_OF[regime]
        theta = {k: [t.params[k]] for k in THETA_KEYS[fam]}
        f = bm.family_curve(fam, theta, bm.normalised_progress(t), sr.run.last_step)[0]
        m0 = t.heldout_clean[0] - f[0]
        assert 0.1 <= m0 <= 0.5
        np.testing.assert_allclose(np.clip(m0 + f, 0, 1), t.heldout_clean, atol=1e-12)


def test_training_density_pins_the_regime():
    sr = make_run("noisy_label", seed=4)
    dens = {r: bm.training_log_density(r, sr.truth.params, 500) for r in REGIMES}
    assert np.isfinite(dens["noisy_label"])
    assert all(dens[r] == -np.inf for r in REGIMES if r != "noisy_label")


def test_noisy_label_known_from_training_is_never_worth_continuing():
    # With the two-stage curve known, only the memorizing held-out model is left, and it can
    # gain at most local_gain < 0.01: P is exactly 0 from the first evaluation.
    post = bm.run_posterior(make_run("noisy_label", seed=4, heldout_n=500, eval_every=25))
    assert np.all(post.prob["full"] == 0.0)
    assert np.allclose(post.regime_post["full"][:, bm.REGIMES.index("noisy_label")], 1.0)


def test_flat_heldout_drives_p_to_zero_without_training_information():
    sr = make_run("memorizing", seed=2, heldout_n=1000, eval_every=10)
    post = bm.run_posterior(sr)
    p = post.prob["blind"]
    assert p[0] > 0.3  # one point cannot tell a flat run from a rising one
    assert p[post.steps >= 300].max() < 0.01
    mem = bm.REGIMES.index("memorizing"), bm.REGIMES.index("noisy_label")
    assert post.regime_post["blind"][-1, list(mem)].sum() > 0.99


def test_run_pinned_to_post_saturation_generalization_is_never_halted_early():
    # rmax < 0.9 and t_target < 100 leave only post_saturation_generalization under the training
    # prior, and every node of its prior (gain >= 0.08, tau_h <= 2T) still gains more than 0.01
    # after step 250: P must be 1 there whatever the held-out points say.
    sr = make_run("post_saturation_generalization", seed=8, heldout_n=1000, eval_every=25)
    p = sr.truth.params
    assert p["rmax"] < 0.9 and p["t_target"] < 100
    post = bm.run_posterior(sr)
    psg = bm.REGIMES.index("post_saturation_generalization")
    assert np.allclose(post.regime_post["full"][:, psg], 1.0)
    assert np.allclose(post.prob["full"][post.steps <= 250], 1.0)
    assert post.prob["full"][-1] == 0.0  # nothing is left to gain at T under any node
    # From held-out alone this run looks flat for 150 steps (its step-0 point is 2 sd high),
    # then the rise becomes visible.
    blind = post.prob["blind"]
    assert blind[(post.steps >= 25) & (post.steps <= 150)].max() < 0.8
    assert blind[(post.steps >= 250) & (post.steps <= 300)].min() > 0.95


def test_refined_grids_agree():
    sr = make_run("memorizing", seed=7, heldout_n=1000, eval_every=25)
    a = bm.run_posterior(sr)
    b = bm.run_posterior(sr, bm.Resolution().refined(2))
    for v in bm.VARIANTS:
        assert np.max(np.abs(a.prob[v] - b.prob[v])) < 0.01
