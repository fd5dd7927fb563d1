"""The figure the callback logs at a halt and at the end, drawn by :mod:`satmon.analysis.plots`.

The callback's history rows are :class:`satmon.decision.UpdateRecord` dicts; they become a
:class:`satmon.Run` (training reward, held-out series with their sample sizes) and a
:class:`satmon.analysis.report.ReplaySummary` (the live P(saturated) and P(held-out gain)
traces and the halt), and :func:`satmon.analysis.plots.plot_run` draws them with the same
vocabulary as ``satmon plot`` and the report: one plotting code for every figure satmon makes.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Mapping, Sequence

from satmon._optional import require


def monitor_figure(rows: Sequence[Mapping[str, Any]], *, title: str = "satmon",
                   halt_step: int | None = None, reason: str | None = None) -> Any:
    """Plot the monitored run so far.

    Parameters
    ----------
    rows:
        The callback's history rows (:class:`satmon.decision.UpdateRecord` dicts).
    title:
        Figure title (the callback puts the latest decision there).
    halt_step, reason:
        Where and why the callback halted training (None: it did not).

    Returns
    -------
    A matplotlib figure; the caller logs it and closes it (:func:`close_figure`).
    """
    from satmon.analysis import plots, report
    from satmon.run import Run

    train = [(r["step"], r["train_reward"]) for r in rows if _finite(r.get("train_reward"))]
    names = sorted({n for r in rows for n in (r.get("heldout") or {})})
    heldout = {}
    for name in names:
        pts = [(r["step"], r["heldout"][name], (r.get("heldout_n") or {}).get(name))
               for r in rows if _finite((r.get("heldout") or {}).get(name))]
        if pts:
            sizes = {n for _, _, n in pts if n}
            heldout[name] = ([s for s, _, _ in pts], [v for _, v, _ in pts],
                             sizes.pop() if len(sizes) == 1 else None)
    run = Run(train_reward=([s for s, _ in train], [v for _, v in train]), heldout=heldout,
              name=title)
    summary = report.ReplaySummary.from_records(list(rows), halt_step=halt_step, reason=reason)
    wrapped = "\n".join(textwrap.wrap(title, 100)[:3])
    fig, _ = plots.plot_run(run, replay=summary, fit=None, title=wrapped, end_margin=0)
    return fig


def close_figure(fig: Any) -> None:
    """Release a figure made by :func:`monitor_figure` (pyplot keeps it until closed)."""
    require("matplotlib.pyplot", feature="satmon figures").close(fig)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
