"""Which logged metric key is the training reward, which are held-out series, which auxiliaries.

Trainers name their metrics differently, and one trainer renames them between versions. A
:class:`KeyMap` says how to find satmon's three kinds of series among the keys a log holds:

* the **training reward** (one key);
* **held-out** series (``{benchmark name: key}``);
* **auxiliary** series under canonical names: ``entropy``, ``response_length``, ``kl``,
  ``frac_reward_zero_std``, ``reward_std``, ``clipped_ratio``.

Presets (``preset=``):

``trl``
    training reward ``reward`` (else a single ``rewards/<fn>/mean`` or old ``rewards/<fn>``);
    held-out ``eval_rewards/<fn>/mean`` or old ``eval_rewards/<fn>``, named ``<fn>`` (only the
    function of the training key when that key names one); auxiliaries
    ``completions/mean_length`` (old ``completion_length``), ``frac_reward_zero_std``,
    ``entropy``, ``kl``, ``reward_std``, ``completions/clipped_ratio``.
``verl``
    training reward ``critic/score/mean`` (else ``critic/rewards/mean``, which self-certainty
    runs log); held-out ``val-core/<ds>/<var>/mean@N`` (MLflow spells ``@`` as ``_at_``; the
    largest N wins), named ``<ds>``, or ``<ds>/<var>`` when a data source has several
    variables, and the older ``val/test_score/<ds>``; auxiliaries ``actor/entropy`` (older
    ``actor/entropy_loss``), ``response_length/mean``, ``actor/kl_loss`` (PPO runs without a
    KL loss: ``critic/kl``, the KL penalty in the reward), ``response_length/clip_ratio``.
    ``actor/ppo_kl`` is deliberately not read as ``kl``: it measures the policy change within
    one update, not the distance from the reference model.
``tidy``
    satmon's own names: ``train_reward``, ``heldout_acc`` or ``heldout_acc/<name>``, and the
    canonical auxiliary names.
``auto``
    detect the preset from the keys present (:func:`detect_preset`).

Every preset also reads back what satmon's own callback writes (to MLflow, and to the
trainer's ``log_history`` in ``trainer_state.json``): ``satmon/train_reward`` when the preset
finds no training-reward key, and ``satmon/heldout/<name>`` (sample size in
``satmon/heldout/<name>/n``) when it finds no held-out key. A log holding only satmon's keys is
read with the ``tidy`` preset.

Explicit ``train_key``, ``heldout_keys`` and ``aux_keys`` override the preset; a configured key
that the log does not have raises a ``KeyError`` that lists the keys it does have.

This module is pure Python so a trainer callback can resolve keys per log dict
(:meth:`KeyMap.pick`) without importing anything heavy.

Example
-------
>>> km = KeyMap(preset="trl")
>>> picked = km.pick({"reward": 0.5, "entropy": 0.9, "eval_rewards/acc/mean": 0.3})
>>> picked.train, picked.heldout, picked.aux
(0.5, {'acc': 0.3}, {'entropy': 0.9})
>>> KeyMap(preset="auto").resolve(["critic/score/mean", "val-core/gsm8k/acc/mean@1"]).heldout
(('gsm8k', 'val-core/gsm8k/acc/mean@1'),)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("auto", "trl", "verl", "tidy")
AUX_NAMES = ("entropy", "response_length", "kl", "frac_reward_zero_std", "reward_std",
             "clipped_ratio")

TIDY_TRAIN = "train_reward"
TIDY_HELDOUT = "heldout_acc"

# Auxiliary keys by preset, in order of preference: the first present key wins.
_AUX_CANDIDATES: dict[str, dict[str, tuple[str, ...]]] = {
    "trl": {
        "entropy": ("entropy",),
        "response_length": ("completions/mean_length", "completion_length"),
        "kl": ("kl",),
        "frac_reward_zero_std": ("frac_reward_zero_std",),
        "reward_std": ("reward_std",),
        "clipped_ratio": ("completions/clipped_ratio",),
    },
    "verl": {
        "entropy": ("actor/entropy", "actor/entropy_loss"),
        "response_length": ("response_length/mean",),
        "kl": ("actor/kl_loss", "critic/kl"),
        "clipped_ratio": ("response_length/clip_ratio",),
    },
    "tidy": {name: (name,) for name in AUX_NAMES},
}

_TRL_REWARD_FN = re.compile(r"^rewards/(?P<fn>[^/]+)(?:/mean)?$")
_TRL_EVAL_FN = re.compile(r"^eval_rewards/(?P<fn>[^/]+)(?:/mean)?$")
_VERL_CORE = re.compile(r"^val-core/(?P<ds>.+)/(?P<var>[^/]+)/mean(?:@|_at_)(?P<n>\d+)$")
_VERL_OLD = re.compile(r"^val/test_score/(?P<ds>.+)$")
SATMON_TRAIN = "satmon/train_reward"
_SATMON_HELDOUT = re.compile(r"^satmon/heldout/(?P<name>.+)$")


def satmon_heldout_size_key(key: str) -> str | None:
    """The sample-size key of one of satmon's own held-out keys (None for other keys)."""
    m = _SATMON_HELDOUT.match(key)
    return None if m is None or key.endswith("/n") else key + "/n"

_MAX_KEYS_LISTED = 40


def format_key_list(keys: Iterable[str], limit: int = _MAX_KEYS_LISTED) -> str:
    """The sorted keys as one string, truncated after ``limit`` with a count of the rest."""
    ordered = sorted(set(keys))
    if not ordered:
        return "(none)"
    shown = ", ".join(repr(k) for k in ordered[:limit])
    if len(ordered) > limit:
        shown += f", ... and {len(ordered) - limit} more"
    return shown


def _missing_key_error(what: str, key: str, available: Iterable[str]) -> KeyError:
    keys = list(available)
    return KeyError(
        f"The {what} key {key!r} is not in the log. Keys found ({len(set(keys))}): "
        f"{format_key_list(keys)}."
    )


def detect_preset(keys: Iterable[str]) -> str | None:
    """The preset whose key names the log uses, or None when none matches.

    verl keys are checked first because they are the most specific (``critic/``, ``actor/``,
    ``val-core/``); satmon's own tidy names next; TRL's last, since its ``reward`` and
    ``entropy`` are generic words.
    """
    keys = set(keys)
    if any(k.startswith(("critic/score/", "critic/rewards/", "val-core/", "val/test_score/"))
           for k in keys):
        return "verl"
    if TIDY_TRAIN in keys or TIDY_HELDOUT in keys or any(
            k.startswith(TIDY_HELDOUT + "/") for k in keys):
        return "tidy"
    if "reward" in keys or any(k.startswith(("rewards/", "eval_rewards/", "completions/"))
                               for k in keys):
        return "trl"
    if SATMON_TRAIN in keys or any(_SATMON_HELDOUT.match(k) for k in keys):
        return "tidy"  # only satmon's own keys
    return None


def heldout_name(key: str, preset: str | None = None) -> str:
    """The benchmark name a held-out key encodes (the key itself when no rule applies).

    >>> heldout_name("eval_rewards/accuracy/mean")
    'accuracy'
    >>> heldout_name("val-core/openai/gsm8k/reward/mean_at_1")
    'openai/gsm8k'
    """
    m = None
    if preset in (None, "auto", "trl"):
        m = _TRL_EVAL_FN.match(key)
        if m:
            return m.group("fn")
    if preset in (None, "auto", "verl"):
        m = _VERL_CORE.match(key) or _VERL_OLD.match(key)
        if m:
            return m.group("ds")
    if preset in (None, "auto", "tidy") and key.startswith(TIDY_HELDOUT + "/"):
        return key[len(TIDY_HELDOUT) + 1:]
    m = _SATMON_HELDOUT.match(key)
    if m:
        return m.group("name")
    return key


def _check_str(name: str, value: Any, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str) or not value:
        raise TypeError(f"The {name!r} parameter of KeyMap must be a non-empty string"
                        f"{' or None' if allow_none else ''}. Got {value!r} instead.")


@dataclass(frozen=True)
class ResolvedKeys:
    """The concrete keys a :class:`KeyMap` found in one log.

    Attributes
    ----------
    preset: the preset used (``auto`` is replaced by the detected one; None if none matched).
    train_key: key of the training reward, or None.
    heldout: ``(name, key)`` pairs of held-out series, in a stable order.
    aux: ``(canonical name, key)`` pairs of auxiliary series, in the order of ``AUX_NAMES``.
    """

    preset: str | None
    train_key: str | None
    heldout: tuple[tuple[str, str], ...] = ()
    aux: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "train_key": self.train_key,
                "heldout_keys": dict(self.heldout), "aux_keys": dict(self.aux)}


@dataclass(frozen=True)
class PickedMetrics:
    """The values one log dict holds for the training reward, held-out and auxiliary series.

    Only keys present in the dict appear; a present key with a None value appears as None so a
    caller can count skipped (all-NaN) metrics.
    """

    train: Any = None
    heldout: dict[str, Any] = field(default_factory=dict)
    aux: dict[str, Any] = field(default_factory=dict)
    has_train: bool = False

    @property
    def empty(self) -> bool:
        return not (self.has_train or self.heldout or self.aux)


@dataclass(frozen=True, kw_only=True)
class KeyMap:
    """How to find the training reward, held-out and auxiliary series among logged keys.

    Parameters
    ----------
    preset:
        ``"auto"`` (detect), ``"trl"``, ``"verl"`` or ``"tidy"``; see the module docstring.
    train_key:
        The training-reward key, overriding the preset.
    heldout_keys:
        Held-out keys overriding the preset: a list of keys (names derived from the key by
        the preset's rules, e.g. ``eval_rewards/acc/mean`` -> ``acc``) or ``{name: key}``.
        Stored as a tuple of ``(name, key)`` pairs.
    aux_keys:
        ``{canonical name: key}`` overriding the preset for those auxiliaries; names must be in
        ``AUX_NAMES``. Stored as a tuple of pairs.
    """

    preset: str = "auto"
    train_key: str | None = None
    heldout_keys: Any = None
    aux_keys: Any = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"The 'preset' parameter of KeyMap must be one of {list(PRESETS)}. "
                             f"Got {self.preset!r} instead.")
        _check_str("train_key", self.train_key)
        object.__setattr__(self, "heldout_keys", self._normalize_heldout(self.heldout_keys))
        object.__setattr__(self, "aux_keys", self._normalize_aux(self.aux_keys))

    def _normalize_heldout(self, raw: Any) -> tuple[tuple[str, str], ...] | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, Mapping):
            pairs = [(n, k) for n, k in raw.items()]
        elif isinstance(raw, Iterable):
            items = list(raw)
            if items and all(isinstance(i, tuple) and len(i) == 2 for i in items):
                pairs = items
            else:
                for k in items:
                    _check_str("heldout_keys", k, allow_none=False)
                names = [heldout_name(k, self.preset) for k in items]
                # Two keys that reduce to the same benchmark name keep their full keys as names,
                # so no series silently replaces another.
                pairs = [(n if names.count(n) == 1 else k, k) for n, k in zip(names, items)]
        else:
            raise TypeError("The 'heldout_keys' parameter of KeyMap must be a list of keys or a "
                            f"{{name: key}} mapping. Got {type(raw).__name__} instead.")
        for n, k in pairs:
            _check_str("heldout_keys", n, allow_none=False)
            _check_str("heldout_keys", k, allow_none=False)
        if not pairs:
            raise ValueError("The 'heldout_keys' parameter of KeyMap is empty; pass None to use "
                             "the preset's held-out keys.")
        if len({n for n, _ in pairs}) != len(pairs):
            raise ValueError(f"The 'heldout_keys' parameter of KeyMap names a benchmark twice: "
                             f"{[n for n, _ in pairs]}.")
        return tuple((str(n), str(k)) for n, k in pairs)

    @staticmethod
    def _normalize_aux(raw: Any) -> tuple[tuple[str, str], ...] | None:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise TypeError("The 'aux_keys' parameter of KeyMap must be a {canonical name: key} "
                            f"mapping. Got {type(raw).__name__} instead.")
        for n, k in raw.items():
            if n not in AUX_NAMES:
                raise ValueError(f"The 'aux_keys' parameter of KeyMap has an unknown auxiliary "
                                 f"name {n!r}; valid names: {list(AUX_NAMES)}.")
            _check_str("aux_keys", k, allow_none=False)
        return tuple((n, raw[n]) for n in AUX_NAMES if n in raw)

    # -- resolution -----------------------------------------------------------------------

    def effective_preset(self, keys: Iterable[str]) -> str | None:
        """The preset used for these keys: the configured one, or the detected one for auto."""
        return detect_preset(keys) if self.preset == "auto" else self.preset

    def resolve(self, keys: Iterable[str], *, strict: bool = True,
                require_train: bool = False) -> ResolvedKeys:
        """Find the concrete keys among ``keys``.

        Parameters
        ----------
        keys:
            The keys present in a log (for a whole run: the union over its records).
        strict:
            Raise a KeyError (listing the keys present) when an explicitly configured key is
            missing. With False, missing keys are left out; a trainer callback resolving one
            log dict at a time uses this, since train and eval logs hold different keys.
        require_train:
            Also raise a KeyError when no training-reward key is found.

        Returns
        -------
        :class:`ResolvedKeys`.
        """
        keys = [k for k in keys if isinstance(k, str)]
        present = set(keys)
        preset = self.effective_preset(present)

        train_key = self.train_key
        if train_key is not None and train_key not in present:
            if strict:
                raise _missing_key_error("training-reward", train_key, present)
            train_key = None
        if self.train_key is None:
            train_key = _preset_train_key(preset, present)
        if train_key is None and require_train:
            raise KeyError(
                "No training-reward key found"
                + (f" for preset {preset!r}" if preset else
                   " (the keys match none of the presets trl, verl, tidy)")
                + f"; pass train_key. Keys found ({len(present)}): {format_key_list(present)}."
            )

        if self.heldout_keys is not None:
            heldout = []
            for name, key in self.heldout_keys:
                if key in present:
                    heldout.append((name, key))
                elif strict:
                    raise _missing_key_error("held-out", key, present)
        else:
            heldout = _preset_heldout(preset, present, train_key)

        explicit_aux = dict(self.aux_keys or ())
        aux = []
        for name in AUX_NAMES:
            if name in explicit_aux:
                key = explicit_aux[name]
                if key in present:
                    aux.append((name, key))
                elif strict:
                    raise _missing_key_error(f"auxiliary {name!r}", key, present)
                continue
            for cand in _AUX_CANDIDATES.get(preset or "", {}).get(name, ()):
                if cand in present:
                    aux.append((name, cand))
                    break
        return ResolvedKeys(preset=preset, train_key=train_key, heldout=tuple(heldout),
                            aux=tuple(aux))

    def pick(self, record: Mapping[str, Any]) -> PickedMetrics:
        """The training-reward, held-out and auxiliary values in one log dict (never raises).

        Keys are resolved against this dict alone, so a train log yields the reward and
        auxiliaries and an eval log the held-out values.
        """
        if not isinstance(record, Mapping):
            raise TypeError(f"KeyMap.pick needs a mapping of metric keys to values. "
                            f"Got {type(record).__name__} instead.")
        r = self.resolve(record.keys(), strict=False)
        return PickedMetrics(
            train=record[r.train_key] if r.train_key else None,
            heldout={n: record[k] for n, k in r.heldout},
            aux={n: record[k] for n, k in r.aux},
            has_train=r.train_key is not None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "train_key": self.train_key,
                "heldout_keys": None if self.heldout_keys is None else dict(self.heldout_keys),
                "aux_keys": None if self.aux_keys is None else dict(self.aux_keys)}


def _preset_train_key(preset: str | None, present: set[str]) -> str | None:
    key = _preset_train_key_of(preset, present)
    if key is None and SATMON_TRAIN in present:
        return SATMON_TRAIN
    return key


def _preset_heldout(preset: str | None, present: set[str],
                    train_key: str | None) -> list[tuple[str, str]]:
    found = _preset_heldout_of(preset, present, train_key)
    if found:
        return found
    return sorted((m.group("name"), k) for k in present
                  if (m := _SATMON_HELDOUT.match(k)) and not k.endswith("/n"))


def _preset_train_key_of(preset: str | None, present: set[str]) -> str | None:
    if preset == "tidy":
        return TIDY_TRAIN if TIDY_TRAIN in present else None
    if preset == "verl":
        for key in ("critic/score/mean", "critic/rewards/mean"):
            if key in present:
                return key
        return None
    if preset == "trl":
        if "reward" in present:
            return "reward"
        # Without the combined reward, a single reward function's mean is unambiguous; several
        # are not (which one is the task reward is the user's call).
        per_fn = sorted(k for k in present if _TRL_REWARD_FN.match(k))
        new_style = [k for k in per_fn if k.endswith("/mean")]
        candidates = new_style or per_fn
        return candidates[0] if len(candidates) == 1 else None
    return None


def _preset_heldout_of(preset: str | None, present: set[str],
                       train_key: str | None) -> list[tuple[str, str]]:
    if preset == "tidy":
        out = [(TIDY_HELDOUT, TIDY_HELDOUT)] if TIDY_HELDOUT in present else []
        out += [(k[len(TIDY_HELDOUT) + 1:], k) for k in sorted(present)
                if k.startswith(TIDY_HELDOUT + "/")]
        return out
    if preset == "trl":
        by_fn: dict[str, str] = {}
        for k in sorted(present):
            m = _TRL_EVAL_FN.match(k)
            if m:
                # The /mean spelling (TRL >= 0.17) wins over the old bare one.
                if m.group("fn") not in by_fn or k.endswith("/mean"):
                    by_fn[m.group("fn")] = k
        m = _TRL_REWARD_FN.match(train_key or "")
        if m and m.group("fn") in by_fn:
            return [(m.group("fn"), by_fn[m.group("fn")])]
        return sorted(by_fn.items())
    if preset == "verl":
        core: dict[tuple[str, str], tuple[int, str]] = {}
        for k in present:
            m = _VERL_CORE.match(k)
            if m:
                ds_var, n = (m.group("ds"), m.group("var")), int(m.group("n"))
                if ds_var not in core or n > core[ds_var][0]:
                    core[ds_var] = (n, k)
        if core:
            vars_per_ds: dict[str, int] = {}
            for ds, _ in core:
                vars_per_ds[ds] = vars_per_ds.get(ds, 0) + 1
            return sorted(((ds if vars_per_ds[ds] == 1 else f"{ds}/{var}"), key)
                          for (ds, var), (_, key) in core.items())
        return sorted((m.group("ds"), k) for k in present if (m := _VERL_OLD.match(k)))
    return []
