"""Warm pool, capacity limits and the reaper of the built-in driver."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from runtime import NodeSpec
from runtime.builtin import POOL_SESSION, LabFull


@pytest.fixture
def pool(driver):
    """Pool nodes this test makes are removed afterwards (others' are left alone)."""
    before = {n.id for n in driver.pool_nodes()}
    yield
    for node in driver.pool_nodes():
        if node.id not in before:
            asyncio.run(driver.stop(node.id))


def test_start_claims_a_ready_pool_node(nodes, driver, pool, lab_registry):
    driver.fill_pool(len(driver.pool_nodes()) + 1)
    pooled = {n.id for n in driver.pool_nodes()}
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
    # A second node of the session, cold or claimed, reaches the first by name.
    peer = nodes.start(session, "node2")
    assert nodes.exec(peer, ["ping", "-c1", "-W3", "node1"]).exit_code == 0


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
