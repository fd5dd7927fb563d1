"""Miniature GRPO / Trainer jobs for the callback tests (real TRL, tiny local models).

Shared by tests/test_callback*.py, tests/test_distributed*.py (through tests/_dist_worker.py)
and benchmarks/bench_callback.py. A job trains an ~84k-parameter Llama on a symbol task:
``mode="rule"`` (the answer is the prompt's last symbol: held-out accuracy climbs with the
training reward) or ``mode="random"`` (8 training prompts with fixed random labels: the reward
saturates by memorization while held-out accuracy stays at chance, 0.25).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from satmon.callbacks import HeldoutEvaluator
from satmon.lab.models import build_char_tokenizer, build_tiny_model, restrict_generation
from satmon.lab.tasks import (SymbolTask, TaskSplit, exact_match, make_split, to_dataset,
                              trl_reward, with_random_labels)

TASK = SymbolTask(rule="last", symbols="abcd", length=5)


@dataclass
class LabJob:
    split: TaskSplit
    tokenizer: Any
    model: Any
    generation_kwargs: dict[str, Any]

    def evaluator(self, *, every: int = 5, **kwargs: Any) -> HeldoutEvaluator:
        params = {"max_new_tokens": 1, "generation_kwargs": self.generation_kwargs,
                  "batch_size": 256, **kwargs}
        return HeldoutEvaluator(self.split.heldout_prompts, self.split.heldout_answers,
                                exact_match, name="heldout", every=every, **params)


def lab_job(mode: str = "rule", *, seed: int = 0, n_train: int | None = None,
            n_heldout: int = 256) -> LabJob:
    if mode not in ("rule", "random"):
        raise ValueError(f"mode must be 'rule' or 'random', got {mode!r}")
    n_train = n_train or (8 if mode == "random" else 64)
    split = make_split(TASK, n_train=n_train, n_heldout=n_heldout, seed=seed)
    if mode == "random":
        split = with_random_labels(split, seed=seed + 1)
    tok = build_char_tokenizer(TASK.alphabet)
    model = build_tiny_model(tok, seed=seed)
    return LabJob(split=split, tokenizer=tok, model=model,
                  generation_kwargs=restrict_generation(tok, TASK.symbols))


def grpo_trainer(job: LabJob, output_dir: Any, *, max_steps: int, callbacks: Sequence[Any] = (),
                 reward_funcs: Sequence[Any] | None = None, lr: float = 1e-3, seed: int = 0,
                 eval_steps: int | None = None, eval_prompts: int = 32, **overrides: Any) -> Any:
    """A GRPOTrainer on CPU: 8 prompts x 8 generations per step, one-token completions."""
    from trl import GRPOConfig, GRPOTrainer

    params: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=max_steps, learning_rate=lr,
        lr_scheduler_type="constant", per_device_train_batch_size=64, num_generations=8,
        generation_batch_size=64, max_completion_length=1, logging_steps=1,
        save_strategy="no", report_to=[], bf16=False, use_cpu=True,
        activation_checkpointing=False, disable_tqdm=True, seed=seed, log_level="warning",
        generation_kwargs=job.generation_kwargs, dataloader_num_workers=0)
    eval_dataset = None
    if eval_steps is not None:
        params.update(eval_strategy="steps", eval_steps=eval_steps,
                      per_device_eval_batch_size=64, num_generations_eval=8)
        eval_dataset = to_dataset(job.split.heldout[:eval_prompts])
    params.update(overrides)
    return GRPOTrainer(
        model=job.model, processing_class=job.tokenizer,
        reward_funcs=list(reward_funcs) if reward_funcs is not None else [trl_reward()],
        args=GRPOConfig(**params), train_dataset=to_dataset(job.split.train),
        eval_dataset=eval_dataset, callbacks=list(callbacks))


def short_monitor(**overrides: Any) -> dict[str, Any]:
    """Monitor parameters that fit a run of a few hundred steps evaluated every 5 steps.

    ``min_heldout_gain=0.05``: with 256 held-out prompts one evaluation has a binomial sd of
    about 0.027, so a gain under 5 points is not worth the remaining budget of a miniature run.
    ``eps=0.95``: a reward pinned at its ceiling still creeps from 0.97 to 1.0, which the
    paper's 0.99 rule reads as "not saturated yet" for a long time on a 300-step budget.
    """
    return {"warmup_steps": 20, "min_heldout_points": 4, "refit_every": 10, "bootstrap": 2,
            "end_margin": 10, "min_heldout_gain": 0.05, "eps": 0.95, **overrides}


def sft_trainer(output_dir: Any, *, max_steps: int, callbacks: Sequence[Any] = (), seed: int = 0,
                **overrides: Any) -> Any:
    """A plain transformers Trainer (supervised, not RL) with an eval accuracy metric.

    The tiny model learns the rule task by next-token prediction of the answer; every
    ``eval_steps`` the Trainer evaluates on 128 held-out prompts and logs ``eval_accuracy``
    (greedy next-token accuracy at the answer position, from ``compute_metrics``).
    """
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    split = make_split(TASK, n_train=64, n_heldout=128, seed=seed)
    tok = build_char_tokenizer(TASK.alphabet)

    def encode(examples: Sequence[Any]) -> Any:
        ids = [tok(e.prompt + e.answer)["input_ids"] for e in examples]
        return Dataset.from_dict({
            "input_ids": ids, "attention_mask": [[1] * len(x) for x in ids],
            # Only the answer token is a target.
            "labels": [[-100] * (len(x) - 1) + [x[-1]] for x in ids]})

    def accuracy(pred: Any) -> dict[str, float]:
        preds, labels = pred
        target = labels[:, 1:] != -100  # logits at position t predict token t + 1
        return {"accuracy": float((preds[:, :-1][target] == labels[:, 1:][target]).mean())}

    params: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=max_steps, learning_rate=3e-3,
        per_device_train_batch_size=16, per_device_eval_batch_size=128, logging_steps=1,
        eval_strategy="steps", eval_steps=5, save_strategy="no", report_to=[], use_cpu=True,
        seed=seed, disable_tqdm=True, log_level="warning")
    params.update(overrides)
    return Trainer(model=build_tiny_model(tok, seed=seed), args=TrainingArguments(**params),
                   train_dataset=encode(split.train), eval_dataset=encode(split.heldout),
                   compute_metrics=accuracy,
                   preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1),
                   callbacks=list(callbacks))
