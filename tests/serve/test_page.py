"""The web page in real Chromium: type a text, click Classify, both models answer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from raydistill.serve.predictor import Predictor

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
TEXT = "a warm, funny and moving film"

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.timeout(180)]


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


def test_page_classifies_with_both_models(browser, served, tiny_run, tmp_path):
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
            "81.3 % (exported seed; cell mean over seeds 80.0 %)")
        expect(page.locator("#result-teacher [data-fact=validation_accuracy]")).to_have_text("87.5 %")
        favicon = page.request.get(served.url + "/favicon.ico")
        assert favicon.ok and favicon.body()[:8] == b"\x89PNG\r\n\x1a\n"
        # /docs renders offline: Swagger UI's files come from the app, not a CDN
        page.goto(served.url + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("raydistill", timeout=30_000)
        expect(page.locator(".opblock-summary-path", has_text="/v1/classify")).to_be_visible()
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        assert (tmp_path / "page.png").stat().st_size > 5_000
    finally:
        page.close()
