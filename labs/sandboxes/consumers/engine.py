"""EngineWatcher: one stream of engine events per node while a lesson page is
open; the changes it sees ask for a check run (labs/checks.py).

The stream is the node engine's own /events endpoint, read over its socket
(opened in the node's root: runtime/nodefs.py), for a driver that can open
it; otherwise `docker events` run in the node. The socket costs no process:
`docker events` is a process chain in the node (the seccomp helper entering
it, timeout, sh, the docker CLI: about 50 ms of CPU to start) per watched node,
which a class arriving at once paid forty times."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
import urllib.parse


from channels.db import database_sync_to_async
from django.conf import settings

from runtime import LabRuntimeError, get_driver

from .. import checks
from ..gateway import is_here
from ..models import LabNode
from labs.sockets import _background

log = logging.getLogger(__name__)


# `docker events` runs for at most this long, then is started again (with
# --since, so nothing is missed): a watcher whose page went away without a
# clean close leaves nothing behind for longer than this.
EVENTS_WINDOW_SECONDS = 120
# A burst of engine events is collected this long before it asks for a check.
EVENT_BURST_SECONDS = 1.0

# A machine that has just become ready is watched from then on, but its
# `docker events` starts this long after (plus up to WATCH_SPREAD_SECONDS):
# a class arriving at once has forty machines ready within seconds, and their
# streams (a process chain in each node, a subscription in its engine) would
# take CPU from the prompts the learners are waiting for. Nothing is missed:
# the stream replays from the moment of ready (--since), and no learner has
# typed a command by then.
WATCH_AFTER_READY_SECONDS = 3.0
WATCH_SPREAD_SECONDS = 2.0


EVENT_TYPES = ("container", "image", "network", "volume", "service", "node")


# Not exec_*, health_status, attach, resize, kill (die follows), top, ...: checks
# themselves run `docker exec` and the like, and must not trigger more checks.
EVENT_ACTIONS = ("create", "start", "die", "destroy", "stop", "rename", "pause", "unpause",
                 "commit", "update", "remove", "pull", "push", "tag", "untag", "delete",
                 "import", "load", "connect", "disconnect")


# Containers a check script starts carry this label; their events are ignored.
CHECK_LABEL = "lab.check"


def events_argv() -> list:
    argv = ["docker", "events", "--format", "{{json .}}"]
    for kind in EVENT_TYPES:
        argv += ["--filter", f"type={kind}"]
    for action in EVENT_ACTIONS:
        argv += ["--filter", f"event={action}"]
    return argv


def events_query(since, until: float) -> str:
    """The /events request's query: the same filters as events_argv."""
    query = {"until": f"{until:.3f}",
             "filters": json.dumps({"type": list(EVENT_TYPES), "event": list(EVENT_ACTIONS)})}
    if since is not None:
        query["since"] = f"{since:.3f}"
    return urllib.parse.urlencode(query)


async def read_events(fd: int, since, until: float, on_output) -> None:
    """Engine events from `since` (None: from now) to `until` (seconds since
    the epoch), from the engine socket whose O_PATH descriptor is `fd` (closed
    here); `on_output` gets the body as it comes (JSON lines)."""
    try:
        reader, writer = await asyncio.open_unix_connection(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    try:
        writer.write(f"GET /events?{events_query(since, until)} HTTP/1.1\r\nHost: docker\r\n"
                     "Connection: close\r\n\r\n".encode())
        status = await reader.readline()
        if status.split()[1:2] != [b"200"]:
            raise LabRuntimeError(f"the engine answered {status.strip()[:80]!r} to /events")
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if not chunked:
            while data := await reader.read(65536):
                on_output(data)
            return
        # (Each event is a chunk of its own here; a line may still be split.)
        while size_line := await reader.readline():
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            on_output((await reader.readexactly(size + 2))[:-2])
    finally:
        writer.close()


def counts_as_change(line: str) -> bool:
    """Whether one `docker events` JSON line should run the checks."""
    try:
        event = json.loads(line)
    except ValueError:
        return False
    if not isinstance(event, dict):
        return False
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    if CHECK_LABEL in attributes:
        return False
    action = str(event.get("Action") or event.get("status") or "")
    return not action.startswith(("exec_", "health_status"))


class EngineWatcher:
    """Follows the engine events of one node and runs the session's checks on changes.

    Shared: every lesson page open on the node holds a reference; the stream
    stops when the last one lets go. Costs one open connection to the node's
    engine (or, for a driver that cannot open it, one blocked `docker events`
    process in the node) while a page is open; nothing runs between events.
    """

    active: dict = {}  # runtime id -> EngineWatcher

    def __init__(self, runtime_id: str, session_id: int):
        self.runtime_id = runtime_id
        self.session_id = session_id
        self.refs = 0
        self.task = None
        self.pid = None
        self.timer = None
        self.first_event = None
        self.changes = 0  # events that counted (for tests and logs)

    @classmethod
    def acquire(cls, runtime_id: str, session_id: int, delay: float = 0.0) -> "EngineWatcher":
        """The node's watcher, started if there is none (its stream `delay`
        seconds from now, replaying the events since now)."""
        watcher = cls.active.get(runtime_id)
        if watcher is None:
            watcher = cls.active[runtime_id] = cls(runtime_id, session_id)
            watcher.task = asyncio.create_task(watcher._run(delay))
        watcher.refs += 1
        return watcher

    def release(self) -> None:
        self.refs -= 1
        if self.refs > 0:
            return
        if self.active.get(self.runtime_id) is self:
            del self.active[self.runtime_id]
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()

    async def _run(self, delay: float = 0.0):
        driver = get_driver()
        since = None
        if delay > 0:
            since = time.time()
            await asyncio.sleep(delay)
        backoff = 1.0
        window = self._socket_window if driver.opens_node_files else self._cli_window
        while True:
            began = time.monotonic()
            try:
                since = await window(driver, since)
            except asyncio.CancelledError:
                raise
            except LabRuntimeError as exc:
                if exc.permanent:
                    log.info("stopped watching %s: %s", self.runtime_id, exc.reason)
                    return
                log.warning("watching engine events of %s failed: %s", self.runtime_id, exc.reason)
                since = time.time()
            except (OSError, EOFError) as exc:  # the engine restarting: no socket, a cut stream
                log.warning("watching engine events of %s failed: %r", self.runtime_id, exc)
                since = time.time()
            except Exception:
                log.exception("watching engine events of %s crashed", self.runtime_id)
                since = time.time()
            if time.monotonic() - began < 5:
                # It ended at once (engine restarting, say): wait before the next try.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
            else:
                backoff = 1.0

    async def _socket_window(self, driver, since):
        """One EVENTS_WINDOW_SECONDS of events from the engine's socket; the
        next window's start (where this one ended: nothing is missed)."""
        until = time.time() + EVENTS_WINDOW_SECONDS
        fd = driver.open_in_node(self.runtime_id, "/var/run/docker.sock", kind="socket")
        pending = bytearray()
        await read_events(fd, since, until, lambda chunk: self._feed(pending, chunk))
        return min(until, time.time())

    async def _cli_window(self, driver, since):
        """The same through `docker events` run in the node."""
        argv = events_argv()
        if since is not None:
            argv += ["--since", f"{since:.3f}"]
        # sh prints its pid first (then becomes docker events), so a
        # cancelled watcher can stop the stream in the node right away.
        script = 'echo "lab-watch-pid $$"; exec "$@"'
        pending = bytearray()
        loop = asyncio.get_running_loop()

        def on_output(chunk: bytes):
            loop.call_soon_threadsafe(self._feed, pending, chunk)

        self.pid = None
        try:
            await driver.exec(self.runtime_id, ["/bin/sh", "-c", script, "watch", *argv],
                              timeout=EVENTS_WINDOW_SECONDS, on_output=on_output)
        except asyncio.CancelledError:
            self._kill_stream(driver)
            raise
        finally:
            self.pid = None
        return time.time()

    def _kill_stream(self, driver):
        if not self.pid:
            return
        pid = self.pid

        async def kill():
            with contextlib.suppress(Exception):
                await driver.exec(self.runtime_id, ["kill", pid], timeout=5)
        task = asyncio.ensure_future(kill())
        _background.add(task)
        task.add_done_callback(_background.discard)

    def _feed(self, pending: bytearray, chunk: bytes):
        pending.extend(chunk)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            text = line.decode(errors="replace").strip()
            if text.startswith("lab-watch-pid "):
                self.pid = text.split()[-1]
            elif counts_as_change(text):
                self.changes += 1
                self._poke()

    def _poke(self):
        # Engine events come in bursts over a container's life (create, start,
        # connect, die, destroy): collect a burst, then ask once, saying when it
        # began, so a run queued since (by the command's own end) covers it.
        if self.first_event is None:
            self.first_event = time.monotonic()
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(EVENT_BURST_SECONDS, self._fire)

    def _fire(self):
        self.timer = None
        first, self.first_event = self.first_event, None

        async def ask():
            try:
                await checks.arequest(self.session_id, since=first)
            except Exception:
                log.exception("could not queue checks for session %s", self.session_id)
        task = asyncio.ensure_future(ask())
        _background.add(task)
        task.add_done_callback(_background.discard)


async def engine_watchers(session, just_ready: bool = False) -> list:
    """Watchers of the session's ready nodes (each to be released), when this
    process reaches them; [] when engine events are not followed
    (LAB_WATCH_ENGINE_EVENTS off) or the nodes run on another host, whose
    gateway follows them. `just_ready`: the session became ready this moment
    (its streams start a little later, WATCH_AFTER_READY_SECONDS)."""
    if not getattr(settings, "LAB_WATCH_ENGINE_EVENTS", True):
        return []

    def ready_ids():
        if not is_here(session):
            return []
        return [n.runtime_id for n in session.nodes.all()
                if n.state == LabNode.READY and n.runtime_id]
    delay = WATCH_AFTER_READY_SECONDS + random.uniform(0, WATCH_SPREAD_SECONDS) \
        if just_ready else 0.0
    return [EngineWatcher.acquire(runtime_id, session.pk, delay)
            for runtime_id in await database_sync_to_async(ready_ids)()]
