"""Limits both drivers share: per node (LAB_NODE_*) and for the whole host."""
from __future__ import annotations

import os

from .model import LabRuntimeError


def size(text: str) -> int:
    """Bytes of a size setting: 512m, 2g, 1048576."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    text = text.strip().lower().rstrip("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def node_limits() -> dict:
    """Per-node limits from the environment (LAB_NODE_MEMORY/DISK/PIDS/CPUS)."""
    try:
        return {"memory": size(os.environ.get("LAB_NODE_MEMORY", "2g")),
                "disk": size(os.environ.get("LAB_NODE_DISK", "20g")),
                "pids": int(os.environ.get("LAB_NODE_PIDS", "2048")),
                "cpus": float(os.environ.get("LAB_NODE_CPUS", "1.0"))}
    except (ValueError, IndexError) as e:
        raise LabRuntimeError(f"bad node limit setting (LAB_NODE_MEMORY/DISK/PIDS/CPUS): {e}",
                              permanent=True) from None


def capacity() -> dict:
    """The global limits: LAB_MAX_NODES and LAB_MEMORY_HEADROOM (memory kept free)."""
    try:
        return {"max_nodes": int(os.environ.get("LAB_MAX_NODES", "250")),
                "headroom": size(os.environ.get("LAB_MEMORY_HEADROOM", "2g")),
                # What a new idle node takes, so the headroom still holds after it.
                "per_node": size(os.environ.get("LAB_NODE_MEMORY_ESTIMATE", "96m"))}
    except (ValueError, IndexError) as e:
        raise LabRuntimeError(f"bad capacity setting (LAB_MAX_NODES/LAB_MEMORY_HEADROOM): {e}",
                              permanent=True) from None


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0
