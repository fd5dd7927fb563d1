"""Held-out accuracy measured by greedy generation, the way verl validates (mean@1).

TRL's own evaluation samples at the training temperature and has no place for a task
verifier; :class:`HeldoutEvaluator` generates greedily on a fixed held-out prompt set, scores
each completion with a user verifier ``(prompt, completion, answer) -> float`` and reports the
mean together with the number of scored prompts, so the monitor knows the binomial noise of
each point. In a multi-process job each rank scores its share of the prompts and the sums are
gathered, so every rank gets the same number.
"""

from __future__ import annotations

import logging
import math
import numbers
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from satmon._optional import require
from satmon.callbacks.distributed import gather_objects, world

logger = logging.getLogger(__name__)

Verifier = Callable[[str, str, Any], Any]

_TIMED_OUT = object()  # a verifier call that exceeded the evaluator's timeout
_MAX_TIMEOUTS = 3  # per evaluation and rank; then the rest of the prompts are not verified


@dataclass(frozen=True)
class HeldoutResult:
    """One held-out evaluation.

    Attributes
    ----------
    name: benchmark name (the key the monitor sees).
    step: training step the model had completed.
    value: mean verifier score over the scored prompts (NaN when none could be scored).
    n: prompts scored with a finite score (the sample size behind ``value``).
    n_failed: prompts whose generation or verifier failed, returned something that is not a
        finite real number, or timed out (``n_timed_out`` of them).
    seconds: wall time of the evaluation on this process.
    n_timed_out: prompts whose verifier call exceeded the evaluator's ``timeout``.
    """

    name: str
    step: int
    value: float
    n: int
    n_failed: int = 0
    seconds: float = 0.0
    n_timed_out: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "step": self.step,
                "value": self.value if math.isfinite(self.value) else None,
                "n": self.n, "n_failed": self.n_failed, "seconds": self.seconds,
                "n_timed_out": self.n_timed_out}


class HeldoutEvaluator:
    """Greedy generation on held-out prompts every ``every`` steps, scored by a verifier.

    Parameters
    ----------
    prompts, answers:
        The held-out set: prompt strings and the answers the verifier compares against (true
        labels, even when training rewards are noisy or a proxy).
    verifier:
        ``verifier(prompt, completion, answer) -> float`` (1.0 correct, 0.0 wrong; any finite
        real number works: int, float, bool, numpy scalars). Anything else leaves that prompt
        out of ``n`` and counts it in ``n_failed``: None, NaN or inf, an exception, and values
        of other types. A string such as ``"1.0"`` is not converted (a verifier returning text
        is usually returning the wrong thing, e.g. the parsed answer); the first such value is
        logged with its type.
    name:
        Benchmark name passed to the monitor and used in metric keys.
    every:
        Evaluate when the completed step is a multiple of ``every``.
    at_start:
        Also evaluate before the first update (step 0): M(0) anchors the pre-saturation gain.
    batch_size:
        Prompts per ``generate`` call on each process.
    max_new_tokens:
        Generation length (keep it as short as the task allows).
    subsample:
        Score a fixed random subset of this many prompts (drawn once with ``seed``, so every
        evaluation sees the same prompts and points stay comparable); None scores all.
    seed:
        Seed of the subsample.
    tokenizer:
        Tokenizer to use; by default the trainer's ``processing_class``.
    generation_kwargs:
        Extra keyword arguments for ``model.generate`` (``do_sample`` stays False).
    timeout:
        Seconds one verifier call may take (None, the default: no limit, and the verifier runs
        in the training thread). With a timeout each call runs in a worker thread; a call that
        does not return in time counts as failed (``n_timed_out``), and its thread is left to
        finish on its own (Python cannot stop a thread). After three timeouts in one
        evaluation the rest of that rank's prompts are counted as timed out without calling
        the verifier, so a hung verifier costs at most ``3 * timeout`` per evaluation. Note
        that verifiers relying on ``signal`` (math-verify's default ``parsing_timeout``) only
        work in the main thread: turn their own timeout off when using this one.

    Example
    -------
    >>> from satmon.lab.tasks import exact_match
    >>> ev = HeldoutEvaluator(["ab=", "ba="], ["b", "a"], exact_match, every=10)
    >>> ev.due(10), ev.due(15), ev.due(0)
    (True, False, True)
    """

    def __init__(self, prompts: Sequence[str], answers: Sequence[Any], verifier: Verifier, *,
                 name: str = "heldout", every: int = 25, at_start: bool = True,
                 batch_size: int = 64, max_new_tokens: int = 32, subsample: int | None = None,
                 seed: int = 0, tokenizer: Any = None,
                 generation_kwargs: dict[str, Any] | None = None,
                 timeout: float | None = None) -> None:
        self.prompts = list(prompts)
        self.answers = list(answers)
        self.verifier = verifier
        self.name = name
        self.every = every
        self.at_start = at_start
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.subsample = subsample
        self.seed = seed
        self.tokenizer = tokenizer
        self.generation_kwargs = dict(generation_kwargs or {})
        self.timeout = timeout
        self._validate()
        self._reset()

    def _validate(self) -> None:
        if not self.prompts or not all(isinstance(p, str) for p in self.prompts):
            raise ValueError("The 'prompts' of HeldoutEvaluator must be a non-empty sequence of "
                             f"strings. Got {len(self.prompts)} items.")
        if len(self.answers) != len(self.prompts):
            raise ValueError(f"HeldoutEvaluator needs one answer per prompt. Got "
                             f"{len(self.prompts)} prompts and {len(self.answers)} answers.")
        if not callable(self.verifier):
            raise TypeError("The 'verifier' of HeldoutEvaluator must be callable as "
                            f"verifier(prompt, completion, answer). Got {self.verifier!r}.")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"The 'name' of HeldoutEvaluator must be a non-empty string. "
                             f"Got {self.name!r} instead.")
        for param in ("every", "batch_size", "max_new_tokens"):
            value = getattr(self, param)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"The '{param}' parameter of HeldoutEvaluator must be an int "
                                 f">= 1. Got {value!r} instead.")
        if self.subsample is not None and (not isinstance(self.subsample, int)
                                           or isinstance(self.subsample, bool)
                                           or self.subsample < 1):
            raise ValueError(f"The 'subsample' parameter of HeldoutEvaluator must be None or an "
                             f"int >= 1. Got {self.subsample!r} instead.")
        if self.timeout is not None and (isinstance(self.timeout, bool)
                                         or not isinstance(self.timeout, (int, float))
                                         or not self.timeout > 0):
            raise ValueError(f"The 'timeout' parameter of HeldoutEvaluator must be None or a "
                             f"number of seconds > 0. Got {self.timeout!r} instead.")
        if "do_sample" in self.generation_kwargs and self.generation_kwargs["do_sample"]:
            raise ValueError("HeldoutEvaluator generates greedily; remove do_sample=True from "
                             "generation_kwargs.")

    def _reset(self) -> None:
        indices = list(range(len(self.prompts)))
        if self.subsample is not None and self.subsample < len(indices):
            indices = sorted(random.Random(self.seed).sample(indices, self.subsample))
        self._indices = indices
        self._verifier_errors_logged = 0
        self._bad_types_logged: set[str] = set()

    @property
    def size(self) -> int:
        """Prompts scored per evaluation (after subsampling)."""
        return len(self._indices)

    def due(self, step: int) -> bool:
        """Whether an evaluation is due after ``step`` (step 0 counts when ``at_start``)."""
        if step == 0:
            return self.at_start
        return step % self.every == 0

    def evaluate(self, model: Any, tokenizer: Any = None, *, step: int) -> HeldoutResult:
        """Generate, score and gather; every process of the job must call this together.

        Parameters
        ----------
        model:
            A causal LM with ``generate`` (a DDP/accelerate wrapper is unwrapped).
        tokenizer:
            Used when the evaluator has none of its own.
        step:
            The completed training step the result belongs to.
        """
        tok = self.tokenizer or tokenizer
        if tok is None:
            raise ValueError("HeldoutEvaluator needs a tokenizer: pass tokenizer= to it, or use "
                             "a trainer with a processing_class.")
        start = time.perf_counter()
        w = world()
        mine = self._indices[w.rank::w.size]
        total, count, failed, timed_out = 0.0, 0, 0, 0
        try:
            completions = self._generate(model, tok, [self.prompts[i] for i in mine])
        except Exception:
            # A failed generation on one rank must not skip the gather below (the other ranks
            # would wait forever); this rank reports its prompts as failed instead.
            logger.exception("satmon: held-out generation failed at step %d on rank %d; its %d "
                             "prompts are reported as failed", step, w.rank, len(mine))
            completions = None
        if completions is None:
            failed = len(mine)
        else:
            for i, completion in zip(mine, completions):
                if timed_out >= _MAX_TIMEOUTS:
                    failed += 1
                    timed_out += 1
                    continue
                score = self._score(self.prompts[i], completion, self.answers[i])
                if score is _TIMED_OUT:
                    timed_out += 1
                    failed += 1
                elif score is None:
                    failed += 1
                else:
                    total += score
                    count += 1
            if timed_out:
                logger.warning("satmon: held-out verifier timed out (%.3g s) on %d of %d prompts "
                               "at step %d on rank %d%s", self.timeout, timed_out, len(mine), step,
                               w.rank, " (the rest skipped after 3 timeouts)"
                               if timed_out > _MAX_TIMEOUTS else "")
        gathered = gather_objects((total, count, failed, timed_out))
        total = sum(g[0] for g in gathered)
        count = sum(g[1] for g in gathered)
        failed = sum(g[2] for g in gathered)
        timed_out = sum(g[3] for g in gathered)
        value = total / count if count else math.nan
        return HeldoutResult(name=self.name, step=int(step), value=value, n=count,
                             n_failed=failed, seconds=time.perf_counter() - start,
                             n_timed_out=timed_out)

    def _call_verifier(self, prompt: str, completion: str, answer: Any) -> Any:
        if self.timeout is None:
            return self.verifier(prompt, completion, answer)
        # A daemon thread per call: one that never returns cannot hold up the next call or
        # the process's exit (a ThreadPoolExecutor's workers are joined at exit).
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["value"] = self.verifier(prompt, completion, answer)
            except BaseException as exc:  # re-raised in the caller's thread below
                box["error"] = exc

        thread = threading.Thread(target=call, name="satmon-verifier", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            return _TIMED_OUT
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _score(self, prompt: str, completion: str, answer: Any) -> Any:
        try:
            raw = self._call_verifier(prompt, completion, answer)
            if raw is _TIMED_OUT:
                return _TIMED_OUT
            if raw is None:
                return None
            if not isinstance(raw, numbers.Real):
                kind = type(raw).__name__
                if kind not in self._bad_types_logged:
                    self._bad_types_logged.add(kind)
                    logger.warning("satmon: the held-out verifier returned %s %r for prompt %r; "
                                   "only real numbers are scores, so it counts as failed "
                                   "(logged once per type)", kind, raw, prompt)
                return None
            score = float(raw)
        except Exception:
            # Log the first few verifier errors with their traceback, not one per prompt.
            if self._verifier_errors_logged < 3:
                self._verifier_errors_logged += 1
                logger.exception("satmon: verifier raised on held-out prompt %r", prompt)
            return None
        if not math.isfinite(score):
            return None
        return score

    def _generate(self, model: Any, tokenizer: Any, prompts: list[str]) -> list[str]:
        if not prompts:
            return []
        torch = require("torch", feature="held-out generation")
        net = model
        # accelerate / DDP wrappers keep the generating model in .module
        while hasattr(net, "module") and not hasattr(net, "generate"):
            net = net.module
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        out: list[str] = []
        try:
            with torch.no_grad():
                for lo in range(0, len(prompts), self.batch_size):
                    batch = prompts[lo:lo + self.batch_size]
                    enc = tokenizer(batch, return_tensors="pt", padding=True,
                                    padding_side="left")
                    enc = {k: v.to(device) for k, v in enc.items()
                           if k in ("input_ids", "attention_mask")}
                    kwargs = {"max_new_tokens": self.max_new_tokens, "pad_token_id": pad_id,
                              **self.generation_kwargs, "do_sample": False}
                    ids = net.generate(**enc, **kwargs)
                    new = ids[:, enc["input_ids"].shape[1]:]
                    out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
        finally:
            if was_training:
                net.train()
        return out

    def __repr__(self) -> str:
        return (f"HeldoutEvaluator(name={self.name!r}, prompts={len(self.prompts)}, "
                f"size={self.size}, every={self.every})")
