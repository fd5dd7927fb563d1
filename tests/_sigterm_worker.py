"""Subprocess for tests/test_callback_resume.py: a real SIGTERM in the worst window.

Usage: ``python tests/_sigterm_worker.py OUT_DIR KILL_STEP``

Trains the 40-step SFT job of the resume tests (checkpoints every 10 steps) with a callback
placed *before* satmon's that sends this process SIGTERM from ``on_save`` at ``KILL_STEP``:
the Trainer has written checkpoint-KILL_STEP, satmon's ``on_save`` has not run, and the
default SIGTERM action ends the process there, as a preempting scheduler would.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from _callback_lab import sft_trainer  # noqa: E402
from satmon.callbacks import SaturationCallback  # noqa: E402

MONITOR = {"warmup_steps": 10, "min_heldout_points": 4, "refit_every": 10}
KEYS = {"train_key": "loss", "heldout_keys": ["eval_accuracy"]}


class TermAtSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    out, step = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    cb = SaturationCallback(MONITOR, keys=KEYS, train_transform=lambda x: math.exp(-x),
                            mlflow=False)
    sft_trainer(out, max_steps=40, callbacks=[TermAtSave(step), cb], save_strategy="steps",
                save_steps=10).train()


if __name__ == "__main__":
    main()
