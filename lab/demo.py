"""``satmon demo``: real miniature RLVR runs halted (or not) by satmon, then the report.

For each demo setting the demo trains one seeded run with
``SaturationCallback(action="halt_and_save")``. When satmon halts it, the same seed is trained
again with ``action="flag"`` (the *unhalted copy*: identical up to the halt, then run to the
end), so the table can set held-out accuracy at the halt against what the full budget would
have bought. A run that is not halted already is its own unhalted copy.

Everything lands in one folder (default ``satmon-demo/``):

``mlflow.db`` + ``mlartifacts/``  the embedded MLflow store: one MLflow run per training run,
                                  with the curves, satmon's metrics, tags, figures and tables
``runs/<name>/``                  ``curves.csv`` (tidy ``step,metric,value``), ``run.json``,
                                  and ``checkpoint-<halt step>/`` for halted runs
``report/``                       the post-hoc report (``report.html`` with embedded plots,
                                  ``report.md``, ``report.csv``) over the full-length runs
``demo.png``                      the curves of every setting with satmon's halt marked
``plots/<setting>.png``           one plot per setting
``summary.txt``, ``summary.json`` the table the command prints
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satmon._optional import require
from satmon.lab.runner import LabProgress, LabRun, run_lab, tracking_store
from satmon.lab.settings import SETTINGS, LabSetting, get_setting
from satmon.results import Result, format_number, json_safe, text_table

#: The demo's settings: a generalizing run, the memorization control, noisy labels, a proxy.
DEMO_SETTINGS = ("generalizing", "memorizing", "noisy-50", "majority-vote")
DEMO_EXPERIMENT = "satmon-demo"


@dataclass(frozen=True)
class DemoRow:
    """One setting of the demo: the halted run and its unhalted copy."""

    setting: LabSetting
    run: LabRun
    unhalted: LabRun

    @property
    def heldout_at_halt(self) -> float:
        """Held-out accuracy of the last evaluation at or before the halt (NaN: no halt)."""
        return self.run.heldout_at(self.run.halt_step) if self.run.halted else math.nan

    @property
    def heldout_end(self) -> float:
        """Held-out accuracy at the end of the unhalted copy."""
        return self.unhalted.final_heldout

    @property
    def best_heldout_after_halt(self) -> float:
        """Best held-out accuracy the unhalted copy reached after the halt step."""
        if not self.run.halted:
            return math.nan
        after = [v for s, v in self.unhalted.curves.get("heldout_acc", [])
                 if s > self.run.halt_step]
        return max(after) if after else math.nan

    def cells(self) -> list[str]:
        r = self.run
        return [
            self.setting.name,
            self.setting.expected_regime or "measured",
            f"yes, step {r.halt_step}" if r.halted else "no",
            r.reason or "-",
            f"{100 * r.compute_saved:.0f}%",
            format_number(self.heldout_at_halt, 3),
            format_number(self.heldout_end, 3),
            format_number(self.best_heldout_after_halt, 3),
            f"{r.wall_s:.0f}" + (f" + {self.unhalted.wall_s:.0f}" if self.unhalted is not r
                                 else ""),
        ]

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "setting": self.setting.name,
            "expected_regime": self.setting.expected_regime,
            "halted": self.run.halted, "halt_step": self.run.halt_step,
            "reason": self.run.reason, "message": self.run.message,
            "steps_run": self.run.steps_run, "max_steps": self.run.max_steps,
            "compute_saved": self.run.compute_saved,
            "heldout_at_halt": self.heldout_at_halt,
            "heldout_end_unhalted": self.heldout_end,
            "best_heldout_after_halt": self.best_heldout_after_halt,
            "wall_s": self.run.wall_s,
            "unhalted_wall_s": self.unhalted.wall_s if self.unhalted is not self.run else 0.0,
            "run_dir": str(self.run.out_dir), "unhalted_dir": str(self.unhalted.out_dir),
            "mlflow_run_id": self.run.mlflow_run_id,
            "unhalted_mlflow_run_id": self.unhalted.mlflow_run_id,
            "checkpoint": self.run.checkpoint,
        })


DEMO_HEADER = ["setting", "regime by design", "halted", "reason", "compute saved",
               "held-out at halt", "held-out at end (unhalted)", "best after halt",
               "wall s"]


class DemoResult(Result):
    """What ``satmon demo`` did: one row per setting, and the files it wrote."""

    def __init__(self, *, rows: Sequence[DemoRow], out_dir: Path, files: dict[str, str],
                 wall_s: float) -> None:
        self.rows = tuple(rows)
        self.out_dir = out_dir
        self.files = dict(files)
        self.wall_s = wall_s

    def table(self) -> str:
        return text_table(DEMO_HEADER, [r.cells() for r in self.rows])

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"out_dir": str(self.out_dir), "wall_s": self.wall_s,
                          "files": self.files, "rows": [r.to_dict() for r in self.rows]})

    def summary(self) -> str:
        lines = [f"satmon demo: {len(self.rows)} settings, {self.wall_s:.0f} s, "
                 f"output in {self.out_dir}/", "", self.table(), ""]
        for r in self.rows:
            if r.run.halted:
                lines.append(f"{r.setting.name}: {r.run.message}")
        lines.append("")
        for key in ("report", "plot", "mlflow"):
            if key in self.files:
                lines.append(f"{key:>7}: {self.files[key]}")
        return "\n".join(lines)


class _Display:
    """Live progress: one rich bar per run on a terminal; plain lines otherwise.

    Plain mode (output redirected, or ``--no-progress``) prints a line when a run starts
    preparing, one every tenth of its steps (step, reward, last held-out, decision) and one
    when it ends. While the display runs, the libraries' own chatter is held back: the
    callback's flag and halt warnings (the display and the final table show every decision),
    MLflow's INFO lines and transformers' checkpoint-writing progress bars.
    """

    def __init__(self, live: bool, echo: Callable[[str], None]) -> None:
        self.live = live
        self.echo = echo
        self._progress = None
        self._tasks: dict[str, Any] = {}
        self._next_line: dict[str, int] = {}
        self._last_decision: dict[str, str] = {}
        self._quiet: list[tuple[Any, int]] = []

    def __enter__(self) -> "_Display":
        import importlib
        import logging

        try:
            # Importing MLflow configures its loggers; quieten them after that, not before.
            importlib.import_module("mlflow")
        except ImportError:
            pass
        for name, level in (("satmon.callbacks", logging.ERROR), ("mlflow", logging.WARNING),
                            ("transformers", logging.ERROR)):
            lg = logging.getLogger(name)
            self._quiet.append((lg, lg.level))
            lg.setLevel(level)
        try:
            from transformers.utils import logging as hf_logging

            self._bars_were = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
        except ImportError:
            self._bars_were = None
        if self.live:
            rich_progress = require("rich.progress", feature="the demo's live display")
            rich_table = require("rich.table", feature="the demo's live display")
            self._progress = rich_progress.Progress(
                rich_progress.TextColumn("{task.description:<28}"),
                rich_progress.BarColumn(bar_width=20),
                rich_progress.TextColumn("step {task.completed:>4.0f}/{task.total:.0f}"),
                rich_progress.TimeElapsedColumn(),
                # The status wraps instead of being cut at the terminal's width.
                rich_progress.TextColumn("{task.fields[info]}",
                                         table_column=rich_table.Column(overflow="fold")),
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
        for lg, level in self._quiet:
            lg.setLevel(level)
        if self._bars_were:
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()

    def start(self, name: str, total: int) -> None:
        what = "preparing (model, tokenizer, warm-up fine-tuning)"
        if self._progress is not None:
            self._tasks[name] = self._progress.add_task(name, total=total, info=what)
        else:
            self.echo(f"  {name}: {what}")
            self._next_line[name] = max(1, total // 10)

    def update(self, p: LabProgress) -> None:
        held = "-" if math.isnan(p.heldout) else f"{p.heldout:.2f}"
        info = f"reward {p.train_reward:.2f}  held-out {held}  {p.decision}"
        if self._progress is not None:
            if p.run_name in self._tasks:
                self._progress.update(self._tasks[p.run_name], completed=p.step, info=info)
            return
        every = self._next_line.get(p.run_name)
        changed = self._last_decision.get(p.run_name, "continue") != p.decision
        self._last_decision[p.run_name] = p.decision
        if every and (p.step % every == 0 or changed):
            self.echo(f"  {p.run_name}: step {p.step}/{p.max_steps}  {info}")

    def finish(self, run: LabRun) -> None:
        if run.halted:
            note = f"HALTED at step {run.halt_step} ({run.reason})"
        else:
            note = f"ran {run.steps_run} steps"
        note += (f", held-out {format_number(run.final_heldout, 3)} at the last evaluation, "
                 f"{run.wall_s:.0f} s")
        if self._progress is not None and run.name in self._tasks:
            style = "bold red" if run.halted else "green"
            self._progress.update(self._tasks[run.name], completed=run.steps_run,
                                  info=f"[{style}]{note}[/]")
        else:
            self.echo(f"  {run.name}: {note}")


def live_replay_summary(run: LabRun, full: LabRun) -> Any:
    """The live callback's decisions on ``run`` as a report ``ReplaySummary``.

    The halt (if any) comes from ``run``; the probability traces from ``full`` (the unhalted
    copy, which saw the same steps up to the halt and went on to the end); the regret is the
    best held-out accuracy ``full`` reached after the halt minus the accuracy at the halt. The
    report, ``demo.png`` and ``plots/`` all draw this one summary.
    """
    from satmon.analysis import report
    from satmon.replay import heldout_regret

    held = full.curves.get("heldout_acc", [])
    regret = (heldout_regret([s for s, _ in held], [v for _, v in held], run.halt_step)
              if run.halted else 0.0)
    return report.ReplaySummary.from_records(
        full.monitor_trace, halt_step=run.halt_step, reason=run.reason, message=run.message,
        compute_saved=run.compute_saved, regret=float(regret))


def run_demo(*, out_dir: str | Path = "satmon-demo", settings: Sequence[str] = DEMO_SETTINGS,
             seed: int = 0, steps: int | None = None, progress: bool = True,
             echo: Callable[[str], None] | None = print) -> DemoResult:
    """Run the demo and write its folder.

    Parameters
    ----------
    out_dir:
        Output folder (created; runs from an earlier demo in it are replaced).
    settings:
        Names from :data:`satmon.lab.settings.SETTINGS`.
    seed:
        Seed of every run.
    steps:
        GRPO steps per run (default: each setting's own budget); a small value gives a quick
        smoke run.
    progress:
        Show the live display (rich progress bars); False prints one line per finished run.
    echo:
        Where status lines go (None: silent).
    """
    names = list(settings)
    if not names:
        raise ValueError(f"run_demo needs at least one setting. Settings: {sorted(SETTINGS)}.")
    chosen = [get_setting(n) for n in names]
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"The 'steps' parameter of run_demo must be None or an int >= 1. "
                             f"Got {steps!r} instead.")
        chosen = [s.with_overrides(max_steps=steps) for s in chosen]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_store(out)
    say = echo or (lambda _line: None)
    start = time.perf_counter()
    rows: list[DemoRow] = []
    say(f"satmon demo: {len(chosen)} settings, seed {seed}; MLflow store {uri}")
    with _Display(progress, say) as display:
        for setting in chosen:
            name = setting.name
            display.start(name, setting.max_steps)
            run = run_lab(setting, seed=seed, out_dir=out / "runs" / name,
                          action="halt_and_save", tracking_uri=uri,
                          experiment=DEMO_EXPERIMENT, run_name=name,
                          progress=display.update)
            display.finish(run)
            unhalted = run
            if run.halted:
                copy_name = f"{name} (unhalted copy)"
                display.start(copy_name, setting.max_steps)
                unhalted = run_lab(setting, seed=seed, out_dir=out / "runs" / f"{name}-unhalted",
                                   action="flag", tracking_uri=uri,
                                   experiment=DEMO_EXPERIMENT, run_name=copy_name,
                                   progress=display.update)
                display.finish(unhalted)
                _link_runs(uri, run, unhalted)
            rows.append(DemoRow(setting=setting, run=run, unhalted=unhalted))
    files = {"mlflow": str(out / "mlflow.db")}
    files.update(write_demo_report(rows, out))
    result = DemoResult(rows=rows, out_dir=out, files=files,
                        wall_s=time.perf_counter() - start)
    (out / "summary.txt").write_text(result.summary() + "\n")
    (out / "summary.json").write_text(json.dumps(result.to_dict(), indent=2,
                                                 allow_nan=False) + "\n")
    return result


def _link_runs(uri: str, halted: LabRun, copy: LabRun) -> None:
    """Tag a halted run and its unhalted copy with each other's MLflow run id (and name)."""
    if not (halted.mlflow_run_id and copy.mlflow_run_id):
        return
    client = require("mlflow.tracking", feature="the demo's MLflow store").MlflowClient(uri)
    client.set_tag(halted.mlflow_run_id, "satmon.demo.unhalted_copy", copy.mlflow_run_id)
    client.set_tag(copy.mlflow_run_id, "satmon.demo.copy_of", halted.mlflow_run_id)


def write_demo_report(rows: Sequence[DemoRow], out: Path) -> dict[str, str]:
    """The post-hoc report and plots of the demo's full-length runs."""
    from satmon.analysis import plots
    from satmon.analysis import report as analysis_report

    runs = []
    live = {}
    for row in rows:
        full = row.unhalted.to_run()
        full.name = row.setting.name
        full.metadata["name"] = row.setting.name
        runs.append(full)
        live[full.name] = live_replay_summary(row.run, row.unhalted)
    # The report shows what the live callback decided (not a second, offline replay), so its
    # table, its figures and plots/ agree.
    report = analysis_report.build_report(runs, replay=False, replays=live)
    written = report.write(out / "report", formats=("html", "md", "csv"))
    files = {"report": str(written["html"])}
    fig, _ = plots.plot_grid(runs, replays=live, max_cols=2)
    # Above the panel titles: bbox_inches="tight" in save_figure keeps it in the image.
    fig.suptitle("satmon demo: what the live callback decided", y=1.03)
    plots.save_figure(fig, out / "demo.png")
    files["plot"] = str(out / "demo.png")
    (out / "plots").mkdir(exist_ok=True)
    for run in runs:
        fig, _ = plots.plot_run(run, replay=live[run.name],
                                title=f"{run.name}: {SETTINGS[run.name].description}"
                                if run.name in SETTINGS else run.name)
        plots.save_figure(fig, out / "plots" / f"{run.name}.png")
    return files
