"""`python -m bench.site`: figures of the whole site, measured through its websockets.

A report, never a test: it starts the real site (tests/support/livesite.py: redis-server,
Daphne, a Celery worker, the lab registry, the runtime driver) on free
loopback ports with a throwaway database, drives it as learners would
(tests/support/labclient.py: HTTP sign-up and start, terminal and lesson websockets), and
prints medians and tails. It never imports Django: it talks to the site's
processes, and the nodes it starts for the capacity stage go through the
runtime library. Every node and process it starts is removed at the end, also
on Ctrl-C, SIGTERM or failure.

Stages, in this order, all on one site:
- warm pool (only with --pool N): N ready nodes started before the class
  arrives, as the site's beat keeps them between classes;
- load run: LEARNERS learners at once sign up, start lesson 1, type
  `docker container run alpine hostname` and wait for step 1 done;
- check verdict, one learner at a time: `docker container ls --all` (step 2),
  from the prompt arriving after the command to the step event;
- keystroke echo: one terminal alone, then TERMINALS terminals typing at once;
- flood: `cat` of a generated file in a node, and Ctrl-C of it;
- Redis restarts (only with --restarts N): N learners hold their lesson page
  open while Redis restarts cleanly, then N more while it is killed, and
  first N more with no restart, to compare; each then does step 1, timed to
  the step event on the page held open;
- capacity (only with --capacity N): idle nodes added in batches until N, or
  until the site stops being responsive or memory runs short.

Only loopback (the site) and the lab's own nodes are ever contacted; every
loop is bounded in count and in time.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import random
import re
import secrets
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runtime import NodeSpec, get_driver
from bench.runtime import drain_pool, grow_pool, percentile
from runtime.limits import mem_available

from tests.support.labclient import Learner, next_event
from tests.support.livesite import live_site

log = logging.getLogger("benchsite")

SLUG = "first-containers"
PROMPT = b"] ~# "
QUIET_SECONDS = 0.3


# ----------------------------------------------------------------- figures

def summary(values: list) -> dict:
    """median, p95, p99, min, max and n of a list of numbers (empty: n=0)."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "min": min(values), "max": max(values)}


def fmt(s: dict, unit: str = "ms", digits: int = 1) -> str:
    if not s.get("n"):
        return "no samples"
    f = f"{{:.{digits}f}}"
    return (f"median {f.format(s['median'])} {unit}, p95 {f.format(s['p95'])}, "
            f"p99 {f.format(s['p99'])}, max {f.format(s['max'])} (n={s['n']})")


def now() -> float:
    return time.perf_counter()


# ----------------------------------------------------------------- terminal helpers

class Term:
    """One terminal websocket and what arrived on it, with arrival times."""

    def __init__(self, ws):
        self.ws = ws
        self.received = 0

    async def recv(self, timeout: float) -> bytes:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(frame, str):
            return b""
        self.received += len(frame)
        return frame

    async def drain(self, quiet: float = QUIET_SECONDS, limit: float = 10) -> bytes:
        """Read until nothing arrives for `quiet` seconds (at most `limit`)."""
        seen = b""
        deadline = now() + limit
        while now() < deadline:
            try:
                seen += await self.recv(quiet)
            except asyncio.TimeoutError:
                break
        return seen

    async def until(self, predicate, timeout: float) -> tuple:
        """Read until predicate(bytes so far) holds: (bytes, arrival time of the last frame)."""
        seen = b""
        deadline = now() + timeout
        while True:
            left = deadline - now()
            if left <= 0:
                raise TimeoutError(f"terminal output did not match in {timeout:.0f}s: "
                                   f"...{seen[-200:]!r}")
            seen += await self.recv(left)
            if predicate(seen):
                return seen, now()

    async def run(self, command: str, timeout: float = 120) -> tuple:
        """Type a command and Enter; (output, time the prompt came back)."""
        await self.ws.send(command.encode() + b"\r")
        return await self.until(lambda b: _prompt_after_newline(b), timeout)


def _prompt_after_newline(seen: bytes) -> bool:
    """A fresh prompt after the command's Enter.

    tmux may redraw the screen (under load, say) instead of passing the output
    through, and a redraw repeats the old prompt line with the typed command
    after it: a prompt followed by what was typed is not the end.
    """
    first = seen.find(b"\n")
    if first == -1:
        return False
    at = seen.find(PROMPT, first)
    while at != -1:
        after = seen[at + len(PROMPT):at + len(PROMPT) + 6]
        if not after or not after.isalpha():
            return True
        at = seen.find(PROMPT, at + 1)
    return False


async def open_term(learner: Learner, node: int, cols: int = 100, rows: int = 30) -> Term:
    ws = await learner.connect(f"/ws/nodes/{node}/terminal/?cols={cols}&rows={rows}")
    term = Term(ws)
    # The attach redraws the screen: wait for it to settle, then make sure the
    # shell is at a prompt (Ctrl-U clears whatever is on the line).
    await term.drain()
    await term.ws.send(b"\x15\r")
    await term.until(lambda b: PROMPT in b, 30)
    await term.drain(0.2)
    return term


# ----------------------------------------------------------------- learners

class Seat:
    """A learner with a started lesson-1 node."""

    def __init__(self, site_url: str, name: str):
        self.name = name
        self.learner = Learner(site_url)
        self.node = None
        self.times: dict = {}


async def signup_and_start(seat: Seat, timeout: float) -> None:
    try:
        await _signup_and_start(seat, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"sign-up or start did not finish ({seat.times})") from None


async def _signup_and_start(seat: Seat, timeout: float) -> None:
    t0 = now()
    await asyncio.to_thread(seat.learner.signup, seat.name)
    seat.times["signup"] = now() - t0
    async with seat.learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
        t1 = now()
        reply = await asyncio.to_thread(seat.learner.start, SLUG)
        if reply.get("ok") is False:
            raise RuntimeError(f"start refused: {reply}")
        event = await next_event(lesson, lambda e: e.get("type") == "session"
                                 and e.get("state") in ("ready", "failed"), timeout)
        if event["state"] != "ready":
            raise RuntimeError(f"start failed: {event.get('message') or event}")
        seat.times["start"] = now() - t1
        seat.node = event["node"]


async def step_through_terminal(seat: Seat, command: str, step: int, timeout: float,
                                output_done=None) -> dict:
    """Type `command`; times of: Enter, the prompt after the command, the step event."""
    output_done = output_done or _prompt_after_newline
    async with seat.learner.connect(f"/ws/lessons/{SLUG}/") as lesson:
        term = await open_term(seat.learner, seat.node)
        try:
            # The lesson socket first says where the session stands: read it
            # before typing, so the step event is the only thing left to wait for.
            await next_event(lesson, lambda e: e.get("type") == "session", 30)
            sent = now()
            await term.ws.send(command.encode() + b"\r")

            async def prompt():
                try:
                    return (await term.until(output_done, timeout))[1]
                except asyncio.TimeoutError as e:
                    raise TimeoutError(f"no prompt after the command in {timeout:.0f}s "
                                       f"{e}") from None

            async def verdict():
                try:
                    await next_event(lesson, lambda e: e.get("type") == "step"
                                     and e.get("step") == step and e.get("state") == "done",
                                     timeout)
                except asyncio.TimeoutError:
                    raise TimeoutError(f"no step {step} done event in {timeout:.0f}s") from None
                return now()

            prompt_at, step_at = await asyncio.gather(prompt(), verdict())
        finally:
            await term.ws.close()
    return {"sent": sent, "prompt": prompt_at, "step": step_at}


async def load_run(site_url: str, count: int, tag: str, timeout: float) -> dict:
    """`count` learners at once through lesson 1, step 1."""
    seats = [Seat(site_url, f"bench-{tag}-{i}") for i in range(count)]
    failures: list = []

    async def one(seat: Seat):
        try:
            await signup_and_start(seat, timeout)
            marks = await step_through_terminal(
                seat, "docker container run alpine hostname", 1, timeout)
            seat.times["step"] = marks["step"] - marks["sent"]
            seat.times["verdict"] = marks["step"] - marks["prompt"]
            seat.times["command"] = marks["prompt"] - marks["sent"]
        except Exception as exc:  # a failure is a figure, not a crash
            failures.append(f"{seat.name}: {type(exc).__name__}: {exc}"[:300])

    began = now()
    await asyncio.wait_for(asyncio.gather(*(one(s) for s in seats)), timeout * 3)
    wall = now() - began
    pick = lambda key: [s.times[key] * 1000 for s in seats if key in s.times]  # noqa: E731
    return {"learners": count, "failures": failures, "wall_s": wall,
            "signup_ms": summary(pick("signup")), "start_ms": summary(pick("start")),
            "command_ms": summary(pick("command")), "step_done_ms": summary(pick("step")),
            "verdict_ms": summary(pick("verdict")),
            "seats": [s for s in seats if s.node is not None and "step" in s.times]}


async def more_seats(site_url: str, count: int, tag: str, timeout: float) -> list:
    """Learners with a started node (for the terminals), a few at a time."""
    seats = [Seat(site_url, f"bench-{tag}-{i}") for i in range(count)]
    gate = asyncio.Semaphore(10)

    async def one(seat):
        async with gate:
            try:
                await signup_and_start(seat, timeout)
            except Exception as exc:
                log.warning("extra learner %s did not start: %s", seat.name, exc)
    await asyncio.gather(*(one(s) for s in seats))
    return [s for s in seats if s.node is not None]


async def verdict_one_at_a_time(seats: list, timeout: float) -> dict:
    """Step 2 (`docker container ls --all`), one learner after another."""
    verdicts, failures = [], []
    for seat in seats:
        try:
            marks = await step_through_terminal(seat, "docker container ls --all", 2, timeout)
            verdicts.append((marks["step"] - marks["prompt"]) * 1000)
        except Exception as exc:
            failures.append(f"{seat.name}: {type(exc).__name__}: {exc}"[:300])
    return {"verdict_ms": summary(verdicts), "failures": failures}


# ----------------------------------------------------------------- keystroke echo

async def type_keys(term: Term, keys: int, think: tuple, timeout: float = 10,
                    stagger: bool = False) -> list:
    """Type `keys` letters at a human pace; the echo time of each, in ms.
    `stagger`: first wait a random part of one pause, so that terminals typing
    at once are not all pressing their first key in the same millisecond."""
    times = []
    if stagger:
        await asyncio.sleep(random.uniform(0, think[1]))
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(keys):
        letter = letters[i % 26].encode()
        sent = now()
        await term.ws.send(letter)
        try:
            await term.until(lambda b: letter in b, timeout)
            times.append((now() - sent) * 1000)
        except (TimeoutError, asyncio.TimeoutError):
            times.append(timeout * 1000)
        await asyncio.sleep(random.uniform(*think))
    await term.ws.send(b"\x15")  # clear the line again
    await term.drain(0.2, 5)
    return times


async def echo_stage(seats: list, terminals: int, keys: int, think: tuple) -> dict:
    result = {}
    lone = await open_term(seats[0].learner, seats[0].node)
    try:
        result["one"] = summary(await type_keys(lone, keys, think))
    finally:
        await lone.ws.close()
    chosen = seats[:terminals]
    terms = []
    try:
        opened = await asyncio.gather(*(open_term(s.learner, s.node) for s in chosen),
                                      return_exceptions=True)
        terms = [t for t in opened if isinstance(t, Term)]
        errors = [repr(e)[:200] for e in opened if not isinstance(e, Term)]
        await asyncio.sleep(1)
        log.info("typing in %d terminals at once", len(terms))
        began = now()
        lists = await asyncio.gather(*(type_keys(t, keys, think, stagger=True) for t in terms))
        wall = now() - began
        all_times = [t for one in lists for t in one]
        result["many"] = summary(all_times)
        result["terminals"] = len(terms)
        result["open_errors"] = errors
        result["keys_per_s"] = len(all_times) / wall if wall else 0
    finally:
        await asyncio.gather(*(t.ws.close() for t in terms), return_exceptions=True)
    return result


# ----------------------------------------------------------------- flood and Ctrl-C

def cpu_ticks() -> dict:
    """CPU time (clock ticks) used so far by every process on the machine,
    by pid: (name, ticks). Python processes are named by their module or
    script (the recorder, daphne, a celery worker...)."""
    ticks = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
        fields = stat[stat.rindex(b")") + 2:].split()
        if comm.startswith("python") and len(argv) > 1:
            words = [a.decode(errors="replace") for a in argv[1:4] if a and a != b"-m"]
            comm = os.path.basename(words[0]) + (" " + words[1] if len(words) > 1 else "")
        # Its own time and its reaped children's: the short-lived processes a
        # worker or daphne spawns (nsenter, tmux clients, ip) are gone by the
        # second reading, and count towards whoever started them.
        ticks[int(entry.name)] = (comm, sum(int(x) for x in fields[11:15]))
    ticks["cgroups"] = cgroup_cpu()
    return ticks


def cgroup_cpu() -> dict:
    """CPU nanoseconds so far of the whole machine and of the lab's nodes
    (their cgroups, with what runs in them: engines, shells, checks), where
    cgroup v1's cpuacct is mounted."""
    from runtime.builtin.cgroups import CGROUP_PARENT, CGROUP_ROOT
    found = {}
    for name, path in (("machine", CGROUP_ROOT / "cpuacct"),
                       ("nodes", CGROUP_ROOT / "cpuacct" / CGROUP_PARENT)):
        with contextlib.suppress(OSError, ValueError):
            found[name] = int((path / "cpuacct.usage").read_text())
    return found


def cpu_used(before: dict, after: dict, seconds: float, top: int = 8) -> list:
    """The processes that used the most CPU between two cpu_ticks(), summed by
    name: [(name, share of one core)]."""
    hz = os.sysconf("SC_CLK_TCK")
    by_name: dict = {}
    cgroups = {k: (v - before.get("cgroups", {}).get(k, v)) / 1e9
               for k, v in after.get("cgroups", {}).items()}
    for pid, (name, t) in after.items():
        if pid == "cgroups":
            continue
        used = t - before.get(pid, (name, 0))[1]
        if used > 0:
            by_name[name] = by_name.get(name, 0) + used
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    totals = [(f"[{k} in all]", v / seconds) for k, v in cgroups.items()]
    return totals + [(name, t / hz / seconds) for name, t in ranked]


async def flood_stage(seats: list, mebibytes: int, interrupts: int) -> dict:
    flooder, watcher = seats[0], seats[1] if len(seats) > 1 else None
    term = await open_term(flooder.learner, flooder.node)
    other = await open_term(watcher.learner, watcher.node) if watcher else None
    result = {}
    try:
        raw = mebibytes * 2**20 * 3 // 4  # base64 makes 4 bytes of 3
        out, _ = await term.run(f"head -c {raw} /dev/urandom | base64 > /tmp/flood; "
                                "echo size=$(stat -c %s /tmp/flood)", 120)
        size = int(re.findall(rb"size=(\d+)", out)[-1])
        result["file_bytes"] = size
        await term.drain(0.3)

        # The flood, while another learner types in their own terminal.
        gaps, frames = [], 0
        echo_during: list = []
        stop_typing = asyncio.Event()

        async def type_meanwhile():
            while other is not None and not stop_typing.is_set():
                echo_during.extend(await type_keys(other, 5, (0.05, 0.15)))

        typing = asyncio.create_task(type_meanwhile())
        try:
            # The shell prints "flood-42-end" (typed as $((6*7)), so the echo of
            # the command line never matches) once cat is done; base64 has no "-".
            cpu_before = cpu_ticks()
            await term.ws.send(b"cat /tmp/flood; echo flood-$((6*7))-end\r")
            sent = last = now()
            got = 0
            tail = b""
            deadline = sent + 300
            while True:
                if now() > deadline:
                    raise TimeoutError("the flood did not end within 300 s")
                frame = await term.recv(deadline - now())
                t = now()
                gaps.append((t - last) * 1000)
                last = t
                frames += 1
                got += len(frame)
                tail = (tail + frame)[-256:]
                if b"flood-42-end" in tail:
                    break
            elapsed = now() - sent
            result["cpu"] = cpu_used(cpu_before, cpu_ticks(), elapsed)
            log.info("CPU during the flood (cores): %s",
                     ", ".join(f"{name} {share:.2f}" for name, share in result["cpu"]))
        finally:
            stop_typing.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(typing, 15)
        result.update({"seconds": elapsed, "ws_bytes": got, "frames": frames,
                       "file_mb_s": size / elapsed / 1e6, "ws_mb_s": got / elapsed / 1e6,
                       "max_gap_ms": max(gaps[1:] or [0]), "gap_ms": summary(gaps[1:]),
                       "echo_elsewhere_ms": summary(echo_during)})
        await term.drain(0.5)

        # Ctrl-C: from sending it to the prompt coming back.
        stops = []
        for _ in range(interrupts):
            # A loop, so a small file still floods when Ctrl-C comes (bash ends
            # the loop when cat dies of SIGINT).
            await term.ws.send(b"while :; do cat /tmp/flood; done\r")
            started = now()
            while now() - started < 1.0:  # let it flow for a second
                with contextlib.suppress(asyncio.TimeoutError):
                    await term.recv(1.0)
            interrupted = now()
            await term.ws.send(b"\x03")
            await term.until(lambda b: PROMPT in b[-4096:], 60)
            stops.append((now() - interrupted) * 1000)
            await term.drain(0.3)
        result["ctrl_c_ms"] = summary(stops)
        await term.run("rm -f /tmp/flood", 30)
    finally:
        await term.ws.close()
        if other is not None:
            await other.ws.close()
    return result


# ----------------------------------------------------------------- Redis restarts

async def redis_restart_stage(site, count: int, tag: str, timeout: float) -> dict:
    """`count` learners keep their lesson page open while Redis stops and
    comes back, cleanly (it saves its data), then killed (it comes back
    empty). Then each does step 1: how long until their open page hears it.
    The same first without a restart, to compare. A page whose socket dropped
    counts as a failure: a learner would have seen "reconnecting"."""
    rounds = {}
    for number, (name, restart, crash) in enumerate((("not restarted", False, False),
                                                     ("clean restart", True, False),
                                                     ("killed", True, True))):
        seats = await more_seats(site.url, count, f"{tag}{number}", timeout)
        times, failures = [], []
        async with contextlib.AsyncExitStack() as stack:
            pages = []
            for seat in seats:
                lesson = await stack.enter_async_context(
                    seat.learner.connect(f"/ws/lessons/{SLUG}/"))
                await next_event(lesson, lambda e: e.get("type") == "session", 30)
                pages.append((seat, lesson))
            began = now()
            if restart:
                await asyncio.to_thread(site.restart, "redis", crash)
            back = now() - began

            async def one(seat, lesson):
                try:
                    term = await open_term(seat.learner, seat.node)
                    try:
                        sent = now()
                        await term.ws.send(b"docker container run alpine hostname\r")
                        await next_event(lesson, lambda e: e.get("type") == "step"
                                         and e.get("step") == 1 and e.get("state") == "done",
                                         timeout)
                        times.append((now() - sent) * 1000)
                    finally:
                        await term.ws.close()
                except Exception as exc:
                    failures.append(f"{seat.name}: {type(exc).__name__}: {exc}"[:300])
            await asyncio.gather(*(one(seat, lesson) for seat, lesson in pages))
        rounds[name] = {"pages": len(pages), "redis_back_s": back,
                        "step_done_ms": summary(times), "failures": failures}
    return rounds


# ----------------------------------------------------------------- capacity

async def page_times(learner: Learner, count: int) -> list:
    times = []
    for _ in range(count):
        t = now()
        try:
            await asyncio.to_thread(lambda: learner.get(f"/lessons/{SLUG}/").read())
            times.append((now() - t) * 1000)
        except (OSError, urllib.error.URLError):
            times.append(30_000.0)
    return times


async def capacity_stage(site, seats: list, target: int, batch: int, seconds: float,
                         page_limit_ms: float, headroom: int) -> dict:
    """Idle nodes added in batches until `target` nodes (the learners' count too),
    or the site's page p95 passes `page_limit_ms`, or memory falls under `headroom`,
    or a start fails, or `seconds` run out. The nodes added are removed at the end."""
    driver = get_driver(site.driver)
    own = lambda: [n for n in driver.list_nodes() if n.session.startswith(site.prefix)]  # noqa: E731
    probe = seats[0]
    started: list = []
    rows: list = []
    stop_reason = f"reached {target}"
    began = now()
    mem0 = mem_available()
    gate = asyncio.Semaphore(4)
    session_no = 0
    try:
        while True:
            count = len(own())
            pages = await page_times(probe.learner, 20)
            term = await open_term(probe.learner, probe.node)
            try:
                echo = await type_keys(term, 10, (0.05, 0.1))
            finally:
                await term.ws.close()
            row = {"nodes": count, "page_ms": summary(pages), "echo_ms": summary(echo),
                   "mem_available": mem_available(), "elapsed_s": now() - began}
            rows.append(row)
            log.info("capacity: %d nodes, page p95 %.0f ms, echo p95 %.0f ms, %.1f GiB free",
                     count, row["page_ms"]["p95"], row["echo_ms"]["p95"],
                     row["mem_available"] / 2**30)
            if row["page_ms"]["p95"] > page_limit_ms:
                stop_reason = f"page p95 over {page_limit_ms:.0f} ms"
                break
            if row["mem_available"] < headroom:
                stop_reason = f"memory available under {headroom / 2**30:.1f} GiB"
                break
            if count >= target:
                break
            if now() - began > seconds:
                stop_reason = f"time budget of {seconds:.0f}s spent"
                break
            session_no += 1
            session = f"{site.prefix}cap{session_no}"
            names = [f"node{i + 1}" for i in range(min(batch, target - count))]

            async def start(name, session=session):
                async with gate:
                    node = await driver.start(NodeSpec(session=session, name=name))
                    started.append(node.id)
            outcome = await asyncio.gather(*(start(n) for n in names), return_exceptions=True)
            errors = [e for e in outcome if isinstance(e, BaseException)]
            if errors:
                reason = getattr(errors[0], "reason", None) or repr(errors[0])
                stop_reason = f"a node failed to start: {reason}"[:300]
                row["start_error"] = stop_reason
                rows.append({**row, "nodes": len(own())})
                break
    finally:
        per_node = None
        if rows and rows[-1]["nodes"] > rows[0]["nodes"]:
            per_node = ((rows[0]["mem_available"] - rows[-1]["mem_available"])
                        / (rows[-1]["nodes"] - rows[0]["nodes"]))
        stop_gate = asyncio.Semaphore(8)

        async def stop(node_id):
            async with stop_gate:
                with contextlib.suppress(Exception):
                    await driver.stop(node_id)
        t = now()
        await asyncio.gather(*(stop(n) for n in started))
        removed_s = now() - t
    last = rows[-1] if rows else {}
    return {"target": target, "reached": last.get("nodes", 0), "stop_reason": stop_reason,
            "page_ms": last.get("page_ms", {"n": 0}), "echo_ms": last.get("echo_ms", {"n": 0}),
            "mem_used_per_node": per_node, "mem_available_start": mem0,
            "rows": [{k: v for k, v in r.items()} for r in rows], "removed_s": removed_s,
            "added": len(started)}


# ----------------------------------------------------------------- the report

def targets(r: dict) -> list:
    """(target, goal, measured, PASS/MISS) rows of the site's figures."""
    rows = []

    def row(name, goal, measured, ok):
        rows.append({"target": name, "goal": goal, "measured": measured,
                     "verdict": "n/a" if ok is None else ("PASS" if ok else "MISS")})

    echo = r.get("echo", {}).get("many", {})
    n = r.get("echo", {}).get("terminals", 0)
    if echo.get("n"):
        row(f"keystroke echo, median ({n} terminals at once)", "< 5 ms",
            f"{echo['median']:.1f} ms", echo["median"] < 5)
        row(f"keystroke echo, p99 ({n} terminals at once)", "< 20 ms",
            f"{echo['p99']:.1f} ms", echo["p99"] < 20)
    quiet = r.get("verdict", {}).get("verdict_ms", {})
    if quiet.get("n"):
        row("check verdict after the command ends, p95 (one learner at a time)", "< 300 ms",
            f"{quiet['p95']:.0f} ms", quiet["p95"] < 300)
    load = r.get("load", {})
    loaded = load.get("verdict_ms", {})
    if loaded.get("n"):
        row(f"check verdict, p95 ({load['learners']} learners at once)", "< 300 ms",
            f"{loaded['p95']:.0f} ms", loaded["p95"] < 300)
    flood = r.get("flood", {})
    if "file_mb_s" in flood:
        row("flood: `cat` of a large file through the terminal", ">= 10 MB/s",
            f"{flood['file_mb_s']:.1f} MB/s (websocket {flood['ws_mb_s']:.1f} MB/s)",
            flood["file_mb_s"] >= 10)
    stops = flood.get("ctrl_c_ms", {})
    if stops.get("n"):
        row("Ctrl-C stops a flood, p95", "<= 200 ms", f"{stops['p95']:.0f} ms",
            stops["p95"] <= 200)
    if load:
        row(f"load run: {load['learners']} learners do lesson 1 step 1 at once",
            "0 failures", f"{len(load['failures'])} failures", not load["failures"])
    cap = r.get("capacity")
    if cap:
        row("idle nodes held with the site responsive", f">= {cap['target']} (250 in the issue)",
            f"{cap['reached']} ({cap['stop_reason']})", cap["reached"] >= 250)
    return rows


def render(r: dict) -> str:
    lines = [f"site: driver {r['driver']}, Celery worker concurrency {r['workers']}, "
             f"{os.cpu_count()} cores, LAB_MAX_NODES={os.environ.get('LAB_MAX_NODES', '250')}"]
    pool = r.get("pool")
    if pool:
        lines.append(f"warm pool: {len(pool['started'])} of {pool['size']} nodes started in "
                     f"{pool['seconds']:.1f} s before the load run (the site's beat keeps the "
                     f"pool full between classes)")
    load = r.get("load")
    if load:
        lines += [
            f"load run: {load['learners']} learners at once"
            + (" (their nodes from the warm pool)" if pool else " (no warm pool: cold starts)")
            + ", sign up + start + "
            f"`docker container run alpine hostname` + step 1 done, "
            f"{len(load['failures'])} failures, {load['wall_s']:.1f} s wall",
            f"  sign-up (HTTP)          {fmt(load['signup_ms'], 'ms', 0)}",
            f"  start -> session ready  {fmt(load['start_ms'], 'ms', 0)}",
            f"  Enter -> step 1 done    {fmt(load['step_done_ms'], 'ms', 0)}",
            f"  Enter -> prompt back    {fmt(load['command_ms'], 'ms', 0)}",
            f"  prompt -> step event    {fmt(load['verdict_ms'], 'ms', 0)}",
        ]
        lines += [f"  failure: {f}" for f in load["failures"][:10]]
    verdict = r.get("verdict")
    if verdict:
        lines.append(f"check verdict, one learner at a time (step 2, `docker container ls "
                     f"--all`), prompt -> step event: {fmt(verdict['verdict_ms'], 'ms', 0)}")
        lines += [f"  failure: {f}" for f in verdict["failures"][:5]]
    echo = r.get("echo")
    if echo:
        lines += [
            f"keystroke echo, one terminal alone: {fmt(echo['one'])}",
            f"keystroke echo, {echo.get('terminals', 0)} terminals typing at once "
            f"({echo.get('keys_per_s', 0):.0f} keys/s in all): {fmt(echo.get('many', {}))}",
        ]
        lines += [f"  terminal did not open: {e}" for e in echo.get("open_errors", [])[:5]]
    flood = r.get("flood")
    if flood and "file_mb_s" in flood:
        lines += [
            f"flood: cat of {flood['file_bytes'] / 1e6:.1f} MB (base64 text) took "
            f"{flood['seconds']:.2f} s = {flood['file_mb_s']:.1f} MB/s of output consumed; "
            f"{flood['ws_bytes'] / 1e6:.1f} MB reached the websocket "
            f"({flood['ws_mb_s']:.1f} MB/s, {flood['frames']} frames; tmux sends the screen, "
            f"not every byte)",
            f"  gap between frames: {fmt(flood['gap_ms'])}",
            f"  another learner's echo during the flood: {fmt(flood['echo_elsewhere_ms'])}",
            f"  Ctrl-C -> prompt back: {fmt(flood['ctrl_c_ms'], 'ms', 0)}",
        ]
    cap = r.get("capacity")
    if cap:
        per = cap.get("mem_used_per_node")
        lines.append(
            f"capacity: {cap['reached']} nodes held (target {cap['target']}), stopped: "
            f"{cap['stop_reason']}; at that count page {fmt(cap['page_ms'], 'ms', 0)}, "
            f"echo {fmt(cap['echo_ms'])}"
            + (f"; {per / 2**20:.0f} MiB of host memory per node added" if per else ""))
        for row in cap["rows"]:
            lines.append(f"  {row['nodes']:4d} nodes: page p95 {row['page_ms']['p95']:.0f} ms, "
                         f"echo p95 {row['echo_ms'].get('p95', float('nan')):.1f} ms, "
                         f"{row['mem_available'] / 2**30:.1f} GiB available, "
                         f"t={row['elapsed_s']:.0f}s")
    for name, rnd in r.get("restarts", {}).items():
        lines.append(f"Redis {name} under {rnd['pages']} open lesson pages"
                     + (f" (answering again after {rnd['redis_back_s']:.1f} s)"
                        if name != "not restarted" else "")
                     + f", then step 1 on each at once: Enter -> step 1 done on the page held "
                     f"open {fmt(rnd['step_done_ms'], 'ms', 0)}, {len(rnd['failures'])} failures")
        lines += [f"  failure: {f}" for f in rnd["failures"][:5]]
    for key in ("worker_tasks",):
        if r.get(key):
            lines.append(r[key])
    if r.get("kept_logs"):
        lines.append(f"the site's logs (kept for the failures above): {r['kept_logs']}")
    if "site_errors" in r:
        lines.append(f"site errors logged: {len(r['site_errors']) or 'none'}")
        lines += [f"  {e}" for e in r["site_errors"][:10]]
    return "\n".join(lines)


def _log_time(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def worker_task_times(site, since: dict | None = None) -> str:
    """run_checks / start_session durations from the workers' logs (where time
    goes); `since`: {process: log length} to read only what came after."""
    times: dict = {}
    since = since or {}
    logs = site.log("worker")[since.get("worker", 0):] + site.log("nodes")[since.get("nodes", 0):]
    received = {}
    stamp = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?"
    task = r"Task labs\.(?:\w+\.)*tasks\.(\w+)\[([^\]]+)\]"
    for m in re.finditer(stamp + task + " received", logs):
        received[m.group(3)] = _log_time(m.group(1))
    for m in re.finditer(stamp + task + r" succeeded in ([0-9.]+)s", logs):
        name, ran = m.group(2), float(m.group(4))
        times.setdefault(name, []).append(ran * 1000)
        if m.group(3) in received:  # from the worker taking it to its start: the backlog
            waited = _log_time(m.group(1)) - received[m.group(3)] - ran
            times.setdefault(f"{name} (wait in the worker)", []).append(max(0.0, waited) * 1000)
    for m in re.finditer(r"claimed from the pool in ([0-9.]+)s", logs):
        times.setdefault("(pool claim)", []).append(float(m.group(1)) * 1000)
    parts = [f"{name} {fmt(summary(v), 'ms', 0)}" for name, v in sorted(times.items())]
    return "Celery task run times (worker log): " + "; ".join(parts) if parts else ""


def keep_logs(site) -> str:
    """Copy the site's process logs out of its throwaway directory, which the
    clean-up removes, so that a failure can be looked into afterwards."""
    dest = Path(tempfile.mkdtemp(prefix="lab-bench-logs-"))
    for name in site.procs:
        text = site.log(name)
        if text:
            (dest / f"{name}.log").write_text(text)
    return str(dest)


def site_errors(site) -> list[str]:
    """Each distinct exception the site's processes logged, with its count and
    the frame of our own code it came from (a failure the figures would hide)."""
    found: dict = {}
    for name in site.procs:
        for block in re.findall(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)+.*",
                                site.log(name)):
            last = block.rstrip().splitlines()[-1]
            ours = re.findall(r'File "[^"]*/((?:labs|runtime)/[^"]+)", line (\d+), in (\w+)', block)
            where = f" (at {ours[-1][0]}:{ours[-1][1]} in {ours[-1][2]})" if ours else ""
            key = f"[{name}] {last}{where}"
            found[key] = found.get(key, 0) + 1
    return [f"{n} x {key}" for key, n in sorted(found.items(), key=lambda kv: -kv[1])]


async def fill_pool(site, size: int) -> dict:
    """Start `size` warm pool nodes (the runtime's own pool, which every start
    claims from first) and time it; the ids are ours to remove afterwards."""
    began = now()
    started = await grow_pool(get_driver(site.driver), size)
    return {"size": size, "started": started, "seconds": now() - began}


async def run(site, args) -> dict:
    # Each learner's blocking HTTP (sign-up, start) runs in a thread. The
    # default pool has cpu+4 threads: fifty learners would queue for them here
    # and the queueing would be counted as the site's start time.
    threads = max(args.learners, args.terminals, 32) + 8
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=threads))
    r: dict = {"driver": site.driver, "workers": args.workers}
    if args.pool > 0:
        log.info("warm pool: %d nodes", args.pool)
        r["pool"] = await fill_pool(site, args.pool)
    try:
        return await stages(site, args, r)
    finally:
        if r.get("pool"):
            await drain_pool(get_driver(site.driver), r["pool"]["started"])


async def stages(site, args, r: dict) -> dict:
    tag = secrets.token_hex(2)
    seats: list = []
    if args.learners > 0:
        log.info("load run: %d learners", args.learners)
        load = await load_run(site.url, args.learners, tag + "l", args.timeout)
        seats = load.pop("seats")
        r["load"] = load
    if args.verdicts > 0 and seats:
        log.info("check verdicts, one learner at a time")
        r["verdict"] = await verdict_one_at_a_time(seats[:args.verdicts], args.timeout)
    need = max(args.terminals, 2 if args.flood_mb else 1) - len(seats)
    if need > 0:
        log.info("starting %d more learners for the terminals", need)
        seats += await more_seats(site.url, need, tag + "t", args.timeout)
    if args.terminals > 0 and seats:
        log.info("keystroke echo: 1 terminal, then %d", min(args.terminals, len(seats)))
        r["echo"] = await echo_stage(seats, args.terminals, args.keys, (0.05, 0.15))
    if args.flood_mb > 0 and seats:
        log.info("flood: %d MiB", args.flood_mb)
        r["flood"] = await flood_stage(seats, args.flood_mb, args.interrupts)
    if args.restarts > 0:
        log.info("Redis restarts: %d lesson pages open", args.restarts)
        r["restarts"] = await redis_restart_stage(site, args.restarts, tag + "r", args.timeout)
    if args.capacity > 0 and seats:
        log.info("capacity: up to %d nodes", args.capacity)
        r["capacity"] = await capacity_stage(site, seats, args.capacity, args.batch,
                                             args.capacity_seconds, args.page_limit_ms,
                                             int(args.headroom_gib * 2**30))
    return r


def bench_process() -> None:
    """Logging to stderr (the runtime and websockets quieter), and SIGTERM
    handled as Ctrl-C, so the site and its nodes are removed either way."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("runtime", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, terminate)


def site_prefix(start: str) -> str:
    """A session prefix of the bench's own site (lower-case letters only)."""
    return start + "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.site", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--driver", default=os.environ.get("LAB_DRIVER", "builtin"))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("LAB_WORKERS", "4")),
                        help="Celery worker concurrency (as LAB_WORKERS for make run)")
    parser.add_argument("--learners", type=int, default=50, help="learners in the load run")
    parser.add_argument("--pool", type=int, default=0,
                        help="warm pool nodes started before the load run (0: cold starts)")
    parser.add_argument("--terminals", type=int, default=100, help="terminals typing at once")
    parser.add_argument("--keys", type=int, default=30, help="keystrokes per terminal")
    parser.add_argument("--verdicts", type=int, default=10,
                        help="learners timed one at a time for the check verdict")
    parser.add_argument("--flood-mb", type=int, default=50, help="size of the flood file (MiB)")
    parser.add_argument("--interrupts", type=int, default=5, help="Ctrl-C measurements")
    parser.add_argument("--restarts", type=int, default=0,
                        help="lesson pages held open while Redis restarts and is killed "
                             "(0: skip)")
    parser.add_argument("--capacity", type=int, default=0,
                        help="add idle nodes up to this many (0: skip the stage)")
    parser.add_argument("--batch", type=int, default=10, help="capacity: nodes per step")
    parser.add_argument("--capacity-seconds", type=float, default=900,
                        help="capacity: time budget of the stage")
    parser.add_argument("--page-limit-ms", type=float, default=1000,
                        help="capacity: stop when the lesson page's p95 passes this")
    parser.add_argument("--headroom-gib", type=float, default=2.0,
                        help="capacity: stop when less memory than this is available")
    parser.add_argument("--timeout", type=float, default=300,
                        help="deadline of one learner's start or step (seconds)")
    parser.add_argument("--json", help="also write the figures as JSON here")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the site's logs also when nothing failed")
    args = parser.parse_args(argv)
    bench_process()

    if args.capacity > 0:
        # The capacity stage measures the machine, not the configured global
        # limit (LAB_MAX_NODES, 250 by default, counting every node here).
        os.environ.setdefault("LAB_MAX_NODES", str(max(250, args.capacity) + 100))
    interrupted = False
    prefix = site_prefix("bn")
    with live_site(prefix=prefix, driver=args.driver, workers=args.workers, quiet=True) as site:
        log.info("site up at %s (sessions %s*)", site.url, prefix)
        try:
            r = asyncio.run(run(site, args))
        except KeyboardInterrupt:
            log.warning("interrupted: stopping the site and removing its nodes")
            interrupted = True
        except BaseException:
            sys.stderr.write(site.dump_logs()[-8000:] + "\n")
            raise
        if interrupted:
            return 130
        r["worker_tasks"] = worker_task_times(site)
        r["site_errors"] = site_errors(site)
        failed = [stage for stage in ("load", "verdict") if r.get(stage, {}).get("failures")]
        failed += [name for name, rnd in r.get("restarts", {}).items() if rnd["failures"]]
        if failed or r["site_errors"] or args.keep_logs:
            r["kept_logs"] = keep_logs(site)
        log.info("stopping the site and removing its nodes")
    r["targets"] = targets(r)
    text = render(r)
    print(text, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**r, "text": text}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
