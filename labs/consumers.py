"""Websocket consumers: the lesson event stream and the node terminal.

Checks run after every finished command (the terminal's command-end marks)
and on Docker engine events: while a lesson page is open on a ready session,
an EngineWatcher per node follows `docker events` in that node (a blocked
process, no polling) and runs the checks shortly after container, image,
network, volume, service or swarm-node changes, so steps turn green whatever
terminal the learner used.
"""
from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import time
from urllib.parse import parse_qs

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from runtime import LabRuntimeError, get_driver
from runtime.termmarks import MarkParser

from .hints import hint_for
from .live import classroom_group, term_group, watch_group
from .models import (Classroom, LabNode, LabSession, Lesson, StepProgress, learner_group,
                     user_group)
from . import checks, groups, tasks

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_NODE_GONE = 4410
# Enter pressed where no command-end mark follows (a shell inside a container,
# `docker exec -it`): check once the output has been quiet this long.
QUIET_SECONDS = 1.0
QUIET_GIVE_UP_SECONDS = 300
# `docker events` runs for at most this long, then is started again (with
# --since, so nothing is missed): a watcher whose page went away without a
# clean close leaves nothing behind for longer than this.
EVENTS_WINDOW_SECONDS = 120
# A watching instructor's socket says hello to the learner's terminal this often;
# the terminal copies its output to watchers for 2.5 times as long after a hello.
WATCH_HELLO_SECONDS = 20
# Output of the current command kept for hints (characters).
HINT_BUFFER_CHARS = 8000
# Earlier output a terminal hands the page on request (its tmux keeps 10000 lines).
HISTORY_LINES = 3000

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
    """Follows `docker events` in one node and runs the session's checks on changes.

    Shared: every lesson page open on the node holds a reference; the stream
    stops when the last one lets go. Costs one blocked `docker events` process
    in the node while a page is open; nothing runs between events.
    """

    active: dict = {}  # runtime id -> EngineWatcher

    def __init__(self, runtime_id: str, session_id: int):
        self.runtime_id = runtime_id
        self.session_id = session_id
        self.refs = 0
        self.task = None
        self.pid = None
        self.changes = 0  # events that counted (for tests and logs)

    @classmethod
    def acquire(cls, runtime_id: str, session_id: int) -> "EngineWatcher":
        watcher = cls.active.get(runtime_id)
        if watcher is None:
            watcher = cls.active[runtime_id] = cls(runtime_id, session_id)
            watcher.task = asyncio.create_task(watcher._run())
        watcher.refs += 1
        return watcher

    def release(self) -> None:
        self.refs -= 1
        if self.refs > 0:
            return
        if self.active.get(self.runtime_id) is self:
            del self.active[self.runtime_id]
        if self.task is not None:
            self.task.cancel()

    async def _run(self):
        driver = get_driver()
        since = None
        backoff = 1.0
        loop = asyncio.get_running_loop()
        while True:
            argv = events_argv()
            if since is not None:
                argv += ["--since", f"{since:.3f}"]
            # sh prints its pid first (then becomes docker events), so a
            # cancelled watcher can stop the stream in the node right away.
            script = 'echo "lab-watch-pid $$"; exec "$@"'
            began = time.monotonic()
            pending = bytearray()
            self.pid = None

            def on_output(chunk: bytes):
                loop.call_soon_threadsafe(self._feed, pending, chunk)

            try:
                await driver.exec(self.runtime_id, ["/bin/sh", "-c", script, "watch", *argv],
                                  timeout=EVENTS_WINDOW_SECONDS, on_output=on_output)
            except asyncio.CancelledError:
                self._kill_stream(driver)
                raise
            except LabRuntimeError as exc:
                if exc.permanent:
                    log.info("stopped watching %s: %s", self.runtime_id, exc.reason)
                    return
                log.warning("watching engine events of %s failed: %s", self.runtime_id, exc.reason)
            except Exception:
                log.exception("watching engine events of %s crashed", self.runtime_id)
            self.pid = None
            since = time.time()
            if time.monotonic() - began < 5:
                # It ended at once (engine restarting, say): wait before the next try.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
            else:
                backoff = 1.0

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
        # Engine events come in bursts (create, start, connect, die, destroy):
        # the scheduler makes that one run now and one at the window's end, and
        # skips events a run queued since (the command's own end) already saw.
        seen = time.monotonic()

        async def ask():
            try:
                await checks.arequest(self.session_id, since=seen)
            except Exception:
                log.exception("could not queue checks for session %s", self.session_id)
        task = asyncio.ensure_future(ask())
        _background.add(task)
        task.add_done_callback(_background.discard)


def client_message(text_data) -> dict:
    """A client's JSON control message; {} for anything that is not a JSON object
    (a page sends nothing else; whatever else comes is ignored)."""
    try:
        message = json.loads(text_data or "")
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


_background: set = set()


class LessonConsumer(AsyncWebsocketConsumer):
    """ws/lessons/<slug>/: events of one learner in one lesson.

    Server -> client JSON: {"type": "progress"|"session"|"step", ...}; on
    connect, the session (if any) and then every step state recorded so far.
    Client -> server JSON: {"type": "check"} runs the step checks.
    """

    async def connect(self):
        user = self.scope.get("user")
        slug = self.scope["url_route"]["kwargs"]["slug"]
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.lesson = await database_sync_to_async(Lesson.objects.filter(slug=slug).first)()
        if self.lesson is None:
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.user = user
        self.watchers = []
        self.group = learner_group(user.pk, slug)
        await groups.join(self.channel_layer, self.channel_name,
                          [self.group, user_group(user.pk)], on_rejoin=self._catch_up)
        await self.accept()
        session = await self._catch_up()
        if session is not None:
            await self._watch(session)

    async def _catch_up(self):
        """Send where the session stands and every step's recorded state.

        What was recorded while no socket of this page listened (the page was
        reconnecting after a restart or a network drop, or Redis lost the
        group) would otherwise show only after a reload. Called after joining
        the groups, so nothing recorded from then on is missed.
        """
        session = await self._session()
        if session is not None:
            await self.send_json(await database_sync_to_async(session.event)())
        progress = await database_sync_to_async(StepProgress.states_for)(self.user, self.lesson)
        for number in sorted(progress):
            await self.send_json(progress[number].event())
        return session

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await groups.leave(self.channel_layer, self.channel_name)
        self._unwatch()

    async def _watch(self, session):
        """Follow engine events of the session's nodes while it is ready."""
        if self.watchers or session.state != LabSession.READY:
            return
        if not getattr(settings, "LAB_WATCH_ENGINE_EVENTS", True):
            return
        ids = await database_sync_to_async(
            lambda: [n.runtime_id for n in session.nodes.all()
                     if n.state == LabNode.READY and n.runtime_id])()
        self.watchers = [EngineWatcher.acquire(runtime_id, session.pk) for runtime_id in ids]

    def _unwatch(self):
        watchers, self.watchers = getattr(self, "watchers", []), []
        for watcher in watchers:
            watcher.release()

    async def receive(self, text_data=None, bytes_data=None):
        message = client_message(text_data)
        if message.get("type") == "control":
            await self._control(message)
            return
        if message.get("type") == "check":
            session = await self._session()
            if session is None or session.state != LabSession.READY:
                await self.send_json({"type": "error",
                                      "message": "Start the lab first, then check."})
                return
            await checks.arequest(session.pk)

    async def _control(self, message):
        """The learner answers a take-control request, or takes control back.

        {"type": "control", "grant": true, "instructor": <user id>} lets that
        instructor type in this lesson's terminals, if they teach the learner;
        {"type": "control", "grant": false} takes it back.
        """
        session = await self._session()
        if session is None:
            return
        grant = bool(message.get("grant"))
        instructor = message.get("instructor") if grant else None

        def apply():
            if instructor is not None:
                from django.contrib.auth import get_user_model
                teacher = get_user_model().objects.filter(pk=instructor).first()
                if teacher is None or not Classroom.teaching(teacher, self.user.pk):
                    return None
            LabSession.objects.filter(pk=session.pk).update(controller_id=instructor)
            session.refresh_from_db()
            return [n.pk for n in session.nodes.all()], session.event()

        applied = await database_sync_to_async(apply)()
        if applied is None:
            await self.send_json({"type": "error", "message": "That instructor does not teach you."})
            return
        nodes, event = applied
        for node_pk in nodes:
            await self.channel_layer.group_send(watch_group(node_pk), {
                "type": "watch.control", "controller": instructor})
        await self.channel_layer.group_send(self.group, {"type": "lesson.event", "event": event})

    async def lesson_event(self, message):
        event = message["event"]
        await self.send_json(event)
        if event.get("type") == "session":
            if event.get("state") == LabSession.READY:
                session = await self._session()
                if session is not None:
                    await self._watch(session)
            else:
                self._unwatch()

    async def send_json(self, data):
        await self.send(text_data=json.dumps(data))

    @database_sync_to_async
    def _session(self):
        return LabSession.current_for(self.user, self.lesson)


class TerminalConsumer(AsyncWebsocketConsumer):
    """ws/nodes/<pk>/terminal/?cols=..&rows=..: the node's shell.

    Binary frames both ways carry terminal bytes; text frames from the
    client are JSON control messages ({"type": "resize", "cols", "rows"};
    {"type": "history"} asks for the earlier output, answered with
    {"type": "history", "text"}).
    """

    term = None
    pump_task = None
    hint_task = None

    async def dispatch(self, message):
        # Channels closes stale database connections before every message, on
        # its one thread for synchronous code: every keystroke of every
        # terminal would queue there behind the others (and behind any query).
        # Keystrokes touch no database (what does, runs in its own
        # database_sync_to_async), so they skip that hop.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def connect(self):
        user = self.scope.get("user")
        node_pk = self.scope["url_route"]["kwargs"]["node"]
        node = None
        if user is not None and user.is_authenticated:
            node = await self._owned_node(user, node_pk)
        if node is None:
            await self.accept()
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if node.state != LabNode.READY or not node.runtime_id:
            await self.accept()
            await self.close(code=CLOSE_NODE_GONE)
            return
        self.node = node
        self.session_id = node.session_id
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        cols = _size(query.get("cols", ["80"])[0], 80)
        rows = _size(query.get("rows", ["24"])[0], 24)
        try:
            self.term = await get_driver().open_terminal(node.runtime_id, cols, rows, name="main")
        except LabRuntimeError as exc:
            log.warning("terminal of %s failed to open: %s", node.runtime_id, exc.reason)
            if exc.permanent:
                await database_sync_to_async(self._node_lost)(exc.reason)
            await self.accept()
            await self.send(text_data=json.dumps({"type": "error", "message": exc.reason}))
            await self.close(code=CLOSE_NODE_GONE)
            return
        self.marks = MarkParser()
        self.user = user
        self.last_output_at = self.last_mark_at = 0.0
        self.quiet_task = None
        self.output = ""  # since the last command-end mark, for hints
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.size = (cols, rows)
        # Output goes to instructors watching this node while one said hello lately.
        self.watched_until = 0.0
        self.input_task = None
        self.session = await database_sync_to_async(lambda: node.session)()
        await groups.join(self.channel_layer, self.channel_name, [term_group(node.pk)])
        await self.accept()
        self.pump_task = asyncio.create_task(self._pump())
        # A watcher already waiting (the learner reloaded): it says hello again.
        await self.channel_layer.group_send(watch_group(node.pk), {"type": "watch.ask"})

    async def _pump(self):
        try:
            while True:
                chunk = await self.term.read()
                if not chunk:
                    break
                clean, codes = self.marks.feed(chunk)
                self.last_output_at = time.monotonic()
                if codes:
                    self.last_mark_at = self.last_output_at
                if clean:
                    await self.send(bytes_data=clean)
                    if self.watched_until > time.monotonic():
                        await self.channel_layer.group_send(
                            watch_group(self.node.pk), {"type": "watch.output", "data": clean})
                    self.output = (self.output + self.decoder.decode(clean))[-HINT_BUFFER_CHARS:]
                if codes:
                    if codes[-1] != 0:
                        self._maybe_hint(self.output)
                    self.output = ""
                    self._schedule_checks()
        except asyncio.CancelledError:
            raise
        except Disconnected:
            # The browser went away while output was on its way: not an error.
            log.debug("terminal socket of %s closed mid-send", self.node.runtime_id)
        except Exception:
            log.exception("terminal pump of %s failed", self.node.runtime_id)
        await self.close()

    def _schedule_checks(self):
        """A command ended: ask for a check run (labs/checks.py batches a burst,
        say a pasted block, into one run now and one at the window's end)."""
        async def ask():
            try:
                await checks.arequest(self.session_id)
            except Exception:
                log.exception("could not queue checks for session %s", self.session_id)
        task = asyncio.ensure_future(ask())
        _background.add(task)
        task.add_done_callback(_background.discard)

    def _check_when_quiet(self, entered: float):
        """After Enter, check once output goes quiet unless a command-end mark
        came: commands typed in a container's shell leave no mark."""
        if self.quiet_task is not None and not self.quiet_task.done():
            return

        async def wait_quiet():
            while time.monotonic() - entered < QUIET_GIVE_UP_SECONDS:
                await asyncio.sleep(QUIET_SECONDS / 2)
                if self.last_mark_at >= entered:
                    return  # the node's shell reported the command: checked already
                if time.monotonic() - max(self.last_output_at, entered) >= QUIET_SECONDS:
                    self._schedule_checks()
                    return

        self.quiet_task = asyncio.create_task(wait_quiet())

    def _maybe_hint(self, output: str):
        """A failed command printed a known Docker error: tell the lesson page."""
        hint = hint_for(output)
        if hint is None:
            return

        async def send_hint():
            try:
                step = await database_sync_to_async(self.node.first_open_step)(self.user)
                if step is None:
                    return
                event = {"type": "hint", "step": step.number, "node": self.node.name,
                         "message": hint}
                await self.channel_layer.group_send(
                    learner_group(self.user.pk, self.node.session.lesson.slug),
                    {"type": "lesson.event", "event": event})
            except Exception:
                log.exception("could not send a hint for %s", self.node.runtime_id)

        self.hint_task = asyncio.create_task(send_hint())

    async def receive(self, text_data=None, bytes_data=None):
        if self.term is None:
            return
        if bytes_data is not None:
            await self.term.write(bytes_data)
            self._saw_input()
            if b"\r" in bytes_data:
                self._check_when_quiet(time.monotonic())
            return
        message = client_message(text_data)
        if message.get("type") == "resize":
            self.size = (_size(message.get("cols"), 80), _size(message.get("rows"), 24))
            self.term.resize(*self.size)
            if self.watched_until > time.monotonic():
                await self._tell_size()
        elif message.get("type") == "history":
            # The earlier output, as plain text. tmux in the node keeps it; the
            # browser never got it, because tmux sends the screen, not every
            # line (a long output arrives as its last screenful).
            text = await get_driver().capture_terminal(self.node.runtime_id,
                                                       history=HISTORY_LINES)
            await self.send(text_data=json.dumps({"type": "history", "text": text}))

    def _saw_input(self):
        """Keystrokes keep the session from ending idle (recorded at most every 30 s)."""
        if self.input_task is not None and not self.input_task.done():
            return
        last = self.session.last_input
        if last is not None:
            from django.utils import timezone
            if (timezone.now() - last).total_seconds() < 30:
                return
        self.input_task = asyncio.create_task(database_sync_to_async(self.session.saw_input)())

    async def _tell_size(self):
        await self.channel_layer.group_send(watch_group(self.node.pk), {
            "type": "watch.size", "cols": self.size[0], "rows": self.size[1]})

    # Messages from the channel layer (instructors watching, see WatchConsumer).
    async def watch_hello(self, message):
        first = self.watched_until <= time.monotonic()
        self.watched_until = time.monotonic() + WATCH_HELLO_SECONDS * 2.5
        if first or message.get("new"):
            await self._tell_size()

    async def term_input(self, message):
        """Keystrokes of the instructor the learner handed control to."""
        if self.term is not None and message.get("data"):
            await self.term.write(message["data"])
            self._saw_input()

    async def disconnect(self, code):
        if getattr(self, "node", None) is not None:
            await groups.leave(self.channel_layer, self.channel_name)
        if self.pump_task is not None:
            self.pump_task.cancel()
        if self.term is not None:
            try:
                await self.term.close()
            except Exception:
                log.exception("closing terminal of %s failed", self.node.runtime_id)

    @database_sync_to_async
    def _owned_node(self, user, node_pk):
        return LabNode.owned(user, node_pk)

    def _node_lost(self, reason: str):
        self.node.mark_failed(reason)
        session = LabSession.objects.get(pk=self.session_id)
        session.mark(LabSession.FAILED, f"{self.node.name}: {reason}")
        tasks.push(session.group_name, session.event())


def _size(value, default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return max(2, min(number, 500))


class ClassroomConsumer(AsyncWebsocketConsumer):
    """ws/classrooms/<pk>/: the instructor's live grid. Only the classroom's instructor.

    Server -> client JSON: {"type": "grid", ...} once, then {"type": "learner", "row"}
    whenever a learner's progress, hand or machines change.
    """

    group = None

    async def connect(self):
        user = self.scope.get("user")
        pk = self.scope["url_route"]["kwargs"]["pk"]
        room = None
        if user is not None and user.is_authenticated:
            room = await database_sync_to_async(Classroom.for_instructor)(user, pk)
        await self.accept()
        if room is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.room = room
        self.group = classroom_group(room.pk)
        await groups.join(self.channel_layer, self.channel_name, [self.group],
                          on_rejoin=self._send_grid)
        await self._send_grid()

    async def _send_grid(self):
        grid = await database_sync_to_async(self.room.grid)()
        await self.send(text_data=json.dumps({"type": "grid", **grid}))

    async def disconnect(self, code):
        if self.group:
            await groups.leave(self.channel_layer, self.channel_name)

    async def classroom_event(self, message):
        await self.send(text_data=json.dumps(message["event"]))


class WatchConsumer(AsyncWebsocketConsumer):
    """ws/classrooms/<pk>/nodes/<node>/watch/: a learner's terminal, seen by their instructor.

    Read-only: the learner's TerminalConsumer copies its output here through the
    channel layer (group watch-<node>) while a watcher keeps saying hello. The
    first frame is the current screen (tmux capture-pane in the node).
    Client -> server: {"type": "control-request"} asks the learner for control;
    binary frames are keystrokes, written to the learner's terminal only while
    the learner has handed control to this instructor.
    Server -> client: binary terminal output; JSON {"type": "size"|"control"|"error"}.

    Consent is for one page: control goes to the watch page that asked for it
    and ends when that page closes. Every new watch page starts read-only and
    must ask again, even if the learner once said yes to the same instructor.
    """

    group = None
    hello_task = None
    control = False
    asked = False  # this page sent a control-request the learner has not answered

    async def connect(self):
        user = self.scope.get("user")
        kwargs = self.scope["url_route"]["kwargs"]
        node = None
        if user is not None and user.is_authenticated:
            node = await database_sync_to_async(self._node)(user, kwargs["pk"], kwargs["node"])
        await self.accept()
        if node is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user, self.node = user, node
        self.group = watch_group(node.pk)
        await groups.join(self.channel_layer, self.channel_name, [self.group])
        await self.send(text_data=json.dumps({"type": "control", "granted": False}))
        await self._screen()
        self.hello_task = asyncio.create_task(self._hello_loop())

    @staticmethod
    def _node(user, pk, node_pk):
        room = Classroom.for_instructor(user, pk)
        if room is None:
            return None
        node = (LabNode.objects.select_related("session", "session__user", "session__lesson")
                .filter(pk=node_pk).first())
        if node is None or not room.has_learner(node.session.user_id):
            return None
        return node

    async def _screen(self):
        """The learner's screen as it is now, so the watcher does not start blank."""
        if self.node.state != LabNode.READY or not self.node.runtime_id:
            await self.send(text_data=json.dumps({"type": "error",
                                                  "message": "This machine is not running."}))
            return
        screen = await get_driver().capture_terminal(self.node.runtime_id, styles=True)
        if screen:
            screen = screen.rstrip("\n").replace("\n", "\r\n")
            await self.send(bytes_data=b"\x1b[H\x1b[2J" + screen.encode())

    async def _hello_loop(self):
        new = True
        while True:
            await self.channel_layer.group_send(term_group(self.node.pk),
                                                {"type": "watch.hello", "new": new})
            new = False
            await asyncio.sleep(WATCH_HELLO_SECONDS)

    async def disconnect(self, code):
        if self.hello_task is not None:
            self.hello_task.cancel()
        if self.control:
            await self._release()  # consent ends with the page it was given to
        if self.group:
            await groups.leave(self.channel_layer, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            if self.control:
                await self.channel_layer.group_send(term_group(self.node.pk),
                                                    {"type": "term.input", "data": bytes_data})
            return
        message = client_message(text_data)
        if message.get("type") == "control-request":
            self.asked = True
            event = {"type": "control-request", "instructor": self.user.pk,
                     "name": self.user.get_full_name() or self.user.username,
                     "node": self.node.pk}
            await self.channel_layer.group_send(user_group(self.node.session.user_id),
                                                {"type": "lesson.event", "event": event})
        elif message.get("type") == "control-release" and self.control:
            await self._release()

    async def _release(self):
        """Hand control back: the learner's pages and every watcher hear of it."""
        self.control = self.asked = False
        await database_sync_to_async(LabSession.objects.filter(
            pk=self.node.session_id, controller_id=self.user.pk).update)(controller=None)
        await self.channel_layer.group_send(self.group, {"type": "watch.control",
                                                         "controller": None})
        session = await database_sync_to_async(
            LabSession.objects.select_related("lesson").get)(pk=self.node.session_id)
        event = await database_sync_to_async(session.event)()
        await self.channel_layer.group_send(session.group_name,
                                            {"type": "lesson.event", "event": event})

    # Messages from the channel layer.
    async def watch_output(self, message):
        await self.send(bytes_data=message["data"])

    async def watch_size(self, message):
        await self.send(text_data=json.dumps({"type": "size", "cols": message["cols"],
                                              "rows": message["rows"]}))

    async def watch_ask(self, message):
        await self.channel_layer.group_send(term_group(self.node.pk),
                                            {"type": "watch.hello", "new": True})

    async def watch_control(self, message):
        # Re-read: only the database says who holds control. Of this
        # instructor's watch pages, only the one that asked (or already held
        # control) gets it.
        controller = await database_sync_to_async(
            lambda: LabSession.objects.filter(pk=self.node.session_id)
            .values_list("controller_id", flat=True).first())()
        self.control = controller == self.user.pk and (self.asked or self.control)
        if controller is None:
            self.asked = False
        await self.send(text_data=json.dumps({"type": "control", "granted": self.control}))
