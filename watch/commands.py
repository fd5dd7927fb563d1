"""``satmon watch``: follow live runs from outside the training process and halt them safely.

Registered in this module's ``COMMANDS`` (read by :mod:`satmon.cli`); everything heavy (the
monitor, mlflow, tensorboard) is imported inside the handler. The behaviour is documented in :mod:`satmon.watch` and its
modules; the help text below is the user's summary of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from satmon._registry import Commands
from satmon.analysis.cli_args import parse_report_formats

COMMANDS = Commands()
command = COMMANDS.command

_DESCRIPTION = """\
Follow one or more live training runs and feed the online saturation monitor (the engine of
the trainer callback) as they log. SOURCE is a verl JSONL file-logger file, a verl or TRL
console log being written, an MLflow run (mlflow://runs/<id>, runs:/<id>, with
--tracking-uri for a sqlite store, a tracking server or a file store), every active run of an
MLflow experiment (mlflow://experiments/<name>: new runs are picked up, finished runs are
reported and dropped; it ends with --idle-exit once no run is active), or a TensorBoard log
folder. On HALT the watcher waits for the first checkpoint at or after the halt step under
--checkpoint-dir (verl global_step_N/ with latest_checkpointed_iteration.txt, transformers
checkpoint-N/), then runs the stop action once: --stop-file, --on-halt CMD (decision in
SATMON_* environment variables), --signal SIG --pid PID. Decisions go to a JSONL decision log
and, for MLflow sources, to tags on the watched run (satmon.watch.*; the run is never created
or ended). A restarted watcher resumes from --state with the same decisions and never acts
twice.
"""

_EPILOG = """\
exit status: 0 finished (no halt), 3 halted (stop action done, or flagged), 4 still watching
(--once, --timeout), 1 failed (source unreadable --max-failures polls in a row, keys missing,
stop action failed), 2 bad input.

on-halt environment: SATMON_RUN, SATMON_SOURCE, SATMON_HALT_STEP, SATMON_LAST_STEP,
SATMON_REASON, SATMON_MESSAGE, SATMON_CHECKPOINT, SATMON_CHECKPOINT_STEP,
SATMON_NO_CHECKPOINT (1 when acting without one), SATMON_MLFLOW_RUN_ID, SATMON_DECISION
(JSON).

A replaced or truncated log file is read again from its start, the steps it repeats are
skipped (a resumed run); a file that disappears is waited for. MLflow 3 refuses file stores
unless MLFLOW_ALLOW_FILE_STORE=true: the watcher sets it for its own client when
--tracking-uri names one. A tracking server that does not answer is retried with a growing
delay, each request bounded (MLFLOW_HTTP_REQUEST_TIMEOUT, default here 10 s).
"""


def _watch_arguments(p: argparse.ArgumentParser) -> None:
    p.description = _DESCRIPTION
    p.epilog = _EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="verl JSONL file, console log, mlflow://runs/<id>, "
                        "mlflow://experiments/<name> (every active run), TensorBoard folder")
    g = p.add_argument_group("sources and keys")
    g.add_argument("--name", action="append", default=None, metavar="NAME",
                   help="label of a run in output and report; once per SOURCE, in order "
                        "(default: from the source)")
    g.add_argument("--source-format", default="auto",
                   choices=["auto", "jsonl", "console", "mlflow", "tensorboard"],
                   help="kind of every SOURCE (default: from the name; see the module docs)")
    g.add_argument("--tracking-uri", metavar="URI", default=None,
                   help="MLflow tracking URI of MLflow sources: sqlite:///path.db, "
                        "http://host:port, or a file store folder (default MLFLOW_TRACKING_URI)")
    g.add_argument("--preset", default="auto",
                   choices=["auto", "trl", "verl", "tidy", "openrlhf"],
                   help="key preset (default auto); openrlhf: train/reward, eval/eval_<ds>_pass1")
    g.add_argument("--train-key", metavar="KEY", help="training-reward key, as logged")
    g.add_argument("--heldout-key", metavar="KEY", action="append", default=None,
                   help="held-out accuracy key, as logged; repeat for several")
    g.add_argument("--heldout-n", metavar="NAME=N", action="append", default=None,
                   help="held-out samples per evaluation of benchmark NAME (N alone: every "
                        "benchmark); gives the monitor the binomial noise")
    g.add_argument("--total-steps", type=int, metavar="N", default=None,
                   help="planned number of training steps (default: from the log where it "
                        "says: verl 'Total training steps', transformers 'Total optimization "
                        "steps', MLflow params)")
    g = p.add_argument_group("polling and ending")
    g.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between polls (10)")
    g.add_argument("--once", action="store_true",
                   help="one pass over every source, then exit (cron; resumes from --state)")
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop watching after this long (exit 4 when runs are still going)")
    g.add_argument("--idle-exit", "--idle-timeout", dest="idle_exit", type=float, default=None,
                   metavar="SECONDS",
                   help="a run with no new data for this long has finished (default: wait)")
    g.add_argument("--max-failures", type=int, default=5, metavar="N",
                   help="failed polls in a row (server down, unreadable file) before a run "
                        "fails (5); retries wait longer each time, up to 60 s")
    g.add_argument("--status-every", type=float, default=10.0, metavar="SECONDS",
                   help="at most one plain status line per run this often when stdout is not "
                        "a terminal (10)")
    g = p.add_argument_group("halting")
    g.add_argument("--action", choices=["auto", "stop", "flag"], default="auto",
                   help="stop: run the stop actions on HALT; flag: only report it; auto "
                        "(default): stop when a stop action is given, else flag")
    g.add_argument("--checkpoint-dir", action="append", default=None, metavar="DIR",
                   help="where the run's checkpoints appear (once, or once per SOURCE; "
                        "for an experiment {run_id} and {run_name} name each run's folder)")
    g.add_argument("--no-wait-checkpoint", dest="wait_checkpoint", action="store_false",
                   help="act at once on HALT, without waiting for a checkpoint")
    g.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="if no checkpoint at or after the halt step comes within this long, "
                        "act anyway and say so (3600)")
    g.add_argument("--on-halt", metavar="CMD", default=None,
                   help="shell command run once on HALT (decision in SATMON_* variables)")
    g.add_argument("--signal", metavar="SIG", default=None,
                   help="signal sent to --pid on HALT (TERM, INT, 15 ...)")
    g.add_argument("--pid", type=int, default=None, metavar="PID",
                   help="process that gets --signal")
    g.add_argument("--stop-file", metavar="PATH", default=None,
                   help="file written (decision as JSON) on HALT")
    g.add_argument("--action-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long --on-halt may run before it counts as failed (300)")
    g = p.add_argument_group("monitor")
    g.add_argument("--warmup-steps", type=int, default=None, metavar="N",
                   help="no FLAG/HALT before this step (monitor default 50)")
    g.add_argument("--eval-every", type=int, default=None, metavar="N",
                   help="expected held-out interval")
    g.add_argument("--risk", type=float, default=None, metavar="P",
                   help="HALT when P(held-out gain) is below this (monitor default)")
    g.add_argument("--flag-risk", type=float, default=None, metavar="P",
                   help="FLAG when P(held-out gain) is below this (0.2)")
    g.add_argument("--min-heldout-gain", type=float, default=None, metavar="G",
                   help="held-out gain that still justifies training (0.01 = 1 point)")
    g.add_argument("--halt-on", metavar="LIST", default=None,
                   help="comma-separated reasons allowed to HALT (default: all)")
    g.add_argument("--monitor-option", action="append", default=None, metavar="KEY=VALUE",
                   help="any other SaturationMonitor parameter (VALUE as JSON, e.g. "
                        "refit_every=25); repeatable")
    g = p.add_argument_group("output")
    g.add_argument("--decision-log", metavar="FILE", default=None,
                   help="JSONL decision log (default: OUT/decisions.jsonl with --out, else "
                        "./satmon-watch-decisions.jsonl)")
    g.add_argument("--state", metavar="FILE", default=None,
                   help="the watcher's state file (default: beside the decision log, "
                        "<decision log>.state.json)")
    g.add_argument("--out", metavar="DIR", default=None,
                   help="write the satmon report of what was watched here at the end")
    g.add_argument("--report-format", default="html,md,csv", metavar="LIST",
                   help="formats of the report (html, md, csv, json, txt; default html,md,csv)")


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in values or []:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} takes KEY=VALUE. Got {raw!r}.")
        out[key.strip()] = value.strip()
    return out


def _heldout_sizes(values: list[str] | None) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for raw in values or []:
        name, sep, n = raw.rpartition("=")
        if not sep:
            name, n = "*", raw
        try:
            size = int(n)
        except ValueError:
            size = 0
        if size <= 0 or not name.strip():
            raise ValueError(f"--heldout-n takes NAME=N (or N for every benchmark) with N a "
                             f"whole number > 0. Got {raw!r}.")
        sizes[name.strip()] = size
    return sizes


def monitor_kwargs_from(args: argparse.Namespace) -> dict[str, Any]:
    """The SaturationMonitor parameters the options name (total_steps is set per run)."""
    kwargs: dict[str, Any] = {}
    for name in ("warmup_steps", "eval_every", "risk", "flag_risk", "min_heldout_gain"):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    if args.halt_on:
        kwargs["halt_on"] = [r.strip() for r in args.halt_on.split(",") if r.strip()]
    for key, raw in _pairs(args.monitor_option, "--monitor-option").items():
        if key == "total_steps":
            raise ValueError("pass the planned steps with --total-steps, not --monitor-option.")
        try:
            kwargs[key] = json.loads(raw)
        except ValueError:
            kwargs[key] = raw
    from satmon.monitor import SaturationMonitor

    SaturationMonitor(**kwargs)  # the monitor's own messages for bad values, before watching
    if "halt_on" in kwargs:
        kwargs["halt_on"] = list(kwargs["halt_on"])
    return kwargs


def _per_source(values: list[str] | None, n: int, what: str) -> list[str | None]:
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"{what} is given {len(values)} times for {n} sources; give it once "
                         "(for every source) or once per source.")
    return list(values)


def _default_name(follower: Any) -> str:
    if follower.kind == "mlflow":
        return f"mlflow-{follower.run_id[:8]}"
    path = Path(follower.source)
    return path.name if follower.kind == "tensorboard" else path.stem


@contextlib.contextmanager
def _watcher_environment():
    """Bounded MLflow requests for the watcher; every variable it sets is restored after.

    MLflow reads these at each request; its defaults (120 s, 7 retries) would let a server
    that does not answer hold one poll for many minutes.
    """
    names = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
             "MLFLOW_ALLOW_FILE_STORE")
    before = {n: os.environ.get(n) for n in names}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        yield
    finally:
        for n, v in before.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def build_watcher(args: argparse.Namespace, stream=None):
    """The :class:`~satmon.watch.watcher.Watcher` the options describe (ValueError if bad)."""
    from satmon.watch.followers import open_follower
    from satmon.watch.halting import StopActions, parse_signal
    from satmon.watch.metric_keys import WatchKeys
    from satmon.watch.watcher import ExperimentWatch, RunWatch, WatchOptions, Watcher

    stop = StopActions(stop_file=args.stop_file, on_halt=args.on_halt,
                       signal=None if args.signal is None else parse_signal(args.signal),
                       pid=args.pid, action_timeout=args.action_timeout)
    options = WatchOptions(interval=args.interval, once=args.once, timeout=args.timeout,
                           idle_exit=args.idle_exit, total_steps=args.total_steps,
                           heldout_n=_heldout_sizes(args.heldout_n), action=args.action,
                           stop=stop, wait_checkpoint=args.wait_checkpoint, grace=args.grace,
                           max_failures=args.max_failures, status_every=args.status_every,
                           monitor_kwargs=monitor_kwargs_from(args))
    keys = WatchKeys(preset=args.preset, train_key=args.train_key,
                     heldout_keys=args.heldout_key)
    n = len(args.sources)
    names = _per_source(args.name, n, "--name")
    ckpt_dirs = _per_source(args.checkpoint_dir, n, "--checkpoint-dir")
    if options.stops and options.wait_checkpoint and None in ckpt_dirs:
        raise ValueError("a stop action waits for a checkpoint at or after the halt step: pass "
                         "--checkpoint-dir DIR (or --no-wait-checkpoint to act at once).")
    runs, experiments = [], []
    for source, name, ckpt in zip(args.sources, names, ckpt_dirs):
        follower = open_follower(source, kind=args.source_format,
                                 tracking_uri=args.tracking_uri, total_steps=args.total_steps)
        if follower.kind == "mlflow-experiment":
            experiments.append(ExperimentWatch(
                finder=follower, options=options,
                make_run=_experiment_run_maker(follower, keys, options, ckpt)))
            continue
        run_id = follower.source if follower.kind == "mlflow" else \
            f"{follower.kind}:{Path(follower.source).resolve()}"
        runs.append(RunWatch(run_id=run_id, name=name or _default_name(follower),
                             follower=follower, keys=keys, options=options,
                             checkpoint_dir=ckpt))
    log_path = Path(args.decision_log) if args.decision_log else (
        Path(args.out) / "decisions.jsonl" if args.out else Path("satmon-watch-decisions.jsonl"))
    state_path = Path(args.state) if args.state else log_path.with_name(
        log_path.name + ".state.json")
    return Watcher(runs, options=options, state_path=state_path, log_path=log_path,
                   stream=stream, experiments=experiments)


def _experiment_run_maker(finder, keys, options, checkpoint_dir: str | None):
    """``make_run(run_id, name)`` for an experiment's runs: one checkpoint folder per run
    through the ``{run_id}`` / ``{run_name}`` placeholders of ``--checkpoint-dir``."""
    from satmon.watch.watcher import RunWatch

    def make_run(run_id: str, name: str) -> RunWatch:
        follower = finder.follower(run_id)
        ckpt = None if checkpoint_dir is None else \
            checkpoint_dir.replace("{run_id}", run_id).replace("{run_name}", name)
        return RunWatch(run_id=follower.source, name=name, follower=follower, keys=keys,
                        options=options, checkpoint_dir=ckpt)

    return make_run


@command("watch", "follow live runs (verl JSONL/console, TRL console, MLflow, TensorBoard), "
                  "feed the monitor, halt safely at a checkpoint", _watch_arguments)
def _cmd_watch(args: argparse.Namespace) -> int:
    formats = (parse_report_formats(args.report_format, option="--report-format")
               if args.out else [])
    with _watcher_environment():
        watcher = build_watcher(args)
        watcher.load_state()
        if watcher.options.stops and not all(r.done for r in watcher.runs):
            # Checked after the state is loaded: a watcher restarted after its stop action
            # rightly finds the stopped process gone.
            watcher.options.stop.check_process()
        status = watcher.run()
    print(f"satmon watch: {_STATUS_WORDS[status]}; decision log {watcher.out.log_path}, state "
          f"{watcher.state_path}")
    if args.out:
        _write_report(watcher, args.out, formats)
    return status


def _write_report(watcher, out: str, formats: list[str]) -> None:
    from satmon.analysis.report import build_report

    runs = watcher.report_runs()
    if not runs:
        print("satmon watch: note: no training reward was watched; no report written",
              file=sys.stderr)
        return
    # The report's monitor replay uses the watcher's monitor options, so it shows the same
    # halt; the planned total too when every run has the same one.
    options = dict(watcher.options.monitor_kwargs)
    totals = {r.total_steps for r in watcher.runs}
    if len(totals) == 1 and None not in totals:
        options["total_steps"] = totals.pop()
    try:
        report = build_report(runs, replay_options=options)
        written = report.write(out, formats=formats)
    except (ValueError, OSError, ImportError) as exc:
        print(f"satmon watch: note: the report could not be written ({exc})", file=sys.stderr)
        return
    print("wrote " + ", ".join(str(p) for p in written.values()))


_STATUS_WORDS = {0: "finished", 1: "failed", 2: "bad input", 3: "halted", 4: "still watching"}
