"""Every lesson is its own test: on fresh real nodes, each step's check fails,
keeps failing after each cheat typed into the node's terminal, passes after its
solve and after each variant typed (quiz steps: the answer is one of the
choices). The same verification as `python manage.py verify_lessons`, with
the held-out cases of tests/integration/heldout/ typed too (tests/support/heldout.py;
one lesson's go through the site instead, in test_heldout.py).
"""
from __future__ import annotations

import asyncio
import time

import pytest

from labs.courses import verify
from labs.courses.lessons import load_lessons
from tests.integration.conftest import ROOT
from tests.support.heldout import THROUGH_THE_SITE, with_heldout

LESSONS = [lesson if lesson.slug == THROUGH_THE_SITE else with_heldout(lesson)
           for lesson in load_lessons(ROOT / "labs" / "courses" / "content")]


# The lessons are verified side by side, a few at a time: each has sessions and
# nodes of its own, and most of a verification is waiting (for a command's
# output to go quiet, a container to start, a package to download), so
# together they take about as long as the longest lesson instead of the sum
# (the sum was 11 of the suite's minutes on 2 cores).
AT_ONCE = 3


@pytest.fixture(scope="module")
def verified(driver, lab_registry) -> dict:
    """slug -> (results, seconds taken) for every lesson, verified AT_ONCE at a
    time; a verification that crashed holds its exception instead (its own
    test fails with it, the others still report)."""
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(lesson):
        async with gate:
            started = time.monotonic()
            try:
                results = await verify.verify_lesson(
                    driver, lesson,
                    on_result=lambda r: print(f"{lesson.slug}: {r.line()}", flush=True))
            except Exception as exc:
                return lesson.slug, exc
            return lesson.slug, (results, time.monotonic() - started)

    async def every_lesson():
        return dict(await asyncio.gather(*(one(lesson) for lesson in LESSONS)))
    return asyncio.run(every_lesson())


@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.slug for lesson in LESSONS])
def test_every_step_fails_first_then_passes_after_its_solve(lesson, verified):
    if isinstance(verified[lesson.slug], Exception):
        raise verified[lesson.slug]
    results, seconds = verified[lesson.slug]
    lines = "\n".join(r.line() for r in results)
    print(f"{lesson.slug}: {verify.summary(results)} in {seconds:.0f}s")
    assert [r.number for r in results if not r.case] == [s.number for s in lesson.steps], lines
    cases = sum(len(s.variants) + len(s.cheats) for s in lesson.steps)
    assert len([r for r in results if r.case]) == cases, lines
    assert all(r.ok for r in results), lines


def test_a_check_that_never_passes_is_reported_and_a_hanging_one_could_not_check(driver,
                                                                                 lab_registry):
    """verify is only worth something if it can fail: a step whose check ignores
    its solve fails, and a check that hangs is 'could not check'."""
    from dataclasses import replace
    base = next(lesson for lesson in LESSONS if lesson.slug == "first-containers")
    first = base.steps[0]
    never = replace(first, check="echo 'never done'; exit 1\n", variants=(), cheats=())
    hangs = replace(first, number=2, name="02-hangs", check="sleep 30\n", variants=(), cheats=())
    lesson = replace(base, steps=(never, hangs))
    results = asyncio.run(verify.verify_lesson(driver, lesson, check_timeout=2))
    assert [r.ok for r in results] == [False, False]
    assert "check still fails after the solve: never done" in results[0].detail
    assert "could not check" in results[1].detail
    assert verify.summary(results) == "steps: 2, variants: 0, cheats: 0\n0 passed, 2 failed"


def test_variants_and_cheats_are_typed_into_the_terminal_and_judged(driver, lab_registry):
    """A variant must turn the check green and a cheat must leave it red, typed as a
    learner types (Ctrl-C included); verify says which case failed and why."""
    from dataclasses import replace

    from labs.courses.lessons import TypedCase
    base = next(lesson for lesson in LESSONS if lesson.slug == "first-containers")
    first = replace(base.steps[0], undo="docker container rm --force $(docker container ls -aq) "
                                        ">/dev/null 2>&1; true\n", variants=(
        TypedCase("short form", "docker run alpine hostname"),
        TypedCase("a ping stopped with Ctrl-C first", "ping 127.0.0.1\n<wait 2>\n<ctrl-c>\n"
                  "docker run alpine hostname"),
        TypedCase("does nothing", "echo hello"),
    ), cheats=(
        TypedCase("runs another command", "docker run alpine true"),
        TypedCase("really runs hostname", "docker run alpine hostname"),
    ))
    results = asyncio.run(verify.verify_lesson(driver, replace(base, steps=(first,))))
    by_case = {r.case: r for r in results}
    lines = "\n".join(r.line() for r in results)
    assert by_case[""].ok, lines
    assert by_case["variant: short form"].ok, lines
    assert by_case["variant: a ping stopped with Ctrl-C first"].ok, lines
    assert not by_case["variant: does nothing"].ok, lines
    assert "check still fails after typing it" in by_case["variant: does nothing"].detail
    assert by_case["cheat: runs another command"].ok, lines
    assert not by_case["cheat: really runs hostname"].ok, lines
    assert "the cheat turned the step green" in by_case["cheat: really runs hostname"].detail
    assert verify.summary(results).startswith("steps: 1, variants: 3, cheats: 2\n")


def test_verify_leaves_no_node_behind(driver, lab_registry):
    def ours():  # nodes of verify sessions for this lesson (other processes make their own)
        return {n.id for n in driver.list_nodes() if n.session.startswith("v-first-containers-")}
    before = ours()
    lesson = next(lesson for lesson in LESSONS if lesson.slug == "first-containers")
    from dataclasses import replace
    results = asyncio.run(verify.verify_lesson(driver, replace(lesson, steps=lesson.steps[:1])))
    assert results and all(r.ok for r in results), [r.line() for r in results]
    assert ours() <= before
