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


def test_earlier_output_scrolls_back_and_typing_goes_on(page, live_site):
    # tmux sends the browser the screen, not every line: 200 lines arrive as
    # their last screenful. Scrolling up over the terminal shows them all.
    sign_up(page, live_site.url, "hedy")
    page.get_by_text("Run your first containers").first.click()
    page.click("#start-button")
    terminal = page.locator("#terminal .xterm-rows")
    expect(terminal).to_contain_text("#", timeout=60_000)
    page.click("#terminal")
    page.keyboard.type("seq 1 200")
    page.keyboard.press("Enter")
    expect(terminal).to_contain_text("200")
    assert not re.search(r"^42$", terminal.inner_text(), re.M)  # long gone from the screen

    history = page.locator("#term-history")
    expect(history).to_be_hidden()
    box = page.locator("#terminal > .terminal:not([hidden])").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    expect(history).to_be_visible()
    text = page.locator("#term-history-text").inner_text()
    assert [str(n) for n in range(1, 201)] == [line for line in text.splitlines()
                                               if line.isdigit()]

    # Typing takes the learner back to the live terminal, keystroke included.
    page.keyboard.type("echo back-$((6*7))")
    expect(history).to_be_hidden()
    page.keyboard.press("Enter")
    expect(terminal).to_contain_text("back-42")

    page.click("#history-button")  # the button does the same
    expect(history).to_be_visible()
    page.keyboard.press("Escape")
    expect(history).to_be_hidden()
