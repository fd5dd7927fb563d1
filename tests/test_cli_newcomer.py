"""The CLI as a newcomer meets it: one input-format flag, quiet pipes, misspelled keys that get a
suggestion, metadata for grids, and exports that keep names and read back."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from satmon.analysis import read_run
from satmon.analysis.export import tidy_csv_text
from satmon.analysis.readers import MissingKeyError
from satmon.analysis.readers.run_metadata import (attach_metadata, parse_assignments,
                                                  read_metadata_table)
from satmon.cli import EXIT_BROKEN_PIPE, main
from satmon.keys import KeyMap, UnknownKeyError

T = 120
REWARD = [0.2 + 0.75 * (1 - math.exp(-s / 15)) for s in range(1, T + 1)]
HELD = {s: 0.3 + 0.2 * (1 - math.exp(-s / 20)) for s in range(0, T + 1, 10)}


def _wide(path: Path, *, heldout=("acc",)) -> Path:
    cols = ["step", "reward", *(f"eval_rewards/{h}/mean" for h in heldout), "entropy"]
    rows = [",".join(cols)]
    rows += [",".join([str(s), str(REWARD[s - 1]) if s else "",
                       *(str(HELD.get(s, "")) for _ in heldout), "0.3"]) for s in range(0, T + 1)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _verl_jsonl(path: Path, *, extra: bool = False) -> Path:
    with path.open("w") as fh:
        for s in range(0, T + 1):
            data = {"critic/score/mean": REWARD[s - 1]} if s else {}
            if extra and s:
                data.update({"actor/pg_loss": -0.01 * s, "critic/score/max": 1.0})
            if s in HELD:
                data["val-core/openai/gsm8k/reward/mean@1"] = HELD[s]
            fh.write(json.dumps({"step": s, "data": data}) + "\n")
    return path


def _tidy(path: Path, t_full: int) -> Path:
    lines = ["step,metric,value"]
    lines += [f"{s},train_reward,{min(1.0, s / t_full):.6f}" for s in range(1, 201)]
    lines += [f"{25 * i},heldout_acc,{0.1 + 0.02 * i}" for i in range(9)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _one_error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"satmon {command}: error: ") and "Traceback" not in err
    return lines[0]


# -- --input-format and the deprecated --format ------------------------------------------------

def test_input_format_in_every_reading_command(tmp_path, capsys):
    path = tmp_path / "custom.txt"
    path.write_text("step,acc_train,acc_test\n" + "\n".join(
        f"{s},{REWARD[s - 1]},{HELD.get(s, '')}" for s in range(1, T + 1)))
    keys = ["--train-key", "acc_train", "--heldout-key", "acc_test"]
    assert main(["analyze", str(path), "--input-format", "wide-csv", *keys]) == 0
    assert main(["export", str(path), "--out", str(tmp_path / "o.csv"), "--input-format",
                 "wide-csv", *keys]) == 0
    assert main(["plot", str(path), "--out", str(tmp_path / "p.png"), "--input-format",
                 "wide-csv", *keys, "--no-replay", "--dpi", "40"]) == 0
    assert main(["report", str(path), "--out", str(tmp_path / "r"), "--input-format",
                 "wide-csv", *keys, "--format", "csv", "--no-replay", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "deprecated" not in err
    # A forced format that does not fit the content is refused with the format named.
    assert main(["analyze", str(path), "--input-format", "jsonl"]) == 2
    assert "custom.txt" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["analyze", "export", "plot"])
def test_format_is_a_deprecated_alias_of_input_format(tmp_path, capsys, command):
    path = _wide(tmp_path / "w.csv")
    extra = {"analyze": [], "export": ["--out", str(tmp_path / "o.csv")],
             "plot": ["--out", str(tmp_path / "p.png"), "--no-replay", "--dpi", "40"]}[command]
    assert main([command, str(path), "--format", "wide-csv", *extra]) == 0
    err = capsys.readouterr().err
    notes = [ln for ln in err.splitlines() if ": note: " in ln]
    assert notes == [f"satmon {command}: note: --format for the input format is deprecated; "
                     "use --input-format wide-csv"]
    # The alias really is the input format: a wrong one fails as --input-format would.
    assert main([command, str(path), "--format", "xlsx", *extra]) == 2
    assert "'format' parameter must be" in capsys.readouterr().err


def test_report_format_still_names_the_output_formats(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", str(_wide(tmp_path / "w.csv")), "--out", str(out), "--format", "md",
                 "--no-replay", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    assert "deprecated" not in capsys.readouterr().err


# -- broken pipe ----------------------------------------------------------------------------

def _satmon_into_early_closing_reader(args: list[str]) -> subprocess.CompletedProcess:
    """``satmon ARGS | python -c 'read one line'``: the reader exits while satmon writes."""
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys; from satmon.cli import main; sys.exit(main())",
         *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"],
                              stdin=writer.stdout)
    writer.stdout.close()  # only the reader holds the pipe's read end now
    reader.wait(timeout=120)
    err = writer.stderr.read().decode()
    writer.wait(timeout=120)
    writer.stderr.close()
    return subprocess.CompletedProcess(args, writer.returncode, "", err)


def test_analyze_into_a_pipe_that_closes_early_exits_quietly(tmp_path):
    # Enough held-out series that the JSON is far larger than a pipe buffer (64 KiB).
    names = [f"b{i:03d}" for i in range(400)]
    lines = ["step,train_reward," + ",".join(f"heldout_acc/{n}" for n in names)]
    for s in range(0, T + 1, 10):
        lines.append(f"{s},{REWARD[s - 1] if s else ''}," + ",".join(
            str(HELD[s]) for _ in names))
    path = tmp_path / "wide.csv"
    path.write_text("\n".join(lines) + "\n")
    done = _satmon_into_early_closing_reader(["analyze", str(path), "--json"])
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.stderr == ""
    assert done.returncode == EXIT_BROKEN_PIPE == 141


def test_export_to_stdout_into_a_pipe_that_closes_early(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("step,train_reward\n" + "\n".join(f"{s},{(s % 97) / 97}"
                                                      for s in range(1, 20001)) + "\n")
    done = _satmon_into_early_closing_reader(["export", str(path), "--out", "-"])
    assert done.stderr == "" and done.returncode == 141


# -- misspelled keys ------------------------------------------------------------------------

def test_misspelled_key_in_python_is_a_clean_key_error_with_a_suggestion(tmp_path):
    path = _wide(tmp_path / "w.csv")
    with pytest.raises(KeyError) as info:
        read_run(path, train_key="rewrad")
    exc = info.value
    assert isinstance(exc, MissingKeyError) and isinstance(exc, UnknownKeyError)
    assert isinstance(exc, ValueError)  # still a ReadError
    text = str(exc)
    assert "Did you mean 'reward'?" in text
    assert not text.startswith(("'", '"'))  # not KeyError's quoted repr
    assert text.startswith(f"{path}: The training-reward key 'rewrad' is not in the log.")
    assert exc.suggestions == ["reward"] and exc.key == "rewrad"
    # A misspelled held-out key and the KeyMap itself.
    with pytest.raises(KeyError, match=r"Did you mean 'eval_rewards/acc/mean'\?"):
        read_run(path, heldout_keys=["eval_rewards/ac/mean"])
    with pytest.raises(UnknownKeyError) as info:
        KeyMap(train_key="Reward").resolve(["reward", "loss"])
    assert str(info.value).startswith("The training-reward key 'Reward' is not in the log. "
                                      "Did you mean 'reward'?")
    # A held-out name asked of a run.
    run = read_run(path)
    with pytest.raises(KeyError, match=r"Did you mean 'acc'\?"):
        run.require_heldout("ac")


def test_misspelled_key_on_the_cli_gets_the_suggestion_in_one_line(tmp_path, capsys):
    path = _wide(tmp_path / "w.csv")
    for command, extra in (("analyze", []), ("export", ["--out", str(tmp_path / "o.csv")]),
                           ("report", ["--out", str(tmp_path / "r"), "--no-progress"])):
        assert main([command, str(path), "--train-key", "rewrad", *extra]) == 2
        line = _one_error_line(capsys.readouterr().err, command)
        assert "Did you mean 'reward'?" in line and "Keys found" in line


# -- metadata -------------------------------------------------------------------------------

def test_meta_assignments_and_table_parsing(tmp_path):
    assert parse_assignments(["model=qwen", "seed=3", "lr=1e-6", "note=a=b"]) == {
        "model": "qwen", "seed": 3, "lr": 1e-6, "note": "a=b"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignments(["model"])
    table = tmp_path / "meta.csv"
    table.write_text("run,model,setting,seed\nn8,qwen,n=8,1\nn64,qwen,n=64,\n")
    assert read_metadata_table(table) == {"n8": {"model": "qwen", "setting": "n=8", "seed": 1},
                                          "n64": {"model": "qwen", "setting": "n=64"}}
    as_json = tmp_path / "meta.json"
    as_json.write_text(json.dumps([{"run": "n8", "model": "llama"}]))
    assert read_metadata_table(as_json) == {"n8": {"model": "llama"}}
    as_json.write_text(json.dumps({"n8": {"model": "llama"}}))
    assert read_metadata_table(as_json) == {"n8": {"model": "llama"}}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,model\nn8,qwen\n")
    with pytest.raises(ValueError, match="needs a 'run' column"):
        read_metadata_table(bad)
    bad.write_text("run,model\nn8,qwen\nn8,llama\n")
    with pytest.raises(ValueError, match="appears twice"):
        read_metadata_table(bad)
    # The command line wins over the table, which wins over what the source said.
    run = read_run(_tidy(tmp_path / "n8.csv", 40))
    run.metadata["model"] = "from-source"
    assert attach_metadata([run], {"seed": 9}, {"n8": {"model": "qwen", "seed": 1},
                                                "zz": {}}) == ["zz"]
    assert (run.metadata["model"], run.metadata["seed"]) == ("qwen", 9)


def test_grid_by_model_and_setting_from_meta_file_and_meta(tmp_path, capsys):
    logs = [_tidy(tmp_path / f"{n}.csv", t) for n, t in (("n8", 40), ("n64", 120),
                                                          ("m8", 50), ("m64", 130))]
    table = tmp_path / "meta.csv"
    table.write_text("run,model,setting\nn8,qwen,n=8\nn64,qwen,n=64\nm8,llama,n=8\n"
                     "m64,llama,n=64\nghost,llama,n=1\n")
    svg = tmp_path / "grid.svg"
    assert main(["plot", *map(str, logs), "--out", str(svg), "--grid-rows", "model",
                 "--grid-cols", "setting", "--meta-file", str(table), "--meta", "team=rl",
                 "--no-replay", "--no-progress"]) == 0
    text = svg.read_text()
    for title in ("model = qwen", "model = llama", "setting = n=8", "setting = n=64"):
        assert title in text, title
    err = capsys.readouterr().err
    # The table row that matches no run is named, with the runs that were read.
    assert "no run named 'ghost'" in err and "'n8'" in err
    # The report gets the same metadata as columns.
    out = tmp_path / "report"
    assert main(["report", *map(str, logs), "--out", str(out), "--format", "csv",
                 "--meta-file", str(table), "--meta", "team=rl", "--no-replay",
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert {r["run"]: (r["meta.model"], r["meta.setting"], r["meta.team"]) for r in rows} == {
        "n8": ("qwen", "n=8", "rl"), "n64": ("qwen", "n=64", "rl"),
        "m8": ("llama", "n=8", "rl"), "m64": ("llama", "n=64", "rl")}
    # analyze shows them in its JSON.
    capsys.readouterr()
    assert main(["analyze", str(logs[0]), "--json", "--meta", "model=qwen"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["model"] == "qwen"


def test_missing_grid_key_lists_keys_and_suggests(tmp_path, capsys):
    logs = [_tidy(tmp_path / f"{n}.csv", t) for n, t in (("n8", 40), ("n64", 120))]
    assert main(["plot", *map(str, logs), "--out", str(tmp_path / "g.png"), "--grid-rows",
                 "modle", "--meta", "model=qwen", "--no-replay", "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err, "plot")
    assert "has no metadata key 'modle'" in line and "Did you mean 'model'?" in line
    assert "'format'" in line and "--meta KEY=VALUE" in line
    # The report refuses before analysing anything, with the same message.
    assert main(["report", *map(str, logs), "--out", str(tmp_path / "r"), "--grid-cols",
                 "setting", "--meta", "settings=a", "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err, "report")
    assert "no metadata key 'setting'" in line and "Did you mean 'settings'?" in line
    assert not (tmp_path / "r").exists()
    # The plotting API raises the same KeyError.
    from satmon.analysis.plots import plot_grid

    runs = [read_run(p) for p in logs]
    with pytest.raises(KeyError, match=r"Did you mean 'format'\?") as info:
        plot_grid(runs, rows="formt")
    assert str(info.value).startswith("Run 'n8' has no metadata key 'formt'.")


# -- export names ---------------------------------------------------------------------------

def test_export_keeps_the_benchmark_name_with_heldout_names(tmp_path, capsys):
    src = _verl_jsonl(tmp_path / "verl.jsonl")
    plain, named = tmp_path / "plain.csv", tmp_path / "named.csv"
    assert main(["export", str(src), "--out", str(plain)]) == 0
    assert main(["export", str(src), "--out", str(named), "--heldout-names"]) == 0
    err = capsys.readouterr().err
    assert "heldout_acc/openai/gsm8k (held-out 'openai/gsm8k')" in err
    # Default: the reference layout (one series is heldout_acc); the option keeps the name.
    assert ",heldout_acc," in plain.read_text() and "openai" not in plain.read_text()
    assert ",heldout_acc/openai/gsm8k," in named.read_text()
    original = read_run(src)
    back = read_run(named)
    assert list(back.heldout) == list(original.heldout) == ["openai/gsm8k"]
    assert back.heldout["openai/gsm8k"].values.tolist() == pytest.approx(
        original.heldout["openai/gsm8k"].values.tolist(), rel=1e-5)
    assert list(read_run(plain).heldout) == ["heldout_acc"]


def test_export_of_several_series_keeps_each_name(tmp_path, capsys):
    src = _wide(tmp_path / "w.csv", heldout=("math", "gpqa"))
    out = tmp_path / "o.csv"
    assert main(["export", str(src), "--out", str(out)]) == 0
    back = read_run(out)
    assert sorted(back.heldout) == ["gpqa", "math"]
    assert back.metadata["preset"] == "tidy"


def test_export_all_metrics_writes_every_original_key_and_reads_back(tmp_path, capsys):
    src = _verl_jsonl(tmp_path / "verl.jsonl", extra=True)
    out = tmp_path / "all.csv"
    assert main(["export", str(src), "--out", str(out), "--all-metrics",
                 "--heldout-names"]) == 0
    assert "and 2 other key(s)" in capsys.readouterr().err
    metrics = {row["metric"] for row in csv.DictReader(out.open())}
    assert metrics == {"train_reward", "heldout_acc/openai/gsm8k", "actor/pg_loss",
                       "critic/score/max"}
    # The mapped keys are written under their canonical names only, and the file reads back
    # as satmon's tidy names although it holds verl keys too.
    back = read_run(out, all_metrics=True)
    assert back.metadata["preset"] == "tidy"
    assert back.aux["actor/pg_loss"].values.tolist() == pytest.approx(
        [-0.01 * s for s in range(1, T + 1)])
    assert read_run(src, all_metrics=True).aux.keys() == back.aux.keys()


def test_export_writes_sample_sizes_that_read_back(tmp_path):
    state = tmp_path / "trainer_state.json"
    history = [{"reward": REWARD[s - 1], "step": s} for s in range(1, T + 1)]
    history += [{"satmon/heldout/gsm8k": v, "satmon/heldout/gsm8k/n": 500, "step": s}
                for s, v in HELD.items()]
    state.write_text(json.dumps({"global_step": T, "log_history": history}))
    run = read_run(state)
    assert run.heldout["gsm8k"].sample_size == 500
    text = tidy_csv_text(run)
    assert "0,heldout_acc/n,500\n" in text
    back = read_run(io_path(tmp_path / "e.csv", text))
    assert list(back.heldout) == ["heldout_acc"] and back.heldout["heldout_acc"].sample_size == 500
    named = read_run(io_path(tmp_path / "n.csv", tidy_csv_text(run, heldout_names=True)))
    assert list(named.heldout) == ["gsm8k"] and named.heldout["gsm8k"].sample_size == 500


def io_path(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["satmon.analysis.readers.run_metadata",
                                  "satmon.analysis.export", "satmon.analysis.readers.console"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
