"""The posterior of the held-out gain still to come: the one quantity the halt rule uses.

The user's question at a held-out evaluation is "will more steps buy held-out accuracy?". This
module answers it with an explicit generative model of one held-out series and Bayes' rule:

Shapes (a mixture; ``x`` = steps since the first evaluation)
    flat      ``m(x) = a``                                      (no change, ever)
    approach  ``m(x) = a + g * (1 - exp(-x / tau))``            (rising, or falling for g < 0, to
                                                                 an asymptote ``a + g`` on a time
                                                                 scale ``tau``)
    onset     ``m(x) = a + g * (x / X) ** k``                   (an accelerating rise, the convex
                                                                 start of a sigmoid learning
                                                                 curve; ``X`` the planned span,
                                                                 ``k`` in ``onset_powers``)
    delayed   ``m(x) = a + g * (tanh((x-c)/w) - tanh(-c/w))/2`` (a rise centred at ``c``, a
                                                                 fraction of the run, long after
                                                                 the reward saturated; ``n_delay``
                                                                 centres x ``delay_widths``)
    co-moving ``m(x) = a + g * r(x)``                           (held-out moves with the training
                                                                 reward ``r``, normalised by its
                                                                 ceiling: the pre-saturation
                                                                 phase)

Prior
    ``a`` flat (it is shared by every shape, so it cancels in their comparison); ``g`` uniform on
    ``[gain_low, gain_high]`` (``[comove_low, comove_high]`` per unit of reward for the
    co-moving shape); ``tau`` log-uniform on ``[tau_low, tau_high] x T`` (a grid of ``n_tau``
    values); shape masses ``p_flat``, ``p_onset``, ``p_delayed``, ``p_comove`` (each spread evenly
    over its kind's shapes) and the rest for the approach shapes. Leading evaluations may belong
    to an earlier phase (a format jump in the first steps): with probability ``p_lead`` the
    shapes explain only the evaluations after the first ``j`` (uniform over
    ``1 <= j <= min(max_lead, N - 4)``), each of those its own level.

Likelihood
    Each evaluation is a proportion of ``n`` samples: the normal approximation of the binomial,
    variance ``p (1 - p) / n`` at the observed ``p`` (clipped to [0.02, 0.98]); with ``n``
    unknown, a robust scale from successive differences. The whole variance is scaled by a
    dispersion ``phi`` estimated from the best-fitting shape's residuals with a scaled
    inverse-chi-square prior of ``dispersion_dof`` degrees of freedom centred on 1:
    ``phi = (nu0 + chi2) / (nu0 + N - 2)``. Sampled evaluations (TRL's eval at training
    temperature) are overdispersed (phi > 1); a greedy score on a fixed set that repeats to the
    sample is underdispersed (phi < 1): it has not moved, and the posterior says so.

Because every shape is linear in ``(a, g)`` given ``tau``, both integrate in closed form (a
Gaussian in ``a`` and a truncated Gaussian in ``g``), so a posterior costs O(N x n_tau) for N
evaluations, with no sampling error. ``tests/test_posterior.py`` checks it against direct
numerical integration, and against the exact binomial likelihood.

The gain still to come under a shape with ``g`` is ``g x D``: ``D = s(T) - s(now)`` for the
approach shapes, the forecast remaining rise of the training reward for the co-moving one (its
soft link to the training curve: while the reward still rises a held-out rise is likely; once it
saturated, the co-moving shape predicts nothing more). A falling shape gains nothing. The result
is ``P(gain >= min_gain)``, its expectation and a 95% upper bound. That probability is exact
for the model above; the monitor reports it through a calibration map fitted on observed gains
(``calibration=``, :mod:`satmon.monitor.calibration`), and ``p_gain_model`` keeps the model's.

Mechanistic evidence. A policy-gradient step with every GRPO group at zero reward variance and no
KL or entropy term has a zero gradient; once the optimizer's momentum has died out (the monitor's
``frozen_after``) the model no longer changes. After ``k`` such frozen steps in a row, the chance
that the next ``H`` steps are all alike is ``(k + 1) / (k + H + 1)`` (Laplace's rule of
succession), and a frozen policy gains nothing: ``P(gain)`` is multiplied by one minus that.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy.special import ndtr

from satmon.detectors.base import check_number
from satmon.monitor._grow import reserve
from satmon.monitor.calibration import ProbabilityMap
from satmon.regime import point_variance

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
#: The upper bound's gain grid: 64 points, geometric from 1e-4.
_UNIT = np.linspace(0.0, 1.0, 64)
_LOG_1E4 = math.log(1e-4)
#: Posterior weight (of 1) below which a shape is left out of the gain sums.
_NEGLIGIBLE = 1e-16
#: Posterior weight below which a shape is left out of the 95% upper bound's grid of tails.
_BOUND_WEIGHT = 1e-6
#: The default cap on the likelihood ratio a pre-RL probe carries (:meth:`GainPrior.with_probe`).
PROBE_MAX_RATIO = 4.0


@dataclass(frozen=True)
class GainPrior:
    """Hyperparameters of the held-out shape prior (see the module docstring).

    The defaults are fitted on the calibration mixture (``benchmarks/calibrate_prior.py``) and
    stored in ``satmon/monitor/prior.json``; :func:`default_prior` loads them.
    """

    p_flat: float = 0.5
    p_comove: float = 0.2
    p_onset: float = 0.1
    p_delayed: float = 0.02
    gain_low: float = -0.5
    gain_high: float = 0.8
    comove_low: float = -0.5
    comove_high: float = 1.0
    tau_low: float = 0.02
    tau_high: float = 4.0
    n_tau: int = 16
    onset_powers: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0)
    n_delay: int = 12
    delay_widths: tuple[float, ...] = (0.02, 0.08)
    p_lead: float = 0.3
    max_lead: int = 8
    dispersion_dof: float = 4.0
    dispersion_floor: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "onset_powers", tuple(float(k) for k in self.onset_powers))
        object.__setattr__(self, "delay_widths", tuple(float(k) for k in self.delay_widths))
        if not self.delay_widths or any(not k > 0 for k in self.delay_widths):
            raise ValueError(f"'delay_widths' of GainPrior must be a non-empty tuple of "
                             f"fractions > 0. Got {self.delay_widths!r}.")
        check_number(self.n_delay, "n_delay", "GainPrior", low=1, integer=True)
        check_number(self.max_lead, "max_lead", "GainPrior", low=0, integer=True)
        check_number(self.p_lead, "p_lead", "GainPrior", low=0.0, high=1.0, low_open=True)
        if self.p_lead >= 1.0:
            raise ValueError(f"'p_lead' of GainPrior must be < 1. Got {self.p_lead}.")
        if not self.onset_powers or any(not k > 1 for k in self.onset_powers):
            raise ValueError(f"'onset_powers' of GainPrior must be a non-empty tuple of powers "
                             f"> 1. Got {self.onset_powers!r}.")
        for name in ("p_flat", "p_comove", "p_onset", "p_delayed"):
            check_number(getattr(self, name), name, "GainPrior", low=0.0, high=1.0,
                         low_open=True)
        if self.p_flat + self.p_comove + self.p_onset + self.p_delayed >= 1.0:
            raise ValueError(f"'p_flat' + 'p_comove' + 'p_onset' + 'p_delayed' of GainPrior "
                             f"must be < 1 (the approach shapes need mass). Got {self.p_flat} + "
                             f"{self.p_comove} + {self.p_onset} + {self.p_delayed}.")
        for lo, hi in (("gain_low", "gain_high"), ("comove_low", "comove_high"),
                       ("tau_low", "tau_high")):
            check_number(getattr(self, lo), lo, "GainPrior")
            check_number(getattr(self, hi), hi, "GainPrior")
            if not getattr(self, lo) < getattr(self, hi):
                raise ValueError(f"GainPrior needs '{lo}' < '{hi}'. Got {getattr(self, lo)} "
                                 f"and {getattr(self, hi)}.")
        if self.gain_high <= 0:
            raise ValueError(f"'gain_high' of GainPrior must be > 0. Got {self.gain_high}.")
        check_number(self.tau_low, "tau_low", "GainPrior", low=0.0, low_open=True)
        check_number(self.n_tau, "n_tau", "GainPrior", low=1, integer=True)
        check_number(self.dispersion_dof, "dispersion_dof", "GainPrior", low=0.0,
                     low_open=True)
        check_number(self.dispersion_floor, "dispersion_floor", "GainPrior", low=0.0,
                     high=1.0, low_open=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["onset_powers"] = list(self.onset_powers)
        d["delay_widths"] = list(self.delay_widths)
        return d

    def with_probe(self, p_generalizing: float, *,
                   max_ratio: float = PROBE_MAX_RATIO) -> GainPrior:
        """This prior with its flat-vs-gain masses moved by a pre-RL probe's regime call.

        The probe (:mod:`satmon.probe`) says how likely RL is to generalize before any
        held-out evaluation exists, so it enters where prior knowledge belongs: the shape
        masses of the one posterior the halt reads, never as a gate of its own. The rule, one
        likelihood ratio on the odds of the flat shape ("held-out never moves"):

        ``odds(flat) -> odds(flat) x L`` with ``L = (1 - p) / p`` for ``p = p_generalizing``,
        clipped to ``1 / max_ratio <= L <= max_ratio``. Every non-flat mass (``p_comove``, ``p_onset``,
        ``p_delayed`` and the approach shapes' remainder) is scaled by one factor so the masses
        still sum to 1: the shapes' relative weights, and so everything but the flat-vs-gain
        balance, are unchanged.

        Why bounded: the probe's number is a threshold on faithfulness measured on a few
        prompts, not a probability calibrated against observed regimes; a cap of
        ``max_ratio`` (default 4, the likelihood ratio of a call that is right 80% of the
        time) keeps a confident probe one piece of evidence among the held-out points, which
        still dominate after a few evaluations, and keeps ``p_flat`` strictly inside (0, 1).
        Because P(gain) falls as the odds of the flat shape rise (the non-flat posterior is
        reweighted as a whole), a probe below 0.5 can only halt a run earlier, one above 0.5
        only later; 0.5 returns this prior unchanged.

        Parameters
        ----------
        p_generalizing:
            The probe's probability that RL generalizes, in [0, 1]
            (:meth:`satmon.probe.ProbeResult.monitor_prior` passes its bootstrap share above
            the faithfulness threshold).
        max_ratio:
            The largest likelihood ratio the probe may carry (finite, >= 1; 1 ignores it).

        Returns
        -------
        A new :class:`GainPrior`.

        Example
        -------
        >>> base = GainPrior(p_flat=0.5)
        >>> base.with_probe(0.0).p_flat, base.with_probe(1.0).p_flat, base.with_probe(0.5) is base
        (0.8, 0.2, True)
        """
        check_number(p_generalizing, "p_generalizing", "GainPrior.with_probe", low=0.0,
                     high=1.0)
        check_number(max_ratio, "max_ratio", "GainPrior.with_probe", low=1.0)
        p, cap = float(p_generalizing), float(max_ratio)
        ratio = cap if p == 0.0 else min(max((1.0 - p) / p, 1.0 / cap), cap)
        if ratio == 1.0:
            return self
        odds = self.p_flat / (1.0 - self.p_flat) * ratio
        p_flat = odds / (1.0 + odds)
        scale = (1.0 - p_flat) / (1.0 - self.p_flat)
        return replace(self, p_flat=p_flat, p_comove=self.p_comove * scale,
                       p_onset=self.p_onset * scale, p_delayed=self.p_delayed * scale)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GainPrior:
        """Build from a mapping (unknown keys raise, naming the valid ones)."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(valid))
        if unknown:
            raise ValueError(f"GainPrior got unknown keys {unknown}; valid keys: {valid}.")
        return cls(**dict(raw))


def default_prior() -> GainPrior:
    """The fitted prior (``satmon/monitor/prior.json``)."""
    from satmon import _data

    return GainPrior.from_dict(_data.load("prior.json", list(GainPrior.__dataclass_fields__))
                               ["prior"])


@dataclass(frozen=True)
class HeldoutPosterior:
    """The held-out gain posterior of one series at one evaluation.

    Attributes
    ----------
    p_gain: P(held-out gain >= min_gain within the remaining planned steps).
    expected_gain: posterior mean of that gain (accuracy units).
    gain_upper: its 95% upper bound.
    p_gained: P(the gain from the first evaluation to now >= min_gain).
    p_flat: posterior mass of the flat shape.
    p_falling: posterior probability that the series is falling (g < 0).
    dispersion: the noise dispersion ``phi`` used.
    p_frozen: the rule-of-succession chance that the policy stays frozen (0 without evidence).
    n_points: evaluations used.
    horizon: remaining planned steps.
    p_gain_model: the model's own P(gain) before the calibration map (equal to ``p_gain``
    without one; see :mod:`satmon.monitor.calibration`).
    """

    p_gain: float
    expected_gain: float
    gain_upper: float
    p_gained: float
    p_flat: float
    p_falling: float
    dispersion: float
    p_frozen: float
    n_points: int
    horizon: float
    p_gain_model: float = math.nan

    def __post_init__(self) -> None:
        if math.isnan(self.p_gain_model):
            object.__setattr__(self, "p_gain_model", float(self.p_gain))

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def heldout_gain_posterior(steps: Any, values: Any, sizes: Any = None, *, step: float,
                           total_steps: float, min_gain: float = 0.01,
                           prior: GainPrior | None = None, reward_levels: Any = None,
                           reward_rise_left: float = 0.0, frozen_steps: int = 0,
                           variances: Any = None, cache: ShapeColumns | None = None,
                           calibration: ProbabilityMap | None = None) -> HeldoutPosterior:
    """P(held-out accuracy gains ``min_gain`` or more between ``step`` and ``total_steps``).

    Parameters
    ----------
    steps, values, sizes:
        The series' evaluations so far (steps increasing; ``sizes`` the sample sizes, 0 or None
        when unknown).
    step:
        The current step (the gain is counted from the model's level here).
    total_steps:
        The planned last step.
    min_gain:
        The gain that still justifies training (accuracy units).
    prior:
        Shape prior (default: :func:`default_prior`).
    reward_levels:
        Training reward at each evaluation, normalised to [0, 1] by its ceiling (None: no
        co-moving shape, e.g. an unbounded proxy reward).
    reward_rise_left:
        Forecast rise of the normalised training reward from ``step`` to ``total_steps``.
    frozen_steps:
        Consecutive recent steps at which the policy was frozen: a zero policy gradient, after
        the optimizer's momentum died out (see the module docstring).
    variances:
        Per-evaluation variances, overriding ``sizes`` (for callers that already have them).
    cache:
        A :class:`ShapeColumns` kept for this series between calls (the monitor keeps one per
        series), so each call adds the new evaluations' design rows instead of recomputing all.
    calibration:
        The map from the model's probability to the calibrated one
        (:class:`satmon.monitor.calibration.ProbabilityMap`; None: the model's own number).
        ``p_gain`` and the 95% upper bound are read through it; ``p_gain_model`` keeps the
        model's number.

    Example
    -------
    >>> flat = heldout_gain_posterior(range(0, 250, 25), [0.30] * 10, [500] * 10,
    ...                               step=225, total_steps=500)
    >>> rising = heldout_gain_posterior(range(0, 250, 25), [0.3 + 0.0004 * s for s in
    ...                                 range(0, 250, 25)], [500] * 10, step=225, total_steps=500)
    >>> flat.p_gain < 0.05 < 0.95 < rising.p_gain
    True
    """
    pr = prior or default_prior()
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"steps and values must be 1-d and of one length. Got shapes "
                         f"{x.shape} and {y.shape}.")
    n = x.size
    total = float(total_steps)
    horizon = max(total - float(step), 0.0)
    if n < 2:
        return HeldoutPosterior(1.0, math.nan, math.nan, 0.0, pr.p_flat, 0.0, 1.0, 0.0, n,
                                horizon)
    if variances is None:
        sz = np.zeros(n) if sizes is None else np.asarray(sizes, dtype=float)
        var = point_variance(y, sz)
    else:
        var = np.asarray(variances, dtype=float)
    r = None
    if reward_levels is not None:
        r = np.asarray(reward_levels, dtype=float)
        if r.shape != x.shape or not np.isfinite(r).all():
            raise ValueError("reward_levels must be finite and one per evaluation.")
    cols = None if cache is None else cache.get(pr, x, max(total - x[0], 1.0))
    ev = _evidence(pr, x, y, var, r, reward_rise_left, float(step), total, columns=cols)
    return _posterior(ev, pr, min_gain=min_gain, frozen_steps=frozen_steps, horizon=horizon,
                      calibration=calibration)


#: Shape kinds, for the prior masses (the columns of the design, in order).
_APPROACH, _ONSET, _DELAYED, _COMOVE = range(4)


@dataclass(frozen=True)
class _Evidence:
    """Every split's and shape's marginal likelihood and ``g`` posterior, before the prior
    masses are applied (so a calibration can reweight masses without recomputing them).

    ``log_m[j, k]`` is the log evidence of shape k on split j without its prior mass and
    without the split's prior; ``log_m0[j]`` the flat shape's; ``ghat, sd, zk`` the truncated
    normal of ``g`` (``(J, K)``); ``D, D0, lo, hi, kinds`` per shape (``(K,)``)."""

    log_m: np.ndarray
    log_m0: np.ndarray
    ghat: np.ndarray
    sd: np.ndarray
    zk: np.ndarray
    D: np.ndarray
    D0: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    kinds: np.ndarray
    phi: np.ndarray
    n: int


def _evidence(pr: GainPrior, x: np.ndarray, y: np.ndarray, var: np.ndarray,
              r: np.ndarray | None, rise_left: float, step: float, total: float,
              columns: np.ndarray | None = None) -> _Evidence:
    n = x.size
    scale_t = max(total - x[0], 1.0)
    # Leading evaluations may belong to an earlier phase (the format jump of the first steps):
    # split j says the shapes explain evaluations j.. and the first j are free (each its own
    # level, uniform on [0, 1], so each contributes a likelihood of about 1). The shapes keep
    # their time origin at the first evaluation; all splits are computed at once.
    n_lead = min(pr.max_lead, max(n - 4, 0))
    if columns is None:
        columns = shape_columns(pr, x - x[0], scale_t)
    D, D0, lo, hi, kinds = _levers(pr, step - x[0], total - x[0], scale_t, r, rise_left)
    S = columns if r is None else np.concatenate([columns, r[:, None]], axis=1)
    # Each column less its value at the last evaluation (the intercept `a` absorbs a constant):
    # a shape that is constant over a split (an approach already complete, a rise still to
    # come) then has sums near zero instead of the difference of two large ones, whose
    # rounding error would otherwise pass for a fit (a spurious g, a dispersion near zero).
    S = S - S[-1]
    # Sums over evaluations j.. for every split j at once: the sum over the last split's
    # evaluations (a matrix-vector product) plus the few leading ones added back one by one,
    # so a split's sums only ever contain its own evaluations (never a difference of two
    # large totals), O(N x K) in BLAS.
    w = 1.0 / var
    wy = w * y
    log_var = np.log(var)
    L = n_lead
    K = S.shape[1]
    # Every per-evaluation quantity the sums need, side by side: [w, wy, wy*y, log var, w S,
    # w S^2, wy S]. The last split's sums are one matrix product; the leading evaluations are
    # added back by one running sum over their rows.
    tail = S[L:]
    rest = np.concatenate([np.array([w[L:].sum(), wy[L:].sum(), wy[L:] @ y[L:],
                                     log_var[L:].sum()]),
                           w[L:] @ np.concatenate([tail, tail * tail], axis=1), wy[L:] @ tail])
    head = S[:L]
    wS = w[:L, None] * head
    rows = np.concatenate([np.stack([w[:L], wy[:L], wy[:L] * y[:L], log_var[:L]], axis=1),
                           wS, wS * head, y[:L, None] * wS], axis=1)
    sums = np.concatenate([rest[None] + np.cumsum(rows[::-1], axis=0)[::-1], rest[None]],
                          axis=0)
    sw, swy, s_yy, s_lv = sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3]
    sws, s_ss, s_ys = sums[:, 4:4 + K], sums[:, 4 + K:4 + 2 * K], sums[:, 4 + 2 * K:]
    m = n - np.arange(n_lead + 1)
    syy = np.maximum(s_yy - swy ** 2 / sw, 0.0)
    sss = np.maximum(s_ss - sws ** 2 / sw[:, None], 1e-12)
    sys_ = s_ys - swy[:, None] * sws / sw[:, None]
    ghat = sys_ / sss
    q = np.maximum(syy[:, None] - sys_ * ghat, 0.0)
    chi2 = np.minimum(syy, q.min(axis=1))
    phi = np.maximum(pr.dispersion_floor,
                     (pr.dispersion_dof + chi2) / (pr.dispersion_dof + np.maximum(m - 2, 0)))
    sd = np.sqrt(phi[:, None] / sss)
    zk = np.maximum(ndtr((hi - ghat) / sd) - ndtr((lo - ghat) / sd), 1e-300)
    # The Gaussian constants differ between splits (other points, other dispersion), so the
    # evidence keeps them: N(y; mean, phi v) per point, and the integral over `a`.
    base = (-0.5 * m * np.log(2 * math.pi * phi) - 0.5 * s_lv
            + 0.5 * np.log(2 * math.pi * phi / sw))
    log_m = (-0.5 * q / phi[:, None] + np.log(sd) + _LOG_SQRT_2PI + np.log(zk)
             - np.log(hi - lo) + base[:, None])
    log_m0 = -0.5 * syy / phi + base
    return _Evidence(log_m, log_m0, ghat, sd, zk, D, D0, lo, hi, kinds, phi, n)


def _log_masses(pr: GainPrior, kinds: np.ndarray) -> np.ndarray:
    """Each shape's log prior mass (a kind's mass spread evenly over its shapes)."""
    return _log_masses_of(pr, np.ascontiguousarray(kinds, dtype=np.int64).tobytes())


@functools.lru_cache(maxsize=256)
def _log_masses_of(pr: GainPrior, kinds_bytes: bytes) -> np.ndarray:
    kinds = np.frombuffer(kinds_bytes, dtype=np.int64)
    counts = np.bincount(kinds, minlength=4)
    mass = np.array([1.0 - pr.p_flat - pr.p_comove - pr.p_onset - pr.p_delayed, pr.p_onset,
                     max(pr.p_delayed, 1e-300), pr.p_comove])
    if counts[_COMOVE] == 0:  # no co-moving shape: its mass goes to the approach shapes
        mass[_APPROACH] += pr.p_comove
    out = np.log(mass[kinds] / counts[kinds])
    out.flags.writeable = False
    return out


def _posterior(ev: _Evidence, pr: GainPrior, *, min_gain: float, frozen_steps: int,
               horizon: float, full: bool = True,
               calibration: ProbabilityMap | None = None) -> HeldoutPosterior:
    """The mixture over splits and shapes under the prior masses of ``pr`` (``full=False``
    computes the model's P(gain) alone, for calibration sweeps)."""
    cal = calibration if calibration is not None and not calibration.is_identity else None
    J = ev.log_m.shape[0]
    n_lead = J - 1
    log_split = np.full(J, math.log(pr.p_lead / n_lead) if n_lead else 0.0)
    if n_lead:
        log_split[0] = math.log(1.0 - pr.p_lead)
    log_m = ev.log_m + _log_masses(pr, ev.kinds) + log_split[:, None]
    log_m0 = ev.log_m0 + math.log(pr.p_flat) + log_split
    top = max(float(log_m.max()), float(log_m0.max()))
    wk = np.exp(log_m - top)
    w0 = np.exp(log_m0 - top)
    norm = float(wk.sum() + w0.sum())
    split_w = (wk.sum(axis=1) + w0) / norm
    wk = (wk / norm).ravel()
    w0 = float(w0.sum() / norm)
    # Shapes with a negligible posterior weight are left out of the sums below: together they
    # weigh less than J x K x 1e-16, far below any probability the decision compares.
    keep = np.flatnonzero(wk > _NEGLIGIBLE)
    wk = wk[keep]
    ghat, sd, zk = ev.ghat.ravel()[keep], ev.sd.ravel()[keep], ev.zk.ravel()[keep]
    K = ev.D.size
    D, D0, lo, hi = (a[keep % K] for a in (ev.D, ev.D0, ev.lo, ev.hi))
    z_hi = ndtr((hi - ghat) / sd)

    def tail(cuts: np.ndarray, levers: np.ndarray, among: np.ndarray | None = None):
        # P(g x lever >= cut) for each cut (row r of `levers`, or its one row for all, holds
        # each shape's lever for cuts[r]), summed over the non-flat shapes (flat gains 0), or
        # over those in the mask `among`. A shape contributes to a cut only when it can reach
        # it (lever > 0 and hi x lever > cut); the sums run over the shapes that reach some.
        levers = np.broadcast_to(levers, (cuts.size, levers.shape[1]))
        reach = (levers > 0) & (hi * levers > cuts[:, None])
        if among is not None:
            reach &= among
        i = np.flatnonzero(reach.any(axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            g_cut = cuts[:, None] / levers[:, i]
        c = np.minimum(np.maximum(g_cut, lo[i]), hi[i])
        t = np.maximum(z_hi[i] - ndtr((c - ghat[i]) / sd[i]), 0.0) / zk[i]
        return np.where(reach[:, i], t, 0.0) @ wk[i]

    p_frozen = 0.0
    if frozen_steps > 0 and horizon > 0:
        p_frozen = (frozen_steps + 1) / (frozen_steps + horizon + 1)
    alive = 1.0 - p_frozen
    expected = upper = p_falling = p_gained = math.nan
    p_gain = 0.0
    if horizon <= 0:
        expected = upper = 0.0
    if not full:
        if horizon > 0:
            p_gain = float(alive * tail(np.array([min_gain]), D[None])[0])
    else:
        # P(gain >= min_gain) with the levers from now to the end, P(gained) with those from the
        # start to now: one pass over every kept shape.
        both = tail(np.array([min_gain, min_gain]), np.stack([D, D0]))
        p_gain, p_gained = float(alive * both[0]), float(both[1])
        if horizon > 0:
            # The 95% upper bound: the tail on a geometric grid of gains from 0.01 point (so a
            # bound below the first step of a linear grid is seen), read where the calibrated
            # tail is 5% (the model's tail at the level the map sends to 0.05; the map fitted
            # at min_gain stands in for every gain), over the shapes that carry more than
            # _BOUND_WEIGHT of the posterior each (the rest move the tail by at most their
            # total, J x K x _BOUND_WEIGHT < 1e-3, against a level of 0.01-0.05).
            top_gain = float(np.max(hi * D, initial=0.0))
            log_top = math.log(max(top_gain, 2e-4))
            grid = np.exp(_LOG_1E4 + (log_top - _LOG_1E4) * _UNIT)
            big = wk > _BOUND_WEIGHT
            level = 0.05 if cal is None else cal.inverse(0.05)
            upper = _upper_bound(grid, alive * tail(grid, D[None], big), level)
            # E[max(g, 0)] per shape (truncated normal on [max(lo, 0), hi]).
            a0 = (np.maximum(lo, 0.0) - ghat) / sd
            b0 = (hi - ghat) / sd
            mass = np.maximum(ndtr(b0) - ndtr(a0), 0.0)
            dens = (np.exp(-0.5 * a0 ** 2) - np.exp(-0.5 * b0 ** 2)) / math.sqrt(2 * math.pi)
            e_pos = (ghat * mass + sd * dens) / zk
            expected = alive * float(wk @ (np.maximum(e_pos, 0.0) * D))
        with np.errstate(divide="ignore", invalid="ignore"):
            p_falling = float(wk @ np.minimum(
                np.maximum(ndtr((0.0 - ghat) / sd) - ndtr((lo - ghat) / sd), 0.0) / zk, 1.0))
    p_model = float(min(max(p_gain, 0.0), 1.0))
    return HeldoutPosterior(
        p_gain=p_model if cal is None else cal(p_model), expected_gain=expected,
        gain_upper=upper, p_gained=p_gained, p_flat=w0, p_falling=p_falling,
        dispersion=float(split_w @ ev.phi), p_frozen=float(p_frozen), n_points=int(ev.n),
        horizon=horizon, p_gain_model=p_model)


def _shape_values(pr: GainPrior, t: np.ndarray, scale_t: float) -> np.ndarray:
    """Every fixed shape's value ``s_k(t)`` at times ``t`` since the first evaluation
    (``(len(t), K0)``; ``s_k(0) = 0``), in the order approach, onset, delayed: the one place
    each shape's formula lives. ``scale_t`` is the planned span from the first evaluation."""
    t = np.asarray(t, dtype=float)[:, None]
    taus, powers, delays = _shape_params(pr, float(scale_t))
    # Approach shapes, one per time scale: s = 1 - exp(-t / tau).
    parts = [-np.expm1(-t / taus)]
    # Onset shapes: an accelerating rise (t / T)**k, the convex start of a sigmoid learning curve.
    parts.append((np.minimum(t, scale_t) / scale_t) ** powers)
    # Delayed shapes: a logistic rise centred at c (a fraction of the run) of width w, the
    # generalization that starts long after the reward saturated. With a flat past, the ones
    # centred in the future stay as likely as their prior: they keep P(gain) up by about
    # p_delayed x (share of the run left), which is what this mass trades against.
    for centres, wd, at_zero in delays:
        parts.append(0.5 * (np.tanh((t - centres) / wd) - at_zero))
    return np.concatenate(parts, axis=1)


@functools.lru_cache(maxsize=64)
def _shape_params(pr: GainPrior, scale_t: float):
    """The shapes' time scales, powers and (centres, width, tanh at 0) for one span."""
    taus = scale_t * np.geomspace(pr.tau_low, pr.tau_high, pr.n_tau)
    centres = np.arange(1, pr.n_delay + 1) / pr.n_delay * scale_t
    delays = tuple((centres, 2 * wf * scale_t, np.tanh(-centres / (2 * wf * scale_t)))
                   for wf in pr.delay_widths)
    return taus, np.asarray(pr.onset_powers), delays


def shape_columns(pr: GainPrior, x0: np.ndarray, scale_t: float) -> np.ndarray:
    """The design columns of the fixed shapes at evaluations ``x0`` steps after the first
    (``(N, K0)``). They depend on nothing that changes as the series grows, so a caller that
    evaluates a growing series keeps them (:class:`ShapeColumns`)."""
    return _shape_values(pr, x0, scale_t)


def _levers(pr: GainPrior, now: float, end: float, scale_t: float, r: np.ndarray | None,
            rise_left: float):
    """Each non-flat shape's gain lever from now to the end ``D`` and from the start to now
    ``D0``, the bounds of ``g`` and its kind (each ``(K,)``; the co-moving shape last)."""
    v = _shape_values(pr, np.array([now, end]), scale_t)
    lo, hi, kinds = _bounds(pr, v.shape[1], r is not None)
    if r is None:
        return v[1] - v[0], v[0], lo, hi, kinds
    # Co-moving: held-out = a + g x (normalised training reward).
    D = np.append(v[1] - v[0], max(float(rise_left), 0.0))
    D0 = np.append(v[0], float(r[-1] - r[0]))
    return D, D0, lo, hi, kinds


@functools.lru_cache(maxsize=64)
def _bounds(pr: GainPrior, k0: int, comove: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bounds of ``g`` and the kind of each of ``k0`` fixed shapes (and the co-moving one
    last when ``comove``); read-only, shared by every call with this prior."""
    n_app, n_on = pr.n_tau, len(pr.onset_powers)
    kinds = np.full(k0 + comove, _DELAYED, dtype=np.int64)
    kinds[:n_app] = _APPROACH
    kinds[n_app:n_app + n_on] = _ONSET
    lo, hi = np.full(k0 + comove, pr.gain_low), np.full(k0 + comove, pr.gain_high)
    if comove:
        kinds[-1], lo[-1], hi[-1] = _COMOVE, pr.comove_low, pr.comove_high
    for a in (lo, hi, kinds):
        a.flags.writeable = False
    return lo, hi, kinds


class ShapeColumns:
    """The fixed shapes' design columns of one growing held-out series, kept between
    evaluations (pass it as ``cache=`` to :func:`heldout_gain_posterior`).

    Each evaluation's row depends only on its time since the series' first evaluation, the
    planned span and the prior, so a new evaluation adds one row instead of the whole
    ``N x K`` table being recomputed. Rows are always computed one evaluation at a time, so a
    table rebuilt after a resume is the same, bit for bit, as the one grown during the run. A
    change of the first step, the span or the prior, or a series that is not the cached one
    grown, starts the table again."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._x0: list[float] = []
        self._table = np.empty((0, 0))

    def get(self, pr: GainPrior, x: np.ndarray, scale_t: float) -> np.ndarray:
        """The ``(len(x), K0)`` columns for the series' steps ``x``."""
        key = (pr, float(x[0]), float(scale_t))
        x0 = x - x[0]
        k = len(self._x0)
        if key != self._key or k > x.size or (k and self._x0[-1] != float(x0[k - 1])):
            self._key, self._x0, k = key, [], 0
        for i in range(k, x.size):
            row = _shape_values(pr, x0[i:i + 1], scale_t)[0]
            if self._table.shape[1] != row.size:  # another prior: another number of shapes
                self._table = np.empty((0, row.size))
            self._table = reserve(self._table, i + 1, i, axis=0)
            self._table[i] = row
            self._x0.append(float(x0[i]))
        return self._table[:x.size]


def _upper_bound(grid: np.ndarray, tails: np.ndarray, level: float) -> float:
    """The gain at which the (decreasing) tail crosses ``level``, interpolated on the grid
    (0 when the tail is below it everywhere)."""
    above = np.nonzero(tails > level)[0]
    if above.size == 0:
        return 0.0
    i = int(above[-1])
    if i + 1 >= grid.size:
        return float(grid[-1])
    t0, t1 = tails[i], tails[i + 1]
    return float(grid[i] + (grid[i + 1] - grid[i]) * (t0 - level) / max(t0 - t1, 1e-300))


__all__ = ["GainPrior", "HeldoutPosterior", "PROBE_MAX_RATIO", "ShapeColumns", "default_prior",
           "heldout_gain_posterior", "point_variance", "shape_columns"]
