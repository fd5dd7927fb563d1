"""The held-out gain posterior against direct numerical integration, and its contracts."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace
from importlib import resources

import numpy as np
import pytest

from satmon.monitor.posterior import (GainPrior, default_prior, heldout_gain_posterior,
                                      point_variance)

T = 500
STEPS = np.arange(0, 250, 25, dtype=float)  # 10 evaluations, now = 225


def _shapes(prior: GainPrior, x: np.ndarray, now: float, end: float):
    """(column, D, low, high, prior mass) per non-flat shape, written out independently."""
    x0 = x - x[0]
    out = []
    taus = end * np.geomspace(prior.tau_low, prior.tau_high, prior.n_tau)
    # No co-moving shape here: its mass goes to the approach shapes.
    mass = (1 - prior.p_flat - prior.p_onset - prior.p_delayed) / prior.n_tau
    for tau in taus:
        out.append((1 - np.exp(-x0 / tau), math.exp(-now / tau) - math.exp(-end / tau),
                    prior.gain_low, prior.gain_high, mass))
    for k in prior.onset_powers:
        out.append(((x0 / end) ** k, 1 - (now / end) ** k, prior.gain_low, prior.gain_high,
                    prior.p_onset / len(prior.onset_powers)))
    centres = np.arange(1, prior.n_delay + 1) / prior.n_delay * end
    for wf in prior.delay_widths:
        for c in centres:
            def sig(v):
                return 1 / (1 + np.exp(-(np.asarray(v, dtype=float) - c) / (wf * end)))
            out.append((sig(x0) - sig(0.0), float(sig(end) - sig(now)), prior.gain_low,
                        prior.gain_high,
                        prior.p_delayed / (prior.n_delay * len(prior.delay_widths))))
    return out


def _direct(y, var, prior, now, end, phi, min_gain=0.01, exact_n=None):
    """P(gain >= min_gain) by brute-force quadrature over (a, g) for each shape."""
    x = STEPS[: y.size]
    a_grid = np.linspace(max(y.mean() - 0.15, 0.0005), min(y.mean() + 0.15, 0.9995), 361)
    num = 0.0
    evid = []
    cols = _shapes(prior, x, now - x[0], end - x[0])

    def loglik(mean):
        if exact_n is None:
            return -0.5 * (((y[None, None, :] - mean) ** 2) / var).sum(-1) / phi
        k = np.round(y * exact_n)
        m = np.clip(mean, 1e-9, 1 - 1e-9)
        # log C(n, k) is the same for every shape and cancels.
        return (k * np.log(m) + (exact_n - k) * np.log1p(-m)).sum(-1) / phi

    flat = loglik(a_grid[:, None, None] + 0.0 * x)[:, 0]
    ref = flat.max()
    evid.append(prior.p_flat * np.trapezoid(np.exp(flat - ref), a_grid))
    for s, d, lo, hi, mass in cols:
        g = np.linspace(lo, hi, 351)
        mean = a_grid[:, None, None] + g[None, :, None] * s[None, None, :]
        ll = loglik(mean)
        # a and g outside [0, 1] means: the normal model integrates them, the binomial cannot.
        dens = np.exp(ll - ref)
        inner = np.trapezoid(dens, a_grid, axis=0) / (hi - lo)
        evid.append(mass * np.trapezoid(inner, g))
        num += mass * np.trapezoid(inner * (g * d >= min_gain), g)
    return num / sum(evid)


@pytest.mark.parametrize("case", ["flat", "slow_rise", "outlier", "unknown_n"])
def test_posterior_matches_direct_integration(case):
    # One split (no leading evaluations set aside): the shape mixture alone.
    prior = replace(default_prior(), max_lead=0)
    rng = np.random.default_rng(3)
    n = 500
    if case == "flat":
        y = np.full(10, 0.30)
    elif case == "slow_rise":
        y = np.round((0.30 + 0.00012 * STEPS + rng.normal(0, 0.004, 10)) * n) / n
    elif case == "outlier":
        y = np.full(10, 0.40)
        y[6] = 0.33
    else:
        y = np.round((0.5 + rng.normal(0, 0.02, 10)) * n) / n
    sizes = np.zeros(10) if case == "unknown_n" else np.full(10, n)
    var = point_variance(y, sizes)
    post = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=T, prior=prior)
    # The same model integrated by brute force, with the dispersion the posterior used.
    direct = _direct(y, var, prior, 225.0, float(T), post.dispersion)
    assert post.p_gain == pytest.approx(direct, abs=2e-3), (case, post, direct)


def test_normal_likelihood_is_close_to_the_exact_binomial():
    # The posterior uses the normal approximation of each evaluation's binomial likelihood;
    # on a slow rise at n = 500 the exact binomial integral moves P(gain) by under 0.03.
    prior = replace(default_prior(), max_lead=0)
    rng = np.random.default_rng(5)
    n = 500
    y = np.round((0.30 + 0.0001 * STEPS + rng.normal(0, 0.01, 10)) * n) / n
    post = heldout_gain_posterior(STEPS, y, np.full(10, n), step=225, total_steps=T,
                                  prior=prior)
    exact = _direct(y, point_variance(y, np.full(10, n)), prior, 225.0, float(T),
                    post.dispersion, exact_n=n)
    assert abs(post.p_gain - exact) < 0.03, (post.p_gain, exact)


def test_leading_evaluations_of_an_earlier_phase_are_set_aside():
    # A format jump (0.0, 0.0, then ~0.45 and a slow rise): with splits the posterior reads the
    # slow rise as the data after the jump shows it; without them the jump dominates the shapes.
    y = np.array([0.0, 0.002, 0.45, 0.455, 0.46, 0.462, 0.47, 0.472, 0.478, 0.48])
    sizes = np.full(10, 1319)
    after = heldout_gain_posterior(STEPS[2:], y[2:], sizes[2:], step=225, total_steps=T)
    split = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=T)
    assert split.p_gain == pytest.approx(after.p_gain, abs=0.08)
    no_split = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=T,
                                      prior=replace(default_prior(), max_lead=0))
    assert abs(no_split.p_gain - after.p_gain) > 0.1


def test_flat_series_rules_out_a_gain_and_a_rising_one_does_not():
    flat = heldout_gain_posterior(STEPS, np.full(10, 0.3), np.full(10, 500), step=225,
                                  total_steps=T)
    rising = heldout_gain_posterior(STEPS, 0.3 + 0.0004 * STEPS, np.full(10, 500), step=225,
                                    total_steps=T)
    assert flat.p_gain < 0.05 and flat.p_flat > 0.8
    assert rising.p_gain > 0.95 and rising.p_gained > 0.99
    assert rising.expected_gain > 0.01 and rising.gain_upper >= rising.expected_gain
    # A falling series gains nothing, and says it is falling.
    falling = heldout_gain_posterior(STEPS, 0.5 - 0.0004 * STEPS, np.full(10, 500), step=225,
                                     total_steps=T)
    assert falling.p_gain < 0.01 and falling.p_falling > 0.95


def test_no_steps_left_means_no_gain_and_more_budget_means_more():
    y = 0.3 + 0.0001 * STEPS
    sizes = np.full(10, 500)
    at_end = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=225)
    assert at_end.p_gain == 0.0 and at_end.horizon == 0.0
    short = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=300)
    long = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=1000)
    assert short.p_gain < long.p_gain


def test_frozen_policy_lowers_the_gain_by_the_rule_of_succession():
    y = np.full(10, 0.3) + np.array([0, 0.01, -0.01, 0.0, 0.01, 0.0, -0.01, 0.01, 0.0, 0.0])
    sizes = np.full(10, 200)
    base = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=T)
    frozen = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=T, frozen_steps=200)
    horizon = T - 225
    assert frozen.p_frozen == pytest.approx(201 / (201 + horizon))
    assert frozen.p_gain == pytest.approx(base.p_gain * (1 - frozen.p_frozen))


def test_repeated_greedy_score_is_underdispersed():
    # A greedy score on a fixed set that repeats to the sample: dispersion far below 1.
    post = heldout_gain_posterior(STEPS, np.full(10, 0.285), np.full(10, 200), step=225,
                                  total_steps=300)
    noisy = heldout_gain_posterior(STEPS, 0.285 + np.array([0, 3, -3, 1, -2, 3, 0, -3, 2, -1])
                                   / 100, np.full(10, 200), step=225, total_steps=300)
    assert post.dispersion < 0.5 <= noisy.dispersion
    assert post.p_gain < noisy.p_gain


def test_comoving_shape_links_the_gain_to_the_reward_rise_left():
    # Held-out moves with the reward: with the reward still rising a further gain is likely,
    # with the reward saturated (no rise left) it is not.
    levels = np.linspace(0.2, 0.6, 10)
    y = np.round((0.25 + 0.2 * levels) * 1000) / 1000
    sizes = np.full(10, 1000)
    rising = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=260,
                                    reward_levels=levels, reward_rise_left=0.3)
    done = heldout_gain_posterior(STEPS, y, sizes, step=225, total_steps=260,
                                  reward_levels=levels, reward_rise_left=0.0)
    assert rising.p_gain > done.p_gain + 0.1


def test_bad_input_and_prior_validation():
    with pytest.raises(ValueError, match="one length"):
        heldout_gain_posterior([0, 1, 2], [0.1, 0.2], step=2, total_steps=10)
    with pytest.raises(ValueError, match="reward_levels"):
        heldout_gain_posterior([0, 1, 2], [0.1, 0.2, 0.3], [10] * 3, step=2, total_steps=10,
                               reward_levels=[0.1, math.nan, 0.2])
    with pytest.raises(ValueError, match="p_flat"):
        GainPrior(p_flat=0.9, p_comove=0.2)
    with pytest.raises(ValueError, match="gain_low"):
        GainPrior(gain_low=0.5, gain_high=0.4)
    with pytest.raises(ValueError, match="unknown keys.*valid keys"):
        GainPrior.from_dict({"p_flatt": 0.5})
    # One evaluation says nothing: no halt can rest on it.
    assert heldout_gain_posterior([0], [0.3], [500], step=0, total_steps=10).p_gain == 1.0


def test_prior_file_fields_agree_with_the_code():
    raw = json.loads(resources.files("satmon.monitor").joinpath("prior.json").read_text())
    assert raw["fields"] == [f.name for f in fields(GainPrior)]
    assert set(raw["prior"]) == set(raw["fields"])
    assert 0 < raw["risk"] < 1 and "script" in raw["provenance"]
    GainPrior.from_dict(raw["prior"])


def test_a_prior_file_for_other_fields_fails_loudly(monkeypatch):
    from satmon import _data

    monkeypatch.setattr(_data, "_read", lambda package, name: json.dumps(
        {"fields": ["p_flat", "something_else"], "prior": {}, "risk": 0.01}))
    with pytest.raises(ValueError, match="written for the fields"):
        _data.load("prior.json", [f.name for f in fields(GainPrior)])


def test_upper_bound_is_consistent_with_the_gain_probability():
    # P(gain >= 1 pt) above 5% means the 95% upper bound is above 1 point, and the other way.
    rng = np.random.default_rng(11)
    for trial in range(20):
        slope = rng.uniform(-1e-4, 3e-4)
        y = np.round((0.4 + slope * STEPS + rng.normal(0, 0.02, 10)) * 300) / 300
        post = heldout_gain_posterior(STEPS, y, np.full(10, 300), step=225,
                                      total_steps=float(rng.choice([260, 500, 2000])))
        assert (post.gain_upper > 0.01) == (post.p_gain > 0.05) or \
            abs(post.p_gain - 0.05) < 0.01, (trial, post)
        assert post.gain_upper >= 0.0 and post.expected_gain >= 0.0


def _two_pass_dispersion(prior, x, y, var, r, scale_t):
    """Each split's dispersion from a direct two-pass weighted fit of every shape (centred
    sums, no running totals), the way a textbook would compute it."""
    from satmon.monitor.posterior import shape_columns

    S = np.concatenate([shape_columns(prior, x - x[0], scale_t), r[:, None]], axis=1)
    w = 1.0 / var
    out = []
    for j in range(min(prior.max_lead, max(x.size - 4, 0)) + 1):
        yy, ww = y[j:], w[j:]
        yc = yy - (ww * yy).sum() / ww.sum()
        syy = (ww * yc * yc).sum()
        best = syy
        for k in range(S.shape[1]):
            sc = S[j:, k] - (ww * S[j:, k]).sum() / ww.sum()
            sss = (ww * sc * sc).sum()
            if sss > 0:
                b = (ww * sc * yc).sum() / sss
                best = min(best, (ww * (yc - b * sc) ** 2).sum())
        m = yy.size
        out.append(max(prior.dispersion_floor,
                       (prior.dispersion_dof + best) / (prior.dispersion_dof + max(m - 2, 0))))
    return np.array(out)


def test_a_shape_constant_over_a_split_does_not_fake_a_fit():
    # A fast approach shape is complete after the second evaluation (0.99999998, 1, 1 ...), so
    # over the later splits it is a constant column. Computed as the difference of two large
    # running sums, its rounding error passed for a fit: the released engine put this series'
    # dispersion at 0.40 instead of 0.46 on one split (and P(gain) at 0.12 instead of 0.18).
    from satmon.monitor.posterior import _evidence

    prior = default_prior()
    x = np.arange(0.0, 177.0, 22.0)
    y = np.array([0.172695, 0.186309, 0.165694, 0.15986, 0.190198, 0.225982, 0.27149,
                  0.307273, 0.314664])
    var = point_variance(y, np.full(9, 2500.0))
    r = np.linspace(0.30, 0.87, 9)
    ev = _evidence(prior, x, y, var, r, 0.0015, 176.0, 182.0)
    np.testing.assert_allclose(ev.phi, _two_pass_dispersion(prior, x, y, var, r, 182.0),
                               rtol=1e-9)


def test_cached_shape_columns_give_the_same_posterior_as_recomputing_them():
    from satmon.monitor.posterior import ShapeColumns

    rng = np.random.default_rng(5)
    steps = np.arange(0.0, 1000.0, 20.0)
    y = np.clip(0.3 + 0.2 * (1 - np.exp(-steps / 300)) + rng.normal(0, 0.02, steps.size), 0, 1)
    r = np.linspace(0.2, 0.9, steps.size)
    cache = ShapeColumns()
    for n in range(2, steps.size + 1):
        kw = dict(step=float(steps[n - 1]), total_steps=1200.0, reward_levels=r[:n],
                  reward_rise_left=0.05)
        fresh = heldout_gain_posterior(steps[:n], y[:n], np.full(n, 400), **kw)
        cached = heldout_gain_posterior(steps[:n], y[:n], np.full(n, 400), cache=cache, **kw)
        for f in fields(fresh):
            assert getattr(cached, f.name) == pytest.approx(getattr(fresh, f.name),
                                                            rel=1e-9, abs=1e-12), (n, f.name)
    # Another span, or another series of the same length, starts the table again.
    other = heldout_gain_posterior(steps, y, np.full(steps.size, 400), step=980.0,
                                   total_steps=5000.0, cache=cache)
    assert other.p_gain == pytest.approx(heldout_gain_posterior(
        steps, y, np.full(steps.size, 400), step=980.0, total_steps=5000.0).p_gain, rel=1e-9)
    shifted = steps + 7.0
    assert heldout_gain_posterior(shifted, y, np.full(steps.size, 400), step=990.0,
                                  total_steps=5000.0, cache=cache).p_gain == pytest.approx(
        heldout_gain_posterior(shifted, y, np.full(steps.size, 400), step=990.0,
                               total_steps=5000.0).p_gain, rel=1e-9)
