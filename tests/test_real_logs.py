"""Every real log in ../shared/real-logs/raw loads, and `satmon export` reproduces its reference.

The reference CSVs were written by an independent converter. The comparison is the one the
issue asks for: the same set of (step, metric) rows, and every value equal to the reference at
the number of decimals the reference prints. The byte-for-byte text is checked as well, since
export follows the reference's row order and number format.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from satmon.analysis import detect_format, read_run, read_runs
from satmon.cli import main

# raw file (prefix) -> reference name, expected format, options, (train steps, held-out points)
CASES = {
    "eric-haibin-lin__verl-data__gsm8k_Qwen2.5-0.5B":
        ("verldata_gsm8k_qwen25_05b_ppo_p512_r256", "verl-console", [], (435, 43)),
    "yushengsu-thu__verl_training_log__gsm8k_grpo":
        ("yushengsu_gsm8k_deepseek7b_grpo", "verl-console", [], (1119, 112)),
    "diqiuzhuanzhuan__verldata__run_logs_qwen2-7b_math_megatron":
        ("diqiu_qwen2_7b_gpg_megatron_gsm8k_math_val_gsm8k", "verl-console", [], (105, 22)),
    "volcengine__verl__recipe_async_reward_agent_assets_tensorboard_q3b_fsdp_base":
        ("verl_asyncRA_q3b_fsdp_base", "tensorboard", [], (105, 22)),
    "volcengine__verl__recipe_async_reward_agent_assets_tensorboard_gsm8k_qwen2_7b_base":
        ("verl_asyncRA_gsm8k_qwen2_7b_base", "tensorboard", [], (105, 22)),
    # The TRL run's task reward is one reward function; `reward` is the weighted sum with a
    # format reward and a penalty, so the key is named (as the shared README does).
    "JuncyLu__trl_DAPO__training_logs":
        ("TRAINONLY_juncylu_trl_grpo_qwen25vl3b_aokvqa", "trl-console",
         ["--train-key", "rewards/mc_idx_reward/mean"], (49, 0)),
}


def _raw_file(real_logs: Path, prefix: str) -> Path:
    matches = [p for p in (real_logs / "raw").iterdir() if p.name.startswith(prefix)]
    assert len(matches) == 1, (prefix, matches)
    return matches[0]


def test_every_raw_log_has_a_case(real_logs):
    names = sorted(p.name for p in (real_logs / "raw").iterdir())
    assert len(names) == len(CASES)
    for name in names:
        assert any(name.startswith(prefix) for prefix in CASES), name


def _rows(path: Path) -> dict[tuple[int, str], str]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["step", "metric", "value"]
        rows = {}
        for step, metric, value in reader:
            assert (int(step), metric) not in rows, f"duplicate row {step},{metric} in {path}"
            rows[(int(step), metric)] = value
    return rows


def _decimals(text: str) -> int:
    exponent = Decimal(text).as_tuple().exponent
    return max(0, -exponent)


@pytest.mark.parametrize("prefix", sorted(CASES))
def test_export_matches_reference(real_logs, tmp_path, prefix, capsys):
    ref_name, fmt, options, (n_train, n_heldout) = CASES[prefix]
    raw = _raw_file(real_logs, prefix)
    assert detect_format(raw) == fmt
    out = tmp_path / f"{ref_name}.csv"
    assert main(["export", str(raw), "--out", str(out), *options]) == 0
    reference = real_logs / "reference" / f"{ref_name}.csv"
    ours, ref = _rows(out), _rows(reference)
    assert set(ours) == set(ref)
    for key, ref_text in ref.items():
        places = _decimals(ref_text)
        assert round(float(ours[key]), places) == round(float(ref_text), places), key
    assert out.read_text() == reference.read_text()
    metrics = {m for _, m in ref}
    assert sum(m == "train_reward" for _, m in ref) == n_train
    assert sum(m.startswith("heldout_acc") for _, m in ref) == n_heldout
    assert "train_reward" in metrics


@pytest.mark.parametrize("prefix", sorted(CASES))
def test_read_run_and_analyze(real_logs, prefix, capsys):
    ref_name, fmt, options, (n_train, n_heldout) = CASES[prefix]
    raw = _raw_file(real_logs, prefix)
    train_key = options[1] if options else None
    run = read_run(raw, train_key=train_key)
    assert run.metadata["format"] == fmt
    assert len(run.train_reward) == n_train
    assert sum(len(s) for s in run.heldout.values()) == n_heldout
    # Real logs are clean: nothing repeated, nothing non-finite in the series used.
    assert run.metadata["cleaning"] == {}
    assert main(["analyze", str(raw), *options]) == 0
    printed = capsys.readouterr().out
    assert "t_sat" in printed
    if not n_heldout:
        assert "no held-out series found" in printed


def test_read_runs_over_the_raw_folder(real_logs):
    """The raw folder mixes console logs with two renamed event files of different runs."""
    runs = read_runs(real_logs / "raw")
    assert len(runs) == len(CASES)
    formats = sorted(r.metadata["format"] for r in runs)
    assert formats == ["tensorboard", "tensorboard", "trl-console", "verl-console",
                       "verl-console", "verl-console"]
    names = {r.name for r in runs}
    assert "volcengine__verl__recipe_async_reward_agent_assets_tensorboard_q3b_fsdp_base" in names
    with pytest.raises(ValueError, match="holds 2 runs"):
        read_run(real_logs / "raw")
