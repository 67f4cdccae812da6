"""A learner's terminal: keystrokes to the node's tmux, its output to the page (and to
watching instructors), command-end marks that ask for checks, hints, earlier output."""
from __future__ import annotations

import asyncio
import codecs
import json
import logging
import time
from urllib.parse import parse_qs

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model

from runtime import LabRuntimeError, get_driver
from runtime.termmarks import MarkParser

from labs import broadcast, groups
from labs.broadcast import learner_group, term_group, watch_group
from labs.sockets import (CLOSE_ELSEWHERE, CLOSE_FORBIDDEN, CLOSE_NODE_GONE, WATCH_HELLO_SECONDS,
                          _background, _size, client_message)

from .. import checks, gateway, tasks
from .engine import engine_watchers
from ..hints import hint_for
from ..models import LabNode, LabSession

log = logging.getLogger(__name__)


def entered_a_line(typed: bool, data: bytes) -> tuple:
    """(Enter ended a line with something on it, something typed since) after `data`.

    An Enter on an empty line (or after Ctrl-U or Ctrl-C cleared it) ran nothing,
    so it asks for no check: a page (re)attaching sends Ctrl-U and Enter to get a
    prompt, and a class opening its terminals at once would otherwise check every
    node at once. Any other key counts as typing (arrow-up recalls a command).
    """
    entered = False
    for byte in data:
        if byte == 0x0D:
            entered = entered or typed
            typed = False
        elif byte in (0x03, 0x15):
            typed = False
        elif byte >= 0x20 or byte == 0x09:
            typed = True
    return entered, typed


# Enter pressed where no command-end mark follows (a shell inside a container,
# `docker exec -it`): check once the output has been quiet this long.
QUIET_SECONDS = 1.0


QUIET_GIVE_UP_SECONDS = 300


# Output of the current command kept for hints (characters).
HINT_BUFFER_CHARS = 8000


# Earlier output a terminal hands the page on request (its tmux keeps 10000 lines).
HISTORY_LINES = 3000


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
    watchers: list = []

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
        node_pk = self.scope["url_route"]["kwargs"]["node"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        user, node = await self._authorize(node_pk, query)
        if node is None:
            await self.accept()
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if node.state != LabNode.READY or not node.runtime_id:
            await self.accept()
            await self.close(code=CLOSE_NODE_GONE)
            return
        # (LabNode.owned brought the session and its host: no query here.)
        if not gateway.is_here(node.session):
            # A page that did not know yet: its node's host gateway serves it.
            await self.accept()
            await self.close(code=CLOSE_ELSEWHERE)
            return
        self.node = node
        self.session_id = node.session_id
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
        self.line_typed = False  # something typed since the last Enter
        self.quiet_task = None
        self.output = ""  # since the last command-end mark, for hints
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.size = (cols, rows)
        # Output goes to instructors watching this node while one said hello lately.
        self.watched_until = 0.0
        self.input_task = None
        self.session = node.session
        await groups.join(self.channel_layer, self.channel_name, [term_group(node.pk)])
        await self.accept()
        self.pump_task = asyncio.create_task(self._pump())
        if self.scope.get("gateway"):
            # On a host gateway no lesson page socket is near the node: the
            # terminal follows its session's engine events (consumers/lesson.py
            # does on the site's own machine).
            self.watchers = await engine_watchers(self.session)
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
                    broadcast.lesson_message(event))
            except Exception:
                log.exception("could not send a hint for %s", self.node.runtime_id)

        self.hint_task = asyncio.create_task(send_hint())

    async def receive(self, text_data=None, bytes_data=None):
        if self.term is None:
            return
        if bytes_data is not None:
            await self.term.write(bytes_data)
            self._saw_input()
            entered, self.line_typed = entered_a_line(self.line_typed, bytes_data)
            if entered:
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
        if message.get("new"):
            self._redraw()

    def _redraw(self):
        """A new watcher: tmux redraws the whole screen, through this terminal's
        stream, now that the watcher gets a copy of it. The watcher's first
        frame (a capture, WatchConsumer) is read apart from the stream: what
        was typed between that capture and this hello reached neither, and the
        watch view lost it ("docker container run alpin" + the output)."""
        # Not the recorder's control client (runtime/recorder.py): it gets no screen.
        command = ("for c in $(tmux list-clients -t main -F '#{?client_control,,#{client_name}}'); "
                   'do tmux refresh-client -t "$c"; done')

        async def redraw():
            try:
                await get_driver().exec(self.node.runtime_id, ["sh", "-c", command], timeout=5)
            except LabRuntimeError as exc:
                log.info("could not redraw %s for a watcher: %s", self.node.runtime_id, exc.reason)
        task = asyncio.ensure_future(redraw())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def term_input(self, message):
        """Keystrokes of the instructor the learner handed control to."""
        if self.term is not None and message.get("data"):
            await self.term.write(message["data"])
            self._saw_input()

    async def disconnect(self, code):
        if getattr(self, "node", None) is not None:
            await groups.leave(self.channel_layer, self.channel_name)
        for watcher in self.watchers:
            watcher.release()
        self.watchers = []
        if self.pump_task is not None:
            self.pump_task.cancel()
        if self.term is not None:
            try:
                await self.term.close()
            except Exception:
                log.exception("closing terminal of %s failed", self.node.runtime_id)

    async def _authorize(self, node_pk: int, query: dict) -> tuple:
        """(user, node) when this socket may open node `node_pk`'s terminal, else
        (None, None). On the site: the logged-in owner. On a host gateway (no
        cookies there): a token the site signed for this node, checked before
        any database query (labs.sandboxes.gateway)."""
        if self.scope.get("gateway"):
            claims = gateway.verify(query.get("token", [""])[0], node_pk)
            if claims is None:
                return None, None
            return await self._token_node(claims)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return None, None
        return user, await database_sync_to_async(LabNode.owned)(user, node_pk)

    @database_sync_to_async
    def _token_node(self, claims: dict) -> tuple:
        user = get_user_model().objects.filter(pk=claims["u"], is_active=True).first()
        node = LabNode.owned(user, claims["n"]) if user is not None else None
        if node is None or node.runtime_id != claims["r"]:
            return None, None  # not that user's, or a machine since replaced
        return user, node

    def _node_lost(self, reason: str):
        self.node.mark_failed(reason)
        session = LabSession.objects.get(pk=self.session_id)
        tasks.mark_session(session, LabSession.FAILED, f"{self.node.name}: {reason}")
