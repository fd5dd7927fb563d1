"""Fault injection into the readers (issue "Reliability", items 3, 4 and 9).

3. A damaged TensorBoard event file (a flipped byte, a cut) is read up to its last good record
   and the partial read is reported: a warning, ``run.metadata``, a CLI note; ``--strict``
   refuses it.
4. Every reader failure is one error type (:class:`ReadError`) naming the file and the problem,
   and ``satmon report --skip-unreadable`` goes on past each such file.
9. The steps of a real TRL console log (GRPO with ``log_completions=True``) are the trainer's
   steps, never a count of lines or dicts presented as steps.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from satmon.analysis import read_run
from satmon.analysis.readers import MissingKeyError, ReadError
from satmon.cli import main

T = 221
REWARD = [0.2 + 0.75 * (1 - math.exp(-s / 40)) for s in range(1, T + 1)]


def _report_rows(out: Path) -> list[dict[str, str]]:
    with (out / "report.csv").open() as fh:
        return list(csv.DictReader(fh))


def _good_csv(path: Path, total: int = 120) -> Path:
    rows = ["step,reward"] + [f"{s},{min(1.0, s / 40):.4f}" for s in range(1, total + 1)]
    path.write_text("\n".join(rows) + "\n")
    return path


# --- 3. damaged TensorBoard event files ---------------------------------------------------------

def _event_file(folder: Path) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    for s in range(1, T + 1):
        writer.add_scalar("critic/score/mean", REWARD[s - 1], global_step=s)
    writer.close()
    return next(folder.glob("events.out.tfevents.*"))


def _record_starts(data: bytes) -> list[int]:
    """Byte offsets of the TFRecord frames (8-byte length, 4-byte CRC, payload, 4-byte CRC)."""
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        pos += 16 + length
    assert pos == len(data)
    return starts


def _damaged(tmp_path: Path, how: str) -> tuple[Path, int, int]:
    """A copy of a 221-step event file with a flipped byte or a cut mid-file.

    Returns the damaged file, the 1-based index of the first bad record and its offset.
    """
    data = _event_file(tmp_path / "source").read_bytes()
    starts = _record_starts(data)
    assert len(starts) == T + 1  # the brain.Event version record, then one per step
    where = len(data) // 2
    if where in starts:  # a cut there would leave whole records only
        where += 5
    damaged = bytearray(data)
    if how == "flip":
        damaged[where] ^= 0x20
    else:
        del damaged[where:]
    bad = max(i for i, start in enumerate(starts) if start <= where)  # 0-based
    path = tmp_path / how / f"events.out.tfevents.1700000000.host.{how}"
    path.parent.mkdir()
    path.write_bytes(bytes(damaged))
    return path, bad + 1, starts[bad]


@pytest.mark.parametrize("how, problem", [
    ("flip", r"record (\d+) fails its (data|length) CRC check \(corrupt\)"),
    ("cut", r"the file ends inside (?:the header of )?record (\d+) \(\d+ of \d+ bytes\)"),
])
def test_damaged_event_file_is_read_in_part_and_says_so(tmp_path, caplog, how, problem):
    path, bad_record, offset = _damaged(tmp_path, how)
    with caplog.at_level("WARNING", logger="satmon.analysis.readers"):
        run = read_run(path)
    # Record 1 is the version record and record k the step k - 1: the steps before the bad
    # record load, with the values written, and nothing after it.
    n_steps = bad_record - 2
    assert 60 < n_steps < 160
    assert run.train_reward.steps.tolist() == list(range(1, n_steps + 1))
    np.testing.assert_allclose(run.train_reward.values, REWARD[:n_steps], rtol=1e-6)
    assert run.last_step == n_steps < T
    (partial,) = run.metadata["partial_read"]
    size = path.stat().st_size
    assert partial == {"file": str(path), "records_read": bad_record - 1,
                       "stopped_at_record": bad_record, "offset": offset, "file_size": size,
                       "bytes_unread": size - offset, "problem": partial["problem"]}
    assert re.fullmatch(problem, partial["problem"])
    assert int(re.fullmatch(problem, partial["problem"]).group(1)) == bad_record
    (warning,) = run.metadata["read_warnings"]
    assert f"read only in part: {partial['problem']} at byte {offset} of {size}" in warning
    assert f"{bad_record - 1} record(s) read" in warning
    (record,) = [r for r in caplog.records if r.name == "satmon.analysis.readers"]
    assert record.levelname == "WARNING" and warning in record.getMessage()
    with pytest.raises(ReadError, match=r"refused \(strict\).*read only in part") as err:
        read_run(path, strict=True)
    assert err.value.source == str(path)


def test_damaged_event_file_through_the_cli(tmp_path, capsys):
    path, bad_record, _ = _damaged(tmp_path, "flip")
    folder = path.parent
    n_steps = bad_record - 2
    note = f"note: {folder}: TensorBoard event file {path.name} read only in part: record "
    for command, extra in (("analyze", []), ("export", ["--out", str(tmp_path / "o.csv")])):
        assert main([command, str(folder), *extra]) == 0
        captured = capsys.readouterr()
        assert f"satmon {command}: {note}{bad_record}" in captured.err
        assert main([command, str(folder), "--strict", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"satmon {command}: error: {folder}: refused (strict)")
        assert "Traceback" not in err
    assert f"T = {n_steps} (tensorboard" in captured.err  # the export summary line

    good = _good_csv(tmp_path / "good.csv")
    out = tmp_path / "r"
    args = ["report", str(good), str(folder), "--out", str(out), "--format", "csv",
            "--no-replay"]
    assert main(args) == 0
    assert f"satmon report: {note}{bad_record}" in capsys.readouterr().err
    assert {r["run"]: r["T"] for r in _report_rows(out)} == {"good": "120", "flip": str(n_steps)}
    assert main([*args, "--strict"]) == 2
    assert f"cannot read '{folder}'" in capsys.readouterr().err
    assert main([*args, "--strict", "--skip-unreadable"]) == 0
    assert f"satmon: skipped '{folder}': {folder}: refused (strict)" in capsys.readouterr().err
    assert [r["run"] for r in _report_rows(out)] == ["good"]


# --- 4. one error type, and --skip-unreadable skips every unreadable file ----------------------

def _deep(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


BAD_FILES = {
    # name: (content, what the message must say)
    "deep.json": ('{"step": 1, "reward": ' + _deep() + "}\n",
                  r"deep.json: JSON nested too deeply to parse"),
    "deep.jsonl": ('{"step": 1, "reward": 0.5}\n{"step": 2, "reward": ' + _deep() + "}\n",
                   r"deep.jsonl, line 2: JSON nested too deeply to parse"),
    "huge_step.jsonl": ('{"step": 1, "reward": 0.5}\n{"step": %d, "reward": 0.6}\n' % 2 ** 63,
                        r"huge_step.jsonl: series 'train_reward' \(key 'reward'\), record 1: "
                        r"the step \(9223372036854775808\) is out of range: steps are int64"),
    "huge_value.jsonl": ('{"step": 1, "reward": 0.5}\n{"step": 2, "reward": %d}\n' % 10 ** 400,
                         r"huge_value.jsonl: series 'train_reward' \(key 'reward'\), record 1: "
                         r"the value \(an integer of 1329 bits\) is out of range: it does not "
                         r"fit a float"),
    "huge_literal.jsonl": ('{"step": 1, "reward": 1' + "0" * 5000 + "}\n",
                           r"huge_literal.jsonl: JSON that cannot be parsed \(Exceeds the limit"),
    "huge_step.csv": ("step,reward\n1,0.5\n%d,0.6\n" % 2 ** 63,
                      r"huge_step.csv: series 'train_reward' \(key 'reward'\), record 1: the step "
                      r"\(9223372036854775808\) is out of range"),
    "huge_value_trl.log": ("\r1/2 [00:01]\n{'loss': 0.1, 'reward': 0.5}\n\r1/2 [00:01]"
                           "\r2/2 [00:02]\n{'loss': 0.1, 'reward': %d}\n\r2/2 [00:02]"
                           % 10 ** 400,
                           r"huge_value_trl.log: series 'train_reward' \(key 'reward'\), record "
                           r"1: the value \(an integer of 1329 bits\) is out of range"),
    "duplicated_header.csv": ("step,reward,reward\n1,0.5,0.1\n2,0.6,0.2\n",
                              r"duplicated_header.csv: the CSV header names a column more than "
                              r"once \('reward' at columns 2, 3\); which one holds the metric "
                              r"is ambiguous"),
    "fractional_step.log": ("step:1 - critic/score/mean:0.5\n"
                            "(TaskRunner pid=7) step:1.5 - critic/score/mean:0.55\n"
                            "step:2 - critic/score/mean:0.6\n",
                            r"fractional_step.log, line 2: step '1.5' is not a whole number "
                            r">= 0; verl logs integer steps"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_every_reader_failure_is_one_error_naming_the_file(tmp_path, name):
    content, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ReadError) as err:
        read_run(path)
    assert isinstance(err.value, ValueError)  # what callers caught before
    assert re.match(re.escape(str(tmp_path)) + "/" + message, str(err.value)), str(err.value)
    assert err.value.source is not None and name in err.value.source


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_skip_unreadable_goes_on_past_each_bad_file(tmp_path, capsys, name):
    content, message = BAD_FILES[name]
    bad = tmp_path / name
    bad.write_text(content)
    first, last = _good_csv(tmp_path / "first.csv"), _good_csv(tmp_path / "last.csv", 150)
    out = tmp_path / "r"
    args = ["report", str(first), str(bad), str(last), "--out", str(out), "--format", "csv",
            "--no-replay"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"satmon report: error: cannot read '{bad}': ")
    assert re.search(message, err) and "Traceback" not in err
    assert main([*args, "--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    assert re.search(f"satmon: skipped '{re.escape(str(bad))}': .*{message}", captured.err)
    assert {r["run"]: r["T"] for r in _report_rows(out)} == {"first": "120", "last": "150"}
    assert "2 run(s)" in captured.out


def test_large_numbers_that_fit_are_read(tmp_path):
    # The limits are the storage types': the largest step an int64 keeps through the cleaning's
    # float conversion, and a 2**63 value, both load; one more and the step is refused.
    path = tmp_path / "edge.jsonl"
    path.write_text('{"step": 1, "reward": %d}\n{"step": %d, "reward": 0.5}\n'
                    % (2 ** 63, 2 ** 63 - 1024))
    run = read_run(path)
    assert run.train_reward.steps.tolist() == [1, 2 ** 63 - 1024]
    assert run.train_reward.values.tolist() == [float(2 ** 63), 0.5]
    path.write_text('{"step": 1, "reward": 0.5}\n{"step": %d, "reward": 0.5}\n' % (2 ** 63 - 1))
    with pytest.raises(ReadError, match=r"record 1: the step \(9223372036854775807\) is out of "
                                        r"range: steps are int64, at most 9223372036854774784"):
        read_run(path)


def test_an_unanticipated_parser_failure_is_still_a_read_error(tmp_path, monkeypatch):
    from satmon.analysis.readers import console

    def broken(text, *, source):
        return 1 / 0

    monkeypatch.setattr(console, "read_verl_console", broken)
    path = tmp_path / "verl.log"
    path.write_text("step:1 - critic/score/mean:0.5\n")
    with pytest.raises(ReadError, match=r"verl.log: could not be read \(ZeroDivisionError: "
                                        r"division by zero\)") as err:
        read_run(path)
    assert isinstance(err.value.__cause__, ZeroDivisionError)


def test_read_errors_survive_pickling():
    # Report workers are processes; an error raised there must arrive whole.
    for exc in (ReadError("a.csv: bad", source="a.csv"),
                MissingKeyError("a.csv: no key", source="a.csv")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.source == "a.csv"
    assert isinstance(MissingKeyError("x: y"), KeyError) and str(MissingKeyError("x: y")) == "x: y"


# --- 9. the steps of a real TRL console log ----------------------------------------------------

MAX_STEPS, LOGGING_STEPS, EVAL_STEPS = 8, 2, 4

_GRPO_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    import torch
    torch.set_num_threads(1)
    from _callback_lab import grpo_trainer, lab_job

    max_steps, logging_steps, eval_steps = (int(a) for a in sys.argv[3:6])
    job = lab_job("rule", seed=0)
    trainer = grpo_trainer(job, sys.argv[1], max_steps=max_steps, logging_steps=logging_steps,
                           eval_steps=eval_steps, disable_tqdm=False, log_completions=True,
                           num_completions_to_print=2)
    # Preprocessing as real scripts do it: the datasets progress bar counts the 64 prompts,
    # more than max_steps (GSM8K's 7,473 made the old reader report T = 7473).
    trainer.train_dataset = trainer.train_dataset.map(lambda row: {"prompt": row["prompt"]})
    trainer.train()
""")


@pytest.fixture(scope="module")
def grpo_console_log(tmp_path_factory) -> Path:
    """stdout + stderr of a real 8-step GRPOTrainer run, captured into one file."""
    pytest.importorskip("trl")
    pytest.importorskip("rich")  # without rich, TRL's log_completions prints no table
    folder = tmp_path_factory.mktemp("grpo")
    script = folder / "train.py"
    script.write_text(_GRPO_SCRIPT)
    log_path = folder / "console.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_DATASETS_DISABLE", "TQDM_"))}
    env.update(COLUMNS="100", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with log_path.open("wb") as fh:
        proc = subprocess.run(
            [sys.executable, str(script), str(folder / "out"), str(Path(__file__).parent),
             str(MAX_STEPS), str(LOGGING_STEPS), str(EVAL_STEPS)],
            stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=300)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    return log_path


def _logged_rewards(text: str) -> list[float]:
    """The 'reward' of every training log dict printed, in order (from the raw text)."""
    return [float(v) for v in re.findall(r"\{'loss': [^{}\n]*'reward': '([^']+)'", text)]


TRAIN_STEPS = list(range(LOGGING_STEPS, MAX_STEPS + 1, LOGGING_STEPS))
EVAL_AT = list(range(EVAL_STEPS, MAX_STEPS + 1, EVAL_STEPS))


@pytest.mark.slow
def test_real_grpo_console_log_with_completion_tables(grpo_console_log):
    text = grpo_console_log.read_text()
    # The trap is real: completion tables between the dicts, and a bar counting past max_steps.
    # (a table after each training dict, each evaluation dict and the train_runtime summary)
    assert re.findall(r"Step (\d+) ", text) == ["2", "4", "4", "6", "8", "8", "8"]
    assert re.search(r"Map: 100%\|[^\n\r]*\| 64/64 \[", text)
    assert re.search(rf"\| {MAX_STEPS}/{MAX_STEPS} \[", text)
    rewards = _logged_rewards(text)
    assert len(rewards) == len(TRAIN_STEPS)

    run = read_run(grpo_console_log)
    assert run.metadata["format"] == "trl-console"
    assert run.train_reward.steps.tolist() == TRAIN_STEPS
    np.testing.assert_allclose(run.train_reward.values, rewards)
    assert run.heldout["exact_match"].steps.tolist() == EVAL_AT
    assert run.last_step == MAX_STEPS
    assert "read_warnings" not in run.metadata and "steps_from_log_index" not in run.metadata
    # 4 training dicts, 2 evaluation dicts and the train_runtime summary, each followed by
    # the completion table TRL titles with the global step.
    assert run.metadata["steps_from"] == {"completion table": len(TRAIN_STEPS) + len(EVAL_AT) + 1}


@pytest.mark.slow
def test_real_grpo_console_log_without_tables_uses_the_training_bar(grpo_console_log, tmp_path):
    # What the same run prints without rich (TRL then prints no completion table): the steps
    # come from the training bar, not from the datasets Map bar with its larger total.
    text = re.sub(r"[\u2500-\u257f][^\r\n]*", "", grpo_console_log.read_text())
    assert "Step 2" not in text
    path = tmp_path / "no_tables.log"
    path.write_text(text)
    run = read_run(path)
    assert run.train_reward.steps.tolist() == TRAIN_STEPS
    np.testing.assert_allclose(run.train_reward.values, _logged_rewards(text))
    assert run.heldout["exact_match"].steps.tolist() == EVAL_AT
    assert run.metadata["steps_from"] == {"progress bar": len(TRAIN_STEPS) + len(EVAL_AT) + 1}
    assert "read_warnings" not in run.metadata


@pytest.mark.slow
def test_real_grpo_console_log_where_the_steps_cannot_be_told(grpo_console_log, tmp_path,
                                                              capsys):
    text = re.sub(r"[\u2500-\u257f][^\r\n]*", "", grpo_console_log.read_text())
    dicts = re.findall(r"\{'[^{}\n]*\}", text)
    # stdout block-buffered into the file after stderr: every dict after the last bar redraw.
    smeared = tmp_path / "smeared.log"
    smeared.write_text(re.sub(r"\{'[^{}\n]*\}", "", text) + "\n" + "\n".join(dicts) + "\n")
    # and no progress bar at all (disable_tqdm=True, no rich).
    bare = tmp_path / "bare.log"
    bare.write_text("\n".join(dicts) + "\n")
    for path, why in ((smeared, r"3 pair\(s\) of consecutive training log dicts got the same "
                                r"progress-bar step"),
                      (bare, r"4 of 4 training log dict\(s\) have no progress-bar counter")):
        run = read_run(path)
        (warning,) = run.metadata["read_warnings"]
        assert re.search(f"cannot tell the training steps: {why}", warning), warning
        assert "numbered by their order among the training log dicts" in warning
        assert run.metadata["steps_from_log_index"] == len(dicts) == 7
        # Numbered 1..4 in log order, evaluation dicts with the training dict before them:
        # said to be a guess, never a line number.
        assert run.train_reward.steps.tolist() == [1, 2, 3, 4]
        assert run.heldout["exact_match"].steps.tolist() == [2, 4]
        with pytest.raises(ReadError, match="refused \\(strict\\).*cannot tell the training"):
            read_run(path, strict=True)
        assert main(["export", str(path), "--out", "-"]) == 0
        assert "satmon export: note: " in capsys.readouterr().err
        assert main(["export", str(path), "--out", "-", "--strict"]) == 2
        assert "cannot tell the training steps" in capsys.readouterr().err


def test_completion_table_text_is_never_read_as_a_log_dict(tmp_path):
    # A completion that prints a dict and a counter, inside a rich table, between two steps.
    table = ("\u256d\u2500\u2500 Step {s} \u2500\u2500\u256e\n"
             "\u2502 \u2502 {{'reward': 99.0, 'loss': 1}} 7/7473 [ \u2502 \u2502\n"
             "\u2570\u2500\u2500\u2500\u2500\u256f\n")
    out = []
    for s in (1, 2, 3):
        out.append(f"\r{s}/3 [00:01<00:01]\n{{'loss': 0.1, 'reward': {s / 10}}}\n")
        out.append(f"\r{s}/3 [00:01<00:01]" + table.format(s=s))
    path = tmp_path / "trl.log"
    path.write_text("".join(out))
    run = read_run(path)
    assert run.train_reward.steps.tolist() == [1, 2, 3]
    assert run.train_reward.values.tolist() == [0.1, 0.2, 0.3]
    assert run.metadata["n_records"] == 3 and "read_warnings" not in run.metadata
    assert json.dumps(run.metadata["steps_from"]) == '{"completion table": 3}'
