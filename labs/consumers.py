"""Websocket consumers: the lesson event stream and the node terminal."""
from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from runtime import LabRuntimeError, get_driver
from runtime.termmarks import MarkParser

from .models import LabNode, LabSession, Lesson, learner_group
from . import tasks

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_NODE_GONE = 4410
# After a command ends, wait this long for more marks before checking once.
CHECK_DEBOUNCE_SECONDS = 0.3


async def enqueue_checks(session_id: int) -> None:
    # .delay talks to the broker (and runs the task inline when eager): keep
    # it off the event loop.
    await sync_to_async(tasks.run_checks.delay)(session_id)


class LessonConsumer(AsyncWebsocketConsumer):
    """ws/lessons/<slug>/: events of one learner in one lesson.

    Server -> client JSON: {"type": "progress"|"session"|"step", ...}.
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
        self.group = learner_group(user.pk, slug)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        session = await self._session()
        if session is not None:
            await self.send_json(await database_sync_to_async(session.event)())

    async def disconnect(self, code):
        group = getattr(self, "group", None)
        if group:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data or "")
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "check":
            session = await self._session()
            if session is None or session.state != LabSession.READY:
                await self.send_json({"type": "error",
                                      "message": "Start the lab first, then check."})
                return
            await enqueue_checks(session.pk)

    async def lesson_event(self, message):
        await self.send_json(message["event"])

    async def send_json(self, data):
        await self.send(text_data=json.dumps(data))

    @database_sync_to_async
    def _session(self):
        return LabSession.current_for(self.user, self.lesson)


class TerminalConsumer(AsyncWebsocketConsumer):
    """ws/nodes/<pk>/terminal/?cols=..&rows=..: the node's shell.

    Binary frames both ways carry terminal bytes; text frames from the
    client are JSON control messages ({"type": "resize", "cols", "rows"}).
    """

    term = None
    pump_task = None
    check_task = None

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
        await self.accept()
        self.pump_task = asyncio.create_task(self._pump())

    async def _pump(self):
        try:
            while True:
                chunk = await self.term.read()
                if not chunk:
                    break
                clean, codes = self.marks.feed(chunk)
                if clean:
                    await self.send(bytes_data=clean)
                if codes:
                    self._schedule_checks()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("terminal pump of %s failed", self.node.runtime_id)
        await self.close()

    def _schedule_checks(self):
        """One check run per burst of finished commands."""
        if self.check_task is not None and not self.check_task.done():
            return

        async def later():
            await asyncio.sleep(CHECK_DEBOUNCE_SECONDS)
            try:
                await enqueue_checks(self.session_id)
            except Exception:
                log.exception("could not enqueue checks for session %s", self.session_id)

        self.check_task = asyncio.create_task(later())

    async def receive(self, text_data=None, bytes_data=None):
        if self.term is None:
            return
        if bytes_data is not None:
            await self.term.write(bytes_data)
            return
        try:
            message = json.loads(text_data or "")
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "resize":
            self.term.resize(_size(message.get("cols"), 80), _size(message.get("rows"), 24))

    async def disconnect(self, code):
        if self.pump_task is not None:
            self.pump_task.cancel()
        if self.term is not None:
            try:
                await self.term.close()
            except Exception:
                log.exception("closing terminal of %s failed", self.node.runtime_id)

    @database_sync_to_async
    def _owned_node(self, user, node_pk):
        return (LabNode.objects.select_related("session")
                .filter(pk=node_pk, session__user=user).first())

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
