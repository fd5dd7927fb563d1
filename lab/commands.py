"""``satmon demo`` and ``satmon lab ...``: the lab's subcommands.

Registered in this module's ``COMMANDS`` (:mod:`satmon._registry`); torch, TRL and MLflow
load inside the handlers, so ``satmon --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from satmon._registry import Commands

COMMANDS = Commands()
command = COMMANDS.command
from satmon.lab.settings import SETTINGS


def _set_threads(threads: int) -> None:
    # The lab's models are tiny: one thread is faster than several, and leaves the other cores
    # to whatever else the machine runs.
    from satmon._optional import require

    require("torch", feature="lab runs").set_num_threads(threads)


def _settings_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown setting(s) {unknown or [text]}; choose from {', '.join(SETTINGS)}")
    return names


def _seed_list(text: str) -> list[int]:
    """``"0-4"`` or ``"0,2,5"`` (or a mix) as a list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                if high < low:
                    raise ValueError
                seeds.extend(range(low, high + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seeds must look like '0-4' or '0,2,5' (whole numbers >= 0); got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be whole numbers >= 0; got {text!r}")
    return list(dict.fromkeys(seeds))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    from satmon.lab.demo import DEMO_SETTINGS

    p.add_argument("--out", default="satmon-demo", metavar="DIR",
                   help="output folder: MLflow store, runs, report, plots (satmon-demo)")
    p.add_argument("--settings", type=_settings_list, default=list(DEMO_SETTINGS),
                   metavar="A,B,...",
                   help=f"lab settings to run (default {','.join(DEMO_SETTINGS)}; all: "
                        f"{','.join(SETTINGS)})")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (0)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="GRPO steps per run (default: each setting's budget, 300)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 60 steps per run (what CI runs)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="torch threads (1 is fastest for the tiny models)")


@command("demo", "train a few miniature RLVR runs on the CPU with satmon attached, then report",
         _demo_arguments)
def _cmd_demo(args: argparse.Namespace) -> int:
    from satmon.lab.demo import run_demo

    _set_threads(args.threads)
    steps = args.steps if args.steps is not None else (60 if args.quick else None)
    progress = not args.no_progress and sys.stderr.isatty()
    result = run_demo(out_dir=args.out, settings=args.settings, seed=args.seed, steps=steps,
                      progress=progress)
    print()
    print(result.summary())
    return 0


def _lab_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")
    sweep = sub.add_parser("sweep", help="many seeded lab runs across settings, saved as logs",
                           description="Train every (setting, seed) pair with satmon attached "
                                       "in flag mode (runs go to the end, so their full "
                                       "curves can be scored), and save each run's logs.")
    sweep.add_argument("--out", default="satmon-lab-sweep", metavar="DIR",
                       help="output folder (satmon-lab-sweep)")
    sweep.add_argument("--settings", type=_settings_list, default=list(SETTINGS),
                       metavar="A,B,...", help="settings (default: all)")
    sweep.add_argument("--seeds", type=_seed_list, default=list(range(3)), metavar="SEEDS",
                       help="seeds, e.g. 0-4 or 0,3,7 (default 0-2)")
    sweep.add_argument("--steps", type=_positive_int, default=None,
                       help="GRPO steps per run (default: each setting's budget)")
    sweep.add_argument("--no-mlflow-curves", dest="keep_store", action="store_false",
                       help="delete the sweep's MLflow store at the end (keep only the logs)")
    sweep.add_argument("--threads", type=_positive_int, default=1,
                       help="torch threads (1 is fastest for the tiny models)")
    sub.add_parser("settings", help="list the lab settings",
                   description="List the lab's weak-supervision settings.")


@command("lab", "the miniature weak-supervision lab: list settings, run sweeps", _lab_arguments)
def _cmd_lab(args: argparse.Namespace) -> int:
    if args.lab_command == "settings":
        from satmon.lab.sweep import settings_table

        print(settings_table())
        return 0
    if args.lab_command == "sweep":
        from satmon.lab.sweep import run_sweep

        _set_threads(args.threads)
        result = run_sweep(out_dir=args.out, settings=args.settings, seeds=args.seeds,
                           steps=args.steps, keep_store=args.keep_store)
        print(result.summary())
        return 0
    print("satmon lab: choose a command: sweep, settings (see satmon lab --help)",
          file=sys.stderr)
    return 2
