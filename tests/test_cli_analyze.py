"""`satmon analyze` and `satmon export` on every file format, and their error exits."""

from __future__ import annotations

import json
import math

import pytest

from satmon.cli import main

T = 120
REWARD = [0.2 + 0.75 * (1 - math.exp(-s / 15)) for s in range(1, T + 1)]
HELD = {s: 0.3 + 0.2 * (1 - math.exp(-s / 20)) for s in range(0, T + 1, 10)}


def _tidy(path):
    lines = ["step,metric,value"]
    for s in range(0, T + 1):
        if s:
            lines.append(f"{s},train_reward,{REWARD[s - 1]}")
        if s in HELD:
            lines.append(f"{s},heldout_acc,{HELD[s]}")
    path.write_text("\n".join(lines) + "\n")


def _wide(path):
    rows = ["step,reward,eval_rewards/acc/mean,entropy"]
    rows += [f"{s},{REWARD[s - 1] if s else ''},{HELD.get(s, '')},0.3" for s in range(0, T + 1)]
    path.write_text("\n".join(rows) + "\n")


def _jsonl(path):
    with path.open("w") as fh:
        for s in range(0, T + 1):
            data = {"critic/score/mean": REWARD[s - 1]} if s else {}
            if s in HELD:
                data["val-core/gsm8k/acc/mean@1"] = HELD[s]
            fh.write(json.dumps({"step": s, "data": data}) + "\n")


def _verl(path):
    lines = []
    for s in range(0, T + 1):
        parts = [f"step:{s}"]
        if s:
            parts.append(f"critic/score/mean:{REWARD[s - 1]:.3f}")
        if s in HELD:
            parts.append(f"val/test_score/gsm8k:{HELD[s]:.3f}")
        lines.append("\x1b[36m(main_task pid=1)\x1b[0m " + " - ".join(parts))
    path.write_text("\n".join(lines))


def _trl_console(path):
    # eval_on_start: the bar shows 0/T, the step-0 evaluation is printed, the bar is redrawn.
    out = [f"\r0/{T} [00:00<?]", "\n" + str({"eval_rewards/acc/mean": round(HELD[0], 4)}),
           f"\r0/{T} [00:00<?]"]
    for s in range(1, T + 1):
        out.append(f"\r{s}/{T} [00:01<00:01]")
        out.append("\n" + str({"loss": 0.1, "reward": round(REWARD[s - 1], 4)}) + "\n")
        if s in HELD:
            out.append(str({"eval_rewards/acc/mean": round(HELD[s], 4)}) + "\n")
        out.append(f"\r{s}/{T} [00:01<00:01]")
    path.write_text("".join(out))


def _trainer_state(path):
    history = [{"reward": REWARD[s - 1], "step": s} for s in range(1, T + 1)]
    history += [{"eval_rewards/acc/mean": v, "step": s} for s, v in HELD.items()]
    ckpt = path / f"checkpoint-{T}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": T,
                                                         "log_history": history}))


def _tensorboard(path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(path))
    for s in range(1, T + 1):
        writer.add_scalar("critic/score/mean", REWARD[s - 1], s)
    for s, v in HELD.items():
        writer.add_scalar("val-core/gsm8k/acc/mean@1", v, s)
    writer.close()


WRITERS = {"run.csv": _tidy, "wide.csv": _wide, "verl.jsonl": _jsonl, "verl.log": _verl,
           "trl.log": _trl_console, "out_dir": _trainer_state, "tb": _tensorboard}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_analyze_every_format(tmp_path, capsys, name):
    path = tmp_path / name
    WRITERS[name](path)
    assert main(["analyze", str(path)]) == 0
    captured = capsys.readouterr()
    assert "t_sat = " in captured.out and f"T = {T}" in captured.out
    assert "note:" not in captured.err  # a clean read has nothing to report...
    assert main(["analyze", str(path), "--strict"]) == 0  # ...and --strict accepts it
    capsys.readouterr()
    assert main(["analyze", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result, dict)
    assert main(["export", str(path), "--out", "-"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "step,metric,value"
    assert sum(",train_reward," in r for r in rows) == T
    assert sum(",heldout_acc," in r for r in rows) == len(HELD)


def test_export_to_file(tmp_path, capsys):
    src = tmp_path / "verl.log"
    _verl(src)
    out = tmp_path / "nested" / "out.csv"
    assert main(["export", str(src), "--out", str(out)]) == 0
    assert out.read_text().startswith("step,metric,value\n0,heldout_acc,0.3\n1,train_reward,")
    assert f"wrote {out}" in capsys.readouterr().err


def test_forced_format_and_keys(tmp_path, capsys):
    path = tmp_path / "custom.txt"
    path.write_text("step,acc_train,acc_test\n" +
                    "\n".join(f"{s},{REWARD[s - 1]},{HELD.get(s, '')}" for s in range(1, T + 1)))
    assert main(["analyze", str(path), "--input-format", "wide-csv", "--train-key",
                 "acc_train", "--heldout-key", "acc_test"]) == 0
    captured = capsys.readouterr()
    assert "acc_test" in captured.out and captured.err == ""


@pytest.mark.parametrize("content, args, message", [
    (None, [], "no such file"),
    ("", [], "the file is empty"),
    ("just some words\n", [], "unrecognised content"),
    ("step,metric,value\n1,train_reward,0.1\n", ["--train-key", "reward"],
     "The training-reward key 'reward' is not in the log. Did you mean 'train_reward'? "
     "Keys found (1): 'train_reward'"),
    ("step,metric,value\n1,train_reward,0.1\n", ["--heldout-key", "gsm8k"],
     "held-out key 'gsm8k' is not in the log"),
    ("step,metric,value\n1,train_reward,0.1\n", ["--input-format", "xlsx"],
     "'format' parameter must be"),
])
def test_errors_exit_2_with_a_message(tmp_path, capsys, content, args, message):
    path = tmp_path / "input.log"
    if content is not None:
        path.write_text(content)
    for command in ("analyze", "export"):
        extra = ["--out", str(tmp_path / "o.csv")] if command == "export" else []
        assert main([command, str(path), *args, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"satmon {command}: error: ")
        assert message in err
