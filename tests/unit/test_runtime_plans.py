"""The runtime's pure plans: network names, firewall rules and cgroup limits."""
from __future__ import annotations

import pytest

from runtime import firewall, netplan
from runtime.builtin import ALLOWED_DEVICES, cgroup_limit_writes
from runtime.limits import node_limits, size as _size
from runtime.model import LabRuntimeError


def test_session_network_numbers():
    net = netplan.session_net(7, prefix="10.213")
    assert (net.bridge, net.subnet, net.gateway) == ("labbr7", "10.213.7.0/24", "10.213.7.1")
    assert net.node_address(1) == "10.213.7.2"
    with pytest.raises(ValueError):
        netplan.session_net(0)


def test_nodes_never_reach_another_session_or_link_local_or_host_services():
    rules = firewall.forward_rules("mirrors", ["192.0.2.53"], ["198.51.100.7"])
    assert ["-i", "labbr+", "-o", "labbr+", "-j", "DROP"] in rules
    assert ["-i", "labbr+", "-d", "169.254.0.0/16", "-j", "DROP"] in rules
    # Only DNS to the resolver and HTTP(S) to the mirror are let out, then a reject.
    accepts = [r for r in rules if r[-1] == "ACCEPT" and "-d" in r]
    assert {r[r.index("-d") + 1] for r in accepts} == {"192.0.2.53", "198.51.100.7"}
    assert rules[-2][-4:] == ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]
    host = firewall.input_rules(5000)
    assert ["-p", "tcp", "--dport", "5000", "-j", "ACCEPT"] in host
    assert host[-1][:2] == ["-j", "REJECT"]


def test_egress_policies():
    assert ["-i", "labbr+", "-j", "ACCEPT"] in firewall.forward_rules("open", [], [])
    none = firewall.forward_rules("none", ["192.0.2.53"], ["198.51.100.7"])
    assert not [r for r in none if "-d" in r and r[-1] == "ACCEPT"]


def test_bad_egress_setting_is_refused(monkeypatch):
    monkeypatch.setenv("LAB_EGRESS", "sometimes")
    with pytest.raises(LabRuntimeError, match="LAB_EGRESS"):
        firewall.egress_policy()


def test_limits_from_settings(monkeypatch):
    monkeypatch.setenv("LAB_NODE_MEMORY", "512m")
    monkeypatch.setenv("LAB_NODE_PIDS", "300")
    monkeypatch.setenv("LAB_NODE_CPUS", "0.5")
    writes = cgroup_limit_writes(node_limits())
    assert ("memory", "memory.limit_in_bytes", str(512 * 2**20)) in writes
    assert ("pids", "pids.max", "300") in writes
    assert ("cpu", "cpu.cfs_quota_us", "50000") in writes
    # Devices: everything denied first, then only the listed character devices.
    devices = [w for w in writes if w[0] == "devices"]
    assert devices[0] == ("devices", "devices.deny", "a")
    assert [w[2] for w in devices[1:]] == list(ALLOWED_DEVICES)
    assert not any(rule.startswith("b ") for rule in ALLOWED_DEVICES)


def test_bad_limit_is_refused(monkeypatch):
    monkeypatch.setenv("LAB_NODE_MEMORY", "lots")
    with pytest.raises(LabRuntimeError, match="LAB_NODE_MEMORY"):
        node_limits()
    assert _size("1.5g") == int(1.5 * 2**30)


def test_pool_nodes_count_as_room_not_load(monkeypatch):
    """A host whose warm pool holds forty ready nodes has room for forty learners
    more than its node count says: each start takes one of them."""
    from runtime import hostinfo
    monkeypatch.setenv("LAB_MAX_NODES", "50")
    monkeypatch.setattr(hostinfo, "mem_available", lambda: 64 * 2**30)
    full_of_pool = hostinfo.load(50, pool=40)
    assert (full_of_pool["nodes_now"], full_of_pool["room"], full_of_pool["pool_ready"]) == (10, 40, 40)
    assert hostinfo.load(50)["room"] == 0


def test_the_node_listing_sees_every_change_of_a_node_file(runtime_dir):
    """list_nodes keeps what it parsed of files that have not changed; a node
    saved again, even within the file system's clock tick and with a file of
    the same size, is seen as it is now, and a removed one is gone."""
    import os
    import shutil

    from runtime.builtin.driver import BuiltinDriver
    from runtime.model import Node

    driver = BuiltinDriver()
    for i in range(3):
        (driver._node_dir(f"n{i}")).mkdir(parents=True)
        driver._save(Node(id=f"n{i}", session="s1", name=f"node{i}", driver="builtin",
                          extra={"state": "running"}))
    assert [n.id for n in driver.list_nodes()] == ["n0", "n1", "n2"]
    # The same inode (as a freed one given back may be), size and time (one
    # clock tick) as before: still read again, since it changed lately.
    path = driver._node_dir("n1") / "node.json"
    before = os.stat(path)
    path.write_text(path.read_text().replace('"running"', '"stopped"'))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (os.stat(path).st_ino, os.stat(path).st_size) == (before.st_ino, before.st_size)
    assert {n.id: n.extra["state"] for n in driver.list_nodes()}["n1"] == "stopped"
    # Settled files come from the last listing; a changed one is read.
    driver.SETTLED_NS = 0
    assert driver.list_nodes()[1].extra["state"] == "stopped"
    driver._save(Node(id="n1", session="s2", name="node1", driver="builtin",
                      extra={"state": "running!"}))
    assert [(n.session, n.extra["state"]) for n in driver.list_nodes()][1] == ("s2", "running!")
    shutil.rmtree(driver._node_dir("n0"))
    assert [n.id for n in driver.list_nodes()] == ["n1", "n2"]
