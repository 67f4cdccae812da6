"""The lesson page at four screen sizes, phone to desktop, at 1x.

At each size a new learner starts lesson 1, runs step 1's command with its Run
button and sees its output on screen; nothing is wider than the screen (no
sideways scrolling). Below 1000 px the page shows Steps or Terminal, one at a
time: Run switches to the terminal.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.accounts import sign_up
from tests.browser.shots import save_screenshot

SIZES = [(390, 844), (800, 900), (1280, 720), (1920, 1080)]

NO_SIDEWAYS = """() => {
  const page = document.scrollingElement;
  const wide = Array.from(document.querySelectorAll('body *')).filter((el) => {
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.right > window.innerWidth + 1 && getComputedStyle(el).position !== 'fixed';
  }).map((el) => el.className || el.tagName).slice(0, 5);
  return {scroll: page.scrollWidth, inner: window.innerWidth, wide};
}"""

# Commands whose text runs under the Run/Copy buttons or out of their block.
HIDDEN_COMMANDS = """() => Array.from(document.querySelectorAll('.cmd-block > pre'))
  .filter((pre) => pre.offsetParent !== null && pre.scrollWidth > pre.clientWidth + 1)
  .map((pre) => pre.textContent)"""

# One frame round the terminal: xterm's own element has no padding of ours and
# its viewport is the pane's colour (it was a black band inside the frame).
FRAMES = """() => {
  const pane = getComputedStyle(document.querySelector('.term-pane')).backgroundColor;
  const xterm = document.querySelector('.terminals .xterm');
  return {pane, padding: getComputedStyle(xterm).padding,
          viewport: getComputedStyle(xterm.querySelector('.xterm-viewport')).backgroundColor};
}"""


@pytest.mark.parametrize("width,height", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_a_learner_runs_a_step_at_every_screen_size(width, height, page, live_site):
    page.set_viewport_size({"width": width, "height": height})
    sign_up(page, live_site.url, f"size{width}")
    page.goto(live_site.url + "/lessons/first-containers/")
    narrow = width < 1000
    terminal_tab = page.locator("#show-terminal")
    if narrow:
        expect(page.locator(".steps-pane")).to_be_visible()
        expect(terminal_tab).to_have_text("Terminal: Start")
        terminal_tab.click()
    else:
        expect(terminal_tab).to_be_hidden()
    page.click("#start-button")
    expect(page.locator("#lab")).to_have_attribute("data-state", "ready", timeout=90_000)
    frames = page.evaluate(FRAMES)
    assert frames["padding"] == "0px" and frames["viewport"] == frames["pane"], frames
    if narrow:  # back to the steps to read, then Run takes us to the terminal
        page.click("#show-steps")
        expect(page.locator(".term-pane")).to_be_hidden()
    run = page.locator('.step[data-step="1"] .cmd-run').first
    run.scroll_into_view_if_needed()
    run.click()

    rows = page.locator('.terminal[data-node-name="node1"] .xterm-rows')
    expect(rows).to_contain_text(re.compile(r"\b[0-9a-f]{12}\b"), timeout=60_000)
    expect(page.locator('.step[data-step="1"]')).to_have_attribute("data-state", "done",
                                                                  timeout=30_000)
    # The output is on the screen, and the terminal fits it.
    box = page.locator('.terminal[data-node-name="node1"] .xterm-screen').bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, box
    assert box["y"] < height, box
    layout = page.evaluate(NO_SIDEWAYS)
    assert layout["scroll"] <= layout["inner"], layout
    if narrow:
        expect(page.locator(".steps-pane")).to_be_hidden()
        expect(page.locator("#show-steps")).to_contain_text("1 of 8")
        page.click("#show-steps")
    assert page.evaluate(HIDDEN_COMMANDS) == []
    save_screenshot(page, f"lesson-{width}x{height}.png")
