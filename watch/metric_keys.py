"""Which keys of a live log are the training reward, the held-out series and the auxiliaries.

The watcher resolves keys with :class:`satmon.keys.KeyMap` (presets ``trl``, ``verl``,
``tidy``, ``openrlhf``, ``auto``; OpenRLHF's ``train/reward`` and ``eval/eval_<ds>_pass1``
are the ``openrlhf`` preset there, which ``auto`` picks once an ``eval_<ds>_pass1`` key
exists), against the union of the keys seen so far: held-out keys appear only at the first
evaluation, so the resolution is repeated whenever new keys arrive. One key family the core
presets do not cover is handled here:

transformers' TensorBoard tags
    ``TensorBoardCallback`` writes ``train/<key>`` and ``eval/<key>``; when every key has one
    of those prefixes and no core preset matches the raw keys, they are read back as the
    trainer's keys (``train/reward`` -> ``reward``, ``eval/rewards/acc/mean`` ->
    ``eval_rewards/acc/mean``) so the ``trl`` preset applies - the rule of the TensorBoard
    reader.

Explicit ``train_key`` / ``heldout_keys`` always win and name the keys as the log spells them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from satmon.keys import PRESETS, KeyMap, format_key_list

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


__all__ = ["PRESETS", "WatchKeys", "WatchResolved", "missing_train_key_message"]
