"""The ``satmon`` command line: one registry of every layer's subcommands.

The command line sits above every layer. Each layer registers its subcommands in its own
command module (:mod:`satmon.analysis.commands`: analyze, export;
:mod:`satmon.analysis.report_commands`: report, plot; :mod:`satmon.lab.commands`: demo, lab;
:mod:`satmon.watch.commands`: watch; :mod:`satmon.probe.commands`: probe), which this
package imports plainly; none of them imports
the command line back. Each handler imports what it needs (readers, reports, trainers) inside
it, so ``satmon --help`` stays fast.

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
import logging
import os
import sys
from collections.abc import Sequence

from satmon._registry import Command
from satmon._version import __version__

log = logging.getLogger("satmon")

#: Exit status after the reader of our output went away (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141


def commands() -> list[Command]:
    """Every subcommand, in the order ``satmon --help`` lists them."""
    from satmon.analysis import commands as analysis_commands
    from satmon.analysis import report_commands
    from satmon.lab import commands as lab_commands
    from satmon.probe import commands as probe_commands
    from satmon.watch import commands as watch_commands

    return [*analysis_commands.COMMANDS[:1], *report_commands.COMMANDS,
            *analysis_commands.COMMANDS[1:], *lab_commands.COMMANDS, *watch_commands.COMMANDS,
            *probe_commands.COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="satmon",
        description="Saturation monitoring for RLVR training: detect the end of the "
                    "pre-saturation phase, tell generalizing runs from memorizing ones, and "
                    "report on finished runs.",
    )
    parser.add_argument("--version", action="version", version=f"satmon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for c in commands():
        p = sub.add_parser(c.name, help=c.help, description=c.help)
        c.add_arguments(p)
        p.set_defaults(handler=c.handler)
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


