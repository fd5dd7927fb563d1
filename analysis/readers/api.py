"""One entry point for every log format: :func:`read_run`, :func:`read_runs`, :func:`detect_format`.

Formats are recognised by content, not by file name alone (a verl log saved as ``.txt``, a
JSONL file called ``metrics.log`` and an event file renamed by hand all load); anything
unrecognised raises a ReadError that names the file and lists the supported formats.
Nothing read is ever executed: JSON is parsed with :mod:`json`, Python dict literals with
:func:`ast.literal_eval`, event files with TensorBoard's protobufs, and no pickle is loaded.

Errors
    Every failure to read a file's content raises :class:`~satmon.analysis.readers.errors.ReadError`
    (a ValueError; :class:`~satmon.analysis.readers.errors.MissingKeyError`, also a KeyError,
    for a configured key the log lacks), with a message naming the file and the problem. That
    includes failures no reader anticipated (the exception is chained as ``__cause__``). Only a
    missing path (FileNotFoundError), a missing optional package (ImportError) and invalid
    options (ValueError, raised before anything is read) are something else.
Warnings and ``strict``
    What a reader worked around (a damaged TensorBoard file read up to its last good record,
    TRL log dicts whose steps could not be told, a partial last JSONL line, unparsable
    dict-like text) is logged as a warning and listed in ``run.metadata["read_warnings"]``
    (absent after a clean read). With ``strict=True`` such a run raises a ReadError instead.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from satmon.analysis.readers import (console, event_files, json_logs, lab_runs, tables,
                                     tracking)
from satmon.analysis.readers.errors import ReadError
from satmon.analysis.readers.metric_log import (MetricLog, build_run, first_line_repr,
                                                 keymap_from)
from satmon.keys import KeyMap
from satmon.run import Run

log = logging.getLogger("satmon.analysis.readers")

FORMATS: dict[str, str] = {
    "tidy-csv": "CSV with columns step,metric,value",
    "wide-csv": "CSV with a step column and one column per metric",
    "jsonl": "JSON lines with a step (flat records, or verl's {\"step\", \"data\"} file logger)",
    "trainer-state": "transformers/TRL trainer_state.json, or a checkpoint or output folder",
    "lab-run": "a satmon lab run folder (curves.csv + run.json, as satmon demo and satmon lab "
               "write them)",
    "verl-console": "verl console log (step:N - key:value - ...)",
    "trl-console": "TRL/transformers console output (one Python dict per logging step)",
    "tensorboard": "TensorBoard event file, or a folder of them",
    "mlflow": "MLflow run or experiment (mlflow://runs/<id>, mlflow://experiments/<name>, "
              "runs:/<id>) or an MLflow sqlite store file",
}
_ALIASES = {"csv": "csv", "verl-jsonl": "jsonl", "trainer_state": "trainer-state",
            "tfevents": "tensorboard"}
_SNIFF_BYTES = 1 << 16
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _supported() -> str:
    return "; ".join(f"{k} ({v})" for k, v in FORMATS.items())


def _unknown_format(path: Path, why: str) -> ReadError:
    return ReadError(f"{path}: {why}. Supported formats: {_supported()}.", source=str(path))


@contextmanager
def _reading(source: Any) -> Iterator[None]:
    """Turn every failure while reading ``source`` into a ReadError that names it."""
    try:
        yield
    except ReadError as exc:
        if exc.source is None:
            exc.source = str(source)
        raise
    except (FileNotFoundError, ImportError):
        raise
    except RecursionError as exc:
        raise ReadError(f"{source}: the content is nested too deeply to read (Python's "
                        f"recursion limit is {sys.getrecursionlimit()}).",
                        source=str(source)) from exc
    except Exception as exc:  # a parser failure nobody anticipated: still the one error type
        raise ReadError(f"{source}: could not be read ({type(exc).__name__}: {exc}).",
                        source=str(source)) from exc


def _refuse_if_strict(run: Run, strict: bool) -> Run:
    problems = run.metadata.get("read_warnings") or []
    if strict and problems:
        source = run.metadata.get("source", run.name)
        raise ReadError(f"{source}: refused (strict): read only in part or with a guess: "
                        f"{' '.join(problems)}", source=source)
    return run


def _check_format(fmt: str) -> str:
    fmt = _ALIASES.get(fmt, fmt)
    if fmt != "auto" and fmt != "csv" and fmt not in FORMATS:
        raise ValueError(f"The 'format' parameter must be 'auto', 'csv' or one of "
                         f"{list(FORMATS)}. Got {fmt!r} instead.")
    return fmt


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise ReadError(f"{path}: the file is empty.", source=str(path))
    sample = data[:_SNIFF_BYTES]
    text = data.decode("utf-8", errors="replace")
    head = sample.decode("utf-8", errors="replace")
    # Terminal logs carry escape bytes, the odd NUL and broken characters (real verl logs do),
    # so only a large share of undecodable / control characters marks binary data.
    odd = sum(1 for ch in head if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\x1b"))
    if odd > max(8, len(head) // 20):
        raise _unknown_format(path, "binary content that is not a TensorBoard event file or "
                                    "an MLflow sqlite store")
    return text


def _sniff_text(text: str, path: Path) -> str:
    stripped = text.lstrip("\ufeff \t\r\n")
    json_error: ValueError | None = None
    if stripped[:1] in ("{", "["):
        try:
            doc = json_logs.parse_json_document(stripped, source=str(path))
        except ValueError as exc:
            json_error = exc
        else:
            if isinstance(doc, dict) and "log_history" in doc:
                return "trainer-state"
            if isinstance(doc, dict) and any(k in doc for k in json_logs.JSONL_STEP_KEYS):
                return "jsonl"
            keys = sorted(doc)[:20] if isinstance(doc, dict) else type(doc).__name__
            raise _unknown_format(path, f"a JSON document that is neither a trainer_state.json "
                                        f"(no 'log_history') nor a step record; it holds {keys}")
        first = stripped.split("\n", 1)[0]
        try:
            json_logs.parse_json_document(first, source=str(path))
            return "jsonl"
        except ValueError:
            pass
    columns = tables.header_of(stripped)
    if columns is not None:
        return "tidy-csv" if tables.is_tidy(columns) else "wide-csv"
    lines = console.clean_terminal_text(text)
    if console.looks_like_verl_console(lines):
        return "verl-console"
    if console.looks_like_trl_console(lines):
        return "trl-console"
    if json_error is not None:
        raise json_error
    raise _unknown_format(path, f"unrecognised content (first line {first_line_repr(lines)})")


def detect_format(path: str | os.PathLike) -> str:
    """The format of one log file, recognised by its content.

    Returns one of the keys of :data:`FORMATS`. Raises FileNotFoundError for a missing path
    and ReadError for empty, binary, unrecognised or unreadable files.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder.")
    with _reading(p):
        return _detect_format(p)


def _detect_format(p: Path) -> str:
    if p.is_dir():
        kinds = {kind for kind, _ in _dir_sources(p)}
        if len(kinds) == 1:
            return kinds.pop()
        raise _unknown_format(p, "a folder that holds no single run (found "
                                 f"{sorted(kinds) or 'nothing readable'})")
    with p.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head.strip():
        raise ReadError(f"{p}: the file is empty.", source=str(p))
    if event_files.is_event_file_content(head):
        return "tensorboard"
    if head.startswith(tracking.SQLITE_MAGIC):
        return "mlflow"
    return _sniff_text(_read_text(p), p)


def _latest_trainer_state(folder: Path) -> Path | None:
    """The trainer_state.json of the folder itself or of its latest ``checkpoint-N``."""
    checkpoints = sorted(
        ((int(m.group(1)), d) for d in folder.iterdir()
         if d.is_dir() and (m := _CHECKPOINT.match(d.name))
         and (d / "trainer_state.json").is_file()),
        key=lambda t: t[0],
    )
    top = folder / "trainer_state.json"
    if top.is_file():
        if not checkpoints:
            return top
        state = json_logs.parse_json_document(top.read_text(errors="replace"), source=str(top))
        # A final trainer_state.json in the output folder is as new as the last checkpoint or
        # newer; an older one (from an earlier run in the same folder) loses.
        if isinstance(state, dict) and int(state.get("global_step") or 0) >= checkpoints[-1][0]:
            return top
    return checkpoints[-1][1] / "trainer_state.json" if checkpoints else None


def _dir_sources(folder: Path, fmt: str = "auto") -> list[tuple[str, Path]]:
    """The runs a folder holds: ``(format, path)`` with path a file or an event-file folder.

    A lab run folder is one ``lab-run``, unless another format is asked for (``trainer-state``
    then reads a halted run's checkpoint).
    """
    if fmt in ("auto", "csv", "lab-run") and lab_runs.is_lab_run(folder):
        # curves.csv is the full record; a halted run's checkpoint-N/ is only its last state.
        return [("lab-run", folder)]
    state = _latest_trainer_state(folder)
    if state is not None:
        return [("trainer-state", state)]
    return [("tensorboard", target) for target in event_files.event_runs(folder)]


def _default_name(path: Path, fmt: str) -> str:
    if fmt == "trainer-state" and path.name == "trainer_state.json":
        parent = path.parent
        if _CHECKPOINT.match(parent.name) and parent.parent.name:
            return parent.parent.name
        return parent.name or path.stem
    if fmt == "lab-run":
        return path.name
    if fmt == "tensorboard":
        if path.is_dir():
            return path.name
        # Event files are named events.out.tfevents.<time>.<host>...: the run is the folder,
        # unless the file was renamed with a prefix of its own.
        return event_files.run_prefix(path) or path.parent.name or path.name
    return path.stem if path.is_file() else path.name


def _read_log(path: Path, fmt: str) -> MetricLog:
    """Parse one file (or an event-file folder) in a known format."""
    source = str(path)
    if fmt == "lab-run":
        return lab_runs.read_lab_folder(path)
    if fmt == "tensorboard":
        files = event_files.files_of_run(path)
        if not files:
            raise _unknown_format(path, "no TensorBoard event files (events.out.tfevents.*) here")
        return event_files.read_event_files(files, source=source)
    text = _read_text(path)
    if fmt in ("csv", "tidy-csv", "wide-csv"):
        return tables.read_csv(text, source=source,
                               tidy=None if fmt == "csv" else fmt == "tidy-csv")
    if fmt == "jsonl":
        return json_logs.read_jsonl(text, source=source)
    if fmt == "trainer-state":
        mlog = json_logs.read_trainer_state(json_logs.parse_json_document(text, source=source),
                                            source=source)
        lab_runs.add_checkpoint_context(mlog, path)
        return mlog
    if fmt == "verl-console":
        return console.read_verl_console(text, source=source)
    if fmt == "trl-console":
        return console.read_trl_console(text, source=source)
    raise ReadError(f"{path}: format {fmt!r} cannot be read from a file.", source=source)


def _resolve_path(p: Path, fmt: str) -> tuple[str, Path]:
    """Format and concrete target of one path holding one run."""
    if p.is_dir():
        sources = _dir_sources(p, fmt)
        if fmt not in ("auto", "csv"):
            sources = [s for s in sources if s[0] == fmt]
        if len(sources) == 1:
            return sources[0]
        if not sources:
            raise _unknown_format(p, "a folder with no trainer_state.json, checkpoint-N/ or "
                                     "TensorBoard event files" + (f" for format {fmt!r}"
                                                                  if fmt != "auto" else ""))
        raise ReadError(f"{p}: the folder holds {len(sources)} runs "
                        f"({', '.join(str(s[1]) for s in sources[:10])}); read one of them, or "
                        "all with read_runs.", source=str(p))
    if fmt == "auto":
        if p.name == lab_runs.CURVES_FILE and lab_runs.is_lab_run(p.parent):
            # A lab run's curves.csv: read with its run.json (name, metadata, sample size).
            return "lab-run", p.parent
        return detect_format(p), p
    if fmt == "lab-run" and p.is_file() and lab_runs.is_lab_run(p.parent):
        return fmt, p.parent
    return fmt, p


def _mlflow_reference(source: Any, fmt: str, tracking_uri: str | None):
    if isinstance(source, str):
        ref = tracking.parse_reference(source, tracking_uri=tracking_uri, forced=fmt == "mlflow")
        if ref is not None:
            return ref
    p = Path(source)
    if fmt in ("auto", "mlflow") and p.is_file():
        with p.open("rb") as fh:
            if fh.read(len(tracking.SQLITE_MAGIC)) == tracking.SQLITE_MAGIC:
                return tracking.MlflowReference("store", str(p),
                                                tracking_uri or f"sqlite:///{p.resolve()}")
    return None


def read_run(
    source: str | os.PathLike,
    *,
    train_key: str | None = None,
    heldout_keys: str | Iterable[str] | Mapping[str, str] | None = None,
    aux_keys: Mapping[str, str] | None = None,
    preset: str = "auto",
    format: str = "auto",
    name: str | None = None,
    tracking_uri: str | None = None,
    strict: bool = False,
    all_metrics: bool = False,
) -> Run:
    """Read one training run from a log file, folder or MLflow reference.

    Parameters
    ----------
    source:
        A log file (CSV, JSONL, trainer_state.json, verl or TRL console output, TensorBoard
        event file), a folder (a checkpoint or output folder, a TensorBoard log folder, a
        satmon lab run folder: see :mod:`~satmon.analysis.readers.lab_runs`), or an
        MLflow reference (``mlflow://runs/<id>``, ``runs:/<id>``, a run id, an MLflow sqlite
        store holding one run); see :data:`FORMATS`.
    train_key, heldout_keys, aux_keys, preset:
        Metric-key mapping (:class:`satmon.keys.KeyMap`); by default the preset is detected
        from the keys present.
    format:
        ``"auto"`` (detect from the content) or one of :data:`FORMATS` (``"csv"`` picks tidy
        or wide by the header).
    name:
        The run's label (default: from the file, folder or MLflow run name).
    tracking_uri:
        MLflow tracking URI (default: the reference's, then ``MLFLOW_TRACKING_URI``).
    strict:
        Refuse (ReadError) a run that could be read only in part or whose reader had to make
        a choice, i.e. one with ``read_warnings`` in its metadata. Default: read it, with a
        logged warning and the ``read_warnings`` entry.
    all_metrics:
        Also keep every other numeric key of the log as an auxiliary series under its own key
        (``satmon export --all-metrics``); keys holding no numbers are listed in
        ``metadata["non_numeric_keys"]``.

    Returns
    -------
    A cleaned :class:`satmon.Run`; ``run.metadata`` records the source, the format, the preset
    and keys used, what cleaning changed, and (``read_warnings``) anything the reader worked
    around, plus what the source says about the run (a lab run's ``run.json`` facts, a
    checkpoint's ``monitor_config``, config lines of a verl or TRL console log). Held-out
    series carry their sample size where the log has one (satmon's ``.../n`` series, a lab
    run's ``config.n_heldout``), else None.

    Raises
    ------
    ReadError
        (a ValueError) The input cannot be read: empty, truncated, corrupt, binary or
        unrecognised content, a malformed line, a value of a needed series that is not a
        number, a step or value out of range, a duplicated CSV column, a fractional step;
        or refused with ``strict=True``. The message names the file and the problem.
    MissingKeyError
        (a ReadError and a KeyError) A configured key is missing; the message lists the keys
        present.
    FileNotFoundError
        The path does not exist.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
    >>> _ = path.write_text("step,train_reward,heldout_acc\\n1,0.2,0.1\\n2,0.5,\\n3,0.6,0.3\\n")
    >>> run = read_run(path)
    >>> run.train_reward.values.tolist(), run.heldout["heldout_acc"].steps.tolist()
    ([0.2, 0.5, 0.6], [1, 3])
    """
    fmt = _check_format(format)
    keymap = keymap_from(preset=preset, train_key=train_key, heldout_keys=heldout_keys,
                         aux_keys=aux_keys, all_metrics=all_metrics)
    ref = _mlflow_reference(source, fmt, tracking_uri)
    if ref is not None:
        runs = tracking.read_mlflow(ref, keymap, name=name)
        if len(runs) != 1:
            raise ValueError(f"{source}: the MLflow {ref.kind} {ref.ident!r} holds {len(runs)} "
                             f"runs ({', '.join(r.metadata['run_id'] for r in runs[:10])}); "
                             "read one by run id, or all with read_runs.")
        return _refuse_if_strict(runs[0], strict)
    if fmt == "mlflow":
        raise ValueError(f"{source}: not an MLflow reference; use mlflow://runs/<run_id>, "
                         "mlflow://experiments/<name>, runs:/<run_id> or a sqlite store file.")
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder.")
    with _reading(p):
        kind, target = _resolve_path(p, fmt)
    return _build(target, kind, keymap, name, strict)


def _build(target: Path, kind: str, keymap: KeyMap, name: str | None, strict: bool) -> Run:
    with _reading(target):
        mlog = _read_log(target, kind)
        run = build_run(mlog, keymap, name=name,
                        default_name=_default_name(target, mlog.format))
    return _refuse_if_strict(run, strict)


def read_runs(
    sources: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    train_key: str | None = None,
    heldout_keys: str | Iterable[str] | Mapping[str, str] | None = None,
    aux_keys: Mapping[str, str] | None = None,
    preset: str = "auto",
    format: str = "auto",
    tracking_uri: str | None = None,
    strict: bool = False,
    all_metrics: bool = False,
) -> list[Run]:
    """Read every run in one or several sources.

    A source may hold many runs: an MLflow experiment (``mlflow://experiments/<name>``, or a
    name with ``format="mlflow"``), an MLflow sqlite store, a folder of log files, output
    folders or TensorBoard run folders. In a folder, files whose format is not recognised
    (READMEs, configs) are skipped with a log message; a recognised file that is broken raises
    a ReadError. Other parameters (``strict`` included) and errors as in :func:`read_run`.
    """
    fmt = _check_format(format)
    keymap = keymap_from(preset=preset, train_key=train_key, heldout_keys=heldout_keys,
                         aux_keys=aux_keys, all_metrics=all_metrics)
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    runs: list[Run] = []
    for source in sources:
        ref = _mlflow_reference(source, fmt, tracking_uri)
        if ref is not None:
            runs += [_refuse_if_strict(r, strict) for r in tracking.read_mlflow(ref, keymap)]
            continue
        p = Path(source)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder.")
        if p.is_file():
            with _reading(p):
                kind, target = _resolve_path(p, fmt)
            runs.append(_build(target, kind, keymap, None, strict))
            continue
        with _reading(p):
            found = _scan_folder(p, fmt, depth=0)
        if not found:
            raise _unknown_format(p, "a folder with no readable training logs")
        for kind, target in found:
            if kind == "mlflow":
                runs += read_runs(target, train_key=train_key, heldout_keys=heldout_keys,
                                  aux_keys=aux_keys, preset=preset, format="mlflow",
                                  tracking_uri=tracking_uri, strict=strict,
                                  all_metrics=all_metrics)
            else:
                runs.append(_build(target, kind, keymap, None, strict))
    return runs


def _scan_folder(folder: Path, fmt: str, depth: int) -> list[tuple[str, Path]]:
    if fmt in ("auto", "lab-run") and lab_runs.is_lab_run(folder):
        return [("lab-run", folder)]
    state = _latest_trainer_state(folder)
    if state is not None and fmt in ("auto", "trainer-state"):
        return [("trainer-state", state)]
    found: list[tuple[str, Path]] = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if depth < 3:
                found += _scan_folder(child, fmt, depth + 1)
            continue
        try:
            kind = detect_format(child) if fmt == "auto" else fmt
        except ValueError as exc:
            log.info("skipped %s: %s", child, str(exc).split(". Supported")[0])
            continue
        if kind == "tensorboard" and not event_files.run_prefix(child):
            # Unrenamed event files in one folder are one run (a resumed job adds files).
            if ("tensorboard", folder) not in found:
                found.append(("tensorboard", folder))
            continue
        found.append((kind, child))
    return found
