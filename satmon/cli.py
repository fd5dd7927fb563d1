"""The ``satmon`` command line.

Each subcommand lives in a function ``_cmd_<name>(args) -> int``; the packages it needs
(readers, reports, trainers) are imported inside it so ``satmon --help`` stays fast and
``import satmon.cli`` stays as light as ``import satmon``.

Inputs that cannot be read end a command with exit status 2 and ``satmon <command>: error:
<file>: <problem>`` on stderr (``satmon report`` and ``satmon plot`` go on past them with
``--skip-unreadable``, naming each skipped source). An input read only in part or with a
choice the reader had to make (the run's ``read_warnings``: a damaged TensorBoard file read up
to its last good record, TRL steps that could not be told, ...) is used with a ``satmon
<command>: note: <file>: ...`` line on stderr per problem; with ``--strict`` it is refused
instead, as an unreadable input.

Options shared by the commands that read runs: ``--input-format`` names the input format
everywhere (``--format`` is a deprecated alias of it in ``analyze``, ``export`` and ``plot``,
with a one-line note on stderr; in ``report`` ``--format`` names the report's output formats);
``--meta KEY=VALUE`` and ``--meta-file FILE`` attach metadata to the runs read (``report``,
``plot``, ``analyze``; see :mod:`satmon.analysis.readers.run_metadata`).

A metric key, held-out name or metadata key that does not exist ends the command with status 2
and a one-line error that lists what exists and suggests the closest names (``Did you mean
'reward'?``).

Output into a pipe that closes early (``satmon analyze run.log | head -3``) ends the command
quietly with status 141 (128 + SIGPIPE, what a shell reports for a tool such as ``cat`` killed
by SIGPIPE), with no traceback and nothing on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from satmon._version import __version__

log = logging.getLogger("satmon")

_COMMAND_MODULES: tuple[str, ...] = ("satmon.analysis.report_commands",
                                     "satmon.analysis.commands", "satmon.lab.commands")

# Subcommands register here: name -> (help, add_arguments, handler).
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                           Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand handler."""

    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        _COMMANDS[name] = (help, add_arguments, fn)
        return fn

    return wrap


#: Exit status after the reader of our output went away (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141


class _DeprecatedFormat(argparse.Action):
    """``--format`` as the input format: still accepted, with a one-line note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} for the input format is deprecated; use "
              f"--input-format {values}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_reader_arguments(p: argparse.ArgumentParser, *, format_alias: bool = True,
                         meta: bool = True, tracking_uri_help: str | None = None) -> None:
    """Options shared by every command that reads a run.

    The input format is ``--input-format``; ``format_alias`` also accepts the deprecated
    ``--format`` for it (not in ``satmon report``, whose ``--format`` names the output
    formats). ``meta`` adds ``--meta KEY=VALUE`` and ``--meta-file FILE``.
    """
    p.add_argument("--train-key", metavar="KEY",
                   help="metric key of the training reward (default: detected by preset)")
    p.add_argument("--heldout-key", metavar="KEY", action="append", default=None,
                   help="metric key of a held-out accuracy series; repeat for several "
                        "(default: detected by preset)")
    p.add_argument("--preset", choices=["auto", "trl", "verl", "tidy"], default="auto",
                   help="key-mapping preset (default: auto)")
    p.add_argument("--input-format", dest="fmt", default="auto", metavar="FORMAT",
                   help="input format: auto, csv, tidy-csv, wide-csv, jsonl, trainer-state, "
                        "lab-run, verl-console, trl-console, tensorboard, mlflow (default: "
                        "detected from the content)")
    if format_alias:
        p.add_argument("--format", dest="fmt", action=_DeprecatedFormat, metavar="FORMAT",
                       default="auto", help="deprecated alias of --input-format")
    if meta:
        p.add_argument("--meta", action="append", default=None, metavar="KEY=VALUE",
                       help="metadata for every run read (repeatable), e.g. --meta model=qwen; "
                            "numbers are read as numbers; overrides --meta-file and the "
                            "source's own metadata")
        p.add_argument("--meta-file", metavar="FILE",
                       help="CSV or JSON table of metadata: one row per run, a 'run' column "
                            "naming the run, other columns its metadata")
    p.add_argument("--tracking-uri", metavar="URI", default=None,
                   help=tracking_uri_help
                   or "MLflow tracking URI for MLflow runs (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--strict", action="store_true",
                   help="refuse inputs that could be read only in part or needed a guess (a "
                        "damaged event file, untold steps); default: use them with a note")


def apply_meta_options(command: str, args: argparse.Namespace, runs: list) -> None:
    """Attach ``--meta-file`` rows and ``--meta`` values to ``runs`` (a note per unmatched row)."""
    assignments, table_file = getattr(args, "meta", None), getattr(args, "meta_file", None)
    if not assignments and not table_file:
        return
    from satmon.analysis.readers.run_metadata import (attach_metadata, parse_assignments,
                                                      read_metadata_table)

    table = read_metadata_table(table_file) if table_file else None
    unmatched = attach_metadata(runs, parse_assignments(assignments), table)
    if unmatched:
        names = sorted({r.name for r in runs})
        print(f"satmon {command}: note: {table_file}: no run named "
              f"{', '.join(map(repr, unmatched))} (runs read: {', '.join(map(repr, names))})",
              file=sys.stderr)


def print_read_notes(command: str, run) -> None:
    """One stderr note per problem the reader worked around in ``run``."""
    source = run.metadata.get("source", run.name)
    for problem in run.metadata.get("read_warnings") or []:
        print(f"satmon {command}: note: {source}: {problem}", file=sys.stderr)


def add_saturation_arguments(p: argparse.ArgumentParser) -> None:
    """The parameters of the exact t_sat analysis, shared by analyze, report and plot."""
    p.add_argument("--eps", type=float, default=0.99,
                   help="fraction of the maximum reward that counts as saturated (0.99)")
    p.add_argument("--end-margin", type=int, default=50,
                   help="steps at the end of the run that cannot be t_sat (50)")
    p.add_argument("--heldout-policy", choices=["nearest", "interpolate", "previous"],
                   default="nearest", help="how to read held-out accuracy at t_sat (nearest)")


def _analyze_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a log file, trainer_state.json, checkpoint folder, lab run "
                                "folder or MLflow run")
    add_reader_arguments(p)
    add_saturation_arguments(p)
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")


def read_run_from_args(args: argparse.Namespace):
    """Read the run named by ``args.path`` with the shared reader options."""
    from satmon.analysis import read_run

    command_name = getattr(args, "command", None) or ""
    run = read_run(args.path, train_key=args.train_key, heldout_keys=args.heldout_key,
                   preset=args.preset, format=args.fmt,
                   tracking_uri=getattr(args, "tracking_uri", None),
                   strict=getattr(args, "strict", False),
                   all_metrics=getattr(args, "all_metrics", False))
    print_read_notes(command_name, run)
    apply_meta_options(command_name, args, [run])
    return run


@command("analyze", "exact post-hoc saturation analysis of one run", _analyze_arguments)
def _cmd_analyze(args: argparse.Namespace) -> int:
    from satmon.results import json_safe
    from satmon.saturation import analyze_saturation

    run = read_run_from_args(args)
    result = analyze_saturation(run, eps=args.eps, end_margin=args.end_margin,
                                heldout_policy=args.heldout_policy)
    if args.json:
        out = result.to_dict()
        # The run's scalar metadata (its source's facts and --meta / --meta-file values).
        out["metadata"] = {str(k): v for k, v in run.metadata.items()
                           if isinstance(v, (str, int, float, bool)) or v is None}
        out["heldout_sample_sizes"] = {k: h.sample_size for k, h in run.heldout.items()}
        print(json.dumps(json_safe(out), indent=2, allow_nan=False))
    else:
        print(result.summary())
        if not run.heldout:
            print("  (no held-out series found: pass --heldout-key to name one)")
    return 0


def _register_optional_commands() -> None:
    """Import the modules that register further subcommands.

    Each lives beside the code it drives (``satmon.analysis.commands`` for report/export/plot,
    ``satmon.lab.commands`` for demo/lab) and defers its heavy imports to the handlers.
    """
    import importlib

    for module in _COMMAND_MODULES:
        importlib.import_module(module)


def build_parser() -> argparse.ArgumentParser:
    _register_optional_commands()
    parser = argparse.ArgumentParser(
        prog="satmon",
        description="Saturation monitoring for RLVR training: detect the end of the "
                    "pre-saturation phase, tell generalizing runs from memorizing ones, and "
                    "report on finished runs.",
    )
    parser.add_argument("--version", action="version", version=f"satmon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, handler) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler)
    return parser


class _ReadWarningsAsNotes(logging.Filter):
    """Drops the readers' ``read_warnings`` log records: the command prints them as notes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "read_warning", False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``satmon`` console script; returns the exit status.

    0 on success, 2 for an input or option error (one ``satmon <command>: error: ...`` line on
    stderr), 141 when standard output is a pipe whose reader went away (nothing printed).
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    readers_log = logging.getLogger("satmon.analysis.readers")
    as_notes = _ReadWarningsAsNotes()
    readers_log.addFilter(as_notes)
    try:
        status = int(args.handler(args) or 0)
        # Buffered output reaches a closed pipe here, not at exit, where it could only be
        # reported as an ignored exception.
        sys.stdout.flush()
        return status
    except (ValueError, KeyError, TypeError, FileNotFoundError, ImportError) as exc:
        # KeyErrors (satmon.keys.UnknownKeyError and its kin) carry a readable message that
        # lists what exists and suggests close matches; a bare KeyError's str() is a repr.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"satmon {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        readers_log.removeFilter(as_notes)


def _quiet_broken_pipe() -> int:
    """The reader of stdout is gone: no traceback, no flush error at exit; status 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
