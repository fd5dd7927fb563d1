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
"""

from __future__ import annotations

import argparse
import json
import logging
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


def add_reader_arguments(p: argparse.ArgumentParser, *, format_flag: str = "--format",
                         tracking_uri_help: str | None = None) -> None:
    """Options shared by every command that reads a run.

    ``format_flag`` renames the input-format option where ``--format`` means something else
    (``satmon report --format`` names the report's output formats).
    """
    p.add_argument("--train-key", metavar="KEY",
                   help="metric key of the training reward (default: detected by preset)")
    p.add_argument("--heldout-key", metavar="KEY", action="append", default=None,
                   help="metric key of a held-out accuracy series; repeat for several "
                        "(default: detected by preset)")
    p.add_argument("--preset", choices=["auto", "trl", "verl", "tidy"], default="auto",
                   help="key-mapping preset (default: auto)")
    p.add_argument(format_flag, dest="fmt", default="auto",
                   help="input format (default: detected from the file)")
    p.add_argument("--tracking-uri", metavar="URI", default=None,
                   help=tracking_uri_help
                   or "MLflow tracking URI for MLflow runs (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--strict", action="store_true",
                   help="refuse inputs that could be read only in part or needed a guess (a "
                        "damaged event file, untold steps); default: use them with a note")


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
    p.add_argument("path", help="a log file, trainer_state.json, checkpoint folder or run")
    add_reader_arguments(p)
    add_saturation_arguments(p)
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")


def read_run_from_args(args: argparse.Namespace):
    """Read the run named by ``args.path`` with the shared reader options."""
    from satmon.analysis import read_run

    run = read_run(args.path, train_key=args.train_key, heldout_keys=args.heldout_key,
                   preset=args.preset, format=args.fmt,
                   tracking_uri=getattr(args, "tracking_uri", None),
                   strict=getattr(args, "strict", False))
    print_read_notes(getattr(args, "command", None) or "", run)
    return run


@command("analyze", "exact post-hoc saturation analysis of one run", _analyze_arguments)
def _cmd_analyze(args: argparse.Namespace) -> int:
    from satmon.saturation import analyze_saturation

    run = read_run_from_args(args)
    result = analyze_saturation(run, eps=args.eps, end_margin=args.end_margin,
                                heldout_policy=args.heldout_policy)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
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
    """Entry point of the ``satmon`` console script; returns the exit status."""
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
        return int(args.handler(args) or 0)
    except (ValueError, KeyError, TypeError, FileNotFoundError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"satmon {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        readers_log.removeFilter(as_notes)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
