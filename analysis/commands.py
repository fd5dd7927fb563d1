"""``satmon export``: convert any supported log into the tidy ``step,metric,value`` CSV.

``satmon analyze`` (in :mod:`satmon.cli`) reads its run with the same readers; this module adds
the export command and keeps its imports (readers, numpy) inside the handler.
"""

from __future__ import annotations

import argparse
import sys

from satmon.cli import add_reader_arguments, command

_STDOUT_BLOCK = 1 << 16


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH_OR_RUN",
                   help="a log file, trainer_state.json, checkpoint folder, lab run folder, "
                        "TensorBoard folder or MLflow run (mlflow://runs/<id>)")
    p.add_argument("--out", required=True, metavar="FILE.csv",
                   help="where to write the tidy CSV ('-' for standard output)")
    p.add_argument("--heldout-names", action="store_true",
                   help="write a single held-out series as heldout_acc/<name> (keeps the "
                        "benchmark name, e.g. heldout_acc/openai/gsm8k); default: heldout_acc "
                        "for one series (the reference layout), heldout_acc/<name> for several")
    p.add_argument("--all-metrics", action="store_true",
                   help="also write every other key of the log under its own name (after "
                        "the canonical series)")
    # Metadata has no place in a step,metric,value table.
    add_reader_arguments(p, meta=False)


@command("export", "write a run's series as a tidy step,metric,value CSV", _export_arguments)
def _cmd_export(args: argparse.Namespace) -> int:
    from satmon.analysis.export import export_metric_names, tidy_csv_text, write_tidy_csv
    from satmon.cli import read_run_from_args

    run = read_run_from_args(args)
    options = {"heldout_names": args.heldout_names, "all_metrics": args.all_metrics}
    if args.out == "-":
        text = tidy_csv_text(run, **options)
        # In blocks, so a reader that goes away (`| head`) is seen at the next block (quiet
        # exit 141 in satmon.cli.main) rather than lost in one huge write.
        for start in range(0, len(text), _STDOUT_BLOCK):
            sys.stdout.write(text[start:start + _STDOUT_BLOCK])
        return 0
    out = write_tidy_csv(run, args.out, **options)
    names = export_metric_names(run, **options)
    series = [f"{names['train_reward']} ({run.metadata.get('keys', {}).get('train_key')})"
              if "train_reward" in names else None]
    series += [f"{metric} (held-out '{name}'"
               + (f", n={run.heldout[name].sample_size})" if run.heldout[name].sample_size
                  else ")")
               for name, metric in names.get("heldout", {}).items()]
    extra = len(names.get("other", ()))
    print(f"wrote {out}: {', '.join(s for s in series if s)}"
          + (f", and {extra} other key(s)" if extra else "")
          + f"; T = {run.last_step} ({run.metadata.get('format')}, preset "
            f"{run.metadata.get('preset')})", file=sys.stderr)
    return 0
