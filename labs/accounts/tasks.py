"""Beat's housekeeping of accounts: guests nobody will come back to."""
from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from labs.sandboxes.models import LabSession

log = logging.getLogger(__name__)


def stale_guests(days: int):
    """Guest users nobody will come back to: made more than `days` ago,
    inactive in any lesson or lab session since, with no session that is
    still live, and in no classroom (an instructor may still want their
    progress)."""
    cutoff = timezone.now() - timezone.timedelta(days=days)
    live = [LabSession.STARTING, LabSession.READY, LabSession.QUEUED]
    return (get_user_model().objects
            .filter(lab_profile__guest=True, date_joined__lt=cutoff)
            .exclude(lesson_activity__last__gte=cutoff)
            .exclude(lab_sessions__updated__gte=cutoff)
            .exclude(lab_sessions__state__in=live)
            .exclude(memberships__isnull=False)
            .distinct())


@shared_task(soft_time_limit=240, time_limit=270)
def remove_stale_guests() -> int:
    """Run by beat: delete guest users idle for LAB_GUEST_DAYS (0 keeps them all),
    with their progress; see stale_guests for who counts."""
    days = settings.LAB_GUEST_DAYS
    if days <= 0:
        return 0
    stale = list(stale_guests(days).values_list("pk", flat=True))
    if stale:
        get_user_model().objects.filter(pk__in=stale).delete()
        log.info("removed %d guest users idle for %d days", len(stale), days)
    return len(stale)
