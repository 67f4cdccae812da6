"""Site features on the real lab: a published nginx opened through the site's port link.

The learner starts first-containers, runs `docker run -d -p 8080:80 nginx` in
the terminal websocket; the page's socket announces the port link (after the
command's checks), and following that link ends on the port's own origin with
nginx's welcome page. Another learner gets 403 on the link and on the origin,
and 4403 on its websocket.
"""
from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websockets

from tests.integration.test_lesson_flow import SLUG, event_after_command, started_node
from tests.support.labclient import Learner, next_event


def test_published_nginx_opens_on_its_own_origin_for_its_owner_only(live_site):
    ada, eve = Learner(live_site.url), Learner(live_site.url)
    ada.signup("ada-ports")
    eve.signup("eve-ports")
    node = started_node(ada)

    event = event_after_command(ada, node, b"docker run -d -p 8080:80 nginx\r",
                                lambda e: e.get("type") == "ports"
                                and any(p["port"] == 8080 for p in e["ports"]), 120)
    assert event["node"] == node and event["name"] == "node1"
    (port,) = [p for p in event["ports"] if p["port"] == 8080]
    assert port["target"] == 80
    url = port["url"]
    assert url == f"/nodes/{node}/ports/8080/"

    site = urllib.parse.urlsplit(live_site.url)
    origin = f"http://n{node}-8080.localhost:{site.port}"
    with ada.get(url) as response:
        assert response.status == 200
        # The site's link ends on the port's own origin, at its root.
        assert response.geturl() == origin + "/"
        assert "Welcome to nginx" in response.read().decode()
    # The page lists the link too, for a reload.
    assert url in ada.get(f"/lessons/{SLUG}/").read().decode()

    with pytest.raises(urllib.error.HTTPError) as denied:
        eve.get(url)
    assert denied.value.code == 403
    # Eve typing the port origin's address herself gets nowhere either.
    with pytest.raises(urllib.error.HTTPError) as denied:
        eve.http.open(origin + "/", timeout=30)
    assert denied.value.code == 403
    assert "Open it again from the lesson page" in denied.value.read().decode()

    # Ada's port cookie (which her browser keeps from scripts: HttpOnly) replayed
    # at another port of her node, or another node's origin: 403 all the same.
    (cookie,) = [c for c in ada.jar if c.name == "lab_port"]
    assert cookie.domain == f"n{node}-8080.localhost" and cookie.has_nonstandard_attr("HttpOnly")
    for elsewhere in (f"http://n{node}-8081.localhost:{site.port}/",
                      f"http://n{node + 1}-8080.localhost:{site.port}/"):
        replay = urllib.request.Request(elsewhere, headers={"Cookie": f"lab_port={cookie.value}"})
        with pytest.raises(urllib.error.HTTPError) as denied:
            eve.http.open(replay, timeout=30)
        assert denied.value.code == 403, elsewhere

    async def eve_websocket():
        async with eve.connect_port_origin(origin, "/") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return closed.value.rcvd.code

    assert asyncio.run(eve_websocket()) == 4403


def runtime_id_of(live_site, node_pk: int) -> str:
    done = live_site.manage("shell", "-c", "from labs.sandboxes.models import LabNode; "
                            f"print(LabNode.objects.get(pk={node_pk}).runtime_id)")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


async def listeners(driver, runtime_id) -> int:
    info = await driver.exec(runtime_id, ["docker", "info", "--format", "{{.NEventsListener}}"])
    assert info.ok, info.output
    return int(info.output.strip())


def test_engine_events_turn_a_step_done_without_the_terminal(live_site):
    """Step 1 is done from outside the page's terminal (as from another shell):
    the node's engine events run the checks, and the step event arrives."""
    from runtime import get_driver

    ada = Learner(live_site.url)
    ada.signup("ada-events")
    node = started_node(ada)
    runtime_id = runtime_id_of(live_site, node)

    async def run():
        async with ada.connect(f"/ws/lessons/{SLUG}/") as lesson:
            await next_event(lesson, lambda e: e.get("type") == "session")
            # Give the page's watcher a moment to be listening: the node's
            # engine counts its event listeners (the watcher reads the
            # engine's socket; no process runs in the node for it).
            driver = get_driver("builtin")
            for _ in range(100):
                if await listeners(driver, runtime_id) >= 1:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the node's engine has no events listener")
            assert "docker events" not in (await driver.exec(runtime_id, ["ps", "-eo", "args"])).output
            result = await driver.exec(runtime_id, ["docker", "container", "run", "alpine",
                                                    "hostname"], timeout=60)
            assert result.ok, result.output
            step = await next_event(lesson, lambda e: e.get("type") == "step"
                                    and e.get("step") == 1 and e.get("state") == "done", 60)
        # The page closed: its watcher lets go of the engine.
        for _ in range(100):
            if await listeners(driver, runtime_id) == 0:
                return step
            await asyncio.sleep(0.1)
        raise AssertionError("the engine still has an events listener after the page closed")

    assert asyncio.run(run())["state"] == "done"


def test_failed_command_with_a_known_error_shows_a_hint(live_site):
    ada = Learner(live_site.url)
    ada.signup("ada-hints")
    node = started_node(ada)

    hint = event_after_command(ada, node, b"docker container rm no-such-box\r",
                               lambda e: e.get("type") == "hint", 60)
    assert hint["step"] == 1 and hint["node"] == "node1"
    assert "no container with that name" in hint["message"]


def test_a_burst_of_websockets_all_open(live_site):
    """A class arriving at once: 1000 lesson sockets opened together (each joins
    two channel-layer groups in Redis before it is accepted) all open. With
    the Redis pool at redis-py's default cap of 100 connections some failed
    with HTTP 500 (MaxConnectionsError)."""
    ada = Learner(live_site.url)
    ada.signup("ada-burst")

    waited = []

    async def one():
        began = time.monotonic()
        try:
            # A browser waits for a handshake as long as the TCP connection
            # lives; the client library's default gives up after 10 s, and on
            # 2 cores the last of 1000 handshakes can take about that long
            # (one Daphne process). The failures this test is about are errors.
            async with websockets.connect(ada.ws_url(f"/ws/lessons/{SLUG}/"),
                                          additional_headers=ada.ws_headers(), open_timeout=60):
                waited.append(time.monotonic() - began)
                await asyncio.sleep(1)  # all open at the same time
            return "open"
        except Exception as exc:  # what the browser would see
            return repr(exc)

    async def burst():
        return await asyncio.gather(*(one() for _ in range(1000)))

    results = asyncio.run(burst())
    failed = [r for r in results if r != "open"]
    waited.sort()
    if waited:
        print(f"1000 lesson sockets: handshake median {waited[len(waited) // 2]:.2f} s, "
              f"slowest {waited[-1]:.2f} s")
    assert not failed, f"{len(failed)} of 1000 failed, e.g. {failed[:3]}"
