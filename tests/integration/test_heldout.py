"""Held-out learner spellings and near-misses, typed into the real site's terminal.

The held-out cases (tests/support/heldout.py) of one lesson go the learner's
whole way here: a learner signs up, starts the lesson on the site, types each
case into the terminal websocket; then the page's Check asks for a check run
and the step's verdict comes back on the lesson socket (every check run ends
with a "checked" event listing the steps still open). A variant must turn the
step done, a cheat must leave it pending. (The other lessons' held-out cases
are typed in test_lessons.py, in the verify run of their lesson.)

The steps before a case's step are brought about by their solve scripts (run in
the node, as verify_lessons does); before each case the step's undo script takes
the node back, and the learner's progress on that step is cleared, so the
verdict that comes back is the one of a check run after the case.
"""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import time

from labs.courses import typist, verify
from labs.courses.lessons import load_lessons
from labs.sandboxes.hints import clean_output
from tests.integration.conftest import ROOT
from tests.support import heldout
from tests.support.labclient import Learner, next_event

LESSONS = {lesson.slug: lesson for lesson in load_lessons(ROOT / "labs" / "courses" / "content")}
QUIET = 1.5  # seconds without output that end a typed line (the page gets no command-end marks)
# the node's shell prompt at the end of the screen: "[node1] ~/app# "
PROMPT_RE = re.compile(r"\[node\d+\] \S*# ?$")


FILES = heldout.files()


def test_every_heldout_file_names_a_lesson_and_steps_that_can_be_undone():
    assert FILES, "no held-out cases"
    for path in FILES:
        lesson = LESSONS.get(path.stem)
        assert lesson is not None, f"{path.name}: no lesson {path.stem}"
        steps = {s.number: s for s in lesson.steps}
        for case in heldout.cases(path):
            assert case.step in steps, f"{path.name}: {case.name()}: no such step"
            step = steps[case.step]
            assert step.undo.strip(), f"{path.name}: {case.name()}: step has no undo script"
            typist.parse(case.script)  # raises on a key or pause it does not know


class SiteTerminal:
    """A node's terminal as the lesson page has it: the site's websocket."""

    def __init__(self, ws):
        self.ws = ws
        self.screen = bytearray()
        self.last_output = time.monotonic()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for chunk in self.ws:
            self.screen += chunk if isinstance(chunk, bytes) else chunk.encode()
            self.last_output = time.monotonic()

    async def until(self, done, seconds: float, what: str):
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() > deadline:
                text = " ".join(clean_output(self.screen.decode(errors="replace")).split())
                raise AssertionError(f"{what} never happened: ...{text[-400:]}")
            await asyncio.sleep(0.05)

    async def quiet(self):
        await self.until(lambda: time.monotonic() - self.last_output > QUIET, 120, "quiet")

    async def type(self, script: str, copy) -> None:
        """Type a held-out case as the typist of verify_lessons does, then wait
        until the node's shell has run everything typed."""
        actions = typist.parse(script)
        line_start = 0
        for index, action in enumerate(actions):
            after = actions[index + 1] if index + 1 < len(actions) else None
            if action.kind == "wait":
                await asyncio.sleep(action.seconds)
            elif action.kind == "until":
                want = action.text.encode()
                await self.until(lambda: want in self.screen[line_start:], 120,
                                 f"{action.text!r} on the screen")
            elif action.kind == "keys":
                await self.ws.send(action.keys)
                await asyncio.sleep(0.3)
            else:
                line_start = len(self.screen)
                await self.ws.send((await typist._fill(action.text, copy)).encode() + b"\r")
                if after is None or after.kind == "line":
                    # A line typed ahead would go to whatever reads the terminal
                    # now (a container's shell that is exiting loses it).
                    await asyncio.sleep(0.3)
                    await self.quiet()
        deadline = time.monotonic() + 300
        while True:
            nonce = secrets.token_hex(4)
            start = len(self.screen)
            await self.ws.send(f"\x15printf '%s-%s\\n' lab-heldout {nonce}\r".encode())
            word = f"lab-heldout-{nonce}".encode()

            def swallowed():
                # A command still running read our line (`docker run -it` does):
                # the node's prompt is back, quiet, and our word never came.
                shown = clean_output(self.screen[start:].decode(errors="replace"))
                return (time.monotonic() - self.last_output > 1.0
                        and PROMPT_RE.search(shown) is not None)

            await self.until(lambda: word in self.screen[start:] or swallowed(),
                             max(1.0, deadline - time.monotonic()), "the shell coming back")
            if word in self.screen[start:]:
                break
            if time.monotonic() > deadline:
                raise AssertionError("the shell never ran our line: ...{}".format(
                    " ".join(clean_output(self.screen.decode(errors="replace")).split())[-400:]))
        await self.quiet()  # the checks that the case's own commands asked for are over


async def _drain(ws, quiet: float = 0.5) -> list:
    """The events the socket sends until it has been quiet for `quiet` seconds."""
    events = []
    while True:
        try:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), quiet)))
        except asyncio.TimeoutError:
            return events


def _reset_step(live_site, username: str, slug: str, number: int) -> None:
    done = live_site.manage("shell", "-c", (
        "from labs.courses.models import StepProgress; "
        f"StepProgress.objects.filter(user__username={username!r}, step__lesson__slug={slug!r}, "
        f"step__number={number}).delete()"))
    assert done.returncode == 0, done.stderr


def _runtime_ids(live_site, pks: list) -> dict:
    done = live_site.manage("shell", "-c", (
        "from labs.sandboxes.models import LabNode; "
        f"[print('node', n.pk, n.runtime_id) for n in LabNode.objects.filter(pk__in={pks!r})]"))
    assert done.returncode == 0, done.stderr
    found = [line.split() for line in done.stdout.splitlines() if line.startswith("node ")]
    return {int(pk): runtime_id for _, pk, runtime_id in found}


def test_heldout_cases_typed_into_the_site_are_judged(live_site, driver):
    path = heldout.HELDOUT / f"{heldout.THROUGH_THE_SITE}.toml"
    lesson = LESSONS[path.stem]
    cases = heldout.cases(path)
    username = f"held-{secrets.token_hex(3)}"
    learner = Learner(live_site.url)
    learner.signup(username)
    verdicts = []

    async def run():
        async with learner.connect(f"/ws/lessons/{lesson.slug}/") as page:
            reply = learner.start(lesson.slug)
            assert reply.get("ok", True), reply
            event = await next_event(page, lambda e: e.get("type") == "session"
                                     and e.get("state") in ("ready", "failed"), 120)
            assert event["state"] == "ready", event
            pks = {n["name"]: n["id"] for n in event["nodes"]}
            ids = _runtime_ids(live_site, list(pks.values()))
            nodes = {name: driver.get_node(ids[pk]) for name, pk in pks.items()}
            terminals = {}

            async def terminal(name):
                if name not in terminals:
                    terminals[name] = SiteTerminal(await learner.connect(
                        f"/ws/nodes/{pks[name]}/terminal/?cols=120&rows=40"))
                return terminals[name]

            async def sh(node, script, what):
                env = await verify._node_env(driver, nodes)
                done = await verify._sh(driver, nodes[node].id, script, 300, env)
                assert done.ok, f"{what} failed: {done.output[-600:]}"

            try:
                for step in lesson.steps:
                    mine = [c for c in cases if c.step == step.number]
                    if step.quiz is not None:
                        continue
                    if step.setup.strip():
                        await sh(step.node, step.setup, f"step {step.number} setup")
                    for case in mine:
                        await sh(step.node, step.undo, f"step {step.number} undo")
                        term = await terminal(step.node)

                        async def copy(command, node=step.node):
                            done = await verify._sh(driver, nodes[node].id, command, 30)
                            return done.output
                        await term.type(case.script, copy)
                        _reset_step(live_site, username, lesson.slug, step.number)
                        # Runs that started before the reset are over once the page
                        # socket has been quiet a moment; what they sent is read here.
                        said = [e.get("message", "") for e in await _drain(page)
                                if e.get("type") == "step" and e.get("step") == step.number]
                        await page.send('{"type": "check"}')
                        # Every check run ends with "checked" and the steps it left
                        # open (a run the engine's events asked for may come first:
                        # it too saw the node after the case).
                        event = {}
                        while event.get("type") != "checked":
                            event = await next_event(page, lambda e: e.get("type") in
                                                     ("step", "checked"), 60)
                            if event.get("step") == step.number:
                                said.append(event.get("message", ""))
                        done = step.number not in event["open"]
                        message = said[-1] if said else ""
                        if done != case.variant:  # say what the node holds now
                            now = await verify._sh(driver, nodes[step.node].id,
                                                   step.check + "\necho \"[exit $?]\"", 30)
                            ran = await verify._sh(driver, nodes[step.node].id,
                                                   "tail -n 5 /root/.lab_commands", 30)
                            message += (f" | check now: {now.output.strip()[-300:]}"
                                        f" | last commands: {ran.output.strip()[-400:]!r}")
                        verdicts.append((case, done, message))
                    if mine:
                        await sh(step.node, step.undo, f"step {step.number} undo")
                    await sh(step.node, step.solve, f"step {step.number} solve")
                    if step.number >= max(c.step for c in cases):
                        break
            finally:
                for term in terminals.values():
                    term.reader.cancel()
                    await term.ws.close()

    asyncio.run(run())
    report = "\n".join(f"{'ok ' if done == case.variant else 'BAD'} {case.name()}: "
                       f"{'done' if done else 'pending'} ({message})"
                       for case, done, message in verdicts)
    print(f"{lesson.slug}: {len(verdicts)} held-out cases\n{report}")
    assert len(verdicts) == len(cases), report
    assert all(done == case.variant for case, done, _ in verdicts), report
