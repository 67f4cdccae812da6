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

CONTENT_DIR = Path(django_settings.BASE_DIR) / "labs" / "content"
ORIGIN = b"http://localhost"


@pytest.fixture(autouse=True)
def unit_settings(settings, monkeypatch):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.LAB_DRIVER = "fake"
    monkeypatch.setenv("LAB_DRIVER", "fake")
    from labs.celery import app

    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield settings
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture(autouse=True)
def fake_driver(monkeypatch):
    """A fresh in-memory driver per test, returned by runtime.get_driver()."""
    driver = FakeDriver()
    monkeypatch.setitem(runtime._drivers, "fake", driver)
    return driver


@pytest.fixture
def lesson(db):
    """The real first-containers lesson, synced from labs/content."""
    from labs.lessons import load_lesson
    from labs.models import Lesson

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
def ws_headers(client):
    """ws_headers(user=None) -> headers for a WebsocketCommunicator: an allowed
    Origin, plus the session cookie of `user` logged in through the test client."""
    def make(user=None) -> list:
        headers = [(b"origin", ORIGIN)]
        if user is not None:
            client.force_login(user)
            name = django_settings.SESSION_COOKIE_NAME
            headers.append((b"cookie", f"{name}={client.cookies[name].value}".encode()))
        return headers
    return make


@pytest.fixture
def ready_session(lesson, ada, fake_driver):
    """Ada's session for the lesson with node1 started on the fake driver."""
    from labs import tasks
    from labs.models import LabSession

    session, needs_start = LabSession.ensure_for(ada, lesson)
    assert needs_start
    assert tasks.start_session(session.pk) == LabSession.READY
    session.refresh_from_db()
    return session
