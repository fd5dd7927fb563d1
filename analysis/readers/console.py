"""Console output of training jobs: verl's ``step:N - key:value`` lines and TRL's log dicts.

Both arrive mixed with other output, so the reader first strips terminal control sequences
(ANSI colours from Ray's worker prefixes, cursor movement) and splits on carriage returns as
well as newlines (tqdm redraws its bar with ``\\r``).

verl
    ``step:N - key:value - key:value ...`` anywhere on a line (Ray prefixes such as
    ``(TaskRunner pid=1)`` are ignored). Values are numbers as verl prints them, including
    numpy reprs such as ``np.float64(0.5)``. A resumed run starts mid-way and may repeat steps;
    the cleaning policy keeps the later value.
    A ``step:`` that is not a whole number (``step:1.5``) raises a ReadError naming the line:
    it cannot be placed on the step axis, and dropping the line would be a silent choice.
TRL / transformers
    ``{'loss': 0.1, 'reward': 0.5, ...}`` printed per logging step (transformers >= 5 prints
    the floats as 4-significant-digit strings, ``{'loss': '0.1234'}``, which are read as
    numbers at that precision). The dict is parsed with :func:`ast.literal_eval` (never
    ``eval``); ``nan`` / ``inf`` become None (dropped and reported by the cleaning policy).
    Text inside rich tables and panels (lines starting with a box-drawing character, such as
    the completion tables of ``log_completions=True``) is never read as a log dict or a
    progress counter: completions may contain anything.

    The dict holds no step, so each dict's step comes from, in order of preference:

    1. a ``global_step`` / ``step`` entry in the dict itself;
    2. the ``Step N`` title of the completion table TRL prints right after the dict
       (``log_completions=True``; same stream as the dict, so never out of order);
    3. the training progress bar's counter (``N/max_steps [``): tqdm redraws the bar right
       after the dict with the current global step; the last counter before the dict is the
       fallback. The training bar is the one whose counters sit next to the training log
       dicts, not the one with the largest total (a ``datasets`` ``Map`` bar over a
       7,473-prompt dataset counts higher than a 50-step training bar).

    Evaluation dicts (``eval_*`` keys) and the final ``train_runtime`` summary take their step
    the same way. When a training dict has none of these, or two consecutive training dicts get
    the same step (stdout and stderr captured out of order), the reader cannot tell the steps:
    it says so (a warning, ``steps_from_log_index`` and a ``read_warnings`` entry in the run's
    metadata; ``strict=True`` refuses the run) and numbers the training dicts 1, 2, ... in log
    order, evaluation dicts taking the number of the training dict before them. That number is
    the step only with ``logging_steps=1``. ``run.metadata["steps_from"]`` counts the dicts
    whose step came from each source.

Run metadata from config lines (modest, for grids and report columns; first occurrence wins):

verl
    ``Total training steps: N`` (printed by the trainer at start) -> ``total_training_steps``;
    from the command line's Hydra overrides (``python -m verl.trainer.main_ppo ...
    key=value``) and from the printed config dict (``'key': value`` lines before the first
    step line): ``experiment_name``, ``project_name``, ``adv_estimator``, ``test_freq``, and
    the actor's model path (``actor_rollout_ref.model.path=P``, or the ``'path'`` of the first
    ``'model': {...}`` block of the printed config, which is the actor's since pprint sorts
    keys) as ``model_path``, with ``model`` its last path component (``Qwen2-7B-Instruct``).
TRL / transformers
    ``Total optimization steps = N`` (the "Running training" banner) -> ``max_steps``.
"""

from __future__ import annotations

import ast
import logging
import re
from bisect import bisect_left
from typing import Any

from satmon.analysis.readers.errors import ReadError
from satmon.analysis.readers.metric_log import MetricLog

log = logging.getLogger("satmon.analysis.readers")

# CSI sequences (colours, cursor moves), OSC sequences (titles, links), other 2-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_VERL_LINE = re.compile(r"(?:^|[\s)\]>])step:(\S+?) - (.*)$")
VERL_PROBE = re.compile(r"(?:^|[\s)\]>])step:[-+.\w]+ - [^\s:]+:\S")
_WHOLE = re.compile(r"[0-9]+")
_NUMPY_SCALAR = re.compile(r"^(?:np\.)?(?:float|int)\d*\((.*)\)$|^tensor\((.*?)(?:,.*)?\)$")
TRL_DICT = re.compile(r"\{'[^{}\n]*\}")
TRL_PROBE = re.compile(r"\{'[\w./\-@ ]+': '?[-+\d.einaf]+'?[,}]")
_NON_FINITE = re.compile(r"(?<=[:\[,] )(-?inf|nan)(?=[,}\]])")
PROGRESS_COUNTER = re.compile(r"(\d+)/(\d+) \[")
# Rich tables and panels, drawn with box characters (or ASCII ones on a non-UTF-8 terminal).
BOX_LINE = re.compile(r"^\s*[\u2500-\u257f|+]")
_PANEL_STEP = re.compile(r"[\u256d\u250c+][\u2500\u2501-]+ Step (\d+) "
                         r"[\u2500\u2501-]+[\u256e\u2510+]")
_DICT_STEP_KEYS = ("global_step", "step")
_VERL_TOTAL_STEPS = re.compile(r"Total training steps: (\d+)")
_VERL_OVERRIDE = re.compile(r"(?:^|\s)'?(?P<key>[\w.]+)=(?P<value>[^\s']+)")
_VERL_CONFIG_ITEM = re.compile(r"'(?P<key>\w+)': (?P<value>'[^']*'|-?\d+|None|True|False)[,}]")
_VERL_MODEL_BLOCK = re.compile(r"'model': \{'")
# Hydra override -> metadata key; the same keys as the printed config dict uses.
_VERL_OVERRIDES = {"trainer.experiment_name": "experiment_name",
                   "trainer.project_name": "project_name",
                   "algorithm.adv_estimator": "adv_estimator",
                   "trainer.test_freq": "test_freq",
                   "actor_rollout_ref.model.path": "model_path"}
_VERL_CONFIG_KEYS = ("experiment_name", "project_name", "adv_estimator", "test_freq")
_TRL_TOTAL_STEPS = re.compile(r"Total optimization steps = ([\d,]+)")


def clean_terminal_text(text: str) -> list[str]:
    """Lines of terminal output with escape sequences and control bytes removed.

    Carriage returns split lines too, since tqdm redraws a bar in place with them.
    """
    text = _ANSI.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [_CONTROL.sub("", line) for line in text.split("\n")]


def looks_like_verl_console(lines: list[str]) -> bool:
    return any(VERL_PROBE.search(line) for line in lines)


def looks_like_trl_console(lines: list[str]) -> bool:
    return any(TRL_PROBE.search(line) for line in lines)


def _verl_value(text: str) -> Any:
    text = text.strip()
    m = _NUMPY_SCALAR.match(text)
    if m:
        text = (m.group(1) or m.group(2) or "").strip()
    try:
        return float(text)
    except ValueError:
        return text


def _numbered_lines(text: str) -> list[tuple[int, str]]:
    """:func:`clean_terminal_text` pieces with the file line (1-based) each comes from."""
    out = []
    for lineno, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        for piece in _ANSI.sub("", line).split("\r"):
            out.append((lineno, _CONTROL.sub("", piece)))
    return out


def read_verl_console(text: str, *, source: str) -> MetricLog:
    """Parse verl console output (``step:N - key:value - ...`` lines)."""
    mlog = MetricLog(source=source, format="verl-console")
    for lineno, line in _numbered_lines(text):
        m = _VERL_LINE.search(line)
        if not m:
            continue
        record: dict[str, Any] = {}
        for part in m.group(2).split(" - "):
            key, sep, value = part.rpartition(":")
            if sep and key.strip():
                record[key.strip()] = _verl_value(value)
        if not record:
            continue
        if not _WHOLE.fullmatch(m.group(1)):
            raise ReadError(f"{source}, line {lineno}: step {m.group(1)!r} is not a whole "
                            "number >= 0; verl logs integer steps (step:N), so this line cannot "
                            "be placed on the step axis.", source=source)
        mlog.add_record(int(m.group(1)), record)
    mlog.metadata.update(verl_config_metadata(text))
    return mlog


def _config_value(text: str) -> Any:
    text = text.strip().strip("'\"")
    if _WHOLE.fullmatch(text.lstrip("-")):
        return int(text)
    return None if text in ("None", "null") else text


def verl_config_metadata(text: str) -> dict[str, Any]:
    """Run metadata from a verl console log's config lines (see the module docstring).

    >>> verl_config_metadata("python3 -m verl.trainer.main_ppo actor_rollout_ref.model.path="
    ...                      "/m/Qwen2-7B trainer.test_freq=5\\nTotal training steps: 105")
    {'model_path': '/m/Qwen2-7B', 'test_freq': 5, 'total_training_steps': 105, 'model': 'Qwen2-7B'}
    """
    found: dict[str, Any] = {}
    model_column: int | None = None
    for _, line in _numbered_lines(text):
        if _VERL_LINE.search(line):
            break  # the config is printed before training starts
        if "main_ppo" in line or "verl.trainer" in line:
            for m in _VERL_OVERRIDE.finditer(line):
                key = _VERL_OVERRIDES.get(m.group("key"))
                if key is not None and key not in found:
                    value = _config_value(m.group("value"))
                    if value is not None:
                        found[key] = value
        m = _VERL_TOTAL_STEPS.search(line)
        if m and "total_training_steps" not in found:
            found["total_training_steps"] = int(m.group(1))
        block = _VERL_MODEL_BLOCK.search(line)
        if block is not None and model_column is None and "model_path" not in found:
            model_column = block.end() - 1
        for item in _VERL_CONFIG_ITEM.finditer(line):
            key, value = item.group("key"), _config_value(item.group("value"))
            if key in _VERL_CONFIG_KEYS and key not in found and value is not None:
                found[key] = value
            elif key == "path" and model_column is not None and "model_path" not in found \
                    and item.start() == model_column and isinstance(value, str):
                found["model_path"] = value
    if isinstance(found.get("model_path"), str):
        found["model"] = found["model_path"].rstrip("/").rsplit("/", 1)[-1]
    return found


def parse_log_dict(text: str) -> dict[str, Any] | None:
    """One printed TRL / transformers log dict as a dict (:func:`ast.literal_eval`, never
    ``eval``; ``nan`` / ``inf`` become None, pre-formatted number strings numbers), or None
    when the text is not such a dict."""
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


def _dict_kind(record: dict[str, Any]) -> str:
    if "train_runtime" in record:
        return "summary"
    if any(k.startswith("eval_") for k in record):
        return "eval"
    return "train"


def _step_in_dict(record: dict[str, Any]) -> int | None:
    for key in _DICT_STEP_KEYS:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                float(value).is_integer() and value >= 0:
            del record[key]
            return int(value)
    return None


def _training_bar_total(windows: list[tuple[set[int], set[int]]]) -> int | None:
    """The total of the bar whose counters sit next to the most training log dicts.

    ``windows`` holds, per training dict, the totals of the counters right after it (before
    the next dict) and of those anywhere between the dicts around it.
    """
    after: dict[int, int] = {}
    near: dict[int, int] = {}
    for right_after, around in windows:
        for total in right_after:
            after[total] = after.get(total, 0) + 1
        for total in around:
            near[total] = near.get(total, 0) + 1
    if not near:
        return None
    return max(near, key=lambda total: (after.get(total, 0), near[total], total))


def read_trl_console(text: str, *, source: str) -> MetricLog:
    """Parse TRL / transformers console output (one Python dict literal per log)."""
    lines = clean_terminal_text(text)
    joined = "\n".join(lines)
    # Box lines are blanked (same length, so positions agree) before looking for dicts and
    # counters: completion tables print model output, which may hold either.
    masked = "\n".join(" " * len(line) if BOX_LINE.match(line) else line for line in lines)
    dicts: list[tuple[int, int, dict[str, Any]]] = []
    unparsed = 0
    for m in TRL_DICT.finditer(masked):
        record = parse_log_dict(m.group(0))
        if record is None:
            unparsed += 1
        elif record:
            dicts.append((m.start(), m.end(), record))
    counters = [(m.start(), int(m.group(1)), int(m.group(2))) for m in PROGRESS_COUNTER.finditer(masked)]
    panels = [(m.start(), int(m.group(1))) for m in _PANEL_STEP.finditer(joined)]
    bounds = [(end, dicts[i + 1][0] if i + 1 < len(dicts) else len(joined) + 1)
              for i, (_, end, _) in enumerate(dicts)]
    kinds = [_dict_kind(record) for _, _, record in dicts]
    counter_at = [pos for pos, _, _ in counters]

    def totals(lo: int, hi: int) -> set[int]:
        return {t for _, _, t in counters[bisect_left(counter_at, lo):bisect_left(counter_at, hi)]}

    # Per training dict: the bars counting right after it, and those between its neighbours.
    windows = [(totals(lo, hi), totals(dicts[i - 1][1] if i else 0, hi))
               for i, ((lo, hi), kind) in enumerate(zip(bounds, kinds)) if kind == "train"]
    train_total = _training_bar_total(windows)
    bar = [(pos, n) for pos, n, total in counters if total == train_total]
    bar_at = [pos for pos, _ in bar]
    panel_at = [pos for pos, _ in panels]

    steps: list[int | None] = []
    sources: list[str] = []
    for (start, _, record), (lo, hi) in zip(dicts, bounds):
        step, how = _step_in_dict(record), "log dict"
        if step is None:
            k = bisect_left(panel_at, lo)
            step = panels[k][1] if k < len(panels) and panel_at[k] < hi else None
            how = "completion table"
        if step is None:
            k = bisect_left(bar_at, lo)
            if k < len(bar) and bar_at[k] < hi:  # the bar redrawn right after the dict
                step = bar[k][1]
            else:  # the last counter before it
                k = bisect_left(bar_at, start)
                step = bar[k - 1][1] if k else None
            how = "progress bar"
        steps.append(step)
        sources.append(how if step is not None else "none")

    train_steps = [s for s, kind in zip(steps, kinds) if kind == "train"]
    missing = train_steps.count(None)
    repeated = sum(1 for a, b in zip(train_steps, train_steps[1:]) if a is not None and a == b)
    mlog = MetricLog(source=source, format="trl-console")
    if missing or repeated:
        why = []
        if missing:
            why.append(f"{missing} of {len(train_steps)} training log dict(s) have no "
                       "progress-bar counter, completion-table step or step key next to them")
        if repeated:
            why.append(f"{repeated} pair(s) of consecutive training log dicts got the same "
                       "progress-bar step (output captured out of order?)")
        mlog.warn(f"cannot tell the training steps: {'; '.join(why)}. The {len(dicts)} log "
                  "dict(s) are numbered by their order among the training log dicts (1, 2, "
                  "...), which is the step only with logging_steps=1.")
        steps = _log_order_steps(kinds)
        mlog.metadata["steps_from_log_index"] = len(dicts)
    elif None in steps:
        orphans = steps.count(None)
        steps = _fill_from_previous(steps)
        mlog.warn(f"{orphans} evaluation or summary log dict(s) have no step of their own; "
                  "they take the step of the log dict before them (0 before the first)")
    if "steps_from_log_index" not in mlog.metadata and dicts:
        counts: dict[str, int] = {}
        for how in sources:
            counts[how] = counts.get(how, 0) + 1
        mlog.metadata["steps_from"] = counts
    for step, (_, _, record) in zip(steps, dicts):
        mlog.add_record(step, record)
    if unparsed:
        mlog.metadata["unparsed_dicts"] = unparsed
        mlog.warn(f"{unparsed} dict-like text(s) could not be parsed and were skipped")
    total = _TRL_TOTAL_STEPS.search(masked)
    if total is not None:
        mlog.metadata.setdefault("max_steps", int(total.group(1).replace(",", "")))
    return mlog


def _fill_from_previous(steps: list[int | None]) -> list[int]:
    out: list[int] = []
    for step in steps:
        out.append(step if step is not None else (out[-1] if out else 0))
    return out


def _log_order_steps(kinds: list[str]) -> list[int]:
    """Steps by log order: training dicts 1, 2, ...; other dicts share the one before them."""
    out, n = [], 0
    for kind in kinds:
        if kind == "train":
            n += 1
        out.append(n)
    return out
