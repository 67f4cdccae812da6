"""A real node's terminal is recorded by the site's recorder process, with a
page attached and without one, and the replay's .cast has the terminal's
commands and the site's timeline (step 1 done) in one asciicast v2 file."""
from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time

from runtime import get_driver
from runtime.castfile import cast_path
from tests.support.labclient import Learner, next_event
from tests.integration.test_lesson_flow import SLUG, started_node

STEP1 = "docker container run alpine hostname"


def replay_cast(learner: Learner, session: int) -> tuple:
    lines = learner.get(f"/replays/{session}/node1.cast").read().decode().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def test_a_terminal_is_recorded_with_and_without_a_page_open(live_site):
    ada = Learner(live_site.url)
    ada.signup("rec-ada")
    node = started_node(ada)

    async def step_one():
        async with ada.connect(f"/ws/lessons/{SLUG}/") as lesson, \
                ada.connect(f"/ws/nodes/{node}/terminal/?cols=100&rows=30") as term:
            await term.send(STEP1.encode() + b"\r")
            await next_event(lesson, lambda e: e.get("type") == "step" and e.get("step") == 1
                             and e.get("state") == "done", 90)
    asyncio.run(step_one())

    # The page is gone; the shell goes on (as a learner's command that runs
    # for a while would), and the recorder still hears it.
    with sqlite3.connect(live_site.env["DB_PATH"]) as db:
        runtime_id, session = db.execute("SELECT runtime_id, session_id FROM labs_labnode WHERE id = ?",
                                         (node,)).fetchone()
    typed = asyncio.run(get_driver().exec(
        runtime_id, ["tmux", "send-keys", "-t", "main", "echo unattended-$((6*7))", "Enter"], timeout=10))
    assert typed.ok, typed.output

    deadline = time.monotonic() + 30
    while True:
        header, events = replay_cast(ada, session)
        output = "".join(e[2] for e in events if e[1] == "o")
        marks = [e[2] for e in events if e[1] == "m"]
        if "unattended-42" in output or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert header["version"] == 2 and header["width"] > 0
    assert re.search(r"\n[0-9a-f]{12}\r", output), output[-2000:]  # step 1's output
    assert "unattended-42" in output, output[-2000:]
    assert "\x1b]6973" not in output and "\x1bPtmux" not in output  # marks are markers, not output
    assert f"$ {STEP1} [exit 0]" in marks and "step 1 done" in marks
    assert "$ echo unattended-$((6*7)) [exit 0]" in marks, marks
    assert marks.index(f"$ {STEP1} [exit 0]") < marks.index("step 1 done")
    times = [e[0] for e in events]
    assert times == sorted(times)
    # On the host, outside the node: the learner's root cannot reach it.
    assert cast_path(f"{live_site.prefix}{session}", "node1").is_file()
    inside = asyncio.run(get_driver().exec(runtime_id, ["sh", "-c", "find / -name '*.cast' -xdev 2>/dev/null"]))
    assert inside.output.strip() == ""
