"""Learned numbers as data: JSON files shipped in the package, checked against the code on load.

Each file is ``{"fields": [...], ..., "provenance": {...}}``; ``fields`` must equal the names the
code expects (the prior's hyperparameters, a model's feature list), so a file written for other
code fails loudly instead of being applied to the wrong quantities.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=None)
def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def load(name: str, expected_fields: list[str], package: str = "satmon.monitor"
         ) -> dict[str, Any]:
    """The parsed data file ``name`` of ``package``; ValueError unless its ``fields`` equal
    ``expected_fields``."""
    data = json.loads(_read(package, name))
    got = data.get("fields")
    if got != list(expected_fields):
        where = "/".join(package.split(".")) + "/" + name
        raise ValueError(f"{where} was written for the fields {got}, but this code expects "
                         f"{list(expected_fields)}: rerun its calibration script (named in its "
                         "'provenance').")
    return data


__all__ = ["load"]
