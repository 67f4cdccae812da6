"""The lesson list, a lesson page, the learner's dashboard, quiz answers and reveals."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from labs import broadcast
from labs.accounts.models import is_guest
from labs.classrooms.models import ClassMessage, Classroom, Membership
from labs.sandboxes import machines
from labs.sandboxes.models import LabSession

from .models import Lesson, LessonActivity, Step, StepProgress, lesson_progress


def home(request):
    lessons = Lesson.objects.all()
    done = {}
    if request.user.is_authenticated:
        for lesson in lessons:
            states = StepProgress.states_for(request.user, lesson)
            done[lesson.pk] = sum(1 for p in states.values() if p.state == StepProgress.DONE)
    rows = [{"lesson": lesson, "steps": lesson.steps.count(), "done": done.get(lesson.pk, 0)}
            for lesson in lessons]
    return render(request, "courses/home.html", {"rows": rows})


def lesson_page(request, slug):
    return lesson_response(request, get_object_or_404(Lesson, slug=slug))


def lesson_response(request, lesson, joined=None, session=None):
    """The lesson page of `lesson` for request.user (also the join link's
    answer). `joined`: the classroom that a guest made by this same request
    has just joined, the one classroom they are in (so no query asks which,
    whether their hand is up, what machines they saved, what steps they did,
    when they began this lesson or which lab session they have: nothing yet,
    but `session`, the one this request started, if it did)."""
    progress = {} if joined else StepProgress.states_for(request.user, lesson)
    classrooms, messages = [], []
    activity = None
    if joined:
        now = timezone.now()
        activity = LessonActivity.objects.create(user=request.user, lesson=lesson,
                                                 started=now, last=now)
    elif request.user.is_authenticated:
        activity = LessonActivity.touch(request.user, lesson)
    if request.user.is_authenticated:
        classrooms = [joined] if joined else list(
            Classroom.objects.filter(memberships__user=request.user, lessons=lesson))
        # (Nothing was sent to a guest made just now: only the class's own messages.)
        messages = (ClassMessage.recent_in(joined) if joined
                    else ClassMessage.recent_for(request.user))
    steps = []
    for step in lesson.steps.all():
        entry = progress.get(step.number)
        steps.append({"step": step,
                      "state": entry.state if entry else StepProgress.PENDING,
                      "message": entry.message if entry else ""})
    if not joined:
        session = (LabSession.current_for(request.user, lesson)
                   if request.user.is_authenticated else None)
    event = session.event() if session else None
    # (The event lists the nodes as the page shows them: no second query.)
    nodes = event["nodes"] if session and session.state == LabSession.READY else []
    resume = next((e["step"].number for e in steps if e["state"] != StepProgress.DONE), None)
    done_count = sum(e["state"] == StepProgress.DONE for e in steps)
    took = ""
    if steps and resume is None and activity is not None:
        last_done = max((e.done_at for e in progress.values() if e.done_at), default=None)
        if last_done is not None:
            took = duration_text(last_done - activity.started)
    hand = bool(classrooms) and not joined and Membership.objects.filter(
        user=request.user, classroom__in=classrooms, hand_raised__isnull=False).exists()
    return render(request, "courses/lesson.html", {
        "lesson": lesson, "steps": steps, "session": session,
        "node_names": lesson.nodes,
        "ready_node": nodes[0]["id"] if nodes else "",
        "ready_nodes": nodes,
        "session_event": event,
        "resume": resume,
        "done_count": done_count,
        "complete": bool(steps) and resume is None,
        "took": took,
        "started": activity.started if activity else None,
        "next_lesson": Lesson.objects.filter(order__gt=lesson.order).order_by("order").first(),
        "in_classroom": bool(classrooms), "hand_raised": hand,
        "class_messages": messages,
        "warn_seconds": settings.LAB_SESSION_WARN_MINUTES * 60,
        "recording": settings.LAB_RECORD,
        "saving": settings.LAB_SAVE,
        **(machines.page_context(request.user, lesson) if not joined else {"saved": None}),
    })


def duration_text(delta) -> str:
    """How long a lesson took, as a learner reads it: "4 min", "1 h 05 min"."""
    minutes = max(1, round(delta.total_seconds() / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@login_required
def dashboard(request):
    rows = lesson_progress(request.user)
    memberships = (Membership.objects.filter(user=request.user)
                   .select_related("classroom", "classroom__owner"))
    return render(request, "courses/dashboard.html", {
        "rows": rows, "running": LabSession.running_for(request.user),
        "nodes_limit": settings.LAB_NODES_PER_LEARNER,
        "memberships": memberships, "guest": is_guest(request.user),
        # Sessions that had machines: their terminals may be replayed.
        "replays": (LabSession.objects.filter(user=request.user, nodes__isnull=False).distinct()
                    .select_related("lesson").order_by("-created")[:12]),
        "record_days": settings.LAB_RECORD_DAYS,
        "messages_for_me": ClassMessage.recent_for(request.user, hours=24)})


def _quiz_step(request, slug, number):
    """(step, None) for a quiz step the logged-in learner may answer, else (step, error)."""
    step = get_object_or_404(Step, lesson__slug=slug, number=number)
    if not request.user.is_authenticated:
        return step, JsonResponse({"ok": False, "error": "Log in to answer."}, status=403)
    if not step.is_quiz:
        return step, JsonResponse({"ok": False, "error": "This step has no question."}, status=400)
    return step, None


def _recorded(request, slug, step, progress, changed, body: dict):
    """Push what changed to the learner's pages and grids; answer the page."""
    if changed:
        group = broadcast.learner_group(request.user.pk, slug)
        event = progress.event()
        transaction.on_commit(lambda: broadcast.push(group, event))
        broadcast.grid_rows_changed(request.user, step.lesson_id)
    if "application/json" not in request.headers.get("Accept", ""):
        return redirect(reverse("lesson", args=[slug]) + f"#step-{step.number}")
    return JsonResponse({"ok": True, **body, **progress.event()})


@require_POST
def answer(request, slug, number):
    """A quiz answer, judged here only: right marks the step done and gives the
    explanation; wrong says only that it is wrong."""
    step, error = _quiz_step(request, slug, number)
    if error:
        return error
    right, progress, changed = step.answer(request.user, request.POST.get("choice"))
    body = {"correct": right}
    if right:
        body.update(answer=step.quiz_answer, explain=step.quiz_explain)
    return _recorded(request, slug, step, progress, changed, body)


@require_POST
def reveal(request, slug, number):
    """The learner gives up ("Show the answer"): the right choice and the explanation.
    Marks nothing done: the step stays pending until the learner chooses the answer."""
    step, error = _quiz_step(request, slug, number)
    if error:
        return error
    progress, changed = step.reveal(request.user)
    return _recorded(request, slug, step, progress, changed, step.solution())
