"""JSON logs: JSONL records and transformers' ``trainer_state.json``.

JSONL: one object per line, either flat (``{"step": 3, "reward": 0.4, ...}``; ``global_step``
and ``_step`` are accepted too) or verl's ``file`` logger (``{"step": 3, "data": {...}}``).
A last line without its newline that does not parse is the tail of a log still being written:
it is skipped, with a warning, ``skipped_partial_last_line`` and a ``read_warnings`` entry in the
run's metadata; any other malformed line raises a ReadError naming the line.

``trainer_state.json``: ``log_history`` is a list of dicts, train and eval entries sharing one
``step``; ``global_step``, ``max_steps`` and friends go to the run's metadata. Parsing uses
:mod:`json` only: nothing in a file is ever executed.

JSON nested deeper than Python's parser can follow (about :func:`sys.getrecursionlimit` levels),
and integers with more digits than Python converts (``sys.get_int_max_str_digits``), raise a
ReadError naming the file and line; they are never valid training logs.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from satmon.analysis.readers.errors import ReadError
from satmon.analysis.readers.metric_log import MetricLog

log = logging.getLogger("satmon.analysis.readers")

JSONL_STEP_KEYS = ("step", "global_step", "_step")
_STATE_METADATA = ("global_step", "max_steps", "num_train_epochs", "logging_steps",
                   "eval_steps", "save_steps", "best_metric", "best_model_checkpoint",
                   "train_batch_size")


def _flat_numbers(prefix: str, obj: dict[str, Any], out: dict[str, Any]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flat_numbers(name + "/", value, out)
        else:
            out[name] = value


def _unparsable(source: str, where: str, exc: Exception) -> ReadError:
    """The error for JSON that :mod:`json` gives up on without a JSONDecodeError."""
    if isinstance(exc, RecursionError):
        why = (f"JSON nested too deeply to parse (Python's recursion limit is "
               f"{sys.getrecursionlimit()} levels)")
    else:  # ValueError: an integer literal past sys.get_int_max_str_digits()
        why = f"JSON that cannot be parsed ({exc})"
    return ReadError(f"{source}{where}: {why}; this is not a training log.", source=source)


def read_jsonl(text: str, *, source: str) -> MetricLog:
    """Parse a JSONL log (flat records or verl's ``{"step", "data"}`` records)."""
    mlog = MetricLog(source=source, format="jsonl")
    lines = text.split("\n")
    ends_with_newline = text.endswith("\n")
    verl_records = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            is_last = lineno == len(lines) and not ends_with_newline
            if is_last and mlog.n_records:
                mlog.warn(f"skipped the partial last line {lineno} (log still being "
                          f"written?): {exc.msg} at column {exc.colno}")
                mlog.metadata["skipped_partial_last_line"] = lineno
                continue
            raise ReadError(f"{source}, line {lineno}: not valid JSON ({exc.msg} at column "
                            f"{exc.colno}); the file is truncated or not a JSONL log.",
                            source=source) from None
        except (RecursionError, ValueError) as exc:
            raise _unparsable(source, f", line {lineno}", exc) from None
        if not isinstance(record, dict):
            raise ReadError(f"{source}, line {lineno}: a JSONL log line must be a JSON object; "
                             f"got {type(record).__name__}.")
        step_key = next((k for k in JSONL_STEP_KEYS if k in record), None)
        if step_key is None:
            raise ReadError(f"{source}, line {lineno}: the record has no step (one of "
                             f"{list(JSONL_STEP_KEYS)}); keys: {sorted(record)[:20]}.")
        step = record[step_key]
        if isinstance(record.get("data"), dict) and len(record) <= 3:
            # verl's file logger nests the metrics under "data".
            verl_records += 1
            values: dict[str, Any] = {}
            _flat_numbers("", record["data"], values)
        else:
            values = {k: v for k, v in record.items() if k not in JSONL_STEP_KEYS}
        mlog.add_record(step, values)
    if verl_records:
        mlog.format = "verl-jsonl"
    return mlog


def parse_json_document(text: str, *, source: str) -> Any:
    """Parse a whole JSON document, with a ReadError that says where it broke."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # An unterminated string runs to the end of the text, so it too means a cut-off file.
        at_end = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        where = f"line {exc.lineno}, column {exc.colno}"
        if at_end:
            raise ReadError(f"{source}: invalid JSON ({exc.msg} {where}): the document stops "
                            "at the end of the file before it is complete; the file is "
                            "truncated.", source=source) from None
        raise ReadError(f"{source}: invalid JSON ({exc.msg}) at {where}; the file is "
                        "corrupt or not JSON.", source=source) from None
    except (RecursionError, ValueError) as exc:
        raise _unparsable(source, "", exc) from None


def read_trainer_state(state: Any, *, source: str) -> MetricLog:
    """Parse a loaded ``trainer_state.json`` document."""
    if not isinstance(state, dict) or "log_history" not in state:
        got = sorted(state)[:20] if isinstance(state, dict) else type(state).__name__
        raise ReadError(f"{source}: not a trainer_state.json (no 'log_history'); got {got}.")
    history = state["log_history"]
    if not isinstance(history, list):
        raise ReadError(f"{source}: 'log_history' must be a list of log dicts; got "
                        f"{type(history).__name__}.")
    mlog = MetricLog(source=source, format="trainer-state")
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            raise ReadError(f"{source}: log_history[{i}] must be a dict; got "
                            f"{type(entry).__name__}.")
        if "step" not in entry:
            raise ReadError(f"{source}: log_history[{i}] has no 'step'; keys: "
                             f"{sorted(entry)[:20]}.")
        mlog.add_record(entry["step"], {k: v for k, v in entry.items() if k != "step"})
    mlog.metadata.update({k: state[k] for k in _STATE_METADATA if k in state})
    return mlog
