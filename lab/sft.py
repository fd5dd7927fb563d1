"""The pre-RL step: supervised fine-tuning on answers only or on reasoning traces.

:func:`supervised_finetune` trains a lab model on ``(prompt, completion)`` pairs with the usual
causal-LM loss on the completion tokens (and the end-of-sequence token) only, in a plain torch
loop: the models are tiny, so the loop is faster and easier to seed than a Trainer.
:func:`measure_faithfulness` samples rollouts and grades their scratchpads exactly with
:func:`satmon.lab.traces.faithfulness` (the paper: 8 prompts x 16 rollouts, judged 1 / 0.5 / 0).
torch is imported inside the functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from satmon._optional import require
from satmon.lab.traces import CumulativeTask, faithfulness, final_answer
from satmon.results import Result, format_number, json_safe, text_table


@dataclass(frozen=True)
class SFTResult:
    """What one supervised fine-tuning pass did."""

    steps: int
    n_pairs: int
    first_loss: float
    final_loss: float
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"steps": self.steps, "n_pairs": self.n_pairs,
                          "first_loss": self.first_loss, "final_loss": self.final_loss,
                          "wall_s": self.wall_s})


def _check_int(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"The '{name}' parameter must be an int >= {low}. Got {value!r} instead.")


def supervised_finetune(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *,
                        steps: int, learning_rate: float = 3e-3, batch_size: int = 32,
                        seed: int = 0) -> SFTResult:
    """Fine-tune ``model`` in place on ``(prompt, completion)`` pairs.

    Parameters
    ----------
    model, tokenizer:
        A lab model and its character tokenizer (:mod:`satmon.lab.models`).
    pairs:
        Prompts and target completions; the loss covers the completion and a final EOS token.
    steps:
        Optimizer steps (0 leaves the model unchanged).
    learning_rate:
        AdamW learning rate.
    batch_size:
        Pairs per step, drawn with replacement by a generator seeded with ``seed``.
    seed:
        Seeds the batch draw (the global torch random state is left as it was).

    Returns
    -------
    :class:`SFTResult` with the first and last batch loss.
    """
    _check_int("steps", steps, 0)
    _check_int("batch_size", batch_size, 1)
    if not pairs:
        raise ValueError("supervised_finetune needs at least one (prompt, completion) pair.")
    if not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise ValueError(f"The 'learning_rate' parameter must be a float > 0. "
                         f"Got {learning_rate!r} instead.")
    torch = require("torch", feature="supervised fine-tuning in the lab")
    start = time.perf_counter()
    encoded = []
    for prompt, completion in pairs:
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        encoded.append((p_ids + c_ids + [tokenizer.eos_token_id],
                        [-100] * len(p_ids) + c_ids + [tokenizer.eos_token_id]))
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id
    # Right padding: positions of real tokens start at 0, as in generation without padding.
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in encoded])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in encoded])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in encoded])

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(learning_rate))
    was_training = model.training
    model.train()
    first = last = math.nan
    for step in range(steps):
        idx = torch.randint(len(encoded), (batch_size,), generator=generator)
        out = model(input_ids=input_ids[idx], attention_mask=attention[idx], labels=labels[idx])
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        last = float(out.loss.detach())
        if step == 0:
            first = last
    model.train(was_training)
    return SFTResult(steps=steps, n_pairs=len(pairs), first_loss=first, final_loss=last,
                     wall_s=time.perf_counter() - start)


def sample_completions(model: Any, tokenizer: Any, prompts: Sequence[str], *, n: int,
                       max_new_tokens: int, temperature: float = 1.0, seed: int = 0
                       ) -> list[list[str]]:
    """``n`` sampled completions per prompt (``temperature=0`` gives greedy, repeated)."""
    _check_int("n", n, 1)
    _check_int("max_new_tokens", max_new_tokens, 1)
    torch = require("torch", feature="sampling from a lab model")
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    was_training = model.training
    model.eval()
    greedy = temperature == 0
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=not greedy,
                             temperature=None if greedy else float(temperature),
                             top_k=None, top_p=None,
                             num_return_sequences=1 if greedy else n)
    model.train(was_training)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    if greedy:
        return [[t] * n for t in texts]
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


class FaithfulnessResult(Result):
    """Exact reasoning faithfulness of sampled rollouts (the paper's 1 / 0.5 / 0 rubric)."""

    def __init__(self, *, scores: Sequence[float], correct: Sequence[bool], n_prompts: int,
                 rollouts: int) -> None:
        self.scores = tuple(float(s) for s in scores)
        self.correct = tuple(bool(c) for c in correct)
        self.n_prompts = n_prompts
        self.rollouts = rollouts

    @property
    def mean(self) -> float:
        """Mean rubric score over all rollouts."""
        return sum(self.scores) / len(self.scores) if self.scores else math.nan

    def fraction(self, level: float) -> float:
        """Fraction of rollouts scored exactly ``level`` (1.0, 0.5 or 0.0)."""
        return (sum(s == level for s in self.scores) / len(self.scores)
                if self.scores else math.nan)

    @property
    def accuracy(self) -> float:
        """Fraction of rollouts whose final answer is the true answer."""
        return sum(self.correct) / len(self.correct) if self.correct else math.nan

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"mean": self.mean, "faithful": self.fraction(1.0),
                          "answer_follows_flawed_steps": self.fraction(0.5),
                          "unfaithful": self.fraction(0.0), "accuracy": self.accuracy,
                          "n_prompts": self.n_prompts, "rollouts": self.rollouts})

    def summary(self) -> str:
        d = self.to_dict()
        rows = [[k, format_number(d[k])] for k in
                ("mean", "faithful", "answer_follows_flawed_steps", "unfaithful", "accuracy")]
        return (f"Faithfulness over {self.n_prompts} prompts x {self.rollouts} rollouts\n"
                + text_table(["measure", "value"], rows))


def measure_faithfulness(model: Any, tokenizer: Any, task: CumulativeTask,
                         prompts: Sequence[str], *, rollouts: int = 16,
                         temperature: float = 1.0, seed: int = 0) -> FaithfulnessResult:
    """Sample ``rollouts`` completions per prompt and grade each scratchpad exactly."""
    if not isinstance(task, CumulativeTask):
        raise TypeError(f"measure_faithfulness needs a CumulativeTask (a task with a "
                        f"scratchpad). Got {type(task).__name__} instead.")
    if not prompts:
        raise ValueError("measure_faithfulness needs at least one prompt.")
    samples = sample_completions(model, tokenizer, prompts, n=rollouts,
                                 max_new_tokens=task.length + 2, temperature=temperature,
                                 seed=seed)
    scores, correct = [], []
    for prompt, completions in zip(prompts, samples):
        truth = task.answer(prompt)
        for c in completions:
            scores.append(faithfulness(task, prompt, c))
            correct.append(final_answer(c, with_trace=True) == truth)
    return FaithfulnessResult(scores=scores, correct=correct, n_prompts=len(prompts),
                              rollouts=rollouts)
