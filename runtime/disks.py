"""A node's own disk: a sparse ext4 image, loop-mounted (both drivers use it).

Its size (LAB_NODE_DISK) caps what the node can write, inodes included, and a
full disk stays the node's problem, not the host's.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from .model import LabRuntimeError
from .paths import base_dir, file_lock

# How a node's disk is mounted. nobarrier: the node's fsyncs (containerd's and
# dockerd's bolt databases at every start, a learner's apt and builds) write
# through the loop device into the host's page cache, instead of each one
# also making the host flush the image file to its own disk (1.07 ms against
# 0.03 ms an fdatasync here). A node's disk has no life past a host crash
# anyway: saves freeze and copy it (persist.py), which flushes it first.
MOUNT_OPTIONS = "loop,nosuid,nodev,nobarrier"


def make(directory: Path, size: int, subdirs=()) -> Path:
    """Create directory/disk.img of `size` bytes, mount it on directory/fs; return fs."""
    image, fs = directory / "disk.img", directory / "fs"
    with open(image, "wb") as f:
        f.truncate(size)
    _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E",
          "lazy_itable_init=1,lazy_journal_init=1", str(image)])
    fs.mkdir(exist_ok=True)
    _run(["mount", "-o", MOUNT_OPTIONS, str(image), str(fs)])
    for sub in subdirs:
        (fs / sub).mkdir(parents=True, exist_ok=True)
    return fs


def from_template(directory: Path, size: int, subdirs=()) -> Path:
    """As `make`, from a copy of the empty disk made once per size (`template`):
    a third of what mkfs.ext4 costs a start."""
    copy_sparse(template(size), directory / "disk.img")
    fs = mount(directory)
    for sub in subdirs:
        (fs / sub).mkdir(parents=True, exist_ok=True)
    return fs


def template(size: int) -> Path:
    """A fresh, empty node disk of `size` bytes (`make`'s file system), made
    once per size: a node copies it (`from_template`: its few MiB of metadata;
    the rest is a hole), which costs a cold start a third of what mkfs.ext4 does."""
    path = base_dir() / "disk-templates" / f"empty-{size}.img"
    if path.exists():
        return path
    with file_lock("disk-templates.lock"):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.parent / f".making-{secrets.token_hex(4)}"
            try:
                scratch.mkdir()
                image = scratch / "disk.img"
                make(scratch, size)
                _run(["umount", str(scratch / "fs")])
                os.replace(image, path)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return path


def copy_sparse(source: Path, target: Path) -> None:
    """Copy a sparse file's data extents only (shutil would write out the holes)."""
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            size = os.fstat(src).st_size
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError:  # ENXIO: only a hole is left
                    break
                end = os.lseek(src, start, os.SEEK_HOLE)
                while start < end:
                    done = os.copy_file_range(src, dst, end - start, start, start)
                    if done <= 0:
                        raise LabRuntimeError(f"could not copy the node disk {source}")
                    start += done
                offset = end
            os.ftruncate(dst, size)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def mount(directory: Path) -> Path:
    """Mount an existing directory/disk.img (a restored node's) on directory/fs."""
    fs = directory / "fs"
    fs.mkdir(exist_ok=True)
    # A disk saved from a node that was killed mid-write: the journal is replayed here.
    _run(["mount", "-o", MOUNT_OPTIONS, str(directory / "disk.img"), str(fs)])
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
