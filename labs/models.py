"""Lessons, learners' lab sessions and their progress.

Behaviour lives here (fat models): views, consumers and tasks call these
methods rather than poking at fields.
"""
from __future__ import annotations

import logging

import markdown
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

log = logging.getLogger(__name__)


def render_markdown(text: str) -> str:
    return markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists"],
                             output_format="html")


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
                values = {"name": step_def.name, "title": step_def.title,
                          "body_html": render_markdown(step_def.text),
                          "check_script": step_def.check, "solve_script": step_def.solve,
                          "setup_script": step_def.setup}
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
            return lesson, changed or bool(removed)


class Step(models.Model):
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="steps")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    title = models.CharField(max_length=200)
    body_html = models.TextField()
    check_script = models.TextField()
    solve_script = models.TextField(blank=True)
    setup_script = models.TextField(blank=True)

    class Meta:
        ordering = ["lesson", "number"]
        constraints = [models.UniqueConstraint(fields=["lesson", "number"],
                                               name="unique_step_number")]

    def __str__(self):
        return f"{self.lesson.slug} step {self.number}: {self.title}"


class LabSession(models.Model):
    STARTING, READY, FAILED, STOPPED = "starting", "ready", "failed", "stopped"
    STATES = [(s, s) for s in (STARTING, READY, FAILED, STOPPED)]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="lab_sessions")
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="sessions")
    state = models.CharField(max_length=10, choices=STATES, default=STARTING)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.runtime_name} {self.user} {self.lesson.slug} {self.state}"

    @property
    def runtime_name(self) -> str:
        """The session name the runtime knows this session by."""
        return f"{settings.LAB_SESSION_PREFIX}{self.pk}"

    @property
    def group_name(self) -> str:
        return learner_group(self.user_id, self.lesson.slug)

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
                session = cls.objects.create(user=user, lesson=lesson, state=cls.STARTING)
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
            for node in nodes:
                if node.state != LabNode.READY:
                    node.state, node.error = LabNode.STARTING, ""
                    node.save(update_fields=["state", "error"])
            return session, True

    def mark(self, state: str, error: str = ""):
        self.state, self.error = state, error
        self.save(update_fields=["state", "error", "updated"])

    def node1(self):
        return self.nodes.order_by("name").first()

    def event(self) -> dict:
        """The JSON the lesson socket sends about this session."""
        node = self.node1()
        return {"type": "session", "state": self.state, "error": self.error,
                "node": node.pk if node else None}


def learner_group(user_id, slug: str) -> str:
    return f"learner-{user_id}-{slug}"[:99]


class LabNode(models.Model):
    STARTING, READY, FAILED, STOPPED = "starting", "ready", "failed", "stopped"
    STATES = [(s, s) for s in (STARTING, READY, FAILED, STOPPED)]

    session = models.ForeignKey(LabSession, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=31, default="node1")
    runtime_id = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=10, choices=STATES, default=STARTING)
    error = models.TextField(blank=True)

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
        removes their containers keeps the step).
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
        return progress, (progress.state, progress.message) != before

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
