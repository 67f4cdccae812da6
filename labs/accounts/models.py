"""What the site knows about people beyond Django's User: instructors and guests."""
from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, models, transaction

INSTRUCTORS_GROUP = "instructors"


def is_instructor(user) -> bool:
    """Instructors are the members of the "instructors" group (granted in the admin)."""
    if user is None or not user.is_authenticated:
        return False
    if getattr(user, "made_guest", False):  # (made by this request: see make_guest)
        return False
    return user.groups.filter(name=INSTRUCTORS_GROUP).exists()


class Profile(models.Model):
    """What the site knows about a user beyond Django's User: the guest flag."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="lab_profile")
    guest = models.BooleanField(default=False, help_text="Made by 'Try as a guest'; "
                                "becomes a normal account (with its progress) on sign-up.")

    class Meta:
        db_table = "labs_profile"

    def __str__(self):
        return f"{self.user} ({'guest' if self.guest else 'account'})"

    @classmethod
    def make_guest(cls):
        """A new user flagged guest, with no usable password."""
        User = get_user_model()
        while True:
            # A name taken already (rare) fails the insert: try another. No
            # query first to look, since a class joins at once.
            try:
                with transaction.atomic():
                    # No password: create_user marks it unusable, and no hash
                    # is computed (a class of forty joining at once costs no PBKDF2).
                    user = User.objects.create_user("guest-" + secrets.token_hex(4))
                break
            except IntegrityError:
                continue
        cls.objects.create(user=user, guest=True)
        # The join link's page asks what this user is: a guest, and nothing
        # else yet (two queries fewer for each learner of a class arriving).
        user.made_guest = True
        return user


def is_guest(user) -> bool:
    if user is None or not user.is_authenticated:
        return False
    if getattr(user, "made_guest", False):
        return True
    return Profile.objects.filter(user=user, guest=True).exists()

