"""CSV logs: tidy (``step,metric,value``) and wide (a ``step`` column plus one column per metric).

Cells are parsed as numbers; an empty cell means "not logged at this step" (wide CSVs leave the
held-out columns empty between evaluations), while ``nan`` / ``inf`` are kept so the cleaning
policy drops and reports them. Whole numbers are read as integers (a step keeps every digit).
A cell that is not a number stays text and raises a ReadError only if its column is one of the
series the run needs.

A header that names a column twice (``step,reward,reward``) raises a ReadError naming the column
and its positions: which of the two holds the metric is not something a reader can guess (a
plain ``csv`` reader would silently keep the last one). Rename or drop one of them.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from satmon.analysis.readers.errors import ReadError
from satmon.analysis.readers.metric_log import MetricLog

TIDY_COLUMNS = ("step", "metric", "value")
STEP_COLUMNS = ("step", "global_step", "_step", "Step")


def _cell(text: str) -> Any:
    text = text.strip()
    if text[:1].isdigit() or text[:1] in "+-":
        try:
            return int(text)
        except ValueError:  # not an integer, or more digits than int() accepts
            pass
    try:
        return float(text)
    except ValueError:
        return None if text.lower() in ("none", "null") else text


def header_of(text: str) -> list[str] | None:
    """The CSV header row if ``text`` starts like a CSV log with a step column, else None."""
    lines = text.lstrip("\ufeff")[:4096].splitlines()
    first = lines[0].strip() if lines else ""
    if "," not in first:
        return None
    columns = [c.strip() for c in next(csv.reader([first]))]
    if any(c in STEP_COLUMNS for c in columns):
        return columns
    return None


def is_tidy(columns: list[str]) -> bool:
    return set(TIDY_COLUMNS) <= set(columns)


def read_csv(text: str, *, source: str, tidy: bool | None = None) -> MetricLog:
    """Parse a tidy or wide CSV log (``tidy=None``: decide by the header)."""
    try:
        return _read_csv(text, source=source, tidy=tidy)
    except csv.Error as exc:
        raise ReadError(f"{source}: not a well-formed CSV file ({exc}).", source=source) from None


def _check_unique(columns: list[str], source: str) -> None:
    seen: dict[str, list[int]] = {}
    for i, col in enumerate(columns, start=1):
        seen.setdefault(col, []).append(i)
    repeated = {col: where for col, where in seen.items() if len(where) > 1}
    if repeated:
        what = "; ".join(f"{col!r} at columns {', '.join(map(str, where))}"
                         for col, where in repeated.items())
        raise ReadError(f"{source}: the CSV header names a column more than once ({what}); "
                        "which one holds the metric is ambiguous. Rename or drop the "
                        "duplicates.", source=source)


def _read_csv(text: str, *, source: str, tidy: bool | None) -> MetricLog:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        columns = [c.strip() for c in next(reader)]
    except StopIteration:
        raise ReadError(f"{source}: the CSV file is empty.", source=source) from None
    _check_unique(columns, source)
    if tidy is None:
        tidy = is_tidy(columns)
    mlog = MetricLog(source=source, format="tidy-csv" if tidy else "wide-csv")
    if tidy:
        if not is_tidy(columns):
            raise ReadError(f"{source}: a tidy CSV needs the columns {list(TIDY_COLUMNS)}; "
                             f"the header is {columns}.")
        i_step, i_metric, i_value = (columns.index(c) for c in TIDY_COLUMNS)
        for lineno, row in enumerate(reader, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) < len(columns):
                raise ReadError(f"{source}, line {lineno}: expected {len(columns)} columns "
                                 f"({','.join(columns)}), got {len(row)}: {row}. "
                                 "Is the file truncated?")
            mlog.add_record(_cell(row[i_step]), {row[i_metric].strip(): _cell(row[i_value])})
        return mlog

    step_col = next((c for c in STEP_COLUMNS if c in columns), None)
    if step_col is None:
        raise ReadError(f"{source}: a wide CSV needs a step column (one of "
                         f"{list(STEP_COLUMNS)}); the header is {columns}.")
    i_step = columns.index(step_col)
    for lineno, row in enumerate(reader, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(columns):
            raise ReadError(f"{source}, line {lineno}: expected {len(columns)} columns, got "
                             f"{len(row)}. Is the file truncated?")
        record = {col: _cell(cell) for j, (col, cell) in enumerate(zip(columns, row))
                  if j != i_step and cell.strip() != ""}
        mlog.add_record(_cell(row[i_step]), record)
    return mlog
