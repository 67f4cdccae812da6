"""The lesson page's socket: session and step events, the Check button, control consent."""
from __future__ import annotations

import json
import logging

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer


from labs import broadcast, groups
from labs.broadcast import learner_group, user_group, watch_group
from labs.classrooms.models import Classroom
from labs.courses.models import Lesson, StepProgress
from labs.sockets import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, client_message

from .. import checks
from ..models import LabSession
from .engine import engine_watchers

log = logging.getLogger(__name__)


class LessonConsumer(AsyncWebsocketConsumer):
    """ws/lessons/<slug>/: events of one learner in one lesson.

    Server -> client JSON: {"type": "progress"|"session"|"step", ...}; on
    connect, the session (if any) and then every step state recorded so far.
    Client -> server JSON: {"type": "check"} runs the step checks; {"type":
    "state"} asks for the session's event again (the page does while it waits
    for its machine).
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
        session, events = await database_sync_to_async(self._standing)()
        for event in events:
            await self.send_json(event)
        return session

    def _standing(self):
        """(the session, the events saying where it and each step stand), in
        one trip to the database thread (each trip costs the web process)."""
        session = LabSession.current_for(self.user, self.lesson)
        events = [session.event()] if session is not None else []
        progress = StepProgress.states_for(self.user, self.lesson)
        return session, events + [progress[number].event() for number in sorted(progress)]

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await groups.leave(self.channel_layer, self.channel_name)
        self._unwatch()

    async def _watch(self, session, just_ready: bool = False):
        """Follow engine events of the session's nodes while it is ready."""
        if self.watchers or session.state != LabSession.READY:
            return
        self.watchers = await engine_watchers(session, just_ready)

    def _unwatch(self):
        watchers, self.watchers = getattr(self, "watchers", []), []
        for watcher in watchers:
            watcher.release()

    async def receive(self, text_data=None, bytes_data=None):
        message = client_message(text_data)
        if message.get("type") == "state":
            # The page waits for its machine and asks where its session stands
            # (an event pushed to it may have been lost on the way).
            session = await self._session()
            if session is not None:
                event = await database_sync_to_async(session.event)()
                await self.send_json({**event, "answer": True})  # (not a push: see lesson.js)
                await self._watch(session, just_ready=True)
            return
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
        await broadcast.apush(self.channel_layer, self.group, event)

    async def lesson_event(self, message):
        event = message["event"]
        await self.send_json(event)
        if event.get("type") == "session":
            if event.get("state") == LabSession.READY:
                session = await self._session()
                if session is not None:
                    await self._watch(session, just_ready=True)
            else:
                self._unwatch()

    async def send_json(self, data):
        try:
            await self.send(text_data=json.dumps(data))
        except Disconnected:
            # The page went away while an event was on its way (a reload, a
            # closed tab): nothing to deliver, and not an error of the site.
            log.debug("lesson socket of %s closed mid-send", getattr(self, "user", None))

    @database_sync_to_async
    def _session(self):
        return LabSession.current_for(self.user, self.lesson)
