"""`python -m runtime bench`: figures of the runtime, measured here and now.

A report, not a test: machines are noisy, so it prints medians and tails
and asserts nothing. Every node it starts is removed, also on failure.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import statistics
import subprocess
import time
from pathlib import Path

from . import images
from .builtin import node_cgroup_dirs, _cgroup_procs
from .model import Driver, NodeSpec

log = logging.getLogger(__name__)


def percentile(values: list, pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def node_pss_bytes(node_id: str) -> int:
    """Proportional set size of every process of a node (nested containers too)."""
    pids = set()
    for path in node_cgroup_dirs(node_id):
        if path.exists():
            pids.update(_cgroup_procs(path))
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def dir_size_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", "--one-file-system", str(path)], capture_output=True,
                         text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else 0


async def bench_node_start(driver: Driver, count: int) -> dict:
    session = "bench" + secrets.token_hex(3)
    times, pss = [], []
    try:
        for i in range(count):
            began = time.perf_counter()
            node = await driver.start(NodeSpec(session=session, name=f"node{i + 1}"))
            times.append(time.perf_counter() - began)
        # Idle: give dockerd and containerd a moment to settle after start-up.
        await asyncio.sleep(5)
        for node in driver.list_nodes():
            if node.session == session:
                pss.append(node_pss_bytes(node.id))
        stops = []
        for node in [n for n in driver.list_nodes() if n.session == session]:
            began = time.perf_counter()
            await driver.stop(node.id)
            stops.append(time.perf_counter() - began)
    finally:
        await driver.stop_session(session)
    return {"start": times, "idle_pss": pss, "stop": stops}


def report(driver: Driver, count: int = 10) -> str:
    figures = asyncio.run(bench_node_start(driver, count))
    ms = [t * 1000 for t in figures["start"]]
    stop_ms = [t * 1000 for t in figures["stop"]]
    mib = [b / 2**20 for b in figures["idle_pss"]]
    image = images.current_image()
    lines = [
        f"driver: {driver.name}",
        f"node start, cold (n={len(ms)}): median {statistics.median(ms):.0f} ms, "
        f"p95 {percentile(ms, 95):.0f} ms, min {min(ms):.0f} ms, max {max(ms):.0f} ms",
        f"node stop (n={len(stop_ms)}): median {statistics.median(stop_ms):.0f} ms, "
        f"max {max(stop_ms):.0f} ms",
        f"idle node memory, PSS of all its processes (n={len(mib)}): "
        f"median {statistics.median(mib):.1f} MiB, max {max(mib):.1f} MiB",
        f"node image: {dir_size_bytes(image) / 2**20:.0f} MiB on disk ({image.name})",
    ]
    return "\n".join(lines)
