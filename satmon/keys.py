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
``openrlhf``
    OpenRLHF (TensorBoard and wandb): training reward ``train/reward`` (else ``reward``, the
    same key without the prefix: wandb exports, JSONL); held-out ``eval/eval_<ds>_pass1`` (or
    ``eval_<ds>_pass1``), one per data source, named ``<ds>`` (the ``eval/`` spelling wins
    over the bare one of the same source; ``eval_<ds>_pass<N>`` for N > 1 is pass@N, not
    accuracy, and is not read; ``eval_avg_pass1``, the mean over data sources, is read only
    when there is no per-source key); auxiliaries ``train/kl``, ``train/response_length``,
    ``train/entropy`` (or the same without ``train/``).
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
that the log does not have raises an :class:`UnknownKeyError` (a ``KeyError``) that lists the keys
it does have and suggests the closest ones (``did you mean 'reward'?``).

Held-out sample sizes: the series ``<key>/n`` (for any held-out key, e.g. ``heldout_acc/n``
beside ``heldout_acc``, as ``satmon export`` writes it), else ``satmon/heldout/<name>/n`` (what
satmon's callback logs), is the sample size of held-out series ``<name>`` logged under ``<key>``
(:attr:`ResolvedKeys.heldout_sizes`). Such a size key is never itself read as a held-out series.

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

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("auto", "trl", "verl", "tidy", "openrlhf")
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
    "openrlhf": {
        "entropy": ("train/entropy", "entropy"),
        "response_length": ("train/response_length", "response_length"),
        "kl": ("train/kl", "kl"),
    },
    "tidy": {name: (name,) for name in AUX_NAMES},
}

_TRL_REWARD_FN = re.compile(r"^rewards/(?P<fn>[^/]+)(?:/mean)?$")
_TRL_EVAL_FN = re.compile(r"^eval_rewards/(?P<fn>[^/]+)(?:/mean)?$")
_VERL_CORE = re.compile(r"^val-core/(?P<ds>.+)/(?P<var>[^/]+)/mean(?:@|_at_)(?P<n>\d+)$")
_VERL_OLD = re.compile(r"^val/test_score/(?P<ds>.+)$")
_OPENRLHF_EVAL = re.compile(r"^(?:eval/)?eval_(?P<ds>.+)_pass1$")
SATMON_TRAIN = "satmon/train_reward"
_SATMON_HELDOUT = re.compile(r"^satmon/heldout/(?P<name>.+)$")


def satmon_heldout_size_key(key: str) -> str | None:
    """The sample-size key of one of satmon's own held-out keys (None for other keys)."""
    m = _SATMON_HELDOUT.match(key)
    return None if m is None or key.endswith("/n") else key + "/n"


def heldout_size_key(name: str, key: str, present: Iterable[str]) -> str | None:
    """The key of the sample-size series of held-out series ``name`` (logged as ``key``).

    ``<key>/n`` when present, else satmon's ``satmon/heldout/<name>/n`` (the callback logs the
    size there also when the values come from the trainer's own eval keys); None otherwise.

    >>> heldout_size_key("gsm8k", "heldout_acc/gsm8k", ["heldout_acc/gsm8k/n"])
    'heldout_acc/gsm8k/n'
    >>> heldout_size_key("acc", "eval_rewards/acc/mean", ["satmon/heldout/acc/n"])
    'satmon/heldout/acc/n'
    """
    present = present if isinstance(present, (set, frozenset, dict)) else set(present)
    for candidate in (f"{key}/n", f"satmon/heldout/{name}/n"):
        if candidate in present and candidate != key:
            return candidate
    return None


def _is_size_key(key: str, present: set[str]) -> bool:
    """Whether ``key`` is the ``<held-out key>/n`` sample size of another key present."""
    return key.endswith("/n") and key[:-2] in present

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


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` closest to ``word`` (difflib), best first.

    Also matches case-insensitively and on the last ``/`` component, so ``"rewrad"`` finds
    ``"reward"`` and ``"acc"`` finds ``"eval_rewards/acc/mean"``'s neighbours.

    >>> close_matches("rewrad", ["reward", "loss", "rewards/acc/mean"])
    ['reward']
    """
    pool = sorted({str(c) for c in candidates})
    found = difflib.get_close_matches(word, pool, n=n, cutoff=0.6)
    if len(found) < n:
        lowered = {c.lower(): c for c in pool}
        for m in difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6):
            if lowered[m] not in found:
                found.append(lowered[m])
    if len(found) < n:
        tails: dict[str, list[str]] = {}
        for c in pool:
            tails.setdefault(c.rsplit("/", 1)[-1].lower(), []).append(c)
        for m in difflib.get_close_matches(word.rsplit("/", 1)[-1].lower(), list(tails), n=n,
                                           cutoff=0.75):
            found += [c for c in tails[m] if c not in found]
    return found[:n]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" Did you mean 'reward'?"`` (with a leading space), or ``""`` without a close match."""
    found = close_matches(word, candidates)
    if not found:
        return ""
    return " Did you mean " + " or ".join(repr(f) for f in found) + "?"


class UnknownKeyError(KeyError):
    """A metric key (or series / metadata name) that is not there.

    A ``KeyError``, as this failure always was, whose ``str()`` is the plain message (a bare
    KeyError prints its message as a quoted repr). The message lists what exists and suggests
    the closest names (``Did you mean 'reward'?``).

    Attributes
    ----------
    key: the name asked for (None when none was named, e.g. no training-reward key found).
    available: the names that exist, sorted.
    suggestions: the close matches offered in the message (possibly empty).

    >>> err = UnknownKeyError.for_key("The training-reward key", "rewrad", ["reward", "loss"])
    >>> str(err)
    "The training-reward key 'rewrad' is not in the log. Did you mean 'reward'? Keys found (2): 'loss', 'reward'."
    """

    def __init__(self, message: str, *, key: str | None = None,
                 available: Iterable[str] = (), suggestions: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.key = key
        self.available = sorted({str(a) for a in available})
        self.suggestions = list(suggestions)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):
        return (_rebuild_unknown_key_error, (type(self), self.args[0] if self.args else "",
                                             self.key, self.available, self.suggestions))

    @classmethod
    def for_key(cls, what: str, key: str, available: Iterable[str], *,
                where: str = "in the log", noun: str = "Keys found") -> "UnknownKeyError":
        """``"<what> '<key>' is not <where>. Did you mean ...? <noun> (N): ..."``."""
        keys = sorted({str(k) for k in available})
        suggestions = close_matches(key, keys)
        hint = did_you_mean(key, keys)
        return cls(f"{what} {key!r} is not {where}.{hint} {noun} ({len(keys)}): "
                   f"{format_key_list(keys)}.", key=key, available=keys,
                   suggestions=suggestions)


def _rebuild_unknown_key_error(cls, message, key, available, suggestions):
    return cls(message, key=key, available=available, suggestions=suggestions)


def _missing_key_error(what: str, key: str, available: Iterable[str]) -> UnknownKeyError:
    return UnknownKeyError.for_key(f"The {what} key", key, available)


def detect_preset(keys: Iterable[str]) -> str | None:
    """The preset whose key names the log uses, or None when none matches.

    A ``train_reward`` key means satmon's own tidy names (no trainer logs that key; a tidy
    export with ``--all-metrics`` also holds the original keys of a verl or TRL log). Then verl
    keys, the most specific (``critic/``, ``actor/``, ``val-core/``); then OpenRLHF's, only by
    its evaluation keys ``[eval/]eval_<ds>_pass1`` (its ``train/reward`` is also what
    transformers' TensorBoard callback writes for a TRL run, so it decides nothing); satmon's
    other tidy names next; TRL's last, since its ``reward`` and ``entropy`` are generic words.

    >>> detect_preset(["train/reward", "eval/eval_aime_pass1"])
    'openrlhf'
    >>> detect_preset(["train/reward"]) is None
    True
    """
    keys = set(keys)
    if TIDY_TRAIN in keys:
        return "tidy"
    if any(k.startswith(("critic/score/", "critic/rewards/", "val-core/", "val/test_score/"))
           for k in keys):
        return "verl"
    if any(_OPENRLHF_EVAL.match(k) for k in keys):
        return "openrlhf"
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
    >>> heldout_name("eval/eval_aime_pass1", "openrlhf")
    'aime'
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
    if preset in (None, "auto", "openrlhf"):
        m = _OPENRLHF_EVAL.match(key)
        if m:
            return m.group("ds")
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
    heldout_sizes: ``(name, key)`` pairs: the series holding the sample size of held-out
        series ``name`` (see "Held-out sample sizes" in the module docstring).
    """

    preset: str | None
    train_key: str | None
    heldout: tuple[tuple[str, str], ...] = ()
    aux: tuple[tuple[str, str], ...] = ()
    heldout_sizes: tuple[tuple[str, str], ...] = ()

    def used_keys(self) -> set[str]:
        """Every log key these series are read from (sizes included)."""
        used = {k for _, k in (*self.heldout, *self.aux, *self.heldout_sizes)}
        if self.train_key is not None:
            used.add(self.train_key)
        return used

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "train_key": self.train_key,
                "heldout_keys": dict(self.heldout), "aux_keys": dict(self.aux),
                "heldout_size_keys": dict(self.heldout_sizes)}


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
        ``"auto"`` (detect), ``"trl"``, ``"verl"``, ``"tidy"`` or ``"openrlhf"``; see the
        module docstring.
    train_key:
        The training-reward key, overriding the preset.
    heldout_keys:
        Held-out keys overriding the preset: a list of keys (names derived from the key by
        the preset's rules, e.g. ``eval_rewards/acc/mean`` -> ``acc``) or ``{name: key}``.
        Stored as a tuple of ``(name, key)`` pairs.
    aux_keys:
        ``{canonical name: key}`` overriding the preset for those auxiliaries; names must be in
        ``AUX_NAMES``. Stored as a tuple of pairs.
    all_keys:
        Also read every other numeric key of a log as an auxiliary series under its own key
        (the readers do this; ``satmon export --all-metrics`` uses it). Default False.
    """

    preset: str = "auto"
    train_key: str | None = None
    heldout_keys: Any = None
    aux_keys: Any = None
    all_keys: bool = False

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"The 'preset' parameter of KeyMap must be one of {list(PRESETS)}. "
                             f"Got {self.preset!r} instead.")
        _check_str("train_key", self.train_key)
        if not isinstance(self.all_keys, bool):
            raise TypeError(f"The 'all_keys' parameter of KeyMap must be a bool. "
                            f"Got {self.all_keys!r} instead.")
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
            # No name to compare with: suggest the keys that look like a reward.
            likely = sorted(k for k in present if re.search(r"reward|score|acc", k, re.I)
                            and not k.startswith(("eval_", "val", "test", "satmon/heldout/")))[:3]
            hint = (" Did you mean " + " or ".join(repr(k) for k in likely) + "?"
                    if likely else "")
            raise UnknownKeyError(
                "No training-reward key found"
                + (f" for preset {preset!r}" if preset else
                   " (the keys match none of the presets trl, verl, tidy, openrlhf)")
                + f"; pass train_key.{hint} Keys found ({len(present)}): "
                  f"{format_key_list(present)}.",
                key=None, available=present, suggestions=likely)

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
        sizes = []
        for name, key in heldout:
            size_key = heldout_size_key(name, key, present)
            if size_key is not None:
                sizes.append((name, size_key))
        return ResolvedKeys(preset=preset, train_key=train_key, heldout=tuple(heldout),
                            aux=tuple(aux), heldout_sizes=tuple(sizes))

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
        """The configuration as plain data (``all_keys`` only when set)."""
        out = {"preset": self.preset, "train_key": self.train_key,
               "heldout_keys": None if self.heldout_keys is None else dict(self.heldout_keys),
               "aux_keys": None if self.aux_keys is None else dict(self.aux_keys)}
        if self.all_keys:
            out["all_keys"] = True
        return out


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
    if preset == "openrlhf":
        return next((k for k in ("train/reward", "reward") if k in present), None)
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
                if k.startswith(TIDY_HELDOUT + "/") and not _is_size_key(k, present)]
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
    if preset == "openrlhf":
        by_ds: dict[str, str] = {}
        for k in sorted(present):
            m = _OPENRLHF_EVAL.match(k)
            # The prefixed TensorBoard spelling wins over a bare one of the same source.
            if m and (m.group("ds") not in by_ds or k.startswith("eval/")):
                by_ds[m.group("ds")] = k
        if len(by_ds) > 1:
            by_ds.pop("avg", None)  # the mean over the sources: only when it is all there is
        return sorted(by_ds.items())
    return []
