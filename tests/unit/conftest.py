"""Unit-test wiring: fake runtime driver, in-memory channel layer, eager Celery.

Everything here is a fixture scoped to tests/unit, so the integration and
browser suites (real driver, Redis, worker) keep the settings as configured.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings as django_settings

import runtime
from runtime.fakedriver import FakeDriver

# A frozen two-step copy of the first lesson: the real one under labs/courses/content
# grows as the course is written, and these tests are about the site, not the course.
CONTENT_DIR = Path(__file__).resolve().parent / "lessons"
ORIGIN = b"http://localhost"


@pytest.fixture(autouse=True)
def unit_settings(settings, monkeypatch, request):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.LAB_DRIVER = "fake"
    # Engine-event watchers add exec calls of their own; the tests about them turn them on.
    settings.LAB_WATCH_ENGINE_EVENTS = False
    # The site's password hasher is slow on purpose (PBKDF2 at Django's count,
    # about half a second here), and nearly every test makes users or logs
    # them in: the hashers' own tests (marked real_hashers) keep it.
    if request.node.get_closest_marker("real_hashers") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setenv("LAB_DRIVER", "fake")
    from labs.celery import app

    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield settings
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path_factory, monkeypatch):
    """The runtime's directory of a unit test: its own, never the machine's
    /var/lib/dockerlab (a start wakes the recorder there, for one)."""
    path = tmp_path_factory.mktemp("runtime")
    monkeypatch.setenv("LAB_RUNTIME_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def fake_driver(monkeypatch):
    """A fresh in-memory driver per test, returned by runtime.get_driver()."""
    driver = FakeDriver()
    monkeypatch.setitem(runtime._drivers, "fake", driver)
    return driver


@pytest.fixture
def lesson(db):
    """The first-containers lesson (tests/unit/lessons copy: two steps), synced."""
    from labs.courses.lessons import load_lesson
    from labs.courses.models import Lesson

    lesson, _ = Lesson.sync_from(load_lesson(CONTENT_DIR / "first-containers"))
    return lesson


@pytest.fixture
def ada(django_user_model, db):
    """Ada is the learner doing the lesson."""
    return django_user_model.objects.create_user("ada", password="correct horse battery")


@pytest.fixture
def bob(django_user_model, db):
    """Bob is another learner; he must never reach Ada's machine."""
    return django_user_model.objects.create_user("bob", password="another horse battery")


@pytest.fixture
def ws_headers():
    """ws_headers(user=None) -> headers for a WebsocketCommunicator: an allowed
    Origin, plus the session cookie of `user` logged in through a test client
    of its own (one shared client would log the previous user out)."""
    from django.test import Client

    def make(user=None) -> list:
        headers = [(b"origin", ORIGIN)]
        if user is not None:
            client = Client()
            client.force_login(user)
            name = django_settings.SESSION_COOKIE_NAME
            headers.append((b"cookie", f"{name}={client.cookies[name].value}".encode()))
        return headers
    return make


def started_session(user, lesson):
    """`user`'s new session of `lesson`, its nodes started (on the fake driver)."""
    from labs.sandboxes import tasks
    from labs.sandboxes.models import LabSession

    session, needs_start = LabSession.ensure_for(user, lesson)
    assert needs_start
    assert tasks.start_session(session.pk) == LabSession.READY
    session.refresh_from_db()
    return session


@pytest.fixture
def ready_session(lesson, ada, fake_driver):
    """Ada's session for the lesson with node1 started on the fake driver."""
    return started_session(ada, lesson)


def make_lesson_def(tmp_path, slug="two-nodes", nodes=("node1", "node2"), steps=(), files=()):
    """A LessonDef-shaped object for tests that need lesson features first-containers lacks.

    steps: dicts with number, name, node and either check or quiz=(question, choices, answer, explain).
    files: (node, absolute path, source relative to the lesson dir, content bytes, mode).
    """
    from types import SimpleNamespace as NS

    lesson_dir = tmp_path / slug
    lesson_dir.mkdir(parents=True, exist_ok=True)
    file_defs = []
    for node, path, source, content, mode in files:
        (lesson_dir / source).parent.mkdir(parents=True, exist_ok=True)
        (lesson_dir / source).write_bytes(content)
        file_defs.append(NS(node=node, path=path, source=source, mode=mode))
    step_defs = []
    for s in steps:
        quiz = s.get("quiz")
        step_defs.append(NS(number=s["number"], name=s["name"], title=s.get("title", s["name"]),
                            text=s.get("text", "Do it:\n\n```sh\ndocker info\n```\n"),
                            check=s.get("check", ""), solve=s.get("solve", ""), setup="",
                            node=s.get("node", "node1"),
                            quiz=NS(question=quiz[0], choices=tuple(quiz[1]), answer=quiz[2],
                                    explain=quiz[3]) if quiz else None))
    return NS(slug=slug, title=slug.replace("-", " ").capitalize(), summary="A test lesson.",
              minutes=5, order=9, nodes=tuple(nodes), images=(), steps=tuple(step_defs),
              files=tuple(file_defs), path=str(lesson_dir))


@pytest.fixture
def two_node_lesson(db, tmp_path):
    """A swarm-like lesson: a quiz, a step on node1, a step on node2, and files for both."""
    from labs.courses.models import Lesson

    lesson_def = make_lesson_def(tmp_path, steps=[
        {"number": 1, "name": "01-idea", "quiz": ("Which node runs the manager?",
                                                 ["node2", "node1", "neither"], 1,
                                                 "The swarm is initialised on node1, so node1 manages it.")},
        {"number": 2, "name": "02-init", "node": "node1", "check": "docker node ls # on node1\n"},
        {"number": 3, "name": "03-join", "node": "node2", "check": "docker info # on node2\n",
         "text": "Join:\n\n```sh\ndocker swarm join --token <token> node1:2377\n```\n"},
    ], files=[
        ("node1", "/root/app/Dockerfile", "files/Dockerfile", b"FROM nginx\n", 0o644),
        ("node1", "/root/app/run.sh", "files/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ("node2", "/root/app/linux.png", "files/linux.png", b"\x89PNG\r\n\x1a\n\x00\xff", 0o644),
    ])
    lesson, _ = Lesson.sync_from(lesson_def)
    return lesson


@pytest.fixture
def two_node_session(two_node_lesson, ada, fake_driver):
    """Ada's session of the two-node lesson, both nodes started on the fake driver."""
    return started_session(ada, two_node_lesson)


# ---- classrooms: Iris teaches Ada and Bob; Ivan teaches another class; Otto is outside ----

def _instructor(django_user_model, name):
    from django.contrib.auth.models import Group
    from labs.accounts.models import INSTRUCTORS_GROUP

    user = django_user_model.objects.create_user(name, password="teaching horse battery")
    user.groups.add(Group.objects.get_or_create(name=INSTRUCTORS_GROUP)[0])
    return user


@pytest.fixture
def iris(django_user_model, db):
    """Iris is the instructor of Ada and Bob's classroom."""
    return _instructor(django_user_model, "iris")


@pytest.fixture
def ivan(django_user_model, db):
    """Ivan is an instructor too, but of another classroom: he must see nothing of Iris's."""
    return _instructor(django_user_model, "ivan")


@pytest.fixture
def otto(django_user_model, db):
    """Otto has an account and no classroom: an outsider."""
    return django_user_model.objects.create_user("otto", password="outside horse battery")


@pytest.fixture
def classroom(iris, ada, bob, lesson):
    """Iris's classroom with the lesson; Ada and Bob joined it."""
    from django.utils import timezone
    from labs.classrooms.models import Classroom

    now = timezone.now()
    room = Classroom.objects.create(owner=iris, name="Morning class", starts=now,
                                    ends=now + timezone.timedelta(hours=3))
    room.lessons.add(lesson)
    room.join(ada)
    room.join(bob)
    return room


@pytest.fixture
def other_classroom(ivan, otto, lesson):
    from django.utils import timezone
    from labs.classrooms.models import Classroom

    now = timezone.now()
    room = Classroom.objects.create(owner=ivan, name="Ivan's class", starts=now,
                                    ends=now + timezone.timedelta(hours=3))
    room.lessons.add(lesson)
    room.join(otto)
    return room
