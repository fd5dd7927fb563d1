"""``satmon report`` and ``satmon plot``: post-hoc reports and figures from the command line.

Both read each ``SOURCE`` with :func:`satmon.analysis.read_runs` (a log file, checkpoint
folder, satmon lab run folder, folder of logs or of lab runs such as ``satmon-demo/runs/``,
MLflow run, experiment or store; one source may hold several runs), attach ``--meta`` /
``--meta-file`` metadata, and import matplotlib, tqdm and mlflow only inside the handlers.
A run that records its live monitor configuration (a lab run, a checkpoint with satmon's state
file) is replayed with it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from satmon._registry import Commands
from satmon.analysis.cli_args import (add_reader_arguments, add_saturation_arguments,
                                      apply_meta_options, parse_report_formats,
                                      print_read_notes)

COMMANDS = Commands()
command = COMMANDS.command

log = logging.getLogger("satmon.report")

# Above this many runs the terminal gets the counts, not the whole table (the txt/md/csv files
# carry it).
_PRINT_TABLE_MAX_RUNS = 30


def _analysis_arguments(p: argparse.ArgumentParser, *, report: bool = False) -> None:
    p.add_argument("sources", nargs="+", metavar="PATH_OR_RUN",
                   help="log files, trainer_state.json, checkpoint folders or MLflow runs")
    if report:
        # In `satmon report`, --format names the report's output formats, so the input format
        # is only --input-format (as in every command); the other reader options are the same.
        add_reader_arguments(p, format_alias=False,
                             tracking_uri_help="MLflow tracking URI of MLflow sources and of "
                                               "--log-to-mlflow (default MLFLOW_TRACKING_URI)")
    else:
        add_reader_arguments(p)
    add_saturation_arguments(p)
    p.add_argument("--no-replay", dest="replay", action="store_false",
                   help="skip the replay of the online monitor (faster on many long runs)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="name each source that cannot be read (or that --strict refuses) and "
                        "go on with the others (default: stop)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")


def _report_arguments(p: argparse.ArgumentParser) -> None:
    _analysis_arguments(p, report=True)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the report into")
    p.add_argument("--format", "--formats", dest="report_formats", default="html,md,csv",
                   metavar="LIST",
                   help="comma-separated report formats: html, md, csv, json, txt "
                        "(default html,md,csv)")
    p.add_argument("--groups", metavar="FILE",
                   help="JSON/TOML file of benchmark groups and large/small run pairs")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes that analyse and replay runs in parallel (1)")
    p.add_argument("--max-run-plots", type=int, default=12, metavar="N",
                   help="runs that get their own figure in the HTML report (12)")
    p.add_argument("--grid-rows", metavar="KEY",
                   help="metadata key for the overview grid rows (from the sources, e.g. a lab "
                        "run's setting, or --meta / --meta-file)")
    p.add_argument("--grid-cols", metavar="KEY",
                   help="metadata key for the overview grid columns")
    p.add_argument("--log-to-mlflow", action="store_true",
                   help="attach the report files to an MLflow run (--run-id, the active run, "
                        "MLFLOW_RUN_ID, or a new run)")
    p.add_argument("--run-id", metavar="ID", help="MLflow run to attach the report to")


def _plot_arguments(p: argparse.ArgumentParser) -> None:
    _analysis_arguments(p)
    p.add_argument("--out", required=True, metavar="FILE.png", help="image file to write")
    p.add_argument("--grid-rows", metavar="KEY",
                   help="metadata key whose values index rows (from the sources, e.g. a lab "
                        "run's setting, or --meta / --meta-file)")
    p.add_argument("--grid-cols", metavar="KEY", help="metadata key whose values index columns")
    p.add_argument("--hue", metavar="KEY", help="metadata key labelling runs that share a panel")
    p.add_argument("--heldout", metavar="NAME",
                   help="held-out series to draw (default: all for one run, the first in a grid)")
    p.add_argument("--no-fit", dest="fit", action="store_false",
                   help="do not overlay the fitted saturation curve (single-run plot)")
    p.add_argument("--dpi", type=int, default=120, help="image resolution (120)")


def _progress(items: Sequence[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled or len(items) < 2:
        return items
    from satmon.analysis.report import require_progress

    # tqdm writes to stderr and hides itself when stderr is not a terminal (disable=None).
    return require_progress()(items, desc=desc, unit="run", disable=None)


def read_sources(args: argparse.Namespace) -> list[Any]:
    """Read every source named on the command line (each may hold several runs).

    A source that cannot be read raises a ReadError (exit status 2), or with
    ``--skip-unreadable`` is named on stderr and left out; each problem a reader worked around
    in a run it did read gets a note on stderr (``--strict`` refuses such runs instead).
    ``--meta-file`` rows and ``--meta`` values are attached to the runs read (a note names
    the table's rows that match no run).
    """
    from satmon.analysis import read_runs
    from satmon.analysis.readers import ReadError

    runs = []
    for source in _progress(list(args.sources), args.progress, "reading"):
        try:
            # One source may hold many runs (an MLflow experiment or store, a folder of logs).
            found = read_runs(source, train_key=args.train_key, heldout_keys=args.heldout_key,
                              preset=args.preset, format=args.fmt,
                              tracking_uri=getattr(args, "tracking_uri", None),
                              strict=args.strict)
        # ReadError is every failure of a file's content; the others come from MLflow sources
        # (a run not found) and the key options.
        except (ReadError, ValueError, KeyError, TypeError, FileNotFoundError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            if not args.skip_unreadable:
                raise ReadError(f"cannot read '{source}': {message}", source=str(source)) \
                    from exc
            print(f"satmon: skipped '{source}': {message}", file=sys.stderr)
            continue
        for run in found:
            print_read_notes(args.command, run)
        runs += found
    if not runs:
        raise ValueError("none of the sources could be read; nothing to report.")
    apply_meta_options(args.command, args, runs)
    return runs


@command("report", "tables and an HTML report over many runs: t_sat, gains, monitor replay, "
                   "G_sat", _report_arguments)
def _cmd_report(args: argparse.Namespace) -> int:
    from satmon.analysis.readers.run_metadata import check_metadata_keys
    from satmon.analysis.report import build_report

    formats = parse_report_formats(args.report_formats)
    if args.max_run_plots < 0:
        raise ValueError(f"--max-run-plots must be >= 0. Got {args.max_run_plots}.")
    if args.run_id and not args.log_to_mlflow:
        raise ValueError("--run-id names the MLflow run to attach the report to; it needs "
                         "--log-to-mlflow.")
    runs = read_sources(args)
    # A grid key no run has fails now, not after every run has been analysed and replayed.
    check_metadata_keys(runs, args.grid_rows, args.grid_cols)
    report = build_report(runs, groups=args.groups, eps=args.eps, end_margin=args.end_margin,
                          heldout_policy=args.heldout_policy, replay=args.replay,
                          progress=args.progress, workers=args.workers)
    written = report.write(args.out, formats=formats, max_run_plots=args.max_run_plots,
                           grid_rows=args.grid_rows, grid_cols=args.grid_cols)
    if len(report) <= _PRINT_TABLE_MAX_RUNS:
        print(report.summary())
    else:
        c = report.counts()
        print(f"satmon report: {c['runs']} runs, {c['saturated']} saturated, {c['failed']} not "
              f"analysed, {c['without_heldout']} without held-out series, {c['halted']} halted "
              "by the monitor replay")
    print("wrote " + ", ".join(str(p) for p in written.values()))
    if args.log_to_mlflow:
        from satmon.analysis.report_mlflow import log_report_to_mlflow

        att = log_report_to_mlflow(written, run_id=args.run_id, tracking_uri=args.tracking_uri,
                                   report=report)
        print(f"attached {len(att.files)} file(s) to MLflow run {att.run_id} "
              f"({att.tracking_uri}, artifacts/{att.artifact_path})"
              + (" [new run]" if att.created_run else ""))
    return 2 if report.counts()["failed"] == len(report) else 0


@command("plot", "figure of one run (phases, t_sat, held-out, fit, halt) or a grid of runs",
         _plot_arguments)
def _cmd_plot(args: argparse.Namespace) -> int:
    from satmon.analysis.plots import plot_grid, plot_run, save_figure
    from satmon.analysis.readers.run_metadata import check_metadata_keys
    from satmon.analysis.report import replay_run
    from satmon.saturation import analyze_saturation

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"--out must end in .png, .svg or .pdf. Got '{out.name}'.")
    runs = read_sources(args)
    grid = len(runs) > 1 or bool(args.grid_rows or args.grid_cols)
    check_metadata_keys(runs, args.grid_rows, args.grid_cols, args.hue if grid else None)
    replays = {}
    if args.replay:
        for run in _progress(runs, args.progress, "replaying"):
            try:
                replays[run.name] = replay_run(run)
            except ValueError as exc:
                print(f"satmon plot: no monitor replay for '{run.name}': {exc}", file=sys.stderr)
    if len(runs) == 1 and not (args.grid_rows or args.grid_cols):
        run = runs[0]
        fig, _ = plot_run(run, analysis=analyze_saturation(run, eps=args.eps,
                                                           end_margin=args.end_margin,
                                                           heldout_policy=args.heldout_policy),
                          replay=replays.get(run.name), fit="auto" if args.fit else None,
                          heldout=[args.heldout] if args.heldout else None,
                          eps=args.eps, end_margin=args.end_margin)
    else:
        fig, _ = plot_grid(runs, rows=args.grid_rows, cols=args.grid_cols, hue=args.hue,
                           heldout=args.heldout, replays=replays, eps=args.eps,
                           end_margin=args.end_margin)
    save_figure(fig, out, dpi=args.dpi)
    print(f"wrote {out}")
    return 0
