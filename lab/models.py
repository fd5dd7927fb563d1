"""Tiny causal language models and character tokenizers built locally (no model hub).

The lab trains real models with real trainers on a laptop CPU, so everything here is built from
code in a fraction of a second: a character-level tokenizer over a task's alphabet and a small
Llama-architecture decoder (about 84k parameters with the defaults). torch, transformers and
tokenizers are imported inside the functions, so ``import satmon.lab.models`` stays light.

Example
-------
>>> from satmon.lab.models import build_char_tokenizer, build_tiny_model
>>> tok = build_char_tokenizer("01=")            # doctest: +SKIP
>>> model = build_tiny_model(tok, seed=0)         # doctest: +SKIP
>>> tok.decode(tok("01=")["input_ids"])           # doctest: +SKIP
'01='
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from satmon._optional import require

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

#: Special tokens of every lab tokenizer, in vocabulary order (ids 0, 1, 2).
PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)


def build_char_tokenizer(alphabet: str, *, model_max_length: int = 64) -> "PreTrainedTokenizerFast":
    """Build a character-level fast tokenizer: one token per character of ``alphabet``.

    Parameters
    ----------
    alphabet:
        Every character prompts and answers may contain (duplicates are ignored, order kept).
        A character outside it encodes as ``<unk>``.
    model_max_length:
        Longest sequence the tokenizer reports it accepts.

    Returns
    -------
    A ``transformers.PreTrainedTokenizerFast`` with ``<pad>`` (id 0), ``<eos>`` (id 1) and
    ``<unk>`` (id 2), left padding (what decoder-only generation needs), no BOS token, and a
    decoder that joins characters without spaces.
    """
    if not isinstance(alphabet, str) or not alphabet:
        raise ValueError(f"The 'alphabet' of build_char_tokenizer must be a non-empty string. "
                         f"Got {alphabet!r} instead.")
    chars = list(dict.fromkeys(alphabet))
    tokenizers = require("tokenizers", feature="the lab's character tokenizer")
    transformers = require("transformers", feature="the lab's character tokenizer")

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # Splitting on every single character makes each one a word, so "ab=" becomes ["a", "b", "="].
    core.pre_tokenizer = tokenizers.pre_tokenizers.Split(
        tokenizers.Regex("."), behavior="isolated")
    core.decoder = tokenizers.decoders.Fuse()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        model_max_length=model_max_length,
    )
    return tok


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of a lab model (a Llama-architecture decoder).

    The defaults give about 84k parameters for a 20-character vocabulary, which trains at a few
    hundredths of a second per GRPO step on two CPU cores.
    """

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 64

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"The '{name}' parameter of TinyModelConfig must be an int > 0. "
                                 f"Got {value!r} instead.")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"The 'hidden_size' of TinyModelConfig ({self.hidden_size}) must be a "
                             f"multiple of 'num_heads' ({self.num_heads}).")


def build_tiny_model(tokenizer: Any, *, config: TinyModelConfig | None = None,
                     seed: int = 0) -> "PreTrainedModel":
    """Build a randomly initialised tiny causal LM matching ``tokenizer``'s vocabulary.

    Parameters
    ----------
    tokenizer:
        A tokenizer from :func:`build_char_tokenizer` (any tokenizer with ``pad_token_id`` and
        ``eos_token_id`` works).
    config:
        Model shape; :class:`TinyModelConfig` defaults when None.
    seed:
        Seed of the weight initialisation (the global torch RNG is left as it was).

    Returns
    -------
    A ``transformers.LlamaForCausalLM`` in float32 on the CPU, with its generation config's
    pad and EOS ids set from the tokenizer.
    """
    cfg = config or TinyModelConfig()
    if not isinstance(cfg, TinyModelConfig):
        raise TypeError(f"The 'config' of build_tiny_model must be a TinyModelConfig. "
                        f"Got {type(cfg).__name__} instead.")
    torch = require("torch", feature="the lab's tiny models")
    transformers = require("transformers", feature="the lab's tiny models")

    model_config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    # Seed locally so building a model never changes the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def count_parameters(model: Any) -> int:
    """Number of distinct trainable parameters of a torch module (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def restrict_generation(tokenizer: Any, allowed: str) -> dict[str, Any]:
    """Generation keyword arguments that let a model emit only the characters in ``allowed``.

    Every other token of ``tokenizer`` (other characters, ``<pad>``, ``<eos>``, ``<unk>``) is
    suppressed, so a one-token answer is always one of the task's symbols. A randomly initialised
    model then starts at chance accuracy instead of at zero, and an accuracy gain means a rule
    (or a memorised label) was learned, not the answer format. Pass the result as
    ``GRPOConfig(generation_kwargs=...)`` and ``HeldoutEvaluator(generation_kwargs=...)``.

    Returns
    -------
    ``{"suppress_tokens": [token ids]}``.
    """
    if not isinstance(allowed, str) or not allowed:
        raise ValueError(f"The 'allowed' characters of restrict_generation must be a non-empty "
                         f"string. Got {allowed!r} instead.")
    vocab = tokenizer.get_vocab()
    missing = [c for c in allowed if c not in vocab]
    if missing:
        raise ValueError(f"restrict_generation: characters {missing} are not in the tokenizer's "
                         f"vocabulary {sorted(vocab)}.")
    keep = {vocab[c] for c in allowed}
    return {"suppress_tokens": sorted(i for i in vocab.values() if i not in keep)}
