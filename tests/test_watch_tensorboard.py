"""``satmon watch`` on a TensorBoard folder written incrementally (OpenRLHF's tags).

The writer is TensorBoard's own ``EventFileWriter`` (what ``torch.utils.tensorboard.
SummaryWriter`` writes through), one scalar event per tag as ``add_scalar`` does, flushed per
step, in a thread; a resumed job adds a second event file that repeats a few steps.
"""

from __future__ import annotations

import threading
import time

import pytest
from _watch_support import (decision_entries, expected_entries, reference_decisions,
                            saved_state, verl_records, wait_for)

from satmon.cli import main
from satmon.watch import EXIT_HALTED

pytest.importorskip("tensorboard")

OPENRLHF = {"critic/score/mean": "train/reward",
            "val-core/math/acc/mean@1": "eval/eval_math_pass1",
            "actor/entropy": "train/entropy"}


def _fed(state_file):
    if not state_file.exists():
        return -1
    try:
        (run,) = saved_state(state_file)["runs"].values()
    except ValueError:  # caught mid-replace: read again
        return -1
    return run["last_fed"]


def _write(logdir, records, done, state_file, resume_at=60, repeat=5):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(logdir), filename_suffix=".first")
    for step, data in records:
        if done.is_set():
            break
        if step == resume_at:  # the job is restarted from its checkpoint: a new event file
            writer.close()
            # Once the watcher has fed the steps the resumed job repeats, so they are repeats.
            wait_for(lambda: _fed(state_file) >= resume_at - 2, what="the watcher at step 58")
            writer = EventFileWriter(str(logdir), filename_suffix=".resumed")
            for s, d in records[step - repeat:step]:
                _scalars(writer, Event, Summary, s, d)
        _scalars(writer, Event, Summary, step, data)
        writer.flush()
        time.sleep(0.005)
    writer.close()


def _scalars(writer, Event, Summary, step, data):
    for key, value in data.items():
        if key in OPENRLHF:
            writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(
                value=[Summary.Value(tag=OPENRLHF[key], simple_value=float(value))])))


def test_tensorboard_folder_followed_with_openrlhf_keys(tmp_path, capsys):
    records = verl_records(total_steps=200)
    logdir = tmp_path / "tb"
    logdir.mkdir()
    done = threading.Event()
    writer = threading.Thread(target=_write, args=(logdir, records, done,
                                                   tmp_path / "d.jsonl.state.json"))
    writer.start()
    try:
        rc = main(["watch", str(logdir), "--total-steps", "200", "--warmup-steps", "30",
                   "--heldout-n", "math=500", "--interval", "0.05", "--timeout", "60",
                   "--action", "flag", "--decision-log", str(tmp_path / "d.jsonl")])
    finally:
        done.set()
        writer.join()
    out = capsys.readouterr().out
    assert rc == EXIT_HALTED, out
    (run,) = saved_state(tmp_path / "d.jsonl.state.json")["runs"].values()
    assert run["status"] == "flagged" and run["halt"]["step"] == 80
    assert len(run["follower"]["files"]) == 2  # the second (resumed) file was picked up
    # steps 55..59 again: those already fed are skipped (59 may still be held back, merged)
    assert run["repeats"] >= 4 and "repeat steps already watched" in out
    # TensorBoard stores float32: the reference gets the same rounding.
    import numpy as np

    rounded = [(s, {k: float(np.float32(v)) for k, v in d.items()}) for s, d in records]
    _, decisions = reference_decisions(rounded, total_steps=200, warmup_steps=30,
                                       upto=run["last_fed"], train_key="critic/score/mean",
                                       heldout_key="val-core/math/acc/mean@1",
                                       aux_key="actor/entropy")
    assert decision_entries(tmp_path / "d.jsonl") == expected_entries(decisions)
    keys = run["series"]
    assert set(keys["heldout"]) == {"math"} and set(keys["aux"]) == {"entropy"}
