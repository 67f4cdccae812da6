"""Prove every lesson's checks right on real nodes (no Django needed).

For each step of a lesson, on fresh nodes that only this run uses:

    setup (if any) -> check must FAIL
    each cheat: typed -> check must still FAIL -> undo
    solve -> check must PASS
    each variant: undo -> check must FAIL -> typed -> check must PASS
    (after variants: undo -> solve, so the next step starts from the solve's state)

Cheats and variants are typed into the node's real terminal as a learner would
(typist.py); solve, setup and undo scripts run through an exec. One line is
printed per case (the step's own, then one per cheat and per variant).

Quiz steps need no node: their answer must point at one of their choices (a
lesson of quiz steps only starts no node at all).
A check that runs out of time is "could not check", which counts as a
failure. Steps run in order on the same nodes, as a learner would do them.

Solve and setup scripts run in the step's node with, for every node N of the
lesson (upper-cased, '-' as '_'), LAB_N_ADDRESS set to its address and, when
N is a swarm manager, LAB_N_WORKER_TOKEN set to its worker join token. That
is how a node2 step joins node1's swarm without a human copying the command.

    python manage.py verify_lessons [slug ...]
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shlex
import time
from dataclasses import dataclass
from typing import Callable, Optional

from runtime import NodeSpec
from runtime.model import LabRuntimeError

from .typist import Typist

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 20.0
SOLVE_TIMEOUT = 300.0


@dataclass(frozen=True)
class StepResult:
    lesson: str
    number: int
    name: str
    ok: bool
    detail: str
    seconds: float
    case: str = ""  # "" for the step itself, else "variant: why" or "cheat: why"

    def line(self) -> str:
        name = self.name.split("-", 1)[1] if "-" in self.name else self.name
        case = f" [{self.case}]" if self.case else ""
        return (f"{'PASS' if self.ok else 'FAIL'} {self.lesson} {self.number} {name}{case} "
                f"({self.detail}) {self.seconds:.1f}s")


def session_name(slug: str) -> str:
    """A runtime session name of our own: v-<slug, cut>-<random>, at most 31 characters."""
    stem = re.sub(r"-+$", "", slug[:20]) or "lesson"
    return f"v-{stem}-{secrets.token_hex(3)}"


def env_name(node: str) -> str:
    return "LAB_" + node.upper().replace("-", "_")


def _short(output: str, limit: int = 300) -> str:
    text = " ".join(output.split())
    return text if len(text) <= limit else text[:limit] + "..."


async def _sh(driver, node_id: str, script: str, timeout: float, env: dict = None):
    prefix = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    return await driver.exec(node_id, ["/bin/sh", "-c", prefix + script], timeout=timeout)


async def _node_env(driver, nodes: dict) -> dict:
    """LAB_<NODE>_ADDRESS for every node, LAB_<NODE>_WORKER_TOKEN for swarm managers."""
    env = {}
    for name, node in nodes.items():
        env[f"{env_name(name)}_ADDRESS"] = node.address
        result = await driver.exec(node.id, ["docker", "swarm", "join-token", "-q", "worker"],
                                   timeout=15)
        if result.ok and result.output.strip():
            env[f"{env_name(name)}_WORKER_TOKEN"] = result.output.strip().splitlines()[-1]
    return env


async def _check(driver, node_id: str, script: str, timeout: float) -> tuple:
    """(state, output): state True = passes, False = fails, None = could not check."""
    try:
        result = await _sh(driver, node_id, script, timeout)
    except LabRuntimeError as exc:
        return None, exc.reason
    if result.timed_out:
        return None, f"timed out after {timeout:.0f}s"
    return result.exit_code == 0, result.output


class Terminals:
    """The nodes' terminals that cases are typed into, opened on first use."""

    def __init__(self, driver, nodes: dict):
        self.driver, self.nodes, self.open = driver, nodes, {}

    async def typist(self, node_name: str) -> Typist:
        if node_name not in self.open:
            terminal = await self.driver.open_terminal(self.nodes[node_name].id, cols=120, rows=40)
            self.open[node_name] = Typist(terminal)
            if not await self.open[node_name].sync(30):
                raise LabRuntimeError("the node's shell did not answer in its terminal")
        return self.open[node_name]

    async def close(self):
        for typist in self.open.values():
            await typist.close()


async def verify_step(driver, lesson, step, nodes: dict, check_timeout=CHECK_TIMEOUT,
                      solve_timeout=SOLVE_TIMEOUT, terminals: Terminals | None = None) -> list:
    """The results of one step: its own (fail, solve, pass), then one per cheat and variant."""
    started = time.monotonic()
    results = []

    def result(ok, detail, case=""):
        results.append(StepResult(lesson.slug, step.number, step.name, ok, detail,
                                  time.monotonic() - started, case))
        return results

    if step.quiz is not None:
        quiz = step.quiz
        if len(quiz.choices) >= 2 and 0 <= quiz.answer < len(quiz.choices):
            return result(True, f"quiz, answer {quiz.answer}: {quiz.choices[quiz.answer]!r}")
        return result(False, f"quiz answer {quiz.answer} is not one of its choices")
    node = nodes.get(step.node)
    if node is None:
        return result(False, f"the lesson has no node {step.node}")
    terminals = terminals or Terminals(driver, nodes)

    async def run(script, what):
        done = await _sh(driver, node.id, script, solve_timeout, await _node_env(driver, nodes))
        if not done.ok:
            how = "timed out" if done.timed_out else f"exit {done.exit_code}"
            return f"{what} failed ({how}): {_short(done.output[-600:])}"
        return ""

    async def copy(command: str) -> str:
        done = await _sh(driver, node.id, command, check_timeout)
        if not done.ok or not done.output.strip():
            raise RuntimeError(f"{{{{$ {command} }}}} printed nothing ({_short(done.output)})")
        return done.output

    async def typed(case) -> str:
        try:
            typist = await terminals.typist(step.node)
            if not await typist.type(case.script, solve_timeout, copy):
                return f"the shell did not come back after typing it: ...{typist.tail(300)}"
        except (LabRuntimeError, RuntimeError) as exc:
            return f"could not type it: {getattr(exc, 'reason', exc)}"
        return ""

    if step.setup.strip():
        problem = await run(step.setup, "setup")
        if problem:
            return result(False, problem)
    state, output = await _check(driver, node.id, step.check, check_timeout)
    if state is None:
        return result(False, f"could not check before the solve: {_short(output)}")
    if state:
        return result(False, "check passed before the step was done")
    if not output.strip():
        return result(False, "check failed first but told the learner nothing")
    cheat_results = []
    for cheat in step.cheats:
        case_started = time.monotonic()
        problem = await typed(cheat)
        if not problem:
            state, output = await _check(driver, node.id, step.check, check_timeout)
            if state is None:
                problem = f"could not check: {_short(output)}"
            elif state:
                problem = "check passed: the cheat turned the step green"
        undone = await run(step.undo, "undo")
        cheat_results.append((cheat, problem or undone,
                              "typed, check kept failing" + (", undone" if not undone else ""),
                              time.monotonic() - case_started))
    problem = await run(step.solve, "solve")
    if problem:
        result(False, problem)
    else:
        state, output = await _check(driver, node.id, step.check, check_timeout)
        if state is None:
            result(False, f"could not check after the solve: {_short(output)}")
        elif not state:
            result(False, f"check still fails after the solve: {_short(output)}")
        else:
            result(True, "check failed first, then passed after the solve")
    for cheat, problem, fine, seconds in cheat_results:
        results.append(StepResult(lesson.slug, step.number, step.name, not problem,
                                  problem or fine, seconds, f"cheat: {cheat.why}"))
    for variant in step.variants:
        case_started = time.monotonic()
        problem = await run(step.undo, "undo")
        if not problem:
            state, output = await _check(driver, node.id, step.check, check_timeout)
            if state is not False:
                problem = ("the undo left the step done" if state else
                           f"could not check after the undo: {_short(output)}")
        if not problem:
            problem = await typed(variant)
        if not problem:
            state, output = await _check(driver, node.id, step.check, check_timeout)
            if state is None:
                problem = f"could not check: {_short(output)}"
            elif not state:
                problem = f"check still fails after typing it: {_short(output)}"
        results.append(StepResult(lesson.slug, step.number, step.name, not problem,
                                  problem or "undone, typed, check passed",
                                  time.monotonic() - case_started, f"variant: {variant.why}"))
    if step.variants:
        # Later steps expect the state the solve leaves (names, tags, files).
        problem = await run(step.undo, "undo") or await run(step.solve, "solve again")
        if problem:
            result(False, f"after the variants: {problem}")
    return results


async def verify_lesson(driver, lesson, on_result: Optional[Callable] = None,
                        check_timeout=CHECK_TIMEOUT, solve_timeout=SOLVE_TIMEOUT,
                        only_step: int | None = None) -> list:
    """Verify every step of one lesson (or only step `only_step`, after solving the
    ones before it) on fresh nodes; returns [StepResult]."""
    results = []

    def report(found):
        for res in found:
            results.append(res)
            if on_result:
                on_result(res)

    steps = [s for s in lesson.steps if only_step is None or s.number == only_step]
    wanted = {s.number for s in steps}
    if all(step.quiz is not None for step in steps):
        for step in steps:
            report(await verify_step(driver, lesson, step, {}))
        return results
    session = session_name(lesson.slug)
    nodes = {}
    terminals = None
    try:
        try:
            for name in lesson.nodes:
                nodes[name] = await driver.start(NodeSpec(session=session, name=name,
                                                          files=lesson.files_for(name)))
        except LabRuntimeError as exc:
            report([StepResult(lesson.slug, step.number, step.name, False,
                               f"could not start the lesson's nodes: {exc.reason}", 0.0)
                    for step in steps])
            return results
        terminals = Terminals(driver, nodes)
        for step in lesson.steps:
            if only_step is not None and step.number < only_step and step.quiz is None:
                env = await _node_env(driver, nodes)
                node_id = nodes[step.node].id
                for script in (step.setup, step.solve):
                    if script.strip():
                        await _sh(driver, node_id, script, solve_timeout, env)
                continue
            if step.number in wanted:
                report(await verify_step(driver, lesson, step, nodes, check_timeout,
                                         solve_timeout, terminals))
    finally:
        if terminals is not None:
            await terminals.close()
        await driver.stop_session(session)
    return results


def summary(results: list) -> str:
    steps = sum(1 for r in results if not r.case)
    variants = sum(1 for r in results if r.case.startswith("variant"))
    cheats = sum(1 for r in results if r.case.startswith("cheat"))
    passed = sum(1 for r in results if r.ok)
    return (f"steps: {steps}, variants: {variants}, cheats: {cheats}\n"
            f"{passed} passed, {len(results) - passed} failed")


def select(lessons: list, slugs) -> list:
    """The lessons named by `slugs` (all when empty); an unknown slug is an error."""
    if not slugs:
        return list(lessons)
    by_slug = {lesson.slug: lesson for lesson in lessons}
    unknown = [s for s in slugs if s not in by_slug]
    if unknown:
        raise ValueError(f"no lesson called {', '.join(unknown)} "
                         f"(lessons: {', '.join(by_slug)})")
    return [by_slug[s] for s in slugs]


def select_step(lesson, wanted: str) -> int:
    """The number of the step `wanted` names: its number ("5", "05"), its file name
    ("05-ping-the-container") or the name after the number ("ping-the-container")."""
    for step in lesson.steps:
        short = step.name.split("-", 1)[1] if "-" in step.name else step.name
        if wanted in (step.name, short) or (wanted.isdigit() and int(wanted) == step.number):
            return step.number
    names = ", ".join(step.name for step in lesson.steps)
    raise ValueError(f"{lesson.slug} has no step {wanted!r} (steps: {names})")


def run(lessons: list, driver=None, write: Callable = print, only_step: int | None = None) -> list:
    """Verify `lessons` one after the other, writing a line per case; returns every result.

    The lab registry (the nodes' Docker Hub) is used if it answers, else a
    temporary one runs for the duration.
    """
    from runtime import get_driver, registry
    driver = driver or get_driver()
    results = []
    with registry.ensure_running():
        for lesson in lessons:
            results += asyncio.run(verify_lesson(driver, lesson,
                                                 on_result=lambda r: write(r.line()),
                                                 only_step=only_step))
    return results
