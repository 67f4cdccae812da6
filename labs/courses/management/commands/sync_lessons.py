"""Load lesson directories and sync them into Lesson/Step rows (idempotent)."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from labs.courses.lessons import LessonError, load_lessons
from labs.courses.models import Lesson


class Command(BaseCommand):
    help = "Validate lessons under LESSONS_DIR and sync them into the database."

    def add_arguments(self, parser):
        parser.add_argument("--dir", default=str(settings.LESSONS_DIR),
                            help="directory of lesson directories (default: %(default)s)")
        parser.add_argument("--check", action="store_true",
                            help="only validate the lessons; change nothing")

    def handle(self, *args, **options):
        try:
            lessons = load_lessons(options["dir"])
        except LessonError as exc:
            raise CommandError(str(exc)) from None
        if options["check"]:
            self.stdout.write(f"{len(lessons)} lesson(s) valid")
            return
        for lesson_def in lessons:
            lesson, changed = Lesson.sync_from(lesson_def)
            word = "updated" if changed else "unchanged"
            self.stdout.write(f"{lesson.slug}: {word} ({len(lesson_def.steps)} steps)")
        # Lessons whose directory is gone stay (learners' progress refers to
        # them), but say so.
        known = {d.slug for d in lessons}
        for stale in Lesson.objects.exclude(slug__in=known):
            self.stdout.write(self.style.WARNING(f"{stale.slug}: in the database but no "
                                                 "directory on disk (left as is)"))
