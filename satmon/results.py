"""Shared behaviour of satmon's result objects: text summary, notebook HTML, JSON-safe dict."""

from __future__ import annotations

import html
from abc import ABC, abstractmethod
import math
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats into JSON-safe Python values.

    Non-finite floats become ``None`` (JSON has no NaN or infinity); callers that need to tell
    "never saturated" from "unknown" carry an explicit boolean next to the value.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def format_number(value: float | None, digits: int = 4) -> str:
    """Format a number for a summary table: integers plainly, non-finite values as words."""
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    f = float(value)
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return "never" if f > 0 else "-inf"
    if f.is_integer() and abs(f) < 1e12:
        return str(int(f))
    return f"{f:.{digits}g}"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Render rows of strings as a fixed-width text table."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """Render rows of strings as an HTML table."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Result(ABC):
    """Base class for result objects.

    Subclasses implement :meth:`to_dict` and :meth:`summary`; printing a result shows its
    summary and notebooks render :meth:`_repr_html_`.
    """

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-safe primitives."""

    @abstractmethod
    def summary(self) -> str:
        """Return a human-readable text summary."""

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.summary())}</pre>"

    def __str__(self) -> str:
        return self.summary()
