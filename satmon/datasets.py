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
