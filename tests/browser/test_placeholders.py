"""Commands with <placeholders> ask for their values; "<...>" never reaches the shell.

A command such as `docker exec -it <container id> bash` opens a small form
under it, one field per placeholder, filled with what the lab can see: the
container ID the learner just listed, their own name (lower case) for a Docker
ID. Run types the filled command; Cancel types nothing.
"""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.accounts import sign_up


def start(page, url, slug):
    page.goto(f"{url}/lessons/{slug}/")
    page.click("#start-button")
    expect(page.locator("#lab")).to_have_attribute("data-state", "ready", timeout=90_000)
    rows = page.locator('.terminal[data-node-name="node1"] .xterm-rows')
    expect(rows).to_contain_text("#")
    return rows


def test_a_docker_id_placeholder_is_filled_with_the_learners_name(page, live_site):
    sign_up(page, live_site.url, "Grace_Lab")
    rows = start(page, live_site.url, "custom-app")
    step = page.locator('.step[data-step="2"]')
    button = step.locator(".cmd-run").first
    expect(button).to_have_text("Fill in…")
    button.click()
    form = step.locator("form.cmd-fill")
    field = form.locator("input")
    expect(field).to_have_value("gracelab")  # lower case, only what an image name allows
    expect(form.locator(".cmd-fill-preview")).to_have_text("export DOCKERID=gracelab")
    form.get_by_role("button", name="Run").click()
    expect(form).to_have_count(0)
    expect(rows).to_contain_text("export DOCKERID=gracelab")
    expect(step).to_have_attribute("data-state", "done", timeout=30_000)
    assert "<your" not in rows.inner_text()


def test_a_container_id_comes_from_the_listing_on_screen(page, live_site):
    sign_up(page, live_site.url, "placer")
    rows = start(page, live_site.url, "bridge-networking")
    page.keyboard.type("docker run -dt ubuntu sleep infinity && docker ps")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text(re.compile(r"[0-9a-f]{12}\s+ubuntu"), timeout=60_000)  # the listing
    screen = "\n" + rows.inner_text().replace("\xa0", " ")  # xterm.js: no-break spaces
    listed = re.search(r"\n([0-9a-f]{12}) +ubuntu", screen)
    assert listed, screen

    step = page.locator('.step[data-step="6"]')
    step.locator(".cmd-run", has_text="Fill in").first.click()
    form = step.locator("form.cmd-fill")
    expect(form.locator("input")).to_have_value(listed.group(1))
    # Cancel types nothing; an emptied field cannot be run.
    form.get_by_role("button", name="Cancel").click()
    expect(form).to_have_count(0)
    step.locator(".cmd-run", has_text="Fill in").first.click()
    form.locator("input").fill("")
    form.get_by_role("button", name="Run").click()
    expect(form).to_be_visible()
    assert "docker exec" not in rows.inner_text()
    form.locator("input").fill(listed.group(1))
    form.get_by_role("button", name="Run").click()
    expect(rows).to_contain_text(f"root@{listed.group(1)}:/#", timeout=30_000)
