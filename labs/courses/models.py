"""Lessons, their steps and files, and each learner's progress through them.

Behaviour lives here (fat models): views, consumers and tasks call these
methods rather than poking at fields. The tables keep the names they had when
everything lived in one `labs` app (Meta.db_table), so a database made before the
split opens as it is (see labs/migrations/0005).
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
    if callable(content):  # labs.courses.lessons.FileDef reads its source file
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
        db_table = "labs_lesson"
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
        db_table = "labs_step"
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

        Right marks the step done. Wrong leaves it as it is, with a message that
        says only that (and which choice was picked): the explanation names the
        answer, so it comes with a right answer or with reveal(). Anything that
        is not one of the choices counts as wrong.
        """
        index = self.choice_index(choice)
        right = self.is_quiz and index == self.quiz_answer
        if right:
            progress, changed = StepProgress.record(user, self, StepProgress.DONE, "")
        else:
            if index is None:
                message = "Not quite. Pick one of the answers."
            else:
                message = f"Not quite. “{self.quiz_choices[index]}” is not the right answer."
            progress, changed = StepProgress.record(user, self, StepProgress.PENDING, message)
        return right, progress, changed

    def choice_index(self, choice) -> int | None:
        """The 0-based index a submitted choice names, or None if it names no choice."""
        try:
            index = int(choice)
        except (TypeError, ValueError):
            return None
        return index if 0 <= index < len(self.quiz_choices) else None

    def solution(self) -> dict:
        """The right choice and why: for a right answer, or a learner who gives up."""
        return {"answer": self.quiz_answer, "choice": self.quiz_choices[self.quiz_answer],
                "explain": self.quiz_explain}

    def reveal(self, user) -> tuple:
        """A learner gives up on this quiz step; returns (progress, changed).

        Nothing is marked done: the step stays pending, with the right choice and
        the explanation as its message (so it survives a reload and a teacher's
        grid shows it). Choosing that answer afterwards marks the step done like
        any right answer. A step already done stays done.
        """
        solution = self.solution()
        message = f"The answer is “{solution['choice']}”."
        if solution["explain"]:
            message += " " + solution["explain"]
        return StepProgress.record(user, self, StepProgress.PENDING, message)


class LessonFile(models.Model):
    """A file the lesson places in one of its nodes before the node starts."""

    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="files")
    node = models.CharField(max_length=31, default="node1")
    path = models.CharField(max_length=500)  # absolute, inside the node
    mode = models.PositiveIntegerField(default=0o644)
    content = models.BinaryField()

    class Meta:
        db_table = "labs_lessonfile"
        ordering = ["lesson", "node", "path"]
        constraints = [models.UniqueConstraint(fields=["lesson", "node", "path"],
                                               name="unique_lesson_file")]

    def __str__(self):
        return f"{self.lesson.slug}:{self.node}:{self.path}"


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
    # Checks that failed while this was the learner's current step (one per
    # attempt: labs/sandboxes/tasks.py), and when the latest did.
    failed_checks = models.PositiveIntegerField(default=0, db_default=0)  # old code paths insert without it
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "labs_stepprogress"
        constraints = [models.UniqueConstraint(fields=["user", "step"],
                                               name="unique_progress_per_step")]

    @classmethod
    def record(cls, user, step, state: str | None, message: str) -> tuple:
        """Store a check result; returns (progress, changed).

        `state=None` means the check could not run: the state stays as it is
        and only the message changes. Done stays done (a learner who later
        removes their containers keeps the step). When it changed, the caller
        refreshes the classrooms' grids (broadcast.grid_rows_changed).

        A result that changes nothing writes nothing: with a class checking at
        once, every write waits its turn for the database, and most check runs
        only confirm what the row says (run_checks then stamps checked_at on
        all of those in one write, `mark_checked`).
        """
        now = timezone.now()
        done = state == cls.DONE
        progress, created = cls.objects.get_or_create(user=user, step=step, defaults={
            "state": cls.DONE if done else cls.PENDING, "message": "" if done else message,
            "done_at": now if done else None, "checked_at": now})
        if created:
            changed = (progress.state, progress.message) != (cls.PENDING, "")
        else:
            before = (progress.state, progress.message)
            if done:
                if progress.state != cls.DONE:
                    progress.done_at = now
                progress.state, progress.message = cls.DONE, ""
            elif state == cls.PENDING and progress.state != cls.DONE:
                progress.message = message
            elif state is None:
                progress.message = message
            changed = (progress.state, progress.message) != before
            if changed:
                progress.checked_at = now
                progress.save(update_fields=["state", "message", "done_at", "checked_at"])
        if changed:
            LessonActivity.touch(user, step.lesson, now)
        return progress, changed

    @classmethod
    def mark_checked(cls, user, step_ids, when=None) -> None:
        """Stamp checked_at on steps a check run looked at without changing them."""
        if step_ids:
            cls.objects.filter(user=user, step_id__in=list(step_ids)).update(
                checked_at=when or timezone.now())

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




class LessonActivity(models.Model):
    """When a learner began a lesson and was last active in it (for the dashboard and
    the time spent on a step). Kept apart from nodes: nodes come and go, this stays."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="lesson_activity")
    lesson = models.ForeignKey(Lesson, on_delete=models.CASCADE, related_name="activity")
    started = models.DateTimeField(default=timezone.now)
    last = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "labs_lessonactivity"
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

