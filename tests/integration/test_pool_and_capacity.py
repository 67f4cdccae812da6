"""Warm pool, capacity limits and the reaper of the built-in driver."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from runtime import NodeSpec
from tests.support.labclient import Learner, next_event
from runtime.model import tmux_make
from runtime.builtin import POOL_SESSION, LabFull
from runtime.builtin.cgroups import freezer_file


@pytest.fixture
def pool(driver):
    """Pool nodes this test makes are removed afterwards (others' are left alone)."""
    before = {n.id for n in driver.pool_nodes()}
    yield
    for node in driver.pool_nodes():
        if node.id not in before:
            asyncio.run(driver.stop(node.id))


def test_start_claims_a_ready_pool_node(nodes, driver, pool, lab_registry):
    before = {n.id for n in driver.pool_nodes()}
    driver.fill_pool(len(driver.pool_nodes()) + 1)
    pooled = {n.id for n in driver.pool_nodes()}
    # Each waits with its terminal's shell started, under the name lessons use.
    for waiting in (n for n in driver.pool_nodes() if n.id not in before):
        assert waiting.name == "node1"
        assert asyncio.run(wait_prompt(driver, waiting.id)) == "[node1] ~#"
    session = nodes.session()
    began = time.monotonic()
    node = asyncio.run(driver.start(NodeSpec(session=session, name="node1", files=(
        ("/root/lesson/readme.txt", "from the lesson\n"),))))
    claimed_in = time.monotonic() - began
    assert node.id in pooled and node.session == session
    assert claimed_in < 2  # a claim, not a cold start (the bench reports the real figure)
    out = nodes.sh(node, "hostname; cat /etc/hostname /root/lesson/readme.txt; "
                         "stat -c %U /root/lesson/readme.txt; "
                         "docker run --rm alpine hostname >/dev/null 2>&1 && echo pulled").output
    assert out.split() == ["node1", "node1", "from", "the", "lesson", "root", "pulled"]
    assert node.address in nodes.exec(node, ["ip", "-4", "-o", "addr", "show", "eth0"]).output
    assert asyncio.run(wait_prompt(driver, node.id)) == "[node1] ~#"
    # A second node of the session, claimed under another name than it waited
    # with, has a new shell, with its name; and reaches the first by name.
    driver.fill_pool(len(driver.pool_nodes()) + 1)
    pooled = {n.id for n in driver.pool_nodes()}
    peer = nodes.start(session, "node2")
    assert peer.id in pooled
    assert asyncio.run(wait_prompt(driver, peer.id, make=True)) == "[node2] ~#"
    assert nodes.exec(peer, ["ping", "-c1", "-W3", "node1"]).exit_code == 0


def test_a_learner_on_a_pool_node_finds_its_shell_waiting_and_checked(live_site, driver, pool):
    """Through the site: the lab starts on a pool node (the site keeps no pool
    of its own here; this test fills one), the terminal opens on the shell
    that waited, and a command typed there is checked as on a fresh node."""
    driver.fill_pool(len(driver.pool_sets(1)) + 1)
    waiting = {n.id for n in driver.pool_nodes() if n.extra.get("pool_set") == 1}
    # Running while they wait: a frozen engine caught up when the claim
    # thawed it, in the class's busiest seconds (runtime/builtin/pool.py).
    assert waiting and all(freezer(node_id) in ("THAWED", "0") for node_id in waiting)
    ada = Learner(live_site.url)
    ada.signup("ada-pool")

    async def run():
        async with ada.connect("/ws/lessons/first-containers/") as lesson:
            assert ada.start("first-containers").get("ok", True)
            ready = await next_event(lesson, lambda e: e.get("type") == "session"
                                     and e.get("state") in ("ready", "failed"), 90)
            assert ready["state"] == "ready", ready
            async with ada.terminal(ready["node"], 100, 30) as term:
                seen = b""
                while b"[node1] ~# " not in seen:
                    seen += await asyncio.wait_for(term.recv(), 15)
                await term.send(b"docker container run alpine hostname\r")
                step = await next_event(lesson, lambda e: e.get("type") == "step"
                                        and e.get("step") == 1, 90)
        return step

    step = asyncio.run(run())
    assert step["state"] == "done", step
    mine = [n for n in driver.list_nodes() if n.session.startswith(live_site.prefix)
            and n.id in waiting]
    assert len(mine) == 1 and mine[0].name == "node1"
    assert freezer(mine[0].id) in ("THAWED", "0")


def freezer(node_id: str) -> str:
    path, _frozen, _thawed = freezer_file(node_id)
    return path.read_text().strip()


async def wait_prompt(driver, node_id: str, make: bool = False, seconds: float = 15) -> str:
    """The last line of the node's terminal once it ends in a prompt ("" if
    none came). make: the terminal's tmux session is made first if there is
    none, as opening the terminal does."""
    if make:
        await driver.exec(node_id, tmux_make("main"))
    deadline = time.monotonic() + seconds
    while True:
        lines = (await driver.capture_terminal(node_id)).strip().splitlines()
        if lines and lines[-1].endswith("#"):
            return lines[-1]
        if time.monotonic() > deadline:
            return ""
        await asyncio.sleep(0.2)


def test_the_lab_refuses_nodes_beyond_its_limit(nodes, driver, monkeypatch):
    monkeypatch.setenv("LAB_MAX_NODES", str(len(driver.list_nodes())))
    with pytest.raises(LabFull, match="the lab is full"):
        nodes.start()
    assert not driver.fill_pool(len(driver.pool_nodes()) + 1)  # the pool never overcommits


def test_memory_headroom_is_kept(nodes, driver, monkeypatch):
    monkeypatch.setenv("LAB_MEMORY_HEADROOM", "100000g")
    with pytest.raises(LabFull, match="no memory to spare"):
        nodes.start()


def test_reaper_removes_a_node_whose_init_died(nodes, driver):
    node = nodes.start()
    os.kill(node.extra["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while asyncio.run(driver.poll(node.id)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.id in driver.reap_dead()
    assert node.id not in {n.id for n in driver.list_nodes()}
    assert POOL_SESSION != node.session


def test_the_reaper_removes_a_session_network_left_without_nodes(driver):
    """A session network whose last node went without it (a pre-built pool
    session's was left by a claim racing a trim) is removed once it is a minute
    old; a younger one may be a session being set up and stays."""
    import secrets
    from pathlib import Path
    from runtime.builtin.common import host_lock
    from runtime.paths import sessions_dir
    old, young = "t" + secrets.token_hex(4), "t" + secrets.token_hex(4)
    try:
        with host_lock():
            old_net, young_net = driver._ensure_session_net(old), driver._ensure_session_net(young)
        assert Path(f"/sys/class/net/{old_net.bridge}").exists()
        long_ago = time.time() - driver.EMPTY_NET_GRACE_SECONDS - 5
        os.utime(sessions_dir() / f"{old}.json", (long_ago, long_ago))
        driver.reap_dead()
        assert not (sessions_dir() / f"{old}.json").exists()
        assert not Path(f"/sys/class/net/{old_net.bridge}").exists()
        assert (sessions_dir() / f"{young}.json").exists()
        assert Path(f"/sys/class/net/{young_net.bridge}").exists()
    finally:
        with host_lock():
            driver._remove_session_net_if_empty(old)
            driver._remove_session_net_if_empty(young)


def test_a_dead_pool_node_is_never_handed_out(nodes, driver, pool):
    new = driver.fill_pool(len(driver.pool_nodes()) + 1)
    dead = driver.get_node(new[0])
    os.kill(dead.extra["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while dead.id in {n.id for n in driver.pool_nodes()} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dead.id not in {n.id for n in driver.pool_nodes()}
    node = nodes.start()
    assert node.id != dead.id
    assert dead.id in driver.reap_dead()


@pytest.fixture
def pool_sets(driver):
    """Pre-built sessions this test makes are removed afterwards, also on failure."""
    from runtime.builtin.pool import is_pool_session
    before = {n.id for n in driver.list_nodes()}
    yield
    for node in driver.list_nodes():
        if node.id not in before and is_pool_session(node.session):
            asyncio.run(driver.stop(node.id))


def test_a_two_node_session_takes_a_whole_pre_built_one(nodes, driver, pool_sets):
    assert len(driver.fill_pool(1, nodes=2)) == 2
    [(pooled, members)] = driver.pool_sets(2)
    assert driver.pool_counts()[2] == 1
    bridge = members[0].extra["bridge"]
    assert {m.extra["bridge"] for m in members} == {bridge}

    session = nodes.session()
    started = [asyncio.run(driver.start(NodeSpec(session=session, name=name, session_nodes=2,
                                                 files=((f"/root/{name}.txt", name),))))
               for name in ("node1", "node2")]
    # Both are the pre-built session's nodes, on its network (now the session's).
    assert {n.id for n in started} == {m.id for m in members}
    assert {n.extra["bridge"] for n in started} == {bridge}
    assert not driver.pool_sets(2) and not any(n.session == pooled for n in driver.list_nodes())
    node1, node2 = started
    out = nodes.sh(node1, "hostname; cat /root/node1.txt; echo; ping -c1 -W3 node2 >/dev/null "
                          "&& echo reached").output
    assert out.split() == ["node1", "node1", "reached"]
    assert nodes.sh(node2, "hostname; ping -c1 -W3 node1 >/dev/null && echo reached"
                    ).output.split() == ["node2", "reached"]
    # A third learner's session of the same lesson with no pre-built one left:
    # cold (or single pool) nodes, as before.
    other = nodes.session()
    third = asyncio.run(driver.start(NodeSpec(session=other, name="node1", session_nodes=2)))
    assert third.session == other and third.extra["bridge"] != bridge


def test_the_pool_shrinks_back(driver, pool_sets):
    driver.fill_pool(1, nodes=2)
    made = {n.id for _, members in driver.pool_sets(2) for n in members}
    trimmed = driver.trim_pool(0, nodes=2)
    assert made <= set(trimmed) and not driver.pool_sets(2)
    assert not made & {n.id for n in driver.list_nodes()}
