"""A database made before labs/ became four apps opens after it, rows and all.

Rolls the test database back to the last one-app migration (labs 0004), writes
rows through that state's models, migrates forward, and reads them through the
apps' models. The split is state only, so no table may change on the way.
"""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("labs", "0004_session_queue")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _tables():
    with connection.cursor() as cursor:
        return sorted((t, tuple(c.name for c in connection.introspection.get_table_description(cursor, t)))
                      for t in connection.introspection.table_names(cursor) if t.startswith("labs_"))


def test_a_database_from_before_the_split_keeps_its_rows():
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    tables_after = _tables()
    old = _migrate(BEFORE)
    assert _tables() == tables_after  # going back touched no table either
    User = old.get_model("auth", "User")
    ada = User.objects.create(username="ada-old")
    iris = User.objects.create(username="iris-old")
    lesson = old.get_model("labs", "Lesson").objects.create(slug="old-lesson", title="Old")
    step = old.get_model("labs", "Step").objects.create(lesson=lesson, number=1, name="one",
                                                        title="One", body_html="<p>1</p>")
    old.get_model("labs", "StepProgress").objects.create(user=ada, step=step, state="done")
    session = old.get_model("labs", "LabSession").objects.create(user=ada, lesson=lesson,
                                                                 state="ready")
    old.get_model("labs", "LabNode").objects.create(session=session, name="node1", state="ready")
    now = timezone.now()
    room = old.get_model("labs", "Classroom").objects.create(
        owner=iris, name="Monday", starts=now, ends=now + timezone.timedelta(hours=2), code="OLDROOM1")
    room.lessons.add(lesson)
    old.get_model("labs", "Membership").objects.create(classroom=room, user=ada)
    old.get_model("labs", "Profile").objects.create(user=ada, guest=True)

    _migrate(leaves)

    from labs.accounts.models import is_guest
    from labs.classrooms.models import Classroom
    from labs.courses.models import StepProgress
    from labs.sandboxes.models import LabNode
    assert _tables() == tables_after
    assert StepProgress.objects.get(user__username="ada-old").step.lesson.slug == "old-lesson"
    assert LabNode.objects.get(session__user__username="ada-old").session.lesson.slug == "old-lesson"
    room = Classroom.objects.get(code="OLDROOM1")
    assert [u.username for u in room.learners()] == ["ada-old"]
    assert [lesson.slug for lesson in room.lessons.all()] == ["old-lesson"]
    assert is_guest(StepProgress.objects.get(user__username="ada-old").user)


def test_the_models_and_their_migrations_agree():
    """A model change without its migration would reach an operator's database as a crash."""
    import io

    from django.core.management import call_command
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:  # --check exits 1 when a migration is missing
        pytest.fail(f"a model change has no migration (exit {exc.code}):\n{out.getvalue()}")
