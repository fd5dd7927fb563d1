"""Which keys of a live log are the training reward, the held-out series and the auxiliaries.

The watcher resolves keys with :class:`satmon.keys.KeyMap` (presets ``trl``, ``verl``,
``tidy``, ``auto``), against the union of the keys seen so far: held-out keys appear only at
the first evaluation, so the resolution is repeated whenever new keys arrive. Two key
families the core presets do not cover are handled here:

``openrlhf``
    OpenRLHF logs to TensorBoard (and wandb) only: training keys ``train/<k>`` (reward
    ``train/reward``), evaluation keys ``eval/<k>`` with ``<k>`` = ``eval_<ds>_pass1`` (one
    per data source ``<ds>``; ``eval_<ds>_pass<N>`` for N > 1 is pass@N, not accuracy, and is
    not read). Held-out series are named ``<ds>``; ``eval_avg_pass1`` (the mean over data
    sources) is read only when there is no per-source key. Auxiliaries ``train/kl``,
    ``train/response_length``, ``train/entropy``. The same keys without the ``train/`` /
    ``eval/`` prefix (wandb exports, JSONL) are accepted too. ``auto`` picks this preset when a
    key of the form ``[eval/]eval_<ds>_pass1`` exists.
transformers' TensorBoard tags
    ``TensorBoardCallback`` writes ``train/<key>`` and ``eval/<key>``; when every key has one
    of those prefixes and no core preset matches the raw keys, they are read back as the
    trainer's keys (``train/reward`` -> ``reward``, ``eval/rewards/acc/mean`` ->
    ``eval_rewards/acc/mean``) so the ``trl`` preset applies - the rule of the TensorBoard
    reader.

Explicit ``train_key`` / ``heldout_keys`` always win and name the keys as the log spells them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from satmon.keys import KeyMap, format_key_list

PRESETS = ("auto", "trl", "verl", "tidy", "openrlhf")

_OPENRLHF_EVAL = re.compile(r"^(?:eval/)?eval_(?P<ds>.+)_pass1$")
_OPENRLHF_AUX = {"kl": ("train/kl", "kl"), "response_length": ("train/response_length",
                                                                 "response_length"),
                 "entropy": ("train/entropy", "entropy")}
_HF_PREFIXES = ("train/", "eval/", "test/")


@dataclass(frozen=True)
class WatchResolved:
    """The concrete keys found: ``heldout`` and ``aux`` are ``(name, key)`` pairs."""

    preset: str | None
    train_key: str | None
    heldout: tuple[tuple[str, str], ...] = ()
    aux: tuple[tuple[str, str], ...] = ()

    def needed(self) -> list[str]:
        """Every key a watcher must read, sorted."""
        keys = {self.train_key, *(k for _, k in self.heldout), *(k for _, k in self.aux)}
        return sorted(k for k in keys if k)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "train_key": self.train_key,
                "heldout_keys": dict(self.heldout), "aux_keys": dict(self.aux)}


def _hf_key(tag: str) -> str:
    if tag.startswith("train/"):
        return tag[len("train/"):]
    if tag.startswith("eval/"):
        return "eval_" + tag[len("eval/"):]
    return "test_" + tag[len("test/"):]


def is_openrlhf(keys: Iterable[str]) -> bool:
    """True when the keys hold an OpenRLHF evaluation key (``[eval/]eval_<ds>_pass1``)."""
    return any(_OPENRLHF_EVAL.match(k) for k in keys)


@dataclass(frozen=True, kw_only=True)
class WatchKeys:
    """Key resolution for a watched run (see the module docstring).

    Parameters
    ----------
    preset:
        One of :data:`PRESETS`.
    train_key, heldout_keys:
        Explicit keys, as the log spells them (``heldout_keys``: a list of keys or
        ``{name: key}``).
    """

    preset: str = "auto"
    train_key: str | None = None
    heldout_keys: Any = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"The 'preset' parameter of satmon watch must be one of "
                             f"{list(PRESETS)}. Got {self.preset!r} instead.")
        if isinstance(self.heldout_keys, (list, tuple)) and not self.heldout_keys:
            object.__setattr__(self, "heldout_keys", None)
        # Validates the explicit keys once (a bad one fails before anything is watched).
        KeyMap(preset="auto", train_key=self.train_key, heldout_keys=self._explicit_heldout())

    def _explicit_heldout(self) -> Any:
        if self.heldout_keys is None:
            return None
        if isinstance(self.heldout_keys, Mapping):
            return dict(self.heldout_keys)
        return [k for k in self.heldout_keys]

    def resolve(self, keys: Iterable[str]) -> WatchResolved:
        """The keys among ``keys`` (missing explicit keys are left out, never raised)."""
        present = sorted({k for k in keys if isinstance(k, str)})
        if self.preset == "openrlhf" or (self.preset == "auto" and is_openrlhf(present)):
            return self._openrlhf(present)
        keymap = KeyMap(preset=self.preset, train_key=self.train_key,
                        heldout_keys=self._explicit_heldout())
        direct = keymap.resolve(present, strict=False)
        hf_tags = bool(present) and all(k.startswith(_HF_PREFIXES) for k in present)
        if hf_tags and direct.train_key is None and self.preset in ("auto", "trl"):
            renamed = {_hf_key(k): k for k in present}
            r = KeyMap(preset=self.preset, train_key=self.train_key and _hf_key(self.train_key),
                       heldout_keys=self._renamed_heldout()).resolve(renamed, strict=False)
            back = renamed.get
            return WatchResolved(preset=r.preset, train_key=back(r.train_key or ""),
                                 heldout=tuple((n, back(k)) for n, k in r.heldout),
                                 aux=tuple((n, back(k)) for n, k in r.aux))
        return WatchResolved(preset=direct.preset, train_key=direct.train_key,
                             heldout=direct.heldout, aux=direct.aux)

    def _renamed_heldout(self) -> Any:
        explicit = self._explicit_heldout()
        if explicit is None:
            return None
        if isinstance(explicit, dict):
            return {n: _hf_key(k) for n, k in explicit.items()}
        return [_hf_key(k) for k in explicit]

    def _openrlhf(self, present: list[str]) -> WatchResolved:
        have = set(present)
        if self.train_key is not None:
            train = self.train_key if self.train_key in have else None
        else:
            train = next((k for k in ("train/reward", "reward") if k in have), None)
        explicit = self._explicit_heldout()
        if explicit is not None:
            pairs = (explicit.items() if isinstance(explicit, dict)
                     else ((_openrlhf_name(k), k) for k in explicit))
            heldout = [(n, k) for n, k in pairs if k in have]
        else:
            by_name: dict[str, str] = {}
            for k in present:
                m = _OPENRLHF_EVAL.match(k)
                # The prefixed TensorBoard spelling wins over a bare one of the same source.
                if m and (m.group("ds") not in by_name or k.startswith("eval/")):
                    by_name[m.group("ds")] = k
            if len(by_name) > 1:
                by_name.pop("avg", None)
            heldout = sorted(by_name.items())
        aux = [(name, next(c for c in cands if c in have))
               for name, cands in _OPENRLHF_AUX.items() if any(c in have for c in cands)]
        return WatchResolved(preset="openrlhf", train_key=train, heldout=tuple(heldout),
                             aux=tuple(aux))


def _openrlhf_name(key: str) -> str:
    m = _OPENRLHF_EVAL.match(key)
    return m.group("ds") if m else key


def missing_train_key_message(keys: Iterable[str], resolved: WatchResolved,
                              train_key: str | None) -> str:
    """The error for a run in which no training-reward key was found (lists the keys)."""
    present = sorted(set(keys))
    if train_key:
        head = f"the training-reward key {train_key!r} is not in the log"
    else:
        head = (f"no training-reward key found (preset {resolved.preset or 'none matched'}); "
                "pass --train-key")
    return f"{head}. Keys found ({len(present)}): {format_key_list(present)}."


__all__ = ["PRESETS", "WatchKeys", "WatchResolved", "is_openrlhf", "missing_train_key_message"]
