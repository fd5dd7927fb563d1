"""The raw form every reader produces, and the one place it becomes a :class:`satmon.Run`.

A reader only has to say, in logged order, which value each metric key had at which step
(:class:`MetricLog`). :func:`build_run` then maps keys with a :class:`satmon.keys.KeyMap` and
cleans every series by the core policy (repeated steps: the later value wins; NaN, inf and None
dropped; both recorded in each series' ``cleaning`` report and in the run's metadata), so all
formats behave the same way.

Held-out sample sizes are attached here too, for every format: a held-out series' size series
(``<key>/n``, or ``satmon/heldout/<name>/n`` that satmon's callback writes to the Trainer's
``log_history`` and to MLflow; see :mod:`satmon.keys`) gives ``HeldoutSeries.sample_size``
(the smallest value when it varies, all values then listed in
``metadata["heldout_sample_sizes"]``); else a size the reader knows from the source
(:attr:`MetricLog.sample_sizes`, e.g. a lab run's ``run.json``); else None (unknown, never
guessed). With ``KeyMap(all_keys=True)`` every other numeric key becomes an auxiliary series
under its own key.

Problems the readers work around instead of failing (a TensorBoard file that stops at a corrupt
or cut-off record, a partial last JSONL line, TRL log dicts whose steps cannot be told, text that
looks like a log dict but does not parse) are never silent: each is logged as a warning and kept
as one sentence in ``run.metadata["read_warnings"]`` (absent when the read was clean);
``read_run(..., strict=True)`` and the CLI's ``--strict`` refuse such runs with a
:class:`~satmon.analysis.readers.errors.ReadError`.

Before cleaning, every needed series is range-checked: a step must be at most ``2**63 - 1024``
(the largest int64 that survives the cleaning's float conversion) and a value must fit a float
(an integer of 1024 bits or more does not);
anything else raises a ReadError that names the file, the series and the record.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from satmon.analysis.readers.errors import MissingKeyError, ReadError
from satmon.keys import KeyMap
from satmon.run import HeldoutSeries, Run, Series, TRAIN_REWARD

log = logging.getLogger("satmon.analysis.readers")


class MetricLog:
    """Per-key ``(steps, values)`` histories in the order they were logged.

    Values are stored raw (numbers, None, or whatever the file held); they are checked when a
    key is turned into a series, so a stray string in a metric nobody asked for does no harm
    while one in the training reward raises a TypeError that names the series.
    """

    def __init__(self, *, source: str, format: str) -> None:
        self.source = source
        self.format = format
        self.metadata: dict[str, Any] = {}
        self._steps: dict[str, list[Any]] = {}
        self._values: dict[str, list[Any]] = {}
        self.n_records = 0
        self.read_warnings: list[str] = []
        # What a reader knows beyond the logged values (a lab run's run.json): the run's name,
        # held-out sample sizes by held-out key (used when the log has no size series), and
        # keys to keep as auxiliary series under their own names.
        self.default_name: str | None = None
        self.sample_sizes: dict[str, int] = {}
        self.extra_aux: tuple[str, ...] = ()

    def warn(self, problem: str) -> None:
        """Report something the reader worked around: a logged warning and a metadata entry."""
        self.read_warnings.append(problem)
        # Marked, so the CLI can print it once, as a note, instead of also logging it.
        log.warning("%s: %s", self.source, problem, extra={"read_warning": True})

    def add(self, step: Any, key: str, value: Any) -> None:
        """Append one logged value."""
        if key not in self._steps:
            self._steps[key] = []
            self._values[key] = []
        self._steps[key].append(step)
        self._values[key].append(value)

    def add_record(self, step: Any, values: Mapping[str, Any]) -> None:
        """Append every key of one log record (a console line, a JSONL line, a log dict)."""
        self.n_records += 1
        for key, value in values.items():
            self.add(step, str(key), value)

    def keys(self) -> list[str]:
        return list(self._steps)

    def history(self, key: str) -> tuple[list[Any], list[Any]]:
        return self._steps[key], self._values[key]

    def __len__(self) -> int:
        return sum(len(v) for v in self._steps.values())


def keymap_from(*, preset: str = "auto", train_key: str | None = None,
                heldout_keys: Any = None, aux_keys: Any = None,
                all_metrics: bool = False) -> KeyMap:
    """A :class:`KeyMap` from the reader options (a single held-out key may be a string)."""
    if isinstance(heldout_keys, (list, tuple)) and not heldout_keys:
        heldout_keys = None
    return KeyMap(preset=preset, train_key=train_key, heldout_keys=heldout_keys,
                  aux_keys=aux_keys, all_keys=bool(all_metrics))


def build_run(mlog: MetricLog, keymap: KeyMap, *, name: str | None,
              default_name: str) -> Run:
    """Turn a :class:`MetricLog` into a cleaned :class:`satmon.Run`.

    The run is named ``name``, else the reader's :attr:`MetricLog.default_name` (a lab run's
    ``run.json`` name), else ``default_name`` (from the file or folder). Held-out series get
    their sample sizes as the module docstring says.

    Raises
    ------
    ReadError
        When the log holds no metric values at all (empty or unrecognised content), or a value
        of a needed series is not a number, or a step or value is out of range.
    MissingKeyError
        (a ReadError and a KeyError) When a configured key is missing or no training reward
        is found; the message lists the keys the log holds.
    """
    if len(mlog) == 0:
        problems = "".join(f" {w}" for w in mlog.read_warnings)
        raise ReadError(f"{mlog.source}: no metric values found in this {mlog.format} log "
                        f"(it is empty or holds no step records).{problems}",
                        source=mlog.source)
    try:
        resolved = keymap.resolve(mlog.keys(), strict=True, require_train=True)
    except KeyError as exc:
        raise MissingKeyError(f"{mlog.source}: {exc.args[0]}", source=mlog.source,
                              key=getattr(exc, "key", None),
                              available=getattr(exc, "available", mlog.keys()),
                              suggestions=getattr(exc, "suggestions", ())) from None
    train = _series(Series, mlog, TRAIN_REWARD, resolved.train_key)
    size_keys = dict(resolved.heldout_sizes)
    heldout = {}
    size_notes: dict[str, list[int]] = {}
    for bench, key in resolved.heldout:
        # Most logs name the benchmark but not how many samples stand behind each value: the
        # size is then unknown (None) rather than guessed. satmon's own logs carry it.
        size, seen = _sample_size(mlog, size_keys.get(bench))
        if size is None:
            size = mlog.sample_sizes.get(key)
        if len(seen) > 1:
            size_notes[bench] = seen
        heldout[bench] = _series(HeldoutSeries, mlog, bench, key, sample_size=size)
    aux = {}
    for canonical, key in resolved.aux:
        aux[canonical] = _series(Series, mlog, canonical, key)
    used = resolved.used_keys()
    for key in mlog.extra_aux:
        if key in mlog.keys() and key not in used and key not in aux:
            aux[key] = _series(Series, mlog, key, key)
    skipped_keys: list[str] = []
    if keymap.all_keys:
        for key in mlog.keys():
            if key in used or key in aux:
                continue
            extra = _numeric_series(mlog, key)
            if extra is None:
                skipped_keys.append(key)
            else:
                aux[key] = extra
    metadata = {
        "source": mlog.source,
        "format": mlog.format,
        "preset": resolved.preset,
        "keys": resolved.to_dict(),
        "n_records": mlog.n_records,
        **mlog.metadata,
    }
    if size_notes:
        # One size per series: the smallest, so the held-out noise is never understated.
        metadata["heldout_sample_sizes"] = size_notes
        log.info("%s: held-out sample sizes vary (%s); the smallest is used", mlog.source,
                 size_notes)
    if skipped_keys:
        metadata["non_numeric_keys"] = skipped_keys
    if mlog.read_warnings:
        metadata["read_warnings"] = list(mlog.read_warnings)
    run = Run(train_reward=train, heldout=heldout, aux=aux, metadata=metadata,
              name=name or mlog.default_name or default_name)
    changed = {k: r.describe() for k, r in run.cleaning_reports().items() if r.changed}
    run.metadata["cleaning"] = changed
    for series_name, what in changed.items():
        log.info("%s: series %r: %s", mlog.source, series_name, what)
    return run


# Steps are stored as int64 and pass through a float on the way (satmon.run's cleaning), so the
# largest that survives is the largest double below 2**63.
_MAX_STEP = 2 ** 63 - 1024


def _describe_number(x: Any) -> str:
    if isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > 64:
        return f"an integer of {x.bit_length()} bits"
    return repr(x)


def _range_problem(step: Any, value: Any) -> str | None:
    """Why a raw ``(step, value)`` cannot be stored (None when it can)."""
    if isinstance(step, (int, float)) and not isinstance(step, bool) and \
            not (isinstance(step, float) and math.isnan(step)) and abs(step) > _MAX_STEP:
        return (f"the step ({_describe_number(step)}) is out of range: steps are int64, "
                f"at most {_MAX_STEP} (2**63 - 1024)")
    if isinstance(value, int) and not isinstance(value, bool) and \
            abs(value) > sys.float_info.max:
        return (f"the value ({_describe_number(value)}) is out of range: it does not fit a "
                f"float (max {sys.float_info.max:.3g})")
    return None


def _series(cls: type, mlog: MetricLog, name: str, key: str, **extra: Any) -> Any:
    """One cleaned series of the run, with input problems raised as ReadError."""
    steps, values = mlog.history(key)
    for i, (step, value) in enumerate(zip(steps, values)):
        problem = _range_problem(step, value)
        if problem is not None:
            raise ReadError(f"{mlog.source}: series '{name}' (key '{key}'), record {i}: "
                            f"{problem}.", source=mlog.source)
    try:
        return cls.from_raw(name, steps, values, **extra)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ReadError(f"{mlog.source}: {exc} (key '{key}')", source=mlog.source) from None


def _sample_size(mlog: MetricLog, key: str | None) -> tuple[int | None, list[int]]:
    """The sample size a size series holds (the smallest when it varies) and all it holds.

    Values that are not whole numbers >= 1 are ignored: a size series is written by satmon,
    and a stray value must not make the whole run unreadable.
    """
    if key is None:
        return None, []
    _, values = mlog.history(key)
    sizes = sorted({int(v) for v in values
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) and v >= 1 and float(v).is_integer()})
    return (sizes[0] if sizes else None), sizes


def _numeric_series(mlog: MetricLog, key: str) -> Series | None:
    """Key ``key`` as a cleaned series, or None when it holds no numbers (text, flags)."""
    steps, values = mlog.history(key)
    if not any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    try:
        for step, value in zip(steps, values):
            if _range_problem(step, value) is not None:
                return None
        return Series.from_raw(key, steps, values)
    except (TypeError, ValueError, OverflowError):
        return None


def first_line_repr(lines: Iterable[str], limit: int = 80) -> str:
    """The first non-blank line, shortened, for error messages."""
    for line in lines:
        if line.strip():
            text = line.strip()
            return repr(text if len(text) <= limit else text[:limit] + "...")
    return "''"
