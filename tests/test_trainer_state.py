"""A trainer_state.json written by a real (tiny, CPU) transformers Trainer run parses and analyzes.

The model is a 2-layer Llama with hidden size 32, randomly initialised, learning a
deterministic next-token rule on random sequences, so its token accuracy climbs and saturates.
Like TRL's GRPOTrainer, the trainer subclass adds its reward to the logs in ``log``: the batch
token accuracy as ``reward`` / ``rewards/token_accuracy/mean`` in training logs and as
``eval_rewards/token_accuracy/mean`` in evaluation logs, which share the training step.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from satmon.analysis import read_run
from satmon.cli import main

VOCAB, SEQ, MAX_STEPS = 32, 12, 30


@pytest.fixture(scope="module")
def trained_output_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)

    class NextTokenData(torch.utils.data.Dataset):
        """Sequences where each token is the previous one plus 3 (mod VOCAB)."""

        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            start = torch.randint(0, VOCAB, (n, 1), generator=g)
            self.ids = (start + 3 * torch.arange(SEQ)) % VOCAB

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.ids[i]}

    class TokenAccuracyTrainer(transformers.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._acc = {"train": [], "eval": []}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            pred = outputs.logits[:, :-1].argmax(-1)
            acc = (pred == inputs["labels"][:, 1:]).float().mean().item()
            self._acc["train" if model.training else "eval"].append(acc)
            return (loss, outputs) if return_outputs else loss

        def log(self, logs, start_time=None):
            mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
            values = self._acc[mode]
            if values and ("loss" in logs or mode == "eval"):
                mean = sum(values) / len(values)
                if mode == "train":
                    logs.update({"reward": mean, "rewards/token_accuracy/mean": mean})
                else:
                    logs["eval_rewards/token_accuracy/mean"] = mean
                values.clear()
            super().log(logs, start_time)

    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=SEQ)
    model = transformers.LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama-run")
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=MAX_STEPS, per_device_train_batch_size=16,
        per_device_eval_batch_size=32, learning_rate=1e-2, logging_steps=1,
        eval_strategy="steps", eval_steps=5, save_strategy="steps", save_steps=10,
        report_to=[], use_cpu=True, bf16=False, seed=0, disable_tqdm=False,
        dataloader_num_workers=0,
    )
    trainer = TokenAccuracyTrainer(model=model, args=args, train_dataset=NextTokenData(512, 1),
                                   eval_dataset=NextTokenData(64, 2))
    # Keep what the job prints (log dicts between tqdm redraws), as a user's terminal log would.
    console = io.StringIO()
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        trainer.train()
    (out / "console.log").write_text(console.getvalue())
    return out


@pytest.mark.slow
def test_real_trainer_state_parses(trained_output_dir):
    state_path = trained_output_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    history = state["log_history"]
    # Train and eval entries share a step, as the reader must handle.
    assert {e["step"] for e in history if "eval_loss" in e} == {5, 10, 15, 20, 25, 30}
    assert any("loss" in e and e["step"] == 5 for e in history)

    for source in (trained_output_dir, state_path, state_path.parent):
        run = read_run(source)
        assert run.metadata["format"] == "trainer-state"
        assert run.metadata["source"] == str(state_path)
        assert run.metadata["preset"] == "trl"
        assert run.train_reward.steps.tolist() == list(range(1, MAX_STEPS + 1))
        held = run.heldout["token_accuracy"]
        assert held.steps.tolist() == [5, 10, 15, 20, 25, 30]
        assert run.metadata["global_step"] == MAX_STEPS
    expected = [e["reward"] for e in history if "reward" in e]
    assert run.train_reward.values.tolist() == expected
    # The model learned the rule: the reward rose from chance.
    assert run.train_reward.values[-1] > run.train_reward.values[0] + 0.3


@pytest.mark.slow
def test_analyze_command_on_real_trainer_output(trained_output_dir, capsys):
    assert main(["analyze", str(trained_output_dir), "--end-margin", "5"]) == 0
    printed = capsys.readouterr().out
    assert "t_sat" in printed and "token_accuracy" in printed
    assert main(["analyze", str(trained_output_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result, dict)
    # An earlier checkpoint folder reads only the steps it had logged.
    early = read_run(trained_output_dir / "checkpoint-10")
    assert early.last_step == 10


@pytest.mark.slow
def test_console_output_of_the_same_run(trained_output_dir):
    """The printed log dicts (transformers 5 prints floats as 4-digit strings) give the same
    series as trainer_state.json, at the printed precision, at the same steps."""
    console = trained_output_dir / "console.log"
    state = read_run(trained_output_dir)
    run = read_run(console)
    assert run.metadata["format"] == "trl-console"
    assert "steps_from_log_index" not in run.metadata
    assert run.train_reward.steps.tolist() == state.train_reward.steps.tolist()
    for ours, exact in zip(run.train_reward.values, state.train_reward.values):
        assert float(f"{exact:.4g}") == ours
    held, held_exact = run.heldout["token_accuracy"], state.heldout["token_accuracy"]
    assert held.steps.tolist() == held_exact.steps.tolist()
    assert [float(f"{v:.4g}") for v in held_exact.values] == held.values.tolist()
