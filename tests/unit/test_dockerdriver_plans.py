"""The docker driver's pure plans: what a node container is given instead of --privileged."""
from __future__ import annotations

import re

from runtime import NodeSpec, dockerdriver, seccomp

LIMITS = {"memory": 2 << 30, "disk": 20 << 30, "pids": 2048, "cpus": 1.0}


def argv(**kw):
    return dockerdriver.run_argv(NodeSpec(session="s1", name="node1"), "0123456789ab",
                                 "lab-node:x", LIMITS, "/p/seccomp.json", **kw)


def pairs(args, flag):
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_a_node_is_not_privileged_but_gets_what_its_engine_needs():
    args = argv()
    assert "--privileged" not in args
    assert pairs(args, "--cap-add") == ["SYS_ADMIN", "NET_ADMIN"]
    assert pairs(args, "--security-opt") == ["seccomp=/p/seccomp.json"]
    assert pairs(args, "--cgroupns") == ["private"]
    assert not pairs(args, "--device") and "--pid" not in args and "--network=host" not in args
    # The node's init makes its cgroups writable, then becomes lab-init.
    assert args[-2:] == ["lab-node:x", dockerdriver.INIT_PATH]
    assert "exec /usr/local/sbin/lab-init" in dockerdriver.INIT_SCRIPT


def test_apparmor_and_the_nodes_own_root_dir_when_asked():
    args = argv(apparmor=True, root_dir="/d/fs/root")
    assert "apparmor=unconfined" in pairs(args, "--security-opt")
    assert "type=bind,source=/d/fs/root,target=/root" in pairs(args, "--mount")
    assert not pairs(argv(), "--mount")


def test_the_seccomp_profile_denies_the_built_in_list_and_keyrings():
    profile = dockerdriver.seccomp_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    denied, keyrings = profile["syscalls"]
    assert set(denied["names"]) == set(seccomp.DENIED) and denied["errnoRet"] == 1
    assert {"bpf", "init_module", "kexec_load", "open_by_handle_at"} <= set(denied["names"])
    assert keyrings["names"] == ["add_key", "keyctl", "request_key"]
    assert keyrings["errnoRet"] == 38  # ENOSYS: runc goes on without a session keyring


def test_session_bridges_fall_under_the_lab_firewall():
    names = {dockerdriver.bridge_name(f"s{i}") for i in range(200)}
    assert len(names) == 200
    for name in names:
        assert re.fullmatch(r"labbrd[0-9a-f]{9}", name) and len(name) <= 15
        assert name.startswith("labbr")  # runtime/firewall.py's BRIDGES is labbr+
