"""The protocol every online detector follows, and the event it returns.

A detector is fed one value at a time with ``update(value, step)`` and returns an
:class:`Event` when it detects something, else ``None``. Its running state is private and
exposed through read-only properties; ``state_dict()`` returns JSON-safe primitives with a
``version`` key and ``load_state_dict()`` restores them, so a stream split anywhere and resumed
from the saved state produces the same events as the uninterrupted stream.

Bad input policy shared by all detectors:

* ``None``, NaN and +/-inf values are skipped (the update returns ``None`` and counts the skip
  in ``n_skipped``); a value that is not a number raises ``TypeError``.
* A step that is not greater than the last accepted step (a resumed run logging steps again, or
  an out-of-order record) is skipped and counted in ``n_stale``: a detector's statistics are
  defined over increasing steps, and replaying an old step would count it twice.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from satmon.results import json_safe


@dataclass(frozen=True)
class Event:
    """Something a detector found at one step.

    Attributes
    ----------
    step: the step whose update produced the event.
    kind: what was found (``"plateau"``, ``"changepoint"``, ``"rise"``, ``"drop"`` ...).
    detector: the detector class name.
    statistic: the number that crossed its threshold.
    location: the step at which the change is estimated to have happened (may precede ``step``).
    details: further named numbers.
    """

    step: int
    kind: str
    detector: str
    statistic: float
    location: float = math.nan
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"step": self.step, "kind": self.kind, "detector": self.detector,
                          "statistic": self.statistic, "location": self.location,
                          "details": dict(self.details)})


def check_number(value: Any, name: str, owner: str, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 integer: bool = False) -> None:
    """Raise a ValueError/TypeError naming ``owner.name`` unless ``value`` is in range."""
    kind = "an int" if integer else "a float"
    rng = []
    if low is not None:
        rng.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        rng.append(f"<= {high:g}")
    want = f"{kind} {' and '.join(rng)}".strip()
    ok_type = (isinstance(value, int) if integer else isinstance(value, (int, float)))
    if isinstance(value, bool) or not ok_type:
        raise TypeError(f"The '{name}' parameter of {owner} must be {want}. "
                        f"Got {value!r} ({type(value).__name__}) instead.")
    v = float(value)
    bad = (not math.isfinite(v)
           or (low is not None and (v <= low if low_open else v < low))
           or (high is not None and v > high))
    if bad:
        raise ValueError(f"The '{name}' parameter of {owner} must be {want}. Got {value!r} instead.")


def as_finite(value: Any, owner: str) -> float | None:
    """The value as a float, or None when it is None/NaN/inf (a skip); TypeError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (str, bytes)):
        # float("0.3") would parse, but a string here means a wrongly wired metric.
        raise TypeError(f"{owner}.update needs a number or None as its value. "
                        f"Got the string {value!r} instead.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}.update needs a number or None as its value. "
                        f"Got {value!r} ({type(value).__name__}) instead.") from None
    return v if math.isfinite(v) else None


def as_step(step: Any, owner: str) -> int:
    """The step as an int >= 0, or a TypeError/ValueError saying what a step must be."""
    if isinstance(step, bool) or step is None:
        raise TypeError(f"{owner}.update needs a whole-number step >= 0. Got {step!r} instead.")
    try:
        f = float(step)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}.update needs a whole-number step >= 0. "
                        f"Got {step!r} ({type(step).__name__}) instead.") from None
    if not math.isfinite(f) or not f.is_integer() or f < 0:
        raise ValueError(f"{owner}.update needs a whole-number step >= 0. Got {step!r} instead.")
    return int(f)


class Detector(ABC):
    """Base class: parameter storage, the skip policy, and state (de)serialisation.

    Subclasses store their keyword-only parameters under their own names, list them in
    ``_PARAMS``, list their running-state attributes in ``_STATE`` (JSON-safe values only),
    implement ``_reset()`` and ``_update(value, step)``.
    """

    _VERSION = 1
    _PARAMS: tuple[str, ...] = ()
    _STATE: tuple[str, ...] = ()

    def reset(self) -> None:
        """Forget everything seen so far (parameters are kept)."""
        self._n = 0
        self._n_skipped = 0
        self._n_stale = 0
        self._last_step = -1
        self._reset()

    @abstractmethod
    def _reset(self) -> None:
        """Build the detector's running state (called by :meth:`reset`)."""

    @abstractmethod
    def _update(self, value: float, step: int) -> Event | None:
        """Consume one finite value at a fresh step; return an event or None."""

    def update(self, value: Any, step: Any) -> Event | None:
        """Feed one value observed at ``step``; return an :class:`Event` or None.

        None/NaN/inf values and steps not above the last accepted step are skipped (see the
        module docstring).
        """
        name = type(self).__name__
        s = as_step(step, name)
        v = as_finite(value, name)
        if v is None:
            self._n_skipped += 1
            return None
        if s <= self._last_step:
            self._n_stale += 1
            return None
        self._last_step = s
        self._n += 1
        return self._update(v, s)

    @property
    def n_seen(self) -> int:
        """Accepted (finite, in-order) values."""
        return self._n

    @property
    def n_skipped(self) -> int:
        """Values skipped because they were None, NaN or infinite."""
        return self._n_skipped

    @property
    def n_stale(self) -> int:
        """Values skipped because their step was not above the last accepted step."""
        return self._n_stale

    @property
    def last_step(self) -> int:
        """The last accepted step (-1 before any)."""
        return self._last_step

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, by name."""
        return {p: getattr(self, p) for p in self._PARAMS}

    def state_dict(self) -> dict[str, Any]:
        """The running state as JSON-safe primitives (with ``version`` and ``params``)."""
        state = {k: _to_primitive(getattr(self, "_" + k)) for k in self._STATE}
        return {"version": self._VERSION, "detector": type(self).__name__,
                "params": _to_primitive(self.get_params()),
                "n": self._n, "n_skipped": self._n_skipped, "n_stale": self._n_stale,
                "last_step": self._last_step, "state": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the running state saved by :meth:`state_dict` of the same detector class.

        Keys missing from an older state keep their reset values, so old checkpoints load.
        """
        if not isinstance(state, dict) or "version" not in state:
            raise ValueError(f"{type(self).__name__}.load_state_dict needs a dict made by "
                             f"state_dict() (with a 'version' key). Got {type(state).__name__}.")
        if state.get("detector", type(self).__name__) != type(self).__name__:
            raise ValueError(f"This state was saved by {state['detector']}, not by "
                             f"{type(self).__name__}.")
        if int(state["version"]) > self._VERSION:
            raise ValueError(f"State version {state['version']} is newer than this "
                             f"{type(self).__name__} understands ({self._VERSION}).")
        self.reset()
        self._n = int(state.get("n", 0))
        self._n_skipped = int(state.get("n_skipped", 0))
        self._n_stale = int(state.get("n_stale", 0))
        self._last_step = int(state.get("last_step", -1))
        inner = state.get("state", {})
        for k in self._STATE:
            if k in inner:
                setattr(self, "_" + k, self._restore(k, inner[k]))

    def _restore(self, key: str, value: Any) -> Any:
        """Turn one saved state value back into its running form (subclasses override)."""
        return _from_primitive(value)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _to_primitive(value: Any) -> Any:
    """JSON-safe copy that keeps non-finite floats distinguishable (as strings)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return {"__array__": [_to_primitive(v) for v in value.tolist()],
                "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {str(k): _to_primitive(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, deque)):
        return [_to_primitive(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        if math.isfinite(f):
            return f
        return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _from_primitive(value: Any) -> Any:
    import numpy as np

    if isinstance(value, dict):
        if "__array__" in value:
            return np.asarray([_from_primitive(v) for v in value["__array__"]],
                              dtype=value.get("dtype", "float64"))
        return {k: _from_primitive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_primitive(v) for v in value]
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


to_primitive = _to_primitive
from_primitive = _from_primitive
