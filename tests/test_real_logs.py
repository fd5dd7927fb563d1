"""Every real log in tests/data/real-logs/raw loads, and `satmon export` reproduces its reference.

Three real logs whose licence lets the project ship them are in the repository; the three that
cannot be shipped are stood in for by format twins (tests/_log_twins.py), checked against the
values their writer printed. tests/data/real-logs/PROVENANCE.md says which is which.

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

from _log_twins import write_twins

# raw file (prefix) -> reference name, expected format, options, (train steps, held-out points)
CASES = {
    "diqiuzhuanzhuan__verldata__run_logs_qwen2-7b_math_megatron":
        ("diqiu_qwen2_7b_gpg_megatron_gsm8k_math_val_gsm8k", "verl-console", [], (105, 22)),
    "volcengine__verl__recipe_async_reward_agent_assets_tensorboard_q3b_fsdp_base":
        ("verl_asyncRA_q3b_fsdp_base", "tensorboard", [], (105, 22)),
    "volcengine__verl__recipe_async_reward_agent_assets_tensorboard_gsm8k_qwen2_7b_base":
        ("verl_asyncRA_gsm8k_qwen2_7b_base", "tensorboard", [], (105, 22)),
}
# twin -> (train steps, held-out points) as written
TWINS = {"verl_old_keys_ray_prefix": (435, 43), "verl_long_plain": (1120, 112),
         "trl_console_tqdm": (49, 0)}


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    return write_twins(tmp_path_factory.mktemp("twins"))


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


def test_provenance_names_every_shipped_file(real_logs):
    text = (real_logs / "PROVENANCE.md").read_text()
    for p in sorted((real_logs / "raw").iterdir()) + sorted((real_logs / "reference").iterdir()):
        assert p.name in text, p.name
    for licence in ("MIT", "Apache-2.0"):
        assert licence in text
    assert (real_logs / "LICENSES" / "Apache-2.0.txt").read_text().count("Apache License") >= 1


@pytest.mark.parametrize("name", sorted(TWINS))
def test_export_of_a_twin_matches_what_was_written(twins, tmp_path, name, capsys):
    twin = twins[name]
    n_train, n_heldout = TWINS[name]
    assert detect_format(twin.path) == twin.format
    out = tmp_path / f"{name}.csv"
    assert main(["export", str(twin.path), "--out", str(out), *twin.options]) == 0
    ours = _rows(out)
    expected = {(step, metric): value for metric, series in twin.truth.items()
                for step, value in series.items()}
    assert set(ours) == set(expected)
    for key, text in expected.items():
        assert float(ours[key]) == pytest.approx(float(text), abs=0.5 * 10 ** -_decimals(text))
    assert twin.count("train_reward") == n_train and twin.count("heldout_acc") == n_heldout
    run = read_run(twin.path, train_key=twin.options[1] if twin.options else None)
    assert len(run.train_reward) == n_train
    assert sum(len(s) for s in run.heldout.values()) == n_heldout
    assert run.metadata["cleaning"] == {}
    assert main(["analyze", str(twin.path), *twin.options]) == 0
    if not n_heldout:
        assert "no held-out series found" in capsys.readouterr().out


def test_read_runs_over_a_mixed_folder(real_logs, twins, tmp_path):
    """One folder mixing console logs with two renamed event files of different runs."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in (real_logs / "raw").iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    for twin in twins.values():
        (folder / twin.path.name).write_bytes(twin.path.read_bytes())
    runs = read_runs(folder)
    assert len(runs) == len(CASES) + len(TWINS)
    formats = sorted(r.metadata["format"] for r in runs)
    assert formats == ["tensorboard", "tensorboard", "trl-console", "verl-console",
                       "verl-console", "verl-console"]
    names = {r.name for r in runs}
    assert "volcengine__verl__recipe_async_reward_agent_assets_tensorboard_q3b_fsdp_base" in names
    with pytest.raises(ValueError, match="holds 2 runs"):
        read_run(real_logs / "raw")
