"""Every push from the server to the pages' sockets: the groups, the messages, the sends.

Groups (Channels groups; a socket joins the ones it listens to):
- learner_group(user, slug): one learner's lesson page of one lesson;
- user_group(user): every page of one user (messages, take-control prompts, hands);
- classroom_group(pk): the instructor's live grid of one classroom;
- watch_group(node pk): instructors watching one node's terminal;
- term_group(node pk): the learner's terminal socket(s) of one node.

Messages: a lesson page gets {"type": "lesson.event", "event": ...}, a grid
{"type": "classroom.event", "event": ...} (each consumer has the handler of that
name). Sends come in two kinds: `push*` from synchronous code (views, tasks)
and `apush*` from consumers. A dead channel layer never fails the real work.

Models return what changed (StepProgress.record, LabSession.mark); the caller
pushes it through here: models import nothing of this module.
"""
from __future__ import annotations

import logging

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from labs import asyncbridge
from labs.classrooms import reports
from labs.classrooms.models import Classroom

log = logging.getLogger(__name__)


# ---- groups -----------------------------------------------------------------

def learner_group(user_id, slug: str) -> str:
    return f"learner-{user_id}-{slug}"[:99]


def session_group(session) -> str:
    """The lesson page of a lab session's learner."""
    return learner_group(session.user_id, session.lesson.slug)


def user_group(user_id) -> str:
    return f"user-{user_id}"


def classroom_group(pk) -> str:
    return f"classroom-{pk}"


def watch_group(node_pk) -> str:
    return f"watch-{node_pk}"


def term_group(node_pk) -> str:
    return f"term-{node_pk}"


# ---- messages ---------------------------------------------------------------

def lesson_message(event: dict) -> dict:
    return {"type": "lesson.event", "event": event}


def classroom_message(event: dict) -> dict:
    return {"type": "classroom.event", "event": event}


# ---- sends from synchronous code ----------------------------------------------

def send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        asyncbridge.call(layer.group_send, group, message)
    except Exception:  # a dead channel layer must not fail the real work
        log.exception("could not push %s to %s", message.get("type"), group)


def push(group: str, event: dict) -> None:
    """One lesson event to every socket of a lesson page's group."""
    send(group, lesson_message(event))


def push_user(user_id, event: dict) -> None:
    send(user_group(user_id), lesson_message(event))


def push_classroom(pk, event: dict) -> None:
    send(classroom_group(pk), classroom_message(event))


# ---- whether a live grid is open -----------------------------------------------
# A grid row takes a dozen queries, and a class arriving changes forty rows at
# once (a fifth of the workers' Python time when nobody watched). So rows are
# computed only while a live grid of the classroom is open somewhere: each
# open grid socket keeps this key alive (set on connect and on a rejoin after
# Redis lost its data, renewed every third of its life), and a grid that opens
# reads every row itself, so a row skipped before is never missing.
GRID_OPEN_SECONDS = 60


def grid_open_key(pk) -> str:
    return f"lab:grid-open:{pk}"


_redis = None  # this process's client for the key (redis-py resets it after a fork)


def _redis_client():
    global _redis
    if _redis is None:
        import redis
        _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2,
                                      socket_connect_timeout=2)
    return _redis


def _uses_redis() -> bool:
    return "Redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"]


def mark_grid_open(pk) -> None:
    """A live grid of classroom `pk` is open (for GRID_OPEN_SECONDS)."""
    if _uses_redis():
        _redis_client().set(grid_open_key(pk), 1, ex=GRID_OPEN_SECONDS)


def grid_is_open(pk) -> bool:
    """Whether a live grid of classroom `pk` is open somewhere; True when it
    cannot be told (the in-memory layer, Redis not answering): a row too many
    costs little next to a grid left stale."""
    if not _uses_redis():
        return True
    try:
        return bool(_redis_client().exists(grid_open_key(pk)))
    except Exception as exc:
        log.warning("cannot tell whether the grid of classroom %s is open: %s", pk, exc)
        return True


def push_learner_row(classroom_pk, user) -> None:
    """One learner's current grid row to a classroom's live grid, if one is open."""
    if not grid_is_open(classroom_pk):
        return
    room = Classroom.objects.filter(pk=classroom_pk).first()
    if room is not None and user is not None:
        push_classroom(classroom_pk, {"type": "learner", "row": reports.learner_row(room, user)})


def grid_rooms(user, lesson_id) -> list:
    """The classrooms of the learner's that have the lesson (their grids show it)."""
    return list(Classroom.objects.filter(memberships__user_id=user.pk, lessons__id=lesson_id)
                .values_list("pk", flat=True).distinct())


def grid_rows_changed(user, lesson_id) -> None:
    """The learner's progress or machines in a lesson changed: after the commit
    (so the grid reads what was recorded), refresh their row in the live grid
    of every classroom of theirs that has the lesson."""
    rooms = grid_rooms(user, lesson_id)
    if rooms:
        transaction.on_commit(lambda: [push_learner_row(pk, user) for pk in rooms])


# ---- sends from consumers ---------------------------------------------------------

async def asend(layer, group: str, message: dict) -> None:
    await layer.group_send(group, message)


async def apush(layer, group: str, event: dict) -> None:
    await layer.group_send(group, lesson_message(event))
