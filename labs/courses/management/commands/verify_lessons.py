"""Prove each lesson's checks on fresh nodes: fail before the step, keep failing after
each cheat, pass after its solve and after each variant.

    manage.py verify_lessons                      every lesson
    manage.py verify_lessons LESSON [LESSON ...]  those lessons
    manage.py verify_lessons LESSON STEP          one step (number or name), after
                                                  solving the steps before it
"""
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from labs.courses import verify
from labs.courses.lessons import LessonError, load_lessons


class Command(BaseCommand):
    help = ("For every step of every lesson (or the named ones, or one step), on fresh nodes: "
            "the check fails, keeps failing after each cheat, passes after the solve and after "
            "each variant. Ends with 'steps: S, variants: V, cheats: C' and 'N passed, N failed'.")

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="*", metavar="LESSON [STEP]",
                            help="lessons to verify (default: all), or one lesson and one step")
        parser.add_argument("--dir", default=str(settings.LESSONS_DIR),
                            help="directory of lesson directories (default: %(default)s)")

    def handle(self, *args, **options):
        slugs, only_step = list(options["slugs"]), None
        try:
            every = load_lessons(options["dir"])
            known = {lesson.slug for lesson in every}
            if len(slugs) == 2 and slugs[0] in known and slugs[1] not in known:
                lessons = verify.select(every, slugs[:1])
                only_step = verify.select_step(lessons[0], slugs[1])
            else:
                lessons = verify.select(every, slugs)
        except (LessonError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        started = time.monotonic()

        def write(line):
            style = self.style.SUCCESS if line.startswith("PASS") else self.style.ERROR
            self.stdout.write(style(line))
            self.stdout.flush()

        results = verify.run(lessons, write=write, only_step=only_step)
        self.stderr.write(f"verified {len(lessons)} lesson(s) in "
                          f"{time.monotonic() - started:.0f}s")
        self.stdout.write(verify.summary(results))
        if not results or not all(r.ok for r in results):
            raise SystemExit(1)
