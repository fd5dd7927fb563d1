"""Metadata a user attaches to runs: ``KEY=VALUE`` assignments and a metadata table file.

Grids and report columns index runs by metadata (``--grid-rows model --grid-cols setting``).
The readers fill in what a source says (a lab run's ``run.json``, MLflow params and tags, verl
and TRL config lines in console logs); these helpers add the rest from the command line:

``--meta KEY=VALUE`` (:func:`parse_assignments`)
    Repeatable; applies to every run the command reads. A value that reads as an integer or a
    float becomes one (``seed=3`` sorts as a number), anything else stays text.
``--meta-file FILE`` (:func:`read_metadata_table`)
    A CSV file with a header, or a JSON file (a list of objects, or ``{run name: {key:
    value}}``): one row per run, the ``run`` column naming the run (as the report's ``run``
    column shows it), the other columns its metadata. Empty CSV cells set nothing.

Precedence: what the source says, then the table, then ``--meta`` (the last word wins).
:func:`attach_metadata` applies both and returns the table rows that matched no run, so the
CLI can say so. :func:`missing_metadata_error` is the one error for a metadata key a run lacks
(plots' grids, the report's grid): it lists the keys that exist and suggests close matches.

Example
-------
>>> from satmon import Run
>>> runs = [Run(([1, 2], [0.1, 0.2]), name="a"), Run(([1, 2], [0.1, 0.3]), name="b")]
>>> attach_metadata(runs, parse_assignments(["model=qwen", "seed=3"]), {"a": {"setting": "n8"}})
[]
>>> runs[0].metadata, runs[1].metadata["seed"]
({'setting': 'n8', 'model': 'qwen', 'seed': 3}, 3)
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from satmon.keys import UnknownKeyError, close_matches

RUN_COLUMN = "run"


def parse_value(text: str) -> Any:
    """A metadata value from text: an int or a float when it reads as one, else the text."""
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        number = float(stripped)
    except ValueError:
        return stripped
    # 'nan' and 'inf' are names more often than numbers here.
    return number if number == number and abs(number) != float("inf") else stripped


def parse_assignments(items: Iterable[str] | None) -> dict[str, Any]:
    """``["model=qwen", "seed=3"]`` -> ``{"model": "qwen", "seed": 3}``.

    Raises ValueError for an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--meta takes KEY=VALUE (e.g. --meta model=qwen2.5-1.5b). "
                             f"Got {item!r} instead.")
        out[key.strip()] = parse_value(value)
    return out


def read_metadata_table(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a metadata table (CSV or JSON) into ``{run name: {key: value}}``.

    Raises FileNotFoundError for a missing file and ValueError for a table without a ``run``
    column, a row without a run name, or a run named twice.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such metadata file.")
    text = p.read_text(encoding="utf-8-sig")
    if text.lstrip()[:1] in ("[", "{"):
        rows = _json_rows(text, p)
    else:
        rows = _csv_rows(text, p)
    table: dict[str, dict[str, Any]] = {}
    for i, (name, values) in enumerate(rows, start=1):
        if name in table:
            raise ValueError(f"{p}: run {name!r} appears twice (row {i}); one row per run.")
        table[name] = values
    return table


def _csv_rows(text: str, p: Path) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text))
    header = [c.strip() for c in next(reader, [])]
    if RUN_COLUMN not in header:
        raise ValueError(f"{p}: a metadata table needs a '{RUN_COLUMN}' column naming each "
                         f"run; the header is {header}.")
    i_run = header.index(RUN_COLUMN)
    rows = []
    for lineno, row in enumerate(reader, start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{p}, line {lineno}: expected {len(header)} columns "
                             f"({','.join(header)}), got {len(row)}.")
        name = row[i_run].strip()
        if not name:
            raise ValueError(f"{p}, line {lineno}: the '{RUN_COLUMN}' cell is empty.")
        rows.append((name, {k: parse_value(v) for j, (k, v) in enumerate(zip(header, row))
                            if j != i_run and v.strip() != ""}))
    return rows


def _json_rows(text: str, p: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc}).") from None
    if isinstance(doc, Mapping):
        items = list(doc.items())
        if not all(isinstance(v, Mapping) for _, v in items):
            raise ValueError(f"{p}: a JSON metadata table is a list of objects with a "
                             f"'{RUN_COLUMN}' key, or {{run name: {{key: value}}}}.")
        return [(str(k), dict(v)) for k, v in items]
    if not isinstance(doc, list) or not all(isinstance(r, Mapping) for r in doc):
        raise ValueError(f"{p}: a JSON metadata table is a list of objects with a "
                         f"'{RUN_COLUMN}' key, or {{run name: {{key: value}}}}.")
    rows = []
    for i, row in enumerate(doc, start=1):
        if not str(row.get(RUN_COLUMN, "")).strip():
            raise ValueError(f"{p}: object {i} has no '{RUN_COLUMN}' naming its run.")
        rows.append((str(row[RUN_COLUMN]).strip(),
                     {str(k): v for k, v in row.items() if k != RUN_COLUMN}))
    return rows


def attach_metadata(runs: Sequence[Any], assignments: Mapping[str, Any] | None = None,
                    table: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Add a table's rows (matched by run name) and then ``assignments`` to every run.

    Returns the table's run names that matched no run (sorted).
    """
    table = table or {}
    names = {r.name for r in runs}
    for run in runs:
        run.metadata.update(table.get(run.name, {}))
        run.metadata.update(assignments or {})
    return sorted(set(table) - names)


def missing_metadata_error(run: Any, key: str) -> UnknownKeyError:
    """The KeyError for metadata key ``key`` that ``run`` lacks: what exists, close matches.

    >>> from satmon import Run
    >>> err = missing_metadata_error(Run(([1], [0.1]), name="r", metadata={"model": "q"}), "modle")
    >>> print(err)
    Run 'r' has no metadata key 'modle'. Keys: ['model'] (or 'name'). Did you mean 'model'? Attach metadata with --meta KEY=VALUE or --meta-file FILE (satmon.analysis.readers.run_metadata).
    """
    keys = sorted(str(k) for k in run.metadata)
    suggestions = close_matches(key, [*keys, "name"])
    hint = (" Did you mean " + " or ".join(repr(m) for m in suggestions) + "?"
            if suggestions else "")
    return UnknownKeyError(
        f"Run '{run.name}' has no metadata key '{key}'. Keys: {keys or 'none'} (or 'name')."
        f"{hint} Attach metadata with --meta KEY=VALUE or --meta-file FILE "
        "(satmon.analysis.readers.run_metadata).",
        key=key, available=[*keys, "name"], suggestions=suggestions)


def check_metadata_keys(runs: Sequence[Any], *keys: str | None) -> None:
    """Raise :func:`missing_metadata_error` for the first run lacking one of ``keys``.

    ``None`` keys and ``"name"`` (every run's name) are always fine.
    """
    for key in keys:
        if key is None or key == "name":
            continue
        for run in runs:
            if key not in run.metadata:
                raise missing_metadata_error(run, key)
