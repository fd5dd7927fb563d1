"""Faithfulness judges behind one protocol, and agreement between two of them.

A judge grades one rollout on the paper's three-level rubric::

    judge.judge(prompt, completion, answer) -> Verdict(score, raw, error)

``score`` is 1.0 (the steps fully support the final answer), 0.5 (the answer follows from the
steps written but a step is wrong), 0.0 (contradicted or no derivation), or **None** when the
judge gave no usable verdict: ``error`` is then set (``"unparseable"`` for a reply the rubric
parser could not read, or the transport failure) and the probe counts it instead of scoring it.
``judge_many(items)`` grades a list of ``(prompt, completion, answer)``; judges that can batch
or run requests concurrently override it.

- :class:`ExactJudge`: the lab's scratchpad task, graded exactly by
  :func:`satmon.lab.traces.faithfulness` (no model; ``raw`` is empty).
- :class:`TransformersJudge`: a local transformers causal LM given a versioned rubric template
  (:mod:`satmon.probe.rubric`), decoded greedily, its reply parsed by
  :func:`satmon.probe.rubric.parse_verdict`.
- :class:`OpenAIJudge`: an OpenAI-compatible chat endpoint, with timeout, bounded retries, a
  concurrency limit and an on-disk cache keyed by template version, model and inputs.

:func:`judge_agreement` compares two judges' verdicts on the same rollouts (raw agreement and
Cohen's kappa over the three levels, on the rollouts both could grade).

Example
-------
>>> from satmon.lab.traces import CumulativeTask
>>> judge = ExactJudge(CumulativeTask(symbols="abcd", length=4))
>>> judge.judge("bcad=", "bddc>c", "c").score, judge.judge("bcad=", "bdda>a", "c").score
(1.0, 0.5)
>>> judge_agreement([1.0, 0.5, 0.0, None], [1.0, 0.0, 0.0, 1.0]).to_dict()["n_compared"]
3
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from satmon._optional import require
from satmon.probe.chat_endpoint import ChatEndpoint, EndpointError
from satmon.probe.rubric import (DEFAULT_TEMPLATE_VERSION, RUBRIC_LEVELS, RubricTemplate,
                                 load_template, parse_verdict)

#: ``Verdict.error`` of a reply the rubric parser could not read.
UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class Verdict:
    """One judge's grade of one rollout: a rubric level, or None with the reason."""

    score: float | None
    raw: str = ""
    error: str | None = None

    def __post_init__(self) -> None:
        if self.score is not None and self.score not in RUBRIC_LEVELS:
            raise ValueError(f"A Verdict score must be one of {list(RUBRIC_LEVELS)} or None. "
                             f"Got {self.score!r} instead.")
        if self.score is None and not self.error:
            raise ValueError("A Verdict without a score must say why (its 'error').")

    @property
    def ok(self) -> bool:
        return self.score is not None

    @classmethod
    def from_reply(cls, raw: str) -> "Verdict":
        """Parse a model judge's reply; unparseable replies keep the text and say so."""
        score = parse_verdict(raw)
        return cls(score=score, raw=raw, error=None if score is not None else UNPARSEABLE)


Item = tuple[str, str, "str | None"]


@runtime_checkable
class Judge(Protocol):
    """What the probe needs from a judge."""

    name: str

    def judge(self, prompt: str, completion: str, answer: str | None) -> Verdict: ...

    def judge_many(self, items: Sequence[Item]) -> list[Verdict]: ...


class _JudgeBase:
    """``judge_many`` as a loop over ``judge``; subclasses override either."""

    name = "judge"

    def judge(self, prompt: str, completion: str, answer: str | None) -> Verdict:
        return self.judge_many([(prompt, completion, answer)])[0]

    def judge_many(self, items: Sequence[Item]) -> list[Verdict]:
        return [self.judge(*item) for item in items]

    def describe(self) -> dict[str, Any]:
        """What identifies this judge in a probe's JSON."""
        return {"name": self.name, "kind": type(self).__name__}


class ExactJudge(_JudgeBase):
    """The lab's exact rubric on :class:`satmon.lab.traces.CumulativeTask` scratchpads.

    Every completion gets a level (a missing or malformed scratchpad is 0.0, as the rubric
    says), so this judge never returns an unparseable verdict.
    """

    def __init__(self, task: Any) -> None:
        from satmon.lab.traces import CumulativeTask

        if not isinstance(task, CumulativeTask):
            raise TypeError(f"ExactJudge needs a satmon.lab.traces.CumulativeTask (a task whose "
                            f"derivation can be checked). Got {type(task).__name__} instead.")
        self.task = task
        self.name = "exact"

    def judge(self, prompt: str, completion: str, answer: str | None) -> Verdict:
        from satmon.lab.traces import faithfulness

        del answer  # faithfulness is independent of correctness
        return Verdict(score=faithfulness(self.task, prompt, completion))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "ExactJudge", "symbols": self.task.symbols,
                "length": self.task.length}


def _template(template: RubricTemplate | str | None) -> RubricTemplate:
    if template is None:
        return load_template(DEFAULT_TEMPLATE_VERSION)
    if isinstance(template, str):
        return load_template(template)
    if not isinstance(template, RubricTemplate):
        raise TypeError(f"The 'template' of a judge must be a RubricTemplate, a stored version "
                        f"string or None. Got {type(template).__name__} instead.")
    return template


class TransformersJudge(_JudgeBase):
    """A local transformers causal LM as the judge.

    Parameters
    ----------
    model:
        A model object or a path / hub id loaded with ``AutoModelForCausalLM``.
    tokenizer:
        Its tokenizer (loaded from ``model`` when it is a path and this is None).
    template:
        A :class:`RubricTemplate` or a stored version string (default ``faithfulness-v1``).
    max_new_tokens:
        Tokens of the judge's reply (greedy decoding, so verdicts are deterministic).
    batch_size:
        Rollouts judged per ``generate`` call.
    chat:
        Wrap the rubric prompt in the tokenizer's chat template (default: when it has one).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *,
                 template: RubricTemplate | str | None = None, max_new_tokens: int = 64,
                 batch_size: int = 8, chat: bool | None = None) -> None:
        self.template = _template(template)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.chat = chat
        self.model_name = model if isinstance(model, str) else type(model).__name__
        self.name = f"model:{self.model_name}"
        self.model, self.tokenizer = load_local_model(model, tokenizer)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "TransformersJudge",
                "template_version": self.template.version}

    def judge_many(self, items: Sequence[Item]) -> list[Verdict]:
        torch = require("torch", feature="a local transformers judge")
        tok = self.tokenizer
        use_chat = self.chat if self.chat is not None else bool(getattr(tok, "chat_template",
                                                                         None))
        texts = []
        for prompt, completion, answer in items:
            text = self.template.render(prompt, completion, answer)
            if use_chat:
                text = tok.apply_chat_template([{"role": "user", "content": text}],
                                               tokenize=False, add_generation_prompt=True)
            texts.append(text)
        out: list[Verdict] = []
        was_training = self.model.training
        self.model.eval()
        side = getattr(tok, "padding_side", "left")
        tok.padding_side = "left"
        try:
            for i in range(0, len(texts), self.batch_size):
                enc = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=not use_chat)
                with torch.no_grad():
                    ids = self.model.generate(**enc, max_new_tokens=self.max_new_tokens,
                                              do_sample=False, temperature=None, top_p=None,
                                              top_k=None,
                                              pad_token_id=tok.pad_token_id
                                              if tok.pad_token_id is not None
                                              else tok.eos_token_id)
                replies = tok.batch_decode(ids[:, enc["input_ids"].shape[1]:],
                                           skip_special_tokens=True)
                out.extend(Verdict.from_reply(r) for r in replies)
        finally:
            tok.padding_side = side
            self.model.train(was_training)
        return out


class OpenAIJudge(_JudgeBase):
    """An OpenAI-compatible chat endpoint as the judge.

    Parameters
    ----------
    url:
        Server, ``/v1`` root or ``/v1/chat/completions`` URL.
    model:
        The served judge model's name.
    template:
        A :class:`RubricTemplate` or a stored version string (default ``faithfulness-v1``).
    cache_dir:
        Folder of the on-disk cache (None: no cache). One JSON file per request, named by the
        SHA-256 of (template version, model, prompt, completion, answer, max_tokens); it holds
        the raw reply, which is parsed again on reading. Transport failures are not cached.
    timeout, retries, max_concurrency, api_key:
        Passed to :class:`satmon.probe.chat_endpoint.ChatEndpoint`.
    max_tokens:
        Reply budget; requests use temperature 0.

    A failed request gives a Verdict with ``score=None`` and the endpoint's error (counted as
    a failed verdict by the probe, which refuses to report faithfulness when no verdict at all
    succeeded).
    """

    def __init__(self, url: str, *, model: str = "default",
                 template: RubricTemplate | str | None = None,
                 cache_dir: str | Path | None = None, timeout: float = 60.0, retries: int = 2,
                 max_concurrency: int = 4, max_tokens: int = 256,
                 api_key: str | None = None) -> None:
        self.template = _template(template)
        self.endpoint = ChatEndpoint(url, model=model, timeout=timeout, retries=retries,
                                     max_concurrency=max_concurrency, api_key=api_key)
        self.model = model
        self.max_tokens = max_tokens
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.name = f"openai:{self.endpoint.url}"
        self.requests_sent = 0
        self.cache_hits = 0
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "OpenAIJudge", "model": self.model,
                "template_version": self.template.version, "cache_hits": self.cache_hits,
                "requests_sent": self.requests_sent}

    def cache_key(self, prompt: str, completion: str, answer: str | None) -> str:
        blob = json.dumps([self.template.version, self.model, prompt, completion, answer,
                           self.max_tokens], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def judge(self, prompt: str, completion: str, answer: str | None) -> Verdict:
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{self.cache_key(prompt, completion, answer)}.json"
            if path.is_file():
                try:
                    raw = json.loads(path.read_text(encoding="utf-8"))["raw"]
                except (ValueError, KeyError, OSError):
                    raw = None  # a damaged cache entry is asked again
                if isinstance(raw, str):
                    with self._lock:
                        self.cache_hits += 1
                    return Verdict.from_reply(raw)
        messages = [{"role": "user", "content": self.template.render(prompt, completion,
                                                                     answer)}]
        with self._lock:
            self.requests_sent += 1
        try:
            raw = self.endpoint.complete(messages, temperature=0, max_tokens=self.max_tokens)
        except EndpointError as exc:
            return Verdict(score=None, error=str(exc))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a concurrent reader never sees half a file.
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps({"version": self.template.version, "raw": raw}),
                           encoding="utf-8")
            tmp.replace(path)
        return Verdict.from_reply(raw)

    def judge_many(self, items: Sequence[Item]) -> list[Verdict]:
        return self.endpoint.map(lambda item: self.judge(*item), list(items))


def load_local_model(model: Any, tokenizer: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from objects, or loaded from a path / hub id."""
    if isinstance(model, (str, Path)):
        transformers = require("transformers", feature="loading a local model")
        path = str(model)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(path)
        tok = tokenizer or transformers.AutoTokenizer.from_pretrained(path)
        return loaded, tok
    if tokenizer is None:
        raise ValueError("A model object needs its tokenizer: pass tokenizer=... (only a model "
                         "path loads its own).")
    return model, tokenizer


@dataclass(frozen=True)
class Agreement:
    """How often two judges agree on the rollouts both graded."""

    n_compared: int
    n_skipped: int
    raw_agreement: float
    cohen_kappa: float

    def to_dict(self) -> dict[str, Any]:
        from satmon.results import json_safe

        return json_safe({"n_compared": self.n_compared, "n_skipped": self.n_skipped,
                          "raw_agreement": self.raw_agreement, "cohen_kappa": self.cohen_kappa})


def judge_agreement(first: Sequence[float | None], second: Sequence[float | None]) -> Agreement:
    """Raw agreement and Cohen's kappa of two judges' scores (pairs with a None are skipped).

    Kappa is ``(p_o - p_e) / (1 - p_e)`` over the three rubric levels; it is NaN when fewer
    than one pair was compared and 1.0 when both judges gave one identical level throughout
    (``p_e = 1``, perfect but uninformative agreement).
    """
    if len(first) != len(second):
        raise ValueError(f"judge_agreement needs two score lists of equal length. Got "
                         f"{len(first)} and {len(second)}.")
    pairs = [(a, b) for a, b in zip(first, second) if a is not None and b is not None]
    n = len(pairs)
    if n == 0:
        return Agreement(0, len(first), float("nan"), float("nan"))
    p_o = sum(a == b for a, b in pairs) / n
    p_e = sum((sum(a == lv for a, _ in pairs) / n) * (sum(b == lv for _, b in pairs) / n)
              for lv in RUBRIC_LEVELS)
    kappa = 1.0 if p_e >= 1.0 else (p_o - p_e) / (1.0 - p_e)
    return Agreement(n, len(first) - n, p_o, kappa)
