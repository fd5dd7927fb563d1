"""The run data model: one training run's reward, held-out and auxiliary series, cleaned.

Cleaning policy (applied by :func:`clean_series`, recorded in a :class:`CleaningReport`):

* **Non-finite values** (``None``, NaN, +/-inf) are dropped; their steps are recorded. A value
  that cannot be read as a number at all (a string, a list) raises ``TypeError``.
* **Steps** must be whole numbers >= 0 (``12`` and ``12.0`` are accepted, ``12.5`` and ``-1``
  raise ``ValueError``).
* **Repeated steps** (a resumed run logs steps again): the value logged *later* wins, because it
  comes from the run that continued; the overlapping steps are recorded.
* **Out-of-order steps** are sorted; the number of records that went backwards is recorded.
* **Gaps** (a step difference larger than the series' usual stride) are recorded, not filled.
* Values outside [0, 1] are kept: proxy rewards (self-certainty, majority vote with shaping)
  are unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from satmon.results import Result, format_number, json_safe, text_table

TRAIN_REWARD = "train_reward"


@dataclass(frozen=True)
class CleaningReport:
    """What :func:`clean_series` did to one series.

    Attributes
    ----------
    n_input: records received.
    n_kept: records kept after cleaning.
    non_finite_steps: steps whose value was None, NaN or infinite (dropped).
    duplicate_steps: steps logged more than once (the later value was kept).
    n_out_of_order: records whose step was lower than an earlier record's and not a repeat.
    gaps: ``(last_step_before, first_step_after)`` pairs where the stride was exceeded.
    stride: the usual step difference (median), or None with fewer than two steps.
    """

    n_input: int
    n_kept: int
    non_finite_steps: tuple[int, ...] = ()
    duplicate_steps: tuple[int, ...] = ()
    n_out_of_order: int = 0
    gaps: tuple[tuple[int, int], ...] = ()
    stride: int | None = None

    @property
    def changed(self) -> bool:
        """True when cleaning dropped, replaced or reordered anything."""
        return bool(self.non_finite_steps or self.duplicate_steps or self.n_out_of_order)

    def describe(self) -> str:
        """One line describing what was done, or ``"clean"``."""
        parts = []
        if self.non_finite_steps:
            parts.append(f"{len(self.non_finite_steps)} non-finite value(s) dropped"
                         f" (first at step {self.non_finite_steps[0]})")
        if self.duplicate_steps:
            parts.append(f"{len(self.duplicate_steps)} repeated step(s) "
                         f"{self.duplicate_steps[0]}..{self.duplicate_steps[-1]}: later values kept")
        if self.n_out_of_order:
            parts.append(f"{self.n_out_of_order} out-of-order record(s) sorted")
        if self.gaps:
            parts.append(f"{len(self.gaps)} gap(s) larger than the stride {self.stride}")
        return "; ".join(parts) if parts else "clean"

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "n_input": self.n_input,
            "n_kept": self.n_kept,
            "non_finite_steps": list(self.non_finite_steps),
            "duplicate_steps": list(self.duplicate_steps),
            "n_out_of_order": self.n_out_of_order,
            "gaps": [list(g) for g in self.gaps],
            "stride": self.stride,
        })


def _as_step(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or raw is None:
        raise TypeError(f"{where}: a step must be a whole number >= 0. Got {raw!r} instead.")
    try:
        f = float(raw)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: a step must be a whole number >= 0. Got {raw!r} ({type(raw).__name__})."
        ) from None
    if not math.isfinite(f) or not f.is_integer() or f < 0:
        raise ValueError(f"{where}: a step must be a whole number >= 0. Got {raw!r} instead.")
    return int(f)


def _as_value(raw: Any, where: str) -> float:
    if raw is None:
        return math.nan
    if isinstance(raw, bool):
        return float(raw)
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: a value must be a number or None. Got {raw!r} ({type(raw).__name__})."
        ) from None


def clean_series(
    steps: Iterable[Any], values: Iterable[Any], *, name: str = "series"
) -> tuple[np.ndarray, np.ndarray, CleaningReport]:
    """Clean one series by the module's policy.

    Parameters
    ----------
    steps, values:
        Equal-length sequences in the order they were logged.
    name:
        Used in error messages.

    Returns
    -------
    ``(steps, values, report)`` with ``steps`` strictly increasing int64 and ``values`` finite
    float64.

    Example
    -------
    >>> s, v, rep = clean_series([1, 2, 3, 2, 4, 5], [0.1, 0.2, 0.3, 0.25, 0.4, None])
    >>> s.tolist(), v.tolist()
    ([1, 2, 3, 4], [0.1, 0.25, 0.3, 0.4])
    >>> rep.duplicate_steps, rep.non_finite_steps
    ((2,), (5,))
    """
    steps = list(steps)
    values = list(values)
    if len(steps) != len(values):
        raise ValueError(
            f"Series '{name}' has {len(steps)} steps but {len(values)} values; they must pair up."
        )
    latest: dict[int, float] = {}
    non_finite: list[int] = []
    duplicates: set[int] = set()
    out_of_order = 0
    highest = -1
    for i, (raw_step, raw_value) in enumerate(zip(steps, values)):
        where = f"series '{name}', record {i}"
        step = _as_step(raw_step, where)
        value = _as_value(raw_value, where)
        if step in latest:
            duplicates.add(step)
        elif step < highest:
            out_of_order += 1
        highest = max(highest, step)
        # A repeated step replaces the earlier record even when the new value is non-finite:
        # the later log is the authoritative one, and a NaN there means "no value", not "keep
        # the stale one".
        latest[step] = value
    ordered = sorted(latest)
    kept_steps = [s for s in ordered if math.isfinite(latest[s])]
    non_finite = [s for s in ordered if not math.isfinite(latest[s])]
    s_arr = np.asarray(kept_steps, dtype=np.int64)
    v_arr = np.asarray([latest[s] for s in kept_steps], dtype=np.float64)
    stride = None
    gaps: list[tuple[int, int]] = []
    if len(ordered) >= 2:
        diffs = np.diff(np.asarray(ordered, dtype=np.int64))
        stride = int(np.median(diffs))
        gaps = [(int(ordered[i]), int(ordered[i + 1])) for i in np.nonzero(diffs > stride)[0]]
    report = CleaningReport(
        n_input=len(steps),
        n_kept=len(kept_steps),
        non_finite_steps=tuple(non_finite),
        duplicate_steps=tuple(sorted(duplicates)),
        n_out_of_order=out_of_order,
        gaps=tuple(gaps),
        stride=stride,
    )
    return s_arr, v_arr, report


@dataclass(frozen=True)
class Series:
    """A cleaned metric series: strictly increasing integer steps and finite values."""

    name: str
    steps: np.ndarray
    values: np.ndarray
    cleaning: CleaningReport | None = None

    @classmethod
    def from_raw(cls, name: str, steps: Iterable[Any], values: Iterable[Any]) -> "Series":
        """Clean raw logged values into a series (see the module docstring for the policy)."""
        s, v, report = clean_series(steps, values, name=name)
        return cls(name=name, steps=s, values=v, cleaning=report)

    def __post_init__(self) -> None:
        steps = np.asarray(self.steps, dtype=np.int64)
        values = np.asarray(self.values, dtype=np.float64)
        if steps.ndim != 1 or steps.shape != values.shape:
            raise ValueError(
                f"Series '{self.name}' needs 1-d steps and values of equal length; "
                f"got shapes {steps.shape} and {values.shape}."
            )
        if steps.size and (np.any(np.diff(steps) <= 0) or steps[0] < 0):
            raise ValueError(
                f"Series '{self.name}' needs strictly increasing steps >= 0; "
                "build it with Series.from_raw to clean repeated or unordered steps."
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"Series '{self.name}' has non-finite values; build it with Series.from_raw "
                "to drop them by the documented policy."
            )
        steps.setflags(write=False)
        values.setflags(write=False)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.steps.size)

    def value_at(self, step: int) -> float:
        """The value logged at exactly ``step`` (KeyError if that step has no value)."""
        i = np.searchsorted(self.steps, step)
        if i < self.steps.size and self.steps[i] == step:
            return float(self.values[i])
        raise KeyError(f"Series '{self.name}' has no value at step {step}.")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps.tolist(), "values": self.values.tolist()}


@dataclass(frozen=True)
class HeldoutSeries(Series):
    """A held-out accuracy series, with the number of held-out samples behind each value.

    ``sample_size`` (when known) lets the online engine use the binomial noise of the held-out
    estimate; it is None when the log does not say.
    """

    sample_size: int | None = None

    @classmethod
    def from_raw(  # type: ignore[override]
        cls, name: str, steps: Iterable[Any], values: Iterable[Any],
        sample_size: int | None = None,
    ) -> "HeldoutSeries":
        """Clean raw logged held-out values into a series."""
        s, v, report = clean_series(steps, values, name=name)
        return cls(name=name, steps=s, values=v, cleaning=report, sample_size=sample_size)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sample_size is not None and (
            isinstance(self.sample_size, bool) or int(self.sample_size) != self.sample_size
            or self.sample_size <= 0
        ):
            raise ValueError(
                f"The 'sample_size' of held-out series '{self.name}' must be an int > 0 or None. "
                f"Got {self.sample_size!r} instead."
            )

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["sample_size"] = self.sample_size
        return d


SeriesInput = Series | tuple[Sequence[Any], Sequence[Any]]


class Run(Result):
    """One training run: training reward, held-out series, auxiliary series and metadata.

    Parameters
    ----------
    train_reward:
        The per-step mean training reward, a :class:`Series` or a ``(steps, values)`` pair
        (cleaned by the module's policy). May be None for an eval-only log.
    heldout:
        ``{benchmark: series}``; a value may be a :class:`HeldoutSeries`, a ``(steps, values)``
        pair or a ``(steps, values, sample_size)`` triple.
    aux:
        ``{name: series}`` of auxiliary signals (``entropy``, ``response_length``, ``kl``,
        ``frac_reward_zero_std`` ...).
    metadata:
        Free-form JSON-safe facts about the run (model, setting, seed, source file ...).
    name:
        A label for tables and plots.

    Example
    -------
    >>> run = Run(train_reward=([1, 2, 3], [0.1, 0.5, 0.9]),
    ...           heldout={"gsm8k": ([0, 2], [0.2, 0.4], 500)}, name="demo")
    >>> run.last_step, run.heldout["gsm8k"].sample_size
    (3, 500)
    """

    def __init__(
        self,
        train_reward: SeriesInput | None = None,
        *,
        heldout: Mapping[str, Any] | None = None,
        aux: Mapping[str, SeriesInput] | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or str((metadata or {}).get("name", "run"))
        self.train_reward = (
            None if train_reward is None else _to_series(TRAIN_REWARD, train_reward, Series)
        )
        self.heldout: dict[str, HeldoutSeries] = {
            str(k): _to_series(str(k), v, HeldoutSeries) for k, v in (heldout or {}).items()
        }
        self.aux: dict[str, Series] = {
            str(k): _to_series(str(k), v, Series) for k, v in (aux or {}).items()
        }
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def last_step(self) -> int | None:
        """T: the last step with a finite training reward (None without one)."""
        if self.train_reward is None or len(self.train_reward) == 0:
            return None
        return int(self.train_reward.steps[-1])

    @property
    def heldout_names(self) -> list[str]:
        return list(self.heldout)

    def require_train_reward(self) -> Series:
        """The training-reward series, or a ValueError saying what the run does have."""
        if self.train_reward is None or len(self.train_reward) == 0:
            raise ValueError(
                f"Run '{self.name}' has no finite training reward values. Series present: "
                f"held-out {self.heldout_names or 'none'}, auxiliary {list(self.aux) or 'none'}."
            )
        return self.train_reward

    def require_heldout(self, name: str) -> HeldoutSeries:
        """One held-out series by name, or a KeyError listing the names that exist.

        The error (a :class:`satmon.keys.UnknownKeyError`) suggests close names.
        """
        try:
            return self.heldout[name]
        except KeyError:
            from satmon.keys import UnknownKeyError, close_matches, did_you_mean

            raise UnknownKeyError(
                f"Run '{self.name}' has no held-out series '{name}'. "
                f"Available: {self.heldout_names or 'none'}.{did_you_mean(name, self.heldout)}",
                key=name, available=self.heldout_names,
                suggestions=close_matches(name, self.heldout)) from None

    def cleaning_reports(self) -> dict[str, CleaningReport]:
        """The cleaning report of every series that has one, by series name."""
        out: dict[str, CleaningReport] = {}
        for s in [self.train_reward, *self.heldout.values(), *self.aux.values()]:
            if s is not None and s.cleaning is not None:
                out[s.name] = s.cleaning
        return out

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "name": self.name,
            "metadata": self.metadata,
            "train_reward": None if self.train_reward is None else self.train_reward.to_dict(),
            "heldout": {k: v.to_dict() for k, v in self.heldout.items()},
            "aux": {k: v.to_dict() for k, v in self.aux.items()},
            "cleaning": {k: v.to_dict() for k, v in self.cleaning_reports().items()},
        })

    def summary(self) -> str:
        rows = []
        series = [self.train_reward, *self.heldout.values(), *self.aux.values()]
        for s in series:
            if s is None:
                continue
            kind = ("train" if s is self.train_reward
                    else "held-out" if isinstance(s, HeldoutSeries) else "aux")
            rows.append([
                s.name, kind, str(len(s)),
                f"{s.steps[0]}..{s.steps[-1]}" if len(s) else "-",
                format_number(float(s.values[-1])) if len(s) else "-",
                s.cleaning.describe() if s.cleaning else "clean",
            ])
        head = f"Run '{self.name}' (T = {format_number(self.last_step)})"
        return head + "\n" + text_table(
            ["series", "kind", "points", "steps", "last", "cleaning"], rows)

    def __repr__(self) -> str:
        return (f"Run(name={self.name!r}, T={self.last_step}, heldout={self.heldout_names}, "
                f"aux={list(self.aux)})")


def _to_series(name: str, value: Any, cls: type[Series]) -> Any:
    if isinstance(value, cls):
        return value
    if isinstance(value, Series):
        # A plain Series given where a held-out one is expected: keep its data.
        if cls is HeldoutSeries:
            return HeldoutSeries(name=name, steps=value.steps, values=value.values,
                                 cleaning=value.cleaning)
        return Series(name=name, steps=value.steps, values=value.values, cleaning=value.cleaning)
    if isinstance(value, tuple) and len(value) in (2, 3):
        if len(value) == 3:
            if cls is not HeldoutSeries:
                raise ValueError(
                    f"Series '{name}' was given as a 3-tuple; only held-out series take a "
                    "sample size. Pass (steps, values)."
                )
            return HeldoutSeries.from_raw(name, value[0], value[1], sample_size=value[2])
        return cls.from_raw(name, value[0], value[1])
    raise TypeError(
        f"Series '{name}' must be a Series or a (steps, values) tuple"
        f"{' or (steps, values, sample_size)' if cls is HeldoutSeries else ''}. "
        f"Got {type(value).__name__} instead."
    )
