"""torchrun worker for tests/test_distributed.py: a 2-process GRPO job (gloo, CPU).

Usage: ``torchrun --nproc_per_node 2 tests/_dist_worker.py OUT_DIR SCENARIO``

Scenarios:

``skew``
    From step ``SKEW_FROM`` on, a callback placed before satmon's replaces the training reward
    with NaN **on rank 0 only**. Rank 0's monitor halts (NON_FINITE) on its own; rank 1's
    values are normal. The stop must still reach rank 1 through the all-reduce, or rank 1
    would wait forever in the next gradient all-reduce.
``vote_fault``
    The ``skew`` job, with two rank-local faults injected into **rank 1's** stop votes: its
    stop wish raises at step ``FAULT_STEP`` and building its vote tensor raises once at step
    ``FAULT_STEP + 1``. Both ranks must still make the same collectives and stop together.
``evaluator``
    No skew; a HeldoutEvaluator splits the held-out prompts across the two ranks and gathers
    the scores; each rank writes what it saw.

Each rank writes ``OUT_DIR/rank<r>.json`` with what it observed.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from _callback_lab import grpo_trainer, lab_job  # noqa: E402
from satmon.callbacks import SaturationCallback  # noqa: E402

SKEW_FROM = 4
MAX_STEPS = 30
FAULT_STEP = 2


class RankZeroSkew(TrainerCallback):
    """Corrupts the reward that rank 0's later callbacks see (logs are shared by callbacks)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs is not None and "reward" in logs \
                and state.global_step >= SKEW_FROM:
            logs["reward"] = math.nan


def inject_vote_faults(cb: SaturationCallback) -> list[int]:
    """Make rank 1's stop vote fail locally twice (see ``vote_fault``); returns the fault steps."""
    import satmon.callbacks.distributed as distributed

    faults: list[int] = []
    wish, device = cb._stop_wish, distributed._collective_device

    def failing_wish():
        if cb._global_step == FAULT_STEP and FAULT_STEP not in faults:
            faults.append(FAULT_STEP)
            raise RuntimeError("injected: stop wish failed on rank 1")
        return wish()

    def failing_device(dist):
        if cb._global_step == FAULT_STEP + 1 and FAULT_STEP + 1 not in faults:
            faults.append(FAULT_STEP + 1)
            raise RuntimeError("injected: vote tensor failed on rank 1")
        return device(dist)

    cb._stop_wish = failing_wish
    distributed._collective_device = failing_device
    return faults


def main() -> int:
    out_dir, scenario = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    job = lab_job("rule", seed=0, n_heldout=64)
    faults: list[int] = []
    if scenario in ("skew", "vote_fault"):
        cb = SaturationCallback({"max_non_finite": 1, "warmup_steps": 5}, action="halt_and_save",
                                heldout="none", mlflow=False)
        callbacks = [RankZeroSkew(), cb]
        if scenario == "vote_fault" and int(os.environ.get("RANK", "0")) == 1:
            faults = inject_vote_faults(cb)
    elif scenario == "evaluator":
        cb = SaturationCallback({"warmup_steps": 5}, action="flag",
                                evaluator=job.evaluator(every=2), mlflow=False)
        callbacks = [cb]
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    trainer = grpo_trainer(job, out_dir / "run", max_steps=MAX_STEPS, callbacks=callbacks,
                           per_device_train_batch_size=32, generation_batch_size=64,
                           ddp_backend="gloo")
    trainer.train()
    rank = int(os.environ.get("RANK", "0"))
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    (out_dir / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank,
        "world_size": world,
        "global_step": trainer.state.global_step,
        "halted_step": cb.halted_step,
        "actions": [r["action"] for r in cb.history],
        "reasons": [r["reason"] for r in cb.history],
        "train_rewards": [r["train_reward"] for r in cb.history],
        "heldout": [r["heldout"] for r in cb.history if r["heldout"]],
        "heldout_n": [r["heldout_n"] for r in cb.history if r["heldout_n"]],
        "injected_faults": faults,
        "vote_failures": cb._run.vote_failures,
        "failures": cb._run.failures,
        "checkpoints": sorted(p.name for p in (out_dir / "run").glob("checkpoint-*")),
    }, default=lambda v: None))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    # The results are on disk; skip interpreter finalization. About one run in ten, a rank
    # aborted ("terminate called without an active exception") or hung in native thread
    # teardown after main() had returned, with no satmon thread alive (faulthandler dump:
    # only the main thread, a native thread and huggingface_hub's telemetry thread).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
