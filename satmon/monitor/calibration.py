"""The calibration of P(gain): a monotone map from the model's probability to the frequency at
which runs were seen to gain.

The held-out posterior (:mod:`satmon.monitor.posterior`) is exact for its generative model, but
the model is simpler than real training curves, and its probability is too sharp: on the
calibration mixture, evaluations at a model P(gain) of 0.05-0.1 later gained 31% of the time,
and those above 0.7 only 78% (the README's reliability table). A :class:`ProbabilityMap` fitted
on the same mixture the prior is fitted on (``benchmarks/calibrate_prior.py``) turns the
model's number into one that means what it says there; the monitor reports, logs and decides
on the mapped number.

The map is strictly increasing, so it reorders nothing: a halt at mapped P(gain) < ``risk`` is
the halt at model P(gain) < ``map.inverse(risk)``, and the shipped ``risk`` is the image of the
level fitted on the model's scale (``prior.json``'s ``model_risk``), which keeps every decision.
It is piecewise linear in log-odds between its knots and shifts the log-odds by the end knots'
offset beyond them, so 0 and 1 map to themselves and the map inverts in closed form.

Fitting (:meth:`ProbabilityMap.fit`): sort the (model probability, gained later) pairs, cut them
into groups of equal count, give each group its Jeffreys rate ``(k + 1/2) / (n + 1)`` (never 0
or 1: a group with no gain among n says less than "never"), pool neighbouring groups until the
rates strictly increase (pool-adjacent-violators, the isotonic regression), and put one knot per
pooled group at its mean log-odds.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _expit(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class ProbabilityMap:
    """A strictly increasing map of probabilities (see the module docstring).

    Attributes
    ----------
    model: the knots' model probabilities (strictly increasing, inside (0, 1)).
    observed: the frequencies they map to (strictly increasing, inside (0, 1)).
    Without knots the map is the identity.

    Example
    -------
    >>> m = ProbabilityMap(model=(0.01, 0.1, 0.9), observed=(0.02, 0.3, 0.8))
    >>> round(m(0.1), 6), round(m.inverse(0.3), 6), m(0.0), m(1.0)
    (0.3, 0.1, 0.0, 1.0)
    >>> m(0.05) < m(0.06) and ProbabilityMap.identity()(0.37) == 0.37
    True
    """

    model: tuple[float, ...] = ()
    observed: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        model = tuple(float(v) for v in self.model)
        observed = tuple(float(v) for v in self.observed)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "observed", observed)
        if len(model) != len(observed):
            raise ValueError(f"ProbabilityMap needs one 'observed' value per 'model' knot. Got "
                             f"{len(model)} and {len(observed)}.")
        for name, knots in (("model", model), ("observed", observed)):
            if any(not (0.0 < v < 1.0) for v in knots):
                raise ValueError(f"ProbabilityMap '{name}' knots must lie inside (0, 1). Got "
                                 f"{list(knots)}.")
            if any(b <= a for a, b in zip(knots, knots[1:])):
                raise ValueError(f"ProbabilityMap '{name}' knots must strictly increase (the "
                                 f"map must not reorder probabilities). Got {list(knots)}.")
        object.__setattr__(self, "_x", tuple(_logit(v) for v in model))
        object.__setattr__(self, "_y", tuple(_logit(v) for v in observed))

    @classmethod
    def identity(cls) -> ProbabilityMap:
        """The map that leaves every probability as it is (the model's own number)."""
        return cls()

    @property
    def is_identity(self) -> bool:
        return not self.model

    def __call__(self, p: float) -> float:
        """The calibrated probability of the model probability ``p`` (in [0, 1])."""
        return self._apply(p, self._x, self._y)

    def inverse(self, q: float) -> float:
        """The model probability that maps to ``q``."""
        return self._apply(q, self._y, self._x)

    @staticmethod
    def _apply(p: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
        p = float(p)
        if not xs or not 0.0 < p < 1.0:  # also NaN, 0 and 1: returned as they are
            return p
        z = _logit(p)
        if z <= xs[0]:
            return _expit(z + ys[0] - xs[0])
        if z >= xs[-1]:
            return _expit(z + ys[-1] - xs[-1])
        i = bisect.bisect_right(xs, z) - 1
        w = (z - xs[i]) / (xs[i + 1] - xs[i])
        return _expit(ys[i] + w * (ys[i + 1] - ys[i]))

    @classmethod
    def fit(cls, p: Any, gained: Any, *, groups: int | None = None) -> ProbabilityMap:
        """The isotonic map from model probabilities ``p`` to outcomes ``gained`` (booleans).

        ``groups`` equal-count groups (default ``n // 200`` within [5, 50]); pairs with
        ``p`` at 0 or 1 exactly are left out (the map keeps 0 and 1 fixed)."""
        p = np.asarray(p, dtype=float)
        y = np.asarray(gained, dtype=bool)
        if p.shape != y.shape or p.ndim != 1:
            raise ValueError(f"ProbabilityMap.fit needs one outcome per probability. Got shapes "
                             f"{p.shape} and {y.shape}.")
        keep = np.isfinite(p) & (p > 0) & (p < 1)
        p, y = p[keep], y[keep]
        if p.size < 2:
            raise ValueError(f"ProbabilityMap.fit needs at least 2 probabilities inside (0, 1); "
                             f"got {p.size}.")
        order = np.argsort(p, kind="stable")
        z = np.log(p[order] / (1.0 - p[order]))
        y = y[order]
        k = groups if groups is not None else min(max(p.size // 200, 5), 50)
        k = max(1, min(int(k), p.size))
        # Blocks of (count, gains, sum of log-odds), pooled while they do not strictly increase
        # in rate (or, with ties in p, in position).
        blocks: list[list[float]] = []
        for idx in np.array_split(np.arange(p.size), k):
            blocks.append([float(idx.size), float(y[idx].sum()), float(z[idx].sum())])
            while len(blocks) > 1:
                (n0, k0, s0), (n1, k1, s1) = blocks[-2], blocks[-1]
                if (k0 + 0.5) / (n0 + 1) < (k1 + 0.5) / (n1 + 1) and s0 / n0 < s1 / n1:
                    break
                blocks[-2:] = [[n0 + n1, k0 + k1, s0 + s1]]
        model = tuple(_expit(s / n) for n, _, s in blocks)
        observed = tuple((g + 0.5) / (n + 1) for n, g, _ in blocks)
        return cls(model=model, observed=observed)

    def to_dict(self) -> dict[str, list[float]]:
        return {"model": list(self.model), "observed": list(self.observed)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProbabilityMap:
        """Build from ``{"model": [...], "observed": [...]}`` (unknown keys raise)."""
        unknown = sorted(set(raw) - {"model", "observed"})
        if unknown:
            raise ValueError(f"ProbabilityMap got unknown keys {unknown}; valid keys: "
                             "['model', 'observed'].")
        return cls(model=tuple(raw.get("model", ())), observed=tuple(raw.get("observed", ())))


def default_calibration() -> ProbabilityMap:
    """The map fitted with the shipped prior (``satmon/monitor/prior.json``'s ``calibration``;
    the identity for a file written before it had one)."""
    from satmon import _data
    from satmon.monitor.posterior import GainPrior

    raw = _data.load("prior.json", list(GainPrior.__dataclass_fields__))
    return ProbabilityMap.from_dict(raw.get("calibration", {}))


__all__ = ["ProbabilityMap", "default_calibration"]
