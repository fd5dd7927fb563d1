"""What SaturationCallback prints in a user's job that configured no logging.

A real transformers Trainer in a subprocess (so no test harness handler is installed): one
line at attach, one per held-out evaluation, one at the halt; ``log_level`` turns the
informational lines off and keeps the warning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

WORKER = Path(__file__).resolve().parent / "_log_lines_worker.py"


def _job(tmp_path, level):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp_path / level), level], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("satmon:")]


def test_attach_evaluation_and_halt_lines(tmp_path):
    lines = _job(tmp_path, "passive")
    attach = [x for x in lines if x.startswith("satmon: attached")]
    assert len(attach) == 1
    assert "action=halt" in attach[0] and "eval logs" in attach[0] and "'loss'" in attach[0]
    evals = [x for x in lines if "held-out eval_accuracy=" in x]
    halts = [x for x in lines if x.startswith("satmon: halting training")]
    assert len(halts) == 1, lines
    # One line per evaluation up to the halt (evaluations every 5 steps from step 5).
    steps = [int(x.split("step ")[1].split(":")[0]) for x in evals]
    assert steps == sorted(steps) and steps[0] == 5 and all(s % 5 == 0 for s in steps)
    assert all("P(gain)=" in x for x in evals)


def test_log_level_warning_keeps_only_the_halt(tmp_path):
    lines = _job(tmp_path, "warning")
    assert not any(x.startswith("satmon: attached") for x in lines)
    assert not any("held-out eval_accuracy=" in x for x in lines)
    assert sum(x.startswith("satmon: halting training") for x in lines) == 1
