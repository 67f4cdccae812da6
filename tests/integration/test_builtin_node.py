"""What only the built-in driver has: its init, its network, the host traces
it must leave none of, and the CLI. The driver contract itself (exec,
terminals, sessions, files, failed starts...) is tests/integration/test_contract.py,
run against this driver and the docker one."""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from pathlib import Path

import pytest

from runtime import netplan
from runtime.builtin import node_cgroup_dirs
from runtime.model import NodeNotFound

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


def test_the_nodes_containerd_collects_garbage_on_a_timer_not_a_spin(nodes):
    """containerd 1.6's default pause_threshold rescheduled its collector
    every few ms on a node's near-empty database: 10 ms of CPU a second per
    idle node (runtime/nodeimage/containerd.toml). The running daemon says
    which threshold it took."""
    node = nodes.start(name="node1")
    shown = nodes.sh(node, "ctr --address /var/run/docker/containerd/containerd.sock "
                           "plugins ls -d id==scheduler").output
    assert re.search(r"^\s*PauseThreshold\s+0$", shown, re.M), shown


def test_node_has_its_own_network_with_egress_and_dns(nodes):
    node = nodes.start()
    addrs = nodes.exec(node, ["ip", "-4", "-o", "addr", "show", "eth0"]).output
    assert node.address in addrs
    assert nodes.exec(node, ["ping", "-c1", "-W3", node.extra["gateway"]]).exit_code == 0
    # The host's resolver answers through the session's NAT.
    lookup = nodes.exec(node, ["getent", "hosts", "deb.debian.org"], timeout=20)
    assert lookup.exit_code == 0, lookup.output


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


def test_an_engine_on_the_hosts_docker_socket_never_answers_for_a_node(nodes):
    """A machine that runs its own Docker engine has it on /run/docker.sock,
    the path where a node's engine appears once the node has its own root.
    Before that, the host's engine answered for the node, which was then
    "ready" without a root of its own (no ping, /root unreadable, no dockerd)."""
    import contextlib
    import os
    import socket
    import threading
    host_sock = "/run/docker.sock"
    server = None
    if not os.path.exists(host_sock):
        # No engine of the host's here: stand one in that answers /info.
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(host_sock)
        server.listen(16)
        server.settimeout(0.2)
        stop = threading.Event()

        def serve():
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    conn, _ = server.accept()
                    conn.recv(256)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    conn.close()
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
    try:
        from runtime.hostexec import engine_answers
        assert engine_answers(host_sock)  # the host's socket answers, as an engine's would
        node = nodes.start()
        out = nodes.sh(node, "docker info --format '{{.Name}}' && command -v ping && "
                             "touch /root/probe && echo own-root")
        assert out.exit_code == 0, out.output
        assert out.output.split() == ["node1", "/usr/bin/ping", "own-root"], out.output
    finally:
        if server is not None:
            stop.set()
            thread.join()
            server.close()
            os.unlink(host_sock)


def test_a_terminal_and_the_recorder_attaching_to_a_fresh_node_at_once_both_get_its_shell(
        nodes, driver):
    """Two tmux clients that both start a node's tmux server at once made it
    exit ("server exited unexpectedly"): the page's terminal closed as soon
    as it opened (CI: the reload test; 5 of 8 fresh nodes here before the
    fix). The session is now made under a lock first (runtime/model.py)."""
    async def race(node_id):
        control, term = await asyncio.gather(driver.open_control(node_id),
                                             driver.open_terminal(node_id))
        got = b""
        try:
            async with asyncio.timeout(20):
                while b"# " not in got:
                    chunk = await term.read()
                    assert chunk, f"the terminal closed: {got[-300:]!r}"
                    got += chunk
            control.stdin.write(b"has-session -t main\n")
            async with asyncio.timeout(20):
                reply = b""
                while b"%end" not in reply and b"%error" not in reply:
                    line = await control.stdout.readline()
                    assert line, f"the control client ended: {reply!r}"
                    reply += line
            return reply
        finally:
            await term.close()
            await driver.stop(node_id)  # its tmux client with it, then ours ends
            with contextlib.suppress(ProcessLookupError):
                control.kill()
            await asyncio.wait_for(control.wait(), 30)

    for _ in range(3):
        assert b"%end" in asyncio.run(race(nodes.start().id))
