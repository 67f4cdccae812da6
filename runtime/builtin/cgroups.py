"""The cgroups of a node (cgroup v1 hierarchies under dockerlab/): where they
are, what limits them, which processes they hold."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path


log = logging.getLogger(__name__)


CGROUP_ROOT = Path("/sys/fs/cgroup")


CGROUP_PARENT = os.environ.get("LAB_CGROUP_PARENT", "dockerlab")


# Character devices a node may use (its /dev holds just these, and pty slaves).
ALLOWED_DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                   "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm")


def cgroup_limit_writes(limits: dict) -> list:
    """(hierarchy, file, value) writes that confine one node, in order."""
    memory = str(limits["memory"])
    return [
        ("memory", "memory.limit_in_bytes", memory),
        ("memory", "memory.memsw.limit_in_bytes", memory),  # no swap to escape into
        ("pids", "pids.max", str(limits["pids"])),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", str(int(limits["cpus"] * 100000))),
        ("devices", "devices.deny", "a"),
        *[("devices", "devices.allow", rule) for rule in ALLOWED_DEVICES],
    ]


def cgroup_hierarchies() -> list:
    """[(directory under /sys/fs/cgroup, mount options)] for every mounted hierarchy.

    Read from the host's mount table so it works on v1, v2 and hybrid hosts.
    """
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, _source, superopts = right.split()[:3]
            mountpoint = fields[4]
            if not mountpoint.startswith(str(CGROUP_ROOT) + "/") and mountpoint != str(CGROUP_ROOT):
                continue
            name = os.path.relpath(mountpoint, CGROUP_ROOT)
            if fstype == "cgroup2":
                found.append((name if name != "." else "unified", "cgroup2"))
            elif fstype == "cgroup":
                opts = [o for o in superopts.split(",") if o not in ("rw", "ro", "relatime")]
                found.append((name, ",".join(opts)))
    return found


def node_cgroup_dirs(node_id: str, hierarchies: list | None = None) -> list:
    """The node's directory in each hierarchy (of `hierarchies`: cgroup_hierarchies())."""
    dirs = []
    for name, _opts in cgroup_hierarchies() if hierarchies is None else hierarchies:
        mountpoint = CGROUP_ROOT if name == "unified" and not (CGROUP_ROOT / name).exists() \
            else CGROUP_ROOT / name
        dirs.append(mountpoint / CGROUP_PARENT / node_id)
    return dirs


def node_pids(node_id: str) -> set:
    """Every process of a node, the nested containers' too (its cgroups say)."""
    pids = set()
    for path in node_cgroup_dirs(node_id):
        if path.exists():
            pids.update(_cgroup_procs(path))
    return pids


def _cgroup_procs(path: Path) -> list:
    pids = []
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def freezer_file(node_id: str, hierarchies: list | None = None):
    """(file, frozen, thawed): the node's freezer, cgroup v1's freezer
    hierarchy where one is mounted, else v2's cgroup.freeze; None if neither."""
    hierarchies = cgroup_hierarchies() if hierarchies is None else hierarchies
    dirs = node_cgroup_dirs(node_id, hierarchies)
    for (_name, opts), path in zip(hierarchies, dirs):
        if "freezer" in opts.split(","):
            return path / "freezer.state", "FROZEN", "THAWED"
    for (_name, opts), path in zip(hierarchies, dirs):
        if opts == "cgroup2":
            return path / "cgroup.freeze", "1", "0"
    return None


def set_frozen(node_id: str, frozen: bool, hierarchies: list | None = None) -> bool:
    """Freeze a node's processes (they keep their memory, and use no CPU
    until thawed) or thaw them. The lab freezes none now (pool nodes wait
    running: runtime/builtin/pool.py says why), but anything entering a node
    thaws it first, as the claim of a pool node does: a process joining a
    frozen cgroup would stop there, and an older version froze waiting pool
    nodes. False if the node has no freezer (gone, or none on this host)."""
    found = freezer_file(node_id, hierarchies)
    if found is None:
        return False
    path, on, off = found
    try:
        path.write_text(on if frozen else off)
    except OSError:  # (the node is gone)
        return False
    return True


def entry_dirs(node_id: str) -> list:
    """The node's cgroup directories, for a process entering the node to
    join, its freezer thawed first: a process joining a frozen cgroup (a
    waiting pool node) would stop there. One read of the mount table for
    both, on the path of every exec and terminal."""
    hierarchies = _hierarchies_once()
    set_frozen(node_id, False, hierarchies)
    return node_cgroup_dirs(node_id, hierarchies)


@functools.cache
def _hierarchies_once() -> list:
    """cgroup_hierarchies(), read once per process for entry_dirs: they are
    mounted at boot and stay, and parsing the mount table was a tenth of an
    exec's CPU in the site's process."""
    return cgroup_hierarchies()


def _prepare_cpuset(path: Path) -> None:
    # A v1 cpuset cgroup takes no task until cpus and mems are set; copy the parent's.
    for part in (path.parent, path):
        for knob in ("cpuset.cpus", "cpuset.mems"):
            target = part / knob
            if target.exists() and not target.read_text().strip():
                target.write_text((part.parent / knob).read_text())
