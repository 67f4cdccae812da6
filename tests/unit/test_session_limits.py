"""Session limits: length (extendable), idle timeout, nodes per learner; beat ends sessions
and frees their nodes, and progress always stays."""
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.utils import timezone

from labs.sandboxes import tasks
from labs.asgi import application
from labs.courses.models import StepProgress
from labs.sandboxes.models import LabNode, LabSession, SandboxHost

pytestmark = pytest.mark.django_db

MINUTE = timezone.timedelta(minutes=1)


def test_defaults():
    assert (settings.LAB_SESSION_MINUTES, settings.LAB_IDLE_MINUTES) == (120, 30)
    assert settings.LAB_NODES_PER_LEARNER >= 2
    assert settings.CELERY_BEAT_SCHEDULE["end-sessions"]["task"] == "labs.sandboxes.tasks.end_sessions"


def test_a_new_session_lasts_two_hours(ready_session):
    left = ready_session.expires - timezone.now()
    assert 119 * MINUTE < left <= 120 * MINUTE
    event = ready_session.event()
    assert event["expires"] == ready_session.expires.isoformat()
    assert event["idle_seconds"] == 30 * 60


def test_extend_pushes_the_end_back(client, ada, ready_session):
    before = ready_session.expires
    client.force_login(ada)
    body = client.post("/lessons/first-containers/extend").json()
    ready_session.refresh_from_db()
    assert ready_session.expires == before + 30 * MINUTE
    assert body["ok"] and body["expires"] == ready_session.expires.isoformat()


def test_extend_without_a_session_is_409(client, ada, lesson):
    client.force_login(ada)
    assert client.post("/lessons/first-containers/extend").status_code == 409


def test_beat_ends_expired_and_idle_sessions_and_keeps_progress(ready_session, ada, lesson, fake_driver):
    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")
    runtime_id = ready_session.node1().runtime_id
    assert tasks.end_sessions() == []  # within its limits: untouched

    LabSession.objects.filter(pk=ready_session.pk).update(expires=timezone.now() - MINUTE)
    assert tasks.end_sessions() == [(ready_session.pk, "expired")]
    ready_session.refresh_from_db()
    assert (ready_session.state, ready_session.ended_because) == ("stopped", "expired")
    assert runtime_id not in fake_driver.nodes
    assert ready_session.node1().state == LabNode.STOPPED
    assert StepProgress.objects.get(user=ada, step__number=1).state == StepProgress.DONE


def test_beat_leaves_each_stop_to_a_task_on_the_sessions_host(ready_session, fake_driver,
                                                           monkeypatch):
    from labs.celery import app
    queued = []
    monkeypatch.setattr(tasks.stop_session, "delay", lambda pk: queued.append(pk))
    LabSession.objects.filter(pk=ready_session.pk).update(expires=timezone.now() - MINUTE)
    assert tasks.end_sessions() == [(ready_session.pk, "expired")]
    assert queued == [ready_session.pk]
    assert fake_driver.nodes  # end_sessions itself stopped nothing
    # A session's node work goes to its host's node queue, its checks to its
    # host's checks queue; the site's own tasks to the site's queue.
    def queue(name, *args):
        return app.amqp.router.route({}, f"labs.sandboxes.tasks.{name}", args)["queue"].name
    for name in ("start_session", "stop_session", "reset_session"):
        assert queue(name, ready_session.pk) == "nodes.local", name
    assert queue("run_checks", ready_session.pk) == "checks.local"
    LabSession.objects.filter(pk=ready_session.pk).update(
        host=SandboxHost.objects.create(name="second"))
    assert queue("stop_session", ready_session.pk) == "nodes.second"
    assert queue("run_checks", ready_session.pk) == "checks.second"
    for name in ("start_queued", "end_sessions", "on_every_host", "lose_dead_hosts"):
        assert queue(name) == "celery", name


def test_idle_for_too_long_ends_the_session(ready_session, fake_driver):
    LabSession.objects.filter(pk=ready_session.pk).update(last_input=timezone.now() - 31 * MINUTE)
    assert tasks.end_sessions() == [(ready_session.pk, "idle")]
    assert fake_driver.nodes == {}


def test_starting_again_after_expiry_gives_a_fresh_session_and_time(client, ada, ready_session, lesson):
    LabSession.objects.filter(pk=ready_session.pk).update(expires=timezone.now() - MINUTE)
    tasks.end_sessions()
    client.force_login(ada)
    body = client.post("/lessons/first-containers/start").json()
    assert body["ok"] and body["session"] != ready_session.pk
    fresh = LabSession.objects.get(pk=body["session"])
    assert fresh.expires > timezone.now() + 119 * MINUTE


def test_nodes_per_learner(client, ada, ready_session, two_node_lesson, settings):
    settings.LAB_NODES_PER_LEARNER = 2  # node1 of first-containers is running
    client.force_login(ada)
    response = client.post("/lessons/two-nodes/start")
    assert response.status_code == 409
    assert "Run your first containers" in response.json()["error"]
    # The page links the message to where the running labs can be stopped.
    assert response.json()["running_url"] == "/dashboard/#running-labs"
    assert not LabSession.objects.filter(lesson=two_node_lesson).exists()
    settings.LAB_NODES_PER_LEARNER = 3
    assert client.post("/lessons/two-nodes/start").status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_terminal_input_counts_as_activity(ready_session, ada, ws_headers, fake_driver):
    old = timezone.now() - 10 * MINUTE
    await database_sync_to_async(LabSession.objects.filter(pk=ready_session.pk).update)(last_input=old)
    node = await database_sync_to_async(ready_session.node1)()
    comm = WebsocketCommunicator(application, f"/ws/nodes/{node.pk}/terminal/",
                                 headers=await database_sync_to_async(ws_headers)(ada))
    assert (await comm.connect())[0]
    await comm.send_to(bytes_data=b"l")
    await comm.receive_from(timeout=2)
    await comm.disconnect()
    session = await database_sync_to_async(LabSession.objects.get)(pk=ready_session.pk)
    assert session.last_input > old + 9 * MINUTE


@pytest.mark.django_db(transaction=True)
async def test_the_page_is_told_why_the_session_ended(ready_session, ada, ws_headers, fake_driver):
    comm = WebsocketCommunicator(application, "/ws/lessons/first-containers/",
                                 headers=await database_sync_to_async(ws_headers)(ada))
    assert (await comm.connect())[0]
    await comm.receive_from(timeout=2)  # where the session stands
    await database_sync_to_async(LabSession.objects.filter(pk=ready_session.pk).update)(
        expires=timezone.now() - MINUTE)
    await database_sync_to_async(tasks.end_sessions)()
    event = json.loads(await comm.receive_from(timeout=2))
    assert (event["state"], event["ended_because"]) == ("stopped", "expired")
    await comm.disconnect()
