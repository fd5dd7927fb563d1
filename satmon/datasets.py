"""Seeded synthetic RLVR runs with known truth, for tests, benchmarks and documentation.

A synthetic run has a noiseless training-reward curve (one of four shapes), a noiseless held-out
accuracy curve whose relation to training depends on the regime, and noise drawn the way a GRPO
batch produces it:

* **batch-mean noise from prompt heterogeneity**: each step samples ``prompts_per_step`` prompts
  whose solve rates follow a Beta distribution with the curve's mean and concentration
  ``kappa``; each prompt gets ``rollouts`` binomial rollouts; the logged reward is the batch mean,
  and the fraction of prompts whose rollouts all agree is logged as ``frac_reward_zero_std``
  (GRPO's zero-variance groups);
* optional **AR(1)** drift of the mean (``ar1``, ``ar1_scale``), **outlier** steps (a bad batch
  scores a fraction of its usual reward) and **missing** steps (never logged);
* **held-out** accuracy every ``eval_every`` steps (from step 0, before RL) with binomial noise
  for ``heldout_n`` samples.

Regimes (``truth.regime``) and the class each belongs to (``truth.label``):

==============================  ============  ===============================================
regime                          label         held-out behaviour
==============================  ============  ===============================================
generalizing                    generalizing  rises with training reward before saturation
memorizing                      memorizing    flat or slightly falling; fast saturation
post_saturation_generalization  generalizing  training saturates fast, held-out rises for long
collapse                        collapsing    proxy reward spikes, held-out rises then drops
noisy_label                     memorizing    fits noisy labels (two-stage rise to ~1), flat
slow                            generalizing  training still rising at the end; held-out too
==============================  ============  ===============================================

In the ``"hard"`` mix the training curve's speed is drawn from one distribution for every regime,
so only held-out evidence can tell the regimes apart.

Example
-------
>>> from satmon.datasets import make_run
>>> sr = make_run("memorizing", seed=3)
>>> sr.truth.label, sr.truth.t_sat_clean < 100
('memorizing', True)
>>> sr.run.heldout["heldout"].sample_size
500
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from satmon.run import HeldoutSeries, Run, Series
from satmon.saturation import saturation_step

REGIME_LABELS: dict[str, str] = {
    "generalizing": "generalizing",
    "memorizing": "memorizing",
    "post_saturation_generalization": "generalizing",
    "collapse": "collapsing",
    "noisy_label": "memorizing",
    "slow": "generalizing",
}
REGIMES: tuple[str, ...] = tuple(REGIME_LABELS)
SHAPES: tuple[str, ...] = ("exp", "sigmoid_log", "weibull", "piecewise")
MIXES: tuple[str, ...] = ("standard", "hard")

# Fraction of the way from r0 to rmax at which the clean curve crosses 0.99 * rmax; the
# time-scale of each shape is solved so that this crossing lands on the drawn target step.
_HILL_POWER = 2.5
_WEIBULL_POWER = 1.6


@dataclass(frozen=True)
class Truth:
    """What is known about a synthetic run because it was drawn, not measured.

    Attributes
    ----------
    regime: the scenario (a key of ``REGIME_LABELS``).
    label: its class: ``generalizing``, ``memorizing`` or ``collapsing``.
    shape: the training curve's shape.
    t_sat_clean: ``saturation_step`` of the noiseless curve (inf if never).
    t_sat_noisy: ``saturation_step`` of the logged noisy series (inf if never).
    train_clean: noiseless mean training reward; index ``t - 1`` holds step ``t`` (1..T).
    heldout_clean: noiseless held-out accuracy; index ``t`` holds step ``t`` (0..T).
    remaining_gain: ``max_{s >= t} heldout_clean[s] - heldout_clean[t]`` for ``t`` in 0..T.
    params: the drawn parameters.
    """

    regime: str
    label: str
    shape: str
    t_sat_clean: float
    t_sat_noisy: float
    train_clean: np.ndarray
    heldout_clean: np.ndarray
    remaining_gain: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def remaining_gain_at(self, step: int) -> float:
        """Held-out gain still to come after ``step`` (0 past the run's end)."""
        step = int(step)
        if step >= self.remaining_gain.size:
            return 0.0
        return float(self.remaining_gain[max(step, 0)])


@dataclass(frozen=True)
class SyntheticRun:
    """A synthetic run (``run``, a :class:`satmon.Run`) and its ground truth (``truth``)."""

    run: Run
    truth: Truth


def _shape_curve(shape: str, t: np.ndarray, t_target: float, q: float) -> np.ndarray:
    """A 0..1 rising curve of the given shape that reaches ``q`` at ``t_target``."""
    t = np.asarray(t, dtype=float)
    if shape == "exp":
        tau = t_target / -math.log1p(-q)
        return -np.expm1(-t / tau)
    if shape == "sigmoid_log":
        mid = t_target / (q / (1 - q)) ** (1 / _HILL_POWER)
        tb = np.power(np.maximum(t, 0.0), _HILL_POWER)
        return tb / (tb + mid ** _HILL_POWER)
    if shape == "weibull":
        tau = t_target / (-math.log1p(-q)) ** (1 / _WEIBULL_POWER)
        return -np.expm1(-np.power(np.maximum(t, 0.0) / tau, _WEIBULL_POWER))
    if shape == "piecewise":
        return np.clip(t / (t_target / q), 0.0, 1.0)
    raise ValueError(f"The 'shape' parameter must be one of {SHAPES}. Got {shape!r} instead.")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _draw_target(regime: str, rng: np.random.Generator, total_steps: int, hard: bool) -> float:
    scale = total_steps / 500.0
    if regime == "slow":
        return float(rng.uniform(1.3, 3.0) * total_steps)
    if hard:
        return float(rng.uniform(20, 300) * scale)
    low, high = {
        "generalizing": (150, 400),
        "memorizing": (20, 100),
        "post_saturation_generalization": (20, 100),
        "collapse": (50, 250),
        "noisy_label": (15, 80),
    }[regime]
    return float(rng.uniform(low, high) * scale)


def make_run(
    regime: str = "generalizing",
    *,
    seed: int = 0,
    mix: str = "standard",
    total_steps: int = 500,
    eval_every: int = 25,
    heldout_n: int = 500,
    shape: str | None = None,
    prompts_per_step: int = 64,
    rollouts: int = 8,
    kappa: float | None = None,
    ar1: float = 0.0,
    ar1_scale: float = 0.02,
    outlier_rate: float = 0.0,
    missing_rate: float = 0.0,
    name: str | None = None,
) -> SyntheticRun:
    """Draw one synthetic RLVR run with known truth.

    Parameters
    ----------
    regime:
        One of ``REGIMES``.
    seed:
        Seed of everything drawn; the same arguments and seed give the same run.
    mix:
        ``"standard"`` (training speed differs by regime, as in the paper) or ``"hard"``
        (training speed drawn from one distribution for every regime).
    total_steps:
        T, the number of training steps (steps 1..T are logged).
    eval_every:
        Held-out evaluation interval K (evaluations at 0, K, 2K, ... <= T).
    heldout_n:
        Held-out samples per evaluation (binomial noise).
    shape:
        Training-curve shape (``SHAPES``); drawn from the seed when None.
    prompts_per_step, rollouts, kappa:
        Batch composition and Beta concentration of per-prompt solve rates (drawn when None).
    ar1, ar1_scale:
        AR(1) coefficient and stationary standard deviation of a drift added to the mean.
    outlier_rate:
        Probability that a step is a bad batch scoring 20-60% of its usual reward.
    missing_rate:
        Probability that a step is not logged at all.
    name:
        Run name (default ``"<regime>-<seed>"``).

    Returns
    -------
    A :class:`SyntheticRun`.
    """
    if regime not in REGIME_LABELS:
        raise ValueError(f"The 'regime' parameter must be one of {REGIMES}. Got {regime!r}.")
    if mix not in MIXES:
        raise ValueError(f"The 'mix' parameter must be one of {MIXES}. Got {mix!r} instead.")
    for pname, value, low in (("total_steps", total_steps, 2), ("eval_every", eval_every, 1),
                              ("heldout_n", heldout_n, 1), ("prompts_per_step", prompts_per_step, 1),
                              ("rollouts", rollouts, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"The '{pname}' parameter must be an int >= {low}. "
                             f"Got {value!r} instead.")
    for pname, value, low, high in (("ar1", ar1, 0.0, 0.999), ("outlier_rate", outlier_rate, 0, 1),
                                    ("missing_rate", missing_rate, 0.0, 0.9),
                                    ("ar1_scale", ar1_scale, 0.0, 1.0)):
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"The '{pname}' parameter must be a float in [{low}, {high}]. "
                             f"Got {value!r} instead.")
    if shape is not None and shape not in SHAPES:
        raise ValueError(f"The 'shape' parameter must be one of {SHAPES}. Got {shape!r}.")

    rng = np.random.default_rng([seed, REGIMES.index(regime), MIXES.index(mix)])
    T = int(total_steps)
    shape = shape or str(rng.choice(SHAPES))
    kappa = float(kappa if kappa is not None else rng.uniform(1.0, 4.0))
    t_target = _draw_target(regime, rng, T, hard=(mix == "hard"))
    r0 = float(rng.uniform(0.05, 0.3))
    rmax = float(rng.uniform(0.9, 1.0) if regime in ("memorizing", "noisy_label", "collapse")
                 else rng.uniform(0.75, 0.98))
    q = (0.99 * rmax - r0) / (rmax - r0) + 0.002  # cross the paper's threshold at t_target
    steps = np.arange(1, T + 1)
    all_steps = np.arange(0, T + 1)
    params: dict[str, Any] = {"shape": shape, "t_target": t_target, "r0": r0, "rmax": rmax,
                              "kappa": kappa, "mix": mix}

    if regime == "noisy_label":
        gamma = float(rng.uniform(0.1, 0.5))
        # Two stages: the correctly labelled prompts are fitted first, the wrong labels later;
        # the end point (~rmax) is the same at every noise level, as the paper observes.
        g1 = _shape_curve(shape, all_steps, t_target / 2.5, 0.999)
        g2 = _shape_curve(shape, all_steps, t_target, q)
        g = ((1 - gamma) * rmax - r0) / (rmax - r0) * g1 + gamma * rmax / (rmax - r0) * g2
        params["gamma"] = gamma
    else:
        g = _shape_curve(shape, all_steps, t_target, min(q, 0.9999))
    train_all = r0 + (rmax - r0) * g
    train_clean = train_all[1:]

    m0 = float(rng.uniform(0.1, 0.5))
    if regime in ("generalizing", "slow"):
        gain = float(rng.uniform(0.08, 0.3))
        rho = float(rng.uniform(0.8, 1.25))
        heldout_clean = m0 + gain * np.power(np.clip(g, 0, 1), rho)
        params.update(gain=gain, rho=rho)
    elif regime in ("memorizing", "noisy_label"):
        local = float(rng.uniform(0.0, 0.01))
        drift = float(rng.uniform(0.0, 0.03))
        heldout_clean = m0 + local * np.clip(g, 0, 1) - drift * all_steps / T
        params.update(local_gain=local, drift=drift)
    elif regime == "post_saturation_generalization":
        gain = float(rng.uniform(0.08, 0.25))
        tau_h = float(rng.uniform(0.6, 2.0) * T)
        # Held-out keeps improving long after training saturates (one-shot RLVR).
        heldout_clean = m0 + gain * -np.expm1(-all_steps / tau_h)
        params.update(gain=gain, tau_h=tau_h)
    else:  # collapse
        gain = float(rng.uniform(0.03, 0.12))
        drop = float(rng.uniform(0.1, 0.3))
        t_c = float(t_target + rng.uniform(20, 150) * T / 500)
        width = float(rng.uniform(5, 25))
        heldout_clean = m0 + gain * np.clip(g, 0, 1) - drop * _sigmoid((all_steps - t_c) / width)
        params.update(gain=gain, drop=drop, t_collapse=t_c, width=width)
    heldout_clean = np.clip(heldout_clean, 0.0, 1.0)
    remaining = np.maximum.accumulate(heldout_clean[::-1])[::-1] - heldout_clean

    # Noise: AR(1) drift of the mean, Beta-distributed prompt solve rates, binomial rollouts.
    drift_noise = np.zeros(T)
    if ar1 > 0:
        z = rng.standard_normal(T)
        innov = ar1_scale * math.sqrt(1 - ar1 ** 2)
        e = ar1_scale * z[0]
        for i in range(T):
            e = ar1 * e + innov * z[i] if i else e
            drift_noise[i] = e
    mean = np.clip(train_clean + drift_noise, 1e-4, 1 - 1e-4)
    a = mean * kappa
    b = (1 - mean) * kappa
    rates = rng.beta(a[:, None], b[:, None], size=(T, prompts_per_step))
    correct = rng.binomial(rollouts, rates)
    reward = correct.sum(axis=1) / (prompts_per_step * rollouts)
    zero_std = np.mean((correct == 0) | (correct == rollouts), axis=1)
    is_outlier = rng.random(T) < outlier_rate
    reward = np.where(is_outlier, reward * rng.uniform(0.2, 0.6, T), reward)
    logged = rng.random(T) >= missing_rate
    logged[-1] = True  # T is read from the run, so the last step is always logged

    eval_steps = np.arange(0, T + 1, eval_every)
    heldout_values = rng.binomial(heldout_n, heldout_clean[eval_steps]) / heldout_n

    run_steps = steps[logged]
    run_reward = reward[logged]
    run = Run(
        Series("train_reward", run_steps, run_reward),
        heldout={"heldout": HeldoutSeries("heldout", eval_steps, heldout_values,
                                          sample_size=heldout_n)},
        aux={"frac_reward_zero_std": Series("frac_reward_zero_std", run_steps,
                                            zero_std[logged])},
        metadata={"regime": regime, "label": REGIME_LABELS[regime], "seed": seed,
                  "shape": shape, "mix": mix, "synthetic": True},
        name=name or f"{regime}-{seed}",
    )
    params.update(n_outliers=int(is_outlier.sum()), n_missing=int((~logged).sum()))
    truth = Truth(
        regime=regime, label=REGIME_LABELS[regime], shape=shape,
        t_sat_clean=saturation_step(train_clean, steps),
        t_sat_noisy=saturation_step(run_reward, run_steps),
        train_clean=train_clean, heldout_clean=heldout_clean, remaining_gain=remaining,
        params=params,
    )
    return SyntheticRun(run=run, truth=truth)


def make_suite(
    n_runs: int,
    *,
    seed: int = 0,
    mix: str = "standard",
    regimes: Sequence[str] | None = None,
    vary_noise: bool = True,
    **overrides: Any,
) -> list[SyntheticRun]:
    """A seeded suite of synthetic runs cycling through the regimes.

    Parameters
    ----------
    n_runs:
        Number of runs.
    seed:
        Suite seed; run ``i`` uses seed ``seed * 1_000_003 + i``.
    mix:
        ``"standard"`` or ``"hard"`` (see :func:`make_run`).
    regimes:
        Regimes to cycle through (default: all).
    vary_noise:
        Draw per-run noise settings (AR(1) in 30% of runs, outliers in 20%, missing steps in 20%,
        held-out size from {200, 500, 1000}, evaluation interval from {10, 25}).
    overrides:
        Fixed :func:`make_run` arguments for every run (they take precedence).

    Returns
    -------
    A list of :class:`SyntheticRun`.
    """
    if isinstance(n_runs, bool) or not isinstance(n_runs, (int, np.integer)) or n_runs < 1:
        raise ValueError(f"The 'n_runs' parameter must be an int >= 1. Got {n_runs!r} instead.")
    chosen = tuple(regimes) if regimes is not None else REGIMES
    unknown = [r for r in chosen if r not in REGIME_LABELS]
    if unknown or not chosen:
        raise ValueError(f"Unknown regimes {unknown}; choose from {REGIMES}.")
    rng = np.random.default_rng([seed, 7919])
    out = []
    for i in range(n_runs):
        kwargs: dict[str, Any] = {}
        if vary_noise:
            if rng.random() < 0.3:
                kwargs.update(ar1=float(rng.uniform(0.3, 0.8)))
            if rng.random() < 0.2:
                kwargs.update(outlier_rate=0.01)
            if rng.random() < 0.2:
                kwargs.update(missing_rate=0.02)
            kwargs.update(heldout_n=int(rng.choice([200, 500, 1000])),
                          eval_every=int(rng.choice([10, 25])))
        kwargs.update(overrides)
        out.append(make_run(chosen[i % len(chosen)], seed=seed * 1_000_003 + i, mix=mix,
                            **kwargs))
    return out


# -- a second family, different in structure ----------------------------------------------------
#: Regimes of the lagged family and their classes.
LAGGED_REGIME_LABELS: dict[str, str] = {
    "lagged_generalizing": "generalizing",
    "lagged_memorizing": "memorizing",
    "delayed_generalization": "generalizing",
    "lagged_collapse": "collapsing",
}
LAGGED_REGIMES: tuple[str, ...] = tuple(LAGGED_REGIME_LABELS)


def make_lagged_run(regime: str = "lagged_generalizing", *, seed: int = 0,
                    name: str | None = None) -> SyntheticRun:
    """Draw one run of the *lagged* family: a generator that differs from :func:`make_run` in
    structure, so that a prior fitted on one can be checked on the other.

    * Training progress ``p(t) = 1 - exp(-(t / s)**beta)`` (beta in [0.7, 2.5]) saturating at a
      drawn step; the logged reward is ``r0 + (rmax - r0) p(t)`` plus Gaussian AR(1) noise of sd
      0.01-0.15 (small and large GRPO batches), not a binomial batch mean.
    * Held-out accuracy is a *lagged* function of training progress,
      ``m0 + G p(t - L)**rho`` (lag L up to 30% of the run), or flat with a drift
      (``lagged_memorizing``), or a delayed logistic rise long after the reward saturated
      (``delayed_generalization``), or a rise followed by a logistic drop (``lagged_collapse``).
    * Evaluation sets of 100-5,000 samples, every 5-50 steps (at least 8 evaluations), with
      correlated evaluation noise: an AR(1) offset (sd up to 1.5 points) added to the true
      accuracy before the binomial draw, as from sampled decoding or a drifting judge.
    * Runs of 100-2,000 steps (log-uniform).

    Returns
    -------
    A :class:`SyntheticRun` whose truth has the same fields as :func:`make_run`'s.
    """
    if regime not in LAGGED_REGIME_LABELS:
        raise ValueError(f"The 'regime' parameter must be one of {LAGGED_REGIMES}. "
                         f"Got {regime!r}.")
    rng = np.random.default_rng([seed, LAGGED_REGIMES.index(regime), 31337])
    T = int(round(math.exp(rng.uniform(math.log(100), math.log(2000)))))
    eval_every = int(min(rng.integers(5, 51), max(T // 8, 1)))
    n = int(round(math.exp(rng.uniform(math.log(100), math.log(5000)))))
    beta = float(rng.uniform(0.7, 2.5))
    fast = regime in ("lagged_memorizing", "delayed_generalization")
    t_sat = float(rng.uniform(0.05, 0.25) * T if fast else rng.uniform(0.2, 0.8) * T)
    # p(t_sat) = 0.99: s from (t_sat / s)**beta = -log(0.01).
    s = t_sat / (-math.log(0.01)) ** (1 / beta)
    all_steps = np.arange(0, T + 1, dtype=float)

    def progress(t: np.ndarray) -> np.ndarray:
        return -np.expm1(-np.power(np.maximum(t, 0.0) / s, beta))

    p = progress(all_steps)
    r0 = float(rng.uniform(0.05, 0.4))
    rmax = float(rng.uniform(0.85, 1.0) if fast else rng.uniform(0.7, 0.97))
    train_all = r0 + (rmax - r0) * p
    m0 = float(rng.uniform(0.05, 0.6))
    params: dict[str, Any] = {"T": T, "eval_every": eval_every, "heldout_n": n, "beta": beta,
                              "t_sat": t_sat, "r0": r0, "rmax": rmax, "m0": m0}
    if regime == "lagged_generalizing":
        gain = float(rng.uniform(0.04, 0.3))
        lag = float(rng.uniform(0.0, 0.3) * T)
        rho = float(rng.uniform(0.6, 1.6))
        heldout = m0 + gain * np.power(progress(all_steps - lag), rho)
        params.update(gain=gain, lag=lag, rho=rho)
    elif regime == "lagged_memorizing":
        drift = float(rng.uniform(-0.02, 0.005))
        heldout = m0 + drift * all_steps / T
        params.update(drift=drift)
    elif regime == "delayed_generalization":
        gain = float(rng.uniform(0.04, 0.2))
        onset = float(rng.uniform(0.1, 0.6) * T)
        width = float(rng.uniform(0.03, 0.2) * T)
        heldout = m0 + gain * _sigmoid((all_steps - onset - 2 * width) / width)
        params.update(gain=gain, onset=onset, width=width)
    else:  # lagged_collapse
        gain = float(rng.uniform(0.02, 0.15))
        drop = float(rng.uniform(0.08, 0.3))
        t_c = float(t_sat + rng.uniform(0.05, 0.4) * T)
        width = float(rng.uniform(0.01, 0.05) * T)
        heldout = m0 + gain * p - drop * _sigmoid((all_steps - t_c) / width)
        params.update(gain=gain, drop=drop, t_collapse=t_c, width=width)
    heldout = np.clip(heldout, 0.0, 1.0)
    remaining = np.maximum.accumulate(heldout[::-1])[::-1] - heldout

    sd = float(rng.uniform(0.01, 0.15))
    phi = float(rng.uniform(0.0, 0.6))
    e = np.zeros(T)
    z = rng.standard_normal(T)
    e[0] = sd * z[0]
    for i in range(1, T):
        e[i] = phi * e[i - 1] + sd * math.sqrt(1 - phi ** 2) * z[i]
    steps = np.arange(1, T + 1)
    train_clean = train_all[1:]
    reward = np.clip(train_clean + e, 0.0, 1.0)
    zero_std = np.clip(1.0 - 4 * reward * (1 - reward), 0.0, 1.0)

    eval_steps = np.arange(0, T + 1, eval_every)
    ev_sd = float(rng.uniform(0.0, 0.015))
    ev_phi = float(rng.uniform(0.0, 0.8))
    off = np.zeros(eval_steps.size)
    zz = rng.standard_normal(eval_steps.size)
    off[0] = ev_sd * zz[0]
    for i in range(1, off.size):
        off[i] = ev_phi * off[i - 1] + ev_sd * math.sqrt(1 - ev_phi ** 2) * zz[i]
    observed = rng.binomial(n, np.clip(heldout[eval_steps] + off, 0.0, 1.0)) / n
    params.update(reward_sd=sd, reward_ar1=phi, eval_sd=ev_sd, eval_ar1=ev_phi)
    run = Run(
        Series("train_reward", steps, reward),
        heldout={"heldout": HeldoutSeries("heldout", eval_steps, observed, sample_size=n)},
        aux={"frac_reward_zero_std": Series("frac_reward_zero_std", steps, zero_std)},
        metadata={"regime": regime, "label": LAGGED_REGIME_LABELS[regime], "seed": seed,
                  "family": "lagged", "synthetic": True},
        name=name or f"{regime}-{seed}",
    )
    truth = Truth(
        regime=regime, label=LAGGED_REGIME_LABELS[regime], shape="lagged",
        t_sat_clean=saturation_step(train_clean, steps),
        t_sat_noisy=saturation_step(reward, steps), train_clean=train_clean,
        heldout_clean=heldout, remaining_gain=remaining, params=params)
    return SyntheticRun(run=run, truth=truth)


def make_lagged_suite(n_runs: int, *, seed: int = 0) -> list[SyntheticRun]:
    """``n_runs`` runs of the lagged family cycling through :data:`LAGGED_REGIMES`; run ``i``
    uses seed ``seed * 1_000_003 + i``."""
    if isinstance(n_runs, bool) or not isinstance(n_runs, (int, np.integer)) or n_runs < 1:
        raise ValueError(f"The 'n_runs' parameter must be an int >= 1. Got {n_runs!r} instead.")
    return [make_lagged_run(LAGGED_REGIMES[i % len(LAGGED_REGIMES)], seed=seed * 1_000_003 + i)
            for i in range(n_runs)]
