"""``satmon report`` and ``satmon plot`` end to end: files written, real logs, bad sources."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from satmon import analyze_saturation
from satmon.analysis import read_run
from satmon.cli import main


def write_tidy(path: Path, t_full: int, *, total: int = 200, heldout=None, train=True) -> Path:
    """A tidy ``step,metric,value`` log: a ramp to 1.0 at ``t_full`` and sparse held-out."""
    lines = ["step,metric,value"]
    if train:
        lines += [f"{s},train_reward,{min(1.0, s / t_full):.6f}" for s in range(1, total + 1)]
    for name, values in (heldout or {}).items():
        metric = "heldout_acc" if len(heldout) == 1 else f"heldout_acc/{name}"
        lines += [f"{25 * i},{metric},{v}" for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture
def logs(tmp_path):
    acc = {"math": [0.1, 0.2, 0.3, 0.4, 0.45, 0.45, 0.46, 0.45, 0.44],
           "gpqa": [0.2, 0.2, 0.25, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]}
    small = {"math": [0.1, 0.15, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2],
             "gpqa": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]}
    return {
        "n64": write_tidy(tmp_path / "n64.csv", 120, heldout=acc),
        "n8": write_tidy(tmp_path / "n8.csv", 40, heldout=small),
        "bare": write_tidy(tmp_path / "bare.csv", 60),
    }


def test_report_writes_every_format_with_groups(tmp_path, logs, capsys):
    groups = tmp_path / "groups.toml"
    groups.write_text('[groups]\nin_domain = ["math"]\nout_of_domain = ["gpqa"]\n\n'
                      '[[pairs]]\nlarge = "n64"\nsmall = "n8"\n')
    out = tmp_path / "report"
    rc = main(["report", *map(str, logs.values()), "--out", str(out), "--groups", str(groups),
               "--format", "html,md,csv,json", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.html", "report.json",
                                                     "report.md"]
    assert "satmon report: 3 run(s)" in printed and "wrote " in printed
    assert "bare: no held-out series" in printed
    rows = read_csv_rows(out / "report.csv")
    by = {(r["run"], r["heldout"]): r for r in rows}
    assert set(by) == {("n64", "math"), ("n64", "gpqa"), ("n8", "math"), ("n8", "gpqa"),
                       ("bare", "")}
    for name, path in logs.items():
        a = analyze_saturation(read_run(path))
        row = next(r for r in rows if r["run"] == name)
        assert row["t_sat"] == str(a.t_sat)
        for g in a.gains.values():
            assert float(by[(name, g.name)]["delta_sat"]) == pytest.approx(g.delta_sat)
    # Replay columns are filled: the monitor ran on every run.
    assert all(r["compute_saved"] != "" for r in rows)
    data = json.loads((out / "report.json").read_text())
    (pair,) = data["pairs"]
    assert pair["error"] is None and pair["gap"]["t_sat_small"] == 40
    assert set(pair["gap"]["groups"]) == {"in_domain", "out_of_domain"}
    md = (out / "report.md").read_text()
    assert "## Data gap G_sat" in md and "## Benchmark groups" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # overview + three runs


def test_report_format_subset_and_bad_options(tmp_path, logs, capsys):
    out = tmp_path / "md-only"
    assert main(["report", str(logs["n8"]), "--out", str(out), "--format", "md",
                 "--no-replay"]) == 0
    assert [p.name for p in out.iterdir()] == ["report.md"]
    assert "monitor replay off" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["report", str(logs["n8"]), "--out", str(out), "--format", "html,docx"]) == 2
    assert "unknown report format(s) ['docx']" in capsys.readouterr().err
    assert main(["report", str(logs["n8"]), "--out", str(out), "--run-id", "abc"]) == 2
    assert "needs --log-to-mlflow" in capsys.readouterr().err
    assert main(["report", str(logs["n8"]), "--out", str(out), "--groups",
                 str(tmp_path / "missing.toml"), "--no-replay"]) == 2
    assert "missing.toml' does not exist" in capsys.readouterr().err


def test_unreadable_sources(tmp_path, logs, capsys):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 8)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    out = tmp_path / "r"
    assert main(["report", str(logs["n8"]), str(garbage), "--out", str(out),
                 "--no-replay"]) == 2
    err = capsys.readouterr().err
    assert f"cannot read '{garbage}'" in err and not out.exists()
    assert main(["report", str(logs["n8"]), str(garbage), str(empty), "--out", str(out),
                 "--no-replay", "--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    assert f"skipped '{garbage}'" in captured.err and f"skipped '{empty}'" in captured.err
    assert "satmon report: 1 run(s)" in captured.out
    assert main(["report", str(garbage), "--out", str(out), "--skip-unreadable"]) == 2
    assert "none of the sources could be read" in capsys.readouterr().err


def test_report_where_no_run_can_be_analysed(tmp_path, capsys):
    nan_log = tmp_path / "nan.csv"
    nan_log.write_text("step,metric,value\n1,train_reward,nan\n2,train_reward,nan\n")
    out = tmp_path / "r"
    assert main(["report", str(nan_log), "--out", str(out), "--format", "csv"]) == 2
    (row,) = read_csv_rows(out / "report.csv")
    assert "no finite training reward" in row["error"]
    assert "1 not analysed" in capsys.readouterr().out


def test_resumed_log_with_overlapping_steps(tmp_path, capsys):
    # verl-style JSONL of a run that crashed after step 120 and resumed from step 100.
    lines = [json.dumps({"step": s, "data": {"critic/score/mean": min(1.0, s / 150)}})
             for s in range(1, 121)]
    lines += [json.dumps({"step": s, "data": {"critic/score/mean": min(1.0, s / 90)}})
              for s in range(100, 241)]
    lines += [json.dumps({"step": s, "data": {"val-core/math/acc/mean@1": 0.1 + s / 1000}})
              for s in (0, 50, 100, 150, 200)]
    log = tmp_path / "resumed.jsonl"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r"
    assert main(["report", str(log), "--out", str(out), "--format", "csv", "--no-replay"]) == 0
    (row,) = read_csv_rows(out / "report.csv")
    # The resumed values (s / 90) already exceed 0.99 at step 100; had the first attempt's
    # values (s / 150) been kept for 100..120, t_sat would be 121.
    assert row["t_sat"] == "100"
    assert "21 repeated step(s) 100..120: later values kept" in row["notes"]


def test_report_on_the_real_logs(tmp_path, real_logs, capsys):
    files = sorted((real_logs / "raw").iterdir())
    out = tmp_path / "real"
    assert main(["report", *map(str, files), "--out", str(out), "--format", "csv,html",
                 "--no-replay", "--max-run-plots", "2"]) == 0
    rows = read_csv_rows(out / "report.csv")
    assert sorted({r["run"] for r in rows}) == sorted(read_run(f).name for f in files)
    for f in files:
        run = read_run(f)
        a = analyze_saturation(run)
        mine = [r for r in rows if r["run"] == run.name]
        assert mine[0]["t_sat"] == ("" if not a.saturated else str(a.t_sat))
        assert mine[0]["T"] == str(a.last_step)
        if not run.heldout:  # the TRL console log has no evaluation
            assert "no held-out series" in mine[0]["notes"]
    assert (out / "report.html").read_text().count("data:image/png") == 3


def test_plot_single_run_and_grid(tmp_path, logs, real_logs, capsys):
    png = tmp_path / "one.png"
    assert main(["plot", str(logs["n64"]), "--out", str(png), "--dpi", "60"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    grid = tmp_path / "figs" / "grid.png"
    files = sorted((real_logs / "raw").iterdir())
    assert main(["plot", *map(str, files), "--out", str(grid), "--grid-cols", "format",
                 "--no-replay", "--dpi", "50"]) == 0
    assert grid.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["plot", str(logs["n8"]), "--out", str(tmp_path / "x.jpg")]) == 2
    assert "--out must end in .png, .svg or .pdf" in capsys.readouterr().err
    assert main(["plot", str(logs["n8"]), str(logs["n64"]), "--out", str(grid),
                 "--grid-rows", "model", "--no-replay"]) == 2
    assert "no metadata key 'model'" in capsys.readouterr().err
    svg = tmp_path / "one.svg"
    assert main(["plot", str(logs["n8"]), "--out", str(svg), "--heldout", "gpqa",
                 "--no-fit", "--no-replay"]) == 0
    assert "held-out: gpqa" in svg.read_text() and "held-out: math" not in svg.read_text()


def test_plot_grid_from_metadata_matches_files(tmp_path, logs):
    # The grid's panels follow the run names when --grid-cols name is given.
    out = tmp_path / "g.svg"
    assert main(["plot", *map(str, logs.values()), "--out", str(out), "--grid-cols", "name",
                 "--no-replay"]) == 0
    text = out.read_text()
    for name in ("bare", "n64", "n8"):
        assert f"name = {name}" in text
