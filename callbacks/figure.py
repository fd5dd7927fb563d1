"""The figure the callback logs at a halt and at the end: curves, phases, decisions."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from satmon._optional import require

_ACTION_COLORS = {"flag": "#e6a700", "halt": "#c0392b"}


def monitor_figure(rows: Sequence[Mapping[str, Any]], *, title: str = "satmon") -> Any:
    """Plot the monitored run: training reward, held-out series, post-saturation phase, flags.

    Parameters
    ----------
    rows:
        The callback's history rows (``step``, ``train_reward``, ``heldout`` ``{name: value}``,
        ``action``, ``reason``, ``phase``, ``t_sat_estimate``).
    title:
        Figure title (the callback puts the latest decision there).

    Returns
    -------
    A ``matplotlib.figure.Figure`` (not attached to pyplot, so no GUI and no global state).
    """
    mfig = require("matplotlib.figure", feature="satmon figures")
    fig = mfig.Figure(figsize=(8.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    train = [(r["step"], r["train_reward"]) for r in rows
             if _finite(r.get("train_reward"))]
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], lw=1.2, color="#34495e",
                label="training reward")
    names = sorted({n for r in rows for n in (r.get("heldout") or {})})
    for name in names:
        pts = [(r["step"], r["heldout"][name]) for r in rows
               if _finite((r.get("heldout") or {}).get(name))]
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3.5, lw=1.0,
                    label=f"held-out {name}")
    t_sat = next((r.get("t_sat_estimate") for r in reversed(rows)
                  if r.get("phase") == "post_saturation" and _finite(r.get("t_sat_estimate"))),
                 None)
    last_step = max((r["step"] for r in rows), default=0)
    if t_sat is not None and t_sat <= last_step:
        ax.axvspan(t_sat, last_step, color="#f5b7b1", alpha=0.35, lw=0,
                   label=f"post-saturation (t_sat~{t_sat:.0f})")
    seen: set[tuple[Any, Any]] = set()
    for r in rows:
        action = r.get("action")
        if action in _ACTION_COLORS and (action, r.get("reason")) not in seen:
            seen.add((action, r.get("reason")))
            ax.axvline(r["step"], color=_ACTION_COLORS[action], ls="--", lw=1.0,
                       label=f"{action} ({r.get('reason')}) at {r['step']}")
    ax.set_xlabel("step")
    ax.set_ylabel("reward / accuracy")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
