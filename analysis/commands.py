"""``satmon export``: convert any supported log into the tidy ``step,metric,value`` CSV.

``satmon analyze`` (in :mod:`satmon.cli`) reads its run with the same readers; this module adds
the export command and keeps its imports (readers, numpy) inside the handler.
"""

from __future__ import annotations

import argparse
import sys

from satmon.cli import add_reader_arguments, command


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH_OR_RUN",
                   help="a log file, trainer_state.json, checkpoint folder, TensorBoard folder "
                        "or MLflow run (mlflow://runs/<id>)")
    p.add_argument("--out", required=True, metavar="FILE.csv",
                   help="where to write the tidy CSV ('-' for standard output)")
    add_reader_arguments(p)


@command("export", "write a run's series as a tidy step,metric,value CSV", _export_arguments)
def _cmd_export(args: argparse.Namespace) -> int:
    from satmon.analysis.export import tidy_csv_text, write_tidy_csv
    from satmon.cli import read_run_from_args

    run = read_run_from_args(args)
    if args.out == "-":
        sys.stdout.write(tidy_csv_text(run))
        return 0
    out = write_tidy_csv(run, args.out)
    series = ["train_reward", *(f"held-out {n}" for n in run.heldout)]
    print(f"wrote {out}: {', '.join(series)}; T = {run.last_step} "
          f"({run.metadata.get('format')}, preset {run.metadata.get('preset')})",
          file=sys.stderr)
    return 0
