"""The paper's exact post-hoc saturation analysis (DESIGN.md section 2).

* ``t_sat = min{ t <= T - end_margin : r_t >= eps * max_{s<=T} r_s }`` on the raw training
  reward (no smoothing); infinite when no step qualifies. T is the run's last logged step.
* pre-saturation phase: steps before ``t_sat``; post-saturation: ``t_sat .. T``.
* ``delta_sat = M(t_sat) - M(0)`` and ``delta_post = max_{t in [t_sat, T]} M(t) - M(t_sat)`` per
  held-out benchmark M.
* ``G_sat(n', n) = M^{n'}(t_sat^n) - M^n(t_sat^n)`` between a large- and a small-data run.

Held-out points are sparse, so ``M(t_sat)`` needs a policy when ``t_sat`` was not evaluated:

``"nearest"``
    the evaluated step closest to ``t_sat`` (a tie goes to the earlier step, which has seen no
    post-saturation training);
``"interpolate"``
    linear interpolation between the evaluated steps around ``t_sat`` (the nearest end point
    when ``t_sat`` lies outside the evaluated range: no extrapolation);
``"previous"``
    the last evaluation at or before ``t_sat`` (what an online monitor could have known).

The policy and the evaluated step(s) used are reported with every gain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from satmon.results import Result, format_number, html_table, json_safe, text_table
from satmon.run import HeldoutSeries, Run, Series

HELDOUT_POLICIES = ("nearest", "interpolate", "previous")


def _check_params(eps: float, end_margin: int) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1:
        raise ValueError(f"The 'eps' parameter must be a float in (0, 1]. Got {eps!r} instead.")
    if isinstance(end_margin, bool) or not isinstance(end_margin, (int, np.integer)) \
            or end_margin < 0:
        raise ValueError(
            f"The 'end_margin' parameter must be an int >= 0. Got {end_margin!r} instead.")


def saturation_step(
    rewards: Sequence[float] | np.ndarray,
    steps: Sequence[int] | np.ndarray | None = None,
    *,
    eps: float = 0.99,
    end_margin: int = 50,
) -> int | float:
    """The paper's saturation step of a training-reward curve.

    Parameters
    ----------
    rewards:
        Per-step mean training reward, raw (no smoothing). NaN values are ignored: they
        neither set the maximum nor qualify as ``t_sat``.
    steps:
        Strictly increasing step labels; default ``1 .. len(rewards)``. ``T`` is the last step
        label, so a run logged every 10 steps keeps its own step units.
    eps:
        Fraction of the maximum reward that counts as saturated (paper: 0.99).
    end_margin:
        Steps at the end of the run that cannot be ``t_sat`` (paper: 50).

    Returns
    -------
    The saturation step (an ``int``), or ``math.inf`` when no step qualifies (including runs
    shorter than the margin).

    Example
    -------
    >>> r = [0.1 * t for t in range(1, 11)] + [1.0] * 60
    >>> saturation_step(r)
    10
    >>> saturation_step([0.5] * 40)  # shorter than the 50-step end margin
    inf
    """
    _check_params(eps, end_margin)
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"'rewards' must be 1-d. Got shape {r.shape} instead.")
    if steps is None:
        s = np.arange(1, r.size + 1, dtype=np.int64)
    else:
        s = np.asarray(steps)
        if s.shape != r.shape:
            raise ValueError(
                f"'steps' and 'rewards' must have the same length. Got {s.size} and {r.size}.")
        if s.size and np.any(np.diff(s) <= 0):
            bad = int(s[1:][np.diff(s) <= 0][0])
            raise ValueError(
                f"'steps' must be strictly increasing; step {bad} repeats or goes backwards. "
                "Build a satmon.Run from the raw log first: it resolves a resumed run's "
                "repeated steps (later values win) and sorts the rest.")
    if r.size == 0:
        raise ValueError("'rewards' is empty; a saturation step needs at least one value.")
    r = np.where(np.isinf(r), np.nan, r)
    finite = ~np.isnan(r)
    if not finite.any():
        raise ValueError("'rewards' has no finite value; cannot compute a saturation step.")
    peak = float(np.max(r[finite]))
    if peak < 0:
        raise ValueError(
            f"The training reward's maximum is {peak:.4g} < 0, so the relative threshold "
            f"eps * max is undefined. Shift the rewards (e.g. subtract their minimum) first.")
    last = int(s[-1])
    threshold = eps * peak
    qualifies = finite & (r >= threshold) & (s <= last - end_margin)
    if not qualifies.any():
        return math.inf
    return int(s[np.argmax(qualifies)])


def _peak_notes(values: np.ndarray, steps: np.ndarray, eps: float,
                t_sat: float) -> list[str]:
    """Say when the threshold eps * max rests on little: a reward outside [0, 1] (its maximum
    is not a ceiling) or a maximum that only one or two steps reach (a spike)."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    if not finite.any():
        return []
    peak = float(np.max(v[finite]))
    reaching = np.flatnonzero(finite & (v >= eps * peak))
    notes = []
    if peak > 1.0 or float(np.min(v[finite])) < 0.0:
        notes.append(f"the training reward is not in [0, 1] (range "
                     f"{format_number(float(np.min(v[finite])), 3)} to "
                     f"{format_number(peak, 3)}): its maximum is not a ceiling, so t_sat is "
                     "relative to the largest value seen")
    if 0 < reaching.size <= 2 and finite.sum() >= 10 and math.isfinite(t_sat):
        rest = np.sort(v[finite])[-(reaching.size + 1)]
        where = ", ".join(str(int(steps[i])) for i in reaching)
        notes.append(f"t_sat rests on {reaching.size} step(s): only step(s) {where} reach "
                     f"{eps:g} x max (max {format_number(peak, 3)}; the next highest value "
                     f"is {format_number(float(rest), 3)})")
    return notes


@dataclass(frozen=True)
class HeldoutAt:
    """A held-out value read at a step under a policy, with the evaluated steps it used."""

    value: float
    used_steps: tuple[int, ...]
    exact: bool
    note: str = ""


def heldout_at(series: Series, step: float, policy: str = "nearest") -> HeldoutAt:
    """Read a sparse held-out series at ``step`` under a policy (see the module docstring)."""
    if policy not in HELDOUT_POLICIES:
        raise ValueError(
            f"The 'policy' parameter must be one of {HELDOUT_POLICIES}. Got {policy!r} instead.")
    if len(series) == 0:
        raise ValueError(f"Held-out series '{series.name}' has no finite values.")
    if not math.isfinite(step):
        raise ValueError(f"Cannot read held-out '{series.name}' at a non-finite step ({step}).")
    steps, values = series.steps, series.values
    i = int(np.searchsorted(steps, step))
    if i < steps.size and steps[i] == step:
        return HeldoutAt(float(values[i]), (int(steps[i]),), True)
    before = i - 1 if i > 0 else None
    after = i if i < steps.size else None
    if policy == "previous":
        if before is None:
            return HeldoutAt(math.nan, (), False,
                             f"no evaluation at or before step {format_number(step)}")
        return HeldoutAt(float(values[before]), (int(steps[before]),), False)
    if before is None or after is None:
        j = after if before is None else before
        side = "before the first" if before is None else "after the last"
        return HeldoutAt(float(values[j]), (int(steps[j]),), False,
                         f"step {format_number(step)} lies {side} evaluation; used the end point")
    if policy == "nearest":
        j = before if step - steps[before] <= steps[after] - step else after
        return HeldoutAt(float(values[j]), (int(steps[j]),), False)
    w = (step - steps[before]) / (steps[after] - steps[before])
    value = float(values[before] + w * (values[after] - values[before]))
    return HeldoutAt(value, (int(steps[before]), int(steps[after])), False)


@dataclass(frozen=True)
class HeldoutGain:
    """Pre-saturation gain and post-saturation residual of one held-out benchmark."""

    name: str
    policy: str
    baseline: float
    baseline_step: int | None
    at_saturation: float
    at_saturation_steps: tuple[int, ...]
    delta_sat: float
    delta_post: float
    best_post_step: int | None
    final: float
    n_points: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "name": self.name, "policy": self.policy, "baseline": self.baseline,
            "baseline_step": self.baseline_step, "at_saturation": self.at_saturation,
            "at_saturation_steps": list(self.at_saturation_steps),
            "delta_sat": self.delta_sat, "delta_post": self.delta_post,
            "best_post_step": self.best_post_step, "final": self.final,
            "n_points": self.n_points, "notes": list(self.notes),
        })


def heldout_gain(
    series: Series, t_sat: float, last_step: int, *, policy: str = "nearest"
) -> HeldoutGain:
    """``delta_sat`` and ``delta_post`` of one held-out series for a given saturation step.

    ``M(0)`` is the evaluation at step 0 when the series has one, else its first evaluation
    (reported as ``baseline_step`` with a note). When the run never saturated (``t_sat``
    infinite) both gains are NaN.
    """
    if len(series) == 0:
        raise ValueError(f"Held-out series '{series.name}' has no finite values.")
    notes: list[str] = []
    baseline_step = int(series.steps[0])
    baseline = float(series.values[0])
    if baseline_step != 0:
        notes.append(f"no evaluation at step 0; M(0) taken at step {baseline_step}")
    final = float(series.values[-1])
    if not math.isfinite(t_sat):
        notes.append("never saturated: delta_sat and delta_post undefined")
        return HeldoutGain(series.name, policy, baseline, baseline_step, math.nan, (), math.nan,
                           math.nan, None, final, len(series), tuple(notes))
    at = heldout_at(series, t_sat, policy)
    if at.note:
        notes.append(at.note)
    if math.isnan(at.value):
        return HeldoutGain(series.name, policy, baseline, baseline_step, math.nan, (), math.nan,
                           math.nan, None, final, len(series), tuple(notes))
    post = (series.steps >= t_sat) & (series.steps <= last_step)
    best_value, best_step = at.value, None
    if post.any():
        j = int(np.argmax(np.where(post, series.values, -np.inf)))
        if series.values[j] > best_value:
            best_value, best_step = float(series.values[j]), int(series.steps[j])
    return HeldoutGain(
        name=series.name, policy=policy, baseline=baseline, baseline_step=baseline_step,
        at_saturation=at.value, at_saturation_steps=at.used_steps,
        delta_sat=at.value - baseline, delta_post=best_value - at.value,
        best_post_step=best_step, final=final, n_points=len(series), notes=tuple(notes),
    )


class SaturationAnalysis(Result):
    """The exact post-hoc analysis of one run: t_sat, phases and held-out gains."""

    def __init__(self, *, run_name: str, t_sat: float, first_step: int, last_step: int,
                 max_reward: float, eps: float, end_margin: int, policy: str,
                 gains: Mapping[str, HeldoutGain], notes: Sequence[str] = ()) -> None:
        self.run_name = run_name
        self.t_sat = t_sat
        self.first_step = first_step
        self.last_step = last_step
        self.max_reward = max_reward
        self.eps = eps
        self.end_margin = end_margin
        self.policy = policy
        self.gains = dict(gains)
        self.notes = tuple(notes)

    @property
    def saturated(self) -> bool:
        return math.isfinite(self.t_sat)

    @property
    def pre_saturation_length(self) -> int:
        """Steps in the pre-saturation phase (``first_step .. t_sat - 1``; whole run if never)."""
        end = self.t_sat if self.saturated else self.last_step + 1
        return int(end - self.first_step)

    @property
    def post_saturation_length(self) -> int:
        """Steps in the post-saturation phase (``t_sat .. T``; 0 if never saturated)."""
        return int(self.last_step - self.t_sat + 1) if self.saturated else 0

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "run": self.run_name,
            "saturated": self.saturated,
            "t_sat": self.t_sat if self.saturated else None,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "pre_saturation_length": self.pre_saturation_length,
            "post_saturation_length": self.post_saturation_length,
            "max_reward": self.max_reward,
            "params": {"eps": self.eps, "end_margin": self.end_margin,
                       "heldout_policy": self.policy},
            "heldout": {k: g.to_dict() for k, g in self.gains.items()},
            "notes": list(self.notes),
        })

    def _gain_rows(self) -> list[list[str]]:
        return [[g.name, format_number(g.baseline), format_number(g.at_saturation),
                 ",".join(map(str, g.at_saturation_steps)) or "-",
                 format_number(g.delta_sat), format_number(g.delta_post),
                 format_number(g.final)] for g in self.gains.values()]

    _GAIN_HEADER = ["held-out", "M(0)", "M(t_sat)", "eval steps used", "delta_sat",
                    "delta_post*", "final"]

    def summary(self) -> str:
        t = format_number(self.t_sat)
        lines = [
            f"Run '{self.run_name}': t_sat = {t} (eps {self.eps}, end margin {self.end_margin}, "
            f"max reward {format_number(self.max_reward)}, T = {self.last_step})",
            f"  pre-saturation: {self.pre_saturation_length} steps; "
            f"post-saturation: {self.post_saturation_length} steps",
        ]
        if self.gains:
            lines.append(f"  held-out read at t_sat by policy '{self.policy}':")
            lines += ["  " + row for row in
                      text_table(self._GAIN_HEADER, self._gain_rows()).splitlines()]
        else:
            lines.append("  no held-out series: gains cannot be computed")
        notes = list(self.notes) + [f"{g.name}: {n}" for g in self.gains.values() for n in g.notes]
        lines += [f"  note: {n}" for n in notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = (f"<p><b>{self.run_name}</b>: t_sat = {format_number(self.t_sat)}, "
                f"pre {self.pre_saturation_length} / post {self.post_saturation_length} steps "
                f"(eps {self.eps}, margin {self.end_margin}, policy '{self.policy}')</p>")
        return head + html_table(self._GAIN_HEADER, self._gain_rows())


def analyze_saturation(
    run: Run,
    *,
    eps: float = 0.99,
    end_margin: int = 50,
    heldout_policy: str = "nearest",
    heldout: Sequence[str] | None = None,
) -> SaturationAnalysis:
    """Run the paper's exact analysis on a :class:`~satmon.Run`.

    Parameters
    ----------
    run:
        A run with a training-reward series.
    eps, end_margin:
        Parameters of :func:`saturation_step`.
    heldout_policy:
        How to read held-out accuracy at ``t_sat`` (``"nearest"``, ``"interpolate"``,
        ``"previous"``).
    heldout:
        Names of held-out series to analyse (default: all).

    Returns
    -------
    A :class:`SaturationAnalysis`.
    """
    if heldout_policy not in HELDOUT_POLICIES:
        raise ValueError(f"The 'heldout_policy' parameter must be one of {HELDOUT_POLICIES}. "
                         f"Got {heldout_policy!r} instead.")
    tr = run.require_train_reward()
    t_sat = saturation_step(tr.values, tr.steps, eps=eps, end_margin=end_margin)
    last = int(tr.steps[-1])
    names = list(run.heldout) if heldout is None else list(heldout)
    gains: dict[str, HeldoutGain] = {}
    notes: list[str] = []
    for name in names:
        series = run.require_heldout(name)
        if len(series) == 0:
            notes.append(f"held-out '{name}' has no finite values; skipped")
            continue
        gains[name] = heldout_gain(series, t_sat, last, policy=heldout_policy)
    if tr.cleaning is not None and tr.cleaning.changed:
        notes.append(f"training reward cleaned: {tr.cleaning.describe()}")
    notes += _peak_notes(tr.values, tr.steps, eps, t_sat)
    return SaturationAnalysis(
        run_name=run.name, t_sat=t_sat, first_step=int(tr.steps[0]), last_step=last,
        max_reward=float(np.max(tr.values)), eps=eps, end_margin=end_margin,
        policy=heldout_policy, gains=gains, notes=notes,
    )


class DataGap(Result):
    """``G_sat(n', n)`` per held-out benchmark, with optional group averages."""

    def __init__(self, *, large_run: str, small_run: str, t_sat_small: float, policy: str,
                 gaps: Mapping[str, float], groups: Mapping[str, float],
                 notes: Sequence[str] = ()) -> None:
        self.large_run = large_run
        self.small_run = small_run
        self.t_sat_small = t_sat_small
        self.policy = policy
        self.gaps = dict(gaps)
        self.groups = dict(groups)
        self.notes = tuple(notes)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "large_run": self.large_run, "small_run": self.small_run,
            "t_sat_small": self.t_sat_small, "policy": self.policy,
            "gaps": self.gaps, "groups": self.groups, "notes": list(self.notes),
        })

    def summary(self) -> str:
        lines = [f"G_sat('{self.large_run}', '{self.small_run}') at t_sat = "
                 f"{format_number(self.t_sat_small)} of '{self.small_run}' "
                 f"(policy '{self.policy}')"]
        lines += [f"  {k}: {format_number(v)}" for k, v in self.gaps.items()]
        lines += [f"  mean over {k}: {format_number(v)}" for k, v in self.groups.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def data_gap(
    large: Run,
    small: Run,
    *,
    heldout: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    eps: float = 0.99,
    end_margin: int = 50,
    heldout_policy: str = "nearest",
) -> DataGap:
    """The data gap ``G_sat(n', n) = M^{n'}(t_sat^n) - M^n(t_sat^n)`` per held-out benchmark.

    Parameters
    ----------
    large, small:
        The large-data (``n'``) and small-data (``n``) runs; ``t_sat`` is the small run's.
    heldout:
        Benchmarks to compare (default: those present in both runs).
    groups:
        ``{group: [benchmark, ...]}``, e.g. in-domain and out-of-domain; each group's mean gap
        is reported.
    """
    t_sat = saturation_step(small.require_train_reward().values,
                            small.require_train_reward().steps, eps=eps, end_margin=end_margin)
    names = ([n for n in small.heldout if n in large.heldout] if heldout is None
             else list(heldout))
    notes: list[str] = []
    gaps: dict[str, float] = {}
    if not math.isfinite(t_sat):
        notes.append(f"'{small.name}' never saturated: G_sat undefined")
    for name in names:
        if not math.isfinite(t_sat):
            gaps[name] = math.nan
            continue
        a = heldout_at(large.require_heldout(name), t_sat, heldout_policy)
        b = heldout_at(small.require_heldout(name), t_sat, heldout_policy)
        notes += [f"{name}: {n}" for n in (a.note, b.note) if n]
        gaps[name] = a.value - b.value
    return DataGap(large_run=large.name, small_run=small.name, t_sat_small=t_sat,
                   policy=heldout_policy, gaps=gaps,
                   groups=group_average(gaps, groups or {}), notes=notes)


def group_average(
    values: Mapping[str, float], groups: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Mean of ``values`` over each group of names (e.g. in-domain / out-of-domain).

    A group naming a benchmark absent from ``values`` raises a KeyError listing those present;
    NaN members make the group's mean NaN (an undefined gain is not silently dropped).
    """
    out: dict[str, float] = {}
    for group, members in groups.items():
        missing = [m for m in members if m not in values]
        if missing:
            raise KeyError(f"Group '{group}' names {missing}, which are not among the "
                           f"benchmarks analysed: {sorted(values)}.")
        if not members:
            raise ValueError(f"Group '{group}' is empty; list at least one benchmark.")
        out[group] = float(np.mean([values[m] for m in members]))
    return out


def average_runs(runs: Sequence[Run], *, name: str | None = None) -> Run:
    """The seed-averaged run: each series averaged over the steps every seed logged.

    Steps logged by only some seeds are dropped (a mean over a changing set of seeds would move
    with the membership, not the training). The held-out sample size becomes the sum over seeds.
    """
    if not runs:
        raise ValueError("average_runs needs at least one run.")

    def mean_series(series: list[Series | None], label: str) -> tuple[np.ndarray, np.ndarray]:
        if any(s is None for s in series):
            missing = [r.name for r, s in zip(runs, series) if s is None]
            raise ValueError(f"Cannot average '{label}': runs {missing} do not have it.")
        common = series[0].steps  # type: ignore[union-attr]
        for s in series[1:]:
            common = np.intersect1d(common, s.steps)  # type: ignore[union-attr]
        if common.size == 0:
            raise ValueError(f"Cannot average '{label}': the runs share no logged step.")
        vals = np.mean([s.values[np.searchsorted(s.steps, common)]  # type: ignore[union-attr]
                        for s in series], axis=0)
        return common, vals

    train = mean_series([r.train_reward for r in runs], "train_reward")
    heldout: dict[str, Any] = {}
    for h in runs[0].heldout:
        if all(h in r.heldout for r in runs):
            steps, vals = mean_series([r.heldout[h] for r in runs], h)
            sizes = [r.heldout[h].sample_size for r in runs]
            total = None if any(n is None for n in sizes) else int(sum(sizes))  # type: ignore
            heldout[h] = HeldoutSeries(name=h, steps=steps, values=vals, sample_size=total)
    aux = {a: Series(a, *mean_series([r.aux.get(a) for r in runs], a))
           for a in runs[0].aux if all(a in r.aux for r in runs)}
    meta = {"n_seeds": len(runs), "seeds": [r.name for r in runs]}
    return Run(Series("train_reward", *train), heldout=heldout, aux=aux, metadata=meta,
               name=name or f"mean of {len(runs)} runs")


class SeedAnalysis(Result):
    """Per-seed analyses plus the analysis of the seed-averaged curves."""

    def __init__(self, per_seed: Sequence[SaturationAnalysis],
                 averaged: SaturationAnalysis) -> None:
        self.per_seed = list(per_seed)
        self.averaged = averaged

    def t_sat_values(self) -> np.ndarray:
        return np.array([a.t_sat for a in self.per_seed], dtype=float)

    def to_dict(self) -> dict[str, Any]:
        t = self.t_sat_values()
        fin = t[np.isfinite(t)]
        return json_safe({
            "per_seed": [a.to_dict() for a in self.per_seed],
            "averaged": self.averaged.to_dict(),
            "t_sat_mean": float(fin.mean()) if fin.size else None,
            "t_sat_std": float(fin.std(ddof=1)) if fin.size > 1 else None,
            "n_never_saturated": int((~np.isfinite(t)).sum()),
        })

    def summary(self) -> str:
        rows = []
        for a in self.per_seed:
            for g in a.gains.values() or [None]:
                rows.append([a.run_name, format_number(a.t_sat),
                             g.name if g else "-",
                             format_number(g.delta_sat) if g else "-",
                             format_number(g.delta_post) if g else "-"])
        return ("Per seed:\n" + text_table(["run", "t_sat", "held-out", "delta_sat",
                                            "delta_post*"], rows)
                + "\n\nSeed-averaged curves:\n" + self.averaged.summary())


def analyze_seeds(runs: Sequence[Run], **kwargs: Any) -> SeedAnalysis:
    """Analyse every seed and the seed-averaged run with the same parameters."""
    per_seed = [analyze_saturation(r, **kwargs) for r in runs]
    return SeedAnalysis(per_seed, analyze_saturation(average_runs(runs), **kwargs))
