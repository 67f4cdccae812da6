"""The one place check runs are queued for a lab session.

Four things ask for one: a command ending in the terminal, the node's engine
events (a burst of them collected first, consumers/engine.py), the Check
button (page socket or POST), a visit to a published port.
One rule for all of them, per session:

- an ask with no run in the last WINDOW seconds runs at once;
- asks within WINDOW of a run add a single run at the window's end, so the
  last change is always checked and a burst (a pasted block, a container's
  create/start/die events) costs two runs, not one per ask;
- an ask about something seen before a queued run started (`since`) is
  covered by that run.

A run is the Celery task `run_checks` (one exec per node, see tasks.py); the
trailing one goes with a countdown. The state is per process: Daphne holds the
sockets and serves the views that ask.
"""
from __future__ import annotations

import logging
import threading
import time

from asgiref.sync import sync_to_async

from . import tasks

log = logging.getLogger(__name__)

WINDOW = 0.2
FORGET_AFTER = 600.0

_lock = threading.Lock()
# session id -> monotonic time the latest queued run starts (in the future
# while a trailing run waits for its countdown).
_runs: dict = {}


def plan(session_id: int, now: float, since: float | None = None) -> float | None:
    """When the run this ask needs starts, in seconds from `now` (0: at once), or
    None when a run already queued covers it. Records the run it plans."""
    last = _runs.get(session_id)
    if last is not None and since is not None and last >= since:
        return None
    if last is None or now >= last + WINDOW:
        _runs[session_id] = now
        return 0.0
    if last > now:  # a trailing run has not started yet: it will see this too
        return None
    _runs[session_id] = last + WINDOW
    return last + WINDOW - now


def request(session_id: int, since: float | None = None) -> float | None:
    """Ask for a check run of the session (see the module docstring); returns the
    countdown it was queued with, or None when it was covered."""
    now = time.monotonic()
    with _lock:
        countdown = plan(session_id, now, since)
        if len(_runs) > 10_000:
            for key in [k for k, t in _runs.items() if now - t > FORGET_AFTER]:
                del _runs[key]
    if countdown is None:
        return None
    if countdown:
        tasks.run_checks.apply_async((session_id,), countdown=countdown)
    else:
        tasks.run_checks.delay(session_id)
    return countdown


async def arequest(session_id: int, since: float | None = None) -> float | None:
    """`request` from async code: queuing talks to the broker, off the event loop."""
    return await sync_to_async(request)(session_id, since)
