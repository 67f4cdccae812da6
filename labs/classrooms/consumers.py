"""An instructor's sockets: the classroom's live grid, and watching one learner's terminal."""
from __future__ import annotations

import asyncio
import json
import logging

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from runtime import get_driver

from labs import broadcast, groups
from labs.broadcast import classroom_group, term_group, user_group, watch_group
from labs.sandboxes import tasks
from labs.sandboxes.gateway import is_here
from labs.sandboxes.models import LabNode, LabSession
from labs.sandboxes.tasks import screen_message
from labs.sockets import CLOSE_FORBIDDEN, WATCH_HELLO_SECONDS, client_message

from . import reports
from .models import Classroom

log = logging.getLogger(__name__)


class ClassroomConsumer(AsyncWebsocketConsumer):
    """ws/classrooms/<pk>/: the instructor's live grid. Only the classroom's instructor.

    Server -> client JSON: {"type": "grid", ...} once, then {"type": "learner", "row"}
    whenever a learner's progress, hand or machines change.
    """

    group = None
    open_task = None

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
        self.open_task = asyncio.create_task(self._keep_open())

    async def _send_grid(self):
        # Said open first: rows that change from now on are pushed to the group
        # (joined already), and the ones before are in this grid.
        await self._say_open()
        grid = await database_sync_to_async(reports.grid)(self.room)
        await self.send(text_data=json.dumps({"type": "grid", **grid}))

    async def _say_open(self):
        try:
            await asyncio.to_thread(broadcast.mark_grid_open, self.room.pk)
        except Exception as exc:  # Redis down: rows are pushed anyway (grid_is_open)
            log.warning("cannot mark the grid of classroom %s open: %s", self.room.pk, exc)

    async def _keep_open(self):
        while True:
            await asyncio.sleep(broadcast.GRID_OPEN_SECONDS / 3)
            await self._say_open()

    async def disconnect(self, code):
        if self.open_task is not None:
            self.open_task.cancel()
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
        self.user, self.node, self.here = user, node, node.here
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
        node = (LabNode.objects.select_related("session", "session__user", "session__lesson",
                                               "session__host")
                .filter(pk=node_pk).first())
        if node is None or not room.has_learner(node.session.user_id):
            return None
        node.here = is_here(node.session)
        return node

    async def _screen(self):
        """The learner's screen as it is now, so the watcher does not start blank."""
        if self.node.state != LabNode.READY or not self.node.runtime_id:
            await self.send(text_data=json.dumps({"type": "error",
                                                  "message": "This machine is not running."}))
            return
        if not self.here:
            # On another host: its checks worker reads the screen and sends it
            # to this socket's channel (watch_screen).
            await sync_to_async(tasks.send_screen.delay)(self.node.session_id, self.node.pk,
                                                         self.channel_name)
            return
        screen = await get_driver().terminal_screen(self.node.runtime_id)
        if screen is not None:
            await self.watch_screen(screen_message(screen))

    async def watch_screen(self, message):
        # The size first: drawn at the watcher's default size, long lines
        # wrapped there and stayed wrapped after the learner's size came.
        await self.send(text_data=json.dumps({"type": "size", "cols": message["cols"],
                                              "rows": message["rows"]}))
        await self.send(bytes_data=message["data"])

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
            await broadcast.apush(self.channel_layer, user_group(self.node.session.user_id),
                                  event)
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
        await broadcast.apush(self.channel_layer, broadcast.session_group(session), event)

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
