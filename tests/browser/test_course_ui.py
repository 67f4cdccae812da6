"""The course page in a real browser: clickable commands and a terminal tab per node.

A new learner clicks the command in step 1's text: it is typed into node1's
terminal and run, and the step turns done by itself. In the two-node lesson,
each node has its own tab and terminal, switching keeps each one's screen,
and a port published on node2 appears as a link that opens through the site.
"""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.accounts import sign_up
from tests.browser.shots import save_screenshot



def test_clicking_a_command_runs_it_and_the_step_turns_done(page, live_site):
    sign_up(page, live_site.url, "lin")
    page.goto(live_site.url + "/lessons/first-containers/")
    step1 = page.locator('[data-step="1"]')
    expect(step1).to_have_attribute("data-state", "pending")
    page.click("#start-button")

    terminal = page.locator('.terminal[data-node-name="node1"] .xterm-rows')
    expect(terminal).to_contain_text("#", timeout=60_000)  # the node's shell prompt
    run = step1.locator(".cmd-run").first
    expect(run).to_have_text("Run")
    run.click()

    expect(step1).to_have_attribute("data-state", "done", timeout=60_000)
    expect(terminal).to_contain_text("docker container run alpine hostname")
    expect(terminal).to_contain_text(re.compile(r"\b[0-9a-f]{12}\b"))
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_two_node_lesson_has_a_terminal_per_tab(page, live_site):
    sign_up(page, live_site.url, "tabs")
    page.goto(live_site.url + "/lessons/overlay-networking/")
    tabs = page.locator(".term-tab")
    expect(tabs).to_have_count(2)
    page.click("#start-button")

    node1 = page.locator('.terminal[data-node-name="node1"]')
    node2 = page.locator('.terminal[data-node-name="node2"]')
    expect(node1.locator(".xterm-rows")).to_contain_text("[node1]", timeout=90_000)
    expect(node2).to_be_hidden()
    assert node2.locator(".xterm").count() == 0  # not connected before it is shown

    page.keyboard.type("echo one-$((40+2))")
    page.keyboard.press("Enter")
    expect(node1.locator(".xterm-rows")).to_contain_text("one-42")

    page.click('.term-tab[data-node-name="node2"]')
    expect(node1).to_be_hidden()
    expect(node2.locator(".xterm-rows")).to_contain_text("[node2]", timeout=30_000)
    page.keyboard.type("echo two-$((40+3))")
    page.keyboard.press("Enter")
    expect(node2.locator(".xterm-rows")).to_contain_text("two-43")

    # A port node2 publishes shows up as a link above the terminals, and opens nginx.
    page.keyboard.type("docker run -d --name web -p 8080:80 nginx")
    page.keyboard.press("Enter")
    link = page.locator('.port-link[data-node="node2"][data-port="8080"]')
    expect(link).to_be_visible(timeout=90_000)
    expect(link).to_contain_text("node2:8080 (web)")
    # In a tab of its own, as the link opens it: the browser (not Playwright's
    # HTTP client) knows that n<node>-8080.localhost is this machine.
    app = page.context.new_page()
    response = app.goto(live_site.url + link.get_attribute("href"))
    assert response.status == 200 and "Welcome to nginx" in app.content()
    assert ".localhost:" in app.url
    app.close()

    save_screenshot(page, "lab-two-nodes.png")

    page.click('.term-tab[data-node-name="node1"]')
    expect(node1.locator(".xterm-rows")).to_contain_text("one-42")  # its screen is kept
    expect(page.locator('.term-tab[data-node-name="node1"]')).to_have_attribute("aria-selected", "true")


def test_quiz_answer_is_checked_on_the_server(page, live_site):
    sign_up(page, live_site.url, "quiz")
    page.goto(live_site.url + "/lessons/containers-and-images/")
    step1 = page.locator('[data-step="1"]')
    expect(step1).to_have_attribute("data-state", "pending")
    step1.locator('input[name=choice][value="1"]').check()
    step1.get_by_role("button", name="Check answer").click()
    expect(step1.locator(".step-message")).to_contain_text("Not quite.")
    expect(step1).to_have_attribute("data-state", "pending")
    step1.locator('input[name=choice][value="0"]').check()
    step1.get_by_role("button", name="Check answer").click()
    expect(step1).to_have_attribute("data-state", "done")
    page.reload()
    expect(page.locator('[data-step="1"]')).to_have_attribute("data-state", "done")
