"""One self-contained HTML page for a :class:`~satmon.analysis.report.Report`.

The page carries its own CSS and embeds every figure as a base64 PNG ``data:`` URI, so it can
be mailed, attached to an MLflow run or opened from disk without any network access. On large
reports only the first ``max_run_plots`` runs get a figure of their own (rendering a thousand
figures would dominate the report's run time); the tables always list every run.
"""

from __future__ import annotations

import base64
import html
import logging
from typing import TYPE_CHECKING

from satmon._version import __version__
from satmon.results import html_table

if TYPE_CHECKING:
    from satmon.analysis.report import Report

log = logging.getLogger("satmon.report")

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;
     max-width:1400px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;
     border-bottom:1px solid #ddd;padding-bottom:4px}
p.meta{color:#555;font-size:13px;margin-top:0}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f3f7} td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
figure{display:inline-block;margin:8px 12px 8px 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#444;max-width:640px}
ul.notes{font-size:12px;color:#444}
.err{color:#b00}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_tables(report: "Report") -> str:
    """The report's tables as HTML fragments (no figures; used for notebooks too)."""
    from satmon.analysis.report import HELDOUT_HEADER, PROBE_HEADER, PROBE_NOTE, RUN_HEADER

    c = report.counts()
    parts = [
        f"<p class='meta'>{c['runs']} run(s): {c['saturated']} saturated, {c['failed']} not "
        f"analysed, {c['without_heldout']} without held-out series, {c['halted']} halted by the "
        f"monitor replay. Parameters: {html.escape(report.params.describe())}.</p>",
        "<h2 id='runs'>Runs</h2>", html_table(RUN_HEADER, report.run_rows()),
        "<h2 id='gains'>Held-out gains</h2>",
    ]
    rows = report.heldout_rows()
    parts.append(html_table(HELDOUT_HEADER, rows) if rows
                 else "<p>No run has a held-out series.</p>")
    probes = report.probe_rows()
    if probes:
        parts += ["<h2 id='probe'>Pre-RL probe</h2>", f"<p>{html.escape(PROBE_NOTE)}.</p>",
                  html_table(PROBE_HEADER, probes)]
    if report.config.groups:
        groups = "; ".join(f"<b>{html.escape(g)}</b>: {html.escape(', '.join(m))}"
                           for g, m in report.config.groups.items())
        parts += ["<h2 id='groups'>Benchmark groups</h2>", f"<p>{groups}</p>",
                  html_table(report.group_header(), report.group_rows())]
    if report.pairs:
        parts += ["<h2 id='gap'>Data gap G<sub>sat</sub></h2>",
                  "<p>G<sub>sat</sub>(n', n) = M<sup>n'</sup>(t<sub>sat</sub><sup>n</sup>) - "
                  "M<sup>n</sup>(t<sub>sat</sub><sup>n</sup>), read at the small run's "
                  "t<sub>sat</sub>.</p>",
                  html_table(report.gap_header(), report.gap_rows())]
    notes = report.notes()
    if notes:
        items = "".join(
            f"<li{' class=err' if n.startswith('error') else ''}><b>{html.escape(w)}</b>: "
            f"{html.escape(n)}</li>" for w, n in notes)
        parts += ["<h2 id='notes'>Notes</h2>", f"<ul class='notes'>{items}</ul>"]
    return "\n".join(parts)


def render_figures(report: "Report", *, max_run_plots: int = 12, grid_rows: str | None = None,
                   grid_cols: str | None = None, dpi: int = 90, fit: str | None = "auto"
                   ) -> list[tuple[str, bytes]]:
    """``(caption, png)`` for the overview grid and the first ``max_run_plots`` runs.

    ``fit="auto"`` overlays the engine's fitted saturation curve on each per-run figure.
    """
    from satmon.analysis.plots import figure_png, plot_grid, plot_run

    ok = [r for r in report.runs if r.analysis is not None]
    figures: list[tuple[str, bytes]] = []
    if not ok:
        return figures
    if grid_rows or grid_cols or len(ok) > 1:
        shown = ok if (grid_rows or grid_cols) else ok[:max(max_run_plots, 1)]
        fig, _ = plot_grid(
            [r.run for r in shown], rows=grid_rows, cols=grid_cols,
            analyses={r.name: r.analysis for r in shown},  # type: ignore[misc]
            replays={r.name: r.replay for r in shown if r.replay is not None},
            eps=report.params.eps, end_margin=report.params.end_margin)
        what = (f"rows: {grid_rows or '-'}, columns: {grid_cols or '-'}"
                if grid_rows or grid_cols else f"first {len(shown)} of {len(ok)} runs")
        figures.append((f"Overview ({what}): training reward (solid), first held-out series "
                        "(dashed), t_sat (dotted line, shaded before it), monitor halt (x).",
                        figure_png(fig, dpi=dpi)))
    for r in ok[:max_run_plots]:
        fig, _ = plot_run(r.run, analysis=r.analysis, replay=r.replay, fit=fit,
                          eps=report.params.eps, end_margin=report.params.end_margin)
        figures.append((f"{r.name}: pre-saturation phase shaded, t_sat dashed"
                        + (", fitted saturation curve with its family spread" if fit else "")
                        + (", monitor P(saturated) strip below" if r.replay is not None
                           and r.replay.steps.size else ""), figure_png(fig, dpi=dpi)))
    if len(ok) > max_run_plots:
        log.info("report: drew %d of %d per-run figures (max_run_plots)", max_run_plots, len(ok))
    return figures


def render_html(report: "Report", *, title: str = "satmon report", max_run_plots: int = 12,
                grid_rows: str | None = None, grid_cols: str | None = None, dpi: int = 90,
                figures: bool = True, fit: str | None = "auto") -> str:
    """The whole report as one HTML document with embedded CSS and base64 PNG figures.

    Parameters
    ----------
    max_run_plots:
        Runs that get a figure of their own (the first ones in report order).
    grid_rows, grid_cols:
        Metadata keys for the overview grid (default: the first runs, one per panel).
    dpi:
        Resolution of the embedded PNGs.
    figures:
        False renders the tables only (matplotlib not needed).
    fit:
        ``"auto"`` overlays the fitted saturation curve on each per-run figure; None omits it.
    """
    if isinstance(max_run_plots, bool) or not isinstance(max_run_plots, int) or max_run_plots < 0:
        raise ValueError("The 'max_run_plots' parameter must be an int >= 0. "
                         f"Got {max_run_plots!r} instead.")
    figs = (render_figures(report, max_run_plots=max_run_plots, grid_rows=grid_rows,
                           grid_cols=grid_cols, dpi=dpi, fit=fit) if figures else [])
    # In-page links: on a report over many runs the figures sit below a long table.
    sections = [("runs", "Runs"), ("gains", "Held-out gains")]
    sections += [("probe", "Pre-RL probe")] if report.probe_rows() else []
    sections += [("groups", "Benchmark groups")] if report.config.groups else []
    sections += [("gap", "Data gap")] if report.pairs else []
    sections += [("notes", "Notes")] if report.notes() else []
    sections += [("figures", "Figures")] if figs else []
    nav = " &middot; ".join(f"<a href='#{a}'>{t}</a>" for a, t in sections)
    body = [f"<h1>{html.escape(title)}</h1>", f"<p class='meta'>{nav}</p>",
            render_tables(report)]
    if figs:
        body.append("<h2 id='figures'>Figures</h2>")
        body += [f"<figure>{_img(png, cap)}<figcaption>{html.escape(cap)}</figcaption>"
                 "</figure>" for cap, png in figs]
        n_ok = sum(r.analysis is not None for r in report.runs)
        if n_ok > max_run_plots:
            body.append(f"<p class='meta'>Per-run figures for the first {max_run_plots} of "
                        f"{n_ok} analysed runs.</p>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title>"
            f"<meta name='generator' content='satmon {__version__}'>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")
