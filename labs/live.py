"""Live pushes from synchronous code (views, tasks, models) to the pages' sockets.

Groups:
- learner_group(user, slug): one learner's lesson page (labs.models.learner_group);
- user_group(user): every lesson page of one user (messages, take-control prompts);
- classroom-<pk>: the instructor's live grid of one classroom;
- watch-<node pk>: instructors watching one node's terminal (read-only or in control);
- term-<node pk>: the learner's terminal socket(s) of one node.
"""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # a dead channel layer must not fail the real work
        log.exception("could not push %s to %s", message.get("type"), group)


def classroom_group(pk) -> str:
    return f"classroom-{pk}"


def watch_group(node_pk) -> str:
    return f"watch-{node_pk}"


def term_group(node_pk) -> str:
    return f"term-{node_pk}"


def push_classroom(pk, event: dict) -> None:
    send(classroom_group(pk), {"type": "classroom.event", "event": event})


def push_learner_row(classroom_pk, user_id) -> None:
    """Send one learner's current grid row to the classroom's live grid."""
    from django.contrib.auth import get_user_model

    from .models import Classroom

    room = Classroom.objects.filter(pk=classroom_pk).first()
    user = get_user_model().objects.filter(pk=user_id).first()
    if room is None or user is None:
        return
    push_classroom(classroom_pk, {"type": "learner", "row": room.learner_row(user)})


def push_user(user_id, event: dict) -> None:
    from .models import user_group
    send(user_group(user_id), {"type": "lesson.event", "event": event})
