"""Names from log files are inert in every report format (Markdown, CSV, HTML, terminal).

Run names and held-out benchmark names come from the files satmon reads; a hostile or merely
odd log can carry HTML, Markdown link syntax, spreadsheet formulas or terminal escapes. Each
test puts such strings into real reports and asserts the property for its format: the
Markdown renders (markdown-it-py, CommonMark with raw HTML enabled) to no element but the
report's own; no CSV cell starts a formula; the HTML page, opened in headless chromium, runs
no injected script and shows the names as text.
"""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser

import numpy as np
import pytest

from satmon.analysis.report import build_report
from satmon.run import Run

SCRIPT = "<script>document.title='PWNED'</script>"
PAYLOADS = [
    SCRIPT,
    "<img src=x onerror=\"document.title='PWNED'\">",
    "[click](javascript:alert(1))",
    "![x](http://127.0.0.1:9/track.png)",
    "=HYPERLINK(\"http://127.0.0.1:9\",\"x\")",
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "name|with|pipes\nand a newline",
    "\x1b[31mred\x1b[0m\x07",
]


def _runs():
    steps = np.arange(0, 200, 10)
    runs = []
    for i, name in enumerate(PAYLOADS):
        reward = 0.2 + 0.7 * (1 - np.exp(-steps / 40.0))
        held = 0.3 + 0.001 * i + 0.0 * steps
        runs.append(Run(train_reward=(steps, reward),
                        heldout={f"bench {name}": (steps, held, 500)}, name=name))
    return runs


@pytest.fixture(scope="module")
def report():
    return build_report(_runs(), replay=False)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += attrs


def test_markdown_renders_no_injected_element(report):
    from markdown_it import MarkdownIt

    md = report.to_markdown()
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    parser = _Tags()
    parser.feed(html)
    assert parser.tags <= {"h1", "h2", "p", "table", "thead", "tbody", "tr", "th", "td", "ul",
                           "li", "strong", "em"}, parser.tags
    assert not any(k in ("onerror", "src", "href") for k, _ in parser.attrs)
    # The names are still there, as text.
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in html
    assert "[click](javascript:alert(1))" in html
    # Every run is one table row: pipes and newlines in names do not add cells or rows.
    runs_table = md.split("## Runs")[1].split("##")[0]
    rows = [line for line in runs_table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(PAYLOADS)
    widths = {line.replace("\\|", "").count("|") for line in rows}
    assert len(widths) == 1


def test_csv_has_no_formula_cells(report):
    text = report.to_csv()
    rows = list(csv.reader(io.StringIO(text)))
    cells = [c for row in rows[1:] for c in row]
    for cell in cells:
        if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
            float(cell)  # only numbers may start so (a negative value)
    names = [row[0] for row in rows[1:]]
    assert "'=HYPERLINK(\"http://127.0.0.1:9\",\"x\")" in names
    assert "'+1+1" in names and "'-2+3" in names and "'@SUM(A1:A2)" in names


def test_terminal_summary_has_no_control_characters(report):
    text = report.summary()
    assert "\x1b" not in text and "\x07" not in text
    assert "red" in text


def test_html_runs_no_injected_script_in_chromium(report, tmp_path, chromium_path):
    from test_html_chromium import _browser, _run_chromium

    browser = _browser(chromium_path)
    page = tmp_path / "report.html"
    page.write_text(report.to_html(figures=False))
    dom = _run_chromium(browser, ["--dump-dom", "--virtual-time-budget=2000"], tmp_path,
                        page.resolve().as_uri()).stdout.decode()
    assert "<h1>satmon report</h1>" in dom
    assert "PWNED" not in dom.split("</title>")[0]  # the title was never rewritten
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom
    parser = _Tags()
    parser.feed(dom)
    assert "img" not in parser.tags and "script" not in parser.tags
