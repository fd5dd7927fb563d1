"""The examples in the core modules' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

CORE_MODULES = ["satmon.run", "satmon.saturation", "satmon.datasets", "satmon.monitor.engine",
                "satmon.monitor.posterior", "satmon.monitor._grow",
                "satmon.monitor.config", "satmon.monitor.calibration"]


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
