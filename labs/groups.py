"""Channel-layer group memberships that outlive Redis losing its data.

Redis keeps its data over a clean restart (Procfile: saved on shutdown), but
a crash or a flush loses it. Every open socket then stays connected (the
layer reconnects by itself, settings.CHANNEL_LAYERS) yet is in no group any
more, so it hears nothing: a lesson page would never see its steps turn done.

So consumers join their groups through `join`, and one watcher per process
writes a fresh token into a marker key of its own in Redis every few
seconds. When the marker is gone, or holds another token (Redis came back
from an older snapshot), Redis lost data: the watcher adds every open socket
of this process back to its groups and lets it catch up on what it missed
(`on_rejoin`).
"""
from __future__ import annotations

import asyncio
import logging
import uuid

log = logging.getLogger(__name__)

# How often the marker is looked at: a socket is deaf at most this long.
CHECK_SECONDS = 2.0
# The marker outlives a stalled process by far, and a gone process's marker
# goes away by itself.
MARKER_TTL_SECONDS = 120
MARKER = f"lab:groups-alive:{uuid.uuid4().hex}"

# channel name -> (channel layer, groups, on_rejoin coroutine function or None)
_members: dict = {}
_watch_task = None
_token = None  # the last token this process wrote into its marker
_marker_lock = asyncio.Lock()


async def join(layer, channel: str, groups, on_rejoin=None) -> None:
    """Add `channel` to `groups` and keep it there until `leave`."""
    if not _watching():
        # The first open socket in a while: write the marker the watcher will
        # compare against, before joining, so a loss after this shows at its
        # first look. While the watcher runs, its own last write is that mark
        # (no Redis round trip per connect).
        await _marker_was_gone(layer)
    for group in groups:
        await layer.group_add(group, channel)
    _members[channel] = (layer, tuple(groups), on_rejoin)
    _ensure_watching(layer)


async def leave(layer, channel: str) -> None:
    _, groups, _ = _members.pop(channel, (None, (), None))
    for group in groups:
        await layer.group_discard(group, channel)


async def _marker_was_gone(layer) -> bool:
    """Write a new token into this process's marker; whether the old one was
    missing or not the last one written (Redis lost its data, or came back
    from an older snapshot), or nobody of this process had joined for a long while."""
    global _token
    if not hasattr(layer, "connection"):
        return False  # the in-memory layer (tests) loses nothing
    async with _marker_lock:  # one write at a time, so each reads back the last
        token = uuid.uuid4().hex
        # SET ... GET answers what was there before.
        before = await layer.connection(0).set(MARKER, token, ex=MARKER_TTL_SECONDS, get=True)
        expected, _token = _token, token
    return before is None or before.decode() != expected


def _watching() -> bool:
    return _watch_task is not None and not _watch_task.done()


def _ensure_watching(layer) -> None:
    global _watch_task
    if hasattr(layer, "connection") and not _watching():
        _watch_task = asyncio.create_task(_watch(layer))


async def _watch(layer) -> None:
    while _members:
        await asyncio.sleep(CHECK_SECONDS)
        try:
            if await _marker_was_gone(layer) and _members:
                await rejoin_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis down: the layer's own retries are failing too
            log.info("cannot look at Redis: %s", exc)


async def rejoin_all() -> None:
    log.warning("Redis lost its data (crash or flush): rejoining %d open sockets", len(_members))
    for channel, (layer, groups, on_rejoin) in list(_members.items()):
        try:
            for group in groups:
                await layer.group_add(group, channel)
            if on_rejoin is not None:
                await on_rejoin()
        except Exception:
            log.exception("rejoining the groups of %s failed", channel)
