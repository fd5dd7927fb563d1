"""Two processes under torchrun (gloo, CPU): one rank's stop stops both; gathered held-out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

pytestmark = pytest.mark.slow

WORKER = Path(__file__).resolve().parent / "_dist_worker.py"
TIMEOUT_S = 300


def _torchrun(tmp_path: Path, scenario: str) -> list[dict]:
    out = tmp_path / scenario
    out.mkdir()
    # No Hub access from the workers (nothing may be downloaded; no telemetry thread).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(out), scenario]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # The workers run in torchrun's session: kill the whole group, or they outlive the test.
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"torchrun {scenario} hung for {TIMEOUT_S} s (a rank stopped alone?):\n"
                    f"{(stderr or '')[-3000:]}")
    assert proc.returncode == 0, stderr[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_a_stop_seen_by_one_rank_stops_both(tmp_path):
    r0, r1 = _torchrun(tmp_path, "skew")
    assert r0["world_size"] == r1["world_size"] == 2
    # Rank 0 saw NaN rewards from step 4 (SKEW_FROM) and halted on its own evidence ...
    assert r0["reasons"][-1] == "non_finite" and r0["actions"][-1] == "halt"
    # ... rank 1 saw only finite rewards and never wanted to stop ...
    assert set(r1["actions"]) == {"continue"}
    assert all(v is not None and v == v for v in r1["train_rewards"])
    # ... and both left training at the same step, long before max_steps, with no hang.
    assert r0["global_step"] == r1["global_step"] == r0["halted_step"] == r1["halted_step"]
    assert r0["halted_step"] < 30
    assert f"checkpoint-{r0['halted_step']}" in r0["checkpoints"]  # halt_and_save


def test_a_rank_local_fault_in_the_stop_vote_keeps_the_ranks_in_step(tmp_path):
    """Rank 1's stop vote fails locally twice (its wish, then its vote tensor): both ranks
    still make every collective, so they stop together at rank 0's halt, within the timeout."""
    r0, r1 = _torchrun(tmp_path, "vote_fault")
    assert r1["injected_faults"] == [2, 3] and r0["injected_faults"] == []
    # Both faults reached both ranks as counted failed votes, not as a skipped collective.
    assert r0["vote_failures"] == r1["vote_failures"] == 2
    assert r1["failures"] == 0  # the vote absorbed them; nothing was lost from the monitor
    assert r0["reasons"][-1] == "non_finite"
    assert r0["global_step"] == r1["global_step"] == r0["halted_step"] == r1["halted_step"]
    assert r0["halted_step"] < 30
    assert len(r0["actions"]) == len(r1["actions"])


def test_heldout_evaluator_splits_and_gathers_across_ranks(tmp_path):
    r0, r1 = _torchrun(tmp_path, "evaluator")
    assert r0["global_step"] == r1["global_step"] == 30
    # Each rank scored half of the 64 prompts; both got the same gathered value and n = 64.
    assert r0["heldout"] == r1["heldout"] and len(r0["heldout"]) == 16  # steps 0, 2, ..., 30
    assert all(n == {"heldout": 64} for n in r0["heldout_n"] + r1["heldout_n"])
    assert r0["train_rewards"] == r1["train_rewards"]  # TRL gathers before logging
