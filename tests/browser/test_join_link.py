"""A visitor opens a class's join link and is at a shell prompt: no form, no
password, no Start. Ines (instructor) makes the classroom and sees the guest
appear in her grid with a machine; the guest's terminal runs a command.
"""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.accounts import sign_up


def test_the_join_link_takes_a_visitor_to_a_prompt(browser, live_site):
    url = live_site.url
    teacher_context = browser.new_context(viewport={"width": 1400, "height": 900})
    guest_context = browser.new_context(viewport={"width": 1280, "height": 800})
    ines, guest = teacher_context.new_page(), guest_context.new_page()
    try:
        sign_up(ines, url, "ines")
        assert live_site.manage("instructor", "ines").returncode == 0
        ines.goto(url + "/classrooms/")
        ines.fill("#id_name", "Drop-in class")
        ines.fill("#id_seats", "12")  # (the test site keeps no pool for it: LAB_POOL_CLASSES=0)
        ines.get_by_label("Run your first containers").check()
        ines.click("#new-classroom button[type=submit]")
        expect(ines.locator("#live-state")).to_have_text("live")
        link = ines.locator("#join-link").get_attribute("href")

        guest.goto(link)
        expect(guest).to_have_url(url + "/lessons/first-containers/")
        term = guest.locator('.terminal[data-node-name="node1"] .xterm-rows')
        expect(term).to_contain_text("] ~#", timeout=90_000)
        guest.click('.terminal[data-node-name="node1"]')
        guest.keyboard.type("echo joined-$((6*7))")
        guest.keyboard.press("Enter")
        expect(term).to_contain_text("joined-42")

        row = ines.locator("#grid tbody tr", has_text=re.compile(r"guest-[0-9a-f]{8}"))
        expect(row).to_be_visible(timeout=30_000)
    finally:
        teacher_context.close()
        guest_context.close()
