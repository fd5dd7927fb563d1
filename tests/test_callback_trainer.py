"""SaturationCallback on a plain transformers Trainer (supervised, not RL) with an eval metric."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")

from _callback_lab import sft_trainer  # noqa: E402
from satmon.callbacks import SaturationCallback  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here trains a tiny model: one torch thread (see conftest)."""


def test_plain_trainer_with_an_eval_metric(tmp_path):
    cb = SaturationCallback({"warmup_steps": 10, "min_heldout_points": 4, "refit_every": 10},
                            keys={"train_key": "loss", "heldout_keys": ["eval_accuracy"]},
                            train_transform=lambda loss: math.exp(-loss), mlflow=False)
    trainer = sft_trainer(tmp_path / "run", max_steps=40, callbacks=[cb])
    trainer.train()

    assert trainer.state.global_step == 40 and cb.heldout_source == "eval"
    rows = cb.history
    assert [r["step"] for r in rows] == list(range(1, 41))  # one update per step
    held = [(r["step"], r["heldout"]["eval_accuracy"], r["heldout_n"]["eval_accuracy"])
            for r in rows if r["heldout"]]
    assert [s for s, _, _ in held] == list(range(5, 41, 5))
    assert all(n == 128 for _, _, n in held)  # the size of the evaluation dataset
    logged = {h["step"]: h["eval_accuracy"] for h in trainer.state.log_history
              if "eval_accuracy" in h}
    assert {s: v for s, v, _ in held} == pytest.approx(logged)
    losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    assert all(r["train_reward"] == pytest.approx(math.exp(-losses[r["step"]])) for r in rows)
    assert held[-1][1] > held[0][1]  # the rule is learned: held-out accuracy rises
    assert rows[-1]["train_reward"] > rows[0]["train_reward"]


def test_plain_trainer_misspelled_eval_metric_lists_the_eval_keys(tmp_path):
    cb = SaturationCallback(keys={"train_key": "loss", "heldout_keys": ["eval_acc"]},
                            mlflow=False)
    trainer = sft_trainer(tmp_path / "run", max_steps=10, callbacks=[cb])
    with pytest.raises(KeyError) as info:
        trainer.train()
    assert "'eval_acc'" in str(info.value) and "'eval_accuracy'" in str(info.value)
    assert trainer.state.global_step == 5  # raised at the first evaluation log


def test_frozen_after_follows_the_trainers_adam_betas(tmp_path):
    """The zero-gradient evidence waits for the optimizer's momentum: the callback derives the
    monitor's frozen_after from the trainer's Adam betas, unless it is given."""
    from satmon.monitor.config import momentum_steps

    def built(name, monitor=None, **args):
        cb = SaturationCallback(monitor, keys={"train_key": "loss",
                                               "heldout_keys": ["eval_accuracy"]},
                                train_transform=lambda loss: math.exp(-loss), mlflow=False)
        sft_trainer(tmp_path / name, max_steps=1, callbacks=[cb], **args).train()
        return cb._run.monitor.config.frozen_after

    assert built("default") == momentum_steps(0.9, 0.999) == 44
    assert built("fast", adam_beta1=0.5) == momentum_steps(0.5, 0.999) == 7
    assert built("given", {"frozen_after": 3}, adam_beta1=0.5) == 3
    assert built("sgd", optim="sgd", adam_beta1=0.5) == 44  # not Adam: the monitor's default


def test_unusable_adam_betas_are_a_logged_skip_not_a_crash(tmp_path, caplog):
    """Betas whose momentum never decays (beta1 / sqrt(beta2) >= 1) cannot give a frozen_after:
    momentum_steps names them, and the callback logs that and keeps the monitor's default."""
    import logging

    from transformers import TrainingArguments

    from satmon.callbacks.saturation import _adam_momentum_steps
    from satmon.monitor.config import momentum_steps

    with pytest.raises(ValueError, match="beta1=0.9995, beta2=0.999"):
        momentum_steps(0.9995, 0.999)
    with pytest.raises(ValueError, match="0 <= beta1 < 1"):
        momentum_steps(1.2, 0.999)
    args = TrainingArguments(output_dir=str(tmp_path), adam_beta1=0.9995, report_to=[])
    with caplog.at_level(logging.WARNING, logger="satmon"):
        assert _adam_momentum_steps(args) is None
    assert "does not decay" in caplog.text and "keeps the monitor's default" in caplog.text
