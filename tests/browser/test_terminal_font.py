"""The terminal draws every character with the lab's own font, at 1x and 2x pixel density.

With whatever monospace font a machine had, Chromium on Linux at 100% zoom
lost underscores (`linux_tweet_app` read `linux tweet app`) and figlet banners
lost whole lines. The lab now serves its font (static/vendor/dejavu-mono) and
the terminal opens once it is loaded. Here a learner prints `a_b`, `a b`, a row
of underscores and a row of box drawing; screenshots of single cells show the
underscore and the box-drawing line drawn, where a space's cell is blank.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.accounts import sign_up

CELLS = """(texts) => {
  // The box of character `index` in the terminal row whose text (trimmed) is `text`.
  const rows = Array.from(document.querySelectorAll('.terminal[data-node-name="node1"] .xterm-rows > div'));
  return texts.map(([text, index]) => {
    // xterm.js writes spaces as no-break spaces.
    const row = rows.find((r) => r.textContent.replace(/\u00a0/g, " ").trim() === text);
    if (!row) return null;
    const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
    let node, at = 0;
    while ((node = walker.nextNode())) {
      const start = node.textContent.length ? row.textContent.indexOf(node.textContent, at) : at;
      if (index < start + node.textContent.length) {
        const range = document.createRange();
        range.setStart(node, index - start);
        range.setEnd(node, index - start + 1);
        const glyph = range.getBoundingClientRect(), box = row.getBoundingClientRect();
        return {x: glyph.x, y: box.y, width: glyph.width, height: box.height};
      }
      at = start + node.textContent.length;
    }
    return null;
  });
}"""


def cell_png(page, box) -> bytes:
    return page.screenshot(clip={"x": box["x"], "y": box["y"], "width": box["width"],
                                 "height": box["height"]})


@pytest.mark.parametrize("page", [1, 2], indirect=True, ids=["1x", "2x"])
def test_underscores_and_box_drawing_are_drawn(page, live_site, request):
    scale = request.node.callspec.params["page"]
    assert page.evaluate("window.devicePixelRatio") == scale
    sign_up(page, live_site.url, f"glyphs{scale}")
    page.goto(live_site.url + "/lessons/first-containers/")
    page.click("#start-button")
    expect(page.locator("#lab")).to_have_attribute("data-state", "ready", timeout=90_000)
    rows = page.locator('.terminal[data-node-name="node1"] .xterm-rows')
    expect(rows).to_contain_text("#")
    # The lab's font is what the page loaded and what the terminal uses.
    assert page.evaluate("document.fonts.check('14px \"Lab Mono\"')")
    family = page.evaluate("getComputedStyle(document.querySelector('.xterm-rows')).fontFamily")
    assert family.startswith('"Lab Mono"'), family

    page.keyboard.type(r"printf 'a_b\na b\n_____\n\342\224\200\342\224\200\n'")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text("──")  # the output, not the typed line (which has \342...)
    under, space, bar, line = page.evaluate(
        CELLS, [["a_b", 1], ["a b", 1], ["_____", 2], ["──", 0]])
    assert None not in (under, space, bar, line), (under, space, bar, line)
    empty = cell_png(page, space)
    # An underscore's cell is not a blank cell: the underscore is drawn, not cut off.
    assert cell_png(page, under) != empty
    assert cell_png(page, bar) != empty
    assert cell_png(page, dict(line, width=space["width"])) != empty
