"""A built-in node: starts with a real Docker engine, runs commands, and leaves no trace."""
from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from runtime import netplan
from runtime.builtin import BuiltinDriver, node_cgroup_dirs
from runtime.model import LabRuntimeError, NodeNotFound

from .conftest import run_cli


def traces(node_id: str) -> list:
    """Everything of a node that could be left on the host."""
    found = []
    mounts = Path("/proc/self/mountinfo").read_text()
    if node_id in mounts:
        found.append("mount")
    host_if, _ = netplan.veth_names(node_id)
    if Path(f"/sys/class/net/{host_if}").exists():
        found.append("veth")
    found += [f"cgroup {p}" for p in node_cgroup_dirs(node_id) if p.exists()]
    if (Path("/var/lib/dockerlab/nodes") / node_id).exists():
        found.append("directory")
    for loop in Path("/sys/block").glob("loop*/loop/backing_file"):
        if node_id in loop.read_text():
            found.append(f"loop device {loop.parent.parent.name}")
    for proc in Path("/proc").glob("[0-9]*/cgroup"):
        try:
            if f"/{node_id}" in proc.read_text():
                found.append(f"process {proc.parent.name}")
        except OSError:
            pass
    return found


def traces_after_stop(node_id: str, seconds: float = 10) -> list:
    """traces(), once the host's init has had a moment to reap the launcher's zombie."""
    deadline = time.monotonic() + seconds
    while (found := traces(node_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_node_runs_a_real_docker_engine(nodes):
    node = nodes.start(name="node1")
    info = nodes.exec(node, ["docker", "info", "--format", "{{.ServerVersion}} {{.Driver}}"])
    assert info.exit_code == 0, info.output
    assert "overlay2" in info.output
    assert nodes.exec(node, ["hostname"]).output.strip() == "node1"
    # PID 1 is the node's own init, not the host's.
    assert "tini" in nodes.sh(node, "cat /proc/1/cmdline").output


def test_exec_reports_exit_code_output_and_timeouts(nodes):
    node = nodes.start()
    result = nodes.sh(node, "echo out; echo err >&2; exit 7")
    assert result.exit_code == 7
    assert "out" in result.output and "err" in result.output
    began = time.monotonic()
    slow = nodes.exec(node, ["sleep", "30"], timeout=1)
    assert slow.timed_out and time.monotonic() - began < 10
    # The timed-out command is gone from the node, not left running.
    assert "sleep 30" not in nodes.exec(node, ["ps", "ax"]).output
    fed = nodes.exec(node, ["cat"], input=b"typed input")
    assert fed.output == "typed input"


def test_node_has_its_own_network_with_egress_and_dns(nodes):
    node = nodes.start()
    addrs = nodes.exec(node, ["ip", "-4", "-o", "addr", "show", "eth0"]).output
    assert node.address in addrs
    assert nodes.exec(node, ["ping", "-c1", "-W3", node.extra["gateway"]]).exit_code == 0
    # The host's resolver answers through the session's NAT.
    lookup = nodes.exec(node, ["getent", "hosts", "deb.debian.org"], timeout=20)
    assert lookup.exit_code == 0, lookup.output


def test_nodes_of_a_session_reach_each_other_by_name(nodes):
    session = nodes.session()
    one = nodes.start(session, "node1")
    two = nodes.start(session, "node2")
    assert one.extra["bridge"] == two.extra["bridge"]
    assert nodes.exec(one, ["ping", "-c1", "-W3", "node2"]).exit_code == 0
    assert nodes.exec(two, ["ping", "-c1", "-W3", "node1"]).exit_code == 0


def test_stop_removes_every_trace_and_is_repeatable(nodes, driver):
    session = nodes.session()
    node = nodes.start(session)
    # Something nested, so the cleanup has containers' processes to deal with too.
    nodes.sh(node, "sleep 1000 & exit 0")
    assert traces(node.id), "a running node should be visible"
    net = node.extra["bridge"]
    asyncio.run(driver.stop(node.id))
    assert traces_after_stop(node.id) == []
    # The session is empty, so its bridge and NAT rules went with it.
    assert not Path(f"/sys/class/net/{net}").exists()
    asyncio.run(driver.stop(node.id))  # already gone: still success
    with pytest.raises(NodeNotFound):
        driver.get_node(node.id)


def test_a_new_process_finds_existing_nodes_from_their_state(nodes):
    node = nodes.start()
    fresh = BuiltinDriver()
    assert fresh.get_node(node.id).address == node.address
    assert asyncio.run(fresh.poll(node.id)) is None
    assert asyncio.run(fresh.exec(node.id, ["true"])).exit_code == 0


def test_exec_in_a_missing_node_is_a_clear_error(driver):
    with pytest.raises(NodeNotFound):
        asyncio.run(driver.exec("doesnotexist", ["true"]))


def test_two_nodes_with_one_name_in_a_session_are_refused(nodes):
    session = nodes.session()
    nodes.start(session, "node1")
    with pytest.raises(LabRuntimeError, match="already has a node"):
        nodes.start(session, "node1")


def test_terminal_reattaches_to_the_same_shell_and_marks_command_ends(nodes, driver):
    from runtime.termmarks import MarkParser
    node = nodes.start()

    async def session():
        async def read_until(term, parser, pred, seconds=10):
            seen, codes = b"", []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not pred(seen, codes):
                try:
                    chunk = await asyncio.wait_for(term.read(), 0.5)
                except asyncio.TimeoutError:
                    continue
                clean, found = parser.feed(chunk)
                seen, codes = seen + clean, codes + found
            return seen, codes

        term = await driver.open_terminal(node.id, 90, 20)
        parser = MarkParser()
        await read_until(term, parser, lambda s, c: b"#" in s)
        # `tr`: tmux may draw a space as a cursor move, so print none.
        await term.write(b"stty size | tr ' ' x; LAB_T=kept; (exit 3)\r")
        seen, codes = await read_until(term, parser, lambda s, c: c)
        assert codes == [3] and b"20x90" in seen
        assert b"6973" not in seen  # marks never reach the learner's screen
        term.resize(100, 30)
        await term.write(b"stty size | tr ' ' x\r")
        seen, codes = await read_until(term, parser, lambda s, c: c)
        assert b"30x100" in seen
        await term.close()

        again = await driver.open_terminal(node.id, 100, 30)
        await again.write(b"echo value=$LAB_T\r")
        seen, _ = await read_until(again, MarkParser(), lambda s, c: b"value=kept" in s)
        await again.close()
        assert b"value=kept" in seen

    asyncio.run(session())


def test_cli_creates_execs_lists_and_removes_a_node(nodes):
    session = nodes.session()
    created = run_cli("node", "create", "--session", session, "--name", "node1")
    assert created.returncode == 0, created.stderr
    node_id = created.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", node_id)
    ran = run_cli("node", "exec", node_id, "--", "sh", "-c", "echo from-node; exit 5")
    assert ran.returncode == 5 and "from-node" in ran.stdout
    listed = json.loads(run_cli("node", "ls", "--json").stdout)
    assert any(n["id"] == node_id and n["session"] == session for n in listed)
    removed = run_cli("session", "rm", session)
    assert removed.returncode == 0 and node_id in removed.stdout
    assert traces_after_stop(node_id) == []
    bad = run_cli("node", "exec", "nosuchnode", "--", "true")
    assert bad.returncode == 1 and "no node" in bad.stderr


def test_spec_files_are_placed_in_the_node(nodes, driver):
    from runtime import NodeSpec
    session = nodes.session()
    node = asyncio.run(driver.start(NodeSpec(session=session, files=(
        ("/root/app/index.html", "<h1>hi</h1>\n"),
        ("/root/app/logo.bin", bytes(range(256))),
        ("/root/app/run.sh", "#!/bin/sh\necho ran\n", 0o755),
    ))))
    nodes.sessions.add(session)
    assert nodes.exec(node, ["cat", "/root/app/index.html"]).output == "<h1>hi</h1>\n"
    assert nodes.exec(node, ["wc", "-c", "/root/app/logo.bin"]).output.split()[0] == "256"
    assert nodes.exec(node, ["/root/app/run.sh"]).output == "ran\n"


def test_a_failed_start_says_why_and_leaves_nothing(nodes, driver, monkeypatch):
    import runtime.builtin as builtin
    from runtime import NodeSpec
    monkeypatch.setattr(builtin, "START_TIMEOUT", 0.01)
    session = nodes.session()
    before = set(Path("/var/lib/dockerlab/nodes").iterdir())
    with pytest.raises(LabRuntimeError, match="did not answer"):
        asyncio.run(driver.start(NodeSpec(session=session)))
    # The half-made node's directory, state, bridge and session are all gone.
    assert set(Path("/var/lib/dockerlab/nodes").iterdir()) == before
    assert not Path(f"/var/lib/dockerlab/sessions/{session}.json").exists()
