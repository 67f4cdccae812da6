"""Thin views for instructors: their classrooms, the live grid, messages, resets, CSV.

Every view here answers 403 unless the user is an instructor (the "instructors"
group) who owns the classroom; a learner named in the URL must be in it.
"""
from __future__ import annotations

import csv
import datetime

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from . import broadcast, tasks
from .models import ClassMessage, Classroom, LabNode, LabSession, Lesson, Membership, is_instructor


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
        fields = ["name", "lessons", "starts", "ends"]

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
                                      "ends": (now + datetime.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M"),
                                      "lessons": Lesson.objects.all()[:1]})
    rooms = Classroom.taught_by(request.user).prefetch_related("lessons")
    return render(request, "labs/classrooms.html", {"form": form, "rooms": rooms})


@login_required
def classroom(request, pk):
    room = _classroom(request, pk)
    join_url = request.build_absolute_uri(reverse("join-code", args=[room.code]))
    return render(request, "labs/classroom.html", {"room": room, "grid": room.grid(),
                                                   "join_url": join_url,
                                                   "stuck_minutes": settings.LAB_STUCK_MINUTES})


@login_required
def grid(request, pk):
    return JsonResponse(_classroom(request, pk).grid())


@login_required
def progress_csv(request, pk):
    room = _classroom(request, pk)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="classroom-{room.pk}-progress.csv"'
    writer = csv.writer(response)
    for row in room.csv_rows():
        writer.writerow(row)
    return response


@login_required
def learner_progress(request, pk, user_id):
    """One learner's row of the grid (JSON)."""
    room = _classroom(request, pk)
    return JsonResponse(room.learner_row(_learner(room, user_id)))


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
    """Stop the learner's nodes for a lesson and start fresh ones; progress stays."""
    room = _classroom(request, pk)
    learner = _learner(room, user_id)
    lesson = get_object_or_404(room.lessons, slug=request.POST.get("lesson", ""))
    session = LabSession.current_for(learner, lesson)
    if session is None:
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
    return render(request, "labs/watch.html", {"room": room, "node": node,
                                               "learner": node.session.user,
                                               "lesson": node.session.lesson})
