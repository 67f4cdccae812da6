"""Thin views: the lesson list, a lesson page, sign-up, Start/Stop and quiz answers."""
from __future__ import annotations

import logging

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.conf import settings
from django.db import transaction
from django.http import HttpResponseForbidden, HttpResponseNotFound, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from runtime import LabRuntimeError, get_driver

from . import broadcast, checks, portproxy, tasks
from .models import (ClassMessage, Classroom, LabNode, LabSession, LessonActivity, Lesson,
                     Membership,
                     Profile, Step, StepProgress, is_guest, lesson_progress)

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
    classrooms, messages = [], []
    if request.user.is_authenticated:
        LessonActivity.touch(request.user, lesson)
        classrooms = list(Classroom.objects.filter(memberships__user=request.user, lessons=lesson))
        messages = ClassMessage.recent_for(request.user)
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
    resume = next((e["step"].number for e in steps if e["state"] != StepProgress.DONE), None)
    hand = bool(classrooms) and Membership.objects.filter(
        user=request.user, classroom__in=classrooms, hand_raised__isnull=False).exists()
    return render(request, "labs/lesson.html", {
        "lesson": lesson, "steps": steps, "session": session,
        "node_names": lesson.nodes,
        "ready_node": nodes[0]["id"] if nodes else "",
        "ready_nodes": nodes,
        "session_event": session.event() if session else None,
        "resume": resume,
        "in_classroom": bool(classrooms), "hand_raised": hand,
        "class_messages": messages,
        "warn_seconds": settings.LAB_SESSION_WARN_MINUTES * 60,
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
    room = LabSession.room_for(request.user, lesson)
    if room:
        return JsonResponse({"ok": False, "state": "failed", "error": room}, status=409)
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
    transaction.on_commit(lambda: checks.request(session_id))
    return JsonResponse({"ok": True})


def signup(request):
    """Sign up; a guest signing up keeps their user (and so their progress and classrooms)."""
    guest = request.user if is_guest(request.user) else None
    if request.method == "POST":
        form = UserCreationForm(request.POST, instance=guest) if guest else UserCreationForm(request.POST)
        if form.is_valid():
            # Hash the password first: inside the transaction it would hold
            # SQLite's write lock for the whole hash (and its wait for a
            # hashing slot), and a class signing up at once would time out.
            user = form.save(commit=False)
            with transaction.atomic():
                user.save()
                form.save_m2m()
                if guest:
                    Profile.objects.filter(user=user).update(guest=False)
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect(_next_url(request, "dashboard"))
    else:
        form = UserCreationForm()
        if guest:
            form.initial["username"] = ""
    return render(request, "registration/signup.html", {"form": form, "guest": guest,
                                                        "next": request.GET.get("next", "")})


def _next_url(request, default: str) -> str:
    from django.utils.http import url_has_allowed_host_and_scheme

    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return reverse(default)


@require_POST
def guest(request):
    """Try as a guest: a real user, flagged guest, logged in at once."""
    if not request.user.is_authenticated:
        user = Profile.make_guest()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect(_next_url(request, "dashboard"))


@login_required
def dashboard(request):
    rows = lesson_progress(request.user)
    memberships = (Membership.objects.filter(user=request.user)
                   .select_related("classroom", "classroom__owner"))
    return render(request, "labs/dashboard.html", {
        "rows": rows, "memberships": memberships, "guest": is_guest(request.user),
        "messages_for_me": ClassMessage.recent_for(request.user, hours=24)})


def join(request, code=""):
    """Join a classroom with its code (typed in, or from the join link)."""
    code = (request.POST.get("code") or code or request.GET.get("code") or "").strip().upper()
    room = Classroom.objects.filter(code=code).first() if code else None
    error = ""
    if code and room is None:
        error = "No classroom has that code. Check it with your instructor."
    elif room is not None and not room.is_open():
        error = "This classroom has ended."
    if request.method == "POST" and room is not None and not error:
        if not request.user.is_authenticated:
            return redirect("join-code", code=room.code)  # offers guest, log in or sign up
        room.join(request.user)
        broadcast.push_learner_row(room.pk, request.user)
        first = room.ordered_lessons()
        return redirect(reverse("lesson", args=[first[0].slug]) if first else reverse("dashboard"))
    return render(request, "labs/join.html", {"room": room if not error else None, "code": code,
                                               "error": error})


def _live_session(request, slug):
    lesson = get_object_or_404(Lesson, slug=slug)
    return lesson, LabSession.current_for(request.user, lesson)


@require_POST
@login_required
def extend(request, slug):
    """The learner's Extend button: more time for the session."""
    lesson, session = _live_session(request, slug)
    if session is None or not session.extend():
        return JsonResponse({"ok": False, "error": "No lab session is running."}, status=409)
    event = session.event()
    transaction.on_commit(lambda: broadcast.push(broadcast.session_group(session), event))
    return JsonResponse({"ok": True, **event})


@require_POST
@login_required
def hand(request, slug):
    """Raise (raised=1) or lower (raised=0) a hand in every classroom that has this lesson."""
    lesson = get_object_or_404(Lesson, slug=slug)
    raised = request.POST.get("raised", "1") not in ("0", "false", "")
    memberships = list(Membership.objects.filter(user=request.user, classroom__lessons=lesson))
    if not memberships:
        return JsonResponse({"ok": False, "error": "You are not in a classroom with this lesson."},
                            status=409)
    from django.utils import timezone
    when = timezone.now() if raised else None
    for m in memberships:
        Membership.objects.filter(pk=m.pk).update(hand_raised=when)
        room_pk, user = m.classroom_id, request.user
        transaction.on_commit(lambda room_pk=room_pk: broadcast.push_learner_row(room_pk, user))
    return JsonResponse({"ok": True, "raised": raised})


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
        group = broadcast.learner_group(request.user.pk, slug)
        event = progress.event()
        transaction.on_commit(lambda: broadcast.push(group, event))
        broadcast.grid_rows_changed(request.user, step.lesson_id)
    if not wants_json:
        return redirect(reverse("lesson", args=[slug]) + f"#step-{step.number}")
    body = {"ok": True, "correct": right}
    body.update(progress.event())
    return JsonResponse(body)


@login_required
def open_port(request, pk, port, rest=None):
    """The lesson page's link to a published port: off to the port's own origin.

    Only the node's owner and their instructors get a token for it (see
    labs.portproxy); the port origin turns the token into its own cookie.
    """
    port = int(port)
    if not 0 < port <= 65535:
        return HttpResponseNotFound("No such port.\n", content_type="text/plain")
    if LabNode.visible(request.user, int(pk)) is None:
        return HttpResponseForbidden("This lab machine is not yours.\n", content_type="text/plain")
    path = rest or "/"
    if request.META.get("QUERY_STRING"):
        path += "?" + request.META["QUERY_STRING"]
    return redirect(portproxy.enter_url(request, int(pk), port, request.user, path))
