"""Prove each lesson's checks on fresh nodes: fail before the step, pass after its solve."""
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from labs.courses import verify
from labs.courses.lessons import LessonError, load_lessons


class Command(BaseCommand):
    help = ("For every step of every lesson (or the named ones), on fresh nodes: the check "
            "fails, the solve runs, the check passes. Ends with 'N passed, N failed'.")

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="*", help="lessons to verify (default: all)")
        parser.add_argument("--dir", default=str(settings.LESSONS_DIR),
                            help="directory of lesson directories (default: %(default)s)")

    def handle(self, *args, **options):
        try:
            lessons = verify.select(load_lessons(options["dir"]), options["slugs"])
        except (LessonError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        started = time.monotonic()

        def write(line):
            style = self.style.SUCCESS if line.startswith("PASS") else self.style.ERROR
            self.stdout.write(style(line))
            self.stdout.flush()

        results = verify.run(lessons, write=write)
        self.stderr.write(f"verified {len(lessons)} lesson(s) in "
                          f"{time.monotonic() - started:.0f}s")
        self.stdout.write(verify.summary(results))
        if not results or not all(r.ok for r in results):
            raise SystemExit(1)
