"""Browser tests: Debian's Chromium, driven by Playwright, against the real running lab."""
from __future__ import annotations

import tempfile

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium keeps reaching for Google services this machine cannot reach.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    # Module-scoped: Playwright's sync API holds an event loop in this thread
    # while it runs, and other tests call asyncio.run().
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        shot = tempfile.mktemp(prefix="lab-browser-", suffix=".png")
        page.screenshot(path=shot, full_page=True)
        print(f"screenshot of the failed page: {shot}")
    context.close()
