"""What a sandbox host tells the site about itself: its load and its versions.

The site places a learner's session on the host with the most room (see
labs/sandboxes/hosts.py); a host whose code or image recipes differ from the
site's is not given sessions, since its nodes would not be the lessons' nodes.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from .limits import capacity, mem_available

ROOT = Path(__file__).resolve().parent.parent

# What a node is made of: the runtime, and the recipes of the lessons' images.
RECIPE_FILES = ("runtime/images.py", "runtime/lessonimages.py")


def load(node_count: int, pool: int = 0) -> dict:
    """This machine's load with `node_count` nodes running, `pool` of them
    waiting in the warm pool: its node limit, how many more learners' nodes
    fit (by that limit and by the memory kept free; a pool node is room, since
    a start takes it) and the memory available."""
    limits = capacity()
    free = mem_available()
    by_memory = max(0, (free - limits["headroom"]) // limits["per_node"])
    room = max(0, min(limits["max_nodes"] - (node_count - pool), by_memory + pool))
    return {"max_nodes": limits["max_nodes"], "nodes_now": node_count - pool, "room": int(room),
            "memory_free": free, "pool_ready": pool}


def _digest(paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """A digest of the lab's code (runtime/ and labs/ Python files)."""
    files = sorted(p for top in ("runtime", "labs") for p in (ROOT / top).rglob("*.py")
                   if "__pycache__" not in p.parts)
    return _digest(files)


@functools.lru_cache(maxsize=None)
def recipe_version() -> str:
    """A digest of what the lessons' images are made from."""
    return _digest([ROOT / name for name in RECIPE_FILES])
