"""Making names from log files inert in every output format.

Run names, metric keys and benchmark names come from files satmon did not write, so each
output format neutralises what its readers would interpret:

* Markdown: ``&``, ``<`` and ``>`` become HTML entities (no raw HTML reaches a renderer), the
  characters that start emphasis, links, images, code and tables are backslash-escaped, and
  line breaks become spaces (a cell stays one cell).
* CSV: a text cell that a spreadsheet would read as a formula (first character ``=``, ``+``,
  ``-``, ``@``, tab or carriage return) gets a leading ``'``, as OWASP recommends; numbers,
  including negative ones, are left alone.
* Terminal text: control characters (ANSI escape sequences included) are removed.

HTML output uses :func:`html.escape` (``report_html``).
"""

from __future__ import annotations

import re
from typing import Any

_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~!#])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def markdown_text(text: Any) -> str:
    """``text`` as inert Markdown inline text (safe inside a table cell)."""
    s = "".join(_MD_ENTITIES.get(ch, ch) for ch in str(text))
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return re.sub(r"[\r\n]+", " ", _CONTROL.sub("", s))


def csv_cell(value: Any) -> Any:
    """``value`` for a CSV cell: text a spreadsheet would evaluate gets a leading ``'``."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
        return value  # a number such as -0.5 stays a number
    except ValueError:
        return "'" + value


def terminal_text(text: str) -> str:
    """``text`` without control characters (newlines and tabs kept)."""
    return _CONTROL.sub("", text.replace("\x1b", ""))
