"""Command-line options shared by every command that reads runs (analysis layer).

Used by the commands of :mod:`satmon.analysis`, :mod:`satmon.watch` and the others; the command
line itself (:mod:`satmon.cli`) only assembles the commands. See :mod:`satmon.cli` for what the
options mean to a user.
"""

from __future__ import annotations

import argparse
import sys

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
    p.add_argument("--preset", choices=["auto", "trl", "verl", "openrlhf", "tidy"], default="auto",
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


def parse_report_formats(text: str, *, option: str | None = None) -> list[str]:
    """``"html,md"`` -> ``["html", "md"]``, or a ValueError naming the unknown formats (and
    the ``option`` they came from)."""
    from satmon.analysis.report import REPORT_FORMATS

    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in REPORT_FORMATS]
    if bad or not formats:
        where = f"{option}: unknown format(s)" if option else "unknown report format(s)"
        raise ValueError(f"{where} {bad or [text]}; choose from {list(REPORT_FORMATS)}, "
                         "comma-separated.")
    return formats
