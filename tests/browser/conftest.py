"""Browser tests: Debian's Chromium, driven by Playwright, against the real running lab."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium keeps reaching for Google services this machine cannot reach.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
ROOT = Path(__file__).resolve().parents[2]

# What a failed page showed: each terminal's whole buffer when the test
# recorded its terminals (window.__lab), else the rows on screen; and every
# step's state with the message the learner saw beside it.
PAGE_STATE = r"""
() => {
  const terminals = {};
  document.querySelectorAll(".terminal[data-node-name]").forEach(function (box) {
    const name = box.dataset.nodeName;
    const recorded = window.__lab && window.__lab.text(name);
    const rows = box.querySelector(".xterm-rows");
    const t = window.__lab && window.__lab.term(name);
    terminals[name] = {text: recorded !== null && recorded !== undefined ? recorded
                                                           : (rows ? rows.innerText : ""),
                       size: t ? t.cols + "x" + t.rows : null};
  });
  const steps = Array.from(document.querySelectorAll(".step")).map(function (step) {
    const message = step.querySelector(".step-message");
    return {step: step.dataset.step, state: step.dataset.state,
            message: message ? message.innerText : ""};
  });
  return {terminals: terminals, steps: steps};
}
"""


def output_dir() -> Path:
    """Where failed browser tests leave what the learner saw (LAB_TEST_OUTPUT,
    default test-output/ in the checkout)."""
    return Path(os.environ.get("LAB_TEST_OUTPUT") or ROOT / "test-output")


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
    # A test may ask for another pixel density: parametrize("page", [2], indirect=True).
    scale = getattr(request, "param", 1)
    context = browser.new_context(viewport={"width": 1400, "height": 900}, device_scale_factor=scale)
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        try:
            print(f"what the learner saw: {keep_failed_page(page, request.node.name)}")
        except Exception as e:  # a crashed page: the test's own failure says more
            print(f"could not keep the failed page: {e}")
    context.close()


def keep_failed_page(page, test_name: str) -> Path:
    """Save a screenshot, each terminal's text and the steps' states of a failed page."""
    folder = output_dir() / re.sub(r"[^\w.-]+", "_", test_name)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "page.png"), full_page=True)
    state = page.evaluate(PAGE_STATE)
    for name, terminal in state["terminals"].items():
        (folder / f"terminal-{name}.txt").write_text(terminal["text"] or "")
    lines = [f"url: {page.url}"]
    lines += [f"terminal {name}: {t['size'] or 'size unknown'}"
              for name, t in state["terminals"].items()]
    lines += [f"step {s['step']}: {s['state']}" + (f" - {s['message']}" if s["message"] else "")
              for s in state["steps"]]
    (folder / "steps.txt").write_text("\n".join(lines) + "\n")
    return folder
