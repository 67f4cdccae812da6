"""Site features on the real lab: a published nginx opened through the site's port link.

The learner starts first-containers, runs `docker run -d -p 8080:80 nginx` in
the terminal websocket; the page's socket announces the port link (after the
command's checks), and GETting that link through the site shows nginx's
welcome page. Another learner gets 403 on the link and 4403 on its websocket.
"""
from __future__ import annotations

import asyncio
import urllib.error

import pytest
import websockets

from tests.integration.test_lesson_flow import SLUG, started_node
from tests.labclient import Learner, next_event


def test_published_nginx_opens_through_the_site_for_its_owner_only(live_site):
    ada, eve = Learner(live_site.url), Learner(live_site.url)
    ada.signup("ada-ports")
    eve.signup("eve-ports")
    node = started_node(ada)

    async def run_nginx():
        async with ada.connect(f"/ws/lessons/{SLUG}/") as lesson, \
                ada.connect(f"/ws/nodes/{node}/terminal/?cols=120&rows=30") as term:
            await term.send(b"docker run -d -p 8080:80 nginx\r")
            return await next_event(lesson, lambda e: e.get("type") == "ports"
                                    and any(p["port"] == 8080 for p in e["ports"]), 120)

    event = asyncio.run(run_nginx())
    assert event["node"] == node and event["name"] == "node1"
    (port,) = [p for p in event["ports"] if p["port"] == 8080]
    assert port["target"] == 80
    url = port["url"]
    assert url == f"/nodes/{node}/ports/8080/"

    with ada.get(url) as response:
        assert response.status == 200
        assert "Welcome to nginx" in response.read().decode()
    # The page lists the link too, for a reload.
    assert url in ada.get(f"/lessons/{SLUG}/").read().decode()

    with pytest.raises(urllib.error.HTTPError) as denied:
        eve.get(url)
    assert denied.value.code == 403

    async def eve_websocket():
        async with eve.connect(f"/nodes/{node}/ports/8080/") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return closed.value.rcvd.code

    assert asyncio.run(eve_websocket()) == 4403
