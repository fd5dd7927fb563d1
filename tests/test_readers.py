"""Readers on files the tests write: every format, detection by content, bad input."""

from __future__ import annotations

import json
import math
import pickle
import time

import numpy as np
import pytest

from satmon.analysis import FORMATS, detect_format, read_run, read_runs
from satmon.analysis.readers import MissingKeyError, ReadError
from satmon.analysis.export import tidy_csv_text
from satmon.analysis.readers.console import clean_terminal_text

STEPS = list(range(1, 31))
REWARD = [round(0.2 + 0.7 * (1 - math.exp(-s / 8)), 4) for s in STEPS]
HELD = {s: round(0.1 + 0.02 * s, 3) for s in range(0, 31, 5)}


def _verl_line(step, *, prefix="(TaskRunner pid=7) ", old=False, val=True):
    parts = [f"step:{step}"]
    if step >= 1:
        parts += [f"critic/score/mean:{REWARD[step - 1]:.4f}", "critic/score/max:1.000",
                  f"actor/{'entropy_loss' if old else 'entropy'}:{0.5 - 0.01 * step:.3f}",
                  f"response_length/mean:{200 + step:.3f}"]
    if val and step in HELD:
        key = ("val/test_score/openai/gsm8k" if old
               else "val-core/openai/gsm8k/reward/mean@1")
        parts.append(f"{key}:{HELD[step]:.3f}")
    return prefix + " - ".join(parts)


def _check_curve(run, *, heldout_name="openai/gsm8k"):
    assert run.train_reward.steps.tolist() == STEPS
    np.testing.assert_allclose(run.train_reward.values, REWARD)
    held = run.heldout[heldout_name]
    assert held.steps.tolist() == sorted(HELD)
    np.testing.assert_allclose(held.values, [HELD[s] for s in sorted(HELD)])
    assert held.sample_size is None


# --- verl console ---------------------------------------------------------------------------

def test_verl_console_with_ansi_and_control_bytes(tmp_path):
    lines = ["\x1b[36m(TaskRunner pid=7)\x1b[0m some setup line", "{'actor': {'lr': 1e-06}}"]
    lines += ["\x1b[2m\x1b[36m" + _verl_line(s, prefix="(TaskRunner pid=7)\x1b[0m ") for s in
              range(0, 31)]
    path = tmp_path / "train.txt"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\x00\x07tail\r\n")
    assert detect_format(path) == "verl-console"
    run = read_run(path)
    _check_curve(run)
    assert run.metadata["format"] == "verl-console" and run.metadata["preset"] == "verl"
    assert run.metadata["keys"]["heldout_keys"] == {
        "openai/gsm8k": "val-core/openai/gsm8k/reward/mean@1"}
    assert set(run.aux) == {"entropy", "response_length"}
    assert run.name == "train"


def test_verl_console_old_keys_and_numpy_reprs(tmp_path):
    lines = [_verl_line(s, prefix="", old=True) for s in range(1, 31)]
    lines[3] = lines[3].replace(f"critic/score/mean:{REWARD[3]:.4f}",
                                f"critic/score/mean:np.float64({REWARD[3]})")
    path = tmp_path / "log"
    path.write_text("\n".join(lines))
    run = read_run(path)
    assert run.train_reward.values[3] == REWARD[3]
    assert run.metadata["keys"]["aux_keys"]["entropy"] == "actor/entropy_loss"
    assert run.heldout["openai/gsm8k"].steps.tolist() == [5, 10, 15, 20, 25, 30]


def test_resumed_verl_log_overlapping_steps(tmp_path):
    """A job resumed from the step-20 checkpoint logs steps 21..25 a second time."""
    first = [_verl_line(s) for s in range(0, 26)]
    resumed = []
    for s in range(21, 31):
        line = _verl_line(s)
        if s <= 25:  # the resumed job saw different batches: the later values must win
            line = line.replace(f"critic/score/mean:{REWARD[s - 1]:.4f}",
                                f"critic/score/mean:{REWARD[s - 1] + 0.01:.4f}")
        resumed.append(line)
    path = tmp_path / "resumed.log"
    path.write_text("\n".join(first + ["Restarting from checkpoint global_step_20"] + resumed))
    run = read_run(path)
    assert run.train_reward.steps.tolist() == STEPS
    np.testing.assert_allclose(run.train_reward.values[20:25],
                               np.round(np.array(REWARD[20:25]) + 0.01, 4))
    assert run.train_reward.cleaning.duplicate_steps == (21, 22, 23, 24, 25)
    assert "repeated step(s) 21..25" in run.metadata["cleaning"]["train_reward"]
    # The held-out value at step 25 was logged twice as well.
    assert run.heldout["openai/gsm8k"].cleaning.duplicate_steps == (25,)


def test_verl_log_starting_mid_way(tmp_path):
    path = tmp_path / "tail.log"
    path.write_text("\n".join(_verl_line(s) for s in range(16, 31)))
    run = read_run(path)
    assert run.train_reward.steps[0] == 16 and run.last_step == 30


def test_clean_terminal_text_splits_carriage_returns():
    assert clean_terminal_text("a\r\x1b[2Kb\x1b]0;title\x07\nc\x08") == ["a", "b", "c"]


# --- JSONL ----------------------------------------------------------------------------------

def test_jsonl_verl_file_logger(tmp_path):
    path = tmp_path / "metrics.log"  # the extension says nothing: content decides
    with path.open("w") as fh:
        for s in range(0, 31):
            data = {} if s == 0 else {"critic/score/mean": REWARD[s - 1], "actor/entropy": 0.4}
            if s in HELD:
                data["val-core/openai/gsm8k/acc/mean@4"] = HELD[s]
            fh.write(json.dumps({"step": s, "data": data}) + "\n")
    assert detect_format(path) == "jsonl"
    run = read_run(path)
    _check_curve(run)
    assert run.metadata["format"] == "verl-jsonl"


def test_jsonl_flat_records_with_nan(tmp_path):
    path = tmp_path / "log.jsonl"
    rows = [{"step": s, "reward": REWARD[s - 1], "entropy": 0.3} for s in STEPS]
    rows[4]["reward"] = float("nan")
    rows.append({"step": 31, "reward": None})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run = read_run(path)
    assert 5 not in run.train_reward.steps.tolist()
    assert run.train_reward.cleaning.non_finite_steps == (5, 31)
    assert run.metadata["cleaning"]["train_reward"].startswith("2 non-finite value(s) dropped")


def test_jsonl_partial_last_line_of_a_live_log_is_skipped(tmp_path):
    path = tmp_path / "live.jsonl"
    body = "\n".join(json.dumps({"step": s, "reward": REWARD[s - 1]}) for s in STEPS)
    path.write_text(body + '\n{"step": 31, "rew')
    run = read_run(path)
    assert run.last_step == 30 and run.metadata["skipped_partial_last_line"] == 31


def test_jsonl_malformed_middle_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"step": 1, "reward": 0.1}\n{"step": 2, "rew\n{"step": 3, "reward": 0.3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: not valid JSON"):
        read_run(path)


def test_jsonl_record_without_step(tmp_path):
    path = tmp_path / "nostep.jsonl"
    path.write_text('{"step": 1, "reward": 0.1}\n{"reward": 0.2}\n')
    with pytest.raises(ValueError, match=r"line 2: the record has no step.*\['reward'\]"):
        read_run(path)


# --- CSV ------------------------------------------------------------------------------------

def test_tidy_csv_round_trip(tmp_path):
    path = tmp_path / "run.csv"
    lines = ["step,metric,value"]
    for s in range(0, 31):
        if s:
            lines.append(f"{s},train_reward,{REWARD[s - 1]}")
        if s in HELD:
            lines.append(f"{s},heldout_acc/gsm8k,{HELD[s]}")
            lines.append(f"{s},heldout_acc/math,{HELD[s] / 2}")
        lines.append(f"{s},entropy,0.5")
    path.write_text("\n".join(lines) + "\n")
    assert detect_format(path) == "tidy-csv"
    run = read_run(path)
    _check_curve(run, heldout_name="gsm8k")
    assert list(run.heldout) == ["gsm8k", "math"]
    text = tidy_csv_text(run)
    assert text.splitlines()[:4] == ["step,metric,value", "0,heldout_acc/gsm8k,0.1",
                                     "0,heldout_acc/math,0.05", "0,entropy,0.5"]
    again = tmp_path / "again.csv"
    again.write_text(text)
    assert tidy_csv_text(read_run(again)) == text


def test_wide_csv_with_empty_cells(tmp_path):
    path = tmp_path / "wide.txt"
    lines = ["step,critic/score/mean,val/test_score/gsm8k,note"]
    for s in range(0, 31):
        lines.append(f"{s},{REWARD[s - 1] if s else ''},{HELD.get(s, '')},x")
    path.write_text("\n".join(lines) + "\n")
    assert detect_format(path) == "wide-csv"
    run = read_run(path)
    _check_curve(run, heldout_name="gsm8k")


def test_wide_csv_truncated_row(tmp_path):
    path = tmp_path / "cut.csv"
    path.write_text("step,train_reward,heldout_acc\n1,0.1,0.2\n2,0.3")
    with pytest.raises(ValueError, match="line 3: expected 3 columns, got 2. Is the file trunc"):
        read_run(path)


def test_wrong_value_type_names_the_series(tmp_path):
    path = tmp_path / "types.csv"
    path.write_text("step,metric,value\n1,train_reward,0.1\n2,train_reward,high\n")
    # Wrong content is a ReadError (a ValueError) naming the file, the series and the record.
    with pytest.raises(ReadError, match=r"types.csv: series 'train_reward', record 1: a value "
                                        r"must be a number or None. Got 'high'"):
        read_run(path)
    path.write_text("step,metric,value\n1.5,train_reward,0.1\n")
    with pytest.raises(ReadError, match="a step must be a whole number >= 0. Got 1.5"):
        read_run(path)


# --- trainer_state.json and folders ---------------------------------------------------------

def _trainer_state(steps=STEPS, *, global_step=30):
    history = []
    for s in steps:
        history.append({"loss": 0.1, "reward": REWARD[s - 1], "entropy": 0.4,
                        "completions/mean_length": 100.0 + s, "epoch": s / 30, "step": s})
        if s % 5 == 0:
            history.append({"eval_loss": 0.2, "eval_rewards/accuracy/mean": HELD[s],
                            "eval_reward": HELD[s], "epoch": s / 30, "step": s})
    history.append({"train_runtime": 12.5, "train_loss": 0.1, "epoch": 1.0, "step": 30})
    return {"global_step": global_step, "max_steps": 30, "logging_steps": 1,
            "eval_steps": 5, "log_history": history}


def test_trainer_state_file_and_checkpoint_folders(tmp_path):
    out = tmp_path / "grpo-out"
    (out / "checkpoint-10").mkdir(parents=True)
    (out / "checkpoint-30").mkdir()
    (out / "checkpoint-10" / "trainer_state.json").write_text(
        json.dumps(_trainer_state(STEPS[:10], global_step=10)))
    (out / "checkpoint-30" / "trainer_state.json").write_text(json.dumps(_trainer_state()))
    for source in (out / "checkpoint-30" / "trainer_state.json", out / "checkpoint-30", out):
        run = read_run(source)
        assert run.last_step == 30, source
        assert run.name == "grpo-out"
        assert run.metadata["format"] == "trainer-state"
        assert run.metadata["source"] == str(out / "checkpoint-30" / "trainer_state.json")
        assert run.heldout["accuracy"].steps.tolist() == [5, 10, 15, 20, 25, 30]
        assert run.metadata["max_steps"] == 30
        assert set(run.aux) == {"entropy", "response_length"}
    # An older top-level trainer_state.json loses to the newer checkpoint.
    (out / "trainer_state.json").write_text(json.dumps(_trainer_state(STEPS[:5], global_step=5)))
    assert read_run(out).last_step == 30
    # A final one at least as new as the last checkpoint wins.
    (out / "trainer_state.json").write_text(json.dumps(_trainer_state()))
    assert read_run(out).metadata["source"] == str(out / "trainer_state.json")


def test_trainer_state_wrong_types(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": {"step": 1}}))
    with pytest.raises(ReadError, match="'log_history' must be a list"):
        read_run(path)
    path.write_text(json.dumps({"log_history": [{"reward": 0.1}]}))
    with pytest.raises(ValueError, match=r"log_history\[0\] has no 'step'"):
        read_run(path)
    path.write_text(json.dumps({"log_history": [{"step": "one", "reward": 0.1}]}))
    with pytest.raises(ReadError, match="a step must be a whole number"):
        read_run(path)


# --- TRL console ------------------------------------------------------------------------------

def test_trl_console_with_tqdm_and_eval_bars(tmp_path):
    total = 30
    out = ["Loading weights", "\r  0%|          | 0/30 [00:00<?, ?it/s]"]
    for s in STEPS:
        out.append(f"\r {int(100 * s / total)}%|#   | {s}/{total} [00:{s:02d}<00:10,  1.00it/s]")
        if s % 3 == 0:
            logs = {"loss": 0.01, "reward": REWARD[s - 1], "rewards/acc/mean": REWARD[s - 1],
                    "entropy": float("nan") if s == 6 else 0.3, "epoch": s / 30}
            out.append("\r" + " " * 40 + "\r" + str(logs))
            out.append(f"\r {int(100 * s / total)}%|#   | {s}/{total} [00:{s:02d}<00:10]")
        if s % 15 == 0:
            for b in range(1, 5):  # the eval bar: its own counter, its own total
                out.append(f"\r  {25 * b}%|##  | {b}/4 [00:0{b}<00:00]")
            out.append("\n" + str({"eval_loss": 0.2, "eval_rewards/acc/mean": HELD[s],
                                   "epoch": s / 30}))
            out.append(f"\r {int(100 * s / total)}%|#   | {s}/{total} [00:{s:02d}<00:10]")
    out.append("\n{'train_runtime': 30.1, 'train_samples_per_second': 2.0, 'epoch': 1.0}\n")
    path = tmp_path / "console.md"
    path.write_text("".join(out))
    assert detect_format(path) == "trl-console"
    run = read_run(path)
    assert run.train_reward.steps.tolist() == list(range(3, 31, 3))
    np.testing.assert_allclose(run.train_reward.values, [REWARD[s - 1] for s in range(3, 31, 3)])
    assert run.heldout["acc"].steps.tolist() == [15, 30]
    assert run.aux["entropy"].cleaning.non_finite_steps == (6,)
    assert "steps_from_log_index" not in run.metadata


def test_trl_console_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    path = tmp_path / "evil.log"
    path.write_text("{'reward': 0.5, 'loss': 0.1}\n"
                    f"{{'reward': {payload}, 'loss': 0.2}}\n"
                    "{'reward': 0.7, 'loss': 0.3}\n")
    run = read_run(path)
    assert not marker.exists()
    # No progress bar: steps are the log index, and the run says so.
    assert run.train_reward.steps.tolist() == [1, 2]
    assert run.metadata["steps_from_log_index"] == 2 and run.metadata["unparsed_dicts"] == 1


def test_no_pickle_is_ever_loaded(tmp_path):
    path = tmp_path / "run.pkl"
    path.write_bytes(pickle.dumps({"reward": [0.1, 0.2]}))
    with pytest.raises(ValueError, match="run.pkl: .*Supported formats"):
        read_run(path)


# --- TensorBoard ------------------------------------------------------------------------------

def _write_events(folder, tags_values):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    for step, tags in tags_values:
        for tag, value in tags.items():
            writer.add_scalar(tag, value, global_step=step)
    writer.close()


def test_tensorboard_verl_tags_and_resumed_files(tmp_path):
    folder = tmp_path / "tb" / "grpo_run"
    first = [(s, {"critic/score/mean": REWARD[s - 1], "actor/entropy": 0.3}) for s in STEPS[:20]]
    first += [(s, {"val-core/openai/gsm8k/reward/mean@1": HELD[s]}) for s in (0, 5, 10, 15, 20)]
    _write_events(folder, first)
    # The resumed job writes a second event file and repeats step 20 with a new value.
    second = [(s, {"critic/score/mean": REWARD[s - 1], "actor/entropy": 0.3})
              for s in STEPS[19:]]
    second += [(s, {"val-core/openai/gsm8k/reward/mean@1": HELD[s]}) for s in (25, 30)]
    time.sleep(1.1)  # event file names carry the second they were created, which orders them
    _write_events(folder, second)
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert len(files) == 2
    assert detect_format(files[0]) == "tensorboard"
    renamed = tmp_path / "copy.bin"
    renamed.write_bytes(files[0].read_bytes())
    assert detect_format(renamed) == "tensorboard"
    for source in (folder, tmp_path / "tb"):
        run = read_run(source)
        assert run.name == "grpo_run" and run.metadata["format"] == "tensorboard"
        assert run.train_reward.steps.tolist() == STEPS
        np.testing.assert_allclose(run.train_reward.values, REWARD, rtol=1e-6)
        assert run.train_reward.cleaning.duplicate_steps == (20,)
        assert run.heldout["openai/gsm8k"].steps.tolist() == sorted(HELD)


def test_tensorboard_transformers_callback_tags(tmp_path):
    folder = tmp_path / "runs" / "Jan01_host"
    points = [(s, {"train/reward": REWARD[s - 1], "train/entropy": 0.2}) for s in STEPS]
    points += [(s, {"eval/rewards/acc/mean": HELD[s]}) for s in sorted(HELD)]
    _write_events(folder, points)
    run = read_run(tmp_path / "runs")
    assert run.metadata["preset"] == "trl"
    assert run.metadata["keys"]["heldout_keys"] == {"acc": "eval_rewards/acc/mean"}
    assert run.train_reward.steps.tolist() == STEPS


def test_truncated_event_file(tmp_path, caplog):
    folder = tmp_path / "tb"
    _write_events(folder, [(s, {"critic/score/mean": REWARD[s - 1]}) for s in STEPS])
    event = next(folder.glob("events.out.tfevents.*"))
    cut = tmp_path / "events.out.tfevents.cut"
    cut.write_bytes(event.read_bytes()[:-7])
    # The complete records load, and the cut is reported, never silent: the last record
    # (step 30) is the broken one.
    with caplog.at_level("WARNING", logger="satmon.analysis.readers"):
        run = read_run(cut)
    assert run.train_reward.steps.tolist() == STEPS[:-1]
    (partial,) = run.metadata["partial_read"]
    assert partial["file"] == str(cut) and partial["records_read"] == len(STEPS)
    assert partial["stopped_at_record"] == len(STEPS) + 1
    assert partial["bytes_unread"] == partial["file_size"] - partial["offset"] > 0
    assert "read only in part: the file ends inside record 31" in caplog.text
    assert run.metadata["read_warnings"] and "31" in run.metadata["read_warnings"][0]
    with pytest.raises(ReadError, match="refused \\(strict\\): .*TensorBoard event file "
                                        "events.out.tfevents.cut read only in part"):
        read_run(cut, strict=True)
    header_only = tmp_path / "events.out.tfevents.header"
    header_only.write_bytes(event.read_bytes()[:60])
    with pytest.raises(ReadError, match="no metric values found in this tensorboard log.*"
                                        "read only in part"):
        read_run(header_only)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("content, match", [
    (b"", "the file is empty"),
    (b"  \n\n", "the file is empty"),
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
     "binary content that is not a TensorBoard event file"),
    (b'{"global_step": 30, "log_history": [{"loss": 0.1, "reward": 0.4, "st',
     "invalid JSON .* stops at the end of the file.*truncated"),
    (b"Hello, this is a README.\nNothing to see.\n", "unrecognised content .*'Hello, this"),
    (b'{"name": "config", "lr": 0.001}', "neither a trainer_state.json"),
    (b"a;b;c\n1;2;3\n", "unrecognised content"),
])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "input.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        read_run(path)
    assert str(path) in str(err.value)
    if "Supported" in str(err.value):
        assert all(fmt in str(err.value) for fmt in FORMATS)


def test_missing_file_and_bad_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_run(tmp_path / "nope.log")
    path = tmp_path / "a.csv"
    path.write_text("step,metric,value\n1,train_reward,0.1\n")
    with pytest.raises(ValueError, match="'format' parameter must be 'auto', 'csv' or one of"):
        read_run(path, format="parquet")
    with pytest.raises(ValueError, match="'preset' parameter of KeyMap must be one of"):
        read_run(path, preset="wandb")


def test_missing_key_lists_the_keys_found(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps({"step": s, "reward": 0.1, "kl": 0.0, "loss": 1.0})
                              for s in STEPS))
    with pytest.raises(KeyError) as err:
        read_run(path, heldout_keys=["eval_rewards/acc/mean"])
    # One error type for every reader failure, still a KeyError for old callers.
    assert isinstance(err.value, MissingKeyError) and isinstance(err.value, ReadError)
    assert str(err.value) == err.value.args[0]
    msg = err.value.args[0]
    assert msg.startswith(f"{path}: The held-out key 'eval_rewards/acc/mean' is not in the log")
    assert "Keys found (3): 'kl', 'loss', 'reward'." in msg
    with pytest.raises(KeyError, match="No training-reward key found.*'acc', 'step_time'"):
        path.write_text('{"step": 1, "acc": 0.1, "step_time": 2}\n')
        read_run(path)


def test_forced_format_and_overrides(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("step,my_reward,my_eval\n1,0.1,0.5\n2,0.2,\n3,0.3,0.6\n")
    run = read_run(path, format="csv", train_key="my_reward", heldout_keys={"bench": "my_eval"},
                   name="custom")
    assert run.name == "custom" and run.heldout["bench"].steps.tolist() == [1, 3]
    with pytest.raises(ValueError, match="tidy CSV needs the columns"):
        read_run(path, format="tidy-csv", train_key="my_reward")


def test_read_runs_over_a_folder(tmp_path):
    (tmp_path / "README.md").write_text("# my runs\n")
    for i in range(3):
        (tmp_path / f"seed{i}.log").write_text("\n".join(_verl_line(s) for s in range(0, 31)))
    out = tmp_path / "trl_out" / "checkpoint-30"
    out.mkdir(parents=True)
    (out / "trainer_state.json").write_text(json.dumps(_trainer_state()))
    runs = read_runs(tmp_path)
    assert sorted(r.name for r in runs) == ["seed0", "seed1", "seed2", "trl_out"]
    assert all(r.last_step == 30 for r in runs)
    assert [r.name for r in read_runs([tmp_path / "seed1.log", out])] == ["seed1", "trl_out"]
    with pytest.raises(ValueError, match="a folder with no readable training logs"):
        empty = tmp_path / "empty"
        empty.mkdir()
        read_runs(empty)


def test_docstring_examples():
    import doctest

    import satmon.analysis.readers.api as api
    import satmon.analysis.readers.errors as errors

    for module in (api, errors):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_importing_the_readers_loads_no_optional_package():
    import subprocess
    import sys

    code = ("import sys, satmon.analysis, satmon.analysis.commands, satmon.keys; "
            "print(sorted(m for m in ('tensorboard', 'mlflow', 'torch', 'transformers', "
            "'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- sample sizes, satmon's own folders, config metadata --------------------------------------

def _state(path, history):
    path.write_text(json.dumps({"global_step": max(e["step"] for e in history),
                                "log_history": history}))
    return path


def test_trainer_state_held_out_sample_sizes_from_satmon_keys(tmp_path):
    train = [{"reward": r, "step": s} for s, r in zip(STEPS, REWARD)]
    # The callback's evaluator: value and size in one entry.
    evaluator = [{"satmon/heldout/gsm8k": v, "satmon/heldout/gsm8k/n": 500, "step": s}
                 for s, v in HELD.items()]
    run = read_run(_state(tmp_path / "a.json", train + evaluator))
    assert list(run.heldout) == ["gsm8k"] and run.heldout["gsm8k"].sample_size == 500
    assert run.metadata["keys"]["heldout_size_keys"] == {"gsm8k": "satmon/heldout/gsm8k/n"}
    # TRL's own eval keys, with the size the callback appends for them.
    trl_eval = [{"eval_rewards/acc/mean": v, "step": s} for s, v in HELD.items()]
    trl_eval += [{"satmon/heldout/acc/n": 64, "step": s} for s in HELD]
    run = read_run(_state(tmp_path / "b.json", train + trl_eval))
    assert run.heldout["acc"].sample_size == 64
    # A size that changes: the smallest is used and the sizes are listed.
    varying = [{"satmon/heldout/gsm8k": v, "satmon/heldout/gsm8k/n": 500 - s, "step": s}
               for s, v in HELD.items()]
    run = read_run(_state(tmp_path / "c.json", train + varying))
    assert run.heldout["gsm8k"].sample_size == 470
    assert run.metadata["heldout_sample_sizes"]["gsm8k"][0] == 470
    # No size series: unknown, not guessed.
    run = read_run(_state(tmp_path / "d.json", train + trl_eval[:len(HELD)]))
    assert run.heldout["acc"].sample_size is None


def _lab_folder(folder, *, with_config=True, checkpoint=None):
    """A lab run folder as satmon.lab.runner writes it (without training anything)."""
    folder.mkdir(parents=True)
    lines = ["step,metric,value"]
    for s in range(0, 31):
        if s:
            lines += [f"{s},train_reward,{REWARD[s - 1]}", f"{s},train_true_accuracy,0.3"]
        if s in HELD:
            lines.append(f"{s},heldout_acc,{HELD[s]}")
    (folder / "curves.csv").write_text("\n".join(lines) + "\n")
    facts = {"name": "memorizing-s3", "setting": "memorizing", "seed": 3, "halted": True,
             "halt_step": 30, "reason": "memorizing", "model": "tiny-llama-83k",
             "config": {"n_heldout": 128, "max_steps": 60, "eval_every": 5}, "monitor": []}
    if with_config:
        facts["monitor_config"] = {"total_steps": 60, "eval_every": 5, "warmup_steps": 10}
    (folder / "run.json").write_text(json.dumps(facts))
    if checkpoint:
        ckpt = folder / f"checkpoint-{checkpoint}"
        ckpt.mkdir()
        history = [{"reward": r, "step": s} for s, r in zip(STEPS, REWARD)]
        history += [{"satmon/heldout/heldout": v, "satmon/heldout/heldout/n": 128, "step": s}
                    for s, v in HELD.items()]
        _state(ckpt / "trainer_state.json", history)
        (ckpt / "satmon_state.json").write_text(json.dumps(
            {"version": 1, "step": checkpoint, "stopped_step": checkpoint, "rows": [],
             "monitor": {"config": {"total_steps": 60, "eval_every": 5, "risk": 0.01}}}))
    return folder


def test_lab_run_folder_reads_as_the_lab_run_not_its_checkpoint(tmp_path):
    folder = _lab_folder(tmp_path / "runs" / "memorizing", checkpoint=30)
    _lab_folder(tmp_path / "runs" / "generalizing", with_config=False)
    assert detect_format(folder) == "lab-run"
    run = read_run(folder)
    assert (run.name, run.metadata["format"]) == ("memorizing-s3", "lab-run")
    assert run.metadata["setting"] == "memorizing" and run.metadata["seed"] == 3
    assert run.heldout["heldout_acc"].sample_size == 128
    assert run.aux["train_true_accuracy"].values.tolist() == [0.3] * 30
    assert run.metadata["monitor_config"] == {"total_steps": 60, "eval_every": 5,
                                              "warmup_steps": 10}
    # Old run.json without the config: the part the callback took from the setting.
    old = read_run(tmp_path / "runs" / "generalizing")
    assert old.metadata["monitor_config"] == {"total_steps": 60, "eval_every": 5}
    assert old.metadata["monitor_config_derived"] is True
    # A folder of lab runs: one run each, named from run.json (not "curves").
    assert sorted(r.name for r in read_runs(tmp_path / "runs")) == ["memorizing-s3"] * 2
    # The checkpoint reads as the Trainer's state, with the lab run's facts and the live config.
    ckpt = read_run(folder / "checkpoint-30")
    assert ckpt.metadata["format"] == "trainer-state" and ckpt.name == "memorizing-s3"
    assert ckpt.heldout["heldout"].sample_size == 128
    assert ckpt.metadata["monitor_config"] == {"total_steps": 60, "eval_every": 5, "risk": 0.01}
    assert ckpt.metadata["satmon_stopped_step"] == 30 and ckpt.metadata["setting"] == "memorizing"
    # Asking for the Trainer's format on the lab folder reads its checkpoint.
    assert read_run(folder, format="trainer-state").metadata["format"] == "trainer-state"


def test_a_run_json_that_is_not_the_labs_is_not_a_lab_run(tmp_path):
    (tmp_path / "curves.csv").write_text("step,metric,value\n1,train_reward,0.5\n")
    (tmp_path / "run.json").write_text(json.dumps({"name": "x"}))
    run = read_run(tmp_path / "curves.csv")
    assert run.metadata["format"] == "tidy-csv" and run.name == "curves"


def test_verl_console_config_lines_become_metadata(real_logs):
    raw = next(p for p in (real_logs / "raw").iterdir() if p.name.endswith(".log"))
    run = read_run(raw)
    assert run.metadata["model"] == "Qwen2-7B-Instruct"
    assert run.metadata["model_path"] == "/workspace/verl/Qwen/Qwen2-7B-Instruct"
    assert run.metadata["total_training_steps"] == 105 == run.last_step
    assert run.metadata["experiment_name"] == "qwen2_7b_megatron"
    assert run.metadata["adv_estimator"] == "gpg" and run.metadata["test_freq"] == 5


def test_verl_printed_config_without_a_command_line(tmp_path):
    text = "\n".join([
        "(TaskRunner pid=1) {'actor_rollout_ref': {'actor': {'strategy': 'fsdp'},",
        "(TaskRunner pid=1)                        'model': {'external_lib': None,",
        "(TaskRunner pid=1)                                  'path': '~/models/Qwen2.5-3B',",
        "(TaskRunner pid=1)                                  'use_remove_padding': True}},",
        "(TaskRunner pid=1)  'critic': {'model': {'path': '~/models/other'}},",
        "(TaskRunner pid=1)  'trainer': {'experiment_name': 'q3b', 'test_freq': 10}}",
        "(TaskRunner pid=1) Total training steps: 3",
        *(_verl_line(s) for s in range(0, 4)),
    ])
    path = tmp_path / "run.log"
    path.write_text(text + "\n")
    meta = read_run(path).metadata
    assert (meta["model"], meta["experiment_name"], meta["test_freq"]) == ("Qwen2.5-3B", "q3b",
                                                                          10)
    assert meta["total_training_steps"] == 3


def test_trl_console_total_optimization_steps_is_max_steps(tmp_path):
    lines = ["***** Running training *****", "  Num examples = 1,000",
             "  Total optimization steps = 1,200"]
    for s, r in zip(STEPS, REWARD):
        lines.append(f"{s}/1200 [00:01<00:10]")
        lines.append(str({"loss": 0.1, "reward": r, "global_step": s}))
    path = tmp_path / "trl.log"
    path.write_text("\n".join(lines) + "\n")
    run = read_run(path)
    assert run.metadata["format"] == "trl-console" and run.metadata["max_steps"] == 1200
