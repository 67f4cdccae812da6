"""Classrooms: an instructor's class, its learners, and the instructor's messages.

The live grid, charts and CSV are built in reports.py; who may watch which
node is decided in access.py.
"""
from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.utils import timezone

from labs.accounts.models import is_instructor
from labs.courses.models import Lesson


def _join_code() -> str:
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
    # Learners the instructor expects: before they join, the warm pool is
    # sized from this (labs/sandboxes/pools.py); 0: from who has joined.
    # db_default: rows written by older code (and the migrations test) lack it.
    seats = models.PositiveIntegerField(default=0, db_default=0, blank=True, help_text="Learners expected; ready machines "
                                        "are prepared for them before the start.")

    class Meta:
        db_table = "labs_classroom"
        ordering = ["-starts"]

    def __str__(self):
        return f"{self.name} ({self.code})"

    def is_open(self, when=None) -> bool:
        """Learners can join from a while before the start until the end."""
        when = when or timezone.now()
        return when <= self.ends

    def join(self, user, new_user: bool = False) -> "Membership":
        """`user`'s membership, made if needed (new_user: one made in this
        request, so it has none: no query to look)."""
        if new_user:
            return Membership.objects.create(classroom=self, user=user)
        membership, _ = Membership.objects.get_or_create(classroom=self, user=user)
        return membership

    def learners(self):
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


class Membership(models.Model):
    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="memberships")
    joined = models.DateTimeField(auto_now_add=True)
    # A raised hand (from the lesson page), lowered by the learner or the instructor.
    hand_raised = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "labs_membership"
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
        db_table = "labs_classmessage"
        ordering = ["-sent"]

    def event(self) -> dict:
        return {"type": "message", "text": self.text, "from": self.sender.username,
                "classroom": self.classroom.name, "to_all": self.to_user_id is None,
                "sent": self.sent.isoformat()}

    @classmethod
    def recent_in(cls, room, hours: int = 3) -> list:
        """The messages to everyone in `room` of the last `hours`."""
        since = timezone.now() - timezone.timedelta(hours=hours)
        return list(cls.objects.filter(classroom=room, to_user=None, sent__gte=since)
                    .select_related("sender", "classroom")[:5])

    @classmethod
    def recent_for(cls, user, hours: int = 3) -> list:
        since = timezone.now() - timezone.timedelta(hours=hours)
        return list(cls.objects.filter(classroom__memberships__user=user, sent__gte=since)
                    .filter(models.Q(to_user=None) | models.Q(to_user=user))
                    .select_related("sender", "classroom").distinct()[:5])
