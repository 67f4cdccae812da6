"""The node image: a Debian root filesystem with a Docker engine, built once.

The image is a plain directory used read-only as the lower layer of every
node's overlayfs, so creating a node copies nothing. It is keyed by a hash of
its recipe (package list, suite and the files in nodeimage/), and rebuilt
only when the recipe changes.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from .model import LabRuntimeError
from .paths import images_dir

log = logging.getLogger(__name__)

SUITE = "bookworm"
PACKAGES = (
    "docker.io", "tini", "iproute2", "iptables", "iputils-ping", "bridge-utils",
    "curl", "procps", "bash", "bash-completion", "nano", "vim-tiny", "less",
    "ca-certificates", "tmux", "git", "kmod", "netcat-openbsd", "dnsutils",
)
NODEIMAGE_FILES = Path(__file__).with_name("nodeimage")

# Where each recipe file goes inside the root filesystem, and its mode.
INSTALL = {
    "lab-init": ("usr/local/sbin/lab-init", 0o755),
    "lab.bashrc": ("etc/lab.bashrc", 0o644),
    "lab-ran": ("usr/local/bin/lab-ran", 0o755),
    "lab-icmp": ("usr/local/bin/lab-icmp", 0o755),
    "tmux.conf": ("etc/tmux.conf", 0o644),
    "containerd.toml": ("etc/lab/containerd.toml", 0o644),
}


def host_apt_sources() -> list:
    """The host's apt source files: nodes install from the same mirror the host uses."""
    found = [p for p in ["/etc/apt/sources.list"] if os.path.exists(p) and _has_deb_lines(p)]
    found += sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    found += sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    if not found:
        raise LabRuntimeError("no apt sources found in /etc/apt: the node image is built "
                              "from Debian packages; configure apt first", permanent=True)
    return found


def _has_deb_lines(path: str) -> bool:
    with open(path) as f:
        return any(line.strip().startswith("deb") for line in f)


def recipe_hash() -> str:
    h = hashlib.sha256()
    h.update(SUITE.encode())
    h.update(b"iptables-legacy")
    h.update("\n".join(PACKAGES).encode())
    for name in sorted(INSTALL):
        h.update(name.encode())
        h.update((NODEIMAGE_FILES / name).read_bytes())
    return h.hexdigest()[:16]


def image_path(digest: str | None = None) -> Path:
    return images_dir() / f"node-{digest or recipe_hash()}"


def current_image() -> Path:
    """The built image for the current recipe; a clear error if it is missing."""
    path = image_path()
    if not (path / "usr/sbin/dockerd").exists():
        raise LabRuntimeError("the node image is not built: run `python -m runtime images build` "
                              "(or `make run`)", permanent=True)
    return path


def build_node_image(force: bool = False) -> Path:
    """Build the node image if its recipe changed; return its path."""
    target = image_path()
    if target.exists() and not force:
        log.info("node image up to date: %s", target)
        return target
    if not shutil.which("mmdebstrap"):
        raise LabRuntimeError("mmdebstrap is missing: apt-get install mmdebstrap", permanent=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*", SUITE, str(tmp), *host_apt_sources()]
    log.info("building node image %s (a minute or two)", target.name)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabRuntimeError("building the node image failed:\n" + proc.stdout[-3000:])
    # The node's engine runs iptables some 70 times before its API answers:
    # the legacy backend answers faster in a node's fresh network namespace.
    for tool in ("iptables", "ip6tables"):
        done = subprocess.run(["chroot", str(tmp), "update-alternatives", "--set", tool,
                               f"/usr/sbin/{tool}-legacy"], capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LabRuntimeError(f"setting {tool} to its legacy backend in the node image "
                                  f"failed: {done.stderr.strip()}")
    for name, (dest, mode) in INSTALL.items():
        path = tmp / dest
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(NODEIMAGE_FILES / name, path)
        path.chmod(mode)
    with open(tmp / "etc/bash.bashrc", "a") as f:
        f.write("\n[ -r /etc/lab.bashrc ] && . /etc/lab.bashrc\n")
    # Mount points the node fills at start; overlayfs needs them in a layer.
    for d in ("var/lib/docker", "sys/fs/cgroup", "dev/pts", "dev/shm", "run", "proc"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    (tmp / "etc/lab-image").write_text(target.name + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)
    log.info("node image ready: %s", target)
    return target

