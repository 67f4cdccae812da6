"""Where the runtime keeps its images and node state on the host."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def base_dir() -> Path:
    # One directory holds everything, so an operator can see (and remove) it all.
    return Path(os.environ.get("LAB_RUNTIME_DIR", "/var/lib/dockerlab"))


def images_dir() -> Path:
    # Node images may be shared by several runtimes on one machine (the test
    # cluster's sandbox hosts): LAB_IMAGES_DIR. They are only ever read there.
    return Path(os.environ.get("LAB_IMAGES_DIR") or base_dir() / "images")


def nodes_dir() -> Path:
    return base_dir() / "nodes"


def sessions_dir() -> Path:
    return base_dir() / "sessions"


@contextlib.contextmanager
def try_file_lock(name: str):
    """Like file_lock, but yields False at once (holding nothing) when another
    process has the lock, True when this one got it."""
    path = base_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def file_lock(name: str):
    """An exclusive lock on base_dir()/NAME, held across every process on this host."""
    path = base_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
