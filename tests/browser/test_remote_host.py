"""A learner whose machine runs on another host, in a real browser.

The site's own machine is drained, so the lab lands on sandbox host h1 (a
network namespace with its own address, tests/support/cluster.py). The page
opens the terminal on h1's gateway, with a token the site signed, and step 1
turns done: the check ran on h1's worker and reached the page through the
shared channel layer. The keystrokes never pass through the site.
"""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.accounts import sign_up
from tests.support.cluster import cluster_site


def test_a_learner_on_a_remote_host_finishes_step_one(page):
    with cluster_site(1) as (site, cluster):
        h1 = cluster.host("h1")
        sockets = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        sign_up(page, site.url, "remote")
        page.get_by_text("Run your first containers").first.click()
        page.click("#start-button")
        terminal = page.locator("#terminal .xterm-rows")
        expect(terminal).to_contain_text("#", timeout=60_000)
        page.click("#terminal")
        page.keyboard.type("docker container run alpine hostname")
        page.keyboard.press("Enter")
        expect(page.locator('[data-step="1"]')).to_have_attribute("data-state", "done",
                                                                 timeout=60_000)
        expect(terminal).to_contain_text(re.compile(r"\b[0-9a-f]{12}\b"))
        # The terminal's socket went to h1's gateway, the lesson's to the site.
        terminals = [url for url in sockets if "/terminal/" in url]
        assert terminals and all(url.startswith(f"ws://{h1.address}:8001/ws/nodes/")
                                 and "token=" in url for url in terminals), sockets
        assert any(url.startswith(site.url.replace("http", "ws") + "/ws/lessons/")
                   for url in sockets), sockets
        assert "WSCONNECT /ws/nodes/" in h1.log("gateway")
