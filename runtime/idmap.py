"""Idmapped mounts: show a directory with its owners shifted into a node's uid range.

Every node shares one read-only node image whose files belong to host root.
Inside a node's user namespace host root is nobody, so the image is mounted
through an idmapped mount (Linux 5.12+) made with the node's user namespace:
file owner 0 on disk then reads as the node's root, and nothing is copied.
util-linux 2.38 cannot make these mounts, so we call the syscalls directly.
"""
from __future__ import annotations

import ctypes
import os
import platform

from .model import LabRuntimeError

# Syscall numbers are shared by x86_64 and aarch64 for these new-style calls.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x00100000


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise LabRuntimeError(f"{what} failed: {os.strerror(err)} (this kernel may lack "
                              "idmapped mounts, Linux 5.12+ on ext4/xfs/btrfs)")
    return result


def idmapped_bind(source: str, target: str, userns_path: str, readonly: bool = True) -> None:
    """Bind `source` at `target` with ownership mapped through the user namespace."""
    if platform.machine() not in ("x86_64", "aarch64"):
        raise LabRuntimeError(f"idmapped mounts are not wired for {platform.machine()}",
                              permanent=True)
    tree = _check(_libc.syscall(SYS_OPEN_TREE, -100, source.encode(),
                                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), "open_tree")
    try:
        userns = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            attr = MountAttr(attr_set=MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID
                             | (MOUNT_ATTR_RDONLY if readonly else 0), userns_fd=userns)
            _check(_libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH,
                                 ctypes.byref(attr), ctypes.sizeof(attr)), "mount_setattr")
        finally:
            os.close(userns)
        _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", -100, target.encode(),
                             MOVE_MOUNT_F_EMPTY_PATH), "move_mount")
    finally:
        os.close(tree)
