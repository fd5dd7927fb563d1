"""The package layers are true: each folder imports only from the layers below it.

``satmon/`` (core: numpy/scipy) < ``callbacks/`` (transformers) and ``analysis/`` (readers,
reports, plots) < ``lab/``, ``watch/``, ``probe/`` < ``cli/`` (the command line, which imports
every command module). Checked on the source (every ``import``, ``from ... import`` and every
``importlib.import_module`` / ``require`` of a ``satmon.`` module, also inside functions), so
an upward import cannot hide behind a lazy import or the optional-import helper.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# folder -> the satmon subpackages its modules must not import
FORBIDDEN = {
    "satmon": ("satmon.callbacks", "satmon.analysis", "satmon.lab", "satmon.watch",
               "satmon.probe", "satmon.cli"),
    "analysis": ("satmon.callbacks", "satmon.lab", "satmon.watch", "satmon.probe",
                 "satmon.cli"),
    "callbacks": ("satmon.lab", "satmon.watch", "satmon.probe", "satmon.cli"),
    "lab": ("satmon.watch", "satmon.cli"),
    "watch": ("satmon.lab", "satmon.probe", "satmon.cli"),
    "probe": ("satmon.watch", "satmon.cli"),
}


def _imported(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                    if node.module == "satmon"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "require"):
                out.append((node.lineno, node.args[0].value))
    return out


def _violations(folder: str) -> list[str]:
    bad = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for line, module in _imported(path):
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[folder]):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_upward_imports(folder):
    assert (REPO / folder).is_dir(), f"no {folder}/ folder: update FORBIDDEN"
    assert _violations(folder) == []


def test_the_checker_sees_lazy_and_helper_imports(tmp_path):
    probe = tmp_path / "m.py"
    probe.write_text("def f():\n    from satmon.analysis import read_run\n"
                     "    require('satmon.lab.demo', feature='x')\n"
                     "    importlib.import_module('satmon.cli')\n")
    assert [m for _, m in _imported(probe)] == ["satmon.analysis", "satmon.lab.demo",
                                                "satmon.cli"]
