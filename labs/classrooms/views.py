"""Thin views for classrooms. A learner joins one and raises a hand; an instructor
has their classrooms, the live grid, messages, resets and the CSV.

Every instructor view answers 403 unless the user is an instructor (the
"instructors" group) who owns the classroom; a learner named in the URL must
be in it.
"""
from __future__ import annotations

import csv
import datetime
import re

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from labs import broadcast
from labs.accounts.models import Profile, is_instructor
from labs.courses.models import Lesson
from labs.courses.views import lesson_response
from labs.sandboxes import machines, pools, tasks
from labs.sandboxes.models import LabNode, LabSession
from labs.sandboxes.views import start_lab

from . import reports
from .models import ClassMessage, Classroom, Membership


def _instructor(request):
    if not is_instructor(request.user):
        raise PermissionDenied("Only instructors can do this.")


def _classroom(request, pk) -> Classroom:
    """The classroom if the user teaches it; 403 otherwise (also when it does not exist,
    so nobody learns which classroom numbers exist)."""
    room = Classroom.for_instructor(request.user, pk)
    if room is None:
        raise PermissionDenied("This is not one of your classrooms.")
    return room


def _learner(room, user_id):
    if not room.has_learner(user_id):
        raise PermissionDenied("This learner is not in this classroom.")
    return get_user_model().objects.get(pk=user_id)


class ClassroomForm(forms.ModelForm):
    starts = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    ends = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    lessons = forms.ModelMultipleChoiceField(queryset=Lesson.objects.all(),
                                             widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = Classroom
        fields = ["name", "lessons", "starts", "ends", "seats"]
        labels = {"seats": "Expected learners"}

    def clean_seats(self):
        return self.cleaned_data.get("seats") or 0  # left empty: from who joins

    def clean(self):
        data = super().clean()
        if data.get("starts") and data.get("ends") and data["ends"] <= data["starts"]:
            raise forms.ValidationError("The classroom must end after it starts.")
        return data


@login_required
def classrooms(request):
    _instructor(request)
    if request.method == "POST":
        form = ClassroomForm(request.POST)
        if form.is_valid():
            room = form.save(commit=False)
            room.owner = request.user
            room.save()
            form.save_m2m()
            return redirect("classroom", pk=room.pk)
    else:
        now = timezone.localtime().replace(second=0, microsecond=0)
        form = ClassroomForm(initial={"starts": now.strftime("%Y-%m-%dT%H:%M"),
                                      "ends": (now + datetime.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")})
        # No lesson ticked for the instructor: the choice is theirs.
    rooms = Classroom.taught_by(request.user).prefetch_related("lessons")
    return render(request, "classrooms/classrooms.html", {
        "form": form, "rooms": rooms, "lead_minutes": settings.LAB_POOL_LEAD_MINUTES})


@login_required
def classroom(request, pk):
    room = _classroom(request, pk)
    join_url = request.build_absolute_uri(reverse("join-code", args=[room.code]))
    lead = datetime.timedelta(minutes=settings.LAB_POOL_LEAD_MINUTES)
    upcoming = room.starts - lead > timezone.now()
    return render(request, "classrooms/classroom.html", {
        "room": room, "grid": reports.grid(room), "join_url": join_url,
        "stuck_minutes": settings.LAB_STUCK_MINUTES, "pool": pools.readiness(room),
        "pool_from": room.starts - lead if upcoming else None,
        "lead_minutes": settings.LAB_POOL_LEAD_MINUTES})


@login_required
def grid(request, pk):
    return JsonResponse(reports.grid(_classroom(request, pk)))


@login_required
def progress_csv(request, pk):
    room = _classroom(request, pk)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="classroom-{room.pk}-progress.csv"'
    writer = csv.writer(response)
    for row in reports.csv_rows(room):
        writer.writerow(row)
    return response


@login_required
def learner_progress(request, pk, user_id):
    """One learner's row of the grid (JSON)."""
    room = _classroom(request, pk)
    return JsonResponse(reports.learner_row(room, _learner(room, user_id)))


@require_POST
@login_required
def message(request, pk):
    """A message to the whole class, or to one learner (to=<user id>)."""
    room = _classroom(request, pk)
    text = request.POST.get("text", "").strip()[:2000]
    if not text:
        return JsonResponse({"ok": False, "error": "Write a message first."}, status=400)
    to = request.POST.get("to") or None
    learner = _learner(room, to) if to else None
    msg = ClassMessage.objects.create(classroom=room, sender=request.user, to_user=learner, text=text)
    event = msg.event()
    targets = [learner.pk] if learner else list(room.learners().values_list("pk", flat=True))
    transaction.on_commit(lambda: [broadcast.push_user(t, event) for t in targets])
    return JsonResponse({"ok": True, "sent_to": len(targets)})


@require_POST
@login_required
def lower_hand(request, pk, user_id):
    room = _classroom(request, pk)
    learner = _learner(room, user_id)
    Membership.objects.filter(classroom=room, user=learner).update(hand_raised=None)
    transaction.on_commit(lambda: (broadcast.push_learner_row(room.pk, learner),
                                   broadcast.push_user(learner.pk, {"type": "hand",
                                                                    "raised": False})))
    return JsonResponse({"ok": True})


@require_POST
@login_required
def reset(request, pk, user_id):
    """Stop the learner's nodes for a lesson and start fresh ones, and delete
    their saved machines of it; progress stays."""
    room = _classroom(request, pk)
    learner = _learner(room, user_id)
    lesson = get_object_or_404(room.lessons, slug=request.POST.get("lesson", ""))
    session = LabSession.current_for(learner, lesson)
    if session is None:
        # Nothing running: only the saves go (the next Start is a fresh one).
        if machines.discard(learner, lesson):
            broadcast.push_learner_row(room.pk, learner)
            return JsonResponse({"ok": True, "discarded": True})
        return JsonResponse({"ok": False, "error": f"{learner.username} has no lab running "
                                                   f"for {lesson.title}."}, status=409)
    session_id = session.pk
    transaction.on_commit(lambda: tasks.reset_session.delay(session_id))
    return JsonResponse({"ok": True})


@login_required
def watch(request, pk, node_pk):
    """Watch a learner's terminal live (read-only until the learner hands over control)."""
    room = _classroom(request, pk)
    node = LabNode.objects.select_related("session", "session__lesson", "session__user").filter(
        pk=node_pk).first()
    if node is None or not room.has_learner(node.session.user_id):
        raise PermissionDenied("This machine belongs to nobody in this classroom.")
    return render(request, "classrooms/watch.html", {
        "room": room, "node": node, "learner": node.session.user, "lesson": node.session.lesson})


# ---- the learner's side ------------------------------------------------------

# Link previews (chat apps, mail scanners) fetch a join link before anyone
# clicks it: they get the page, never a guest of their own.
PREVIEWERS = re.compile(r"bot|crawl|spider|preview|facebookexternalhit|whatsapp|slack|discord|"
                        r"telegram|skype|embedly|outlook|teams|office", re.I)


def join(request, code=""):
    """Join a classroom with its code (typed in, or from the join link).

    For a visitor without an account, opening the join link is the whole of
    joining: one request makes them a guest (no password, so nothing to
    hash), joins them and, once the class's pool is being kept
    (LAB_POOL_LEAD_MINUTES before it starts), starts their lab for its first
    lesson, so the lesson page opens on a machine already on its way. Someone
    logged in joins with one press of Join, which starts the lab the same
    way. Signing up later keeps the guest's user.
    """
    code = (request.POST.get("code") or code or request.GET.get("code") or "").strip().upper()
    room = Classroom.objects.filter(code=code).first() if code else None
    error = ""
    if code and room is None:
        error = "No classroom has that code. Check it with your instructor."
    elif room is not None and not room.is_open():
        error = "This classroom has ended."
    # Only a visitor without an account joins by opening the link: the guest
    # made is theirs alone. Someone logged in presses Join (a POST with its
    # CSRF token), or any page could send them to a stranger's class link,
    # and that class's instructor would see their progress and terminal.
    link = (request.method == "GET" and request.resolver_match.url_name == "join-code"
            and not request.user.is_authenticated
            and not PREVIEWERS.search(request.META.get("HTTP_USER_AGENT", "")))
    if room is not None and not error and (request.method == "POST" or link):
        as_guest = link or request.POST.get("as_guest")
        if not request.user.is_authenticated and not as_guest:
            return redirect("join-code", code=room.code)  # offers guest, log in or sign up
        # One transaction: a class joining at once takes the database's write
        # lock once per learner, not once per row.
        with transaction.atomic():
            new_guest = not request.user.is_authenticated
            if new_guest:
                login(request, Profile.make_guest(),
                      backend="django.contrib.auth.backends.ModelBackend")
            room.join(request.user, new_user=new_guest)
            first = room.ordered_lessons()
            started, session = False, None
            if first and _class_is_on(room) and (
                    new_guest or not machines.page_context(request.user, first[0])["saved"]):
                # (A saved machine waits for the learner's own choice: Resume or
                # fresh. A guest made just now has none.)
                _, status, session = start_lab(request.user, first[0], with_event=False,
                                               new_user=new_guest)
                started = status == 200
        if not started:  # a start pushes the row itself, once its machine is ready
            broadcast.push_learner_row(room.pk, request.user)
        if link and first:
            # The lesson page in this response: a class arriving at once costs
            # one request per learner, not a redirect and a second request
            # (which paid the web process again for the session, the user and
            # a database connection). The page's script puts its own address
            # in the address bar.
            return lesson_response(request, first[0], joined=room if new_guest else None,
                                   session=session)
        return redirect("lesson", first[0].slug) if first else redirect("dashboard")
    return render(request, "classrooms/join.html", {
        "room": room if not error else None, "code": code, "error": error})


def _class_is_on(room) -> bool:
    """From the pool's lead time before the start until the end."""
    now = timezone.now()
    return room.starts - datetime.timedelta(minutes=settings.LAB_POOL_LEAD_MINUTES) <= now < room.ends


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
    when = timezone.now() if raised else None
    for m in memberships:
        Membership.objects.filter(pk=m.pk).update(hand_raised=when)
        room_pk, user = m.classroom_id, request.user
        transaction.on_commit(lambda room_pk=room_pk: broadcast.push_learner_row(room_pk, user))
    return JsonResponse({"ok": True, "raised": raised})
