"""`python -m bench.recording` (make bench-recording): what recording every
terminal costs, side by side in one run. A report, never a test.

One site and LEARNERS learners, each with a lesson-1 node. The site's recorder
process is stopped and started between rounds (off, on, off, on...), so the
same nodes and terminals are measured both ways:

- keystroke echo with TERMINALS terminals typing at once (median, p99);
- the flood rate: `cat` of a FLOOD_MB file through one terminal (MB/s), and
  the recorder's own CPU meanwhile.

Then the disk a recording takes: one learner types lesson 1's commands key by
key (as people do; each echo is an event), and the recording's size is given
per command and per hour at a typical pace (PACE commands an hour).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import time

from bench import site as bs
from runtime.castfile import cast_path
from tests.support.livesite import SESSION_PREFIX, live_site

log = logging.getLogger("bench.recording")

# Lesson 1 as a learner types it (the interactive ubuntu step left out: it
# waits for a person inside the container).
LESSON = ["docker container run alpine hostname", "docker container ls --all",
          "docker container run alpine ls -l", "docker image ls",
          "docker container run --detach --name mydb -e MYSQL_ROOT_PASSWORD=my-secret-pw mysql",
          "docker container ls", "docker container logs mydb | tail -n 5",
          "docker container top mydb", "docker container exec mydb mysql --version",
          "ls -la", "history | tail -n 5"]


def recorded_nodes(site) -> int:
    return site.log("recorder").count("INFO runtime.recorder: recording node ")


async def recorder_on(site, nodes: int) -> None:
    before = recorded_nodes(site)
    site.start("recorder")
    deadline = time.monotonic() + 120
    while recorded_nodes(site) - before < nodes and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    log.info("recorder attached to %d node(s)", recorded_nodes(site) - before)
    await asyncio.sleep(3)  # the attaches' own work is not what a round measures


def recorder_off(site) -> None:
    proc = site.procs.get("recorder")
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(10)


async def typed(term: bs.Term, command: str, timeout: float = 300) -> None:
    for char in command:
        await term.ws.send(char.encode())
        await term.until(lambda b, c=char.encode(): c in b, 10)
    await term.ws.send(b"\r")
    await term.until(lambda b: bs._prompt_after_newline(b), timeout)


async def run(site, args) -> dict:
    seats = await bs.more_seats(site.url, args.learners, "rec", 300)
    log.info("%d learners with a node", len(seats))
    rounds = []
    for i in range(args.rounds):
        for recording in (False, True):
            if recording:
                await recorder_on(site, len(seats))
            else:
                recorder_off(site)
            await asyncio.sleep(1)
            echo = await bs.echo_stage(seats, args.terminals, args.keys, (0.15, 0.35))
            flood = await bs.flood_stage(seats, args.flood_mb, 0)
            # The recorder's own CPU while the flood ran (a share of one core).
            recorder_cpu = sum(share for name, share in flood["cpu"] if name == "runtime record")
            rounds.append({"recording": recording, "echo": echo["many"],
                           "terminals": echo.get("terminals", 0), "flood_mb_s": flood["file_mb_s"],
                           "recorder_cpu": recorder_cpu})
            log.info("round %d, recording %s: echo median %.1f ms p99 %.1f ms, flood %.1f MB/s",
                     i + 1, "on" if recording else "off", echo["many"]["median"],
                     echo["many"]["p99"], flood["file_mb_s"])
    # Disk: a learner through lesson 1 (the recorder is on after the last round).
    seat = seats[-1]
    dashboard = seat.learner.get("/dashboard/").read().decode()
    session = re.search(r'href="/replays/(\d+)/"', dashboard).group(1)
    path = cast_path(f"{site.prefix}{session}", "node1")
    term = await bs.open_term(seat.learner, seat.node)
    before, began = path.stat().st_size, time.monotonic()
    try:
        for command in LESSON:
            await typed(term, command)
    finally:
        await term.ws.close()
    await asyncio.sleep(2)
    written = path.stat().st_size - before
    return {"rounds": rounds, "lesson": {"commands": len(LESSON), "bytes": written,
                                         "seconds": time.monotonic() - began}}


def render(r: dict, args) -> str:
    lines = [f"Recording cost, side by side in one run ({args.learners} nodes; "
             f"{r['rounds'][0]['terminals']} terminals typing at once; recorder off/on alternating)",
             f"{'round':<7}{'recording':<11}{'echo median':>13}{'echo p99':>11}{'flood':>12}"
             f"{'recorder CPU in flood':>24}"]
    for i, row in enumerate(r["rounds"]):
        lines.append(f"{i // 2 + 1:<7}{'on' if row['recording'] else 'off':<11}"
                     f"{row['echo']['median']:>10.1f} ms{row['echo']['p99']:>8.1f} ms"
                     f"{row['flood_mb_s']:>7.1f} MB/s{row['recorder_cpu'] * 100:>19.1f}% core")
    for label, pick in (("echo median", lambda x: x["echo"]["median"]),
                        ("echo p99", lambda x: x["echo"]["p99"]), ("flood", lambda x: x["flood_mb_s"])):
        off = [pick(x) for x in r["rounds"] if not x["recording"]]
        on = [pick(x) for x in r["rounds"] if x["recording"]]
        a, b = sum(off) / len(off), sum(on) / len(on)
        lines.append(f"mean {label}: off {a:.1f}, on {b:.1f} ({(b - a) / a * 100:+.1f}%)")
    lesson = r["lesson"]
    per_command = lesson["bytes"] / lesson["commands"]
    lines.append(f"disk: lesson 1 typed key by key, {lesson['commands']} commands in "
                 f"{lesson['seconds']:.0f} s: {lesson['bytes'] / 1024:.1f} KiB recorded, "
                 f"{per_command / 1024:.1f} KiB per command; at {args.pace} commands an hour "
                 f"{per_command * args.pace / 2**20:.2f} MiB per hour")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recording", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", type=int, default=100)
    parser.add_argument("--terminals", type=int, default=100)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--flood-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    parser.add_argument("--pace", type=int, default=60, help="commands an hour, for disk per hour")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    prefix = SESSION_PREFIX + "r"
    with live_site(prefix=prefix, quiet=True) as site:
        try:
            r = asyncio.run(run(site, args))
        except BaseException:
            sys.stderr.write(site.dump_logs()[-8000:] + "\n")
            raise
    print(render(r, args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labs.settings")
    sys.exit(main())
