"""The run data model and its cleaning policy."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from satmon import HeldoutSeries, Run, Series, clean_series

# (steps, values, kept steps, kept values, non-finite, duplicates, out of order, gaps)
CLEANING_CASES = [
    ([1, 2, 3], [0.1, 0.2, 0.3], [1, 2, 3], [0.1, 0.2, 0.3], (), (), 0, ()),
    ([1, 2, 3], [0.1, None, 0.3], [1, 3], [0.1, 0.3], (2,), (), 0, ()),
    ([1, 2, 3], [math.nan, math.inf, -math.inf], [], [], (1, 2, 3), (), 0, ()),
    ([1, 2, 3, 2, 3, 4], [0.1, 0.2, 0.3, 0.9, 0.8, 0.4], [1, 2, 3, 4], [0.1, 0.9, 0.8, 0.4],
     (), (2, 3), 0, ()),
    ([3, 1, 2], [0.3, 0.1, 0.2], [1, 2, 3], [0.1, 0.2, 0.3], (), (), 2, ()),
    ([0, 10, 20, 50, 60], [1, 2, 3, 4, 5], [0, 10, 20, 50, 60], [1, 2, 3, 4, 5], (), (), 0,
     ((20, 50),)),
    ([1.0, 2.0], [1, 2], [1, 2], [1.0, 2.0], (), (), 0, ()),
    ([1, 2], [-5.0, 12.5], [1, 2], [-5.0, 12.5], (), (), 0, ()),   # unbounded proxy rewards
    ([1, 1], [0.5, None], [], [], (1,), (1,), 0, ()),               # a later NaN wins too
]


@pytest.mark.parametrize("steps, values, ks, kv, nonfin, dups, ooo, gaps", CLEANING_CASES)
def test_cleaning_table(steps, values, ks, kv, nonfin, dups, ooo, gaps):
    s, v, rep = clean_series(steps, values)
    assert s.tolist() == ks and v.tolist() == pytest.approx(kv)
    assert rep.non_finite_steps == nonfin and rep.duplicate_steps == dups
    assert rep.n_out_of_order == ooo and rep.gaps == gaps
    assert rep.n_input == len(steps) and rep.n_kept == len(ks)
    json.dumps(rep.to_dict(), allow_nan=False)


@pytest.mark.parametrize("steps, values, exc, match", [
    ([1, 2], [0.1], ValueError, "2 steps but 1 values"),
    ([1.5], [0.1], ValueError, "whole number >= 0. Got 1.5"),
    ([-1], [0.1], ValueError, "Got -1"),
    (["x"], [0.1], TypeError, "Got 'x' \\(str\\)"),
    ([None], [0.1], TypeError, "Got None"),
    ([1], ["high"], TypeError, "a value must be a number or None. Got 'high'"),
    ([1], [[0.1]], TypeError, "Got \\[0.1\\] \\(list\\)"),
])
def test_cleaning_rejects_wrong_types(steps, values, exc, match):
    with pytest.raises(exc, match=match):
        clean_series(steps, values, name="reward")


def test_describe_mentions_each_action():
    _, _, rep = clean_series([1, 2, 3, 3, 9], [0.1, None, 0.3, 0.2, 0.5])
    text = rep.describe()
    assert "non-finite" in text and "repeated" in text and "gap" in text


def test_series_validates_and_is_read_only():
    s = Series("r", [1, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        s.values[0] = 5.0
    with pytest.raises(ValueError, match="strictly increasing"):
        Series("r", [2, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="non-finite"):
        Series("r", [1, 2], [0.1, math.nan])
    assert s.value_at(2) == 0.2
    with pytest.raises(KeyError, match="no value at step 3"):
        s.value_at(3)


def test_heldout_sample_size_validation():
    assert HeldoutSeries.from_raw("m", [0], [0.5], sample_size=100).sample_size == 100
    with pytest.raises(ValueError, match="'sample_size' of held-out series 'm' must be an int"):
        HeldoutSeries("m", [0], [0.5], sample_size=0)


def test_run_construction_and_summary():
    run = Run(train_reward=([1, 2, 3, 2], [0.1, 0.5, 0.9, 0.4]),
              heldout={"gsm8k": ([0, 2], [0.2, 0.4], 500)},
              aux={"entropy": ([1, 2, 3], [0.5, 0.4, None])},
              metadata={"model": "tiny"}, name="r1")
    assert run.last_step == 3
    assert run.train_reward.values.tolist() == [0.1, 0.4, 0.9]
    assert run.heldout["gsm8k"].sample_size == 500
    assert set(run.cleaning_reports()) == {"train_reward", "gsm8k", "entropy"}
    text = run.summary()
    assert "r1" in text and "repeated" in text and "non-finite" in text
    json.dumps(run.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="only held-out series take a sample size"):
        Run(train_reward=([1], [0.1], 5))
    with pytest.raises(TypeError, match="must be a Series or a \\(steps, values\\) tuple"):
        Run(train_reward=[0.1, 0.2])


def test_run_without_train_reward_explains_what_it_has():
    run = Run(heldout={"m": ([0], [0.2])})
    assert run.last_step is None
    with pytest.raises(ValueError, match=r"no finite training reward.*held-out \['m'\]"):
        run.require_train_reward()


def test_import_satmon_loads_no_heavy_dependency():
    code = ("import sys, satmon, satmon.cli, satmon.datasets, satmon.decision; "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'mlflow', 'matplotlib') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import satmon loaded: {out.stdout.strip()}"


def test_console_script_help_and_version():
    from satmon import __version__
    from satmon.cli import main

    out = subprocess.run(["satmon", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"satmon {__version__}"
    out = subprocess.run(["satmon", "--help"], capture_output=True, text=True, check=True)
    assert "analyze" in out.stdout
    assert main([]) == 0
    subprocess.run([sys.executable, "-c", "import satmon.callbacks, satmon.analysis"],
                   check=True)
