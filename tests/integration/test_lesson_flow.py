"""Lesson 1, step 1 through the real site: Daphne, Redis, a Celery worker and a real node.

The learner signs up, starts the lesson, types the command into the
terminal websocket, and step 1 turns done by itself, pushed by the worker.
"""
from __future__ import annotations

import asyncio
import re
import urllib.error

import pytest
import websockets

from tests.support.labclient import Learner, next_event

SLUG = "first-containers"


def started_node(learner: Learner) -> int:
    """Start the lesson's node and return its LabNode id once it is ready."""
    async def run():
        async with learner.connect(f"/ws/lessons/{SLUG}/") as ws:
            reply = learner.start(SLUG)
            assert reply.get("ok", True), reply
            event = await next_event(ws, lambda e: e.get("type") == "session"
                                     and e.get("state") in ("ready", "failed"), 90)
            assert event["state"] == "ready", event
            return event["node"]
    return asyncio.run(run())


def event_after_command(learner: Learner, node: int, command: bytes, wanted, seconds: float):
    """Type `command` in the node's terminal; the first lesson event that is `wanted`."""
    async def run():
        async with learner.connect(f"/ws/lessons/{SLUG}/") as lesson, \
                learner.connect(f"/ws/nodes/{node}/terminal/?cols=120&rows=30") as term:
            await term.send(command)
            return await next_event(lesson, wanted, seconds)
    return asyncio.run(run())


def test_learner_completes_step_one_in_the_terminal(live_site):
    ada = Learner(live_site.url)
    ada.signup("ada")
    node = started_node(ada)

    async def run():
        async with ada.connect(f"/ws/lessons/{SLUG}/") as lesson, \
                ada.connect(f"/ws/nodes/{node}/terminal/?cols=100&rows=30") as term:
            await term.send(b"docker container run alpine hostname\r")
            step = await next_event(lesson, lambda e: e.get("type") == "step"
                                    and e.get("step") == 1 and e.get("state") == "done", 90)
            # The hostname (the container's short id) on its own line; drawn
            # with a newline, or by tmux's redraw (cursor moves) when the
            # terminal attached at a size other than the session's.
            seen = b""
            while not re.search(rb"(\n|\x1b\[[0-9;]*H)[0-9a-f]{12}\r", seen):
                seen += await asyncio.wait_for(term.recv(), 10)
            return step, seen

    step, seen = asyncio.run(run())
    assert step["state"] == "done"
    assert b"6973" not in seen  # command-end marks never reach the page
    page = ada.get(f"/lessons/{SLUG}/").read().decode()
    assert re.search(r'data-step="1"\s+data-state="done"', page)


def test_reload_reattaches_to_the_same_shell(live_site):
    ada = Learner(live_site.url)
    ada.signup("ada2")
    node = started_node(ada)

    async def type_and_read(text: bytes, expect: bytes) -> bytes:
        async with ada.connect(f"/ws/nodes/{node}/terminal/?cols=80&rows=24") as term:
            await term.send(text)
            seen = b""
            while expect not in seen:
                seen += await asyncio.wait_for(term.recv(), 15)
            return seen

    asyncio.run(type_and_read(b"export KEPT=across-reloads\r", b"#"))
    assert b"across-reloads" in asyncio.run(type_and_read(b"echo got-$KEPT\r", b"got-across"))


def test_another_learner_cannot_reach_the_terminal(live_site):
    ada, eve = Learner(live_site.url), Learner(live_site.url)
    ada.signup("ada3")
    eve.signup("eve")
    node = started_node(ada)

    async def attempt():
        async with eve.connect(f"/ws/nodes/{node}/terminal/") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return closed.value.rcvd.code

    assert asyncio.run(attempt()) == 4403


def test_unknown_lesson_is_404(live_site):
    with pytest.raises(urllib.error.HTTPError) as err:
        Learner(live_site.url).get("/lessons/no-such-lesson/")
    assert err.value.code == 404
