"""A node's own disk: a sparse ext4 image, loop-mounted (both drivers use it).

Its size (LAB_NODE_DISK) caps what the node can write, inodes included, and a
full disk stays the node's problem, not the host's.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from .model import LabRuntimeError


def make(directory: Path, size: int, subdirs=()) -> Path:
    """Create directory/disk.img of `size` bytes, mount it on directory/fs; return fs."""
    image, fs = directory / "disk.img", directory / "fs"
    with open(image, "wb") as f:
        f.truncate(size)
    _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E",
          "lazy_itable_init=1,lazy_journal_init=1", str(image)])
    fs.mkdir(exist_ok=True)
    _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(fs)])
    for sub in subdirs:
        (fs / sub).mkdir(parents=True, exist_ok=True)
    return fs


def mount(directory: Path) -> Path:
    """Mount an existing directory/disk.img (a restored node's) on directory/fs."""
    fs = directory / "fs"
    fs.mkdir(exist_ok=True)
    # A disk saved from a node that was killed mid-write: the journal is replayed here.
    _run(["mount", "-o", "loop,nosuid,nodev", str(directory / "disk.img"), str(fs)])
    return fs


def mounted(paths) -> list:
    """Which of `paths` are mount points now (os.path.ismount misses same-fs binds)."""
    wanted = {str(p) for p in paths}
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4] in wanted]


def release(paths) -> None:
    """Lazily unmount those of `paths` that are mounted."""
    for path in mounted(paths):
        subprocess.run(["umount", "-l", path], capture_output=True)


def _run(argv: list) -> None:
    proc = subprocess.run(argv, capture_output=True)
    if proc.returncode:
        raise LabRuntimeError(f"`{' '.join(argv)}` failed: "
                              f"{proc.stderr.decode(errors='replace').strip()}")
