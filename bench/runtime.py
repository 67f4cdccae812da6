"""`python -m bench`: figures of the runtime and of the site, measured here and now.

A report, not a test: machines are noisy, so it prints medians and tails and
asserts nothing. The runtime figures come from this process (node start cold
and from the warm pool, stop, idle memory) for each driver asked for, side by
side; the site figures come from `python -m bench.site` run as a
subprocess from the project root (the runtime never imports Django or labs).
The report ends with a table of target, measured value and PASS/MISS.

Every node it starts is removed, also on failure or Ctrl-C; the site
subprocess removes its own nodes and processes.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import dind
from runtime import get_driver, images
from runtime.model import Driver, LabRuntimeError, NodeSpec

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list, pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def _pss_of(pids) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def node_pss_bytes(node_id: str) -> int:
    """Proportional set size of every process of a built-in node (nested containers too)."""
    from runtime.builtin import node_pids
    return _pss_of(node_pids(node_id))


def tree_pss_bytes(root_pid: int) -> int:
    """PSS of a process and all its descendants (a docker-driver node's init and below)."""
    children: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        if pid in pids:
            continue
        pids.add(pid)
        todo.extend(children.get(pid, []))
    return _pss_of(pids)


def pss_of_node(driver: Driver, node) -> int:
    if driver.name == "builtin":
        return node_pss_bytes(node.id)
    pid = int(node.extra.get("pid") or 0)
    return tree_pss_bytes(pid) if pid else 0


def dir_size_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", "--one-file-system", str(path)], capture_output=True,
                         text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else 0


async def start_marks(driver: Driver, node, began: float, ended: float) -> list:
    """The node's start marks ([[stage, wall time], ...]): the driver's own (or
    just the request and its answer), then the stages of its dockerd read from
    its log (bench/dind.py `engine_marks`)."""
    marks = list(node.extra.get("marks") or [["begin", began], ["ready", ended]])
    if marks:
        with contextlib.suppress(LabRuntimeError):
            got = await driver.exec(node.id, ["cat", "/var/log/dockerd.log"], timeout=15)
            marks += dind.engine_marks(got.output)
    return marks


async def cold_start(driver: Driver, spec: NodeSpec):
    """A cold start, also when a warm pool (the site's, another bench's) is waiting:
    the built-in driver's start would claim a pool node instead."""
    if hasattr(driver, "_cold_start") and hasattr(driver, "preflight"):
        problems = driver.preflight()
        if problems:
            raise LabRuntimeError("; ".join(problems), permanent=True)
        return await asyncio.to_thread(driver._cold_start, spec, lambda event: None)
    return await driver.start(spec)


async def bench_node_start(driver: Driver, count: int, peer=None) -> dict:
    """Cold starts, idle memory, stops; then starts from the warm pool if the driver has one.

    With a `peer` (bench/dind.py), each cold start is followed by one start of
    the dind peer, so that the noise of the machine hits both alike."""
    session = "bench" + secrets.token_hex(3)
    times, pss, stops, warm = [], [], [], []
    breakdown, peer_times, peer_breakdown, parallel = [], [], [], []
    pool_started: list = []
    has_pool = False
    try:
        for i in range(count):
            began, wall = time.perf_counter(), time.time()
            node = await cold_start(driver, NodeSpec(session=session, name=f"node{i + 1}"))
            times.append(time.perf_counter() - began)
            marks = await start_marks(driver, node, wall, time.time())
            if marks:
                breakdown.append(dind.phases(marks))
                parallel.append(node.extra.get("parallel") or {})
            if peer is not None:
                got = await asyncio.to_thread(peer.start_once)
                peer_times.append(got["seconds"])
                peer_breakdown.append(dind.phases(got["marks"]))
        # Idle: give dockerd and containerd a moment to settle after start-up.
        await asyncio.sleep(5)
        for node in driver.list_nodes():
            if node.session == session:
                pss.append(pss_of_node(driver, node))
        for node in [n for n in driver.list_nodes() if n.session == session]:
            began = time.perf_counter()
            await driver.stop(node.id)
            stops.append(time.perf_counter() - began)
        has_pool = hasattr(driver, "pool_nodes")
        if has_pool:
            pool_started = await grow_pool(driver, count)
            # A learner each (a session of their own), as a class takes the pool.
            for i in range(min(count, len(pool_started))):
                began = time.perf_counter()
                await driver.start(NodeSpec(session=f"{session}w{i}", name="node1"))
                warm.append(time.perf_counter() - began)
    finally:
        await driver.stop_session(session)
        for i in range(count):
            await driver.stop_session(f"{session}w{i}")
        await drain_pool(driver, pool_started)
    return {"start": times, "idle_pss": pss, "stop": stops, "warm": warm,
            "pool": has_pool, "breakdown": breakdown, "peer": peer_times,
            "peer_breakdown": peer_breakdown, "parallel": parallel}


async def grow_pool(driver: Driver, count: int) -> list:
    """Add `count` nodes to the machine's warm pool (shared: it is filled to
    what was there plus `count`); the ids of the nodes this started."""
    if not hasattr(driver, "pool_nodes"):
        return []
    had = len(driver.pool_nodes())
    return await asyncio.to_thread(driver.fill_pool, had + count)


async def drain_pool(driver: Driver, started: list) -> None:
    """Remove the nodes of `started` still waiting in the pool (nobody claimed them)."""
    if not started:
        return
    from runtime.builtin.pool import is_pool_session
    waiting = {n.id for n in driver.list_nodes() if is_pool_session(n.session)}
    for node_id in started:
        if node_id in waiting:
            with contextlib.suppress(LabRuntimeError):
                await driver.stop(node_id)


def _ms(values: list) -> str:
    if not values:
        return "no samples"
    return (f"median {statistics.median(values):.0f} ms, p95 {percentile(values, 95):.0f}, "
            f"p99 {percentile(values, 99):.0f}, min {min(values):.0f}, max {max(values):.0f} "
            f"(n={len(values)})")


# What each phase of a cold start is, by the mark that ends it (launch.py,
# bench/dind.py ENGINE_LINES).
PHASE_NAMES = {
    "state": "uid range + state (lock, bookkeeping)",
    "disk": "disk (loop-device file system)",
    "files": "node files (/etc)",
    "namespaces": "namespaces (holder: user + net)",
    "launcher": "waiting for the launcher (cgroups; made in parallel)",
    "ownership": "ownership (chown, idmapped image)",
    "network": "network (veth, bridge, addresses)",
    "network joined": "waiting for the network (made in parallel)",
    "cgroups": "cgroups (dirs, limits)",
    "launched": "launch (go: nsenter, unshare: init's pid)",
    # (the docker driver: all the CLI calls of its start, then its init)
    "dockerd exec": "init + mounts (nodestart.sh, tini, lab-init) to dockerd's 1st log",
    "containerd": "containerd (dockerd starts it, until it serves)",
    "dockerd setup": "dockerd set-up (graph driver, plugins)",
    "networks (docker0, iptables)": "dockerd networks (docker0, iptables)",
    "dockerd API listen": "dockerd until its API listens",
    "ready": "until the host sees `docker info` answer",
    "end": "after ready (mounts released, state saved, hosts)",
    "run": "`docker run -d` returns (container created, started)",
    # (the docker driver's own marks)
    "created": "network, disk, volume, container created (Engine API)",
    "started": "container started (the host engine: runc, its network)",
}


# The dind peer's marks that mean something else there (bench/dind.py).
PEER_PHASE_NAMES = {**PHASE_NAMES,
                    "dockerd exec": "`docker run` returned to dockerd's first log",
                    "ready": "until `docker exec … docker info` answers"}


def breakdown_lines(samples: list, total_ms: list, indent: str = "    ",
                    names: dict = PHASE_NAMES) -> list:
    """Median per phase over the samples ([(phase, ms), ...] each), in start order."""
    order: list = []
    for sample in samples:
        for name, _ in sample:
            if name not in order:
                order.append(name)
    lines = []
    for name in order:
        values = [dict(sample).get(name, 0.0) for sample in samples]
        lines.append(f"{indent}{names.get(name, name):66s} median {statistics.median(values):6.1f} ms"
                     f"  p95 {percentile(values, 95):6.1f}")
    summed = [sum(ms for _, ms in sample) for sample in samples]
    lines.append(f"{indent}{'(sum of phases; the timed start was ' + f'{statistics.median(total_ms):.0f} ms)':66s}"
                 f" median {statistics.median(summed):6.1f} ms")
    return lines


def runtime_figures(driver: Driver, count: int, peer=None) -> tuple:
    """(report lines, target rows) of one driver (and of the dind peer, interleaved)."""
    figures = asyncio.run(bench_node_start(driver, count, peer))
    ms = [t * 1000 for t in figures["start"]]
    warm = [t * 1000 for t in figures["warm"]]
    stop_ms = [t * 1000 for t in figures["stop"]]
    mib = [b / 2**20 for b in figures["idle_pss"]]
    peer_ms = [t * 1000 for t in figures["peer"]]
    d = driver.name
    lines = [
        f"driver: {d}",
        f"  node start, cold (request to `docker info` answering inside): {_ms(ms)}",
    ]
    if figures["breakdown"]:
        lines.append("  where a cold start goes (median per phase, in start order):")
        lines += breakdown_lines(figures["breakdown"], ms)
        parallel = figures.get("parallel") or []
        for name in sorted({k for p in parallel for k in p}):
            values = [p.get(name, 0.0) for p in parallel]
            lines.append(f"    (made in parallel, off the path above: {name}, median "
                         f"{statistics.median(values):.1f} ms)")
    if peer_ms:
        lines.append(f"  dind peer (PWD: privileged dind, tmpfs /var/lib/docker, polling "
                     f"`docker exec … docker info`), interleaved: {_ms(peer_ms)}")
        lines += breakdown_lines(figures["peer_breakdown"], peer_ms, names=PEER_PHASE_NAMES)
        ratio = statistics.median(ms) / statistics.median(peer_ms)
        lines.append(f"  {d} cold start / dind peer, medians of the same run: "
                     f"{statistics.median(ms):.0f} / {statistics.median(peer_ms):.0f} ms = "
                     f"{ratio:.2f}")
    lines += [
        "  node start, from the warm pool: " + (_ms(warm) if figures["pool"]
                                                else "no warm pool in this driver"),
        f"  node stop: {_ms(stop_ms)}",
        f"  idle node memory, PSS of all its processes: median "
        f"{statistics.median(mib):.1f} MiB, max {max(mib):.1f} MiB (n={len(mib)})"
        if mib else "  idle node memory: no samples",
    ]
    if d == "builtin":
        image = images.current_image()
        lines.append(f"  node image: {dir_size_bytes(image) / 2**20:.0f} MiB on disk ({image.name})")
    rows = []
    if ms:
        rows.append(_row(f"[{d}] node start cold, median", "< 500 ms",
                         f"{statistics.median(ms):.0f} ms", statistics.median(ms) < 500))
    if ms and peer_ms:
        ratio = statistics.median(ms) / statistics.median(peer_ms)
        goal = 0.5 if d == "builtin" else 1.0
        rows.append(_row(f"[{d}] cold start / dind peer (same run), medians", f"<= {goal}",
                         f"{statistics.median(ms):.0f} / {statistics.median(peer_ms):.0f} ms "
                         f"= {ratio:.2f}", ratio <= goal))
    if warm:
        rows.append(_row(f"[{d}] node start from the warm pool, p99", "< 100 ms",
                         f"{percentile(warm, 99):.0f} ms", percentile(warm, 99) < 100))
    if mib:
        rows.append(_row(f"[{d}] idle node memory (PSS), median", "< 64 MiB",
                         f"{statistics.median(mib):.1f} MiB", statistics.median(mib) < 64))
    return lines, rows


def _row(target: str, goal: str, measured: str, ok) -> dict:
    return {"target": target, "goal": goal, "measured": measured,
            "verdict": "n/a" if ok is None else ("PASS" if ok else "MISS")}


def table(rows: list) -> str:
    if not rows:
        return "(no targets measured)"
    heads = ("target", "goal", "measured", "verdict")
    cells = [(r["target"], r["goal"], r["measured"], r["verdict"]) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = lambda c: "  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip()  # noqa: E731
    return "\n".join([line(heads), line(tuple("-" * w for w in widths))] + [line(c) for c in cells])


@contextlib.contextmanager
def docker_engine():
    """The host engine of the docker driver: LAB_DOCKER_HOST or the CLI's own if one
    answers, else the private test engine (tests/support/hostdocker.py), stopped again after."""
    from tests.support import hostdocker
    if os.environ.get("LAB_DOCKER_HOST"):
        yield os.environ["LAB_DOCKER_HOST"]
        return
    probe = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                           capture_output=True, timeout=20)
    if probe.returncode == 0:
        yield ""
        return
    with hostdocker.running() as host:
        os.environ["LAB_DOCKER_HOST"] = host
        try:
            yield host
        finally:
            os.environ.pop("LAB_DOCKER_HOST", None)


def site_figures(driver: str, site_args: list) -> tuple:
    """Run `python -m bench.site` (the real site, driven over HTTP and websockets)."""
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as tmp:
        out = Path(tmp) / "site.json"
        argv = [sys.executable, "-m", "bench.site", "--driver", driver,
                "--json", str(out), *site_args]
        log.info("site figures: %s", " ".join(argv[1:]))
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.DEVNULL)
        try:
            code = proc.wait()
        except BaseException:
            # Ctrl-C reaches the child too (same process group); let it clean up.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(180)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        if code != 0 or not out.exists():
            return [f"site ({driver}): bench.site failed (exit {code}); see its log above"], [
                _row(f"[{driver}] site figures", "measured", f"failed (exit {code})", False)]
        data = json.loads(out.read_text())
    rows = [{**r, "target": f"[{driver}] {r['target']}"} for r in data["targets"]]
    return data["text"].splitlines(), rows


def report(drivers: list, count: int = 10, site_drivers: list | None = None,
           site_args: list | None = None, peer: bool = True) -> str:
    began = time.monotonic()
    lines = [f"python -m bench: {time.strftime('%Y-%m-%d %H:%M %Z')}, "
             f"{os.cpu_count()} cores, "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"]
    rows: list = []
    with contextlib.ExitStack() as stack:
        # One host engine for the docker driver and for the dind peer, which is
        # measured interleaved with each driver's cold starts.
        host = stack.enter_context(docker_engine()) if (peer or "docker" in drivers) else None
        the_peer = None
        if peer:
            try:
                the_peer = stack.enter_context(dind.DindPeer(host or ""))
            except (LabRuntimeError, OSError, subprocess.SubprocessError) as e:
                lines.append(f"dind peer: not measured: {getattr(e, 'reason', None) or e}")
        for name in drivers:
            try:
                got_lines, got_rows = runtime_figures(get_driver(name), count, the_peer)
            except (LabRuntimeError, OSError, subprocess.SubprocessError) as e:
                reason = getattr(e, "reason", None) or str(e)
                got_lines = [f"driver: {name}", f"  not measured: {reason}"]
                got_rows = [_row(f"[{name}] runtime figures", "measured", "not available", None)]
            lines += got_lines
            rows += got_rows
    for name in site_drivers or []:
        with (docker_engine() if name == "docker" else contextlib.nullcontext()):
            got_lines, got_rows = site_figures(name, site_args or [])
        lines += [""] + got_lines
        rows += got_rows
    lines += ["", f"targets (whole run {(time.monotonic() - began) / 60:.1f} min):", table(rows)]
    return "\n".join(lines)
