"""`python -m bench.cluster` (`make bench-cluster`): the lab as a cluster, measured.

The site (Daphne, its workers, beat, Redis, PostgreSQL) and three sandbox
hosts, each a network namespace of this machine with its own node worker,
checks worker and gateway (tests/support/cluster.py). LEARNERS learners sign
up and finish lesson 1 step 1 at once, each through the terminal the page
would open (their host's gateway); then the keystroke echo is measured through
a host's gateway and through the site's own socket (a learner placed on the
site's machine), side by side; then one host is SIGKILLed with its nodes while
its learners' pages are open, and the time until each page says so is taken.
Progress lost: steps done before the death that are not done after it.

A report: nothing is asserted. The last line reads
`hosts 3, learners 30, placed A/B/C, failover P95 X s, progress lost N`.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import sys
import time

import psycopg

from bench.runtime import percentile
from bench.site import PROMPT, SLUG, Term, fmt, summary, type_keys
from tests.support.cluster import cluster_site, done_steps
from tests.support.labclient import Learner, next_event

log = logging.getLogger("bench.cluster")


def now() -> float:
    return time.perf_counter()


async def open_terminal(learner: Learner, node: int) -> Term:
    """The node's terminal where the page opens it, settled at a prompt."""
    term = Term(await learner.terminal(node, cols=100, rows=30))
    await term.drain()
    await term.ws.send(b"\x15\r")
    await term.until(lambda b: PROMPT in b, 30)
    await term.drain(0.2)
    return term


async def learner_flow(site_url: str, name: str, timeout: float) -> dict:
    """Sign up, start lesson 1, run step 1 in the terminal: the times taken."""
    learner = Learner(site_url)
    await asyncio.to_thread(learner.signup, name)
    result = {"name": name, "learner": learner}
    async with learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
        t0 = now()
        reply = await asyncio.to_thread(learner.start, SLUG)
        event = reply if reply.get("state") == "ready" else await next_event(
            lesson, lambda e: e.get("type") == "session" and e.get("state") in ("ready", "failed"),
            timeout)
        if event["state"] != "ready":
            raise RuntimeError(f"{name}: start failed: {event.get('error')}")
        result["start"] = now() - t0
        result["node"] = event["node"]
        term = await open_terminal(learner, event["node"])
        try:
            t1 = now()
            await term.ws.send(b"docker container run alpine hostname\r")
            drain = asyncio.ensure_future(term.drain(60, timeout))
            await next_event(lesson, lambda e: e.get("type") == "step" and e.get("step") == 1
                             and e.get("state") == "done", timeout)
            result["step"] = now() - t1
            drain.cancel()
        finally:
            await term.ws.close()
    return result


def placements(database_url: str) -> dict:
    """{username: host name} of the live sessions."""
    with psycopg.connect(database_url) as db:
        return dict(db.execute(
            "SELECT u.username, h.name FROM labs_labsession s JOIN auth_user u ON u.id = s.user_id "
            "JOIN labs_sandboxhost h ON h.id = s.host_id WHERE s.state = 'ready'").fetchall())


async def echo(learner: Learner, node: int, keys: int) -> dict:
    term = await open_terminal(learner, node)
    try:
        return summary(await type_keys(term, keys, (0.05, 0.1)))
    finally:
        await term.ws.close()


async def failover(cluster, victims: dict, host_name: str) -> tuple:
    """Kill `host_name` while the pages of `victims` ({name: Learner}) are open:
    seconds from the death to each page hearing of it."""
    opened = asyncio.Semaphore(0)
    killed = {}

    async def page(learner):
        async with learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
            await next_event(lesson, lambda e: e.get("type") == "session", 30)
            opened.release()
            await next_event(lesson, lambda e: e.get("type") == "session"
                             and e.get("state") == "lost", 120)
            return now() - killed["at"]
    pages = [asyncio.ensure_future(page(learner)) for learner in victims.values()]
    for _ in victims:
        await opened.acquire()
    killed["at"] = now()
    await asyncio.to_thread(cluster.host(host_name).kill)
    return dict(zip(victims, await asyncio.gather(*pages)))


async def measure(site, cluster, args) -> dict:
    db = cluster.database_url
    r = {}
    t0 = now()
    flows = await asyncio.gather(*(learner_flow(site.url, f"b{i}", args.timeout)
                                   for i in range(args.learners)))
    r["class_seconds"] = now() - t0
    where = placements(db)
    r["placed"] = collections.Counter(where.values())
    by_host = collections.defaultdict(lambda: {"start": [], "step": []})
    for flow in flows:
        by_host[where[flow["name"]]]["start"].append(flow["start"])
        by_host[where[flow["name"]]]["step"].append(flow["step"])
    r["by_host"] = dict(by_host)

    # Echo: a node on a host (through its gateway) and one on the site's own
    # machine (through the site), the same keys at the same pace.
    # One learner alone on h1 and one alone on the site's own machine: start
    # and step 1 with nothing else going on, remote against local.
    remote = flows[0]
    for host in cluster.hosts[1:]:
        site.manage("hosts", "drain", host.name)
    alone = await learner_flow(site.url, "b-h1-alone", args.timeout)
    site.manage("hosts", "activate", "local")
    site.manage("hosts", "drain", "h1")
    local = await learner_flow(site.url, "b-local", args.timeout)
    for host in cluster.hosts:
        site.manage("hosts", "activate", host.name)
    site.manage("hosts", "drain", "local")
    where = placements(db)
    r["local_host"] = where.get("b-local")
    r["alone"] = {f"{where.get('b-h1-alone')} (remote)": alone,
                  f"{r['local_host']} (the site)": local}
    r["echo_remote"] = await echo(remote["learner"], remote["node"], args.keys)
    r["echo_local"] = await echo(local["learner"], local["node"], args.keys)

    # One host dies with its nodes.
    victim = "h3"
    before = done_steps(db)
    victims = {f["name"]: f["learner"] for f in flows if where[f["name"]] == victim}
    r["failover"] = await failover(cluster, victims, victim)
    after = done_steps(db)
    r["progress_lost"] = len(before - after)
    return r


def render(r: dict, args) -> str:
    lines = [f"bench.cluster: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"3 sandbox hosts (network namespaces of this machine), {args.learners} learners",
             f"class of {args.learners} through step 1: {r['class_seconds']:.1f} s", "",
             f"{'host':<6} {'learners':>8}  {'start (s)':<44} step 1 done (s)"]
    for host in sorted(r["by_host"]):
        times = r["by_host"][host]
        lines.append(f"{host:<6} {len(times['start']):>8}  {fmt(summary(times['start']), 's', 2):<44} "
                     f"{fmt(summary(times['step']), 's', 2)}")
    lines.append("")
    for label, flow in r["alone"].items():
        lines.append(f"one learner alone on {label}: start {flow['start']:.2f} s, "
                     f"step 1 done {flow['step']:.2f} s")
    lines += ["",
              f"keystroke echo through h1's gateway:   {fmt(r['echo_remote'])}",
              f"keystroke echo through the site ({r['local_host']}): {fmt(r['echo_local'])}",
              ""]
    seconds = sorted(r["failover"].values())
    p95 = percentile(seconds, 95) if seconds else float("nan")
    for name, value in sorted(r["failover"].items()):
        lines.append(f"h3 killed: {name}'s page said so after {value:.1f} s")
    placed = "/".join(str(r["placed"].get(h, 0)) for h in ("h1", "h2", "h3"))
    lines += [f"progress lost: {r['progress_lost']} step(s)", "",
              f"hosts 3, learners {args.learners}, placed {placed}, failover P95 {p95:.1f} s, "
              f"progress lost {r['progress_lost']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--learners", type=int, default=30)
    parser.add_argument("--keys", type=int, default=60, help="keystrokes per echo sample")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    room = str(args.learners // 3 + 4)  # each host can take its third of the class, and more
    with cluster_site(3, extra_env={"LAB_HOST_TIMEOUT": "15", "LAB_HOST_HEARTBEAT_SECONDS": "5"},
                      host_env={"LAB_MAX_NODES": room}) as (site, cluster):
        result = asyncio.run(measure(site, cluster, args))
    print(render(result, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
