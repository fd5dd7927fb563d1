"""``satmon report`` shows a pre-RL probe next to the run's analysis.

The probes are real :func:`satmon.probe.probe` results (a served "model" judged by the exact
judge, ``tests/_probe_support.endpoint_probe``), saved as ``probe.json`` in a lab run folder
or attached as ``run.metadata["probe"]``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from satmon import Run
from satmon.analysis import build_report, read_run
from satmon.analysis.report import PROBE_HEADER, observed_regime
from satmon.cli import main

from _probe_support import endpoint_probe

LAB_RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "lab_runs" / "generalizing" / "s0"


@pytest.fixture(scope="module")
def probes():
    return {"generalizing": endpoint_probe(faithful=True),
            "memorizing": endpoint_probe(faithful=False)}


def _flat_run(name="flat"):
    steps = np.arange(1, 301)
    reward = np.minimum(1.0, 0.2 + steps / 60)
    evals = np.arange(0, 301, 25)
    held = 0.30 + 0.004 * np.sin(evals)
    return Run(train_reward=(steps, reward), heldout={"math": (evals, held)}, name=name)


@pytest.fixture
def lab_folder(tmp_path, probes):
    folder = tmp_path / "generalizing-s0"
    shutil.copytree(LAB_RUN, folder)
    probes["generalizing"].save(folder / "probe.json")
    return folder


def test_probe_json_in_a_lab_run_folder_is_shown(lab_folder):
    run = read_run(lab_folder)
    rep = build_report([run], replay=False)
    rows = rep.probe_rows()
    assert len(rows) == 1
    name, faith, ci, acc, fdiv, predicted, observed, agrees = rows[0]
    assert (faith, ci, acc) == ("1", "1-1", "1")  # satmon.results.format_number
    assert (predicted, observed, agrees) == ("generalizing", "generalizing", "yes")
    note = next(n for n in rep[run.name].all_notes() if n.startswith("pre-RL probe"))
    assert "faithfulness 1 (95% CI 1-1) on 4 prompts x 4 rollouts" in note and "agrees" in note
    assert str(lab_folder / "probe.json") in note
    # Every rendering carries it.
    assert "Pre-RL probe" in rep.to_markdown() and "Pre-RL probe" in rep.to_html()
    assert "pre-RL probe" in rep.summary()
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert d["runs"][0]["probe"]["agrees"] is True
    assert d["runs"][0]["probe"]["faithfulness"] == 1.0


def test_probe_in_run_metadata_and_disagreement(probes):
    mem = _flat_run("flat-mem")
    mem.metadata["probe"] = probes["memorizing"].to_dict()
    gen = _flat_run("flat-gen")
    gen.metadata["probe"] = probes["generalizing"].to_dict()
    bare = _flat_run("bare")
    rep = build_report([mem, gen, bare], replay=False)
    rows = {r[0]: r for r in rep.probe_rows()}
    assert set(rows) == {"flat-mem", "flat-gen"}
    assert rows["flat-mem"][PROBE_HEADER.index("faithfulness")] == "0.25"
    assert rows["flat-mem"][5:] == ["memorizing", "memorizing", "yes"]
    assert rows["flat-gen"][5:] == ["generalizing", "memorizing", "no"]
    assert any("DISAGREES" in n for n in rep["flat-gen"].all_notes())
    assert rep["bare"].to_dict()["probe"] is None
    observed, why = observed_regime(rep["flat-mem"].analysis)
    assert observed == "memorizing" and "< 0.05" in why


def test_unreadable_probe_is_a_note_not_a_failure(tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(LAB_RUN, folder)
    (folder / "probe.json").write_text("{not json", encoding="utf-8")
    run = read_run(folder)
    rep = build_report([run], replay=False)
    assert rep.probe_rows() == [] and rep[run.name].ok
    assert any(n.startswith("pre-RL probe not shown") for n in rep[run.name].all_notes())
    other = _flat_run()
    other.metadata["probe"] = {"faithfulness": 0.9}
    rep = build_report([other], replay=False)
    assert any("not a satmon probe result" in n for n in rep["flat"].all_notes())


def test_cli_report_shows_the_probe(lab_folder, tmp_path):
    out = tmp_path / "out"
    assert main(["report", str(lab_folder), "--out", str(out), "--format", "md",
                 "--no-replay"]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Pre-RL probe" in md and "| generalizing | generalizing | yes |" in md
