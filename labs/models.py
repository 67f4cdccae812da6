"""Lessons, learners' lab sessions and their progress.

Behaviour lives here (fat models): views, consumers and tasks call these
methods rather than poking at fields.
"""
from __future__ import annotations

import logging
from pathlib import Path

import markdown
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

log = logging.getLogger(__name__)


def render_markdown(text: str) -> str:
    # attr_list lets a command block name another node than its step's:
    # ```{ .sh data-node="node2" }
    return markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists", "attr_list"],
                             output_format="html")


def _file_bytes(lesson_def, file_def) -> bytes:
    """The content of one lesson file: given by the loader, else read from the lesson dir."""
    content = getattr(file_def, "content", None)
    if callable(content):  # labs.lessons.FileDef reads its source file
        content = content()
    if isinstance(content, str):
        return content.encode()
    if isinstance(content, bytes):
        return content
    return (Path(lesson_def.path) / file_def.source).read_bytes()


class Lesson(models.Model):
    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True)
    minutes = models.PositiveIntegerField(default=10)
    order = models.IntegerField(default=0)
    # Node names the lesson needs, comma-separated ("node1,node2").
    node_names = models.CharField(max_length=200, default="node1")

    class Meta:
        ordering = ["order", "slug"]

    def __str__(self):
        return self.title

    @property
    def nodes(self) -> list:
        return [n for n in self.node_names.split(",") if n]

    @classmethod
    def sync_from(cls, lesson_def) -> tuple:
        """Create or update the rows for one LessonDef; returns (lesson, changed)."""
        with transaction.atomic():
            lesson, created = cls.objects.get_or_create(
                slug=lesson_def.slug,
                defaults={"title": lesson_def.title, "summary": lesson_def.summary,
                          "minutes": lesson_def.minutes, "order": lesson_def.order,
                          "node_names": ",".join(lesson_def.nodes)})
            changed = created
            wanted = {"title": lesson_def.title, "summary": lesson_def.summary,
                      "minutes": lesson_def.minutes, "order": lesson_def.order,
                      "node_names": ",".join(lesson_def.nodes)}
            for field, value in wanted.items():
                if getattr(lesson, field) != value:
                    setattr(lesson, field, value)
                    changed = True
            if changed:
                lesson.save()
            numbers = set()
            for step_def in lesson_def.steps:
                numbers.add(step_def.number)
                quiz = getattr(step_def, "quiz", None)
                values = {"name": step_def.name, "title": step_def.title,
                          "body_html": render_markdown(step_def.text),
                          "check_script": step_def.check or "", "solve_script": step_def.solve or "",
                          "setup_script": step_def.setup or "",
                          "node": getattr(step_def, "node", None) or "node1",
                          "quiz_question": quiz.question if quiz else "",
                          "quiz_choices": list(quiz.choices) if quiz else [],
                          "quiz_answer": quiz.answer if quiz else None,
                          "quiz_explain": (quiz.explain or "") if quiz else ""}
                step, step_created = Step.objects.get_or_create(
                    lesson=lesson, number=step_def.number, defaults=values)
                if step_created:
                    changed = True
                    continue
                dirty = [f for f, v in values.items() if getattr(step, f) != v]
                if dirty:
                    for f in dirty:
                        setattr(step, f, values[f])
                    step.save(update_fields=dirty)
                    changed = True
            removed, _ = lesson.steps.exclude(number__in=numbers).delete()
            changed = lesson._sync_files(lesson_def) or changed
            return lesson, changed or bool(removed)

    def _sync_files(self, lesson_def) -> bool:
        """Store the files the lesson places in its nodes; True if any changed."""
        changed = False
        keep = set()
        for file_def in getattr(lesson_def, "files", ()) or ():
            key = (file_def.node, file_def.path)
            keep.add(key)
            values = {"content": _file_bytes(lesson_def, file_def),
                      "mode": int(getattr(file_def, "mode", None) or 0o644)}
            row, created = LessonFile.objects.get_or_create(
                lesson=self, node=file_def.node, path=file_def.path, defaults=values)
            if created:
                changed = True
            elif bytes(row.content) != values["content"] or row.mode != values["mode"]:
                row.content, row.mode = values["content"], values["mode"]
                row.save(update_fields=["content", "mode"])
                changed = True
        for row in list(self.files.all()):
            if (row.node, row.path) not in keep:
                row.delete()
                changed = True
        return changed

    def files_for(self, node_name: str) -> tuple:
        """NodeSpec.files for one of the lesson's nodes: ((path, bytes, mode), ...)."""
        return tuple((f.path, bytes(f.content), f.mode)
                     for f in self.files.filter(node=node_name).order_by("path"))


class Step(models.Model):
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="steps")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    title = models.CharField(max_length=200)
    body_html = models.TextField()
    check_script = models.TextField(blank=True)  # empty for a quiz step
    solve_script = models.TextField(blank=True)
    setup_script = models.TextField(blank=True)
    # The node whose terminal the step is about and where its check runs.
    node = models.CharField(max_length=31, default="node1")
    # A quiz step has a question instead of a check; answered on the page.
    quiz_question = models.TextField(blank=True)
    quiz_choices = models.JSONField(default=list, blank=True)
    quiz_answer = models.IntegerField(null=True, blank=True)  # 0-based index into choices
    quiz_explain = models.TextField(blank=True)

    class Meta:
        ordering = ["lesson", "number"]
        constraints = [models.UniqueConstraint(fields=["lesson", "number"],
                                               name="unique_step_number")]

    def __str__(self):
        return f"{self.lesson.slug} step {self.number}: {self.title}"

    @property
    def is_quiz(self) -> bool:
        return bool(self.quiz_question) and self.quiz_answer is not None

    @property
    def has_check(self) -> bool:
        return not self.is_quiz and bool(self.check_script.strip())

    def answer(self, user, choice) -> tuple:
        """Record a learner's answer to this quiz step; returns (right, progress, changed).

        Right marks the step done; wrong leaves it as it is with the explanation
        as its message. Anything that is not one of the choices counts as wrong.
        """
        try:
            index = int(choice)
        except (TypeError, ValueError):
            index = -1
        right = self.is_quiz and index == self.quiz_answer
        if right:
            progress, changed = StepProgress.record(user, self, StepProgress.DONE, "")
        else:
            message = "Not quite."
            if self.quiz_explain:
                message += " " + self.quiz_explain
            progress, changed = StepProgress.record(user, self, StepProgress.PENDING, message)
        return right, progress, changed


class LessonFile(models.Model):
    """A file the lesson places in one of its nodes before the node starts."""

    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="files")
    node = models.CharField(max_length=31, default="node1")
    path = models.CharField(max_length=500)  # absolute, inside the node
    mode = models.PositiveIntegerField(default=0o644)
    content = models.BinaryField()

    class Meta:
        ordering = ["lesson", "node", "path"]
        constraints = [models.UniqueConstraint(fields=["lesson", "node", "path"],
                                               name="unique_lesson_file")]

    def __str__(self):
        return f"{self.lesson.slug}:{self.node}:{self.path}"


class LabSession(models.Model):
    STARTING, READY, FAILED, STOPPED = "starting", "ready", "failed", "stopped"
    # The lab was full when this session asked for nodes: it waits its turn.
    QUEUED = "queued"
    STATES = [(s, s) for s in (STARTING, READY, FAILED, STOPPED, QUEUED)]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="lab_sessions")
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="sessions")
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

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.runtime_name} {self.user} {self.lesson.slug} {self.state}"

    @property
    def runtime_name(self) -> str:
        """The session name the runtime knows this session by."""
        return f"{settings.LAB_SESSION_PREFIX}{self.pk}"

    @classmethod
    def current_for(cls, user, lesson):
        """The learner's live (not stopped) session for this lesson, if any."""
        return cls.objects.filter(user=user, lesson=lesson).exclude(state=cls.STOPPED).first()

    # A start younger than this is taken to be still in flight (its task
    # queued or running); an older one is retried.
    START_GRACE_SECONDS = 60

    @classmethod
    def ensure_for(cls, user, lesson) -> tuple:
        """Reuse the learner's session for the lesson or make one (with its nodes).

        Returns (session, needs_start). needs_start is False when every node
        is ready, or when a start began less than START_GRACE_SECONDS ago;
        otherwise the session and its unready nodes are reset to starting.
        """
        with transaction.atomic():
            session = cls.current_for(user, lesson)
            created = session is None
            if created:
                now = timezone.now()
                session = cls.objects.create(user=user, lesson=lesson, state=cls.STARTING,
                                             expires=now + cls.length(), last_input=now)
            for name in lesson.nodes:
                LabNode.objects.get_or_create(session=session, name=name)
            nodes = list(session.nodes.all())
            if created:
                return session, True
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
        for session in cls.objects.exclude(state=cls.STOPPED):
            reason = session.end_reason(now)
            if reason:
                found.append((session, reason))
        return found

    @classmethod
    def nodes_in_use(cls, user, besides_lesson=None) -> int:
        """Nodes of the learner's live sessions (other than for `besides_lesson`)."""
        nodes = LabNode.objects.filter(session__user=user).exclude(session__state=cls.STOPPED)
        if besides_lesson is not None:
            nodes = nodes.exclude(session__lesson=besides_lesson)
        return nodes.count()

    @classmethod
    def room_for(cls, user, lesson) -> str:
        """"" if the learner may start the lesson's nodes, else why not."""
        limit = settings.LAB_NODES_PER_LEARNER
        used = cls.nodes_in_use(user, besides_lesson=lesson)
        if used + len(lesson.nodes) <= limit:
            return ""
        others = (cls.objects.filter(user=user).exclude(state=cls.STOPPED)
                  .exclude(lesson=lesson).select_related("lesson"))
        titles = ", ".join(f"“{s.lesson.title}”" for s in others)
        return (f"You can have {limit} lab machine{'s' if limit != 1 else ''} at a time and "
                f"{used} {'are' if used != 1 else 'is'} running ({titles}). "
                "Stop one of those labs first; your progress is kept.")

    def node1(self):
        return self.nodes.order_by("name").first()

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
        return (cls.objects.select_related("session", "session__lesson")
                .filter(pk=pk, session__user=user).first())

    @classmethod
    def watchable(cls, user, pk):
        """The node `pk` if `user` is an instructor of a classroom its owner is in, else None."""
        if user is None or not user.is_authenticated:
            return None
        node = cls.objects.select_related("session", "session__lesson", "session__user").filter(pk=pk).first()
        if node is None or not Classroom.teaching(user, node.session.user_id):
            return None
        return node

    @classmethod
    def visible(cls, user, pk):
        """The node `pk` if `user` owns it or teaches its owner (port links), else None."""
        return cls.owned(user, pk) or cls.watchable(user, pk)


class StepProgress(models.Model):
    PENDING, DONE = "pending", "done"
    STATES = [(PENDING, PENDING), (DONE, DONE)]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="step_progress")
    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="progress")
    state = models.CharField(max_length=10, choices=STATES, default=PENDING)
    message = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "step"],
                                               name="unique_progress_per_step")]

    @classmethod
    def record(cls, user, step, state: str | None, message: str) -> tuple:
        """Store a check result; returns (progress, changed).

        `state=None` means the check could not run: the state stays as it is
        and only the message changes. Done stays done (a learner who later
        removes their containers keeps the step). When it changed, the caller
        refreshes the classrooms' grids (broadcast.grid_rows_changed).
        """
        now = timezone.now()
        progress, _ = cls.objects.get_or_create(user=user, step=step)
        before = (progress.state, progress.message)
        if state == cls.DONE:
            if progress.state != cls.DONE:
                progress.done_at = now
            progress.state, progress.message = cls.DONE, ""
        elif state == cls.PENDING and progress.state != cls.DONE:
            progress.message = message
        elif state is None:
            progress.message = message
        progress.checked_at = now
        progress.save()
        changed = (progress.state, progress.message) != before
        if changed:
            LessonActivity.touch(user, step.lesson, now)
        return progress, changed

    @classmethod
    def states_for(cls, user, lesson) -> dict:
        """{step number: StepProgress} of this learner in this lesson."""
        if not user.is_authenticated:
            return {}
        rows = cls.objects.filter(user=user, step__lesson=lesson).select_related("step")
        return {p.step.number: p for p in rows}

    def event(self) -> dict:
        return {"type": "step", "step": self.step.number, "state": self.state,
                "message": self.message}


# ---- learners, instructors and classrooms ----------------------------------------------

INSTRUCTORS_GROUP = "instructors"


def is_instructor(user) -> bool:
    """Instructors are the members of the "instructors" group (granted in the admin)."""
    if user is None or not user.is_authenticated:
        return False
    return user.groups.filter(name=INSTRUCTORS_GROUP).exists()


class Profile(models.Model):
    """What the site knows about a user beyond Django's User: the guest flag."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="lab_profile")
    guest = models.BooleanField(default=False, help_text="Made by 'Try as a guest'; "
                                "becomes a normal account (with its progress) on sign-up.")

    def __str__(self):
        return f"{self.user} ({'guest' if self.guest else 'account'})"

    @classmethod
    def make_guest(cls):
        """A new user flagged guest, with no usable password."""
        import secrets

        from django.contrib.auth import get_user_model

        User = get_user_model()
        while True:
            name = "guest-" + secrets.token_hex(4)
            if not User.objects.filter(username=name).exists():
                break
        user = User.objects.create_user(name)
        user.set_unusable_password()
        user.save(update_fields=["password"])
        cls.objects.create(user=user, guest=True)
        return user

    @classmethod
    def stale_guests(cls, days: int):
        """Guest users nobody will come back to: made more than `days` ago,
        inactive in any lesson or lab session since, with no session that is
        still live, and in no classroom (an instructor may still want their
        progress)."""
        from django.contrib.auth import get_user_model

        cutoff = timezone.now() - timezone.timedelta(days=days)
        live = [LabSession.STARTING, LabSession.READY, LabSession.QUEUED]
        return (get_user_model().objects
                .filter(lab_profile__guest=True, date_joined__lt=cutoff)
                .exclude(lesson_activity__last__gte=cutoff)
                .exclude(lab_sessions__updated__gte=cutoff)
                .exclude(lab_sessions__state__in=live)
                .exclude(memberships__isnull=False)
                .distinct())


def is_guest(user) -> bool:
    if user is None or not user.is_authenticated:
        return False
    return Profile.objects.filter(user=user, guest=True).exists()


class LessonActivity(models.Model):
    """When a learner began a lesson and was last active in it (for the dashboard and
    the time spent on a step). Kept apart from nodes: nodes come and go, this stays."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="lesson_activity")
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="activity")
    started = models.DateTimeField(default=timezone.now)
    last = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "lesson activity"
        constraints = [models.UniqueConstraint(fields=["user", "lesson"],
                                               name="unique_activity_per_lesson")]

    @classmethod
    def touch(cls, user, lesson, when=None):
        when = when or timezone.now()
        row, created = cls.objects.get_or_create(user=user, lesson=lesson,
                                                 defaults={"started": when, "last": when})
        if not created and row.last < when:
            cls.objects.filter(pk=row.pk).update(last=when)
            row.last = when
        return row


def lesson_progress(user, lessons=None) -> list:
    """The dashboard: one dict per lesson with done/total, last activity and where to resume."""
    lessons = list(lessons if lessons is not None else Lesson.objects.all())
    steps = {}
    for step in Step.objects.filter(lesson__in=lessons).order_by("number"):
        steps.setdefault(step.lesson_id, []).append(step)
    done = set(StepProgress.objects.filter(user=user, step__lesson__in=lessons,
                                           state=StepProgress.DONE).values_list("step_id", flat=True))
    activity = {a.lesson_id: a for a in LessonActivity.objects.filter(user=user, lesson__in=lessons)}
    rows = []
    for lesson in lessons:
        lesson_steps = steps.get(lesson.pk, [])
        resume = next((s for s in lesson_steps if s.pk not in done), None)
        act = activity.get(lesson.pk)
        rows.append({"lesson": lesson, "total": len(lesson_steps),
                     "done": sum(1 for s in lesson_steps if s.pk in done),
                     "resume": resume.number if resume else None,
                     "last": act.last if act else None,
                     "started": act.started if act else None})
    return rows


def _join_code() -> str:
    import secrets
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # nothing that reads as another character
    return "".join(secrets.choice(alphabet) for _ in range(8))


class Classroom(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="classrooms_taught")
    name = models.CharField(max_length=200)
    lessons = models.ManyToManyField(Lesson, related_name="classrooms")
    starts = models.DateTimeField()
    ends = models.DateTimeField()
    code = models.CharField(max_length=12, unique=True, default=_join_code)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-starts"]

    def __str__(self):
        return f"{self.name} ({self.code})"

    def is_open(self, when=None) -> bool:
        """Learners can join from a while before the start until the end."""
        when = when or timezone.now()
        return when <= self.ends

    def join(self, user) -> "Membership":
        membership, _ = Membership.objects.get_or_create(classroom=self, user=user)
        return membership

    def learners(self):
        from django.contrib.auth import get_user_model
        return (get_user_model().objects.filter(memberships__classroom=self)
                .order_by("memberships__joined", "username"))

    def has_learner(self, user_id) -> bool:
        return Membership.objects.filter(classroom=self, user_id=user_id).exists()

    @classmethod
    def taught_by(cls, user):
        if not is_instructor(user):
            return cls.objects.none()
        return cls.objects.filter(owner=user)

    @classmethod
    def for_instructor(cls, user, pk):
        """The classroom `pk` if `user` is an instructor who owns it, else None."""
        return cls.taught_by(user).filter(pk=pk).first()

    @classmethod
    def teaching(cls, instructor, learner_id) -> bool:
        """Whether `instructor` owns a classroom `learner_id` is in."""
        return cls.taught_by(instructor).filter(memberships__user_id=learner_id).exists()

    def ordered_lessons(self) -> list:
        return list(self.lessons.order_by("order", "slug"))

    # -- the grid ----------------------------------------------------------------

    def learner_row(self, user, lessons=None, now=None) -> dict:
        """One learner's row of the live grid: every cell, the current step and since when.

        The current step is the first not-done step of the lesson the learner
        was active in last; `since` is when the step before it was done (or
        when the learner began the lesson).
        """
        lessons = lessons if lessons is not None else self.ordered_lessons()
        membership = Membership.objects.filter(classroom=self, user=user).first()
        progress = {p.step_id: p for p in StepProgress.objects.filter(
            user=user, step__lesson__in=lessons)}
        activity = {a.lesson_id: a for a in LessonActivity.objects.filter(user=user, lesson__in=lessons)}
        sessions = {s.lesson_id: s for s in LabSession.objects.filter(
            user=user, lesson__in=lessons).exclude(state=LabSession.STOPPED).prefetch_related("nodes")}
        cells, currents = {}, []
        for lesson in lessons:
            act = activity.get(lesson.pk)
            since = act.started if act else None
            current = None
            for step in lesson.steps.all():
                p = progress.get(step.pk)
                state = p.state if p else StepProgress.PENDING
                cells[f"{lesson.slug}:{step.number}"] = {
                    "state": state, "done_at": p.done_at.isoformat() if p and p.done_at else None,
                    "message": (p.message[:200] if p and state != StepProgress.DONE else "")}
                if state == StepProgress.DONE and p.done_at:
                    since = max(since, p.done_at) if since else p.done_at
                elif current is None and act is not None:
                    current = {"lesson": lesson.slug, "step": step.number, "since": since}
            if current is not None:
                currents.append((act.last, current))
        current = None
        if currents:
            current = max(currents, key=lambda pair: pair[0])[1]
            current["since"] = (current["since"] or timezone.now()).isoformat()
        last_seen = max((a.last for a in activity.values()), default=None)
        nodes = []
        for lesson in lessons:
            session = sessions.get(lesson.pk)
            if session is not None:
                nodes += [{"id": n.pk, "name": n.name, "lesson": lesson.slug, "state": n.state}
                          for n in session.nodes.all()]
        return {"user": user.pk, "name": user.username, "guest": is_guest(user),
                "hand": membership.hand_raised.isoformat() if membership and membership.hand_raised else None,
                "cells": cells, "current": current, "nodes": nodes,
                "last_seen": last_seen.isoformat() if last_seen else None}

    def grid(self) -> dict:
        lessons = self.ordered_lessons()
        columns = [{"lesson": lesson.slug, "title": lesson.title,
                    "steps": [{"number": s.number, "title": s.title} for s in lesson.steps.all()]}
                   for lesson in lessons]
        rows = [self.learner_row(user, lessons) for user in self.learners()]
        return {"classroom": self.pk, "name": self.name, "columns": columns, "rows": rows,
                "stuck_seconds": settings.LAB_STUCK_MINUTES * 60,
                "now": timezone.now().isoformat(), "stats": self.stats(lessons)}

    def durations(self, lessons=None) -> dict:
        """{(user id, slug, step number): seconds the learner took for the step}.

        A step's time runs from the end of the step done before it (or, for the
        first, from when the learner began the lesson) to its own end.
        """
        lessons = lessons if lessons is not None else self.ordered_lessons()
        learners = list(self.learners().values_list("pk", flat=True))
        started = {(a.user_id, a.lesson_id): a.started for a in
                   LessonActivity.objects.filter(user_id__in=learners, lesson__in=lessons)}
        done = {(p.user_id, p.step_id): p.done_at for p in StepProgress.objects.filter(
            user_id__in=learners, step__lesson__in=lessons, state=StepProgress.DONE,
            done_at__isnull=False)}
        found = {}
        for lesson in lessons:
            steps = list(lesson.steps.all())
            for user_id in learners:
                previous = started.get((user_id, lesson.pk))
                finished = sorted((done[(user_id, s.pk)], s.number) for s in steps
                                  if (user_id, s.pk) in done)
                for at, number in finished:
                    if previous is not None:
                        found[(user_id, lesson.slug, number)] = max(0.0, (at - previous).total_seconds())
                    previous = at
        return found

    def stats(self, lessons=None) -> dict:
        """Completion per step (a funnel) and the median time per step, for the charts."""
        import statistics

        lessons = lessons if lessons is not None else self.ordered_lessons()
        learners = self.learners().count()
        times = {}
        for (_, slug, number), seconds in self.durations(lessons).items():
            times.setdefault((slug, number), []).append(seconds)
        counts = {}
        for row in (StepProgress.objects.filter(user__memberships__classroom=self,
                                                step__lesson__in=lessons, state=StepProgress.DONE)
                    .values("step__lesson__slug", "step__number").annotate(n=models.Count("id"))):
            counts[(row["step__lesson__slug"], row["step__number"])] = row["n"]
        steps = []
        for lesson in lessons:
            for step in lesson.steps.all():
                key = (lesson.slug, step.number)
                spent = times.get(key, [])
                steps.append({"lesson": lesson.slug, "step": step.number, "title": step.title,
                              "done": counts.get(key, 0), "learners": learners,
                              "median_seconds": round(statistics.median(spent), 1) if spent else None})
        return {"learners": learners, "steps": steps}

    CSV_HEADER = ["learner", "guest", "joined", "lesson", "step", "title", "state", "done_at",
                  "seconds_on_step"]

    def csv_rows(self):
        """The class's progress, one row per learner and step (header first)."""
        lessons = self.ordered_lessons()
        durations = self.durations(lessons)
        joined = dict(Membership.objects.filter(classroom=self).values_list("user_id", "joined"))
        guests = set(Profile.objects.filter(guest=True).values_list("user_id", flat=True))
        yield list(self.CSV_HEADER)
        for user in self.learners():
            done = {p.step_id: p for p in StepProgress.objects.filter(user=user, step__lesson__in=lessons)}
            for lesson in lessons:
                for step in lesson.steps.all():
                    p = done.get(step.pk)
                    seconds = durations.get((user.pk, lesson.slug, step.number))
                    yield [user.username, "yes" if user.pk in guests else "no",
                           joined[user.pk].isoformat(), lesson.slug, step.number, step.title,
                           p.state if p else StepProgress.PENDING,
                           p.done_at.isoformat() if p and p.done_at and p.state == StepProgress.DONE else "",
                           round(seconds) if seconds is not None else ""]


class Membership(models.Model):
    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="memberships")
    joined = models.DateTimeField(auto_now_add=True)
    # A raised hand (from the lesson page), lowered by the learner or the instructor.
    hand_raised = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["classroom", "joined"]
        constraints = [models.UniqueConstraint(fields=["classroom", "user"],
                                               name="unique_membership")]

    def __str__(self):
        return f"{self.user} in {self.classroom}"


class ClassMessage(models.Model):
    """A message from the instructor to the whole class (to_user empty) or one learner."""

    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="messages")
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                               related_name="+")
    to_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True,
                                blank=True, related_name="class_messages")
    text = models.TextField(max_length=2000)
    sent = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sent"]

    def event(self) -> dict:
        return {"type": "message", "text": self.text, "from": self.sender.username,
                "classroom": self.classroom.name, "to_all": self.to_user_id is None,
                "sent": self.sent.isoformat()}

    @classmethod
    def recent_for(cls, user, hours: int = 3) -> list:
        since = timezone.now() - timezone.timedelta(hours=hours)
        return list(cls.objects.filter(classroom__memberships__user=user, sent__gte=since)
                    .filter(models.Q(to_user=None) | models.Q(to_user=user))
                    .select_related("sender", "classroom").distinct()[:5])
