"""`python -m bench.joincost --against REV`: the web's CPU for one request of
a class's join link, this checkout's code against revision REV's, side by
side in one run.

A class of forty arriving at once is bound by what each arrival costs the
machine, and the class's own figures (`python -m bench.classstart`) move by
a third with this machine's speed from one run to the next: a change of a
few milliseconds a learner does not show there. Here both codes run at
once, on one site: its Redis, database and Celery workers (the fake driver,
so no node starts; the join still makes the guest, joins, places and
starts the session and answers with the lesson page) serve two web
servers, one process each, this checkout's and REV's (a temporary git
worktree). Bursts of join-link requests (four at a time) go to each in
turn, and the web process's CPU per request is read from /proc, so both
codes see the same machine, minute by minute.

Both web servers use this checkout's database schema: compare revisions
whose migrations are the same.

A report, never a test. Only loopback is contacted; the site, the second
web server and the worktree are removed at the end, also on failure.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.classstart import make_classroom
from bench.site import bench_process
from tests.support.livesite import ROOT, VENV_BIN, _answers, free_port, live_site, stop_process, wait_for

log = logging.getLogger("benchjoin")

CLOCK_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
AT_ONCE = 4  # requests in flight at a time, as a class's do
USER_AGENT = "Mozilla/5.0 Firefox/140"  # (a link previewer makes no guest)


def cpu_ms(pid: int) -> float:
    """CPU (user + system) of process `pid` and its children still running."""
    def one(p) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_MS
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return one(pid) + sum(one(int(k)) for k in kids)


def join_burst(url: str, code: str, count: int) -> None:
    def one(_):
        request = urllib.request.Request(f"{url}/join/{code}/", headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status != 200:
                raise RuntimeError(f"join link answered {response.status}")
            response.read()
    with ThreadPoolExecutor(AT_ONCE) as pool:
        list(pool.map(one, range(count)))


@contextlib.contextmanager
def worktree(rev: str):
    """A detached checkout of `rev`, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="lab-bench-rev-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path),
                    rev], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                       check=False)


@contextlib.contextmanager
def web_server(checkout: Path, env: dict):
    """The web server of `checkout` (one process), on the site's database and Redis."""
    port = free_port()
    proc = subprocess.Popen([str(VENV_BIN / "python"), str(checkout / "scripts" / "web.py"),
                             "--bind", "127.0.0.1", "--port", str(port), "--processes", "1"],
                            env={**env, "PYTHONPATH": str(checkout)}, cwd=checkout,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/"), 30, f"the web server of {checkout} to answer")
        yield url, proc.pid
    finally:
        stop_process(proc)


def run(rev: str, rounds: int, per_round: int) -> list:
    with contextlib.ExitStack() as stack:
        site = stack.enter_context(live_site(prefix="bj", driver="fake", quiet=True,
                                             extra_env={"LAB_WEB_PROCESSES": "1"}))
        # Starting in 5 minutes: within the pool's lead time, so each join
        # starts the guest's lab as a class's does.
        room = make_classroom(site, "join cost", seats=rounds * per_round * 2 + 20, starts_in=5)
        other = stack.enter_context(worktree(rev))
        servers = {"this checkout": (site.url, site.procs["web"].pid),
                   rev: stack.enter_context(web_server(other, site.env))}
        for url, _ in servers.values():  # (each process's first requests load code)
            join_burst(url, room["code"], 10)
        figures: dict = {name: [] for name in servers}
        for turn in range(rounds):
            names = list(servers) if turn % 2 == 0 else list(servers)[::-1]
            for name in names:
                url, pid = servers[name]
                before = cpu_ms(pid)
                join_burst(url, room["code"], per_round)
                figures[name].append((cpu_ms(pid) - before) / per_round)
            log.info("round %d of %d", turn + 1, rounds)
    return [f"{name:>15}: median {statistics.median(v):5.1f} ms  (rounds: "
            + " ".join(f"{x:.1f}" for x in v) + ")" for name, v in figures.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.joincost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD",
                        help="the revision compared with this checkout's code (default: HEAD, "
                             "for uncommitted changes)")
    parser.add_argument("--rounds", type=int, default=8, help="bursts per web server")
    parser.add_argument("--per-round", type=int, default=40, help="join requests per burst")
    args = parser.parse_args(argv)
    bench_process()
    lines = run(args.against, args.rounds, args.per_round)
    print(f"python -m bench.joincost: web CPU per join-link request (guest, join, lab start, "
          f"lesson page), {args.rounds} alternated bursts of {args.per_round}, "
          f"{AT_ONCE} at a time, one web process each, SQLite")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
