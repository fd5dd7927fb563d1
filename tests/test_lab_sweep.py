"""``satmon lab sweep`` writes logs that ``benchmarks/bench_lab.py`` scores like real logs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("mlflow")

from satmon.cli import main  # noqa: E402
from satmon.lab.runner import read_lab_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _bench_lab():
    spec = importlib.util.spec_from_file_location("bench_lab", REPO / "benchmarks" /
                                                  "bench_lab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sweep_logs_feed_the_lab_benchmark(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    out = tmp_path / "sweep"
    try:
        assert main(["lab", "sweep", "--out", str(out), "--settings", "memorizing",
                     "--seeds", "0-1", "--steps", "20", "--no-mlflow-curves"]) == 0
    finally:
        torch.set_num_threads(before)
    printed = capsys.readouterr().out
    assert "regenerate with: satmon lab sweep" in printed
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["command"].endswith("--settings memorizing --seeds 0,1 --steps 20")
    assert [r["path"] for r in sweep["runs"]] == ["memorizing/s0", "memorizing/s1"]
    # Only the small text logs remain.
    assert not (out / "mlflow.db").exists() and not (out / "mlartifacts").exists()
    for seed in (0, 1):
        folder = out / "memorizing" / f"s{seed}"
        assert sorted(p.name for p in folder.iterdir()) == ["curves.csv", "run.json"]
        run = read_lab_run(folder)
        assert run.last_step == 20 and run.metadata["seed"] == seed
        assert "train_true_accuracy" in run.aux

    bench = _bench_lab()
    assert bench.main(["--runs", str(out)]) == 0
    table = capsys.readouterr().out
    for heading in ("Table L1", "Table L2", "Table L3", "Table L4", "Table L5"):
        assert heading in table
    row = bench.score_run(out / "memorizing" / "s0")
    assert row["setting"] == "memorizing" and row["T"] == 20 and row["expected"] == "memorizing"
    assert 0.0 <= row["compute_saved"] <= 1.0

    assert bench.main(["--runs", str(tmp_path / "empty")]) == 2
