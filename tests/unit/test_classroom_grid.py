"""Iris's live grid: a step turning green (check, quiz), a raised hand, a join, pushed at once."""
import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from runtime import ExecResult

from labs.asgi import application
from labs.classrooms import reports
from labs.sandboxes import tasks
from labs.courses.models import LessonActivity, StepProgress

pytestmark = pytest.mark.django_db(transaction=True)


async def grid_socket(classroom, headers):
    comm = WebsocketCommunicator(application, f"/ws/classrooms/{classroom.pk}/", headers=headers)
    connected, _ = await comm.connect()
    assert connected
    return comm


async def next_event(comm, timeout=3):
    return json.loads(await comm.receive_from(timeout=timeout))


async def test_a_passed_check_turns_the_cell_green_live(classroom, iris, ada, ready_session,
                                                        ws_headers, fake_driver):
    comm = await grid_socket(classroom, await database_sync_to_async(ws_headers)(iris))
    grid = await next_event(comm)
    assert grid["type"] == "grid"
    assert [r["name"] for r in grid["rows"]] == ["ada", "bob"]
    assert grid["rows"][0]["cells"]["first-containers:1"]["state"] == "pending"

    fake_driver.responder = lambda node, argv: ExecResult(0 if "ancestor=alpine" in " ".join(argv) else 1, "not yet")
    await sync_to_async(tasks.run_checks)(ready_session.pk)
    event = await next_event(comm)
    assert event["type"] == "learner" and event["row"]["name"] == "ada"
    assert event["row"]["cells"]["first-containers:1"]["state"] == "done"
    assert event["row"]["current"]["step"] == 2
    # Step 2 stayed pending with a new message: the row is pushed again; nothing else arrives.
    assert (await next_event(comm))["row"]["cells"]["first-containers:2"]["message"] == "not yet"
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_a_right_quiz_answer_is_pushed_too(two_node_lesson, iris, ada, ws_headers, classroom):
    await database_sync_to_async(classroom.lessons.add)(two_node_lesson)
    comm = await grid_socket(classroom, await database_sync_to_async(ws_headers)(iris))
    await next_event(comm)
    from django.test import AsyncClient
    client = AsyncClient()
    await sync_to_async(client.force_login)(ada)
    response = await client.post("/lessons/two-nodes/steps/1/answer", {"choice": "1"},
                                 headers={"accept": "application/json"})
    assert response.status_code == 200
    event = await next_event(comm)
    assert event["row"]["cells"]["two-nodes:1"]["state"] == "done"
    await comm.disconnect()


async def test_hand_raised_and_lowered(classroom, iris, ada, ws_headers, lesson):
    comm = await grid_socket(classroom, await database_sync_to_async(ws_headers)(iris))
    await next_event(comm)
    from django.test import AsyncClient
    learner = AsyncClient()
    await sync_to_async(learner.force_login)(ada)
    assert (await learner.post("/lessons/first-containers/hand", {"raised": "1"})).status_code == 200
    assert (await next_event(comm))["row"]["hand"] is not None
    teacher = AsyncClient()
    await sync_to_async(teacher.force_login)(iris)
    response = await teacher.post(f"/classrooms/{classroom.pk}/learners/{ada.pk}/lower-hand")
    assert response.status_code == 200
    assert (await next_event(comm))["row"]["hand"] is None
    await comm.disconnect()


def test_time_on_the_current_step_runs_from_the_last_step_done(classroom, ada, lesson):
    began = timezone.now() - timezone.timedelta(minutes=30)
    LessonActivity.objects.create(user=ada, lesson=lesson, started=began, last=began)
    row = reports.learner_row(classroom, ada)
    assert row["current"] == {"lesson": "first-containers", "step": 1, "since": began.isoformat()}
    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")
    done_at = StepProgress.objects.get(user=ada, step__number=1).done_at
    row = reports.learner_row(classroom, ada)
    assert row["current"] == {"lesson": "first-containers", "step": 2, "since": done_at.isoformat()}
    assert reports.grid(classroom)["stuck_seconds"] == 10 * 60  # LAB_STUCK_MINUTES


def test_a_learner_who_never_opened_the_lesson_has_no_current_step(classroom, bob):
    assert reports.learner_row(classroom, bob)["current"] is None


def test_funnel_and_median_time_per_step(classroom, ada, bob, lesson):
    start = timezone.now() - timezone.timedelta(minutes=10)
    for user, minutes in ((ada, 2), (bob, 4)):
        LessonActivity.objects.create(user=user, lesson=lesson, started=start, last=start)
        StepProgress.objects.create(user=user, step=lesson.steps.get(number=1), state="done",
                                    done_at=start + timezone.timedelta(minutes=minutes))
    stats = reports.stats(classroom)
    assert stats["learners"] == 2
    one, two = stats["steps"]
    assert (one["done"], one["median_seconds"]) == (2, 180.0)
    assert (two["done"], two["median_seconds"]) == (0, None)


async def test_a_learners_machine_becoming_ready_shows_in_the_grid(classroom, iris, ada, lesson,
                                                                   ws_headers, fake_driver):
    comm = await grid_socket(classroom, await database_sync_to_async(ws_headers)(iris))
    await next_event(comm)
    from labs.sandboxes.models import LabSession
    session, _ = await database_sync_to_async(LabSession.ensure_for)(ada, lesson)
    await sync_to_async(tasks.start_session)(session.pk)
    row = (await next_event(comm))["row"]
    assert [(n["name"], n["state"]) for n in row["nodes"]] == [("node1", "ready")]
    await comm.disconnect()


def test_instructor_command(ada):
    from django.core.management import call_command
    from labs.accounts.models import is_instructor
    call_command("instructor", "ada")
    assert is_instructor(ada)
    call_command("instructor", "ada", "--remove")
    assert not is_instructor(ada)


class FakeRedis:
    """The grid-open keys, as broadcast keeps them in Redis (expiry not modelled)."""

    def __init__(self):
        self.keys = {}

    def set(self, key, value, ex=None):
        self.keys[key] = (value, ex)

    def exists(self, key):
        return int(key in self.keys)


async def test_rows_are_computed_only_while_a_grid_is_open(classroom, iris, ada, ready_session,
                                                           ws_headers, fake_driver, monkeypatch):
    """A class arriving changes forty rows at once: nobody watching, none is computed;
    a grid that opens says so (and reads every row itself), and rows are pushed again."""
    from labs import broadcast
    redis = FakeRedis()
    monkeypatch.setattr(broadcast, "_uses_redis", lambda: True)
    monkeypatch.setattr(broadcast, "_redis", redis)
    computed = []
    real_row = reports.learner_row
    monkeypatch.setattr(reports, "learner_row",
                        lambda room, user, *a, **kw: computed.append(user.username) or
                        real_row(room, user, *a, **kw))
    fake_driver.responder = lambda node, argv: ExecResult(0 if "ancestor=alpine" in " ".join(argv) else 1, "not yet")

    await sync_to_async(tasks.run_checks)(ready_session.pk)  # step 1 done, no grid open
    assert computed == []

    comm = await grid_socket(classroom, await database_sync_to_async(ws_headers)(iris))
    grid = await next_event(comm)
    assert grid["rows"][0]["cells"]["first-containers:1"]["state"] == "done"  # read by the grid
    assert redis.keys[broadcast.grid_open_key(classroom.pk)] == (1, broadcast.GRID_OPEN_SECONDS)
    computed.clear()
    fake_driver.responder = lambda node, argv: ExecResult(1, "still not")
    await sync_to_async(tasks.run_checks)(ready_session.pk)
    assert computed == ["ada"]
    assert (await next_event(comm))["row"]["cells"]["first-containers:2"]["message"] == "still not"
    await comm.disconnect()
