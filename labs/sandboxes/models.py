"""Learners' lab sessions and their nodes: state, limits, published ports.

A session is one learner's machines for one lesson; the runtime makes and
removes the nodes (tasks.py), these rows say what the site believes of them.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from labs.courses.models import Lesson, StepProgress

log = logging.getLogger(__name__)


class SandboxHost(models.Model):
    """A machine that runs learners' nodes: the site's own (the embedded host,
    LAB_HOST_NAME) or one that joined (`python -m runtime host join`).

    Its Celery workers consume its own queues (queue()); it reports its load
    with a heartbeat every LAB_HOST_HEARTBEAT_SECONDS (labs/sandboxes/hosts.py).
    A host that misses heartbeats for LAB_HOST_TIMEOUT seconds is lost: its
    sessions end and their learners are offered a start elsewhere.
    """
    ACTIVE, DRAINING, LOST, REMOVED = "active", "draining", "lost", "removed"
    STATES = [(s, s) for s in (ACTIVE, DRAINING, LOST, REMOVED)]

    name = models.SlugField(max_length=40, unique=True)
    state = models.CharField(max_length=10, choices=STATES, default=ACTIVE)
    # Where the host's gateway serves terminals and published ports ("" for the
    # embedded host: the site itself does).
    gateway_url = models.CharField(max_length=200, blank=True)
    # The DNS name under which its gateway serves published ports,
    # n<node>-<port>.<ports_domain> (the host's LAB_PORTS_DOMAIN).
    ports_domain = models.CharField(max_length=200, blank=True)
    # Why the site gives the host no sessions though it beats (its version or
    # image recipes differ from the site's, its clock is off; hosts.refusal,
    # written when the site last placed a session); "" when it may.
    refused = models.TextField(blank=True)
    version = models.CharField(max_length=64, blank=True)
    recipe = models.CharField(max_length=64, blank=True)
    # Its load at the last heartbeat (runtime.limits.host_load).
    max_nodes = models.PositiveIntegerField(default=0)
    nodes_now = models.PositiveIntegerField(default=0)
    room = models.PositiveIntegerField(default=0)
    memory_free = models.BigIntegerField(default=0)
    # Nodes waiting ready in its warm pool at the last heartbeat, and how many
    # the site last asked it to keep (LAB_POOL_SIZE plus scheduled classes).
    # (db_default: hosts on older code write rows without them.)
    pool_ready = models.PositiveIntegerField(default=0, db_default=0)
    pool_target = models.PositiveIntegerField(default=0, db_default=0)
    # Why its pool stayed below the target at its last fill ("" if it did not).
    pool_short = models.CharField(max_length=300, blank=True, default="", db_default="")
    joined = models.DateTimeField(auto_now_add=True)
    # The database's clock at its last heartbeat, and the host's own then.
    last_seen = models.DateTimeField(null=True, blank=True)
    host_clock = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "labs_sandboxhost"
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.state})"

    def queue(self, kind: str) -> str:
        """The Celery queue of this host's `kind` of work: "nodes" (starts,
        stops, pool, reaping) or "checks"."""
        return f"{kind}.{self.name}"


class LabSession(models.Model):
    STARTING, READY, FAILED, STOPPED = "starting", "ready", "failed", "stopped"
    # The lab was full when this session asked for nodes: it waits its turn.
    QUEUED = "queued"
    # Its host went away (missed heartbeats): the nodes are gone with it.
    LOST = "lost"
    STATES = [(s, s) for s in (STARTING, READY, FAILED, STOPPED, QUEUED, LOST)]
    # States whose nodes are gone for good: a new start makes a new session.
    ENDED = (STOPPED, LOST)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="lab_sessions")
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="sessions")
    # Where its nodes run: every node of a session is on one host. None until
    # placed (a queued session waits for room on any host).
    host = models.ForeignKey(SandboxHost, on_delete=models.PROTECT, null=True, blank=True,
                             related_name="sessions")
    state = models.CharField(max_length=10, choices=STATES, default=STARTING)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    # Session limits (settings LAB_SESSION_MINUTES, LAB_IDLE_MINUTES): beat ends the
    # session (and frees its nodes) after expires, or after idle minutes without
    # terminal input. Progress is never touched.
    expires = models.DateTimeField(null=True, blank=True)
    last_input = models.DateTimeField(null=True, blank=True)
    ended_because = models.CharField(max_length=20, blank=True)
    # The instructor the learner let type in their terminals (take control).
    controller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")
    # Start from the learner's saved machines (SavedMachine), not fresh ones.
    resume = models.BooleanField(default=False, db_default=False)  # db_default: rows written by older code

    class Meta:
        db_table = "labs_labsession"
        ordering = ["-created"]

    def __str__(self):
        return f"{self.runtime_name} {self.user} {self.lesson.slug} {self.state}"

    @property
    def runtime_name(self) -> str:
        """The session name the runtime knows this session by."""
        return f"{settings.LAB_SESSION_PREFIX}{self.pk}"

    @classmethod
    def current_for(cls, user, lesson):
        """The learner's live (not stopped) session for this lesson, if any: a
        lost one too, so the page can say what happened. With its host: its
        event names the host's gateway (a query more for each page and socket)."""
        return (cls.objects.filter(user=user, lesson=lesson).exclude(state=cls.STOPPED)
                .select_related("host").first())

    # A start younger than this is taken to be still in flight (its task
    # queued or running); an older one is retried.
    START_GRACE_SECONDS = 60

    @classmethod
    def ensure_for(cls, user, lesson, new_user: bool = False) -> tuple:
        """Reuse the learner's session for the lesson or make one (with its nodes).

        Returns (session, needs_start). needs_start is False when every node
        is ready, or when a start began less than START_GRACE_SECONDS ago;
        otherwise the session and its unready nodes are reset to starting.
        new_user: `user` was made in this transaction, so has no session to
        look for (a class joining by its link: a query fewer each).
        """
        # (No savepoint: nobody goes on with the transaction after a failure here.)
        with transaction.atomic(savepoint=False):
            session = None if new_user else cls.current_for(user, lesson)
            if session is not None and session.state == cls.LOST:
                # Its host went away with its nodes: it ends, and a new
                # session is placed on a host that is there.
                session.mark(cls.STOPPED, session.error)
                session = None
            created = session is None
            if created:
                now = timezone.now()
                session = cls.objects.create(user=user, lesson=lesson, state=cls.STARTING,
                                             expires=now + cls.length(), last_input=now)
            if created:  # (its nodes cannot be there yet)
                LabNode.objects.bulk_create(LabNode(session=session, name=name)
                                            for name in lesson.nodes)
                return session, True
            for name in lesson.nodes:
                LabNode.objects.get_or_create(session=session, name=name)
            nodes = list(session.nodes.all())
            if session.state == cls.READY and all(n.state == LabNode.READY for n in nodes):
                return session, False
            age = (timezone.now() - session.updated).total_seconds()
            if session.state == cls.STARTING and age < cls.START_GRACE_SECONDS:
                return session, False
            session.mark(cls.STARTING)
            if session.expires is None or session.expires <= timezone.now():
                session.renew()
            for node in nodes:
                if node.state != LabNode.READY:
                    node.state, node.error = LabNode.STARTING, ""
                    node.save(update_fields=["state", "error"])
            return session, True

    def queue_position(self) -> int:
        """1 for the next session to start when the lab has room."""
        return LabSession.objects.filter(state=self.QUEUED, created__lt=self.created).count() + 1

    def mark(self, state: str, error: str = "") -> bool:
        """Set the state; True when the learner's machines changed in a way their
        classrooms' grids show (ready, failed, stopped): the caller pushes that."""
        changed = state != self.state
        self.state, self.error = state, error
        self.save(update_fields=["state", "error", "updated"])
        return changed and state != self.STARTING

    # ---- limits ------------------------------------------------------------

    @staticmethod
    def length():
        return timezone.timedelta(minutes=settings.LAB_SESSION_MINUTES)

    @staticmethod
    def idle_limit():
        return timezone.timedelta(minutes=settings.LAB_IDLE_MINUTES)

    def renew(self):
        now = timezone.now()
        self.expires, self.last_input = now + self.length(), now
        self.save(update_fields=["expires", "last_input"])

    def extend(self) -> bool:
        """Push the end back by LAB_EXTEND_MINUTES (counts as activity); False if stopped."""
        if self.state == self.STOPPED:
            return False
        now = timezone.now()
        base = max(self.expires or now, now)
        self.expires = base + timezone.timedelta(minutes=settings.LAB_EXTEND_MINUTES)
        self.last_input = now
        self.save(update_fields=["expires", "last_input"])
        return True

    def saw_input(self, throttle_seconds: float = 30) -> bool:
        """Terminal input arrived: record it (at most once per throttle_seconds)."""
        now = timezone.now()
        if self.last_input and (now - self.last_input).total_seconds() < throttle_seconds:
            return False
        LabSession.objects.filter(pk=self.pk).update(last_input=now)
        self.last_input = now
        return True

    def idle_deadline(self):
        last = self.last_input or self.updated or self.created
        return last + self.idle_limit() if last else None

    def end_reason(self, now=None) -> str:
        """"expired", "idle" or "" (still within its limits)."""
        now = now or timezone.now()
        if self.expires and now >= self.expires:
            return "expired"
        idle = self.idle_deadline()
        if idle and now >= idle:
            return "idle"
        return ""

    @classmethod
    def over_limits(cls, now=None) -> list:
        """Live sessions past their end or idle for too long: [(session, reason)]."""
        now = now or timezone.now()
        found = []
        for session in cls.objects.exclude(state__in=cls.ENDED):
            reason = session.end_reason(now)
            if reason:
                found.append((session, reason))
        return found

    @classmethod
    def running_for(cls, user) -> list:
        """The learner's live sessions (queued, starting, running, failed but not
        stopped), oldest first, with their lesson and node count: the dashboard's
        running labs, each with a Stop."""
        return list(cls.objects.filter(user=user).exclude(state=cls.STOPPED)
                    .select_related("lesson").annotate(node_count=models.Count("nodes"))
                    .order_by("created"))

    @property
    def stopping(self) -> bool:
        """Asked to stop (by the learner, a limit or a reset); its nodes are going."""
        return self.state != self.STOPPED and bool(self.ended_because)

    @classmethod
    def nodes_in_use(cls, user, besides_lesson=None) -> int:
        """Nodes of the learner's live sessions (other than for `besides_lesson`)."""
        nodes = LabNode.objects.filter(session__user=user).exclude(session__state__in=cls.ENDED)
        if besides_lesson is not None:
            nodes = nodes.exclude(session__lesson=besides_lesson)
        return nodes.count()

    @classmethod
    def room_for(cls, user, lesson, new_user: bool = False) -> str:
        """"" if the learner may start the lesson's nodes, else why not
        (new_user: made in this transaction, so none in use yet)."""
        limit = settings.LAB_NODES_PER_LEARNER
        used = 0 if new_user else cls.nodes_in_use(user, besides_lesson=lesson)
        if used + len(lesson.nodes) <= limit:
            return ""
        others = (cls.objects.filter(user=user).exclude(state__in=cls.ENDED)
                  .exclude(lesson=lesson).select_related("lesson"))
        titles = ", ".join(f"“{s.lesson.title}”" for s in others)
        return (f"You can have {limit} lab machine{'s' if limit != 1 else ''} at a time and "
                f"{used} {'are' if used != 1 else 'is'} running ({titles}). "
                "Stop one of those labs first; your progress is kept.")

    def node1(self):
        return self.nodes.order_by("name").first()

    def gateway_url(self) -> str:
        """The gateway of the host this session runs on ("" for the site's own
        machine, whose nodes the site's sockets reach). The same whichever
        process asks: a host's worker pushes this to the learner's page too."""
        return self.host.gateway_url if self.host_id is not None else ""

    def event(self) -> dict:
        """The JSON the lesson socket sends about this session.

        `node` is node1's id (kept for pages and clients that know one node);
        `nodes` lists every node with its published ports.
        """
        nodes = list(self.nodes.order_by("name"))
        idle = self.idle_deadline()
        event = {"type": "session", "state": self.state, "error": self.error,
                 "node": nodes[0].pk if nodes else None,
                 "nodes": [n.summary() for n in nodes],
                 "expires": self.expires.isoformat() if self.expires else None,
                 "idle_deadline": idle.isoformat() if idle else None,
                 "idle_seconds": settings.LAB_IDLE_MINUTES * 60,
                 "ended_because": self.ended_because,
                 "gateway": self.gateway_url(),
                 "controller": self.controller.username if self.controller_id else None}
        if self.state == self.QUEUED:
            event["position"] = self.queue_position()
        return event


class LabNode(models.Model):
    STARTING, READY, FAILED, STOPPED = "starting", "ready", "failed", "stopped"
    STATES = [(s, s) for s in (STARTING, READY, FAILED, STOPPED)]

    session = models.ForeignKey(LabSession, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=31, default="node1")
    runtime_id = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=10, choices=STATES, default=STARTING)
    error = models.TextField(blank=True)
    # Published TCP ports as last seen in the node:
    # [{"port": 8080, "target": 80, "container": "web1"}, ...]
    ports = models.JSONField(default=list, blank=True)

    class Meta:
        db_table = "labs_labnode"
        ordering = ["session", "name"]
        constraints = [models.UniqueConstraint(fields=["session", "name"],
                                               name="unique_node_name")]

    def __str__(self):
        return f"{self.session.runtime_name}/{self.name} {self.state}"

    def mark_ready(self, runtime_id: str):
        self.runtime_id, self.state, self.error = runtime_id, self.READY, ""
        self.save(update_fields=["runtime_id", "state", "error"])

    def mark_failed(self, reason: str):
        self.state, self.error = self.FAILED, reason
        self.save(update_fields=["state", "error"])

    def port_url(self, port: int) -> str:
        return f"/nodes/{self.pk}/ports/{int(port)}/"

    def summary(self) -> dict:
        return {"id": self.pk, "name": self.name, "state": self.state,
                "ports": [dict(p, url=self.port_url(p["port"])) for p in self.ports]}

    def set_ports(self, ports: list) -> bool:
        """Store the published ports seen in the node; True if they changed."""
        if ports == self.ports:
            return False
        self.ports = ports
        self.save(update_fields=["ports"])
        return True

    def ports_event(self) -> dict:
        return {"type": "ports", "node": self.pk, "name": self.name,
                "ports": self.summary()["ports"]}

    def first_open_step(self, user):
        """The first step about this node (not a quiz) the learner has not done, or None."""
        done = set(StepProgress.objects.filter(user=user, step__lesson_id=self.session.lesson_id,
                                               state=StepProgress.DONE)
                   .values_list("step_id", flat=True))
        for step in self.session.lesson.steps.filter(node=self.name).order_by("number"):
            if step.pk not in done and not step.is_quiz:
                return step
        return None

    @classmethod
    def owned(cls, user, pk):
        """The node `pk` if `user` owns it, else None."""
        if user is None or not user.is_authenticated:
            return None
        # (With its session's host: the terminal socket asks where it runs.)
        return (cls.objects.select_related("session", "session__lesson", "session__host")
                .filter(pk=pk, session__user=user).first())


class SessionMark(models.Model):
    """A moment on a session's recording timeline that the site knows of: a
    check that failed on the step the learner was on, a step done. The
    terminal's own marks (commands, resizes) are in the recording file
    (runtime/recorder.py); the replay merges both (labs/sandboxes/recordings.py)."""
    FAILED, DONE = "failed", "done"
    KINDS = [(FAILED, FAILED), (DONE, DONE)]

    session = models.ForeignKey(LabSession, on_delete=models.CASCADE, related_name="marks")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=10, choices=KINDS)
    step = models.PositiveIntegerField()
    node = models.CharField(max_length=31, default="node1")  # the node the step's check ran in
    text = models.TextField(blank=True)

    class Meta:
        db_table = "labs_sessionmark"
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["session", "step", "kind"])]

    def label(self) -> str:
        """As on the replay's timeline (static/labs/replay.js styles these by prefix)."""
        if self.kind == self.DONE:
            return f"step {self.step} done"
        return f"check failed (step {self.step}): {self.text}"


class SavedMachine(models.Model):
    """A learner's node kept after its session ended (runtime/saves.py holds
    the data; this row says whose it is and how it went). One per learner,
    lesson and node name: a newer save replaces the older."""
    SAVING, SAVED, FAILED = "saving", "saved", "failed"
    STATES = [(s, s) for s in (SAVING, SAVED, FAILED)]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="saved_machines")
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="saved_machines")
    node_name = models.CharField(max_length=31, default="node1")
    state = models.CharField(max_length=10, choices=STATES, default=SAVING)
    size = models.BigIntegerField(default=0)  # bytes of the stored save
    saved_at = models.DateTimeField(null=True, blank=True)  # of the save there is (None: none)
    message = models.TextField(blank=True)  # why the last save failed
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "labs_savedmachine"
        ordering = ["-updated"]
        constraints = [models.UniqueConstraint(fields=["user", "lesson", "node_name"],
                                               name="one_save_per_node")]

    def __str__(self):
        return f"{self.key} {self.state}"

    @property
    def key(self) -> str:
        return f"u{self.user_id}/{self.lesson.slug}/{self.node_name}"

    @classmethod
    def usable(cls, user, lesson) -> dict:
        """The learner's saves of this lesson there are to resume, by node name."""
        if user is None or not user.is_authenticated:
            return {}
        return {m.node_name: m for m in cls.objects.filter(user=user, lesson=lesson,
                                                           saved_at__isnull=False)}

    @classmethod
    def used_bytes(cls, user, but=None) -> int:
        rows = cls.objects.filter(user=user, saved_at__isnull=False)
        if but is not None:
            rows = rows.exclude(pk=but.pk)
        return rows.aggregate(total=models.Sum("size"))["total"] or 0
