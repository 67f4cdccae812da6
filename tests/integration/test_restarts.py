"""Restarting Daphne, Redis or the Celery worker loses no node, no shell and no progress;
nor does a Redis crash.

One learner works through the restarts of every process of the site in
turn; after each, the terminal re-attaches to the same shell and the
checks still turn steps done.
"""
from __future__ import annotations

import asyncio
import re

from tests.support.labclient import Learner, next_event

from .test_lesson_flow import SLUG, event_after_command, started_node


async def type_and_read(learner, node, text: bytes, expect: bytes, seconds=30) -> bytes:
    async with learner.connect(f"/ws/nodes/{node}/terminal/?cols=100&rows=30") as term:
        await term.send(text)
        seen = b""
        while expect not in seen:
            seen += await asyncio.wait_for(term.recv(), seconds)
        return seen


def step_done(step: int):
    """The lesson event of `step` turning done."""
    return lambda e: e.get("type") == "step" and e.get("step") == step and e.get("state") == "done"


async def step_turns_done_across_redis_restart(site, learner, node, command: bytes, step: int,
                                               crash: bool = False):
    """The lesson page stays open while Redis restarts (or crashes and comes
    back empty): its socket must live on and still hear its steps, and a
    terminal opened right after must connect at once."""
    async with learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
        await next_event(lesson, lambda e: e.get("type") == "session", 30)
        await asyncio.to_thread(site.restart, "redis", crash)
        async with learner.connect(f"/ws/nodes/{node}/terminal/?cols=100&rows=30") as term:
            await term.send(command + b"\r")
            return await next_event(lesson, step_done(step), 90)


def test_site_restarts_keep_nodes_shells_and_progress(live_site):
    ada = Learner(live_site.url)
    ada.signup("ada-restarts")
    node = started_node(ada)
    asyncio.run(type_and_read(ada, node, b"export KEPT=through-restarts\r", b"#"))

    live_site.restart("web")
    out = asyncio.run(type_and_read(ada, node, b"echo got-$KEPT\r", b"got-through-restarts"))
    assert b"got-through-restarts" in out

    # The workers find their broker again and step 1 reaches the page that
    # stayed open through the restart.
    event = asyncio.run(step_turns_done_across_redis_restart(
        live_site, ada, node, b"docker container run alpine hostname", 1))
    assert event["state"] == "done"

    live_site.restart("worker")
    live_site.restart("nodes")
    event = event_after_command(ada, node, b"docker container ls --all\r", step_done(2), 90)
    assert event["state"] == "done"

    out = asyncio.run(type_and_read(ada, node, b"echo still-$KEPT\r", b"still-through-restarts"))
    assert b"still-through-restarts" in out
    page = ada.get(f"/lessons/{SLUG}/").read().decode()
    assert re.search(r'data-step="1"\s+data-state="done"', page)
    assert re.search(r'data-step="2"\s+data-state="done"', page)


def test_a_redis_crash_leaves_no_open_page_deaf(live_site):
    # Killed, Redis saves nothing and comes back empty: every channel group is
    # gone. The site notices and puts the open page back into its groups.
    bea = Learner(live_site.url)
    bea.signup("bea-crash")
    node = started_node(bea)
    event = asyncio.run(step_turns_done_across_redis_restart(
        live_site, bea, node, b"docker container run alpine hostname", 1, crash=True))
    assert event["state"] == "done"
    assert "Redis lost its data" in live_site.log("web")
