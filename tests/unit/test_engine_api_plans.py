"""The docker driver's Engine API requests: the same node as the CLI's `docker create`."""
from __future__ import annotations

import json

from runtime import NodeSpec, dockerplan, seccomp
from runtime.dockerapi import EngineAPI, label_filter

LIMITS = {"memory": 2 << 30, "disk": 20 << 30, "pids": 2048, "cpus": 1.5}
SPEC = NodeSpec(session="s1", name="node1")


def body(**kw):
    return dockerplan.create_body(SPEC, "0123456789ab", "lab-node:x", LIMITS, **kw)


def test_the_create_body_asks_for_what_run_argv_asks_the_cli_for():
    made = body()
    host = made["HostConfig"]
    assert "Privileged" not in host and "Devices" not in host
    assert host["CapAdd"] == ["SYS_ADMIN", "NET_ADMIN"]
    (profile,) = host["SecurityOpt"]
    assert json.loads(profile.removeprefix("seccomp=")) == dockerplan.seccomp_profile()
    assert host["CgroupnsMode"] == "private" and host["Sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert host["Binds"] == ["lab-0123456789ab-docker:/var/lib/docker"]
    assert host["NetworkMode"] == "lab-s1" and "Mounts" not in host
    assert (host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (2 << 30, 2 << 30, 2048)
    assert host["NanoCpus"] == 1_500_000_000
    assert made["NetworkingConfig"] == {"EndpointsConfig": {"lab-s1": {"Aliases": ["node1"]}}}
    assert made["Hostname"] == "node1" and made["Image"] == "lab-node:x"
    assert made["Cmd"] == [dockerplan.INIT_PATH] and made["StopTimeout"] == 2
    labels = made["Labels"]
    assert (labels["lab.node"], labels["lab.session"], labels["lab.name"]) == (
        "0123456789ab", "s1", "node1")
    assert set(seccomp.DENIED) <= set(json.loads(profile[8:])["syscalls"][0]["names"])


def test_the_nodes_files_come_in_a_read_only_bind_then_are_copied_into_place():
    made = body(apparmor=True, root_dir="/d/fs/root", files_dir="/d/fs/files")
    host = made["HostConfig"]
    assert "apparmor=unconfined" in host["SecurityOpt"]
    assert host["Binds"] == ["lab-0123456789ab-docker:/var/lib/docker", "/d/fs/root:/root",
                             f"/d/fs/files:{dockerplan.FILES_DIR}:ro"]
    shell = made["Cmd"]
    assert shell[:2] == ["/bin/sh", "-c"]
    assert shell[2] == (f"cp -a {dockerplan.FILES_DIR}/. / && umount -l {dockerplan.FILES_DIR} "
                        f"&& exec {dockerplan.INIT_PATH}")


def test_the_api_is_used_for_unix_sockets_only():
    assert EngineAPI.for_host("unix:///run/x.sock").sock_path == "/run/x.sock"
    assert EngineAPI.for_host("tcp://10.0.0.1:2376") is None
    assert EngineAPI.for_host("ssh://me@host") is None
    assert EngineAPI.for_host(None) is None
    assert label_filter("lab.node", "lab.session=s1") == {
        "filters": '{"label": ["lab.node", "lab.session=s1"]}'}
