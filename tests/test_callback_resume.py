"""Resuming from a checkpoint continues with the same decisions as an uninterrupted run."""

from __future__ import annotations

import json
import logging
import math

import pytest

pytest.importorskip("trl")
from transformers import TrainerCallback  # noqa: E402

from _callback_lab import grpo_trainer, lab_job, sft_trainer, short_monitor  # noqa: E402
from satmon.callbacks import SaturationCallback  # noqa: E402
from satmon.monitor import SaturationMonitor  # noqa: E402

pytestmark = pytest.mark.slow

MONITOR = {"warmup_steps": 10, "min_heldout_points": 4, "refit_every": 10}
KEYS = {"train_key": "loss", "heldout_keys": ["eval_accuracy"]}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here trains a tiny model: one torch thread (see conftest)."""


class Interrupt(TrainerCallback):
    """Stops training at a given step, like a preempted job (the step's checkpoint is saved)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _sft_callback():
    return SaturationCallback(MONITOR, keys=KEYS, train_transform=lambda x: math.exp(-x),
                              mlflow=False)


def _comparable(rows):
    return [{k: r[k] for k in ("step", "train_reward", "heldout", "heldout_n", "action",
                               "reason", "phase", "p_saturated", "t_sat_estimate", "message")}
            for r in rows]


@pytest.mark.parametrize("restore", [True, False])
def test_resumed_trainer_makes_the_decisions_of_an_uninterrupted_one(tmp_path, restore):
    save = {"save_strategy": "steps", "save_steps": 10,
            "restore_callback_states_from_checkpoint": restore}
    straight = _sft_callback()
    sft_trainer(tmp_path / "a", max_steps=40, callbacks=[straight], **save).train()

    first = _sft_callback()
    sft_trainer(tmp_path / "b", max_steps=40, callbacks=[first, Interrupt(20)], **save).train()
    assert first.history[-1]["step"] == 20
    ckpt = tmp_path / "b" / "checkpoint-20"
    assert (ckpt / "satmon_state.json").exists()

    resumed = _sft_callback()
    trainer = sft_trainer(tmp_path / "b", max_steps=40, callbacks=[resumed], **save)
    trainer.train(resume_from_checkpoint=str(ckpt))

    assert _comparable(resumed.history) == _comparable(straight.history)
    assert len(resumed.decisions) == 20  # made after the resume, steps 21..40
    if restore:
        # The Trainer rebuilt the callback from trainer_state.json; the object the user holds
        # shares its run state, so it sees every decision.
        (live,) = [c for c in trainer.callback_handler.callbacks
                   if isinstance(c, SaturationCallback)]
        assert live is not resumed and live.history == resumed.history
        assert live.saved_step == 20  # restored from the checkpoint's trainer_state.json
        saved = json.loads((ckpt / "trainer_state.json").read_text())
        attrs = saved["stateful_callbacks"]["SaturationCallback"]["attributes"]
        assert attrs["saved_step"] == 20 and attrs["state_file"] == str(
            (ckpt / "satmon_state.json").resolve())


def test_grpo_resume_continues_the_engine_exactly(tmp_path):
    # GRPO sampling after a resume is not bit-identical to an uninterrupted run (TRL's
    # generation does not replay), so the claim is checked on what satmon controls: after the
    # resume, the engine's decisions equal those of one engine fed the whole run's inputs.
    def callback(job):
        return SaturationCallback(short_monitor(), evaluator=job.evaluator(every=5),
                                  mlflow=False)

    save = {"save_strategy": "steps", "save_steps": 10,
            "restore_callback_states_from_checkpoint": True}
    job = lab_job("random", seed=0)
    first = callback(job)
    grpo_trainer(job, tmp_path / "run", max_steps=60, callbacks=[first, Interrupt(30)],
                 **save).train()
    job = lab_job("random", seed=0)
    resumed = callback(job)
    grpo_trainer(job, tmp_path / "run", max_steps=60, callbacks=[resumed], **save).train(
        resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-30"))

    rows = resumed.history
    assert [r["step"] for r in rows] == list(range(0, 61))
    assert _comparable(rows[:31]) == _comparable(first.history)

    replay = SaturationMonitor(**short_monitor(), total_steps=60, eval_every=5)
    replayed = [replay.update(r["step"], r["train_reward"],
                              heldout={k: (v, r["heldout_n"][k]) for k, v in r["heldout"].items()}
                              or None, aux=r["aux"] or None) for r in rows]
    after = [d.to_dict() for d in replayed[31:]]
    assert after == [d.to_dict() for d in resumed.decisions]


def test_resume_without_the_engine_state_warns_and_goes_on(tmp_path, caplog):
    save = {"save_strategy": "steps", "save_steps": 10}
    first = _sft_callback()
    sft_trainer(tmp_path / "b", max_steps=20, callbacks=[first, Interrupt(10)], **save).train()
    (tmp_path / "b" / "checkpoint-10" / "satmon_state.json").unlink()
    resumed = _sft_callback()
    trainer = sft_trainer(tmp_path / "b", max_steps=20, callbacks=[resumed], **save)
    with caplog.at_level(logging.WARNING, logger="satmon"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-10"))
    assert trainer.state.global_step == 20
    assert "no engine state was found" in caplog.text
    assert [r["step"] for r in resumed.history] == list(range(11, 21))
