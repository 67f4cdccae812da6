"""Where the runtime keeps its images and node state on the host."""
from __future__ import annotations

import os
from pathlib import Path


def base_dir() -> Path:
    # One directory holds everything, so an operator can see (and remove) it all.
    return Path(os.environ.get("LAB_RUNTIME_DIR", "/var/lib/dockerlab"))


def images_dir() -> Path:
    return base_dir() / "images"


def nodes_dir() -> Path:
    return base_dir() / "nodes"


def sessions_dir() -> Path:
    return base_dir() / "sessions"


def lock_path() -> Path:
    return base_dir() / "lock"
