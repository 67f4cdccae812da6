"""`python -m bench.poolwait`: what a node waiting in the warm pool costs the
machine, frozen (the cgroup freezer) or running idle, side by side in one run.

A class's pool is filled LAB_POOL_LEAD_MINUTES (10) before the class starts
and every node is claimed within the class's first seconds. A running idle
node costs CPU all along the wait; a frozen one costs nothing then, but its
engine catches up when the claim thaws it, in the busiest seconds of the
class. This starts `--nodes` nodes for each way, freezes one half at once,
waits `--wait` seconds, and then prints, by each node's own cgroup
(cpuacct.usage):

- a running node's CPU over the wait, per second;
- a frozen node's CPU in the `--after` seconds after it is thawed;
- a running node's CPU in those same seconds (what the thaw is compared with).

A report, never a test. Its nodes are removed at the end, also on failure.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time

from runtime import get_driver
from runtime.builtin.cgroups import CGROUP_PARENT, CGROUP_ROOT, set_frozen
from runtime.model import NodeSpec


def cpu_ms(node_id: str) -> float:
    """The node's CPU so far (its cgroup's, all its processes), in ms, where
    cgroup v1's cpuacct is mounted (as bench.site reads the nodes' total)."""
    return int((CGROUP_ROOT / "cpuacct" / CGROUP_PARENT / node_id / "cpuacct.usage")
               .read_text()) / 1e6


async def measure(nodes: int, wait: float, after: float) -> list:
    driver = get_driver("builtin")
    session = f"bench-poolwait-{int(time.time())}"
    frozen, running = [], []
    try:
        for i in range(2 * nodes):
            node = await driver.start(NodeSpec(session=session, name=f"node{i + 1}"))
            (frozen if i % 2 == 0 else running).append(node.id)
        # Let the starts settle before the wait is counted.
        await asyncio.sleep(5)
        for node_id in frozen:
            set_frozen(node_id, True)
        began = {n: cpu_ms(n) for n in running}
        began_at = time.monotonic()
        await asyncio.sleep(wait)
        waited = time.monotonic() - began_at
        idle = [(cpu_ms(n) - began[n]) / waited for n in running]
        # The claim's moment, both ways: thawed (frozen ones), as they were (running ones).
        before = {n: cpu_ms(n) for n in frozen + running}
        for node_id in frozen:
            set_frozen(node_id, False)
        await asyncio.sleep(after)
        thaw = [cpu_ms(n) - before[n] for n in frozen]
        same = [cpu_ms(n) - before[n] for n in running]
    finally:
        for node_id in frozen:
            set_frozen(node_id, False)  # (a frozen process dies only once thawed)
        await driver.stop_session(session)

    def show(values):
        return (f"median {statistics.median(values):7.2f}  min {min(values):7.2f}  "
                f"max {max(values):7.2f}")
    return [
        f"python -m bench.poolwait: {time.strftime('%Y-%m-%d %H:%M %Z')}, {nodes} node(s) each "
        f"way, waited {waited:.0f} s",
        f"  {'running, over the wait (ms of CPU a second)':48} {show(idle)}",
        f"  {f'running, the {after:g} s of a claim (ms)':48} {show(same)}",
        f"  {f'frozen, the {after:g} s after its thaw (ms)':48} {show(thaw)}",
        f"  a pool of 40 waiting {wait / 60:.0f} min: running "
        f"{40 * statistics.median(idle) * waited / 1000:.1f} s of CPU spread over the wait; "
        f"frozen {40 * statistics.median(thaw) / 1000:.2f} s as the class arrives",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.poolwait", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="nodes each way (default 3)")
    parser.add_argument("--wait", type=float, default=600,
                        help="seconds the nodes wait (default 600: the pool's lead time)")
    parser.add_argument("--after", type=float, default=2.0,
                        help="seconds looked at after the thaw (default 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print("\n".join(asyncio.run(measure(args.nodes, args.wait, args.after))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
