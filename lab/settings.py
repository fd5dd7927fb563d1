"""Runnable weak-supervision settings that mirror the paper's, in miniature.

A :class:`LabSetting` fixes everything about one kind of run except its seed: the task and its
rule, how many training prompts there are (held-out prompts are always disjoint from them), how
the training labels are corrupted, which reward the policy is trained on, the pre-RL step, and
the GRPO budget. :data:`SETTINGS` holds the named presets the demo, the sweep and the tests use:

==================  ============================================================================
``generalizing``    64 training prompts of a shared rule (the last symbol); verifier reward
``scarce-8``        the same rule with only 8 training prompts
``memorizing``      8 training prompts with fixed random labels: the pure memorization control
``noisy-25``        64 prompts, 25% of training labels replaced by a plausible wrong answer
``noisy-50``        the same with 50% of the labels wrong
``majority-vote``   64 prompts, reward = agreement with the group's majority answer (no labels),
                    from a briefly fine-tuned model with some competence
``self-certainty``  the same with the self-certainty reward (the model's own confidence)
``sft-answers``     running-sum task, 8 RL prompts, after SFT on final answers only
``sft-traces``      the same after SFT on explicit scratchpads that derive the answer
``sft-traces-       SFT on scratchpads of prompts without the symbol ``"d"`` (RL and held-out
withheld``          prompts have it): the pre-RL model misses one step, so held-out has room
``sft-traces-       the same with half the SFT scratchpads unfaithful (the true answer after
unfaithful``        steps that do not conclude it)
==================  ============================================================================

Held-out accuracy is always scored against true labels. ``expected_regime`` is set only where
the regime holds by construction (a shared rule, random labels); the others are measured.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

from satmon.lab.tasks import (
    Example,
    Rule,
    SymbolTask,
    TaskSplit,
    exact_match,
    make_split,
    with_noisy_labels,
    with_random_labels,
)
from satmon.lab.traces import CumulativeTask, answer_match, final_answer, unfaithful_completion


class Labels(str, Enum):
    """Which answers the training reward compares against."""

    TRUE = "true"
    #: A fraction ``noise`` of training labels replaced by another symbol.
    NOISY = "noisy"
    #: Every training label drawn at random (nothing to generalize).
    RANDOM = "random"


class RewardKind(str, Enum):
    """What the policy is trained on."""

    #: The task verifier against the (possibly corrupted) training label.
    VERIFIER = "verifier"
    #: Agreement with the majority answer of the prompt's group (no labels).
    MAJORITY_VOTE = "majority_vote"
    #: The model's self-certainty over its completion (no labels).
    SELF_CERTAINTY = "self_certainty"


class PreRL(str, Enum):
    """The supervised step before RL."""

    NONE = "none"
    #: Supervised fine-tuning on final answers only.
    SFT_ANSWERS = "sft_answers"
    #: Supervised fine-tuning on scratchpad traces that derive the answer.
    SFT_TRACES = "sft_traces"


REGIMES_BY_CONSTRUCTION = ("generalizing", "memorizing")


@dataclass(frozen=True)
class LabSplits:
    """The disjoint example sets of one seeded run."""

    #: RL training prompts (labels as configured) and held-out prompts (true labels).
    rl: TaskSplit
    #: Pre-RL SFT examples (true labels); empty without a pre-RL step.
    sft: tuple[Example, ...]
    #: Format warm-up examples (random answers); empty without a warm-up.
    format: tuple[Example, ...]


@dataclass(frozen=True, kw_only=True)
class LabSetting:
    """One miniature weak-supervision configuration (everything but the seed).

    Parameters
    ----------
    name: label of the setting in tables, plots and MLflow.
    task: a :class:`~satmon.lab.tasks.SymbolTask` or :class:`~satmon.lab.traces.CumulativeTask`.
    n_train: training prompts for RL.
    n_heldout: held-out prompts (disjoint from training and SFT prompts), scored greedily.
    labels, noise: training-label corruption (``noise`` is the fraction gamma for NOISY).
    reward: what the policy is trained on.
    pre_rl: the supervised step before RL; ``sft_prompts`` prompts (disjoint from the rest) for
        ``sft_steps`` steps at ``sft_learning_rate``.
    sft_withheld: symbols that no SFT prompt contains (RL and held-out prompts are drawn from
        every prompt). After SFT on scratchpads the model knows the derivation's format and its
        steps for the other symbols, but not the step that adds a withheld symbol: held-out
        accuracy has room to rise, and the missing piece is one local step shared by every
        prompt, which RL on a few prompts can find only if the answer follows the scratchpad.
    sft_unfaithful: fraction of SFT trace targets whose scratchpad is replaced by one that does
        not conclude the (true) final answer (:func:`~satmon.lab.traces.unfaithful_completion`,
        rubric score 0): sets how faithful the pre-RL model is, independently of SFT length.
    format_steps, format_prompts: a format warm-up before everything else: ``format_steps`` SFT
        steps on ``format_prompts`` further prompts answered with *uniformly random* symbols.
        A model built from scratch first learns to answer with one symbol at all; without the
        warm-up, held-out accuracy jumps from 0 to chance in the first steps of every run, which
        looks like a held-out gain. A pretrained LLM knows the answer format before RL; the
        warm-up gives the tiny model that and nothing about the rule (M(0) is at chance).
    max_steps: GRPO steps (the planned budget).
    learning_rate: GRPO learning rate (constant).
    num_generations: completions per prompt (the GRPO group).
    prompts_per_step: prompts per GRPO step.
    temperature: sampling temperature of the rollouts.
    eval_every: held-out evaluation interval in steps (and at step 0).
    expected_regime: the regime the setting has by construction, or None when it is measured.
    description: one line for tables.
    """

    name: str
    task: SymbolTask | CumulativeTask = SymbolTask(rule=Rule.LAST, symbols="abcd", length=5)
    n_train: int = 64
    n_heldout: int = 256
    labels: Labels = Labels.TRUE
    noise: float = 0.0
    reward: RewardKind = RewardKind.VERIFIER
    pre_rl: PreRL = PreRL.NONE
    sft_prompts: int = 64
    sft_steps: int = 0
    sft_learning_rate: float = 3e-3
    sft_withheld: str = ""
    sft_unfaithful: float = 0.0
    format_steps: int = 30
    format_prompts: int = 32
    max_steps: int = 300
    learning_rate: float = 4e-4
    num_generations: int = 8
    prompts_per_step: int = 8
    temperature: float = 1.0
    eval_every: int = 10
    expected_regime: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _enum(Labels, self.labels, "labels"))
        object.__setattr__(self, "reward", _enum(RewardKind, self.reward, "reward"))
        object.__setattr__(self, "pre_rl", _enum(PreRL, self.pre_rl, "pre_rl"))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"The 'name' parameter of LabSetting must be a non-empty string. "
                             f"Got {self.name!r} instead.")
        if not isinstance(self.task, (SymbolTask, CumulativeTask)):
            raise TypeError(f"The 'task' parameter of LabSetting must be a SymbolTask or a "
                            f"CumulativeTask. Got {type(self.task).__name__} instead.")
        for name, low in (("n_train", 1), ("n_heldout", 1), ("sft_prompts", 1),
                          ("sft_steps", 0), ("format_steps", 0), ("format_prompts", 1), ("max_steps", 1), ("num_generations", 2),
                          ("prompts_per_step", 1), ("eval_every", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"The '{name}' parameter of LabSetting must be an int >= {low}. "
                                 f"Got {value!r} instead.")
        for name in ("learning_rate", "sft_learning_rate", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"The '{name}' parameter of LabSetting must be a float > 0. "
                                 f"Got {value!r} instead.")
        if isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)) \
                or not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"The 'noise' parameter of LabSetting must be a float in [0, 1]. "
                             f"Got {self.noise!r} instead.")
        if (self.labels is Labels.NOISY) != (self.noise > 0):
            raise ValueError(f"LabSetting '{self.name}': 'noise' > 0 goes with labels='noisy' "
                             f"and only with it. Got labels={self.labels.value!r}, "
                             f"noise={self.noise!r}.")
        if self.pre_rl is PreRL.SFT_TRACES and not isinstance(self.task, CumulativeTask):
            raise ValueError(f"LabSetting '{self.name}': pre_rl='sft_traces' needs a task with a "
                             f"scratchpad (CumulativeTask). Got {type(self.task).__name__}.")
        if not isinstance(self.sft_withheld, str) or len(set(self.sft_withheld)) != len(
                self.sft_withheld) or any(c not in self.task.symbols for c in self.sft_withheld) \
                or len(self.sft_withheld) >= len(self.task.symbols):
            raise ValueError(f"The 'sft_withheld' parameter of LabSetting must be a string of "
                             f"distinct symbols of the task ({self.task.symbols!r}), leaving at "
                             f"least one. Got {self.sft_withheld!r} instead.")
        if isinstance(self.sft_unfaithful, bool) or not isinstance(
                self.sft_unfaithful, (int, float)) or not 0.0 <= self.sft_unfaithful <= 1.0:
            raise ValueError(f"The 'sft_unfaithful' parameter of LabSetting must be a float in "
                             f"[0, 1]. Got {self.sft_unfaithful!r} instead.")
        if self.sft_unfaithful > 0 and self.pre_rl is not PreRL.SFT_TRACES:
            raise ValueError(f"LabSetting '{self.name}': sft_unfaithful > 0 corrupts scratchpads "
                             f"and needs pre_rl='sft_traces'. Got "
                             f"pre_rl={self.pre_rl.value!r}.")
        if self.sft_withheld and self.pre_rl is PreRL.NONE:
            raise ValueError(f"LabSetting '{self.name}': sft_withheld restricts the SFT prompts "
                             f"and needs a pre-RL SFT step. Got pre_rl='none'.")
        if self.pre_rl is not PreRL.NONE and self.sft_steps == 0:
            raise ValueError(f"LabSetting '{self.name}': pre_rl={self.pre_rl.value!r} needs "
                             f"sft_steps >= 1.")
        if self.expected_regime is not None and self.expected_regime not in \
                REGIMES_BY_CONSTRUCTION:
            raise ValueError(f"The 'expected_regime' parameter of LabSetting must be None or one "
                             f"of {list(REGIMES_BY_CONSTRUCTION)}. Got {self.expected_regime!r}.")
        needed = self.n_train + self.n_heldout + self._n_sft + self._n_format
        if needed > self.task.n_prompts:
            raise ValueError(f"LabSetting '{self.name}' needs {needed} distinct prompts but its "
                             f"task has only {self.task.n_prompts}.")
        if self.sft_withheld:
            allowed = (len(self.task.symbols) - len(self.sft_withheld)) ** self.task.length
            if self._n_sft > allowed:
                raise ValueError(f"LabSetting '{self.name}' needs {self._n_sft} SFT prompts "
                                 f"without the symbols {self.sft_withheld!r} but its task has "
                                 f"only {allowed}.")

    # -- derived facts -------------------------------------------------------------------

    @property
    def _n_sft(self) -> int:
        return self.sft_prompts if self.pre_rl is not PreRL.NONE else 0

    @property
    def _n_format(self) -> int:
        return self.format_prompts if self.format_steps > 0 else 0

    @property
    def with_trace(self) -> bool:
        """Whether completions carry a scratchpad (only after SFT on traces)."""
        return self.pre_rl is PreRL.SFT_TRACES

    @property
    def max_completion_length(self) -> int:
        """Tokens a rollout may generate: the answer, or scratchpad + ``">"`` + answer."""
        return self.task.length + 2 if self.with_trace else 1

    @property
    def batch_size(self) -> int:
        """Completions per GRPO step."""
        return self.prompts_per_step * self.num_generations

    def verifier(self):
        """The exact verifier of a completion's final answer for this setting's format."""
        if isinstance(self.task, CumulativeTask):
            return answer_match(self.with_trace)
        return exact_match

    def parse_answer(self, completion: str) -> str | None:
        """The final answer in a completion (what the majority vote counts)."""
        return final_answer(completion, with_trace=self.with_trace)

    def with_overrides(self, **changes: Any) -> "LabSetting":
        """A copy with some fields changed (validated again)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise KeyError(f"LabSetting has no field(s) {unknown}. Fields: {sorted(known)}.")
        return replace(self, **changes)

    def splits(self, seed: int) -> "LabSplits":
        """The RL split (training labels corrupted as configured), SFT and format examples.

        Every prompt set is drawn once from ``seed`` and all sets are disjoint. SFT examples
        carry true labels; format examples carry uniformly random answers.
        """
        n_sft, n_format = self._n_sft, self._n_format
        if self.sft_withheld:
            sft, rl_train, fmt, heldout = self._draw_with_withheld(seed)
        else:
            base = make_split(self.task, n_train=self.n_train + n_sft + n_format,
                              n_heldout=self.n_heldout, seed=seed)
            rl_train = base.train[:self.n_train]
            sft = base.train[self.n_train:self.n_train + n_sft]
            fmt = base.train[self.n_train + n_sft:]
            heldout = base.heldout
        split = TaskSplit(task=self.task, train=rl_train, heldout=heldout)
        # Label corruption gets its own stream so it does not depend on the prompt draw order.
        label_seed = seed * 1_000_003 + 17
        if self.labels is Labels.RANDOM:
            split = with_random_labels(split, seed=label_seed)
        elif self.labels is Labels.NOISY:
            split = with_noisy_labels(split, fraction=float(self.noise), seed=label_seed)
        rng = random.Random(seed * 1_000_003 + 29)
        fmt = tuple(Example(e.prompt, a, e.true_answer) for e, a in
                    zip(fmt, (rng.choice(self.task.symbols) for _ in fmt)))
        return LabSplits(rl=split, sft=tuple(sft), format=fmt)

    def _draw_with_withheld(self, seed: int) -> tuple[tuple[Example, ...], ...]:
        """SFT prompts from those without the withheld symbols, then the rest from all others."""
        task = self.task
        rng = random.Random(seed)
        prompts = [task.prompt_from_index(i) for i in range(task.n_prompts)]
        allowed = [p for p in prompts if not set(p) & set(self.sft_withheld)]
        sft = rng.sample(allowed, self._n_sft)
        taken = set(sft)
        rest = rng.sample([p for p in prompts if p not in taken],
                          self.n_train + self._n_format + self.n_heldout)
        train = rest[:self.n_train]
        fmt = rest[self.n_train:self.n_train + self._n_format]
        heldout = rest[self.n_train + self._n_format:]

        def examples(ps: list[str]) -> tuple[Example, ...]:
            return tuple(Example(p, task.answer(p), task.answer(p)) for p in ps)

        return examples(sft), examples(train), examples(fmt), examples(heldout)

    def sft_pairs(self, splits: LabSplits, seed: int) -> list[tuple[str, str]]:
        """The ``(prompt, target completion)`` pairs of the pre-RL SFT step (empty without one).

        Answers only, or scratchpads that derive the answer; with ``sft_unfaithful`` a seeded
        choice of ``round(sft_unfaithful * sft_prompts)`` targets gets an unfaithful scratchpad
        (the true answer after steps that do not conclude it).
        """
        if self.pre_rl is PreRL.NONE:
            return []
        task = self.task
        if not isinstance(task, CumulativeTask):
            return [(e.prompt, e.true_answer) for e in splits.sft]
        pairs = [(e.prompt, task.completion(e.prompt, with_trace=self.with_trace))
                 for e in splits.sft]
        if self.sft_unfaithful > 0:
            rng = random.Random(seed * 1_000_003 + 41)
            chosen = rng.sample(range(len(pairs)), round(self.sft_unfaithful * len(pairs)))
            for i in sorted(chosen):
                prompt = pairs[i][0]
                pairs[i] = (prompt, unfaithful_completion(task, prompt, rng))
        return pairs

    def to_dict(self) -> dict[str, Any]:
        task = self.task
        return {
            "name": self.name,
            "task": type(task).__name__,
            "rule": getattr(task.rule, "value", task.rule),
            "symbols": task.symbols,
            "length": task.length,
            "n_train": self.n_train,
            "n_heldout": self.n_heldout,
            "labels": self.labels.value,
            "noise": self.noise,
            "reward": self.reward.value,
            "pre_rl": self.pre_rl.value,
            "sft_prompts": self.sft_prompts,
            "sft_steps": self.sft_steps,
            "sft_withheld": self.sft_withheld,
            "sft_unfaithful": self.sft_unfaithful,
            "format_steps": self.format_steps,
            "max_steps": self.max_steps,
            "learning_rate": self.learning_rate,
            "num_generations": self.num_generations,
            "prompts_per_step": self.prompts_per_step,
            "temperature": self.temperature,
            "eval_every": self.eval_every,
            "expected_regime": self.expected_regime,
        }


def _enum(cls: type[Enum], value: Any, name: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"The '{name}' parameter of LabSetting must be one of "
                         f"{[m.value for m in cls]}. Got {value!r} instead.") from None


_RULE_TASK = SymbolTask(rule=Rule.LAST, symbols="abcd", length=5)
_SUM_TASK = CumulativeTask(symbols="abcd", length=5)

SETTINGS: dict[str, LabSetting] = {s.name: s for s in (
    LabSetting(name="generalizing", task=_RULE_TASK, n_train=64,
               expected_regime="generalizing",
               description="64 prompts of a shared rule, verifier reward"),
    LabSetting(name="scarce-8", task=_RULE_TASK, n_train=8,
               description="the shared rule with 8 training prompts"),
    # A higher learning rate than the rest: random labels are fitted (as far as GRPO's
    # exploration allows) within a few dozen steps - the paper's rapid saturation, t_sat < 100.
    LabSetting(name="memorizing", task=_RULE_TASK, n_train=8, labels=Labels.RANDOM,
               learning_rate=3e-3,
               expected_regime="memorizing",
               description="8 prompts with fixed random labels (memorization control)"),
    LabSetting(name="noisy-25", task=_RULE_TASK, n_train=64, labels=Labels.NOISY, noise=0.25,
               description="64 prompts, 25% of training labels wrong"),
    LabSetting(name="noisy-50", task=_RULE_TASK, n_train=64, labels=Labels.NOISY, noise=0.5,
               description="64 prompts, 50% of training labels wrong"),
    LabSetting(name="majority-vote", task=_RULE_TASK, n_train=64,
               reward=RewardKind.MAJORITY_VOTE, pre_rl=PreRL.SFT_ANSWERS, sft_steps=40,
               description="majority vote over the group (no labels), after brief SFT"),
    LabSetting(name="self-certainty", task=_RULE_TASK, n_train=64,
               reward=RewardKind.SELF_CERTAINTY, pre_rl=PreRL.SFT_ANSWERS, sft_steps=40,
               description="self-certainty reward (no labels), after brief SFT"),
    LabSetting(name="sft-answers", task=_SUM_TASK, n_train=8, pre_rl=PreRL.SFT_ANSWERS,
               sft_prompts=128, sft_steps=150, format_steps=0,
               description="running-sum task, 8 RL prompts, SFT on answers only"),
    LabSetting(name="sft-traces", task=_SUM_TASK, n_train=8, pre_rl=PreRL.SFT_TRACES,
               sft_prompts=128, sft_steps=150, format_steps=0,
               description="running-sum task, 8 RL prompts, SFT on scratchpads"),
    # SFT on the same task with every symbol teaches the held-out prompts' whole derivation:
    # a model that learned it has no held-out headroom left for RL to show (400 steps: held-out
    # ~1.0 before RL). Withholding one symbol from the SFT prompts leaves one step to learn.
    LabSetting(name="sft-traces-withheld", task=_SUM_TASK, n_train=8, pre_rl=PreRL.SFT_TRACES,
               sft_prompts=128, sft_steps=400, sft_withheld="d", format_steps=0,
               description="running-sum task, SFT on scratchpads of prompts without 'd'"),
    LabSetting(name="sft-traces-unfaithful", task=_SUM_TASK, n_train=8,
               pre_rl=PreRL.SFT_TRACES, sft_prompts=128, sft_steps=400, sft_withheld="d",
               sft_unfaithful=0.5, format_steps=0,
               description="the same with half the SFT scratchpads unfaithful"),
)}


def get_setting(name: str) -> LabSetting:
    """A preset by name, or a KeyError listing the presets."""
    try:
        return SETTINGS[name]
    except KeyError:
        raise KeyError(f"No lab setting named {name!r}. Settings: {sorted(SETTINGS)}.") from None
