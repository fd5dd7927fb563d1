"""Saturation-curve fits: recovery of asymptotes and t_sat, bound rejection, BIC weights."""

from __future__ import annotations

import math

import numpy as np
import pytest

from satmon.curves import FAMILIES, bic_weights, curve_value, fit_family, forecast_saturation
from satmon.saturation import saturation_step


@pytest.mark.parametrize("family,params", [
    ("exp3", (0.9, 0.7, 5.0)),
    ("hill4", (0.1, 0.85, 0.3, 3.0)),
    ("weibull4", (0.8, 0.2, 4.0, 1.5)),
])
def test_fit_recovers_asymptote(family, params):
    steps = np.arange(1, 401)
    rng = np.random.default_rng(0)
    y = curve_value(family, params, steps, 400.0) + 0.01 * rng.standard_normal(400)
    fit = fit_family(family, steps, y, time_scale=400.0, asymptote_bounds=(0.0, 1.05))
    assert fit.accepted
    asym = params[1] if family == "hill4" else params[0]
    assert abs(fit.asymptote - asym) < 0.02


def test_asymptote_on_bound_is_rejected():
    steps = np.arange(1, 101)
    y = 0.002 * steps  # a pure ramp: no asymptote in range
    fit = fit_family("exp3", steps, y, time_scale=500.0, asymptote_bounds=(0.0, 0.25))
    assert not fit.accepted and "bound" in fit.note


@pytest.mark.parametrize("seed", range(5))
def test_forecast_t_sat_close_to_truth_after_saturation(seed):
    rng = np.random.default_rng(seed)
    steps = np.arange(1, 501)
    tau = rng.uniform(30, 80)  # clean t_sat = 4.35 tau <= 348 < 420
    clean = 0.2 + 0.7 * (1 - np.exp(-steps / tau))
    y = clean + 0.02 * rng.standard_normal(500)
    truth = saturation_step(clean)
    fc = forecast_saturation(steps[:420], y[:420], total_steps=500, bootstrap=4)
    assert fc.usable and abs(fc.asymptote - 0.9) < 0.02
    assert abs(fc.t_sat_estimate - truth) <= 0.15 * truth
    assert fc.t_sat_interval[0] <= fc.t_sat_estimate <= fc.t_sat_interval[1]
    assert fc.p_saturated_by_now > 0.9


def test_forecast_on_early_ramp_is_not_saturated():
    steps = np.arange(1, 101)
    y = 0.1 + 0.7 * (1 - np.exp(-steps / 200)) + 0.005 * np.cos(steps)
    fc = forecast_saturation(steps, y, total_steps=1000)
    assert fc.p_saturated_by_now < 0.1
    assert fc.t_sat_estimate > 300
    assert "Saturation forecast" in fc.summary()


def test_pow3_is_fitted_only_to_veto_a_saturation_claim():
    steps = np.arange(1, 101)
    ramp = 0.1 + 0.7 * (1 - np.exp(-steps / 200)) + 0.005 * np.cos(steps)
    fc = forecast_saturation(steps, ramp, total_steps=1000)
    assert fc.p_saturated_by_now < 0.5 and "pow3" not in fc.fits and not fc.vetoed
    assert any("pow3: not fitted" in n for n in fc.notes)
    flat = 0.2 + 0.7 * (1 - np.exp(-np.arange(1, 401) / 30)) + 0.005 * np.cos(np.arange(400))
    fc = forecast_saturation(np.arange(1, 401), flat, total_steps=500)
    assert fc.p_saturated_by_now >= 0.5 and fc.fits["pow3"].accepted


def test_bic_weights_sum_to_one_and_skip_pow3_and_rejected():
    steps = np.arange(1, 201)
    y = 0.9 - 0.7 * np.exp(-steps / 40)
    fits = {f: fit_family(f, steps, y, time_scale=200.0, asymptote_bounds=(0, 1.05))
            for f in FAMILIES}
    w = bic_weights(fits)
    assert "pow3" not in w and math.isclose(sum(w.values()), 1.0)


def test_forecast_bad_input():
    with pytest.raises(ValueError, match="at least 8"):
        forecast_saturation([1, 2], [0.1, 0.2], total_steps=10)
    with pytest.raises(ValueError, match="Unknown curve families"):
        forecast_saturation(range(10), np.linspace(0, 1, 10), total_steps=10, families=("x",))
    with pytest.raises(ValueError, match="finite"):
        forecast_saturation(range(10), [math.nan] * 10, total_steps=10)


@pytest.mark.parametrize("family,params", [
    ("exp3", (0.9, 0.7, 5.0)),
    ("hill4", (0.1, 0.85, 0.3, 3.0)),
    ("weibull4", (0.8, 0.2, 4.0, 1.5)),
    ("pow3", (0.9, 0.3, 0.7)),
])
def test_analytic_jacobian_matches_finite_differences(family, params):
    from satmon.curves import _FUNCS, _JACS

    t = np.linspace(0.01, 1.0, 25)
    p = np.asarray(params, dtype=float)
    jac = _JACS[family](p, t)
    for i in range(p.size):
        h = 1e-6 * max(abs(p[i]), 1.0)
        up, dn = p.copy(), p.copy()
        up[i] += h
        dn[i] -= h
        fd = (_FUNCS[family](up, t) - _FUNCS[family](dn, t)) / (2 * h)
        np.testing.assert_allclose(jac[:, i], fd, rtol=1e-5, atol=1e-7)


def test_parametric_and_bootstrap_intervals_agree_on_a_clean_exp_curve():
    rng = np.random.default_rng(3)
    steps = np.arange(1, 401)
    clean = 0.2 + 0.7 * (1 - np.exp(-steps / 50))
    y = clean + 0.02 * rng.standard_normal(400)
    truth = saturation_step(clean)
    para = forecast_saturation(steps, y, total_steps=500)
    boot = forecast_saturation(steps, y, total_steps=500, bootstrap=4)
    for fc in (para, boot):
        assert abs(fc.t_sat_estimate - truth) <= 0.15 * truth
        assert fc.asymptote_interval[0] <= 0.9 + 0.01 and fc.asymptote_interval[1] >= 0.9 - 0.01
    fit = para.fits["exp3"]
    assert len(fit.covariance) == 9 and fit.lower and fit.upper
