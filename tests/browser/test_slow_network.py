"""A browser on a slow network still learns why the site closed its socket.

The site closes a websocket with a code that the page acts on: 4403 (not
yours), 4421 (your node is served by its host's gateway), 4410 (the node is
gone). Plain Daphne resets the connection when the browser has not answered
the close within a second (labs/webserver.py); a browser with 600 ms or more
of round trip then reports 1006, an abnormal close, and the code is lost.
Chromium's own network emulation gives this page 1.5 s of latency.
"""
from __future__ import annotations

CLOSE = """async (path) => await new Promise((resolve) => {
  const ws = new WebSocket("ws://" + location.host + path);
  ws.onclose = (e) => resolve({code: e.code, reason: e.reason});
  setTimeout(() => resolve("no close in 20 s"), 20000);
})"""


def test_a_far_away_browser_gets_the_sites_close_code(page, live_site):
    page.goto(live_site.url + "/")
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    network.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 1500, "downloadThroughput": -1, "uploadThroughput": -1})
    # A node that is not this visitor's (there is none with this number).
    closed = page.evaluate(CLOSE, "/ws/nodes/987654/terminal/")
    assert closed != "no close in 20 s"
    assert closed["code"] == 4403, closed
