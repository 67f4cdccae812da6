"""`python -m bench.saves` (make bench-saves): what a saved machine costs and
how fast it comes back, side by side in one run. A report, never a test.

For each lesson measured (lesson 1, first-containers: alpine, ubuntu and mysql
pulled, mydb running; the images lesson, images-and-layers: figlet installed,
ourfiglet committed, hello built), a node is brought to the lesson's end by
running every step's solve, then saved (runtime/saves.py). Then, ROUNDS times
each, alternating: a restore of that save to a ready machine (the containers
that were running are running again), and a fresh start of the same lesson's
node. The save store is a temporary directory, removed at the end, as is
every node started.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runtime import NodeSpec, get_driver, registry, saves

log = logging.getLogger("bench.saves")

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ("first-containers", "images-and-layers")


async def bring_to_end(driver, lesson, session: str):
    """A node of `lesson` with every step's solve run: the state a learner
    has at the lesson's end."""
    from labs.courses import verify
    node = await driver.start(NodeSpec(session=session, name="node1", files=lesson.files_for("node1")))
    for step in lesson.steps:
        if step.quiz is not None or step.node != "node1":
            continue
        for script in (step.setup, step.solve):
            if script.strip():
                done = await verify._sh(driver, node.id, script, 600,
                                        await verify._node_env(driver, {"node1": node}))
                if not done.ok:
                    raise RuntimeError(f"{lesson.slug} step {step.number}: {done.output[-500:]}")
    return node


async def describe(driver, node) -> str:
    seen = await driver.exec(node.id, ["sh", "-c", "echo $(docker image ls -q | sort -u | wc -l) "
                                       "$(docker ps -q | wc -l) $(du -sm /var/lib/docker | cut -f1)"])
    images, running, mb = seen.output.split()[-3:]
    return f"{images} images, {running} running, {mb} MB of Docker data"


async def measure(driver, lesson, rounds: int) -> dict:
    key = f"bench/{lesson.slug}/node1"
    node = await bring_to_end(driver, lesson, "b-save-" + lesson.slug[:12])
    state = await describe(driver, node)
    began = time.monotonic()
    info = await driver.save_and_stop(node.id, key)
    save_s = time.monotonic() - began
    restores, fresh = [], []
    for i in range(rounds):
        for kind in ("restore", "fresh"):
            session = f"b-{kind[:2]}-{i}-{lesson.slug[:10]}"
            spec = NodeSpec(session=session, name="node1", files=lesson.files_for("node1"),
                            restore=key if kind == "restore" else "")
            began = time.monotonic()
            started = await driver.start(spec)
            took = time.monotonic() - began
            try:
                if kind == "restore" and i == 0:
                    log.info("%s restored: %s", lesson.slug, await describe(driver, started))
            finally:
                await driver.stop_session(session)
            (restores if kind == "restore" else fresh).append(took)
            log.info("%s %s %d: %.2f s", lesson.slug, kind, i + 1, took)
    saves.get_store().delete(key)
    return {"lesson": lesson.slug, "state": state, "save_s": save_s, "size": info.size,
            "restore": restores, "fresh": fresh}


def render(rows: list, rounds: int) -> str:
    lines = [f"Saved machines, side by side in one run (restore and fresh start: median of {rounds}, "
             "alternating; restore = to a ready machine with its containers running again)",
             f"{'lesson':<20}{'save':>8}{'size':>10}{'restore':>10}{'fresh start':>13}{'ratio':>8}"
             "  state saved"]
    for r in rows:
        restore, fresh = statistics.median(r["restore"]), statistics.median(r["fresh"])
        lines.append(f"{r['lesson']:<20}{r['save_s']:>6.1f} s{r['size'] / 2**20:>7.0f} MB"
                     f"{restore:>8.2f} s{fresh:>11.2f} s{restore / fresh:>7.1f}x  {r['state']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.saves", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lessons", default=",".join(LESSONS))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import django
    django.setup()
    from django.conf import settings
    from labs.courses.lessons import load_lesson

    store_dir = tempfile.mkdtemp(prefix="bench-saves-")
    os.environ["LAB_SAVE_DIR"] = store_dir
    driver = get_driver("builtin")
    rows = []
    try:
        with registry.ensure_running():
            for slug in args.lessons.split(","):
                lesson = load_lesson(Path(settings.LESSONS_DIR) / slug)
                rows.append(asyncio.run(measure(driver, lesson, args.rounds)))
    finally:
        for node in driver.list_nodes():
            if node.session.startswith("b-"):
                with contextlib.suppress(Exception):
                    asyncio.run(driver.stop(node.id))
        import shutil
        shutil.rmtree(store_dir, ignore_errors=True)
    print(render(rows, args.rounds))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labs.settings")
    sys.exit(main())
