"""Iris watches Ada's terminal live, read-only; she types only after Ada accepts."""
import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from runtime import ExecResult

from labs.asgi import application
from labs.sandboxes.models import LabSession

pytestmark = pytest.mark.django_db(transaction=True)


def watch_path(classroom, node):
    return f"/ws/classrooms/{classroom.pk}/nodes/{node.pk}/watch/"


async def connect(path, headers):
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await comm.connect()
    assert connected
    return comm


async def receive_text(comm, kind, timeout=2):
    while True:
        out = await comm.receive_output(timeout=timeout)
        if out.get("text"):
            event = json.loads(out["text"])
            if event["type"] == kind:
                return event


async def receive_bytes(comm, timeout=2):
    while True:
        out = await comm.receive_output(timeout=timeout)
        if out.get("bytes") is not None:
            return out["bytes"]


async def test_instructor_sees_the_screen_then_the_learner_typing(classroom, ready_session, ada, iris,
                                                                 ws_headers, fake_driver):
    # tmux's answer: size and cursor, then the screen with each line's trailing
    # blanks dropped (the prompt's space after `#` among them).
    fake_driver.responder = lambda node, argv: (
        ExecResult(0, "90 20 14 2\nroot@node1:~# ls\nfile\nroot@node1:~#\n")
        if "capture-pane" in " ".join(argv) else ExecResult(0, ""))
    node = await database_sync_to_async(ready_session.node1)()
    term = await connect(f"/ws/nodes/{node.pk}/terminal/?cols=90&rows=20",
                         await database_sync_to_async(ws_headers)(ada))
    watch = await connect(watch_path(classroom, node), await database_sync_to_async(ws_headers)(iris))
    assert (await receive_text(watch, "control"))["granted"] is False
    # The learner's size before the screen, so no line wraps at a default width.
    assert await receive_text(watch, "size") == {"type": "size", "cols": 90, "rows": 20}
    screen = await receive_bytes(watch)
    # The current screen, then the cursor where tmux has it: after the prompt's space.
    assert screen == b"\x1b[H\x1b[2Jroot@node1:~# ls\r\nfile\r\nroot@node1:~#\x1b[3;15H"
    # The learner's terminal heard the watcher: it tells its size and copies output.
    assert await receive_text(watch, "size") == {"type": "size", "cols": 90, "rows": 20}

    await term.send_to(bytes_data=b"docker container run alpine hostname\r")
    assert await term.receive_from(timeout=2) == b"docker container run alpine hostname\r"
    assert await receive_bytes(watch) == b"docker container run alpine hostname\r"

    # Read-only: Iris's keystrokes go nowhere.
    await watch.send_to(bytes_data=b"rm -rf /\r")
    assert await term.receive_nothing(timeout=0.3)
    await watch.disconnect()
    await term.disconnect()


async def test_take_control_only_after_the_learner_accepts(classroom, ready_session, ada, iris,
                                                          ws_headers, fake_driver):
    node = await database_sync_to_async(ready_session.node1)()
    ada_headers = await database_sync_to_async(ws_headers)(ada)
    term = await connect(f"/ws/nodes/{node.pk}/terminal/", ada_headers)
    lesson_page = await connect("/ws/lessons/first-containers/", ada_headers)
    await receive_text(lesson_page, "session")
    watch = await connect(watch_path(classroom, node), await database_sync_to_async(ws_headers)(iris))
    await receive_text(watch, "control")

    await watch.send_to(text_data=json.dumps({"type": "control-request"}))
    request = await receive_text(lesson_page, "control-request")
    assert request == {"type": "control-request", "instructor": iris.pk, "name": "iris", "node": node.pk}

    await lesson_page.send_to(text_data=json.dumps({"type": "control", "grant": True,
                                                    "instructor": iris.pk}))
    assert (await receive_text(watch, "control"))["granted"] is True
    assert (await receive_text(lesson_page, "session"))["controller"] == "iris"
    await watch.send_to(bytes_data=b"docker ps\r")
    assert await term.receive_from(timeout=2) == b"docker ps\r"  # written to Ada's terminal

    # Ada takes control back: Iris is read-only again.
    await lesson_page.send_to(text_data=json.dumps({"type": "control", "grant": False}))
    assert (await receive_text(watch, "control"))["granted"] is False
    await watch.send_to(bytes_data=b"whoami\r")
    assert await term.receive_nothing(timeout=0.3)
    for comm in (watch, lesson_page, term):
        await comm.disconnect()


async def test_a_learner_cannot_hand_control_to_someone_who_does_not_teach_them(
        classroom, ready_session, ada, ivan, ws_headers):
    lesson_page = await connect("/ws/lessons/first-containers/",
                                await database_sync_to_async(ws_headers)(ada))
    await receive_text(lesson_page, "session")
    await lesson_page.send_to(text_data=json.dumps({"type": "control", "grant": True,
                                                    "instructor": ivan.pk}))
    assert (await receive_text(lesson_page, "error"))["message"] == "That instructor does not teach you."
    session = await database_sync_to_async(LabSession.objects.get)(pk=ready_session.pk)
    assert session.controller_id is None
    await lesson_page.disconnect()


@pytest.mark.parametrize("who", ["bob", "ivan", "otto", "ada", "anonymous"])
async def test_nobody_else_watches(who, request, classroom, other_classroom, ready_session, ws_headers,
                                   fake_driver):
    node = await database_sync_to_async(ready_session.node1)()
    user = None if who == "anonymous" else request.getfixturevalue(who)
    comm = await connect(watch_path(classroom, node), await database_sync_to_async(ws_headers)(user))
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}


async def test_ivan_cannot_watch_through_his_own_classroom(other_classroom, ready_session, ivan,
                                                           ws_headers):
    # Ada is not in Ivan's classroom, so naming his classroom does not help him.
    node = await database_sync_to_async(ready_session.node1)()
    comm = await connect(watch_path(other_classroom, node), await database_sync_to_async(ws_headers)(ivan))
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}


async def test_output_stops_going_out_when_nobody_watches(classroom, ready_session, ada, ws_headers,
                                                          fake_driver):
    from channels.layers import get_channel_layer
    node = await database_sync_to_async(ready_session.node1)()
    term = await connect(f"/ws/nodes/{node.pk}/terminal/", await database_sync_to_async(ws_headers)(ada))
    layer = get_channel_layer()
    spy = await layer.new_channel()
    await layer.group_add(f"watch-{node.pk}", spy)
    await term.send_to(bytes_data=b"x")
    await term.receive_from(timeout=2)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(spy), 0.3)  # no watcher said hello: nothing fanned out
    await term.disconnect()


async def _iris_in_control(classroom, node, ada_headers, iris_headers):
    """Iris's watch page asks, Ada's lesson page says yes; returns (lesson page, watch)."""
    lesson_page = await connect("/ws/lessons/first-containers/", ada_headers)
    await receive_text(lesson_page, "session")
    watch = await connect(watch_path(classroom, node), iris_headers)
    await receive_text(watch, "control")
    await watch.send_to(text_data=json.dumps({"type": "control-request"}))
    request = await receive_text(lesson_page, "control-request")
    await lesson_page.send_to(text_data=json.dumps({"type": "control", "grant": True,
                                                    "instructor": request["instructor"]}))
    assert (await receive_text(watch, "control"))["granted"] is True
    assert (await receive_text(lesson_page, "session"))["controller"] == "iris"
    return lesson_page, watch


async def test_control_ends_when_the_instructors_watch_page_closes(
        classroom, ready_session, ada, iris, ws_headers, fake_driver):
    node = await database_sync_to_async(ready_session.node1)()
    ada_headers = await database_sync_to_async(ws_headers)(ada)
    iris_headers = await database_sync_to_async(ws_headers)(iris)
    lesson_page, watch = await _iris_in_control(classroom, node, ada_headers, iris_headers)

    await watch.disconnect()  # Iris closes the tab
    # Ada's page no longer says anyone is typing in her terminal, and it is
    # so in the database, so a reload shows the same.
    assert (await receive_text(lesson_page, "session"))["controller"] is None
    session = await database_sync_to_async(LabSession.objects.get)(pk=ready_session.pk)
    assert session.controller_id is None
    await lesson_page.disconnect()


async def test_a_new_watch_page_starts_read_only_and_must_ask_again(
        classroom, ready_session, ada, iris, ws_headers, fake_driver):
    node = await database_sync_to_async(ready_session.node1)()
    ada_headers = await database_sync_to_async(ws_headers)(ada)
    iris_headers = await database_sync_to_async(ws_headers)(iris)
    term = await connect(f"/ws/nodes/{node.pk}/terminal/", ada_headers)
    lesson_page, first = await _iris_in_control(classroom, node, ada_headers, iris_headers)

    # A second watch page of Iris's (another tab, or the page reopened) while
    # the first still holds control: read-only, her keystrokes go nowhere.
    second = await connect(watch_path(classroom, node), iris_headers)
    assert (await receive_text(second, "control"))["granted"] is False
    await second.send_to(bytes_data=b"whoami\r")
    assert await term.receive_nothing(timeout=0.3)
    # The page that was given control still types.
    await first.send_to(bytes_data=b"docker ps\r")
    assert await term.receive_from(timeout=2) == b"docker ps\r"

    # The first page closes: control ends for all; the second must ask.
    await first.disconnect()
    assert (await receive_text(second, "control"))["granted"] is False
    await second.send_to(bytes_data=b"whoami\r")
    assert await term.receive_nothing(timeout=0.3)
    await second.send_to(text_data=json.dumps({"type": "control-request"}))
    assert (await receive_text(lesson_page, "control-request"))["instructor"] == iris.pk
    for comm in (second, lesson_page, term):
        await comm.disconnect()


async def test_a_grant_left_in_the_database_gives_a_new_page_nothing(
        classroom, ready_session, ada, iris, ws_headers, fake_driver):
    # A grant whose page never said goodbye (the site was killed under it).
    await database_sync_to_async(LabSession.objects.filter(pk=ready_session.pk).update)(
        controller=iris)
    node = await database_sync_to_async(ready_session.node1)()
    term = await connect(f"/ws/nodes/{node.pk}/terminal/",
                         await database_sync_to_async(ws_headers)(ada))
    watch = await connect(watch_path(classroom, node), await database_sync_to_async(ws_headers)(iris))
    assert (await receive_text(watch, "control"))["granted"] is False
    await watch.send_to(bytes_data=b"whoami\r")
    assert await term.receive_nothing(timeout=0.3)
    for comm in (watch, term):
        await comm.disconnect()


async def test_a_watcher_of_a_node_on_another_host_gets_its_screen_from_that_host(
        classroom, ready_session, iris, ws_headers, fake_driver, monkeypatch):
    from labs.sandboxes import tasks
    from labs.sandboxes.models import SandboxHost
    asked = []
    real_delay = tasks.send_screen.delay

    def delay(*args):
        asked.append(args)
        return real_delay(*args)  # eager here; on a cluster, the host's checks worker
    monkeypatch.setattr(tasks.send_screen, "delay", delay)
    fake_driver.responder = lambda node, argv: (
        ExecResult(0, "90 20 14 0\nroot@node1:~#\n")
        if "capture-pane" in " ".join(argv) else ExecResult(0, ""))

    def move():
        host = SandboxHost.objects.create(name="beta", gateway_url="http://10.77.0.3:8001")
        LabSession.objects.filter(pk=ready_session.pk).update(host=host)
    await database_sync_to_async(move)()
    node = await database_sync_to_async(ready_session.node1)()
    watch = await connect(watch_path(classroom, node), await database_sync_to_async(ws_headers)(iris))
    assert (await receive_text(watch, "control"))["granted"] is False
    assert await receive_text(watch, "size") == {"type": "size", "cols": 90, "rows": 20}
    assert await receive_bytes(watch) == b"\x1b[H\x1b[2Jroot@node1:~#\x1b[1;15H"
    assert [args[:2] for args in asked] == [(ready_session.pk, node.pk)]
    await watch.disconnect()
