"""Celery tasks of classrooms: grid rows pushed off a busy path."""
from __future__ import annotations

from celery import shared_task
from django.contrib.auth import get_user_model

from labs import broadcast


@shared_task(soft_time_limit=60, time_limit=90)
def push_learner_rows(user_id: int, room_ids: list) -> None:
    """A learner's row to the live grid of each of these classrooms. Sent by
    a node start (its machine became ready): a class arriving at once would
    otherwise compute forty rows on the node worker, between the starts."""
    user = get_user_model().objects.filter(pk=user_id).first()
    for pk in room_ids:
        broadcast.push_learner_row(pk, user)
