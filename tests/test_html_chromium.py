"""The HTML report opens in a real headless browser (Debian's chromium) and shows its figures.

Under ``CI=true`` a missing chromium is a failure (``.ci/run`` installs it); elsewhere the test
skips and says how to install it.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from satmon.analysis.report import build_report
from satmon.datasets import make_run

WINDOW = (1200, 900)


def _browser(chromium_path: str | None) -> str:
    if chromium_path:
        return chromium_path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed, and CI=true: the CI script must install "
                    "Debian's 'chromium' package (apt-get install -y chromium).")
    pytest.skip("chromium not installed (apt-get install -y chromium) - HTML report not "
                "checked in a browser")


def _run_chromium(browser: str, args: list[str], tmp_path, url: str, timeout: int = 90):
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           *args, url]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=tmp_path)


def _screenshot(browser: str, tmp_path, html_path, name: str) -> np.ndarray:
    plt_image = pytest.importorskip("matplotlib.image")
    png = tmp_path / f"{name}.png"
    out = _run_chromium(browser, [f"--screenshot={png}",
                                  f"--window-size={WINDOW[0]},{WINDOW[1]}"],
                        tmp_path, html_path.resolve().as_uri())
    assert png.is_file() and png.stat().st_size > 0, (
        f"chromium wrote no screenshot (rc {out.returncode}): {out.stderr.decode()[-2000:]}")
    return plt_image.imread(str(png))


def _colourful_pixels(img: np.ndarray) -> int:
    """Pixels with clear colour (figure curves and shading; tables and text are grey)."""
    rgb = img[..., :3].astype(float)
    return int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.25).sum())


def test_report_renders_in_headless_chromium(tmp_path, chromium_path):
    browser = _browser(chromium_path)
    runs = [make_run(regime, seed=i, total_steps=300).run
            for i, regime in enumerate(["generalizing", "memorizing"])]
    report = build_report(runs, replay=False)
    # Figures first, so they fall inside the screenshot's window.
    full = tmp_path / "full.html"
    full.write_text(report.to_html(max_run_plots=2, dpi=60))
    tables = tmp_path / "tables.html"
    tables.write_text(report.to_html(figures=False))

    img = _screenshot(browser, tmp_path, full, "full")
    assert img.shape[:2] == (WINDOW[1], WINDOW[0])
    gray = img[..., :3].mean(axis=-1)
    assert gray.std() > 0.05, "the screenshot is blank"
    assert (gray < 0.3).sum() > 1000, "no dark text rendered"
    # The overview grid starts within the first screen; its curves and shaded phases are the
    # only colourful pixels, so a page whose embedded images failed to decode has far fewer.
    coloured = _colourful_pixels(img)
    baseline = _colourful_pixels(_screenshot(browser, tmp_path, tables, "tables"))
    assert coloured > baseline + 2000, (coloured, baseline)

    dom = _run_chromium(browser, ["--dump-dom"], tmp_path, full.resolve().as_uri())
    text = dom.stdout.decode()
    assert "<h1>satmon report</h1>" in text
    assert text.count("<img") == 3 and text.count("<table>") == 2
    for run in runs:
        assert run.name in text
