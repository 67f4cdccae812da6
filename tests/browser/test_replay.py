"""Replay and why the class is stuck, in real browsers against the real lab.

Lena (signed up as rhea: the test site is shared, names are unique) does
lesson 1 steps 1 and 2 in her terminal. Iris (rita), her instructor, opens
Lena's replay from the grid: the commands play back, and "step 1 done" on the
timeline jumps to the moment step 1 was done (its command and output on the
screen, step 2's command not yet). Max (remy) runs a command that does not do step 1:
he appears under step 1's reason on Iris's classroom page without a reload,
and his name opens his replay at that failure. Otto (rolf), who teaches nobody and is
in no class, gets 403 on both replays.
"""
from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from tests.browser.accounts import sign_up
from tests.browser.test_classroom import SCREEN_ROWS, join

STEP1 = "docker container run alpine hostname"
STEP2 = "docker container ls --all"


def start_lab(page):
    """Her lab: joining a class that is on started it; wait for its shell."""
    expect(page.locator('.terminal[data-node-name="node1"] .xterm-rows')).to_contain_text("#", timeout=90_000)


def run(page, command):
    page.click('.terminal[data-node-name="node1"]')
    page.keyboard.type(command)
    page.keyboard.press("Enter")


def screen(page) -> str:
    return "\n".join(page.evaluate(SCREEN_ROWS, "#replay-term"))


def wait_for_screen(page, predicate, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = screen(page)
        if predicate(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_instructor_replays_a_learner_and_sees_why_the_class_is_stuck(browser, live_site):
    url = live_site.url
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in range(4)]
    iris, lena, max_, otto = (c.new_page() for c in contexts)
    try:
        sign_up(iris, url, "rita")
        assert live_site.manage("instructor", "rita").returncode == 0
        iris.goto(url + "/classrooms/")
        iris.fill("#id_name", "Replay class")
        iris.get_by_label("Run your first containers").check()
        iris.click("#new-classroom button[type=submit]")
        expect(iris.locator("#live-state")).to_have_text("live")
        code = iris.locator("#join-code").inner_text()

        sign_up(lena, url, "rhea")
        join(lena, url, code)
        expect(lena.locator("#record-note")).to_contain_text("you and your instructors can replay it")
        start_lab(lena)
        run(lena, STEP1)
        expect(lena.locator('[data-step="1"]')).to_have_attribute("data-state", "done", timeout=60_000)
        run(lena, STEP2)
        expect(lena.locator('[data-step="2"]')).to_have_attribute("data-state", "done", timeout=60_000)

        # Iris opens Lena's replay from the grid.
        lena_row = iris.locator("#grid tbody tr", has_text="rhea")
        link = lena_row.locator("a.replay-link")
        expect(link).to_be_visible(timeout=30_000)
        expect(lena_row.locator('td[data-cell="first-containers:1"] a.cell-link')).to_have_count(1)
        lena_replay = link.get_attribute("href")
        with contexts[0].expect_page() as popup:
            link.click()
        replay = popup.value
        box = replay.locator("#replay")
        expect(box).to_have_attribute("data-state", "ready", timeout=30_000)  # at the start
        marks = replay.locator("#replay-marks li")
        expect(marks.filter(has_text="step 1 done")).to_have_count(1)
        expect(marks.filter(has_text=f"$ {STEP1} [exit 0]")).to_have_count(1)
        expect(marks.filter(has_text="step 2 done")).to_have_count(1)
        # The commands play back.
        replay.select_option("#replay-speed", "8")
        replay.click("#replay-play")
        expect(box).to_have_attribute("data-state", "ended", timeout=60_000)
        assert STEP1 in screen(replay) and STEP2 in screen(replay), screen(replay)
        # "step 1 done" jumps there: step 1's command and its output, not step 2's.
        marks.filter(has_text="step 1 done").locator("button").click()
        expect(marks.filter(has_text="step 1 done")).to_have_class("mark-done current")
        # The player repaints in xterm's write callback: wait for the new screen.
        shown = wait_for_screen(replay, lambda text: STEP1 in text and STEP2 not in text)
        # The container's hostname (its short id) printed after the pull.
        assert re.search(r"\n[0-9a-f]{12}\n", shown.split(STEP1, 1)[1]), shown

        # Max (remy) runs a command that does not do step 1: Iris sees why, live.
        sign_up(max_, url, "remy")
        join(max_, url, code)
        start_lab(max_)
        run(max_, "docker container ls")
        reason = max_.locator('[data-step="1"] .step-message')
        expect(reason).not_to_be_empty(timeout=60_000)
        stuck = iris.locator('#stuck-list .stuck-step[data-step="first-containers:1"]')
        expect(stuck).to_contain_text("1 learner:", timeout=30_000)
        expect(stuck.locator(".stuck-text")).to_have_text(reason.inner_text().strip())
        name = stuck.locator("a.stuck-name", has_text="remy")
        expect(name).to_have_count(1)
        assert iris.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
        max_replay = name.get_attribute("href")
        assert "at=" in max_replay
        with contexts[0].expect_page() as popup:
            name.click()
        at_failure = popup.value
        expect(at_failure.locator("#replay")).to_have_attribute("data-state", "paused", timeout=30_000)
        current = at_failure.locator("#replay-marks li.current")
        expect(current).to_contain_text("check failed (step 1)")
        expect(at_failure.locator("#replay-term .xterm-rows")).to_contain_text("docker container ls")

        # Otto is nobody's instructor and in no class: 403 on both replays.
        sign_up(otto, url, "rolf")
        for path in (lena_replay, max_replay.split("?")[0]):
            session = path.rstrip("/").split("/")[-1]
            assert otto.request.get(url + path).status == 403, path
            assert otto.request.get(url + f"/replays/{session}/node1.cast").status == 403, path
        # Lena replays her own from My progress, and may download it.
        lena.goto(url + "/dashboard/")
        own = lena.locator("#replays a", has_text="Run your first containers").first
        assert own.get_attribute("href") == lena_replay
        cast = lena.request.get(url + lena_replay + "node1.cast?download=1")
        assert cast.ok and cast.text().startswith('{"version": 2')
        assert ".cast" in cast.headers["content-disposition"]
    finally:
        for context in contexts:
            context.close()
