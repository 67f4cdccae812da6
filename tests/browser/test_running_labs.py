"""Labs a learner can see and stop, in a real browser.

A learner with three machines running (the overlay lesson's two and lesson 1's
one) starts a third lesson: the page says why not and links to the dashboard's
running labs. There each lab has its time left and a Stop; stopping one frees a
machine, and the third lesson starts. On a lesson page, Stop asks first, then
saves and removes the machine; Start fresh gives a fresh one.
"""
from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.accounts import sign_up


def start_lesson(page, url: str, slug: str, prompt: str = "#") -> None:
    page.goto(f"{url}/lessons/{slug}/")
    page.click("#start-button")
    expect(page.locator("#lab")).to_have_attribute("data-state", "ready", timeout=90_000)
    expect(page.locator(".terminal .xterm-rows").first).to_contain_text(prompt, timeout=30_000)


def test_a_learner_stops_a_lab_from_the_dashboard_and_starts_another(page, live_site):
    url = live_site.url
    sign_up(page, url, "stopper")
    start_lesson(page, url, "overlay-networking", "[node1]")
    start_lesson(page, url, "first-containers")

    page.goto(f"{url}/lessons/custom-app/")
    page.click("#start-button")
    status = page.locator("#status-text")
    expect(status).to_contain_text("You can have 3 lab machines at a time", timeout=30_000)
    page.click("text=See and stop your running labs")
    expect(page).to_have_url(f"{url}/dashboard/#running-labs")

    labs = page.locator(".running-lab")
    expect(labs).to_have_count(2)
    overlay = page.locator('.running-lab[data-lesson="overlay-networking"]')
    expect(overlay).to_contain_text("2 machines")
    expect(overlay).to_contain_text("left")
    overlay.locator("button.stop-lab").click()
    expect(page).to_have_url(f"{url}/dashboard/#running-labs")
    # Stopping or gone, depending on how fast the worker was; gone soon after.
    for _ in range(60):  # its two machines are saved first
        if page.locator('.running-lab[data-lesson="overlay-networking"]').count() == 0:
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(labs).to_have_count(1)

    start_lesson(page, url, "custom-app")


def test_stop_on_the_lesson_page_asks_then_removes_the_machine(page, live_site):
    url = live_site.url
    sign_up(page, url, "stophere")
    start_lesson(page, url, "first-containers")
    rows = page.locator('.terminal[data-node-name="node1"] .xterm-rows')
    page.keyboard.type("touch /root/made-before-stop && echo made-$((6*7))")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text("made-42")

    page.click("#stop-button")
    confirm = page.locator("#stop-confirm")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("progress on the steps is kept")
    page.click("#stop-confirm-no")  # changed their mind: nothing happens
    expect(confirm).to_be_hidden()
    expect(page.locator("#lab")).to_have_attribute("data-state", "ready")

    page.click("#stop-button")
    page.click("#stop-confirm-yes")
    expect(page.locator("#status-text")).to_contain_text("You stopped your lab machine", timeout=60_000)
    # It was saved (tests/browser/test_saved_machine.py resumes one): this
    # learner starts fresh.
    expect(page.locator("#fresh-button")).to_be_visible()
    expect(page.locator("#start-button")).to_be_hidden()
    expect(rows).not_to_contain_text("made-42")  # the removed machine's screen is cleared

    page.click("#fresh-button")
    expect(page.locator("#lab")).to_have_attribute("data-state", "ready", timeout=90_000)
    expect(rows).to_contain_text("#")
    page.keyboard.type("ls /root/made-before-stop || echo fresh-$((6*7))")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text("fresh-42")
