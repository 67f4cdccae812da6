"""The terminal-recording player (static/labs/replay.js) in Chromium, without the site.

Playwright answers every request to http://replay.test: the player's page (the
markup the replay template gives), the files under static/, and asciicast v2
recordings built here. The player compresses long pauses, lists the server's
markers in a timeline, seeks by writing all output so far at once, skips a
half-written last line, opens at data-start, follows resize events, and says
when the recording cannot be loaded.
"""
from __future__ import annotations

import datetime
import json
import mimetypes
import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ROOT

ORIGIN = "http://replay.test"
STATIC = ROOT / "static"
FONT = "/static/vendor/dejavu-mono/dejavu-mono-latin-400-normal.woff2"
STARTED = 1764579000  # the header's timestamp
PROMPT = "learner@node1:~$ "

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Recording</title>
<link rel="stylesheet" href="http://replay.test/static/labs/site.css">
<link rel="stylesheet" href="http://replay.test/static/vendor/xterm/xterm.css">
<link rel="stylesheet" href="http://replay.test/static/labs/replay.css">
</head><body><main class="page wide-page">
<div id="replay" data-cast-url="{cast_url}"{start}>
  <div class="replay-main">
    <div id="replay-term" class="replay-term"></div>
    <div class="replay-controls">
      <button type="button" id="replay-play" class="button small">Play</button>
      <label>Speed <select id="replay-speed"><option>0.5</option><option selected>1</option><option>2</option><option>4</option><option>8</option></select></label>
      <input type="range" id="replay-seek" min="0" step="0.01" value="0" aria-label="Position">
      <span id="replay-time" class="meta">0:00 / 0:00</span>
    </div>
  </div>
  <aside class="replay-side"><h2>Timeline</h2><ol id="replay-marks" class="replay-marks"></ol></aside>
  <p id="replay-status" class="meta" role="status"></p>
</div>
<script src="http://replay.test/static/vendor/xterm/xterm.js"></script>
<script src="http://replay.test/static/labs/replay.js"></script>
</main></body></html>
"""

# The terminal's rows on screen, as in test_classroom.py (xterm writes spaces as no-break spaces).
SCREEN_ROWS = """() => Array.from(document.querySelectorAll("#replay-term .xterm-rows > div"))
  .map((row) => row.textContent.replace(/\\u00a0/g, " ").trimEnd())"""

# A learner echoes, reads for 30 s, the step turns done, more output, a failed check.
LESSON = [
    [0.1, "o", PROMPT],
    [1.0, "o", "echo hello_world\r\n"],
    [1.1, "o", "hello_world\r\n"],
    [1.15, "o", PROMPT],
    [1.2, "m", "$ echo hello_world [exit 0]"],
    [31.2, "m", "step 1 done"],
    [32.0, "o", "second\r\n"],
    [32.5, "m", "check failed (step 2): no container named mydb is running"],
]
LESSON_DURATION = 0.1 + 0.9 + 0.1 + 0.05 + 0.05 + 2 + 0.8 + 0.5  # the 30 s plays as 2 s
STEP1_PLAY_TIME = 0.1 + 0.9 + 0.1 + 0.05 + 0.05 + 2


def cast(events, *, width=80, height=24, tail="") -> str:
    """An asciicast v2 file: the header, one JSON array per line, then `tail` as is."""
    header = {"version": 2, "width": width, "height": height, "timestamp": STARTED,
              "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"}}
    return "\n".join([json.dumps(header)] + [json.dumps(e) for e in events]) + "\n" + tail


def wall_clock(t: float) -> str:
    """A marker's real time of day, as the player shows it (the browser's local time)."""
    return datetime.datetime.fromtimestamp(STARTED + t).strftime("%H:%M:%S")


class ReplaySite:
    """Everything the page at http://replay.test asks for."""

    def __init__(self, page):
        self.page = page
        self.casts: dict[str, str] = {}
        self.missing: set[str] = set()  # paths under /static/ to answer 404
        self.html = ""
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        # A 404 the test asked for is logged as "Failed to load resource"; anything else is a fault.
        page.on("console", lambda message: self.errors.append(message.text)
                if message.type == "error" and not message.text.startswith("Failed to load resource")
                else None)
        page.route(ORIGIN + "/**", self._serve)

    def _serve(self, route):
        path = urlsplit(route.request.url).path
        if path == "/replay/":
            return route.fulfill(status=200, content_type="text/html; charset=utf-8", body=self.html)
        if path in self.casts:
            return route.fulfill(status=200, content_type="application/x-asciicast",
                                 body=self.casts[path])
        if path.startswith("/static/") and path not in self.missing:
            file = (STATIC / path[len("/static/"):]).resolve()
            if file.is_relative_to(STATIC) and file.is_file():
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                return route.fulfill(status=200, content_type=kind, body=file.read_bytes())
        return route.fulfill(status=404, content_type="text/plain", body="not found")

    def open(self, body: str | None, *, start: float | None = None, url: str = "/casts/lesson.cast"):
        if body is not None:
            self.casts[url] = body
        self.html = PAGE.format(cast_url=url, start="" if start is None else f' data-start="{start}"')
        self.page.goto(ORIGIN + "/replay/")

    def screen(self) -> str:
        return "\n".join(self.page.evaluate(SCREEN_ROWS))


@pytest.fixture
def site(page):
    site = ReplaySite(page)
    yield site
    assert site.errors == [], site.errors


def test_timeline_compressed_pause_marker_seek_and_play_to_the_end(site, page):
    site.open(cast(LESSON))
    replay = page.locator("#replay")
    expect(replay).to_have_attribute("data-state", "ready")

    items = page.locator("#replay-marks > li")
    expect(items).to_have_count(3)
    assert items.evaluate_all("items => items.map((li) => li.className)") == [
        "mark-cmd", "mark-done", "mark-fail"]
    buttons = page.locator("#replay-marks > li > button")
    assert buttons.all_text_contents() == [
        f"{wall_clock(1.2)} $ echo hello_world [exit 0]",
        f"{wall_clock(31.2)} step 1 done",
        f"{wall_clock(32.5)} check failed (step 2): no container named mydb is running"]
    assert [float(t) for t in buttons.evaluate_all("bs => bs.map((b) => b.dataset.t)")] == [1.2, 31.2, 32.5]

    # The 30 s of reading plays as 2 s.
    duration = page.evaluate("window.labReplay.duration")
    assert duration == pytest.approx(LESSON_DURATION, abs=0.01)
    assert duration < 10
    expect(page.locator("#replay-time")).to_have_text("0:00 / 0:04")

    # Wide screen: the timeline is beside the terminal, no taller than the player.
    term_box = page.locator("#replay-term").bounding_box()
    main_box = page.locator(".replay-main").bounding_box()
    side_box = page.locator(".replay-side").bounding_box()
    assert side_box["x"] >= term_box["x"] + term_box["width"]
    assert side_box["height"] <= main_box["height"] + 1

    # A marker: the screen as it was then, and that marker is the current one.
    page.click("#replay-marks li.mark-done button")
    rows = page.locator("#replay-term .xterm-rows")
    expect(rows).to_contain_text("hello_world")
    screen = site.screen()
    assert "echo hello_world" in screen and "second" not in screen, screen
    done = page.locator("#replay-marks li.mark-done")
    expect(done).to_have_class(re.compile(r"\bcurrent\b"))
    expect(done).to_have_attribute("aria-current", "true")
    expect(replay).to_have_attribute("data-state", "paused")
    assert page.evaluate("window.labReplay.position()") == pytest.approx(STEP1_PLAY_TIME, abs=0.01)
    expect(page.locator("#replay-time")).to_have_text("0:03 / 0:04")

    # Play on at 8x to the end.
    page.select_option("#replay-speed", "8")
    page.click("#replay-play")
    expect(replay).to_have_attribute("data-state", "ended", timeout=10_000)
    expect(rows).to_contain_text("second")
    expect(page.locator("#replay-play")).to_have_text("Replay")
    expect(page.locator("#replay-marks li.mark-fail")).to_have_class(re.compile(r"\bcurrent\b"))
    expect(page.locator("#replay-marks li.current")).to_have_count(1)
    expect(page.locator("#replay-time")).to_have_text("0:04 / 0:04")

    # Space, outside a form control, replays from the start and pauses.
    page.select_option("#replay-speed", "1")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Space")
    expect(replay).to_have_attribute("data-state", "playing")
    expect(page.locator("#replay-play")).to_have_text("Pause")
    page.keyboard.press("Space")
    expect(replay).to_have_attribute("data-state", "paused")
    assert page.evaluate("window.labReplay.position()") < STEP1_PLAY_TIME


def test_a_half_written_last_line_is_skipped_and_the_rest_plays(site, page):
    # The font is missing too: the player must not wait for it forever.
    site.missing.add(FONT)
    events = [
        [0.2, "o", "one "],
        [1.2, "o", "three\r\n"],   # written a little out of order
        [1.0, "o", "two "],
        [1.5, "o", "same_"],       # two events at one time keep their order
        [1.5, "o", "time\r\n"],
        [1.8, "o", "last_complete_line\r\n"],
        [1.9, "m", "step 1 done"],
    ]
    site.open(cast(events, tail='[2.4, "o", "cut off by the cra'))
    replay = page.locator("#replay")
    expect(replay).to_have_attribute("data-state", "ready")
    expect(page.locator("#replay-status")).to_contain_text("1 damaged line skipped")
    expect(page.locator("#replay-marks > li")).to_have_count(1)

    page.select_option("#replay-speed", "8")
    page.click("#replay-play")
    expect(replay).to_have_attribute("data-state", "ended", timeout=10_000)
    expect(page.locator("#replay-term .xterm-rows")).to_contain_text("last_complete_line")
    rows = page.evaluate(SCREEN_ROWS)
    assert "one two three" in rows and "same_time" in rows, rows
    assert "cut off" not in site.screen()


def test_data_start_opens_paused_at_that_marker(site, page):
    events = [
        [0.1, "o", PROMPT],
        [1.0, "o", "echo hello_world\r\nhello_world\r\n" + PROMPT],
        [1.2, "m", "$ echo hello_world [exit 0]"],
        [2.0, "m", "output dropped before this point (the learner's terminal was too fast)"],
        [5.0, "o", "docker ps --filter name=mydb\r\nCONTAINER ID   IMAGE\r\n" + PROMPT],
        [5.2, "m", "$ docker ps --filter name=mydb [exit 1]"],
        [35.2, "m", "step 1 done"],
        [36.0, "o", "second\r\n"],
        [36.5, "m", "check failed (step 2): no container named mydb is running"],
        [37.0, "m", "the learner left"],
    ]
    # A link to "step 1 done", its time rounded down.
    site.open(cast(events), start=35)
    replay = page.locator("#replay")
    expect(replay).to_have_attribute("data-state", "paused")
    assert page.locator("#replay-marks > li").evaluate_all("items => items.map((li) => li.className)") == [
        "mark-cmd", "mark-cut", "mark-cmd mark-cmd-failed", "mark-done current", "mark-fail", "mark-other"]
    expect(page.locator("#replay-marks li.mark-done")).to_have_attribute("aria-current", "true")
    expect(page.locator("#replay-term .xterm-rows")).to_contain_text("CONTAINER ID")
    assert "second" not in site.screen()
    assert page.evaluate("window.labReplay.playing()") is False
    expect(page.locator("#replay-play")).to_have_text("Play")
    # 0.1 + 0.9 + 0.2 + 0.8 + 2 (3 s) + 0.2 + 2 (30 s)
    assert page.evaluate("window.labReplay.position()") == pytest.approx(6.2, abs=0.01)
    assert float(page.input_value("#replay-seek")) == pytest.approx(6.2, abs=0.01)
    page.wait_for_timeout(500)
    assert page.evaluate("window.labReplay.position()") == pytest.approx(6.2, abs=0.01)
    assert page.get_attribute("#replay", "data-state") == "paused"

    # A real time inside the shortened pause: the screen as it was then, before "step 1 done".
    page.evaluate("window.labReplay.seekReal(20)")
    expect(page.locator("#replay-marks li.current")).to_have_class("mark-cmd mark-cmd-failed current")
    assert page.evaluate("window.labReplay.position()") == pytest.approx(6.2, abs=0.01)


def test_a_moment_before_the_recording_began_shows_its_first_screen(site, page):
    # On a busy host the recorder attached after the learner's command ran and
    # its check failed: the site's marker is older than the first screen the
    # recorder wrote (the screen as it found it, command and output on it).
    events = [
        [0.0, "r", "80x24"],
        [0.5, "m", "check failed (step 1): no container has run alpine"],
        [2.0, "o", "\x1b[H\x1b[2J" + PROMPT + "docker container ls\r\nCONTAINER ID   IMAGE\r\n" + PROMPT],
        [4.0, "o", "later_output\r\n"],
        [4.5, "m", "step 1 done"],
    ]
    site.open(cast(events), start=0.5)
    replay = page.locator("#replay")
    expect(replay).to_have_attribute("data-state", "paused")
    expect(page.locator("#replay-marks li.current")).to_contain_text("check failed (step 1)")
    expect(page.locator("#replay-term .xterm-rows")).to_contain_text("CONTAINER ID")
    assert "later_output" not in site.screen()
    status = page.locator("#replay-status")
    expect(status).to_have_text(f"The recording began at {wall_clock(2.0)}, after this moment: "
                                "its first screen is shown.")

    # The marker's button does the same; a marker after it, and the seek bar, say nothing of it.
    page.click("#replay-marks li.mark-done button")
    expect(page.locator("#replay-term .xterm-rows")).to_contain_text("later_output")
    expect(status).to_have_text("")
    page.click("#replay-marks li.mark-fail button")
    page.wait_for_function("!document.querySelector('#replay-term .xterm-rows').textContent.includes('later_output')")
    expect(page.locator("#replay-term .xterm-rows")).to_contain_text("CONTAINER ID")
    expect(status).to_contain_text("after this moment")
    page.evaluate("window.labReplay.seekReal(3)")
    expect(status).to_have_text("")


def test_a_resize_event_resizes_the_terminal(site, page):
    events = [
        [0.2, "o", "before_resize\r\n"],
        [0.5, "r", "100x30"],
        [0.6, "o", "after_resize\r\n"],
    ]
    site.open(cast(events))
    replay = page.locator("#replay")
    expect(replay).to_have_attribute("data-state", "ready")
    size = "() => [window.labReplay.term.cols, window.labReplay.term.rows]"
    assert page.evaluate(size) == [80, 24]

    page.click("#replay-play")
    expect(replay).to_have_attribute("data-state", "ended", timeout=10_000)
    page.wait_for_function(f"({size})().join('x') === '100x30'", timeout=5_000)
    expect(page.locator("#replay-term .xterm-rows > div")).to_have_count(30)
    expect(page.locator("#replay-term .xterm-rows")).to_contain_text("after_resize")

    # Seeking back before the resize goes back to the header's size...
    page.evaluate("window.labReplay.seekReal(0.3)")
    page.wait_for_function(f"({size})().join('x') === '80x24'", timeout=5_000)
    expect(page.locator("#replay-term .xterm-rows")).to_contain_text("before_resize")
    assert "after_resize" not in site.screen()
    # ...and seeking past it applies it before the output that follows.
    page.evaluate("window.labReplay.seekReal(0.55)")
    page.wait_for_function(f"({size})().join('x') === '100x30'", timeout=5_000)
    expect(page.locator("#replay-term .xterm-rows")).to_contain_text("before_resize")
    assert page.get_attribute("#replay", "data-state") == "paused"


def test_a_missing_recording_says_so(site, page):
    site.open(None, url="/casts/missing.cast")
    expect(page.locator("#replay")).to_have_attribute("data-state", "error")
    expect(page.locator("#replay-status")).to_contain_text("Could not load the recording (HTTP 404)")


def test_a_recording_without_output_says_nothing_was_recorded(site, page):
    site.open(cast([[0.5, "m", "check failed (step 1): no container is running"]]))
    expect(page.locator("#replay")).to_have_attribute("data-state", "ready")
    expect(page.locator("#replay-status")).to_have_text("Nothing was recorded in this terminal.")
    expect(page.locator("#replay-marks > li")).to_have_count(1)
