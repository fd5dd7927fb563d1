"""Plots checked by content: labels, lines, shaded spans, t_sat line, halt marker, strip, grid."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from satmon import Run, analyze_saturation
from satmon.analysis.plots import (
    CurveBand,
    RunAxes,
    auto_fit,
    figure_png,
    forecast_band,
    plot_grid,
    plot_run,
    save_figure,
)
from satmon.analysis.report import ReplaySummary
from satmon.datasets import make_run

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def _no_show_and_close(monkeypatch):
    """Plot functions must never show a window; every test closes its figures."""
    def refuse(*args, **kwargs):
        raise AssertionError("plt.show() must not be called by satmon")

    monkeypatch.setattr(plt, "show", refuse)
    yield
    plt.close("all")


def ramp(total=300, t_full=100, heldout=None, name="ramp", first=1, metadata=None):
    steps = np.arange(first, total + 1)
    return Run(train_reward=(steps, np.minimum(1.0, steps / t_full)), heldout=heldout or {},
               name=name, metadata=metadata or {})


def two_heldout():
    return {"math": (list(range(0, 301, 50)), [0.2, 0.3, 0.5, 0.5, 0.52, 0.5, 0.5]),
            "gpqa": (list(range(0, 301, 50)), [0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2])}


def span_named(ax, prefix):
    spans = [p for p in ax.patches if p.get_label().startswith(prefix)]
    assert len(spans) == 1, [p.get_label() for p in ax.patches]
    return spans[0]


def line_named(ax, prefix):
    found = [ln for ln in ax.get_lines() if ln.get_label().startswith(prefix)]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


def span_x(patch):
    verts = patch.get_path().transformed(patch.get_patch_transform()).vertices \
        if hasattr(patch, "get_patch_transform") else patch.get_xy()
    return float(np.min(verts[:, 0])), float(np.max(verts[:, 0]))


def test_run_plot_phases_tsat_and_heldout():
    run = ramp(heldout=two_heldout())
    fig, axes = plot_run(run)
    assert isinstance(axes, RunAxes) and axes.strip is None
    ax, hax = axes.reward, axes.heldout
    assert ax.get_ylabel() == "training reward" and ax.get_xlabel() == "step"
    assert hax.get_ylabel() == "held-out accuracy" and ax.get_title() == "ramp"
    # Pre-saturation = steps 1 .. t_sat - 1, shaded from the first step to t_sat = 99.
    assert span_x(span_named(ax, "pre-saturation (98 steps)")) == (1.0, 99.0)
    tline = line_named(ax, "exact t_sat = 99")
    assert list(tline.get_xdata()) == [99, 99] and tline.get_linestyle() == "--"
    reward = line_named(ax, "training reward")
    np.testing.assert_array_equal(reward.get_xdata(), run.train_reward.steps)
    assert [ln.get_label() for ln in hax.get_lines()] == ["held-out: math", "held-out: gpqa"]
    np.testing.assert_array_equal(hax.get_lines()[1].get_ydata(), run.heldout["gpqa"].values)
    # The x range starts at the step-0 evaluation, before the first training step.
    assert ax.get_xlim() == (0.0, 300.0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-2:] == ["held-out: math", "held-out: gpqa"]


def test_run_plot_selected_heldout_and_errors():
    run = ramp(heldout=two_heldout())
    _, axes = plot_run(run, heldout=["gpqa"], title="custom")
    assert [ln.get_label() for ln in axes.heldout.get_lines()] == ["held-out: gpqa"]
    assert axes.reward.get_title() == "custom"
    with pytest.raises(KeyError, match=r"no held-out series 'aime'.*\['math', 'gpqa'\]"):
        plot_run(run, heldout=["aime"])
    with pytest.raises(ValueError, match="no finite training reward"):
        plot_run(Run(train_reward=None, name="empty"))
    with pytest.raises(ValueError, match="'fit' parameter must be 'auto'"):
        plot_run(run, fit="exp3")
    with pytest.raises(TypeError, match="CurveBand or have a predict"):
        plot_run(run, fit=object())


def test_never_saturated_run_shades_everything_and_has_no_tsat_line():
    run = ramp(t_full=1000)
    fig, axes = plot_run(run)
    ax = axes.reward
    assert span_x(span_named(ax, "pre-saturation (never saturated)")) == (1.0, 300.0)
    assert not [ln for ln in ax.get_lines() if ln.get_label().startswith("t_sat")]
    assert axes.heldout is None
    assert any(t.get_text() == "no held-out series" for t in ax.texts)


def test_plot_uses_given_analysis_parameters():
    run = ramp()
    a = analyze_saturation(run, eps=0.5, end_margin=10)
    _, axes = plot_run(run, analysis=a)
    assert list(line_named(axes.reward, "exact t_sat = 50").get_xdata()) == [50, 50]
    _, axes = plot_run(run, eps=0.5, end_margin=10)
    assert span_x(span_named(axes.reward, "pre-saturation")) == (1.0, 50.0)


def test_halt_marker_and_probability_strip():
    run = ramp(heldout=two_heldout())
    steps = run.train_reward.steps
    p = np.clip((steps - 60) / 60, 0, 1)
    replay = ReplaySummary(halt_step=150, reason="memorizing", message="", compute_saved=0.5,
                           regret=0.0, steps=steps, p_saturated=p)
    fig, axes = plot_run(run, replay=replay)
    marker = line_named(axes.reward, "monitor halt at 150 (memorizing)")
    assert marker.get_marker() == "X"
    assert list(marker.get_xdata()) == [150] and list(marker.get_ydata()) == [1.0]
    halt_lines = [ln for ln in axes.reward.get_lines()
                  if list(ln.get_xdata()) == [150, 150] and ln.get_linestyle() == ":"]
    assert len(halt_lines) == 1
    strip = axes.strip
    assert strip.get_ylabel() == "P(sat)" and strip.get_xlabel() == "step"
    (image,) = strip.images
    np.testing.assert_allclose(np.asarray(image.get_array())[0], p)
    assert image.get_extent() == [0.5, 300.5, 0.0, 1.0]
    assert image.get_clim() == (0.0, 1.0)
    assert sorted(tuple(ln.get_xdata()) for ln in strip.get_lines()) == [(99, 99), (150, 150)]
    # The strip shares the x axis with the curves.
    assert strip.get_shared_x_axes().joined(strip, axes.reward)


def test_replay_without_halt_has_strip_but_no_marker():
    run = ramp()
    steps = run.train_reward.steps
    replay = ReplaySummary(halt_step=None, reason=None, message="", compute_saved=0.0,
                           regret=0.0, steps=steps, p_saturated=np.zeros(steps.size))
    _, axes = plot_run(run, replay=replay)
    assert axes.strip is not None
    assert not [ln for ln in axes.reward.get_lines() if ln.get_marker() == "X"]


def test_fitted_curve_band():
    run = ramp()
    s = run.train_reward.steps.astype(float)
    band = CurveBand(s, 0.9 * np.ones_like(s), 0.85 * np.ones_like(s), 0.95 * np.ones_like(s),
                     "fitted exp3 curve")
    _, axes = plot_run(run, fit=band)
    line = line_named(axes.reward, "fitted exp3 curve")
    np.testing.assert_allclose(line.get_ydata(), 0.9)
    (poly,) = [c for c in axes.reward.collections if c.get_label() == "fit interval"]
    ys = poly.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.85) and ys.max() == pytest.approx(0.95)


def test_fit_from_the_engine_curves():
    run = make_run("generalizing", seed=5).run
    forecast = auto_fit(run)
    assert forecast is not None and forecast.weights
    band = forecast_band(forecast, run.train_reward.steps)
    # The centre is the BIC-weighted mix of the accepted families and lies in their envelope.
    if band.low is not None:
        assert np.all(band.low <= band.mean + 1e-12) and np.all(band.mean <= band.high + 1e-12)
    resid = run.train_reward.values - band.mean
    assert np.sqrt(np.mean(resid ** 2)) < 0.06  # the fit follows the noisy curve
    _, axes = plot_run(run, fit="auto")
    assert line_named(axes.reward, "fitted saturation curve")
    # Too short to fit: the plot goes on without the curve.
    short = Run(train_reward=([1, 2, 3], [0.1, 0.2, 0.3]), name="short")
    assert auto_fit(short) is None
    _, axes = plot_run(short, fit="auto", end_margin=0)
    assert not [ln for ln in axes.reward.get_lines() if "fitted" in ln.get_label()]


def grid_runs():
    runs = []
    for model, t_full in (("qwen", 150), ("llama", 40)):
        for setting in ("math", "graph"):
            for n in (8, 64):
                runs.append(ramp(t_full=t_full + n, name=f"{model}-{setting}-{n}",
                                 metadata={"model": model, "setting": setting, "n": n},
                                 heldout={"acc": ([0, 100, 200, 300], [0.1, 0.2, 0.3, 0.3])}))
    return runs


def test_grid_rows_and_columns_from_metadata():
    runs = grid_runs()
    fig, axes = plot_grid(runs, rows="model", cols="setting", hue="n")
    assert axes.shape == (2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["setting = graph", "setting = math"]
    assert axes[0, 0].get_ylabel().startswith("model = llama")
    assert axes[1, 0].get_ylabel().startswith("model = qwen")
    assert all(ax.get_xlabel() == "step" for ax in axes[1])
    cell = axes[1, 1]  # qwen x math: two runs, each reward + held-out + t_sat line
    labels = [ln.get_label() for ln in cell.get_lines()]
    assert "8 reward" in labels and "64 acc" in labels
    tsat_x = sorted(ln.get_xdata()[0] for ln in cell.get_lines() if ln.get_linestyle() == ":")
    expected = sorted(analyze_saturation(r).t_sat for r in runs
                      if r.metadata["model"] == "qwen" and r.metadata["setting"] == "math")
    assert tsat_x == expected
    assert len(cell.patches) == 2  # one shaded pre-saturation span per run


def test_grid_numeric_keys_sort_numerically_and_empty_cells():
    runs = [r for r in grid_runs() if not (r.metadata["model"] == "llama"
                                           and r.metadata["n"] == 64)]
    fig, axes = plot_grid(runs, rows="model", cols="n")
    assert [ax.get_title() for ax in axes[0]] == ["n = 8", "n = 64"]
    assert any(t.get_text() == "no run" for t in axes[0, 1].texts)


def test_grid_without_keys_and_with_replays():
    runs = grid_runs()[:5]
    replay = ReplaySummary(halt_step=200, reason="saturated", message="", compute_saved=0.3,
                           regret=0.0)
    fig, axes = plot_grid(runs, max_cols=3, replays={runs[0].name: replay})
    assert axes.shape == (2, 3)
    assert axes[0, 0].get_title() == runs[0].name
    assert not axes[1, 2].axison  # unused panel hidden
    halts = [ln for ln in axes[0, 0].get_lines() if ln.get_marker() == "X"]
    assert len(halts) == 1 and list(halts[0].get_xdata()) == [200]
    assert not [ln for ln in axes[0, 1].get_lines() if ln.get_marker() == "X"]


def test_grid_errors_and_odd_runs():
    with pytest.raises(ValueError, match="at least one run"):
        plot_grid([])
    with pytest.raises(KeyError, match=r"no metadata key 'seed'. Keys: \['model', 'n', "):
        plot_grid(grid_runs(), rows="seed")
    empty = Run(train_reward=None, name="empty", metadata={"model": "x"})
    fig, axes = plot_grid([empty, ramp(metadata={"model": "y"})], cols="model")
    assert any("no training reward" in t.get_text() for t in axes[0, 0].texts)
    # Long names wrap onto two lines (start and tail both kept), then shorten in the middle.
    _, axes = plot_grid([ramp(name="verl_asyncRA_gsm8k_qwen2_7b_base_events_out_tfevents")])
    assert axes[0, 0].get_title() == "verl_asyncRA_gsm8k_qwen2_7b_base_events_\nout_tfevents"
    _, axes = plot_grid([ramp(name="b" + "a" * 100 + "z")])
    first, second = axes[0, 0].get_title().split("\n")
    assert first.startswith("b") and second.startswith("...") and second.endswith("z")
    assert max(len(first), len(second)) <= 40


def test_figures_render_and_save(tmp_path):
    fig, _ = plot_run(ramp(heldout=two_heldout()))
    png = figure_png(fig, dpi=40)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert not plt.fignum_exists(fig.number)  # closed after rendering
    fig, _ = plot_grid(grid_runs(), rows="model", cols="setting")
    save_figure(fig, tmp_path / "sub" / "grid.svg")
    assert (tmp_path / "sub" / "grid.svg").read_text().lstrip().startswith("<?xml")


def test_import_is_light_and_backend_is_agg():
    code = ("import sys, satmon.analysis.plots, satmon.analysis.report\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at module level'\n"
            "from satmon import Run\n"
            "from satmon.analysis.plots import plot_run\n"
            "plot_run(Run(train_reward=(range(1, 80), [0.5] * 79), name='r'))\n"
            "import matplotlib\n"
            "print(matplotlib.get_backend())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "MPLBACKEND": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().lower() == "agg"


def _unit_run():
    steps = np.arange(1, 301)
    reward = np.minimum(1.0, 0.2 + steps / 150)
    ev = np.arange(0, 301, 25)
    return Run(train_reward=(steps, reward),
               heldout={"math": (ev, 0.30 + 0.05 * (ev > 100), 500)}, name="unit")


def _colour_bars(fig):
    """Colour-bar axes of a figure (inset axes live among their parent's child axes)."""
    every = [c for a in fig.axes for c in [a, *a.child_axes]]
    return [a for a in every if a.get_ylabel() == "probability"]


def test_scales_default_to_unit_axes_and_can_be_shared_or_zoomed():
    run = _unit_run()
    _, axes = plot_run(run)
    assert axes.reward.get_ylim() == pytest.approx((-0.03, 1.03))
    assert axes.heldout.get_ylim() == pytest.approx((-0.03, 1.03))  # 5 points look like 5
    _, shared = plot_run(run, scale="shared")
    assert shared.heldout is shared.reward
    assert "held-out: math" in [ln.get_label() for ln in shared.reward.get_lines()]
    _, zoomed = plot_run(run, scale="independent")
    assert zoomed.heldout.get_ylabel() == "held-out accuracy (axis zoomed: 0.30 to 0.35)"
    with pytest.raises(ValueError, match="'scale'"):
        plot_run(run, scale="log")
    # A reward outside [0, 1] keeps its own range; held-out accuracy stays on [0, 1].
    proxy = Run(train_reward=(run.train_reward.steps, 3 * run.train_reward.values),
                heldout={"math": (run.heldout["math"].steps, run.heldout["math"].values)})
    _, axes = plot_run(proxy)
    assert axes.reward.get_ylim()[1] > 2.9 and axes.heldout.get_ylim() == pytest.approx(
        (-0.03, 1.03))


def test_probability_strips_share_a_colour_bar_and_show_p_gain():
    from satmon.analysis.report import ReplaySummary

    run = _unit_run()
    steps = np.arange(1, 301)
    summary = ReplaySummary(halt_step=200, reason="memorizing", message="", compute_saved=1 / 3,
                            regret=0.0, steps=steps, p_saturated=np.linspace(0, 1, 300),
                            p_heldout_gain=np.where(steps < 50, np.nan, 0.5))
    fig, axes = plot_run(run, replay=summary)
    assert axes.strip.get_ylabel() == "P(sat)" and axes.gain.get_ylabel() == "P(gain)"
    assert axes.gain.get_xlabel() == "step"
    (bar,) = _colour_bars(fig)
    assert [t.get_text() for t in bar.get_yticklabels()] == ["0.0", "0.5", "1.0"]
    labels = [h.get_label() for h in axes.reward.get_legend().legend_handles]
    assert labels[:2] == ["pre-saturation (118 steps)", "exact t_sat = 119"]
    assert "training reward" in labels and "held-out: math" in labels
    assert "monitor halt at 200 (memorizing)" in labels


def test_grid_explains_line_styles_in_a_figure_legend():
    runs = grid_runs()
    from satmon.analysis.report import ReplaySummary

    halts = {runs[0].name: ReplaySummary(halt_step=50, reason="saturated", message="",
                                         compute_saved=0.5, regret=0.0)}
    fig, axes = plot_grid(runs, rows="model", cols="setting", replays=halts)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "training reward", "held-out accuracy", "exact t_sat", "satmon halt"]
    assert all(ax.get_ylim() == pytest.approx((-0.03, 1.03)) for ax in axes.flat
               if ax.lines)


def test_callback_figure_uses_the_same_plot_vocabulary():
    pytest.importorskip("transformers")
    from satmon.callbacks.figure import close_figure, monitor_figure
    from satmon.datasets import make_run
    from satmon.decision import UpdateRecord
    from satmon.monitor import SaturationMonitor

    run = make_run("memorizing", seed=2, total_steps=200, eval_every=10).run
    mon = SaturationMonitor(total_steps=200)
    (name, series), = run.heldout.items()
    held = dict(zip(series.steps, series.values))
    rows = []
    for t, v in zip(run.train_reward.steps, run.train_reward.values):
        h = {name: (held[t], 500)} if t in held else None
        d = mon.update(int(t), float(v), heldout=h)
        rows.append(UpdateRecord.from_decision(d, train_reward=float(v), heldout=h).to_dict())
    fig = monitor_figure(rows, title="satmon at step 200: " + "x" * 200, halt_step=120,
                         reason="memorizing")
    ax = fig.axes[0]
    labels = [h.get_label() for h in ax.get_legend().legend_handles]
    # The default benchmark name is not repeated ("held-out heldout"): the label is "held-out".
    assert name == "heldout" and "training reward" in labels and "held-out" in labels
    assert not any("held-out heldout" in lab or "held-out: heldout" in lab for lab in labels)
    assert "monitor halt at 120 (memorizing)" in labels
    assert len(_colour_bars(fig)) == 1
    assert ax.get_title().count("\n") <= 2
    close_figure(fig)
