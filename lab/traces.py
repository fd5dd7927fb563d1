"""A task with an explicit scratchpad, and reasoning faithfulness measured exactly.

The paper's central claim is that supervised fine-tuning on explicit reasoning traces before RL
extends the pre-saturation phase, and that *reasoning faithfulness* (do the intermediate steps
support the final answer?) predicts the regime. There it is scored by an LLM judge; here the
derivation is code, so it is checked exactly.

:class:`CumulativeTask` answers a prompt of symbols with their sum modulo the number of symbols
(symbol ``i`` stands for the number ``i``). Without a scratchpad a tiny model must add every
symbol in one step; with one it writes the running sums and each step only adds one symbol::

    prompt       "bcad="          (1, 2, 0, 3)
    trace        "bddc"           running sums 1, 3, 3, 6 % 4 = 2
    completion   "bddc>c"         scratchpad, ">", final answer
    answer-only  "c"

:func:`faithfulness` grades a completion on the paper's three-level rubric, computed instead of
judged: 1.0 when every step of the scratchpad follows from the previous one and the prompt and
the final answer is the scratchpad's conclusion; 0.5 when the final answer is the scratchpad's
conclusion but some step is wrong (the answer follows from the derivation written, not from a
correct one); 0.0 when the final answer is not what the scratchpad concludes, or there is no
well-formed scratchpad. Faithfulness is independent of correctness: a faithful derivation with a
wrong step yields a wrong answer and still scores 0.5.

Example
-------
>>> task = CumulativeTask(symbols="abcd", length=4)
>>> task.answer("bcad="), task.trace("bcad=")
('c', 'bddc')
>>> task.completion("bcad=", with_trace=True)
'bddc>c'
>>> faithfulness(task, "bcad=", "bddc>c"), faithfulness(task, "bcad=", "bdda>a")
(1.0, 0.5)
>>> faithfulness(task, "bcad=", "bddc>a"), faithfulness(task, "bcad=", "c")
(0.0, 0.0)
>>> final_answer("bddc>c", with_trace=True), final_answer("c", with_trace=False)
('c', 'c')
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from satmon.lab.tasks import PROMPT_END, PromptSpace

#: Separates the scratchpad from the final answer in a completion.
TRACE_END = ">"


@dataclass(frozen=True)
class CumulativeTask(PromptSpace):
    """Prompts of ``length`` symbols answered by their sum modulo ``len(symbols)``.

    A :class:`satmon.lab.tasks.PromptSpace` like :class:`satmon.lab.tasks.SymbolTask`, so the
    splits and label corruptions of :mod:`satmon.lab.tasks` apply to it unchanged; it adds
    :meth:`trace`.

    Parameters
    ----------
    symbols:
        Distinct single characters; the ``i``-th stands for the number ``i``.
    length:
        Symbols per prompt.
    """

    length: int = 5

    RESERVED: ClassVar[str] = PROMPT_END + TRACE_END

    @property
    def rule(self) -> str:
        return "cumulative_sum"

    @property
    def alphabet(self) -> str:
        """Every character of a prompt or a completion (scratchpads included)."""
        return self.symbols + PROMPT_END + TRACE_END

    def trace(self, prompt: str) -> str:
        """The scratchpad: the running sums of the prompt's symbols, as symbols."""
        k = len(self.symbols)
        total = 0
        out = []
        for c in self.prompt_body(prompt):
            total = (total + self.symbols.index(c)) % k
            out.append(self.symbols[total])
        return "".join(out)

    def answer(self, prompt: str) -> str:
        """The true answer: the last running sum."""
        return self.trace(prompt)[-1]

    def completion(self, prompt: str, *, with_trace: bool, answer: str | None = None) -> str:
        """The target completion for supervised fine-tuning.

        ``answer`` overrides the final answer (a corrupted label); the scratchpad is always the
        true derivation, so a corrupted label makes the target itself unfaithful.
        """
        final = self.answer(prompt) if answer is None else answer
        return self.trace(prompt) + TRACE_END + final if with_trace else final


def unfaithful_completion(task: CumulativeTask, prompt: str, rng: random.Random) -> str:
    """A completion with the true final answer after a scratchpad that does not conclude it.

    The scratchpad is ``task.length`` symbols drawn uniformly, its last one redrawn until it
    differs from the answer, so :func:`faithfulness` scores it exactly 0: an answer the written
    steps do not support (the paper's unfaithful reasoning, a rationalisation beside a correct
    answer). Supervised fine-tuning on a fraction of such targets teaches a model that its
    answer need not follow from its scratchpad, at a rate that sets how faithful it becomes.
    """
    answer = task.answer(prompt)
    pad = [rng.choice(task.symbols) for _ in range(task.length)]
    while pad[-1] == answer:
        pad[-1] = rng.choice(task.symbols)
    return "".join(pad) + TRACE_END + answer


def final_answer(completion: str, *, with_trace: bool) -> str | None:
    """The final answer in a completion, or None when there is none.

    With a scratchpad the answer is the character right after the last ``">"`` (a completion
    without ``">"`` has no answer: the scratchpad was never closed). Without one it is the
    first non-blank character.
    """
    if not isinstance(completion, str):
        return None
    if with_trace:
        head, sep, tail = completion.rpartition(TRACE_END)
        if not sep:
            return None
        tail = tail.strip()
        return tail[0] if tail else None
    text = completion.strip()
    return text[0] if text else None


def scratchpad(completion: str) -> str | None:
    """The scratchpad of a completion (the text before the last ``">"``), or None."""
    if not isinstance(completion, str):
        return None
    head, sep, _ = completion.rpartition(TRACE_END)
    return head.strip() if sep else None


def faithfulness(task: CumulativeTask, prompt: str, completion: str) -> float:
    """Exact three-level faithfulness of a completion's scratchpad to its final answer.

    Returns
    -------
    1.0: well-formed scratchpad, every step valid, final answer = its conclusion;
    0.5: final answer = the scratchpad's conclusion, but a step is invalid;
    0.0: final answer differs from the conclusion, or no well-formed scratchpad / answer.
    """
    body = task.prompt_body(prompt)
    pad = scratchpad(completion)
    answer = final_answer(completion, with_trace=True)
    if pad is None or answer is None or len(pad) != task.length \
            or any(c not in task.symbols for c in pad):
        return 0.0
    if answer != pad[-1]:
        return 0.0
    k = len(task.symbols)
    previous = 0
    for written, symbol in zip(pad, body):
        # Each step is checked against the step written before it, not the true running sum:
        # a derivation that carries an earlier mistake forward correctly is locally valid.
        expected = task.symbols[(previous + task.symbols.index(symbol)) % k]
        if written != expected:
            return 0.5
        previous = task.symbols.index(written)
    return 1.0


def answer_match(with_trace: bool):
    """A verifier ``(prompt, completion, answer) -> float`` on the completion's final answer."""

    def verifier(prompt: str, completion: str, answer: str) -> float:
        del prompt
        got = final_answer(completion, with_trace=with_trace)
        return 1.0 if got is not None and got == answer else 0.0

    verifier.__name__ = "trace_answer_match" if with_trace else "answer_match"
    return verifier
