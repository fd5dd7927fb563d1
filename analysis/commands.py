"""``satmon analyze`` (the exact analysis of one run) and ``satmon export`` (any supported
log as the tidy ``step,metric,value`` CSV); readers and numpy load inside the handlers."""

from __future__ import annotations

import argparse
import json
import sys

from satmon._registry import Commands
from satmon.analysis.cli_args import (add_reader_arguments, add_saturation_arguments,
                                      read_run_from_args)

COMMANDS = Commands()

_STDOUT_BLOCK = 1 << 16


def _analyze_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a log file, trainer_state.json, checkpoint folder, lab run "
                                "folder or MLflow run")
    add_reader_arguments(p)
    add_saturation_arguments(p)
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")



@COMMANDS.command("analyze", "exact post-hoc saturation analysis of one run", _analyze_arguments)
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


@COMMANDS.command("export", "write a run's series as a tidy step,metric,value CSV", _export_arguments)
def _cmd_export(args: argparse.Namespace) -> int:
    from satmon.analysis.export import export_metric_names, tidy_csv_text, write_tidy_csv

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
