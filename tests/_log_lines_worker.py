"""Subprocess for tests/test_callback_log_lines.py: a job that configured no logging at all.

Usage: ``python tests/_log_lines_worker.py OUT_DIR LOG_LEVEL``; trains the 30-step SFT job of
the callback tests (eval every 5 steps) with satmon attached, halting on a low patience
configuration, and prints nothing itself: what reaches stderr is what a user would see.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _callback_lab import sft_trainer  # noqa: E402
from satmon.callbacks import SaturationCallback  # noqa: E402


def main() -> None:
    out, level = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    cb = SaturationCallback({"warmup_steps": 10, "min_heldout_points": 4, "max_non_finite": 1},
                            keys={"train_key": "loss", "heldout_keys": ["eval_accuracy"]},
                            train_transform=lambda x: math.nan if x < 1.3 else math.exp(-x),
                            mlflow=False, action="halt")
    sft_trainer(out, max_steps=30, callbacks=[cb], log_level=level).train()


if __name__ == "__main__":
    main()
