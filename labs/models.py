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
        """The JSON the lesson socket sends about this session.

        `node` is node1's id (kept for pages and clients that know one node);
        `nodes` lists every node with its published ports.
        """
        nodes = list(self.nodes.order_by("name"))
        return {"type": "session", "state": self.state, "error": self.error,
                "node": nodes[0].pk if nodes else None,
                "nodes": [n.summary() for n in nodes]}


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
