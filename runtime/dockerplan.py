"""What a docker-driver node is, as plain data: names, the engine requests
that make one (the CLI's `docker create` arguments, the Engine API's create
body) and the files it gets before it starts. Pure functions: unit tests
compare them to exact values (runtime/dockerdriver.py sends them)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path
from typing import Optional

from . import seccomp
from .model import LabRuntimeError, NodeSpec
from .paths import base_dir


NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE_ENV = {"PATH": NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm-256color",
            "USER": "root"}
START_TIMEOUT = float(os.environ.get("LAB_NODE_START_TIMEOUT", "60"))
IMAGE_REPO = "lab-node"
LABEL = "lab.node"
ID_RE = re.compile(r"^[0-9a-f]{12}$")
CLI_TIMEOUT = 120.0

# Beyond Docker's default set: mounts and namespaces for the node's own runc
# (SYS_ADMIN), bridges and iptables in the node's network namespace (NET_ADMIN).
NODE_CAPS = ("SYS_ADMIN", "NET_ADMIN")
# Runs before lab-init in every docker-driver node (placed with the node's files).
INIT_PATH = "/usr/local/sbin/lab-docker-init"
INIT_SCRIPT = """#!/bin/sh
# Docker mounts the cgroup file systems of a container that is not privileged
# read-only; the node's own engine must make cgroups for its containers. In
# the node's cgroup namespace these are the node's own cgroups: what it makes
# stays under the node's limits. One perl process remounts them all (a
# `mountpoint` and a `mount` per hierarchy cost a start some 30 ms):
# mount(2) with MS_REMOUNT|MS_BIND and the mount's own nosuid/nodev/noexec.
perl -e 'open(my $m, "<", "/proc/self/mountinfo") or exit 0;
while (<$m>) {
    my @f = split / /;
    next unless $f[4] =~ m{^/sys/fs/cgroup(/|$)} && $f[5] =~ /(^|,)ro(,|$)/;
    my $flags = 32 | 4096;
    $flags |= 2 if $f[5] =~ /nosuid/;
    $flags |= 4 if $f[5] =~ /nodev/;
    $flags |= 8 if $f[5] =~ /noexec/;
    syscall(165, 0, $f[4], 0, $flags, 0) == 0
        or print STDERR "lab-docker-init: $f[4] stays read-only: $!\\n";
}'
exec /usr/local/sbin/lab-init
"""
# With an engine on this host, the node's files (node_files_tar) come in a
# read-only bind mount of a directory on its disk and are copied into place
# by the node's first process (the engine's archive upload runs a helper
# process of its own: ~50 ms a start).
FILES_DIR = "/run/lab-files"
FILES_CMD = ["/bin/sh", "-c", f"cp -a {FILES_DIR}/. / && umount -l {FILES_DIR} && exec {INIT_PATH}"]


def container_name(node_id: str) -> str:
    return f"lab-{node_id}"


def volume_name(node_id: str) -> str:
    return f"lab-{node_id}-docker"


def network_name(session: str) -> str:
    return f"lab-{session}"


def bridge_name(session: str) -> str:
    """The session network's bridge on the host: labbrd + 9 hex digits (15 characters
    at most), so the built-in driver's firewall (labbr+) covers it."""
    return "labbrd" + hashlib.sha1(session.encode()).hexdigest()[:9]


def seccomp_profile() -> dict:
    """Docker's seccomp profile format: everything but the built-in driver's deny list.

    Keyrings are not namespaced: without a user namespace a node's root would
    share the host root's. keyctl and friends answer ENOSYS, which runc takes
    as "no keyrings here" and goes on.
    """
    return {"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": sorted(seccomp.DENIED), "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1},
                         {"names": ["add_key", "keyctl", "request_key"],
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}


def seccomp_profile_path() -> Path:
    """The profile as a file (the docker CLI reads it and sends its content)."""
    path = base_dir() / "docker-node-seccomp.json"
    text = json.dumps(seccomp_profile(), indent=1) + "\n"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def disk_dir(node_id: str) -> Path:
    """A node's own disk, when the engine runs on this host (disks.make)."""
    return base_dir() / "dockernodes" / node_id


def image_tag(image_dir: Path) -> str:
    """`lab-node:<recipe hash>` for the built image directory node-<hash>."""
    return f"{IMAGE_REPO}:{image_dir.name.removeprefix('node-')}"


def import_changes() -> list:
    """Instructions for `docker import`: tini is PID 1, as in the built-in driver."""
    env = " ".join(f"{k}={v}" for k, v in NODE_ENV.items() if k != "TERM")
    return [f"ENV {env}", 'ENTRYPOINT ["/usr/bin/tini", "--"]',
            'CMD ["/usr/local/sbin/lab-init"]']


def run_argv(spec: NodeSpec, node_id: str, image: str, limits: dict, seccomp_file: str,
             apparmor: bool = False, root_dir: Optional[str] = None) -> list:
    """`docker create` arguments for a node (pure: unit tests compare them).

    `apparmor`: the engine's host enforces AppArmor, whose docker-default
    profile forbids every mount; `root_dir`: a host directory for /root (on
    the node's own disk).
    """
    security = [a for cap in NODE_CAPS for a in ("--cap-add", cap)]
    security += ["--security-opt", f"seccomp={seccomp_file}", "--cgroupns", "private",
                 # The node's engine routes for its containers; /proc/sys is read-only.
                 "--sysctl", "net.ipv4.ip_forward=1"]
    if apparmor:
        security += ["--security-opt", "apparmor=unconfined"]
    mounts = ["-v", f"{volume_name(node_id)}:/var/lib/docker"]
    if root_dir:
        mounts += ["--mount", f"type=bind,source={root_dir},target=/root"]
    return ["create", *security, "--name", container_name(node_id),
            "--hostname", spec.name, "--network", network_name(spec.session),
            "--network-alias", spec.name,
            "--label", f"{LABEL}={node_id}", "--label", f"lab.session={spec.session}",
            "--label", f"lab.name={spec.name}",
            "--label", f"lab.created={time.time():.3f}", *mounts,
            "--memory", str(limits["memory"]), "--memory-swap", str(limits["memory"]),
            "--pids-limit", str(limits["pids"]), "--cpus", str(limits["cpus"]),
            "--stop-timeout", "2", image, INIT_PATH]


def node_files_tar(spec: NodeSpec, daemon_json: dict) -> bytes:
    """A tar stream of the files a node gets before it starts (for `docker cp -`)."""
    buf = io.BytesIO()
    entries = [("/etc/docker/daemon.json", json.dumps(daemon_json, indent=1), 0o644),
               (INIT_PATH, INIT_SCRIPT, 0o755)]
    for path, content, *mode in spec.files:
        if not str(path).startswith("/") or ".." in Path(path).parts:
            raise LabRuntimeError(f"file path {path!r} must be absolute, without '..'",
                                  permanent=True)
        entries.append((str(path), content, mode[0] if mode else 0o644))
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = set()
        for path, content, mode in entries:
            parts = Path(path.lstrip("/")).parts
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, time.time()
                    tar.addfile(info)
            data = content.encode() if isinstance(content, str) else bytes(content)
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode, info.mtime = len(data), mode, time.time()
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def create_body(spec: NodeSpec, node_id: str, image: str, limits: dict, apparmor: bool = False,
                root_dir: Optional[str] = None, files_dir: Optional[str] = None) -> dict:
    """The Engine API's POST /containers/create body for a node: what `run_argv`
    asks the CLI for (the container's name goes in the query: ?name=).
    `root_dir`, `files_dir`: host directories for /root and the node's files
    (FILES_CMD); they must exist when the container starts."""
    security = [f"seccomp={json.dumps(seccomp_profile())}"]
    if apparmor:
        security.append("apparmor=unconfined")
    host = {"CapAdd": list(NODE_CAPS), "SecurityOpt": security, "CgroupnsMode": "private",
            "Sysctls": {"net.ipv4.ip_forward": "1"},
            "Binds": [f"{volume_name(node_id)}:/var/lib/docker"],
            "NetworkMode": network_name(spec.session),
            "Memory": int(limits["memory"]), "MemorySwap": int(limits["memory"]),
            "PidsLimit": int(limits["pids"]), "NanoCpus": int(float(limits["cpus"]) * 1e9)}
    if root_dir:
        host["Binds"].append(f"{root_dir}:/root")
    if files_dir:
        host["Binds"].append(f"{files_dir}:{FILES_DIR}:ro")
    return {"Hostname": spec.name, "Image": image, "StopTimeout": 2,
            "Cmd": FILES_CMD if files_dir else [INIT_PATH],
            "Labels": {LABEL: node_id, "lab.session": spec.session, "lab.name": spec.name,
                       "lab.created": f"{time.time():.3f}"},
            "HostConfig": host,
            "NetworkingConfig": {"EndpointsConfig": {
                network_name(spec.session): {"Aliases": [spec.name]}}}}
