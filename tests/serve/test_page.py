"""The web pages in real Chromium: type a text, click Classify, both models answer; the results
page shows the study. Each test saves a screenshot in tests/serve/artifacts/ for a person to
look at (the folder's contents are not committed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raydistill.serve.predictor import Predictor

from .conftest import SWEEP, lone_gateway, no_sweep_copy

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
TEXT = "a warm, funny and moving film"

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.timeout(180)]


def screenshot(page, name: str) -> Path:
    """A full-page screenshot at tests/serve/artifacts/<name>; returns its path (printed too)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_page_classifies_with_both_models(browser, served, tiny_run):
    from playwright.sync_api import expect

    expected = {m: Predictor(tiny_run / m, max_length=32).predict([TEXT])[0]["label"]
                for m in ("student", "teacher")}
    page = browser.new_page()
    try:
        page.goto(served.url + "/")
        expect(page.locator("h1")).to_have_text("raydistill")
        page.fill("#text", TEXT)

        page.fill("#token", "wrong")  # the token is enforced: both cards show the 401
        page.click("#classify")
        for model in expected:
            error = page.locator(f"#result-{model} [data-field=error]")
            expect(error).to_contain_text("401", timeout=30_000)

        page.fill("#token", served.token)
        page.click("#classify")
        for model, label in expected.items():
            card = page.locator(f"#result-{model}")
            expect(card.locator("[data-field=label]")).to_have_text(label, timeout=30_000)
            expect(card.locator("[data-field=score]")).to_have_text(re.compile(r"^0\.\d{3}$|^1\.000$"))
            expect(card.locator("[data-field=latency]")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
            expect(card.locator("[data-field=error]")).to_have_text("")
        # facts from /v1/models (fetched again with the token after classifying)
        expect(page.locator("#result-student [data-fact=layers]")).to_have_text("2", timeout=30_000)
        expect(page.locator("#result-teacher [data-fact=layers]")).to_have_text("4")
        expect(page.locator("#result-student [data-fact=strategy]")).to_contain_text("uniform")
        expect(page.locator("#result-student [data-fact=validation_accuracy]")).to_have_text(
            "81.3 % (exported seed; cell mean over seeds 81.3 %)")
        expect(page.locator("#result-teacher [data-fact=validation_accuracy]")).to_have_text("87.5 %")
        # every label's probability, as bars, highest first (the API's return_all_scores)
        for model, label in expected.items():
            bars = page.locator(f"#result-{model} [data-field=dist] .bar")
            expect(bars).to_have_count(2)
            assert bars.first.get_attribute("data-label") == label
            widths = bars.locator(".fill").evaluate_all("fs => fs.map(f => parseFloat(f.style.width))")
            assert abs(sum(widths) - 100) < 0.5 and widths[0] >= widths[1], widths
        # the study's headline under the models, once the token is there: the page is not blank
        summary = page.locator("#study-summary")
        expect(summary).to_be_visible(timeout=30_000)
        expect(summary.locator('[data-study="verdict"]')).to_contain_text("uniform T=2 (0.8125 ± 0.0000) has the highest mean")
        expect(summary.locator('[data-study="strategies"]')).to_contain_text("Strategies, temperatures pooled:")
        # an example fills the box and asks both models
        page.locator("#examples .example").first.click()
        expect(page.locator("#text")).to_have_value("a gripping, beautifully acted film")
        expect(page.locator("#status")).to_contain_text("Done in", timeout=30_000)
        screenshot(page, "classify-page.png")
        favicon = page.request.get(served.url + "/favicon.ico")
        assert favicon.ok and favicon.body()[:8] == b"\x89PNG\r\n\x1a\n"
        # /docs renders offline: Swagger UI's files come from the app, not a CDN
        page.goto(served.url + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("raydistill", timeout=30_000)
        expect(page.locator(".opblock-summary-path", has_text="/v1/classify")).to_be_visible()
        screenshot(page, "api-docs.png")
    finally:
        page.close()


def test_results_page_shows_the_study(browser, served, tiny_run):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        # a new tab holds no token: the page is public, the study is not
        page.goto(served.url + "/results")
        expect(page.locator("h1")).to_have_text("raydistill")
        expect(page.locator("#status")).to_contain_text("401", timeout=30_000)
        expect(page.locator("#status")).to_contain_text("enter it above")
        expect(page.locator("#study")).to_be_hidden()

        # the token typed on the classify page follows its link to the results (this tab only)
        page.goto(served.url + "/")
        page.fill("#token", served.token)
        page.click("nav >> text=study results")
        expect(page).to_have_url(served.url + "/results")
        expect(page.locator("body")).to_have_attribute("data-loaded", "true", timeout=60_000)
        expect(page.locator("#status")).to_have_text(f"Run {tiny_run.name}.")

        # the table: a row per (strategy, temperature), the verdict column last, the teacher below
        expect(page.locator("#cells thead th").last).to_have_text("verdict")
        rows = page.locator("#cells tbody tr[data-strategy]")
        expect(rows).to_have_count(len(SWEEP))
        cells = rows.evaluate_all("rows => rows.map(r => [r.dataset.strategy, Number(r.dataset.temperature)])")
        assert sorted(map(tuple, cells)) == sorted(SWEEP)
        verdicts = rows.locator("[data-field=verdict]").all_text_contents()
        assert verdicts[0] == "best" and set(verdicts) == {"best", "inconclusive", "worse"}, verdicts
        assert rows.first.locator("td").first.text_content() == "uniform"
        expect(page.locator("#cells .teacher-row td").nth(2)).to_have_text("0.8750")
        expect(page.locator("#verdict")).to_contain_text("uniform T=2 (0.8125 ± 0.0000) has the highest mean")
        expect(page.locator("#policy")).to_contain_text("cluster bootstrap")
        expect(page.locator("#strategies")).to_contain_text("Strategies, temperatures pooled: uniform has the highest mean")

        # the winner's provenance, the teacher, active learning
        expect(page.locator('#winner [data-fact="cell"]')).to_have_text("uniform, T=2 (the best-mean cell)")
        expect(page.locator('#winner [data-fact="teacher_layers"]')).to_have_text("0, 3")
        expect(page.locator('#winner [data-fact="seed"]')).to_have_text("0 of 0, 1")
        expect(page.locator('#teacher [data-fact="validation_accuracy"]')).to_have_text("87.5 %")
        expect(page.locator("#al-sentences li")).to_have_count(2)
        expect(page.locator("#al-sentences li").last).to_contain_text("At 6 labels entropy")

        # every figure the run has, fetched with the token and drawn
        names = page.locator("img[data-plot]").evaluate_all("imgs => imgs.map(i => i.dataset.plot)")
        assert {"forest.png", "val_accuracy.png", "learning_curves.png", "active_learning.png"} <= set(names)
        widths = page.locator("img[data-plot]").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
        assert all(w > 100 for w in widths), dict(zip(names, widths))
        # multi-panel figures take the page's width, readable; the others share a row
        wide = page.locator("figure.wide img").evaluate_all("imgs => imgs.map(i => i.dataset.plot)")
        assert {"forest.png", "learning_curves.png", "active_learning.png"} <= set(wide)
        shown = page.locator("figure.wide img[data-plot='learning_curves.png']").bounding_box()
        assert shown["width"] > 0.9 * page.locator("#students").bounding_box()["width"]
        # serving ratios, once `raydistill bench` has run (test_bench.py does, earlier)
        if (tiny_run / "bench.json").is_file():
            expect(page.locator("#serving-headline li").first).to_contain_text("student/teacher")
            assert "bench.png" in names
        screenshot(page, "results-page.png")
        assert not errors, errors
    finally:
        page.close()


def test_results_page_before_the_sweep_says_so(browser, served, tiny_run, tmp_path):
    from playwright.sync_api import expect

    from raydistill.serve.facts import NO_STUDY

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        with lone_gateway(served, "teacher-only", no_sweep_copy(tiny_run, tmp_path / "teacher-only")) as url:
            page.goto(url + "/results")
            page.fill("#token", served.token)
            page.click("#load")
            expect(page.locator("body")).to_have_attribute("data-loaded", "true", timeout=60_000)
            expect(page.locator("#status")).to_have_text(NO_STUDY)
            expect(page.locator("#students")).to_be_hidden()
            expect(page.locator('#teacher [data-fact="validation_accuracy"]')).to_have_text("87.5 %")
            expect(page.locator("#al-sentences li")).to_have_count(2)  # the teacher stage's part
            screenshot(page, "results-page-before-sweep.png")
        assert not errors, errors
    finally:
        page.close()
