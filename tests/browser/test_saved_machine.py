"""A learner's machine outlives the session, in a real browser: they commit an
image and leave a container running, stop, and Resume brings both back; Start
fresh gives an empty engine (labs/sandboxes/machines.py, runtime/saves.py)."""
from __future__ import annotations

import logging
import time

from playwright.sync_api import expect

from tests.browser.accounts import sign_up

log = logging.getLogger(__name__)


def run(page, rows, command: str, until: str, timeout: float = 60_000) -> None:
    page.keyboard.type(command)
    page.keyboard.press("Enter")
    expect(rows).to_contain_text(until, timeout=timeout)


def stop_and_wait_saved(page) -> None:
    page.click("#stop-button")
    expect(page.locator("#stop-confirm")).to_contain_text("Resume brings it back")
    page.click("#stop-confirm-yes")
    expect(page.locator("#status-text")).to_contain_text("Your progress and your machine are saved",
                                                         timeout=90_000)
    expect(page.locator("#saved-machine")).to_be_visible()
    expect(page.locator("#saved-text")).to_contain_text("is saved (")


def test_resume_brings_back_images_and_running_containers_and_fresh_does_not(page, live_site):
    url = live_site.url
    sign_up(page, url, "sabine")
    page.goto(f"{url}/lessons/first-containers/")
    page.click("#start-button")
    lab = page.locator("#lab")
    expect(lab).to_have_attribute("data-state", "ready", timeout=90_000)
    rows = page.locator('.terminal[data-node-name="node1"] .xterm-rows')
    expect(rows).to_contain_text("#", timeout=30_000)
    run(page, rows, "docker container run --detach --name keeper alpine sleep 1d && "
        "docker container commit keeper ourbox:v1 && echo made-$((6*7))", "made-42", 120_000)

    stop_and_wait_saved(page)
    expect(page.locator("#start-button")).to_be_hidden()
    clicked = time.monotonic()
    page.click("#resume-button")  # the default: the primary button
    expect(lab).to_have_attribute("data-state", "ready", timeout=90_000)
    log.info("resume: %.1f s from the click to a ready machine", time.monotonic() - clicked)
    # The first lines say what came back.
    expect(rows).to_contain_text("Your machine is back as you left it.", timeout=30_000)
    expect(rows).to_contain_text("Running again: keeper.")
    run(page, rows, "docker image ls --format 'image {{.Repository}}:{{.Tag}}'; "
        "docker container ls --format 'running {{.Names}}'", "running keeper")
    expect(rows).to_contain_text("image ourbox:v1")

    stop_and_wait_saved(page)
    page.click("#fresh-button")
    expect(lab).to_have_attribute("data-state", "ready", timeout=90_000)
    run(page, rows, "echo images=$(docker image ls -q | wc -l) containers=$(docker ps -aq | wc -l)",
        "images=0 containers=0")
    expect(rows).not_to_contain_text("back as you left it")
