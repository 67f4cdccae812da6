"""Grant (or take back) the instructor role from the shell; the admin does the same.

    python manage.py instructor USERNAME [--remove]
"""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from labs.accounts.models import INSTRUCTORS_GROUP


class Command(BaseCommand):
    help = "Make a user an instructor (a member of the 'instructors' group), or --remove it."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--remove", action="store_true")

    def handle(self, username, remove=False, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}: sign up first, or create one with createsuperuser")
        group, _ = Group.objects.get_or_create(name=INSTRUCTORS_GROUP)
        if remove:
            user.groups.remove(group)
            self.stdout.write(f"{username} is no longer an instructor")
        else:
            user.groups.add(group)
            self.stdout.write(f"{username} is an instructor")
