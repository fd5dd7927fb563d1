"""Deferred imports of optional dependencies.

The core of satmon must import quickly and without torch, transformers, trl, mlflow or
matplotlib, so every optional package is loaded at its point of use through :func:`require`,
which turns a missing package into an error that names the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# Which extra of `pip install satmon[...]` provides each optional top-level module.
_EXTRA_FOR = {
    "torch": "hf",
    "transformers": "hf",
    "trl": "hf",
    "accelerate": "hf",
    "datasets": "hf",
    "tokenizers": "hf",
    "mlflow": "mlflow",
    "matplotlib": "plot",
    "tensorboard": "tensorboard",
    "tqdm": "progress",
}


def require(module: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise an ImportError that says how to install it.

    Parameters
    ----------
    module:
        Dotted module name, e.g. ``"matplotlib.pyplot"``.
    feature:
        What the caller wanted to do, used in the error message.

    Returns
    -------
    The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".", 1)[0]
        extra = _EXTRA_FOR.get(top, "all")
        what = f" for {feature}" if feature else ""
        raise ImportError(
            f"satmon needs the '{top}' package{what}, and it could not be imported ({exc}). "
            f"Install it with: pip install 'satmon[{extra}]'"
        ) from exc


def is_available(module: str) -> bool:
    """Return True when ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None
