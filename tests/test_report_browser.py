"""report.html as a person sees it: opened in headless Chromium at 1400 x 900, as after a sweep."""

from __future__ import annotations

import re
import shutil

import pytest
from conftest import REPO

from evalbench import load_results
from evalbench.config import Targets
from evalbench.report.export import write_report

WIDTH, FOLD = 1400, 900
SCREENSHOT = REPO / "results" / "report-browser.png"  # kept for a person (and CI) to look at
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# The marks a figure draws: scatter points, bars, lines with at least one drawn segment.
MARKS = """plot => [...plot.querySelectorAll('path.point, .bars path, path.js-line')]
    .filter(mark => { const box = mark.getBBox(); return box.width > 0 || box.height > 0; }).length"""


@pytest.fixture(scope="module")
def page(tiny_results, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    browser_path = next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser_path is None:
        pytest.skip("no Chromium to open the report in: apt-get install chromium (Debian), as .ci/run does")
    output = tmp_path_factory.mktemp("report")
    write_report(load_results(tiny_results), output, Targets(max_quality_loss=0.5), png=False)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": WIDTH, "height": FOLD})
        page.goto((output / "report.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=SCREENSHOT, full_page=True)
        yield page
        browser.close()


def test_the_answer_is_above_the_fold_and_nothing_runs_off_the_page(page):
    card = page.locator(".answer")
    box = card.bounding_box()
    assert box is not None and box["y"] + box["height"] <= FOLD, box
    headline = card.locator(".headline").inner_text()
    assert headline.startswith("Recommended: PyTorch ") and "batch size" in headline
    facts = card.locator("dt").all_inner_texts()
    assert facts[:4] == ["decode speed", "quality loss", "peak memory", "first token"] and "reproduce" in facts
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH  # no line runs off the page
    assert SCREENSHOT.stat().st_size > 50_000  # a page with figures, not a blank one


def test_every_figure_is_drawn_with_its_question(page):
    plots = page.locator(".js-plotly-plot")
    assert plots.count() == 5
    for index in range(plots.count()):
        plot = plots.nth(index)
        assert plot.bounding_box()["height"] > 300
        title = plot.locator(".gtitle").text_content()
        assert plot.evaluate(MARKS) > 0, title
        assert "?" in title and title.index("?") < title.index(" on machine "), title  # the question, then the data


def test_the_front_table_reads_in_human_units(page):
    cells = page.locator("table td").all_inner_texts()
    assert cells and not [cell for cell in cells if re.fullmatch(r"\d{6,}", cell.strip())]  # no raw byte counts
    assert any(cell.endswith(" MiB") for cell in cells) and any("★" in cell for cell in cells)
