"""Ada's lesson page hears about her machine and her steps as they change."""
import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from runtime import ExecResult

from labs.sandboxes import tasks
from labs.asgi import application
from labs.courses.models import StepProgress
from labs.sandboxes.models import LabSession

pytestmark = pytest.mark.django_db(transaction=True)

LESSON_PATH = "/ws/lessons/first-containers/"


async def lesson_socket(headers):
    comm = WebsocketCommunicator(application, LESSON_PATH, headers=headers)
    connected, _ = await comm.connect()
    assert connected
    return comm


SESSION_KEYS = ("type", "state", "error", "node", "nodes")


def core(event):
    """A session event without its limits (expires, idle deadline...; see test_session_limits)."""
    return {k: v for k, v in event.items() if k in SESSION_KEYS}


async def next_event(comm, timeout=3):
    return json.loads(await comm.receive_from(timeout=timeout))


async def test_start_progress_then_ready_arrive(lesson, ada, ws_headers, fake_driver):
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    assert await comm.receive_nothing(timeout=0.1)  # no session yet, nothing to say

    session, _ = await database_sync_to_async(LabSession.ensure_for)(ada, lesson)
    node = await database_sync_to_async(session.node1)()
    await sync_to_async(tasks.start_session)(session.pk)

    assert await next_event(comm) == {"type": "progress", "node": node.pk, "name": "node1",
                                      "progress": 10, "message": "creating node"}
    assert await next_event(comm) == {"type": "progress", "node": node.pk, "name": "node1",
                                      "progress": 100, "message": "ready"}
    assert core(await next_event(comm)) == {"type": "session", "state": "ready", "error": "",
                                      "node": node.pk,
                                      "nodes": [{"id": node.pk, "name": "node1", "state": "ready",
                                                 "ports": []}]}
    await comm.disconnect()


async def test_failed_start_arrives_with_the_reason(lesson, ada, ws_headers, fake_driver):
    fake_driver.fail_start = "the node image is missing: run make node-image"
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    session, _ = await database_sync_to_async(LabSession.ensure_for)(ada, lesson)
    await sync_to_async(tasks.start_session)(session.pk)
    events = [await next_event(comm), await next_event(comm)]
    assert events[0]["type"] == "progress"
    assert core(events[1]) == {"type": "session", "state": "failed", "node": events[0]["node"],
                         "error": "node1: the node image is missing: run make node-image",
                         "nodes": [{"id": events[0]["node"], "name": "node1", "state": "failed",
                                    "ports": []}]}
    await comm.disconnect()


async def test_reconnecting_page_is_told_where_the_session_stands(ready_session, ada, ws_headers):
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    event = await next_event(comm)
    assert event["type"] == "session" and event["state"] == "ready"
    await comm.disconnect()



async def test_reconnecting_page_gets_the_steps_recorded_while_it_was_away(
        ready_session, ada, ws_headers, fake_driver):
    # Step 1 turns done while no page listens (its socket dropped when Redis
    # restarted, say): the push reaches nobody.
    fake_driver.responder = lambda node, argv: (
        ExecResult(0, "") if "ancestor=alpine" in argv[2] else ExecResult(1, "List every container."))
    await sync_to_async(tasks.run_checks)(ready_session.pk)
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    assert (await next_event(comm))["type"] == "session"
    assert [await next_event(comm), await next_event(comm)] == [
        {"type": "step", "step": 1, "state": "done", "message": ""},
        {"type": "step", "step": 2, "state": "pending", "message": "List every container."},
    ]
    await comm.disconnect()


async def test_bobs_page_gets_none_of_adas_steps(ready_session, bob, ws_headers, fake_driver):
    fake_driver.responder = lambda node, argv: ExecResult(0, "")
    await sync_to_async(tasks.run_checks)(ready_session.pk)
    comm = await lesson_socket(await database_sync_to_async(ws_headers)(bob))
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()

async def test_finished_command_in_terminal_runs_checks_and_step_event_arrives(
        ready_session, ada, ws_headers, fake_driver):
    fake_driver.responder = lambda node, argv: (
        ExecResult(0, "") if "ancestor=alpine" in argv[2] else ExecResult(1, "List every container."))
    headers = await database_sync_to_async(ws_headers)(ada)
    lesson_comm = await lesson_socket(headers)
    assert (await next_event(lesson_comm))["type"] == "session"
    node = await database_sync_to_async(ready_session.node1)()
    term = WebsocketCommunicator(application, f"/ws/nodes/{node.pk}/terminal/", headers=headers)
    assert (await term.connect())[0]

    # The shell prints a command-end mark after `docker container run alpine hostname`.
    await term.send_to(bytes_data=b"3f4a1c9b2e7d\r\n\x1b]6973;cmd-end;0\x07")
    assert await term.receive_from(timeout=2) == b"3f4a1c9b2e7d\r\n"

    events = [await next_event(lesson_comm) for _ in range(3)]
    assert events == [
        {"type": "step", "step": 1, "state": "done", "message": ""},
        {"type": "step", "step": 2, "state": "pending", "message": "List every container."},
        {"type": "checked", "open": [2]},  # after the run's steps: for Check my work
    ]
    # Nothing changed on the next command: no repeated step events, only the run's end.
    await term.send_to(bytes_data=b"\x1b]6973;cmd-end;0\x07")
    assert await next_event(lesson_comm) == {"type": "checked", "open": [2]}
    assert await lesson_comm.receive_nothing(timeout=1)
    # Two check runs: both steps the first time, only the step still open the second.
    assert len([c for c in fake_driver.calls if c[0] == "exec" and c[2][0] == "/bin/sh"]) == 3
    await term.disconnect()
    await lesson_comm.disconnect()


async def test_check_request_on_the_socket_runs_checks(ready_session, ada, ws_headers, fake_driver):
    fake_driver.responder = lambda node, argv: ExecResult(0, "")
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    await next_event(comm)
    await comm.send_to(text_data=json.dumps({"type": "check"}))
    assert [await next_event(comm), await next_event(comm)] == [
        {"type": "step", "step": 1, "state": "done", "message": ""},
        {"type": "step", "step": 2, "state": "done", "message": ""},
    ]
    states = await database_sync_to_async(
        lambda: sorted(StepProgress.objects.filter(user=ada).values_list("state", flat=True)))()
    assert states == ["done", "done"]
    await comm.disconnect()


async def test_a_page_waiting_for_its_machine_asks_and_hears_where_its_session_stands(
        lesson, ada, ws_headers, fake_driver):
    # The ready pushed to the page can be lost on its way (the channel layer,
    # when another socket of the web process closes at that moment): the page
    # asks while it waits, and the answer is the session's state now.
    headers = await database_sync_to_async(ws_headers)(ada)
    session, _ = await database_sync_to_async(LabSession.ensure_for)(ada, lesson)
    comm = await lesson_socket(headers)
    assert core(await next_event(comm))["state"] == "starting"
    # It became ready with nobody listening (a start with no channel layer).
    await database_sync_to_async(session.mark)(LabSession.READY)
    assert await comm.receive_nothing(timeout=0.1)
    await comm.send_to(text_data=json.dumps({"type": "state"}))
    answer = await next_event(comm)
    # Marked as an answer: the page acts on it only when the start has moved
    # on (an answer about the session before a new start is no news).
    assert core(answer)["state"] == "ready" and answer["answer"] is True
    await comm.disconnect()


async def test_check_before_start_is_explained(lesson, ada, ws_headers, fake_driver):
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    await comm.send_to(text_data=json.dumps({"type": "check"}))
    assert await next_event(comm) == {"type": "error", "message": "Start the lab first, then check."}
    await comm.disconnect()


async def test_bob_does_not_hear_adas_events(ready_session, bob, ws_headers, fake_driver):
    headers = await database_sync_to_async(ws_headers)(bob)
    comm = await lesson_socket(headers)
    await sync_to_async(tasks.run_checks)(ready_session.pk)
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_anonymous_lesson_socket_is_closed(lesson, ws_headers):
    comm = WebsocketCommunicator(application, LESSON_PATH, headers=ws_headers())
    await comm.connect()
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}


async def test_progress_reported_from_a_driver_thread_arrives(lesson, ada, ws_headers, fake_driver,
                                                              monkeypatch):
    """The built-in driver starts nodes in a helper thread and reports progress from there."""
    import asyncio

    plain_start = fake_driver.start

    async def threaded_start(spec, on_progress=None):
        await asyncio.to_thread(on_progress, {"progress": 40, "message": "unpacking image"})
        return await plain_start(spec)

    monkeypatch.setattr(fake_driver, "start", threaded_start)
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    session, _ = await database_sync_to_async(LabSession.ensure_for)(ada, lesson)
    await sync_to_async(tasks.start_session)(session.pk)
    first = await next_event(comm)
    assert (first["type"], first["progress"], first["message"]) == ("progress", 40, "unpacking image")
    assert (await next_event(comm))["state"] == "ready"
    await comm.disconnect()


async def test_an_event_for_a_page_that_just_closed_is_not_an_error():
    """Daphne raises Disconnected when a send races the page's close (a reload):
    the lesson socket drops that event quietly; anything else still raises."""
    from autobahn.exception import Disconnected

    from labs.sandboxes.consumers import LessonConsumer

    consumer = LessonConsumer()

    async def closed(**kwargs):
        raise Disconnected("Attempt to send on a closed protocol")
    consumer.send = closed
    await consumer.send_json({"type": "step", "step": 1})  # no exception

    async def broken(**kwargs):
        raise RuntimeError("something else")
    consumer.send = broken
    with pytest.raises(RuntimeError):
        await consumer.send_json({"type": "step", "step": 1})
