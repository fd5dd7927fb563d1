"""Rollouts for the probe: k sampled completions per prompt, from a local transformers model or
from an OpenAI-compatible chat endpoint.

:func:`sample_local` seeds torch once (inside ``torch.random.fork_rng``, so the caller's random
state is left alone) and calls ``generate`` with ``num_return_sequences=k`` on batches of
prompts, left-padded: the same seed, model and prompts give the same rollouts. Prompts are fed
as raw text (no chat template unless ``chat=True``).

:func:`sample_endpoint` asks ``/v1/chat/completions`` once per rollout with ``seed =
seed * 100003 + prompt_index * 1009 + rollout`` (servers that honour ``seed``, e.g. vLLM, are
then reproducible; others are not, and the probe's JSON records the source). A down endpoint
raises :class:`satmon.probe.chat_endpoint.EndpointError` naming the URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from satmon._optional import require
from satmon.probe.chat_endpoint import ChatEndpoint


def sample_local(model: Any, tokenizer: Any, prompts: Sequence[str], *, k: int,
                 max_new_tokens: int, temperature: float = 1.0, seed: int = 0,
                 batch_size: int = 8, chat: bool = False,
                 generation_kwargs: dict[str, Any] | None = None) -> list[list[str]]:
    """``k`` sampled completions per prompt (``temperature=0``: greedy, repeated ``k`` times)."""
    torch = require("torch", feature="sampling rollouts from a local model")
    greedy = temperature == 0
    texts = list(prompts)
    if chat:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in texts]
    side = getattr(tokenizer, "padding_side", "left")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    out: list[list[str]] = []
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for i in range(0, len(texts), batch_size):
                batch = texts[i:i + batch_size]
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                enc = tokenizer(batch, return_tensors="pt", padding=True,
                                add_special_tokens=False)
                ids = model.generate(**enc, max_new_tokens=max_new_tokens,
                                     do_sample=not greedy,
                                     temperature=None if greedy else float(temperature),
                                     top_k=None, top_p=None, pad_token_id=pad_id,
                                     num_return_sequences=1 if greedy else k,
                                     **dict(generation_kwargs or {}))
                decoded = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:],
                                                 skip_special_tokens=True)
                if greedy:
                    out.extend([t] * k for t in decoded)
                else:
                    out.extend(decoded[j * k:(j + 1) * k] for j in range(len(batch)))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def sample_endpoint(endpoint: ChatEndpoint, prompts: Sequence[str], *, k: int,
                    max_new_tokens: int, temperature: float = 1.0, seed: int = 0
                    ) -> list[list[str]]:
    """``k`` completions per prompt from a chat endpoint, one request per rollout."""
    jobs = [(i, j) for i in range(len(prompts)) for j in range(k)]

    def one(job: tuple[int, int]) -> str:
        i, j = job
        return endpoint.complete([{"role": "user", "content": prompts[i]}],
                                 temperature=float(temperature), max_tokens=max_new_tokens,
                                 seed=seed * 100003 + i * 1009 + j)

    flat = endpoint.map(one, jobs)
    return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]
