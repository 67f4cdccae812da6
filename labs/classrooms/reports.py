"""A classroom's live grid, its charts and its CSV: queries over the class's progress.

Kept apart from the models: these read courses (steps, progress, activity),
sandboxes (which machines run) and accounts (guests) for one classroom.
"""
from __future__ import annotations

import statistics
from urllib.parse import urlencode

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from labs.accounts.models import Profile, is_guest
from labs.courses.models import LessonActivity, StepProgress
from labs.sandboxes.models import LabSession, SavedMachine, SessionMark

from .models import Membership


def learner_row(room, user, lessons=None, now=None) -> dict:
    """One learner's row of the live grid: every cell, the current step and since when.

    The current step is the first not-done step of the lesson the learner
    was active in last; `since` is when the step before it was done (or
    when the learner began the lesson).
    """
    lessons = lessons if lessons is not None else room.ordered_lessons()
    membership = Membership.objects.filter(classroom=room, user=user).first()
    progress = {p.step_id: p for p in StepProgress.objects.filter(
        user=user, step__lesson__in=lessons)}
    activity = {a.lesson_id: a for a in LessonActivity.objects.filter(user=user, lesson__in=lessons)}
    sessions = {s.lesson_id: s for s in LabSession.objects.filter(
        user=user, lesson__in=lessons).exclude(state=LabSession.STOPPED).prefetch_related("nodes")}
    marks = latest_marks(user, lessons)
    cells, currents = {}, []
    for lesson in lessons:
        act = activity.get(lesson.pk)
        since = act.started if act else None
        current = None
        for step in lesson.steps.all():
            p = progress.get(step.pk)
            state = p.state if p else StepProgress.PENDING
            mark = marks.get((lesson.slug, step.number))
            cells[f"{lesson.slug}:{step.number}"] = {
                "state": state, "done_at": p.done_at.isoformat() if p and p.done_at else None,
                "message": (p.message[:200] if p and state != StepProgress.DONE else ""),
                "failed": p.failed_checks if p else 0,
                # The replay at the moment the step was done, or last failed.
                "replay": replay_url(mark) if mark else None}
            if state == StepProgress.DONE and p.done_at:
                since = max(since, p.done_at) if since else p.done_at
            elif current is None and act is not None:
                current = {"lesson": lesson.slug, "step": step.number, "since": since}
                if p and p.failed_checks and p.message and mark and mark["kind"] == SessionMark.FAILED:
                    # Why they are stuck: the latest reason their step's check gave.
                    current.update(reason=p.message[:300], failed=p.failed_checks,
                                   failed_at=p.failed_at.isoformat() if p.failed_at else None,
                                   replay=replay_url(mark))
        if current is not None:
            currents.append((act.last, current))
    current = None
    if currents:
        current = max(currents, key=lambda pair: pair[0])[1]
        current["since"] = (current["since"] or timezone.now()).isoformat()
    latest = (LabSession.objects.filter(user=user, lesson__in=lessons, nodes__isnull=False)
              .order_by("-created").values_list("pk", flat=True).first())
    last_seen = max((a.last for a in activity.values()), default=None)
    nodes = []
    for lesson in lessons:
        session = sessions.get(lesson.pk)
        if session is not None:
            nodes += [{"id": n.pk, "name": n.name, "lesson": lesson.slug, "state": n.state}
                      for n in session.nodes.all()]
    saved = sorted(SavedMachine.objects.filter(user=user, lesson__in=lessons, saved_at__isnull=False)
                   .values_list("lesson__slug", flat=True).distinct())
    return {"user": user.pk, "name": user.username, "guest": is_guest(user), "saved": saved,
            "hand": membership.hand_raised.isoformat() if membership and membership.hand_raised else None,
            "cells": cells, "current": current, "nodes": nodes,
            "replay": reverse("replay", args=[latest]) if latest else None,
            "last_seen": last_seen.isoformat() if last_seen else None}


def latest_marks(user, lessons) -> dict:
    """{(lesson slug, step number): the latest mark of the learner's sessions
    there, as {session, node, at, kind}}: a step done, or else its latest
    failed check (the grid's replay links)."""
    found = {}
    rows = (SessionMark.objects.filter(session__user=user, session__lesson__in=lessons)
            .order_by("at", "pk").values("session_id", "session__lesson__slug", "step", "node",
                                         "at", "kind"))
    for row in rows:
        key = (row["session__lesson__slug"], row["step"])
        if found.get(key, {}).get("kind") == SessionMark.DONE:
            continue  # done is the moment that matters once there is one
        found[key] = {"session": row["session_id"], "node": row["node"], "at": row["at"],
                      "kind": row["kind"]}
    return found


def replay_url(mark: dict) -> str:
    """The replay of the mark's node, opened a moment before the mark."""
    return (reverse("replay", args=[mark["session"]]) + "?" +
            urlencode({"node": mark["node"], "at": f"{mark['at'].timestamp():.3f}"}))


def grid(room) -> dict:
    lessons = room.ordered_lessons()
    columns = [{"lesson": lesson.slug, "title": lesson.title,
                "steps": [{"number": s.number, "title": s.title} for s in lesson.steps.all()]}
               for lesson in lessons]
    rows = [learner_row(room, user, lessons) for user in room.learners()]
    return {"classroom": room.pk, "name": room.name, "columns": columns, "rows": rows,
            "stuck_seconds": settings.LAB_STUCK_MINUTES * 60,
            "now": timezone.now().isoformat(), "stats": stats(room, lessons)}


def durations(room, lessons=None) -> dict:
    """{(user id, slug, step number): seconds the learner took for the step}.

    A step's time runs from the end of the step done before it (or, for the
    first, from when the learner began the lesson) to its own end.
    """
    lessons = lessons if lessons is not None else room.ordered_lessons()
    learners = list(room.learners().values_list("pk", flat=True))
    started = {(a.user_id, a.lesson_id): a.started for a in
               LessonActivity.objects.filter(user_id__in=learners, lesson__in=lessons)}
    done = {(p.user_id, p.step_id): p.done_at for p in StepProgress.objects.filter(
        user_id__in=learners, step__lesson__in=lessons, state=StepProgress.DONE,
        done_at__isnull=False)}
    found = {}
    for lesson in lessons:
        steps = list(lesson.steps.all())
        for user_id in learners:
            previous = started.get((user_id, lesson.pk))
            finished = sorted((done[(user_id, s.pk)], s.number) for s in steps
                              if (user_id, s.pk) in done)
            for at, number in finished:
                if previous is not None:
                    found[(user_id, lesson.slug, number)] = max(0.0, (at - previous).total_seconds())
                previous = at
    return found


def stats(room, lessons=None) -> dict:
    """Completion per step (a funnel) and the median time per step, for the charts."""
    lessons = lessons if lessons is not None else room.ordered_lessons()
    learners = room.learners().count()
    times = {}
    for (_, slug, number), seconds in durations(room, lessons).items():
        times.setdefault((slug, number), []).append(seconds)
    counts = {}
    for row in (StepProgress.objects.filter(user__memberships__classroom=room,
                                            step__lesson__in=lessons, state=StepProgress.DONE)
                .values("step__lesson__slug", "step__number").annotate(n=models.Count("id"))):
        counts[(row["step__lesson__slug"], row["step__number"])] = row["n"]
    steps = []
    for lesson in lessons:
        for step in lesson.steps.all():
            key = (lesson.slug, step.number)
            spent = times.get(key, [])
            steps.append({"lesson": lesson.slug, "step": step.number, "title": step.title,
                          "done": counts.get(key, 0), "learners": learners,
                          "median_seconds": round(statistics.median(spent), 1) if spent else None})
    return {"learners": learners, "steps": steps}


CSV_HEADER = ["learner", "guest", "joined", "lesson", "step", "title", "state", "done_at",
              "seconds_on_step", "failed_checks"]


def csv_rows(room):
    """The class's progress, one row per learner and step (header first)."""
    lessons = room.ordered_lessons()
    spent = durations(room, lessons)
    joined = dict(Membership.objects.filter(classroom=room).values_list("user_id", "joined"))
    guests = set(Profile.objects.filter(guest=True).values_list("user_id", flat=True))
    yield list(CSV_HEADER)
    for user in room.learners():
        done = {p.step_id: p for p in StepProgress.objects.filter(user=user, step__lesson__in=lessons)}
        for lesson in lessons:
            for step in lesson.steps.all():
                p = done.get(step.pk)
                seconds = spent.get((user.pk, lesson.slug, step.number))
                yield [user.username, "yes" if user.pk in guests else "no",
                       joined[user.pk].isoformat(), lesson.slug, step.number, step.title,
                       p.state if p else StepProgress.PENDING,
                       p.done_at.isoformat() if p and p.done_at and p.state == StepProgress.DONE else "",
                       round(seconds) if seconds is not None else "",
                       p.failed_checks if p else 0]
