"""`python -m bench.classstart`: a class arriving through its join link, with
and without the warm pool sized from the classroom's schedule.

A report, never a test. It starts the real site with Celery beat
(tests/support/livesite.py), LAB_POOL_SIZE=2 as the default, saves off (a stop
here should not spend its time packing disks), and two classrooms of the
first lesson:

- "no schedule pool": a class that started LAB_POOL_HOLD_MINUTES and more
  ago, so beat keeps only the usual LAB_POOL_SIZE ready nodes;
- "schedule-sized pool": a class starting in 5 minutes expecting LEARNERS
  learners, so beat (labs/sandboxes/pools.py) fills the pool for it first;
  the bench waits for that and reports how long it took.

Each learner is a fresh client with no account, doing what a fresh browser
and the page's script do: it opens the join link (the one request makes a
guest, joins and starts the lab), reads the lesson page it is sent to and
the page's scripts and styles (/static/, six at a time), opens the lesson
socket, waits for its machine to be ready, opens the terminal (straight to
the site's socket for a node on this machine, as lesson.js does) and waits
for the shell's prompt.
Figures: the join request, and join link -> prompt (p50/p95/p99).

Only loopback (the site) and the lab's own nodes are contacted. Every node
and process it starts is removed at the end, also on Ctrl-C or failure.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import websockets

from runtime import get_driver
from runtime.builtin.pool import is_pool_session

from bench.runtime import percentile
from bench.site import (bench_process, cpu_ticks, cpu_used, keep_logs, site_prefix,
                        worker_task_times)
from tests.support.labclient import Learner, next_event
from tests.support.livesite import live_site

log = logging.getLogger("benchclass")

SLUG = "first-containers"
PROMPT = b"] ~# "
STATE_ASK = 3.0  # static/labs/lesson.js: STATE_ASK_MS

CLASSROOM = """
import datetime, json
from django.contrib.auth import get_user_model
from django.utils import timezone
from labs.classrooms.models import Classroom
from labs.courses.models import Lesson
teacher, _ = get_user_model().objects.get_or_create(username="bench-teacher")
now = timezone.now()
room = Classroom.objects.create(owner=teacher, name={name!r}, seats={seats},
    starts=now + datetime.timedelta(minutes={starts_in}), ends=now + datetime.timedelta(hours=3))
room.lessons.add(Lesson.objects.get(slug={slug!r}))
print(json.dumps({{"code": room.code, "pk": room.pk}}))
"""

POOL_LINE = """
from labs.classrooms.models import Classroom
from labs.sandboxes import pools
print(pools.readiness(Classroom.objects.get(pk={pk})))
"""


def make_classroom(site, name: str, seats: int, starts_in: float) -> dict:
    done = site.manage("shell", "-c", CLASSROOM.format(name=name, seats=seats, starts_in=starts_in,
                                                       slug=SLUG))
    if done.returncode:
        raise RuntimeError(f"could not make the classroom: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pool_ready() -> int:
    return get_driver("builtin").pool_counts().get(1, 0)


async def wait_pool(size: int, seconds: float) -> float:
    """Seconds until at least `size` single nodes wait ready (beat fills them)."""
    began = time.monotonic()
    while pool_ready() < size:
        if time.monotonic() - began > seconds:
            raise TimeoutError(f"the pool had {pool_ready()} of {size} ready nodes after "
                               f"{seconds:.0f}s")
        await asyncio.sleep(0.5)
    return time.monotonic() - began


async def arrive(site_url: str, code: str, timeout: float) -> dict:
    """One learner: join link -> the shell's prompt in the lesson's terminal."""
    learner = Learner(site_url)
    t0 = time.monotonic()
    marks: dict = {}
    stage = "join request"
    try:
        page = await asyncio.to_thread(lambda: learner.get(f"/join/{code}/"))
        body = await asyncio.to_thread(page.read)
        marks["join"] = time.monotonic() - t0
        if f"/lessons/{SLUG}/" not in page.geturl():
            raise RuntimeError(f"the join link led to {page.geturl()}")
        if b"lab-session" not in body:
            raise RuntimeError("the lesson page came without the lab")
        stage = "the page's scripts and styles"
        await page_assets(learner, body)
        marks["assets"] = time.monotonic() - t0
        stage = "lesson socket"
        async with learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
            marks["socket"] = time.monotonic() - t0
            stage = "machine ready event"
            event, asked = await wait_ready(lesson, timeout)
            if event["state"] != "ready":
                raise RuntimeError(f"start failed: {event.get('message') or event}")
            marks["ready"] = time.monotonic() - t0
            stage = f"terminal of node {event['node']}"
            async with open_terminal(learner, event) as term:
                marks["terminal"] = time.monotonic() - t0
                stage = f"prompt in the terminal of node {event['node']}"
                seen = b""
                deadline = time.monotonic() + timeout
                while PROMPT not in seen:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no prompt; the terminal showed {seen[-200:]!r}")
                    data = await asyncio.wait_for(term.recv(), left)
                    seen += data if isinstance(data, bytes) else data.encode()
                marks["prompt"] = time.monotonic() - t0
    except BaseException as exc:
        raise RuntimeError(f"at the {stage} ({', '.join(f'{k} {v:.1f}s' for k, v in marks.items())}"
                           f"): {type(exc).__name__}: {exc}") from exc
    return {"learner": learner, "asked": asked, **marks}


ASSET = re.compile(rb'(?:src|href)="(/static/[^"]+)"')


async def page_assets(learner, body: bytes) -> None:
    """What a fresh browser fetches before the page's script runs: the
    page's /static/ files, up to six at a time, taking gzip."""
    def fetch(path):
        request = urllib.request.Request(learner.base + path,
                                         headers={"Accept-Encoding": "gzip, deflate, br"})
        with learner.http.open(request, timeout=60) as response:
            response.read()
    paths = list(dict.fromkeys(p.decode() for p in ASSET.findall(body)))
    if not paths:
        raise RuntimeError("the lesson page names no /static/ files")
    limit = asyncio.Semaphore(6)

    async def one(path):
        async with limit:
            await asyncio.to_thread(fetch, path)
    await asyncio.gather(*(one(p) for p in paths))


def open_terminal(learner, event: dict):
    """The node's terminal socket, as lesson.js opens it: straight to the
    site's socket for a node on this machine (no gateway), else through the
    site's /nodes/<id>/terminal for the gateway's address and token."""
    if event.get("gateway"):
        return learner.terminal(event["node"], 100, 30)
    return websockets.connect(learner.ws_url(f"/ws/nodes/{event['node']}/terminal/?cols=100&rows=30"),
                              additional_headers=learner.ws_headers(), max_size=None)


async def wait_ready(lesson, timeout: float) -> tuple:
    """(the session's ready or failed event, whether it asked): like the page,
    ask for the session's state every STATE_ASK seconds while waiting."""
    deadline = time.monotonic() + timeout
    asked = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no ready event, nor an answer to the page's asks")
        try:
            event = await next_event(lesson, lambda e: e.get("type") == "session"
                                     and e.get("state") in ("ready", "failed"),
                                     min(STATE_ASK, left))
        except TimeoutError:
            await lesson.send(json.dumps({"type": "state"}))
            asked = True
            continue
        return event, asked


async def class_arrives(site, code: str, learners: int, timeout: float) -> dict:
    results, failures = [], []

    async def one(i):
        try:
            results.append(await arrive(site.url, code, timeout))
        except Exception as exc:  # a failure is a figure, not a crash
            failures.append(f"learner {i}: {type(exc).__name__}: {exc}"[:300])
    began = time.monotonic()
    ticks = cpu_ticks()
    logs = {name: len(site.log(name)) for name in ("worker", "nodes")}
    await asyncio.gather(*(one(i) for i in range(learners)))
    wall = time.monotonic() - began
    return {"results": results, "failures": failures, "wall": wall,
            "cpu": cpu_used(ticks, cpu_ticks(), wall),
            "tasks": worker_task_times(site, logs)}


async def stop_all(results: list, prefix: str) -> None:
    """Every learner of the round presses Stop; wait until their nodes are gone."""
    def stop(learner):
        with contextlib.suppress(Exception):
            learner.post(f"/lessons/{SLUG}/stop").read()
    await asyncio.gather(*(asyncio.to_thread(stop, r["learner"]) for r in results))
    driver = get_driver("builtin")
    deadline = time.monotonic() + 180
    while any(n.session.startswith(prefix) for n in driver.list_nodes()):
        if time.monotonic() > deadline:
            log.warning("nodes of the round still there after 180 s")
            break
        await asyncio.sleep(0.5)


def ms(values: list) -> str:
    if not values:
        return "no samples"
    v = [x * 1000 for x in values]
    return (f"p50 {statistics.median(v):6.0f}  p95 {percentile(v, 95):6.0f}  "
            f"p99 {percentile(v, 99):6.0f}  max {max(v):6.0f}")


async def run(site, args) -> list:
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=args.learners * 2 + 8))
    lines, rows = [], []
    log.info("waiting for beat to fill the usual pool (LAB_POOL_SIZE=2)")
    await wait_pool(2, 120)
    plain = make_classroom(site, "Afternoon class (running a while)", args.learners, -60)
    log.info("round 1: %d learners through the join link, usual pool", args.learners)
    before = pool_ready()
    r1 = await class_arrives(site, plain["code"], args.learners, args.timeout)
    rows.append(("no schedule pool", before, r1))
    await stop_all(r1["results"], site.prefix)

    await wait_pool(2, 120)
    planned = make_classroom(site, "Morning class (starts in 5 min)", args.learners, 5)
    log.info("round 2: beat fills the pool for the class of %d", args.learners)
    filled = await wait_pool(args.learners + 2, args.fill_timeout)
    page = site.manage("shell", "-c", POOL_LINE.format(pk=planned["pk"])).stdout.strip()
    page = page.splitlines()[-1] if page else "(nothing)"
    before = pool_ready()
    log.info("round 2: %d learners through the join link, pool of %d", args.learners, before)
    r2 = await class_arrives(site, planned["code"], args.learners, args.timeout)
    rows.append(("schedule-sized pool", before, r2))
    await stop_all(r2["results"], site.prefix)

    lines.append(f"python -m bench.classstart: {time.strftime('%Y-%m-%d %H:%M %Z')}, "
                 f"a class of {args.learners} opening the join link at once "
                 f"(one request: guest, join, start), {args.workers} Celery workers, "
                 f"{args.web or 'default'} web processes, "
                 f"{'PostgreSQL' if args.postgres else 'SQLite'}")
    for name, ready, r in rows:
        res = r["results"]
        lines.append(f"{name} ({ready} ready nodes waiting as the class arrived; "
                     f"{len(r['failures'])} failures, {r['wall']:.1f} s wall)")
        lines.append(f"  join request (guest, join, start; the lesson page) {ms([x['join'] for x in res])}")
        lines.append(f"  join link -> the page's scripts and styles        {ms([x['assets'] for x in res])}")
        lines.append(f"  join link -> lesson socket open                    {ms([x['socket'] for x in res])}")
        lines.append(f"  join link -> machine ready on the lesson socket    {ms([x['ready'] for x in res])}")
        lines.append(f"  join link -> terminal socket open                  {ms([x['terminal'] for x in res])}")
        lines.append(f"  join link -> the shell's prompt                    {ms([x['prompt'] for x in res])}")
        asked = sum(1 for x in res if x.get("asked"))
        if asked:
            lines.append(f"  {asked} learner(s) waited over {STATE_ASK:.0f} s for ready and "
                         f"asked for the state, as the page does")
        lines.append(f"  {r['tasks']}")
        lines.append("  CPU meanwhile (share of one core, by process): "
                     + ", ".join(f"{name} {share:.2f}" for name, share in r["cpu"]))
        # What the class cost, per learner: the budget a prompt within 2 s
        # for all of them has is the machine's cores x 2 s / learners.
        per = {name: share * r["wall"] * 1000 / max(1, len(res)) for name, share in r["cpu"]}
        lines.append("  CPU per learner (ms): " + ", ".join(
            f"{name} {ms_:.0f}" for name, ms_ in per.items() if ms_ >= 5))
        for failure in r["failures"][:5]:
            lines.append(f"    {failure}")
    lines.append(f"pool filled for the class by beat: {args.learners} nodes in {filled:.0f} s "
                 f"(the class's lead time is LAB_POOL_LEAD_MINUTES, 10 by default)")
    lines.append(f"classroom page's figures when it was full: {page}")
    lines.append(f"the site's logs: {keep_logs(site)}")
    p95 = [percentile([x["prompt"] for x in r["results"]], 95) for _, _, r in rows]
    lines.append(f"target: join link -> prompt p95 with the schedule-sized pool <= 2 s: "
                 f"{p95[1]:.2f} s {'PASS' if p95[1] <= 2 else 'MISS'} "
                 f"(usual pool: {p95[0]:.2f} s)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.classstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4, help="Celery worker concurrency")
    parser.add_argument("--postgres", action="store_true",
                        help="the site on a throwaway PostgreSQL server instead of SQLite")
    parser.add_argument("--web", type=int, default=0,
                        help="Daphne processes (LAB_WEB_PROCESSES; 0: the site's default)")
    parser.add_argument("--timeout", type=float, default=240,
                        help="deadline of one learner's arrival (seconds)")
    parser.add_argument("--fill-timeout", type=float, default=300,
                        help="deadline for beat to fill the class's pool (seconds)")
    args = parser.parse_args(argv)
    bench_process()
    prefix = site_prefix("bc")
    env = {"LAB_POOL_SIZE": "2", "LAB_POOL_CLASSES": "1", "LAB_POOL_SECONDS": "5", "LAB_SAVE": "0",
           **({"LAB_WEB_PROCESSES": str(args.web)} if args.web else {})}
    driver = get_driver("builtin")
    had_pool = {n.id for n in driver.list_nodes() if is_pool_session(n.session)}
    try:
        with contextlib.ExitStack() as stack:
            if args.postgres:
                from tests.support.postgres import postgres_server
                env["DATABASE_URL"] = stack.enter_context(postgres_server())
            site = stack.enter_context(live_site(prefix=prefix, driver="builtin",
                                                 workers=args.workers, quiet=True, beat=True,
                                                 extra_env=env))
            try:
                lines = asyncio.run(run(site, args))
            except KeyboardInterrupt:
                log.warning("interrupted: stopping the site and removing its nodes")
                return 130
            except BaseException:
                sys.stderr.write(site.dump_logs()[-8000:] + "\n")
                raise
    finally:
        # The pool nodes this site's beat made go with it (once beat is gone).
        for node in driver.list_nodes():
            if is_pool_session(node.session) and node.id not in had_pool:
                with contextlib.suppress(Exception):
                    asyncio.run(driver.stop(node.id))
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
