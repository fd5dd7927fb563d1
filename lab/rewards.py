"""Self-supervised proxy rewards for lab runs, as TRL ``GRPOTrainer`` reward functions.

The paper trains with two label-free rewards: **majority vote** (a completion is rewarded when
its answer agrees with the most common answer among the group sampled for the same prompt,
as in test-time RL) and **self-certainty** (the mean KL divergence from the uniform
distribution to the model's next-token distribution over the completion, Zhao et al. 2025).
Neither looks at a label, so the held-out set (scored against true labels) is the only place a
run can be seen drifting away from the task.

TRL calls a reward function with the whole generation batch, each prompt repeated
``num_generations`` times; :class:`MajorityVoteReward` groups completions by their prompt text.
A completion with no parsable answer gets no vote and a reward of 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from satmon._optional import require
from satmon.lab.tasks import completion_text

AnswerParser = Callable[[str], "str | None"]




class MajorityVoteReward:
    """Reward 1.0 when a completion's answer is its group's most common answer, else 0.0.

    Parameters
    ----------
    parse_answer:
        ``completion -> answer or None``: the final answer in a completion.
    name:
        The name TRL logs the reward under (``rewards/<name>/mean``).

    Ties between equally common answers go to the answer that appears first in the group, so
    the reward is deterministic for a given batch.

    Example
    -------
    >>> vote = MajorityVoteReward(lambda c: c[:1] or None)
    >>> vote(prompts=["ab="] * 4 + ["ba="] * 2, completions=["a", "b", "a", "", "b", "a"])
    [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    """

    def __init__(self, parse_answer: AnswerParser, *, name: str = "majority_vote") -> None:
        if not callable(parse_answer):
            raise TypeError(f"The 'parse_answer' of MajorityVoteReward must be callable. "
                            f"Got {parse_answer!r}.")
        self.parse_answer = parse_answer
        self.__name__ = name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 **columns: Any) -> list[float]:
        answers = [self.parse_answer(completion_text(c)) for c in completions]
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(completion_text(p), []).append(i)
        rewards = [0.0] * len(completions)
        for members in groups.values():
            votes = Counter(answers[i] for i in members if answers[i] is not None)
            if not votes:
                continue
            top = max(votes.values())
            # First answer in group order among the most common ones.
            winner = next(answers[i] for i in members if answers[i] is not None
                          and votes[answers[i]] == top)
            for i in members:
                rewards[i] = 1.0 if answers[i] == winner else 0.0
        return rewards


class SelfCertaintyReward:
    """Reward the model's own confidence: mean KL(uniform || p) over the completion's tokens.

    ``KL(U || p) = -log V - (1/V) * sum_j log p_j`` for a vocabulary of V tokens: 0 for a
    uniform next-token distribution, growing without bound as the distribution sharpens. The
    reward is computed with one extra forward pass of the policy (``model``, the same object the
    trainer updates) on prompt + completion, without gradients.

    Parameters
    ----------
    model, tokenizer:
        The policy being trained and its tokenizer.
    name:
        The name TRL logs the reward under.

    A completion with no tokens has no self-certainty and is scored None (TRL treats it as
    missing for this reward function).
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "self_certainty") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.__name__ = name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 **columns: Any) -> list[float | None]:
        torch = require("torch", feature="the self-certainty reward")
        tok = self.tokenizer
        rows, spans = [], []
        for p, c in zip(prompts, completions):
            p_ids = tok(completion_text(p), add_special_tokens=False)["input_ids"]
            c_ids = tok(completion_text(c), add_special_tokens=False)["input_ids"]
            rows.append(p_ids + c_ids)
            spans.append((len(p_ids), len(c_ids)))
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        # Right padding keeps every real token at its natural position.
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        self.model.train(was_training)
        log_p = torch.log_softmax(logits, dim=-1)
        vocab = log_p.shape[-1]
        # KL(U || p) at every position; the token at position i is predicted at i - 1.
        kl = -math.log(vocab) - log_p.mean(dim=-1)
        out: list[float | None] = []
        for row, (n_prompt, n_completion) in enumerate(spans):
            if n_completion == 0:
                out.append(None)
                continue
            span = kl[row, n_prompt - 1:n_prompt - 1 + n_completion]
            out.append(float(span.mean()))
        return out
