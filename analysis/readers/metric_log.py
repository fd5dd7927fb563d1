"""The raw form every reader produces, and the one place it becomes a :class:`satmon.Run`.

A reader only has to say, in logged order, which value each metric key had at which step
(:class:`MetricLog`). :func:`build_run` then maps keys with a :class:`satmon.keys.KeyMap` and
cleans every series by the core policy (repeated steps: the later value wins; NaN, inf and None
dropped; both recorded in each series' ``cleaning`` report and in the run's metadata), so all
formats behave the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

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
                heldout_keys: Any = None, aux_keys: Any = None) -> KeyMap:
    """A :class:`KeyMap` from the reader options (a single held-out key may be a string)."""
    if isinstance(heldout_keys, (list, tuple)) and not heldout_keys:
        heldout_keys = None
    return KeyMap(preset=preset, train_key=train_key, heldout_keys=heldout_keys,
                  aux_keys=aux_keys)


def build_run(mlog: MetricLog, keymap: KeyMap, *, name: str | None,
              default_name: str) -> Run:
    """Turn a :class:`MetricLog` into a cleaned :class:`satmon.Run`.

    Raises
    ------
    ValueError
        When the log holds no metric values at all (empty or unrecognised content).
    KeyError
        When a configured key is missing or no training reward is found; the message lists
        the keys the log holds.
    """
    if len(mlog) == 0:
        raise ValueError(f"{mlog.source}: no metric values found in this {mlog.format} log "
                         "(it is empty or holds no step records).")
    try:
        resolved = keymap.resolve(mlog.keys(), strict=True, require_train=True)
    except KeyError as exc:
        raise KeyError(f"{mlog.source}: {exc.args[0]}") from None
    train_steps, train_values = mlog.history(resolved.train_key)
    train = Series.from_raw(TRAIN_REWARD, train_steps, train_values)
    heldout = {}
    for bench, key in resolved.heldout:
        steps, values = mlog.history(key)
        # Logs name the benchmark, not how many held-out samples stand behind each value, so
        # the sample size stays unknown (None) rather than guessed.
        heldout[bench] = HeldoutSeries.from_raw(bench, steps, values, sample_size=None)
    aux = {}
    for canonical, key in resolved.aux:
        steps, values = mlog.history(key)
        aux[canonical] = Series.from_raw(canonical, steps, values)
    metadata = {
        "source": mlog.source,
        "format": mlog.format,
        "preset": resolved.preset,
        "keys": resolved.to_dict(),
        "n_records": mlog.n_records,
        **mlog.metadata,
    }
    run = Run(train_reward=train, heldout=heldout, aux=aux, metadata=metadata,
              name=name or default_name)
    changed = {k: r.describe() for k, r in run.cleaning_reports().items() if r.changed}
    run.metadata["cleaning"] = changed
    for series_name, what in changed.items():
        log.info("%s: series %r: %s", mlog.source, series_name, what)
    return run


def first_line_repr(lines: Iterable[str], limit: int = 80) -> str:
    """The first non-blank line, shortened, for error messages."""
    for line in lines:
        if line.strip():
            text = line.strip()
            return repr(text if len(text) <= limit else text[:limit] + "...")
    return "''"
