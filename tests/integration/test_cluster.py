"""Three sandbox hosts on this machine, as a cluster: learners placed across
them, lesson 1 on each through its own gateway, one host killed.

The hosts are network namespaces with their own address, runtime directory,
uid range, cgroup parent and registry, each running a real node worker (with
its heartbeat), checks worker and gateway (tests/support/cluster.py); the
site runs Daphne, its workers, beat, Redis and PostgreSQL. The site's own
machine is drained, so every learner lands on a host.
"""
from __future__ import annotations

import asyncio
import collections
import json
import re
import time

import psycopg

from tests.support.cluster import cluster_site, done_steps, host_rows, leftovers
from tests.support.labclient import Learner, next_event

SLUG = "first-containers"
LEARNERS = 6


def step_done(step: int):
    return lambda e: e.get("type") == "step" and e.get("step") == step and e.get("state") == "done"


async def ready_session(learner: Learner, lesson, resume: bool = False) -> dict:
    """Start the lesson (or reuse the running lab) while its page's socket
    `lesson` is open; the session event once it is ready."""
    reply = await asyncio.to_thread(learner.start, SLUG, resume)
    assert reply.get("ok", True), reply
    session = reply
    if reply.get("state") != "ready":
        session = await next_event(lesson, lambda e: e.get("type") == "session"
                                   and e.get("state") in ("ready", "failed"), 120)
    assert session["state"] == "ready", session
    return session


async def start_and_finish_step(learner: Learner, step: int, command: bytes) -> dict:
    """Start the lesson (or reuse the running lab), then type `command` in the
    node's terminal, opened as the page opens it; returns the session event."""
    async with learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
        session = await ready_session(learner, lesson)
        async with learner.terminal(session["node"]) as term:
            await term.send(command + b"\r")
            await next_event_or_output(lesson, term, step_done(step), 90)
        return session


async def next_event_or_output(lesson, term, wanted, seconds):
    """The lesson event `wanted`, while the terminal's output is drained."""
    async def drain():
        while True:
            await term.recv()
    drainer = asyncio.ensure_future(drain())
    try:
        return await next_event(lesson, wanted, seconds)
    finally:
        drainer.cancel()


async def publish(learner: Learner, command: bytes) -> dict:
    """Type `command` in the learner's running lab; the ports event that follows."""
    async with learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
        session = await next_event(lesson, lambda e: e.get("type") == "session", 30)
        async with learner.terminal(session["node"]) as term:
            await term.send(command + b"\r")
            return await next_event_or_output(lesson, term, lambda e: e.get("type") == "ports"
                                              and any(p["port"] == 8080 for p in e["ports"]), 120)


def sessions_by_host(database_url: str) -> dict:
    with psycopg.connect(database_url) as db:
        rows = db.execute(
            "SELECT u.username, h.name, s.state FROM labs_labsession s "
            "JOIN auth_user u ON u.id = s.user_id LEFT JOIN labs_sandboxhost h ON h.id = s.host_id "
            "ORDER BY s.id").fetchall()
    return rows


def node_ids_on(database_url: str, host: str) -> list:
    """Runtime ids of every node ever placed on `host`."""
    with psycopg.connect(database_url) as db:
        rows = db.execute(
            "SELECT n.runtime_id FROM labs_labnode n JOIN labs_labsession s ON s.id = n.session_id "
            "JOIN labs_sandboxhost h ON h.id = s.host_id WHERE h.name = %s AND n.runtime_id <> ''",
            (host,)).fetchall()
    assert rows, f"no nodes were ever placed on {host}"
    return [runtime_id for (runtime_id,) in rows]


async def stop_and_resume_elsewhere(learner: Learner, database_url: str) -> None:
    async with learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
        await next_event(lesson, lambda e: e.get("type") == "session", 30)
        await asyncio.to_thread(learner.post, f"/lessons/{SLUG}/stop")
        await next_event(lesson, lambda e: e.get("type") == "machine" and e.get("state") == "saved", 120)
        await next_event(lesson, lambda e: e.get("type") == "session" and e.get("state") == "stopped", 60)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE labs_sandboxhost SET state = 'draining' WHERE name = 'h1'")
    async with learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
        session = await ready_session(learner, lesson, resume=True)
        async with learner.terminal(session["node"]) as term:
            await term.send(b"docker container ls --format 'up-{{.Image}}'\r")
            seen = b""
            async with asyncio.timeout(60):
                while b"up-nginx" not in seen:  # (the typed line shows "up-{{.Image}}")
                    chunk = await term.recv()
                    seen += chunk if isinstance(chunk, bytes) else chunk.encode()


def test_three_hosts_share_a_class_and_one_dies_without_losing_progress():
    with cluster_site(3) as (site, cluster):
        db = cluster.database_url
        learners = {f"learner{i}": Learner(site.url, names=cluster.names())
                    for i in range(LEARNERS)}
        for name, learner in learners.items():
            learner.signup(name)

        async def everyone():
            return await asyncio.gather(*(start_and_finish_step(
                learner, 1, b"docker container run alpine hostname")
                for learner in learners.values()))
        asyncio.run(everyone())

        # Spread over the three hosts, none on the drained site machine; each
        # learner's step 1 was checked on their host and recorded in PostgreSQL.
        placed = collections.Counter(host for _, host, _ in sessions_by_host(db))
        assert placed == {"h1": 2, "h2": 2, "h3": 2}, placed
        assert {(name, 1) for name in learners} <= done_steps(db)
        on_h3 = sorted(name for name, host, _ in sessions_by_host(db) if host == "h3")

        # A published port of a node on h1 opens on h1's gateway, under h1's
        # ports domain, through the site's link (which signs the way in).
        on_h1 = next(name for name, host, _ in sessions_by_host(db) if host == "h1")
        event = asyncio.run(publish(learners[on_h1], b"docker run -d -p 8080:80 nginx"))
        (port,) = [p for p in event["ports"] if p["port"] == 8080]
        with learners[on_h1].get(port["url"]) as response:
            assert response.geturl() == f"http://n{event['node']}-8080.h1.lab.test:8001/"
            assert "Welcome to nginx" in response.read().decode()
        assert '"GET /.lab/enter' in cluster.host("h1").wait_logged("gateway", '"GET /.lab/enter')  # h1 let her in

        # Her terminal was recorded on h1; the site serves the replay from h1's
        # gateway, with its own timeline merged in.
        dashboard = learners[on_h1].get("/dashboard/").read().decode()
        (replay,) = re.findall(r'href="(/replays/\d+/)"', dashboard)
        lines = learners[on_h1].get(replay + "node1.cast").read().decode().splitlines()
        events = [json.loads(line) for line in lines[1:]]
        assert "docker container run alpine hostname" in "".join(e[2] for e in events if e[1] == "o")
        assert "step 1 done" in [e[2] for e in events if e[1] == "m"]
        assert '"GET /recordings/' in cluster.host("h1").wait_logged("gateway", '"GET /recordings/')

        # h3 dies: its processes and nodes are SIGKILLed at once. The pages of
        # its learners are open and hear it.
        async def watch_loss(name, opened):
            async with learners[name].connect(f"/ws/lessons/{SLUG}/") as lesson:
                await next_event(lesson, lambda e: e.get("type") == "session", 30)
                opened.release()
                return await next_event(lesson, lambda e: e.get("type") == "session"
                                        and e.get("state") == "lost", 60)

        async def kill_and_watch():
            opened = asyncio.Semaphore(0)
            watchers = [asyncio.ensure_future(watch_loss(name, opened)) for name in on_h3]
            for _ in on_h3:
                await opened.acquire()
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.host("h3").kill)
            events = await asyncio.gather(*watchers)
            return events, time.monotonic() - killed_at
        events, failover = asyncio.run(kill_and_watch())
        print(f"failover: both pages on h3 said so {failover:.1f} s after its death")
        for event in events:
            assert "(h3) stopped answering" in event["error"], event
            assert "progress is saved" in event["error"]
        assert failover < 30
        assert host_rows(db)["h3"][0] == "lost"

        # They start again: new machines on the hosts that are there, step 1
        # still done, step 2 done on the new machine (which needs a stopped
        # container to list: the old one went with h3).
        async def start_again():
            await asyncio.gather(*(start_and_finish_step(
                learners[name], 2, b"docker container run alpine true && docker container ls --all")
                for name in on_h3))
        asyncio.run(start_again())
        rows = sessions_by_host(db)
        for name in on_h3:
            mine = [(host, state) for user, host, state in rows if user == name]
            assert mine[0] == ("h3", "stopped") and mine[-1][0] in ("h1", "h2"), mine
            assert (name, 1) in done_steps(db) and (name, 2) in done_steps(db)
        assert {(name, 1) for name in learners} <= done_steps(db)  # nobody lost a step

        # h3 comes back: it reaps the nodes it had before it takes sessions.
        h3 = cluster.host("h3")
        h3.start()
        cluster.wait_ready([h3])
        deadline = time.monotonic() + 60
        while host_rows(db)["h3"][0] != "active" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert host_rows(db)["h3"][0] == "active"
        # Its old nodes were removed before it came back: by the heartbeat's
        # reaping, or by a pool task queued for h3 before it died that its
        # worker ran first; either way the runtime says so for each.
        log_text = h3.wait_logged("nodes", "host h3 is back")
        assert "host h3 is back" in log_text, log_text[-3000:]
        for runtime_id in node_ids_on(db, "h3"):
            assert f"node {runtime_id} removed" in log_text, (runtime_id, log_text[-3000:])
        assert not h3.node_pids()

        # Her machine on h1 is saved when she stops; with h1 drained, Resume
        # brings it back on another host (saves live in one store the hosts
        # share: the test site's LAB_SAVE_DIR), nginx running again.
        asyncio.run(stop_and_resume_elsewhere(learners[on_h1], db))
        rows = [(host, state) for user, host, state in sessions_by_host(db) if user == on_h1]
        assert rows[-2] == ("h1", "stopped") and rows[-1][0] in ("h2", "h3"), rows
        assert "saved as u" in cluster.host("h1").wait_logged("nodes", "saved as u")
    # Every host's processes, nodes, namespaces and cgroups are gone.
    assert leftovers(cluster.tag) == []
