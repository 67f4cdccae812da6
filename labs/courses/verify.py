"""Prove every lesson's checks right on real nodes (no Django needed).

For each step of a lesson, on fresh nodes that only this run uses:

    setup (if any) -> check must FAIL -> solve -> check must PASS

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

    def line(self) -> str:
        name = self.name.split("-", 1)[1] if "-" in self.name else self.name
        return (f"{'PASS' if self.ok else 'FAIL'} {self.lesson} {self.number} {name} "
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


async def verify_step(driver, lesson, step, nodes: dict, check_timeout=CHECK_TIMEOUT,
                      solve_timeout=SOLVE_TIMEOUT) -> StepResult:
    started = time.monotonic()

    def result(ok, detail):
        return StepResult(lesson.slug, step.number, step.name, ok, detail,
                          time.monotonic() - started)

    if step.quiz is not None:
        quiz = step.quiz
        if len(quiz.choices) >= 2 and 0 <= quiz.answer < len(quiz.choices):
            return result(True, f"quiz, answer {quiz.answer}: {quiz.choices[quiz.answer]!r}")
        return result(False, f"quiz answer {quiz.answer} is not one of its choices")
    node = nodes.get(step.node)
    if node is None:
        return result(False, f"the lesson has no node {step.node}")
    if step.setup.strip():
        env = await _node_env(driver, nodes)
        done = await _sh(driver, node.id, step.setup, solve_timeout, env)
        if not done.ok:
            return result(False, f"setup failed ({'timed out' if done.timed_out else done.exit_code}): "
                                 + _short(done.output))
    state, output = await _check(driver, node.id, step.check, check_timeout)
    if state is None:
        return result(False, f"could not check before the solve: {_short(output)}")
    if state:
        return result(False, "check passed before the step was done")
    if not output.strip():
        return result(False, "check failed first but told the learner nothing")
    env = await _node_env(driver, nodes)
    solved = await _sh(driver, node.id, step.solve, solve_timeout, env)
    if not solved.ok:
        how = "timed out" if solved.timed_out else f"exit {solved.exit_code}"
        return result(False, f"solve failed ({how}): {_short(solved.output[-600:])}")
    state, output = await _check(driver, node.id, step.check, check_timeout)
    if state is None:
        return result(False, f"could not check after the solve: {_short(output)}")
    if not state:
        return result(False, f"check still fails after the solve: {_short(output)}")
    return result(True, "check failed first, then passed")


async def verify_lesson(driver, lesson, on_result: Optional[Callable] = None,
                        check_timeout=CHECK_TIMEOUT, solve_timeout=SOLVE_TIMEOUT) -> list:
    """Verify every step of one lesson on fresh nodes; returns [StepResult]."""
    results = []

    def report(res):
        results.append(res)
        if on_result:
            on_result(res)

    if all(step.quiz is not None for step in lesson.steps):
        for step in lesson.steps:
            report(await verify_step(driver, lesson, step, {}))
        return results
    session = session_name(lesson.slug)
    nodes = {}
    try:
        try:
            for name in lesson.nodes:
                nodes[name] = await driver.start(NodeSpec(session=session, name=name,
                                                          files=lesson.files_for(name)))
        except LabRuntimeError as exc:
            for step in lesson.steps:
                report(StepResult(lesson.slug, step.number, step.name, False,
                                  f"could not start the lesson's nodes: {exc.reason}", 0.0))
            return results
        for step in lesson.steps:
            report(await verify_step(driver, lesson, step, nodes, check_timeout, solve_timeout))
    finally:
        await driver.stop_session(session)
    return results


def summary(results: list) -> str:
    passed = sum(1 for r in results if r.ok)
    return f"{passed} passed, {len(results) - passed} failed"


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


def run(lessons: list, driver=None, write: Callable = print) -> list:
    """Verify `lessons` one after the other, writing a line per step; returns every result.

    The lab registry (the nodes' Docker Hub) is used if it answers, else a
    temporary one runs for the duration.
    """
    from runtime import get_driver, registry
    driver = driver or get_driver()
    results = []
    with registry.ensure_running():
        for lesson in lessons:
            results += asyncio.run(verify_lesson(driver, lesson,
                                                 on_result=lambda r: write(r.line())))
    return results
