"""Saved machines on the site's side: which sessions save their nodes when
they end, the learner's space for saves, resuming, and pruning
(runtime/saves.py and the driver do the saving itself)."""
from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.utils import timezone

from runtime import LabRuntimeError, saves

from labs import broadcast

from .models import SavedMachine

log = logging.getLogger(__name__)

# Ends after which a session's machines are not kept: an instructor's reset
# means "start this learner over".
NOT_SAVED = ("reset",)


def saving_enabled(driver) -> bool:
    return settings.LAB_SAVE and getattr(driver, "saves_machines", False)


def save_and_stop(session, node, driver, run) -> None:
    """Stop `node` keeping its state (the node goes whatever happens); the
    learner's page hears "saving", then "saved" or why not."""
    row, _ = SavedMachine.objects.get_or_create(user=session.user, lesson=session.lesson,
                                                node_name=node.name)
    had_save = row.saved_at is not None
    SavedMachine.objects.filter(pk=row.pk).update(state=SavedMachine.SAVING, message="")
    group = broadcast.session_group(session)
    broadcast.push(group, {"type": "machine", "state": "saving", "node": node.name})
    limit = settings.LAB_SAVE_MB * 2**20 - SavedMachine.used_bytes(session.user, but=row)
    try:
        if limit <= 0:
            run(driver.stop(node.runtime_id))
            raise saves.SaveError(f"the machine was not saved: your {settings.LAB_SAVE_MB} MB "
                                  "for saved machines are used by your other saves")
        info = run(driver.save_and_stop(node.runtime_id, row.key, limit))
    except Exception as exc:
        if isinstance(exc, LabRuntimeError):
            log.warning("saving %s of %s failed: %s", node.name, session.runtime_name, exc.reason)
        else:  # the session still ends, and the learner hears of it
            log.exception("saving %s of %s crashed", node.name, session.runtime_name)
            exc = LabRuntimeError(f"the machine could not be saved ({type(exc).__name__})")
        # A save that failed leaves the one before it (saves are replaced whole).
        SavedMachine.objects.filter(pk=row.pk).update(
            state=SavedMachine.SAVED if had_save else SavedMachine.FAILED, message=exc.reason)
        broadcast.push(group, {"type": "machine", "state": "failed", "node": node.name,
                               "message": exc.reason[0].upper() + exc.reason[1:] + "."})
        return
    SavedMachine.objects.filter(pk=row.pk).update(state=SavedMachine.SAVED, size=info.size,
                                                  saved_at=timezone.now(), message="")
    broadcast.push(group, {"type": "machine", "state": "saved", "node": node.name,
                           "size_mb": round(info.size / 2**20, 1)})


def restore_key(session, node_name: str) -> str:
    """The save a node of this session starts from ("" for a fresh one)."""
    if not session.resume:
        return ""
    row = SavedMachine.usable(session.user, session.lesson).get(node_name)
    return row.key if row is not None else ""


def refused(session, node_name: str, reason: str) -> str:
    """A save that cannot be resumed (damaged, made on an older node image)
    is discarded; the learner gets a fresh machine and is told why."""
    discard(session.user, session.lesson, node_name)
    return (f"Your saved machine could not be brought back ({reason}), so this is a fresh "
            "machine.")


def discard(user, lesson, node_name: str | None = None) -> int:
    """Delete a learner's saves of a lesson (all its nodes', or one)."""
    rows = SavedMachine.objects.filter(user=user, lesson=lesson)
    if node_name is not None:
        rows = rows.filter(node_name=node_name)
    store = saves.get_store()
    count = 0
    for row in rows.select_related("lesson"):
        store.delete(row.key)
        row.delete()
        count += 1
    return count


def prune(now=None) -> list:
    """Saves older than LAB_SAVE_DAYS go; so do saves cut short long ago."""
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(days=settings.LAB_SAVE_DAYS)
    store = saves.get_store()
    gone = []
    for row in SavedMachine.objects.filter(updated__lt=cutoff).select_related("lesson"):
        store.delete(row.key)
        gone.append(row.key)
        row.delete()
    if hasattr(store, "discard_partial"):
        store.discard_partial()
    return gone


def page_context(user, lesson) -> dict:
    """What the lesson page says of the learner's saved machines."""
    usable = SavedMachine.usable(user, lesson)
    if not usable:
        return {"saved": None}
    latest = max(m.saved_at for m in usable.values())
    return {"saved": {"at": latest, "mb": round(sum(m.size for m in usable.values()) / 2**20),
                      "nodes": sorted(usable)}}

