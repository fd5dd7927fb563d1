"""Figures of training runs: phases, t_sat, held-out curves, fitted curve, monitor replay.

Every function imports matplotlib lazily (``pip install 'satmon[plot]'``), selects the Agg
backend when pyplot has not been imported yet (so plotting works on headless training nodes),
returns ``(fig, axes)`` and never calls ``plt.show()``: the caller saves, shows or embeds.

:func:`plot_run` draws one run: the training reward with the pre-saturation phase shaded, the
exact t_sat as a vertical line, the held-out series on a second y axis, the fitted saturation
curve with its interval, the monitor's halt marker and, below, P(saturated) from the monitor
replay as a colour strip. :func:`plot_grid` lays many runs out in rows and columns chosen by
metadata keys (e.g. model x setting), like the paper's figures.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from satmon._optional import require
from satmon.run import Run
from satmon.saturation import SaturationAnalysis, analyze_saturation

PRE_SATURATION_COLOR = "#9ecae1"
TSAT_COLOR = "black"
HALT_COLOR = "#d62728"
FIT_COLOR = "#ff7f0e"


def _pyplot() -> Any:
    """pyplot, on the Agg backend unless the user already chose one by importing pyplot."""
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib = require("matplotlib", feature="plots")
        matplotlib.use("Agg")
    return require("matplotlib.pyplot", feature="plots")


class RunAxes(NamedTuple):
    """The axes of a :func:`plot_run` figure.

    ``reward``: training reward, phases, t_sat line, fit and halt marker; ``heldout``: held-out
    accuracy (twin y axis of ``reward``, or ``reward`` itself with ``scale="shared"``; None
    when the run has no held-out series); ``strip``: P(saturated) from the monitor replay
    (None without a replay); ``gain``: P(held-out gain), the quantity the halt is decided on
    (None without one); both strips share one colour bar.
    """

    reward: Any
    heldout: Any
    strip: Any
    gain: Any = None


class CurveBand(NamedTuple):
    """A fitted training-reward curve to overlay: its steps, centre and interval."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    label: str = "fitted saturation curve"
    band_label: str = "fit interval"


def _replay_trace(replay: Any) -> tuple[np.ndarray, np.ndarray, int | None, str | None]:
    """(steps, P(saturated), halt step, reason) from a ReplaySummary or a ReplayResult."""
    s = _summary(replay)
    if s is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0), None, None
    return np.asarray(s.steps), np.asarray(s.p_saturated, dtype=float), s.halt_step, s.reason


def _summary(replay: Any) -> Any:
    if replay is None or (hasattr(replay, "p_saturated") and hasattr(replay, "steps")):
        return replay
    from satmon.analysis.report import summarize_replay

    return summarize_replay(replay)


def _gain_trace(replay: Any) -> np.ndarray:
    s = _summary(replay)
    gain = getattr(s, "p_heldout_gain", None)
    if gain is None:
        return np.zeros(0)
    return np.asarray(gain, dtype=float)


SCALES = ("auto", "shared", "independent")


def _unit_range(*arrays: Any) -> bool:
    """Whether every finite value lies in [0, 1] (accuracies, rewards of a 0/1 verifier)."""
    vals = [np.asarray(a, dtype=float) for a in arrays if a is not None and len(a)]
    vals = [v[np.isfinite(v)] for v in vals]
    vals = [v for v in vals if v.size]
    return bool(vals) and all(v.min() >= 0.0 and v.max() <= 1.0 for v in vals)


UNIT_LIMITS = (-0.03, 1.03)


def _heldout_label(name: str) -> str:
    return "held-out" if name in ("heldout", "heldout_acc") else f"held-out: {name}"


def forecast_band(forecast: Any, steps: Any) -> CurveBand | None:
    """The curve of a :class:`satmon.curves.SaturationForecast` over ``steps``, with a band.

    The centre is the BIC-weighted mix of the accepted saturating families; the band is the
    pointwise envelope of those families (the between-family spread, the part of the
    uncertainty a single fit's covariance misses). None when no family was accepted.
    """
    weights = dict(getattr(forecast, "weights", {}) or {})
    if not weights:
        return None
    s = np.asarray(steps, dtype=float)
    curves = {k: np.asarray(forecast.fits[k].predict(s), dtype=float) for k in weights}
    mean = sum(weights[k] * curves[k] for k in weights)
    stack = np.vstack(list(curves.values()))
    best = max(weights, key=weights.get)  # type: ignore[arg-type]
    label = (f"fitted saturation curve ({best})" if len(weights) == 1
             else f"fitted saturation curve ({len(weights)} families)")
    if len(weights) == 1:
        return CurveBand(s, mean, None, None, label)
    return CurveBand(s, mean, stack.min(axis=0), stack.max(axis=0), label,
                     "fit interval (family spread)")


def auto_fit(run: Run, *, eps: float = 0.99, end_margin: int = 50) -> Any:
    """Fit the engine's curve families to a finished run's training reward (None if too short)."""
    from satmon.curves import forecast_saturation

    tr = run.require_train_reward()
    try:
        # Point fits only: the figure shows the between-family spread, not bootstrap paths.
        with np.errstate(invalid="ignore"):  # quantiles of never-saturating paths are inf
            return forecast_saturation(tr.steps, tr.values, total_steps=int(tr.steps[-1]),
                                       eps=eps, end_margin=end_margin, bootstrap=0, n_paths=16)
    except ValueError:
        return None


def _fit_band(fit: Any, steps: np.ndarray) -> CurveBand | None:
    """Turn a curve fit into a band over ``steps``.

    Accepts a :class:`CurveBand`, a :class:`satmon.curves.SaturationForecast`, or any object
    with ``predict(steps)`` and, optionally, ``interval(steps) -> (low, high)``.
    """
    if fit is None:
        return None
    if isinstance(fit, CurveBand):
        return fit
    if hasattr(fit, "fits") and hasattr(fit, "weights"):
        return forecast_band(fit, steps)
    if not hasattr(fit, "predict"):
        raise TypeError("The 'fit' argument must be a CurveBand or have a predict(steps) method. "
                        f"Got {type(fit).__name__} instead.")
    mean = np.asarray(fit.predict(steps), dtype=float)
    low = high = None
    if hasattr(fit, "interval"):
        low, high = (np.asarray(x, dtype=float) for x in fit.interval(steps))
    label = getattr(fit, "family", None)
    return CurveBand(np.asarray(steps), mean, low, high,
                     f"fitted {label} curve" if label else "fitted saturation curve")


def plot_run(
    run: Run,
    *,
    analysis: SaturationAnalysis | None = None,
    replay: Any = None,
    fit: Any = None,
    heldout: Sequence[str] | None = None,
    eps: float = 0.99,
    end_margin: int = 50,
    title: str | None = None,
    figsize: tuple[float, float] = (8.0, 4.6),
    legend: bool = True,
    scale: str = "auto",
) -> tuple[Any, RunAxes]:
    """Plot one run's training reward and held-out curves with its saturation phases.

    Parameters
    ----------
    run:
        The run (needs a training reward).
    analysis:
        Its exact analysis; computed with ``eps`` / ``end_margin`` when None.
    replay:
        A monitor replay (:class:`~satmon.analysis.report.ReplaySummary` or
        :class:`satmon.replay.ReplayResult`): adds the halt marker and the P(saturated) strip.
    fit:
        A fitted training-reward curve drawn with its interval: ``"auto"`` fits the engine's
        families (:func:`satmon.curves.forecast_saturation`) to the whole run; or a
        :class:`satmon.curves.SaturationForecast`, a :class:`CurveBand`, or an object with
        ``predict`` and optionally ``interval``.
    heldout:
        Held-out series to draw (default: all).
    title:
        Figure title (default: the run name).
    scale:
        How the reward and held-out y axes relate, so a few points of held-out change are not
        drawn as large as the whole reward climb: ``"auto"`` (default) puts every series whose
        values lie in [0, 1] on a [0, 1] axis (a reward outside [0, 1] keeps its own range);
        ``"shared"`` draws held-out accuracy on the reward axis; ``"independent"`` zooms each
        axis to its data and writes the held-out range into its axis label.

    Returns
    -------
    ``(fig, RunAxes)``.
    """
    if scale not in SCALES:
        raise ValueError(f"The 'scale' parameter must be one of {list(SCALES)}. "
                         f"Got {scale!r} instead.")
    plt = _pyplot()
    tr = run.require_train_reward()
    if analysis is None:
        analysis = analyze_saturation(run, eps=eps, end_margin=end_margin)
    names = list(run.heldout) if heldout is None else list(heldout)
    for n in names:
        run.require_heldout(n)
    p_steps, p_sat, halt_step, reason = _replay_trace(replay)
    p_gain = _gain_trace(replay)
    has_strip = p_steps.size > 0
    has_gain = has_strip and p_gain.size == p_steps.size and bool(np.isfinite(p_gain).any())
    gain_ax = None
    if has_gain:
        fig, (ax, strip, gain_ax) = plt.subplots(
            3, 1, figsize=figsize, sharex=True,
            gridspec_kw={"height_ratios": [6, 0.6, 0.6], "hspace": 0.1})
    elif has_strip:
        fig, (ax, strip) = plt.subplots(
            2, 1, figsize=figsize, sharex=True,
            gridspec_kw={"height_ratios": [6, 0.7], "hspace": 0.08})
    else:
        fig, ax = plt.subplots(figsize=figsize)
        strip = None

    _draw_phases(ax, analysis)
    ax.plot(tr.steps, tr.values, color="C0", lw=1.0, label="training reward")
    if isinstance(fit, str):
        if fit != "auto":
            raise ValueError(f"The 'fit' parameter must be 'auto', None or a fitted curve. "
                             f"Got {fit!r} instead.")
        fit = auto_fit(run, eps=eps, end_margin=end_margin)
    band = _fit_band(fit, tr.steps)
    if band is not None:
        ax.plot(band.steps, band.mean, color=FIT_COLOR, lw=1.6, label=band.label)
        if band.low is not None and band.high is not None:
            # A filled band with drawn edges: visible even where the families nearly agree.
            ax.fill_between(band.steps, band.low, band.high, color=FIT_COLOR, alpha=0.35,
                            lw=0, label=band.band_label)
            for edge in (band.low, band.high):
                ax.plot(band.steps, edge, color=FIT_COLOR, lw=0.7, ls="--", alpha=0.9)
    if halt_step is not None:
        _draw_halt(ax, tr, halt_step, reason)
    ax.set_ylabel("training reward")
    starts = [int(tr.steps[0])] + [int(run.heldout[n].steps[0]) for n in names
                                   if len(run.heldout[n])]
    ax.set_xlim(min(starts), int(tr.steps[-1]))

    unit_reward = _unit_range(tr.values)
    unit_heldout = _unit_range(*(run.heldout[n].values for n in names))
    hax = None
    if names:
        hax = ax if scale == "shared" else ax.twinx()
        for i, n in enumerate(names):
            s = run.heldout[n]
            hax.plot(s.steps, s.values, color=f"C{(i + 2) % 10}", marker="o", ms=3, lw=1.2,
                     label=_heldout_label(n))
        if scale == "shared":
            ax.set_ylabel("training reward / held-out accuracy")
        elif scale == "independent":
            lo = min(float(np.nanmin(run.heldout[n].values)) for n in names)
            hi = max(float(np.nanmax(run.heldout[n].values)) for n in names)
            hax.set_ylabel(f"held-out accuracy (axis zoomed: {lo:.2f} to {hi:.2f})")
        else:
            hax.set_ylabel("held-out accuracy")
            if unit_heldout:
                hax.set_ylim(*UNIT_LIMITS)
    else:
        ax.text(0.99, 0.02, "no held-out series", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=8, color="0.4")
    if scale == "auto" and unit_reward:
        ax.set_ylim(*UNIT_LIMITS)
    elif scale == "shared" and unit_reward and (unit_heldout or not names):
        ax.set_ylim(*UNIT_LIMITS)

    image = None
    if strip is not None:
        lo, hi = int(p_steps[0]), int(p_steps[-1])
        image = _prob_strip(strip, p_sat, lo, hi, "P(sat)")
        if math.isfinite(analysis.t_sat):
            strip.axvline(analysis.t_sat, color="white", ls="--", lw=1.0)
        if halt_step is not None:
            strip.axvline(halt_step, color=HALT_COLOR, lw=1.2)
        bottom = strip
        if gain_ax is not None:
            _prob_strip(gain_ax, p_gain, lo, hi, "P(gain)")  # grey before held-out evidence
            if halt_step is not None:
                gain_ax.axvline(halt_step, color=HALT_COLOR, lw=1.2)
            bottom = gain_ax
        bottom.set_xlabel("step")
        # One colour bar for the probability strips, right of them.
        cax = strip.inset_axes([1.005, 0.0 if gain_ax is None else -1.25, 0.012,
                                1.0 if gain_ax is None else 2.25])
        bar = fig.colorbar(image, cax=cax, ticks=[0.0, 0.5, 1.0])
        bar.ax.tick_params(labelsize=6)
        bar.set_label("probability", fontsize=6)
    else:
        ax.set_xlabel("step")

    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if hax is not None:
            h2, l2 = hax.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        # Outside the axes, right of the held-out axis label: curves stay unobscured.
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.12, 1.0), fontsize=7,
                  framealpha=0.9, borderaxespad=0.0)
    ax.set_title(title if title is not None else run.name, fontsize=10)
    return fig, RunAxes(ax, hax, strip, gain_ax)


def _prob_strip(ax: Any, p: np.ndarray, lo: int, hi: int, label: str) -> Any:
    values = np.ma.masked_invalid(np.asarray(p, dtype=float)[None, :])
    cmap = require("matplotlib", feature="plots").colormaps["viridis"].with_extremes(bad="0.85")
    image = ax.imshow(values, aspect="auto", cmap=cmap,
                      vmin=0.0, vmax=1.0, extent=(lo - 0.5, hi + 0.5, 0.0, 1.0),
                      interpolation="nearest")
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return image


def _draw_phases(ax: Any, analysis: SaturationAnalysis) -> None:
    """Shade the pre-saturation phase (steps first..t_sat-1) and mark t_sat."""
    first = analysis.first_step
    if analysis.saturated:
        t = analysis.t_sat
        ax.axvspan(first, t, color=PRE_SATURATION_COLOR, alpha=0.35, lw=0,
                   label=f"pre-saturation ({analysis.pre_saturation_length} steps)")
        ax.axvline(t, color=TSAT_COLOR, ls="--", lw=1.2, label=f"exact t_sat = {int(t)}")
    else:
        ax.axvspan(first, analysis.last_step, color=PRE_SATURATION_COLOR, alpha=0.35, lw=0,
                   label="pre-saturation (never saturated)")


def _draw_halt(ax: Any, tr: Any, halt_step: int, reason: str | None) -> None:
    i = int(np.clip(np.searchsorted(tr.steps, halt_step), 0, len(tr) - 1))
    ax.axvline(halt_step, color=HALT_COLOR, ls=":", lw=1.2)
    ax.plot([halt_step], [tr.values[i]], marker="X", ms=10, color=HALT_COLOR, ls="none",
            label=f"monitor halt at {halt_step}" + (f" ({reason})" if reason else ""))


def _short(text: str, limit: int = 40) -> str:
    """A panel title that fits: wrapped onto two lines, shortened in the middle beyond that,
    so both the start and the informative tail of long run names (file stems) stay."""
    if len(text) <= limit:
        return text
    if len(text) <= 2 * limit:
        cut = max(text.rfind(sep, 0, limit + 1) for sep in ("_", "-", "/", " ", "."))
        cut = cut + 1 if cut > limit // 2 else limit
        return text[:cut] + "\n" + text[cut:]
    half = limit - 2
    return text[:half] + "\n..." + text[-(half - 3):]


def _sort_key(value: Any) -> tuple[int, Any]:
    # Numbers sort numerically before strings, so "n=8" < "n=64" style keys stay in a sane order
    # when they are numbers and in alphabetical order otherwise.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def _meta(run: Run, key: str | None) -> Any:
    """Metadata ``key`` of ``run`` (``"name"``: its name); a KeyError listing the keys that
    exist, with close matches, when it has none."""
    if key is None:
        return None
    if key == "name":
        return run.name
    if key not in run.metadata:
        from satmon.analysis.readers.run_metadata import missing_metadata_error

        raise missing_metadata_error(run, key)
    return run.metadata[key]


def plot_grid(
    runs: Sequence[Run],
    *,
    rows: str | None = None,
    cols: str | None = None,
    hue: str | None = None,
    heldout: str | None = None,
    analyses: Mapping[str, SaturationAnalysis] | None = None,
    replays: Mapping[str, Any] | None = None,
    eps: float = 0.99,
    end_margin: int = 50,
    panel_size: tuple[float, float] = (3.6, 2.6),
    max_cols: int = 4,
) -> tuple[Any, np.ndarray]:
    """A grid of runs: rows and columns chosen by metadata keys, runs of a cell overlaid.

    Each run draws its training reward (solid), one held-out series (dashed, same colour), its
    exact t_sat (dotted vertical line) and, with a replay, its halt marker (x). Without ``rows``
    and ``cols`` the runs are laid out one per panel, ``max_cols`` to a row.

    Parameters
    ----------
    runs:
        Runs to draw.
    rows, cols:
        Metadata keys (``"name"`` for the run name) whose values index rows and columns.
    hue:
        Metadata key used as the legend label of runs sharing a cell (default: the run name).
    heldout:
        The held-out series to draw for every run (default: each run's first).
    analyses, replays:
        Precomputed exact analyses / monitor replays by run name.

    Returns
    -------
    ``(fig, axes)`` with ``axes`` a 2-d array (rows x columns) of matplotlib axes.
    """
    plt = _pyplot()
    runs = list(runs)
    if not runs:
        raise ValueError("plot_grid needs at least one run.")
    if rows is None and cols is None:
        ncols = min(max_cols, len(runs))
        cells = {(i // ncols, i % ncols): [r] for i, r in enumerate(runs)}
        row_vals: list[Any] = list(range((len(runs) + ncols - 1) // ncols))
        col_vals: list[Any] = list(range(ncols))
        titled = False
    else:
        keyed = [(_meta(r, rows), _meta(r, cols), r) for r in runs]
        row_vals = sorted({k[0] for k in keyed}, key=_sort_key)
        col_vals = sorted({k[1] for k in keyed}, key=_sort_key)
        cells = {}
        for rv, cv, r in keyed:
            cells.setdefault((row_vals.index(rv), col_vals.index(cv)), []).append(r)
        titled = True
    nrows, ncols = len(row_vals), len(col_vals)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols,
                                                     panel_size[1] * nrows),
                             squeeze=False, sharex=False,
                             # A faceted grid compares within a row (same model); a plain
                             # layout may mix [0, 1] rewards with unbounded proxy rewards.
                             sharey="row" if titled else False)
    analyses = dict(analyses or {})
    replays = dict(replays or {})
    for (i, j), ax in np.ndenumerate(axes):
        members = cells.get((i, j), [])
        if not members and not titled:
            ax.axis("off")  # the unused tail of a plain layout
            continue
        if not members:
            ax.text(0.5, 0.5, "no run", transform=ax.transAxes, ha="center", va="center",
                    color="0.5")
            ax.set_xticks([])
        for k, run in enumerate(members):
            _draw_cell_run(ax, run, f"C{k % 10}", hue, heldout, analyses.get(run.name),
                           replays.get(run.name), eps, end_margin)
        if titled:
            if i == 0 and cols is not None:
                ax.set_title(f"{cols} = {col_vals[j]}", fontsize=9)
            if j == 0 and rows is not None:
                ax.set_ylabel(f"{rows} = {row_vals[i]}\nreward / accuracy", fontsize=8)
        else:
            if members:
                ax.set_title(_short(members[0].name), fontsize=8)
            if j == 0:
                ax.set_ylabel("reward / accuracy", fontsize=8)
        if i == nrows - 1:
            ax.set_xlabel("step", fontsize=8)
        if (len(members) > 1 or (members and titled)) and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="lower right", framealpha=0.8)
        if members and all(_unit_range(*_cell_values(r, heldout)) for r in members):
            ax.set_ylim(*UNIT_LIMITS)
        ax.tick_params(labelsize=7)
    _style_legend(fig, any(r.heldout for r in runs), bool(replays))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig, axes


def _cell_values(run: Run, heldout: str | None) -> list[Any]:
    out = [] if run.train_reward is None else [run.train_reward.values]
    name = heldout if heldout is not None else next(iter(run.heldout), None)
    if name is not None and name in run.heldout:
        out.append(run.heldout[name].values)
    return out


def _style_legend(fig: Any, heldout: bool, halts: bool) -> None:
    """What the line styles mean, once for the whole grid (colours tell runs apart)."""
    mlines = require("matplotlib.lines", feature="plots")
    proxies = [mlines.Line2D([], [], color="0.3", lw=1.0, label="training reward")]
    if heldout:
        proxies.append(mlines.Line2D([], [], color="0.3", lw=1.1, ls="--", marker=".",
                                     label="held-out accuracy"))
    proxies.append(mlines.Line2D([], [], color="0.3", lw=1.1, ls=":", label="exact t_sat"))
    if halts:
        proxies.append(mlines.Line2D([], [], color=HALT_COLOR, marker="X", ls="none",
                                     label="satmon halt"))
    fig.legend(handles=proxies, loc="lower center", ncol=len(proxies), fontsize=7,
               frameon=False, bbox_to_anchor=(0.5, -0.02))


def _draw_cell_run(ax: Any, run: Run, color: str, hue: str | None, heldout: str | None,
                   analysis: SaturationAnalysis | None, replay: Any, eps: float,
                   end_margin: int) -> None:
    label = str(_meta(run, hue)) if hue else run.name
    if run.train_reward is None or len(run.train_reward) == 0:
        ax.text(0.5, 0.5, f"{run.name}: no training reward", transform=ax.transAxes,
                ha="center", va="center", fontsize=7, color="0.4")
        return
    tr = run.train_reward
    ax.plot(tr.steps, tr.values, color=color, lw=0.9, label=f"{label} reward")
    name = heldout if heldout is not None else next(iter(run.heldout), None)
    if name is not None:
        s = run.require_heldout(name)
        ax.plot(s.steps, s.values, color=color, lw=1.1, ls="--", marker=".", ms=3,
                label=f"{label} {name}")
    if analysis is None:
        analysis = analyze_saturation(run, eps=eps, end_margin=end_margin)
    if analysis.saturated:
        ax.axvspan(analysis.first_step, analysis.t_sat, color=color, alpha=0.08, lw=0)
        ax.axvline(analysis.t_sat, color=color, ls=":", lw=1.1)
    _, _, halt_step, _ = _replay_trace(replay)
    if halt_step is not None:
        i = int(np.clip(np.searchsorted(tr.steps, halt_step), 0, len(tr) - 1))
        ax.plot([halt_step], [tr.values[i]], marker="X", ms=7, color=HALT_COLOR, ls="none")


def save_figure(fig: Any, path: Any, *, dpi: int = 120, close: bool = True) -> None:
    """Save a figure (format from the suffix: png, svg, pdf), creating the folder; then close it."""
    from pathlib import Path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, bbox_inches="tight")
    if close:
        _pyplot().close(fig)


def figure_png(fig: Any, *, dpi: int = 100, close: bool = True) -> bytes:
    """Render a figure to PNG bytes (and close it, so a long report does not leak figures)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        _pyplot().close(fig)
    return buf.getvalue()
