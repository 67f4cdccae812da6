"""Iris messages the class or one learner, resets a learner's node (progress kept), exports CSV."""
import csv
import io
import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from labs.sandboxes import tasks
from labs.asgi import application
from labs.classrooms.models import ClassMessage
from labs.courses.models import StepProgress
from labs.sandboxes.models import LabSession

pytestmark = pytest.mark.django_db(transaction=True)


async def lesson_socket(headers):
    comm = WebsocketCommunicator(application, "/ws/lessons/first-containers/", headers=headers)
    assert (await comm.connect())[0]
    return comm


async def next_of(comm, kind, timeout=2):
    while True:
        event = json.loads(await comm.receive_from(timeout=timeout))
        if event["type"] == kind:
            return event


async def logged_in(user):
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    return client


async def test_message_to_the_class_and_to_one_learner(classroom, iris, ada, bob, ws_headers, lesson):
    ada_page = await lesson_socket(await database_sync_to_async(ws_headers)(ada))
    bob_page = await lesson_socket(await database_sync_to_async(ws_headers)(bob))
    teacher = await logged_in(iris)
    url = f"/classrooms/{classroom.pk}/message"

    response = await teacher.post(url, {"text": "Break in 5 minutes"})
    assert json.loads(response.content) == {"ok": True, "sent_to": 2}
    for page in (ada_page, bob_page):
        event = await next_of(page, "message")
        assert (event["text"], event["from"], event["to_all"]) == ("Break in 5 minutes", "iris", True)

    await teacher.post(url, {"text": "Ada, look at step 2", "to": str(ada.pk)})
    assert (await next_of(ada_page, "message"))["to_all"] is False
    assert await bob_page.receive_nothing(timeout=0.2)
    # Shown again on the next page load.
    page = await (await logged_in(ada)).get("/lessons/first-containers/")
    assert b"Ada, look at step 2" in page.content
    # ... with who it was for, as the live message had it.
    html = page.content.decode()
    assert "iris (to you): </strong>Ada, look at step 2" in html
    assert "iris (to the class): </strong>Break in 5 minutes" in html
    for comm in (ada_page, bob_page):
        await comm.disconnect()


def test_message_to_someone_outside_the_class_is_refused(client, classroom, iris, otto):
    client.force_login(iris)
    response = client.post(f"/classrooms/{classroom.pk}/message", {"text": "hi", "to": otto.pk})
    assert response.status_code == 403 and not ClassMessage.objects.exists()


def test_reset_gives_fresh_nodes_and_keeps_progress(client, classroom, iris, ada, ready_session,
                                                    lesson, fake_driver):
    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")
    old_node = ready_session.node1()
    client.force_login(iris)
    with_commit = client.post(f"/classrooms/{classroom.pk}/learners/{ada.pk}/reset",
                              {"lesson": "first-containers"})
    assert with_commit.status_code == 200
    ready_session.refresh_from_db()
    assert ready_session.state == LabSession.STOPPED and ready_session.ended_because == "reset"
    assert ("stop", old_node.runtime_id) in fake_driver.calls
    fresh = LabSession.current_for(ada, lesson)
    assert fresh.pk != ready_session.pk and fresh.state == LabSession.READY
    assert fresh.node1().runtime_id != old_node.runtime_id
    assert StepProgress.objects.get(user=ada, step__number=1).state == StepProgress.DONE


def test_reset_without_a_running_lab_says_so(client, classroom, iris, ada):
    client.force_login(iris)
    response = client.post(f"/classrooms/{classroom.pk}/learners/{ada.pk}/reset",
                           {"lesson": "first-containers"})
    assert response.status_code == 409


def test_csv_export(client, classroom, iris, ada, lesson):
    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")
    client.force_login(iris)
    response = client.get(f"/classrooms/{classroom.pk}/progress.csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["learner"], r["step"], r["state"]) for r in rows] == [
        ("ada", "1", "done"), ("ada", "2", "pending"), ("bob", "1", "pending"), ("bob", "2", "pending")]
    assert rows[0]["done_at"] and not rows[1]["done_at"]


def test_learner_progress_json(client, classroom, iris, ada):
    client.force_login(iris)
    body = client.get(f"/classrooms/{classroom.pk}/learners/{ada.pk}/progress.json").json()
    assert body["name"] == "ada" and set(body["cells"]) == {"first-containers:1", "first-containers:2"}


def test_tasks_reset_of_a_vanished_session_is_a_no_op(db):
    assert tasks.reset_session(12345) is None
