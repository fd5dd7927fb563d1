"""Write a run's series in the tidy ``step,metric,value`` form.

The layout is the one of the shared reference CSVs (``tests/data/real-logs/reference``), so any
source can be converted and compared with them:

* metrics ``train_reward``; held-out series (below); then ``entropy``, ``response_length``,
  ``kl`` when present;
* rows ordered by step, and within a step in that metric order;
* values in ``%g`` form (6 significant digits, ``1`` rather than ``1.0``).

Held-out names. Several held-out series are written as ``heldout_acc/<name>`` each, so every
benchmark keeps its name. A single series is written as ``heldout_acc`` by default, the layout
of the reference CSVs (whose single held-out series, e.g. verl's ``openai/gsm8k``, is
``heldout_acc``); ``heldout_names=True`` (``satmon export --heldout-names``) writes it as
``heldout_acc/<name>`` too, unless its name is ``heldout_acc`` itself. Either reads back with
the tidy preset: ``heldout_acc`` as the series ``heldout_acc``, ``heldout_acc/<name>`` as
``<name>``.

Sample sizes. A held-out series with a known sample size also gets the rows
``<held-out metric>/n`` (the size, at each evaluated step), which the readers attach back as
``HeldoutSeries.sample_size`` (and never read as a held-out series of their own). Logs that do
not say the size (the reference CSVs' sources) get no such rows.

All metrics. ``all_metrics=True`` (``--all-metrics``) writes, after the canonical series, every
other auxiliary series the run holds under its own name: with a run read by
``read_run(..., all_metrics=True)``, that is every other numeric key of the original log as
read (``loss``, ``actor/pg_loss``, ...), in sorted order. The keys mapped to the canonical
series are written under their canonical names only (``run.metadata["keys"]`` says which).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from satmon.analysis.escape import csv_cell
from satmon.run import TRAIN_REWARD, Run

EXPORT_AUX = ("entropy", "response_length", "kl")
HELDOUT_METRIC = "heldout_acc"
SIZE_SUFFIX = "/n"


def format_value(value: float) -> str:
    """A value as the reference CSVs print it (``%g``)."""
    return f"{value:g}"


def heldout_metric_name(name: str, *, single: bool, heldout_names: bool = False) -> str:
    """The tidy metric a held-out series named ``name`` is written as.

    >>> heldout_metric_name("openai/gsm8k", single=True)
    'heldout_acc'
    >>> heldout_metric_name("openai/gsm8k", single=True, heldout_names=True)
    'heldout_acc/openai/gsm8k'
    >>> heldout_metric_name("heldout_acc", single=False)
    'heldout_acc'
    """
    if name == HELDOUT_METRIC or (single and not heldout_names):
        return HELDOUT_METRIC
    return f"{HELDOUT_METRIC}/{name}"


def export_metric_names(run: Run, *, aux: Sequence[str] = EXPORT_AUX,
                        heldout_names: bool = False,
                        all_metrics: bool = False) -> dict[str, Any]:
    """Which tidy metric each series of ``run`` is written as.

    Returns ``{"train_reward": ..., "heldout": {name: metric}, "aux": [...], "other":
    [...]}`` (``train_reward`` only when the run has one; ``other`` only with
    ``all_metrics``).
    """
    out: dict[str, Any] = {}
    if run.train_reward is not None:
        out["train_reward"] = TRAIN_REWARD
    single = len(run.heldout) == 1
    out["heldout"] = {name: heldout_metric_name(name, single=single,
                                                heldout_names=heldout_names)
                      for name in run.heldout}
    out["aux"] = [name for name in aux if name in run.aux]
    if all_metrics:
        taken = {TRAIN_REWARD, *out["heldout"].values(), *out["aux"]}
        taken |= {m + SIZE_SUFFIX for m in out["heldout"].values()}
        out["other"] = sorted(k for k in run.aux if k not in taken)
    return out


def tidy_rows(run: Run, *, aux: Sequence[str] = EXPORT_AUX, heldout_names: bool = False,
              all_metrics: bool = False) -> list[tuple[int, str, float]]:
    """``(step, metric, value)`` rows of the run, in the reference order.

    Parameters
    ----------
    run:
        The run to export.
    aux:
        Auxiliary series to include, in this order, when the run has them.
    heldout_names:
        Write a single held-out series as ``heldout_acc/<name>`` (see the module docstring).
    all_metrics:
        Also write every other auxiliary series under its own name, after those of ``aux``.
    """
    names = export_metric_names(run, aux=aux, heldout_names=heldout_names,
                                all_metrics=all_metrics)
    columns: list[tuple[str, Any, float | None]] = []
    if run.train_reward is not None:
        columns.append((TRAIN_REWARD, run.train_reward, None))
    for name, series in run.heldout.items():
        metric = names["heldout"][name]
        columns.append((metric, series, None))
        if series.sample_size is not None:
            columns.append((metric + SIZE_SUFFIX, series, float(series.sample_size)))
    columns += [(name, run.aux[name], None) for name in names["aux"]]
    columns += [(name, run.aux[name], None) for name in names.get("other", ())]
    rows = []
    for order, (metric, series, constant) in enumerate(columns):
        values = series.values.tolist() if constant is None else [constant] * len(series)
        rows += [(int(s), order, metric, float(v))
                 for s, v in zip(series.steps.tolist(), values)]
    rows.sort(key=lambda r: (r[0], r[1]))
    return [(step, metric, value) for step, _, metric, value in rows]


def tidy_csv_text(run: Run, *, aux: Sequence[str] = EXPORT_AUX, heldout_names: bool = False,
                  all_metrics: bool = False) -> str:
    """The tidy CSV of a run as text (``\\n`` line ends, header ``step,metric,value``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "metric", "value"])
    for step, metric, value in tidy_rows(run, aux=aux, heldout_names=heldout_names,
                                         all_metrics=all_metrics):
        writer.writerow([step, csv_cell(metric), format_value(value)])
    return buf.getvalue()


def write_tidy_csv(run: Run, path: str | os.PathLike, *, aux: Sequence[str] = EXPORT_AUX,
                   heldout_names: bool = False, all_metrics: bool = False) -> Path:
    """Write :func:`tidy_csv_text` to ``path`` (parent folders are created); return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tidy_csv_text(run, aux=aux, heldout_names=heldout_names,
                                 all_metrics=all_metrics), encoding="utf-8")
    return out
