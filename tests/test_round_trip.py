"""satmon reads back what it writes: a real lab run folder and its checkpoint, and a replay of
what was read makes the live callback's decisions.

One tiny memorization run (30 GRPO steps, held-out every 3) is trained twice with the same seed
through :func:`satmon.lab.runner.run_lab`: once halted by the callback (``halt_and_save``: a
``checkpoint-N/`` with the Trainer's ``trainer_state.json`` and satmon's state file) and once as
its unhalted copy (``flag``). The monitor parameters are shortened to fit 30 steps (a warm-up of
6 steps, 3 held-out points); they are recorded in ``run.json`` like any others.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("mlflow")

from satmon.analysis import read_run, read_runs  # noqa: E402
from satmon.analysis.report import live_monitor_options, replay_run  # noqa: E402
from satmon.cli import main  # noqa: E402
from satmon.lab.runner import run_lab, tracking_store  # noqa: E402
from satmon.lab.settings import get_setting  # noqa: E402
from satmon.replay import replay  # noqa: E402

STEPS, EVERY = 30, 3
MONITOR = {"warmup_steps": 6, "min_heldout_points": 3, "end_margin": 5, "refit_every": 5,
           "risk": 0.05}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The halted run and its unhalted copy, in a ``runs/`` folder as the demo lays it out."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("roundtrip")
    setting = get_setting("memorizing").with_overrides(max_steps=STEPS, eval_every=EVERY)
    uri = tracking_store(root)
    try:
        halted = run_lab(setting, seed=0, out_dir=root / "runs" / "memorizing",
                         action="halt_and_save", tracking_uri=uri, monitor=MONITOR,
                         run_name="memorizing")
        copy = run_lab(setting, seed=0, out_dir=root / "runs" / "memorizing-unhalted",
                       action="flag", tracking_uri=uri, monitor=MONITOR,
                       run_name="memorizing-unhalted")
    finally:
        torch.set_num_threads(before)
    assert halted.halted and halted.checkpoint is not None, halted.message
    assert not copy.halted and copy.steps_run == STEPS
    return {"root": root, "halted": halted, "copy": copy, "setting": setting}


def _decisions(result) -> dict[int, tuple[str, str | None]]:
    return {int(d.step): (d.action.value, None if d.reason is None else d.reason.value)
            for d in result.decisions}


def _live(trace) -> dict[int, tuple[str, str | None]]:
    return {int(t["step"]): (t["action"], t["reason"]) for t in trace}


def test_run_json_records_the_live_monitor_config(lab):
    facts = json.loads((lab["halted"].out_dir / "run.json").read_text())
    config = facts["monitor_config"]
    assert config["total_steps"] == STEPS and config["eval_every"] == EVERY
    assert all(config[k] == v for k, v in MONITOR.items())
    assert facts["model"].startswith("tiny-llama-") and facts["setting"] == "memorizing"


def test_lab_run_folder_reads_back_with_name_metadata_and_sample_size(lab):
    halted = lab["halted"]
    n = lab["setting"].n_heldout
    for source in (halted.out_dir, halted.out_dir / "curves.csv"):
        run = read_run(source)
        # The folder holds checkpoint-N/ too, but reads as the lab run: curves.csv is the record.
        assert run.metadata["format"] == "lab-run"
        assert run.name == "memorizing"
        assert run.metadata["setting"] == "memorizing" and run.metadata["seed"] == 0
        assert run.metadata["halted"] is True and run.metadata["halt_step"] == halted.halt_step
        assert run.last_step == halted.halt_step
        assert run.heldout["heldout_acc"].sample_size == n
        assert len(run.heldout["heldout_acc"]) == len(halted.curves["heldout_acc"])
        assert "train_true_accuracy" in run.aux
    names = sorted(r.name for r in read_runs(lab["root"] / "runs"))
    assert names == ["memorizing", "memorizing-unhalted"]


def test_checkpoint_and_trainer_state_read_back_with_heldout_and_sample_size(lab):
    halted = lab["halted"]
    checkpoint = Path(halted.checkpoint)
    assert checkpoint.name == f"checkpoint-{halted.halt_step}"
    for source in (checkpoint, checkpoint / "trainer_state.json"):
        run = read_run(source)
        assert run.metadata["format"] == "trainer-state"
        assert run.name == "memorizing"
        # The callback's evaluator values reached the Trainer's log_history, with their size.
        held = run.heldout["heldout"]
        assert held.sample_size == lab["setting"].n_heldout
        assert held.values.tolist() == pytest.approx([v for _, v in halted.curves["heldout_acc"]])
        assert run.metadata["monitor_config"]["total_steps"] == STEPS
        assert run.metadata["satmon_stopped_step"] == halted.halt_step


def test_replay_of_what_was_read_makes_the_live_decisions(lab):
    halted = lab["halted"]
    live_trace = _live(halted.monitor_trace)
    state = json.loads((Path(halted.checkpoint) / "satmon_state.json").read_text())
    live_rows = {int(r["step"]): (r["action"], r["reason"]) for r in state["rows"]}
    for source in (halted.out_dir, Path(halted.checkpoint)):
        run = read_run(source)
        result = replay(run, **live_monitor_options(run))
        assert result.halt_step == halted.halt_step
        assert result.reason.value == halted.reason
        replayed = _decisions(result)
        # Every update of the live monitor, as the checkpoint's state file records them.
        assert replayed == live_rows
        assert {s: replayed[s] for s in live_trace} == live_trace
        # What `satmon report` and `satmon plot` run.
        summary = replay_run(run)
        assert (summary.halt_step, summary.reason) == (halted.halt_step, halted.reason)


def test_replay_of_the_unhalted_copy_halts_where_the_live_monitor_asked_to(lab):
    copy = lab["copy"]
    first = copy.first_halt_decision
    assert first is not None, "the live monitor of the flag run never asked to halt"
    run = read_run(copy.out_dir)
    assert run.last_step == STEPS
    summary = replay_run(run)
    assert (summary.halt_step, summary.reason) == (first["step"], first["reason"])
    # Without stopping at the halt, every decision equals the live one.
    full = replay(run, stop_at_halt=False, **live_monitor_options(run))
    assert {s: _decisions(full)[s] for s in _live(copy.monitor_trace)} == _live(copy.monitor_trace)
    # Same seed, same steps: the halted run is the copy cut at the halt.
    assert first["step"] == lab["halted"].halt_step


def test_report_and_plot_cli_on_the_runs_folder(lab, tmp_path, capsys):
    runs = lab["root"] / "runs"
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--format", "csv,md",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "curves" not in printed
    with (out / "report.csv").open() as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == ["memorizing", "memorizing-unhalted"]
    halted = lab["halted"]
    for name, row in rows.items():
        assert row["meta.setting"] == "memorizing" and row["meta.seed"] == "0"
        # The replay of each run halts where the live callback halted (or asked to).
        assert row["halt_step"] == str(halted.halt_step) and row["halt_reason"] == halted.reason
    assert rows["memorizing"]["meta.halted"] == "True"
    assert rows["memorizing-unhalted"]["meta.action"] == "flag"
    # The README's grid by model and setting works on lab runs: both come from run.json.
    png = tmp_path / "grid.png"
    assert main(["plot", str(runs), "--out", str(png), "--grid-rows", "model",
                 "--grid-cols", "setting", "--no-progress", "--dpi", "50"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    # analyze on a lab run folder: its name and facts, the sample size.
    assert main(["analyze", str(halted.out_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run"] == "memorizing" and result["metadata"]["setting"] == "memorizing"
    assert result["heldout_sample_sizes"] == {"heldout_acc": lab["setting"].n_heldout}


def test_export_of_the_checkpoint_reads_back(lab, tmp_path, capsys):
    checkpoint = Path(lab["halted"].checkpoint)
    out = tmp_path / "ckpt.csv"
    assert main(["export", str(checkpoint), "--out", str(out), "--heldout-names"]) == 0
    capsys.readouterr()
    text = out.read_text()
    assert ",heldout_acc/heldout," in text and ",heldout_acc/heldout/n," in text
    original, back = read_run(checkpoint), read_run(out)
    assert back.heldout["heldout"].sample_size == original.heldout["heldout"].sample_size
    assert back.heldout["heldout"].values.tolist() == pytest.approx(
        original.heldout["heldout"].values.tolist(), rel=1e-5)
    assert back.train_reward.values.tolist() == pytest.approx(
        original.train_reward.values.tolist(), rel=1e-5)
