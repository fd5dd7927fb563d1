"""The small config file of a multi-run report: benchmark groups and paired runs.

A report averages held-out gains over *groups* of benchmarks (the paper's in-domain and
out-of-domain averages) and computes the data gap ``G_sat(n', n)`` for *pairs* of runs that
differ only in the amount of training data. Both come from a JSON or TOML file; loading only
parses data (``json`` / ``tomllib``), it never executes anything from the file.

TOML form::

    [groups]
    in_domain = ["math500", "gsm8k"]
    out_of_domain = ["gpqa", "mmlu_pro"]

    [[pairs]]
    large = "qwen-math-64"     # run name of the large-data run (n')
    small = "qwen-math-8"      # run name of the small-data run (n)
    label = "Qwen Math 64 vs 8"   # optional

JSON form: the same structure, ``{"groups": {...}, "pairs": [{"large": ..., "small": ...}]}``.
Runs are matched by their name (``Run.name``; ``--name`` or the reader's default).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TOP_LEVEL_KEYS = ("groups", "pairs")
_PAIR_KEYS = ("large", "small", "label")


@dataclass(frozen=True)
class RunPair:
    """A large-data run and a small-data run compared by ``G_sat`` at the small run's t_sat."""

    large: str
    small: str
    label: str = ""

    @property
    def display(self) -> str:
        return self.label or f"{self.large} vs {self.small}"

    def to_dict(self) -> dict[str, str]:
        return {"large": self.large, "small": self.small, "label": self.label}


@dataclass(frozen=True)
class GroupsConfig:
    """Benchmark groups (``{group: (benchmark, ...)}``) and run pairs for ``G_sat``.

    Example
    -------
    >>> cfg = GroupsConfig.from_dict({"groups": {"in_domain": ["math"]},
    ...                               "pairs": [{"large": "n64", "small": "n8"}]})
    >>> cfg.groups["in_domain"], cfg.pairs[0].display
    (('math',), 'n64 vs n8')
    """

    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    pairs: tuple[RunPair, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "groups config") -> "GroupsConfig":
        """Validate parsed JSON/TOML data; errors name the file, the entry and what is allowed."""
        if not isinstance(data, Mapping):
            raise TypeError(f"{source}: the top level must be a table/object with keys "
                            f"{list(_TOP_LEVEL_KEYS)}. Got {type(data).__name__} instead.")
        unknown = sorted(set(data) - set(_TOP_LEVEL_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown top-level key(s) {unknown}; "
                             f"allowed: {list(_TOP_LEVEL_KEYS)}.")
        raw_groups = data.get("groups", {})
        if not isinstance(raw_groups, Mapping):
            raise TypeError(f"{source}: 'groups' must map a group name to a list of benchmark "
                            f"names. Got {type(raw_groups).__name__} instead.")
        groups: dict[str, tuple[str, ...]] = {}
        for name, members in raw_groups.items():
            if isinstance(members, str) or not isinstance(members, Sequence) \
                    or not all(isinstance(m, str) for m in members):
                raise TypeError(f"{source}: group '{name}' must be a list of benchmark names "
                                f"(strings). Got {members!r} instead.")
            if not members:
                raise ValueError(f"{source}: group '{name}' is empty; list at least one "
                                 "benchmark.")
            if len(set(members)) != len(members):
                raise ValueError(f"{source}: group '{name}' lists a benchmark twice: "
                                 f"{list(members)}.")
            groups[str(name)] = tuple(members)
        raw_pairs = data.get("pairs", [])
        if isinstance(raw_pairs, (str, Mapping)) or not isinstance(raw_pairs, Sequence):
            raise TypeError(f"{source}: 'pairs' must be a list of tables with keys 'large' and "
                            f"'small'. Got {type(raw_pairs).__name__} instead.")
        pairs: list[RunPair] = []
        for i, entry in enumerate(raw_pairs):
            where = f"{source}: pairs[{i}]"
            if not isinstance(entry, Mapping):
                raise TypeError(f"{where} must be a table with keys 'large' and 'small'. "
                                f"Got {entry!r} instead.")
            bad = sorted(set(entry) - set(_PAIR_KEYS))
            if bad:
                raise ValueError(f"{where} has unknown key(s) {bad}; allowed: {list(_PAIR_KEYS)}.")
            for key in ("large", "small"):
                if not isinstance(entry.get(key), str) or not entry.get(key):
                    raise ValueError(f"{where} needs '{key}': the name of the "
                                     f"{key}-data run. Got {entry.get(key)!r} instead.")
            label = entry.get("label", "")
            if not isinstance(label, str):
                raise TypeError(f"{where}: 'label' must be a string. Got {label!r} instead.")
            if entry["large"] == entry["small"]:
                raise ValueError(f"{where} pairs run '{entry['large']}' with itself.")
            pairs.append(RunPair(entry["large"], entry["small"], label))
        return cls(groups=groups, pairs=tuple(pairs))

    def to_dict(self) -> dict[str, Any]:
        return {"groups": {k: list(v) for k, v in self.groups.items()},
                "pairs": [p.to_dict() for p in self.pairs]}


def load_groups(path: str | Path) -> GroupsConfig:
    """Read a groups/pairs config from a ``.json`` or ``.toml`` file.

    The format follows the suffix; any other suffix is tried as JSON, then TOML, and an error
    names both attempts. Nothing in the file is executed.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Groups config '{p}' does not exist or is not a file.")
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    if suffix == ".json":
        return GroupsConfig.from_dict(_parse_json(text, p), source=str(p))
    if suffix == ".toml":
        return GroupsConfig.from_dict(_parse_toml(text, p), source=str(p))
    errors = []
    for parse in (_parse_json, _parse_toml):
        try:
            return GroupsConfig.from_dict(parse(text, p), source=str(p))
        except ValueError as exc:  # parse errors are ValueErrors; try the other format
            errors.append(str(exc))
    raise ValueError(f"Groups config '{p}' is neither JSON nor TOML (suffix '{suffix}'): "
                     + " | ".join(errors))


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Groups config '{path}' is not valid JSON: {exc}.") from None


def _parse_toml(text: str, path: Path) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 has no tomllib
        from satmon._optional import require

        tomllib = require("tomli", feature="reading TOML groups files on Python 3.10")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"Groups config '{path}' is not valid TOML: {exc}.") from None
