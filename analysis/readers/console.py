"""Console output of training jobs: verl's ``step:N - key:value`` lines and TRL's log dicts.

Both arrive mixed with other output, so the reader first strips terminal control sequences
(ANSI colours from Ray's worker prefixes, cursor movement) and splits on carriage returns as
well as newlines (tqdm redraws its bar with ``\\r``).

verl
    ``step:N - key:value - key:value ...`` anywhere on a line (Ray prefixes such as
    ``(TaskRunner pid=1)`` are ignored). Values are numbers as verl prints them, including
    numpy reprs such as ``np.float64(0.5)``. A resumed run starts mid-way and may repeat steps;
    the cleaning policy keeps the later value.
TRL / transformers
    ``{'loss': 0.1, 'reward': 0.5, ...}`` printed per logging step (transformers >= 5 prints
    the floats as 4-significant-digit strings, ``{'loss': '0.1234'}``, which are read as
    numbers at that precision). The dict is parsed with :func:`ast.literal_eval` (never
    ``eval``); ``nan`` / ``inf`` become None (dropped and reported by the cleaning policy).
    The dict holds no step, so the step is the training progress bar's counter: tqdm redraws
    the bar right after the dict with the current global step, and the last counter before
    it is the fallback. Without any progress bar, steps are the 1-based index of the log
    line, and the run's metadata says so.
"""

from __future__ import annotations

import ast
import logging
import re
from typing import Any

from satmon.analysis.readers.metric_log import MetricLog

log = logging.getLogger("satmon.analysis.readers")

# CSI sequences (colours, cursor moves), OSC sequences (titles, links), other 2-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_VERL_LINE = re.compile(r"(?:^|[\s)\]>])step:(\d+) - (.*)$")
_VERL_PROBE = re.compile(r"(?:^|[\s)\]>])step:\d+ - [^\s:]+:\S")
_NUMPY_SCALAR = re.compile(r"^(?:np\.)?(?:float|int)\d*\((.*)\)$|^tensor\((.*?)(?:,.*)?\)$")
_TRL_DICT = re.compile(r"\{'[^{}\n]*\}")
_TRL_PROBE = re.compile(r"\{'[\w./\-@ ]+': '?[-+\d.einaf]+'?[,}]")
_NON_FINITE = re.compile(r"(?<=[:\[,] )(-?inf|nan)(?=[,}\]])")
_TQDM = re.compile(r"(\d+)/(\d+) \[")


def clean_terminal_text(text: str) -> list[str]:
    """Lines of terminal output with escape sequences and control bytes removed.

    Carriage returns split lines too, since tqdm redraws a bar in place with them.
    """
    text = _ANSI.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [_CONTROL.sub("", line) for line in text.split("\n")]


def looks_like_verl_console(lines: list[str]) -> bool:
    return any(_VERL_PROBE.search(line) for line in lines)


def looks_like_trl_console(lines: list[str]) -> bool:
    return any(_TRL_PROBE.search(line) for line in lines)


def _verl_value(text: str) -> Any:
    text = text.strip()
    m = _NUMPY_SCALAR.match(text)
    if m:
        text = (m.group(1) or m.group(2) or "").strip()
    try:
        return float(text)
    except ValueError:
        return text


def read_verl_console(text: str, *, source: str) -> MetricLog:
    """Parse verl console output (``step:N - key:value - ...`` lines)."""
    mlog = MetricLog(source=source, format="verl-console")
    for line in clean_terminal_text(text):
        m = _VERL_LINE.search(line)
        if not m:
            continue
        record: dict[str, Any] = {}
        for part in m.group(2).split(" - "):
            key, sep, value = part.rpartition(":")
            if sep and key.strip():
                record[key.strip()] = _verl_value(value)
        if record:
            mlog.add_record(int(m.group(1)), record)
    return mlog


def _literal_dict(text: str) -> dict[str, Any] | None:
    try:
        value = ast.literal_eval(_NON_FINITE.sub("None", text))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _number_or_text(v) for k, v in value.items()}
    return None


def _number_or_text(value: Any) -> Any:
    # transformers >= 5 prints floats pre-formatted as strings ('0.2646', '2.158e+04').
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def read_trl_console(text: str, *, source: str) -> MetricLog:
    """Parse TRL / transformers console output (one Python dict literal per log)."""
    joined = "\n".join(clean_terminal_text(text))
    dicts: list[tuple[int, int, dict[str, Any]]] = []
    unparsed = 0
    for m in _TRL_DICT.finditer(joined):
        record = _literal_dict(m.group(0))
        if record is None:
            unparsed += 1
        elif record:
            dicts.append((m.start(), m.end(), record))
    counters = [(m.start(), int(m.group(1)), int(m.group(2))) for m in _TQDM.finditer(joined)]
    # Evaluation bars are interleaved with the training bar; the training bar counts to
    # max_steps, the largest total in the output.
    train_total = max((total for _, _, total in counters), default=None)
    positions = [(pos, n) for pos, n, total in counters if total == train_total]

    mlog = MetricLog(source=source, format="trl-console")
    from_bar = 0
    j = 0
    for i, (start, end, record) in enumerate(dicts):
        next_start = dicts[i + 1][0] if i + 1 < len(dicts) else len(joined) + 1
        while j < len(positions) and positions[j][0] < start:
            j += 1
        before = positions[j - 1][1] if j > 0 else None
        after = positions[j][1] if j < len(positions) and positions[j][0] < next_start else None
        step = after if after is not None else before
        if step is None:
            step = i + 1
        else:
            from_bar += 1
        mlog.add_record(step, record)
    if dicts and from_bar < len(dicts):
        mlog.metadata["steps_from_log_index"] = len(dicts) - from_bar
        log.warning("%s: %d log dict(s) without a progress-bar counter; their steps are the "
                    "1-based log index", source, len(dicts) - from_bar)
    if unparsed:
        mlog.metadata["unparsed_dicts"] = unparsed
        log.warning("%s: %d dict-like text(s) could not be parsed and were skipped",
                    source, unparsed)
    return mlog
