"""Thin views: the lesson list, a lesson page, sign-up, Start/Stop and quiz answers."""
from __future__ import annotations

import logging

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from runtime import LabRuntimeError, get_driver

from . import tasks
from .models import LabSession, Lesson, Step, StepProgress, learner_group

log = logging.getLogger(__name__)


def home(request):
    lessons = Lesson.objects.all()
    done = {}
    if request.user.is_authenticated:
        for lesson in lessons:
            states = StepProgress.states_for(request.user, lesson)
            done[lesson.pk] = sum(1 for p in states.values() if p.state == StepProgress.DONE)
    rows = [{"lesson": lesson, "steps": lesson.steps.count(), "done": done.get(lesson.pk, 0)}
            for lesson in lessons]
    return render(request, "labs/home.html", {"rows": rows})


def lesson_page(request, slug):
    lesson = get_object_or_404(Lesson, slug=slug)
    progress = StepProgress.states_for(request.user, lesson)
    steps = []
    for step in lesson.steps.all():
        entry = progress.get(step.number)
        steps.append({"step": step,
                      "state": entry.state if entry else StepProgress.PENDING,
                      "message": entry.message if entry else ""})
    session = None
    nodes = []
    if request.user.is_authenticated:
        session = LabSession.current_for(request.user, lesson)
    ready = bool(session and session.state == LabSession.READY)
    if ready:
        nodes = [n.summary() for n in session.nodes.order_by("name")]
    return render(request, "labs/lesson.html", {
        "lesson": lesson, "steps": steps, "session": session,
        "node_names": lesson.nodes,
        "ready_node": nodes[0]["id"] if nodes else "",
        "ready_nodes": nodes,
    })


def preflight_problems() -> list:
    try:
        return list(get_driver().preflight())
    except LabRuntimeError as exc:
        return [exc.reason]


@require_POST
def start(request, slug):
    lesson = get_object_or_404(Lesson, slug=slug)
    if not request.user.is_authenticated:
        return JsonResponse({"ok": False, "error": "Log in to start a lab."}, status=403)
    problems = preflight_problems()
    if problems:
        log.warning("not starting a lab for %s: %s", request.user, "; ".join(problems))
        return JsonResponse({"ok": False, "state": "failed",
                             "error": "The lab machines cannot start on this server: "
                                      + " ".join(problems)}, status=503)
    with transaction.atomic():
        session, needs_start = LabSession.ensure_for(request.user, lesson)
        if needs_start:
            session_id = session.pk
            transaction.on_commit(lambda: tasks.start_session.delay(session_id))
    session.refresh_from_db()
    body = {"ok": True, "session": session.pk, "started": needs_start}
    body.update(session.event())
    return JsonResponse(body)


@require_POST
@login_required
def stop(request, slug):
    lesson = get_object_or_404(Lesson, slug=slug)
    session = LabSession.current_for(request.user, lesson)
    if session is not None:
        session_id = session.pk
        transaction.on_commit(lambda: tasks.stop_session.delay(session_id))
    return JsonResponse({"ok": True})


@require_POST
@login_required
def check(request, slug):
    lesson = get_object_or_404(Lesson, slug=slug)
    session = LabSession.current_for(request.user, lesson)
    if session is None or session.state != LabSession.READY:
        return JsonResponse({"ok": False, "error": "Start the lab first, then check."}, status=409)
    session_id = session.pk
    transaction.on_commit(lambda: tasks.run_checks.delay(session_id))
    return JsonResponse({"ok": True})


def signup(request):
    if request.method == "POST":
        form = UserCreationForm(request.POST)
        if form.is_valid():
            user = form.save()
            login(request, user)
            return redirect("home")
    else:
        form = UserCreationForm()
    return render(request, "registration/signup.html", {"form": form})


@require_POST
def answer(request, slug, number):
    """A quiz answer: right marks the step done; wrong says why. Judged here only."""
    step = get_object_or_404(Step, lesson__slug=slug, number=number)
    wants_json = "application/json" in request.headers.get("Accept", "")
    if not request.user.is_authenticated:
        return JsonResponse({"ok": False, "error": "Log in to answer."}, status=403)
    if not step.is_quiz:
        return JsonResponse({"ok": False, "error": "This step has no question."}, status=400)
    right, progress, changed = step.answer(request.user, request.POST.get("choice"))
    if changed:
        group = learner_group(request.user.pk, slug)
        event = progress.event()
        transaction.on_commit(lambda: tasks.push(group, event))
    if not wants_json:
        return redirect(reverse("lesson", args=[slug]) + f"#step-{step.number}")
    body = {"ok": True, "correct": right}
    body.update(progress.event())
    return JsonResponse(body)
