"""``satmon lab sweep``: many seeded lab runs across settings, saved as logs.

Every ``(setting, seed)`` pair is trained to its last step with satmon attached in ``"flag"``
mode, so each run keeps its full curves (what a post-hoc benchmark needs: the halt the monitor
would have made can be scored against what came after it) while the live callback's decisions
are still recorded (``run.json`` holds the first step at which it asked to halt). The sweep's
folder::

    <out>/<setting>/s<seed>/curves.csv   tidy step,metric,value curves
    <out>/<setting>/s<seed>/run.json     setting, seed, live decisions, pre-RL numbers
    <out>/sweep.json                     the command that regenerates the sweep, wall times
    <out>/mlflow.db                      the MLflow store (unless --no-mlflow-curves)

``benchmarks/bench_lab.py`` reads such a folder and scores it like the real logs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from satmon.lab.runner import LabRun, run_lab, tracking_store
from satmon.lab.settings import SETTINGS, get_setting
from satmon.results import Result, format_number, json_safe, text_table

SWEEP_FILE = "sweep.json"
SWEEP_EXPERIMENT = "satmon-lab-sweep"


def settings_table() -> str:
    """The lab settings as a text table."""
    rows = []
    for s in SETTINGS.values():
        rows.append([s.name, s.expected_regime or "measured", str(s.n_train), s.labels.value
                     + (f" ({s.noise:g})" if s.noise else ""), s.reward.value, s.pre_rl.value,
                     str(s.max_steps), s.description])
    return text_table(["setting", "regime", "N train", "labels", "reward", "pre-RL", "steps",
                       "description"], rows)


def sweep_command(settings: Sequence[str], seeds: Sequence[int], steps: int | None,
                  out_dir: str | Path) -> str:
    """The ``satmon lab sweep`` command line that regenerates a sweep."""
    seed_text = ",".join(str(s) for s in seeds)
    parts = ["satmon lab sweep", f"--out {out_dir}", f"--settings {','.join(settings)}",
             f"--seeds {seed_text}"]
    if steps is not None:
        parts.append(f"--steps {steps}")
    return " ".join(parts)


class SweepResult(Result):
    """The runs of one sweep."""

    def __init__(self, *, runs: Sequence[LabRun], out_dir: Path, wall_s: float,
                 command: str) -> None:
        self.runs = tuple(runs)
        self.out_dir = out_dir
        self.wall_s = wall_s
        self.command = command

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"command": self.command, "out_dir": str(self.out_dir),
                          "wall_s": self.wall_s,
                          "runs": [{"setting": r.setting.name, "seed": r.seed,
                                    "path": str(r.out_dir.relative_to(self.out_dir)),
                                    "wall_s": r.wall_s,
                                    "first_halt_step": (r.first_halt_decision or {}).get("step"),
                                    "first_halt_reason": (r.first_halt_decision or {}).get(
                                        "reason"),
                                    "final_heldout": r.final_heldout} for r in self.runs]})

    def summary(self) -> str:
        rows = []
        for r in self.runs:
            first = r.first_halt_decision
            rows.append([r.setting.name, str(r.seed), str(r.steps_run),
                         "-" if first is None else f"{first['step']} ({first['reason']})",
                         format_number(r.final_heldout, 3), f"{r.wall_s:.1f}"])
        head = (f"satmon lab sweep: {len(self.runs)} runs in {self.wall_s:.0f} s, logs in "
                f"{self.out_dir}/\nregenerate with: {self.command}\n")
        return head + text_table(["setting", "seed", "steps", "live halt request",
                                  "final held-out", "wall s"], rows)


def run_sweep(*, out_dir: str | Path, settings: Sequence[str] = tuple(SETTINGS),
              seeds: Sequence[int] = (0, 1, 2), steps: int | None = None,
              keep_store: bool = True) -> SweepResult:
    """Train every ``(setting, seed)`` pair to its last step and save the logs.

    Parameters
    ----------
    out_dir:
        The sweep's folder (created).
    settings:
        Setting names (:data:`satmon.lab.settings.SETTINGS`).
    seeds:
        Seeds of each setting.
    steps:
        GRPO steps per run (default: each setting's budget).
    keep_store:
        Keep the MLflow store (``mlflow.db``, ``mlartifacts/``); False deletes it at the end,
        leaving only the small text logs.
    """
    chosen = [get_setting(n) for n in settings]
    if not chosen:
        raise ValueError(f"run_sweep needs at least one setting. Settings: {sorted(SETTINGS)}.")
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"The 'seeds' of run_sweep must be ints >= 0. Got {seeds!r} instead.")
    if steps is not None:
        chosen = [s.with_overrides(max_steps=steps) for s in chosen]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_store(out)
    start = time.perf_counter()
    runs = []
    for setting in chosen:
        for seed in seeds:
            runs.append(run_lab(setting, seed=seed, out_dir=out / setting.name / f"s{seed}",
                                action="flag", tracking_uri=uri, experiment=SWEEP_EXPERIMENT,
                                run_name=f"{setting.name}-s{seed}"))
            # Flag-mode runs write no checkpoint, but keep the folder to the two logs anyway.
            for extra in (out / setting.name / f"s{seed}").glob("checkpoint-*"):
                shutil.rmtree(extra)
    result = SweepResult(runs=runs, out_dir=out, wall_s=time.perf_counter() - start,
                         command=sweep_command([s.name for s in chosen], seeds, steps, out_dir))
    if not keep_store:
        (out / "mlflow.db").unlink(missing_ok=True)
        shutil.rmtree(out / "mlartifacts", ignore_errors=True)
    (out / SWEEP_FILE).write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False)
                                  + "\n")
    return result
