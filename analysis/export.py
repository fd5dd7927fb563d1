"""Write a run's series in the tidy ``step,metric,value`` form.

The layout is the one of the shared reference CSVs (``real-logs/reference``), so any source can
be converted and compared with them:

* metrics ``train_reward``; ``heldout_acc`` when the run has one held-out series, else
  ``heldout_acc/<name>`` per series; then ``entropy``, ``response_length``, ``kl`` when present;
* rows ordered by step, and within a step in that metric order;
* values in ``%g`` form (6 significant digits, ``1`` rather than ``1.0``).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from satmon.analysis.escape import csv_cell
from satmon.run import TRAIN_REWARD, Run

EXPORT_AUX = ("entropy", "response_length", "kl")
HELDOUT_METRIC = "heldout_acc"


def format_value(value: float) -> str:
    """A value as the reference CSVs print it (``%g``)."""
    return f"{value:g}"


def tidy_rows(run: Run, *, aux: Sequence[str] = EXPORT_AUX) -> list[tuple[int, str, float]]:
    """``(step, metric, value)`` rows of the run, in the reference order.

    Parameters
    ----------
    run:
        The run to export.
    aux:
        Auxiliary series to include, in this order, when the run has them.
    """
    columns = []
    if run.train_reward is not None:
        columns.append((TRAIN_REWARD, run.train_reward))
    single = len(run.heldout) == 1
    for name, series in run.heldout.items():
        columns.append((HELDOUT_METRIC if single else f"{HELDOUT_METRIC}/{name}", series))
    columns += [(name, run.aux[name]) for name in aux if name in run.aux]
    rows = []
    for order, (metric, series) in enumerate(columns):
        rows += [(int(s), order, metric, float(v))
                 for s, v in zip(series.steps.tolist(), series.values.tolist())]
    rows.sort(key=lambda r: (r[0], r[1]))
    return [(step, metric, value) for step, _, metric, value in rows]


def tidy_csv_text(run: Run, *, aux: Sequence[str] = EXPORT_AUX) -> str:
    """The tidy CSV of a run as text (``\\n`` line ends, header ``step,metric,value``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "metric", "value"])
    for step, metric, value in tidy_rows(run, aux=aux):
        writer.writerow([step, csv_cell(metric), format_value(value)])
    return buf.getvalue()


def write_tidy_csv(run: Run, path: str | os.PathLike, *,
                   aux: Sequence[str] = EXPORT_AUX) -> Path:
    """Write :func:`tidy_csv_text` to ``path`` (parent folders are created); return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tidy_csv_text(run, aux=aux), encoding="utf-8")
    return out
