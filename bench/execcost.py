"""`python -m bench.execcost`: what one command run in a node costs the
machine, by the way it enters the node, side by side in one run.

A node command (a check, the motd, a terminal, the recorder's control
client) is a chain of processes started by the site: the seccomp helper
entering the node itself (`--enter`, the built-in driver's way), or the
helper, a shell joining the node's cgroups and nsenter (the way before
2026-12-03, still the way without a C compiler). Both run `true` in one
node, alternated in rounds, through the same `hostexec.run_limited` the
driver's exec uses; the figures are CPU per command: the started processes'
(reaped children) and this process's own.

A report, never a test. The node it starts is removed at the end, also on
failure.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import statistics
import sys
import time

from runtime import get_driver, hostexec, seccomp
from runtime.builtin.cgroups import entry_dirs
from runtime.model import NodeSpec

WAYS = {"helper --enter": False, "helper, sh, nsenter": True}


def cpu() -> tuple:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime, me.ru_utime + me.ru_stime


async def measure(rounds: int, per_round: int) -> list:
    driver = get_driver("builtin")
    session = f"bench-exec-{int(time.time())}"
    node = await driver.start(NodeSpec(session=session, name="node1"))
    try:
        pid = node.extra["pid"]
        userns = bool(node.extra.get("uid_base"))
        figures = {way: [] for way in WAYS}
        for _ in range(rounds):
            for way, by_shell in WAYS.items():
                limit, inner = hostexec.inner_timeout(["true"], 30)
                argv, preexec = seccomp.enter(pid, userns, entry_dirs(node.id), inner,
                                              by_shell=by_shell)
                await hostexec.run_limited(argv, limit, 30, preexec_fn=preexec)  # (warm)
                (c0, s0), t0 = cpu(), time.perf_counter()
                for _ in range(per_round):
                    done = await hostexec.run_limited(argv, limit, 30, preexec_fn=preexec)
                    if done.exit_code != 0:
                        raise RuntimeError(f"{way}: exit {done.exit_code}: {done.output}")
                (c1, s1), t1 = cpu(), time.perf_counter()
                figures[way].append(((c1 - c0) * 1000 / per_round, (s1 - s0) * 1000 / per_round,
                                     (t1 - t0) * 1000 / per_round))
    finally:
        await driver.stop_session(session)
    lines = [f"python -m bench.execcost: {time.strftime('%Y-%m-%d %H:%M %Z')}, `true` in one "
             f"node, {rounds} alternated rounds of {per_round}; ms per command, median of "
             f"the rounds"]
    lines.append(f"  {'way into the node':24} {'processes':>9} {'caller':>7} {'all':>7} {'wall':>7}")
    for way, rows in figures.items():
        kids, own, wall = (statistics.median(r[i] for r in rows) for i in range(3))
        lines.append(f"  {way:24} {kids:9.2f} {own:7.2f} {kids + own:7.2f} {wall:7.2f}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.execcost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print("\n".join(asyncio.run(measure(args.rounds, args.per_round))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
