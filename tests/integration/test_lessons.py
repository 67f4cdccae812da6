"""Every lesson is its own test: on fresh real nodes, each step's check fails,
its solve runs, and its check passes (quiz steps: the answer is one of the
choices). The same verification as `python manage.py verify_lessons`.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from labs.courses import verify
from labs.courses.lessons import load_lessons
from tests.integration.conftest import ROOT

LESSONS = load_lessons(ROOT / "labs" / "courses" / "content")


@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.slug for lesson in LESSONS])
def test_every_step_fails_first_then_passes_after_its_solve(lesson, driver, lab_registry):
    started = time.monotonic()
    results = asyncio.run(verify.verify_lesson(driver, lesson,
                                               on_result=lambda r: print(r.line(), flush=True)))
    lines = "\n".join(r.line() for r in results)
    print(f"{lesson.slug}: {verify.summary(results)} in {time.monotonic() - started:.0f}s")
    assert [r.number for r in results] == [s.number for s in lesson.steps], lines
    assert all(r.ok for r in results), lines


def test_a_check_that_never_passes_is_reported_and_a_hanging_one_could_not_check(driver,
                                                                                 lab_registry):
    """verify is only worth something if it can fail: a step whose check ignores
    its solve fails, and a check that hangs is 'could not check'."""
    from dataclasses import replace
    base = next(lesson for lesson in LESSONS if lesson.slug == "first-containers")
    first = base.steps[0]
    never = replace(first, check="echo 'never done'; exit 1\n")
    hangs = replace(first, number=2, name="02-hangs", check="sleep 30\n")
    lesson = replace(base, steps=(never, hangs))
    results = asyncio.run(verify.verify_lesson(driver, lesson, check_timeout=2))
    assert [r.ok for r in results] == [False, False]
    assert "check still fails after the solve: never done" in results[0].detail
    assert "could not check" in results[1].detail
    assert verify.summary(results) == "0 passed, 2 failed"


def test_verify_leaves_no_node_behind(driver, lab_registry):
    def ours():  # nodes of verify sessions for this lesson (other processes make their own)
        return {n.id for n in driver.list_nodes() if n.session.startswith("v-first-containers-")}
    before = ours()
    lesson = next(lesson for lesson in LESSONS if lesson.slug == "first-containers")
    from dataclasses import replace
    results = asyncio.run(verify.verify_lesson(driver, replace(lesson, steps=lesson.steps[:1])))
    assert [r.ok for r in results] == [True], [r.line() for r in results]
    assert ours() <= before
