"""A new learner, in a real browser, finishes step 1 of lesson 1.

Sign up, open "Run your first containers", press Start, type the command
into the terminal, and watch step 1 turn done without reloading the page.
"""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.accounts import sign_up


def test_new_learner_finishes_step_one(page, live_site):
    sign_up(page, live_site.url, "grace")

    page.get_by_text("Run your first containers").first.click()
    step1 = page.locator('[data-step="1"]')
    expect(step1).to_have_attribute("data-state", "pending")
    page.click("#start-button")

    terminal = page.locator("#terminal .xterm-rows")
    expect(terminal).to_contain_text("#", timeout=60_000)  # the node's shell prompt
    page.click("#terminal")
    page.keyboard.type("docker container run alpine hostname")
    page.keyboard.press("Enter")

    # The worker's check result arrives over the lesson socket; no reload.
    expect(step1).to_have_attribute("data-state", "done", timeout=60_000)
    expect(terminal).to_contain_text(re.compile(r"\b[0-9a-f]{12}\b"))
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
