"""Ada types into her node's terminal; Bob and strangers get nothing."""
import asyncio
import json

import channels.consumer
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from labs.sandboxes import checks, tasks
from labs.asgi import application
from labs.sandboxes.models import LabSession
from runtime import ExecResult
from tests.unit.sockets import node1_terminal, until

pytestmark = pytest.mark.django_db(transaction=True)


def terminal_path(node_pk, cols=100, rows=30):
    return f"/ws/nodes/{node_pk}/terminal/?cols={cols}&rows={rows}"


async def owners_terminal(session, owner, ws_headers):
    """The owner's terminal socket on the session's node1, connected."""
    headers = await database_sync_to_async(ws_headers)(owner)
    return await node1_terminal(session, headers, "?cols=100&rows=30")


async def test_owner_gets_her_keystrokes_echoed(ready_session, ada, ws_headers, fake_driver):
    node = await database_sync_to_async(ready_session.node1)()
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = WebsocketCommunicator(application, terminal_path(node.pk), headers=headers)
    connected, _ = await comm.connect()
    assert connected
    (term,) = fake_driver.terminals
    assert term.node_id == node.runtime_id
    assert term.size == (100, 30)

    await comm.send_to(bytes_data=b"echo hi\r")
    assert await comm.receive_from(timeout=2) == b"echo hi\r"

    await comm.send_to(text_data=json.dumps({"type": "resize", "cols": 132, "rows": 43}))
    await comm.send_to(bytes_data=b"x")  # the echo proves the resize was handled first
    assert await comm.receive_from(timeout=2) == b"x"
    assert term.size == (132, 43)

    await comm.disconnect()
    assert term.closed


async def test_command_end_marks_never_reach_the_browser(ready_session, ada, ws_headers, fake_driver):
    comm = await owners_terminal(ready_session, ada, ws_headers)
    await comm.send_to(bytes_data=b"done\r\n\x1b]6973;cmd-end;0\x07$ ")
    assert await comm.receive_from(timeout=2) == b"done\r\n$ "
    await comm.disconnect()


@pytest.mark.parametrize("who", ["bob", "anonymous"])
async def test_others_are_closed_with_4403(who, ready_session, bob, ws_headers, fake_driver):
    node = await database_sync_to_async(ready_session.node1)()
    user = bob if who == "bob" else None
    headers = await database_sync_to_async(ws_headers)(user)
    comm = WebsocketCommunicator(application, terminal_path(node.pk), headers=headers)
    connected, _ = await comm.connect()
    assert connected  # accepted, then closed with a reason code
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
    assert fake_driver.terminals == []


async def test_unknown_node_is_closed_with_4403(ada, ws_headers, fake_driver, db):
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = WebsocketCommunicator(application, terminal_path(999), headers=headers)
    await comm.connect()
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}


async def test_vanished_node_fails_the_session(ready_session, ada, ws_headers, fake_driver):
    node = await database_sync_to_async(ready_session.node1)()
    fake_driver.nodes.clear()  # the node died behind our back
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = WebsocketCommunicator(application, terminal_path(node.pk), headers=headers)
    await comm.connect()
    error = json.loads(await comm.receive_from(timeout=2))
    assert error["type"] == "error" and node.runtime_id in error["message"]
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4410}
    await database_sync_to_async(ready_session.refresh_from_db)()
    assert ready_session.state == LabSession.FAILED


async def test_foreign_origin_is_rejected(ready_session, ada, ws_headers):
    node = await database_sync_to_async(ready_session.node1)()
    headers = [h for h in await database_sync_to_async(ws_headers)(ada) if h[0] != b"origin"]
    headers.append((b"origin", b"http://evil.example"))
    comm = WebsocketCommunicator(application, terminal_path(node.pk), headers=headers)
    connected, _ = await comm.connect()
    assert not connected


async def test_a_command_end_checks_at_once_and_a_burst_adds_one_run(
        ready_session, ada, ws_headers, fake_driver, monkeypatch):
    runs = []  # (session, countdown) of each queued run_checks
    monkeypatch.setattr(tasks.run_checks, "delay", lambda pk: runs.append((pk, 0)))
    monkeypatch.setattr(tasks.run_checks, "apply_async",
                        lambda args, countdown: runs.append((args[0], countdown)))
    # A long window: a check that waited for it would not have been queued yet below.
    monkeypatch.setattr(checks, "WINDOW", 1.0)
    monkeypatch.setattr(checks, "_runs", {})

    comm = await owners_terminal(ready_session, ada, ws_headers)
    mark = b"\x1b]6973;cmd-end;0\x07$ "
    await comm.send_to(bytes_data=b"one\r\n" + mark)
    await comm.receive_from(timeout=2)
    await until(lambda: runs)
    assert runs == [(ready_session.pk, 0)]  # checked at once, not after the window

    for line in (b"two", b"three", b"four"):  # a pasted block, within the window
        await comm.send_to(bytes_data=line + b"\r\n" + mark)
        await comm.receive_from(timeout=2)
    await until(lambda: len(runs) == 2)
    await asyncio.sleep(0.2)
    # One more run for the whole burst, at the window's end.
    (_, countdown), = runs[1:]
    assert len(runs) == 2 and 0 < countdown <= 1.0
    await comm.disconnect()


async def test_keystrokes_skip_the_shared_database_thread(ready_session, ada, ws_headers,
                                                          fake_driver, monkeypatch):
    """Channels hops to its one synchronous thread before each message to close
    stale database connections; keystrokes of a hundred terminals would queue
    there. The terminal's keystrokes do not make that hop; its other messages do."""
    hops = []
    real = channels.consumer.aclose_old_connections

    async def counted():
        hops.append(1)
        await real()
    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)

    comm = await owners_terminal(ready_session, ada, ws_headers)
    after_connect = len(hops)
    assert after_connect >= 1  # the connect message still makes it
    for key in b"hello":
        await comm.send_to(bytes_data=bytes([key]))
        assert await comm.receive_from(timeout=2) == bytes([key])
    assert len(hops) == after_connect
    await comm.disconnect()


async def test_earlier_output_comes_from_the_nodes_tmux(ready_session, ada, ws_headers, fake_driver):
    # tmux sends the browser the screen, not every line: what scrolled off is
    # asked of tmux in the node.
    history = "".join(f"{n}\n" for n in range(1, 201)) + "[node1] ~# \n"
    fake_driver.responder = lambda node, argv: (
        ExecResult(0, history) if argv[:2] == ["tmux", "capture-pane"] else ExecResult(1, ""))
    comm = await owners_terminal(ready_session, ada, ws_headers)
    await comm.send_to(text_data=json.dumps({"type": "history"}))
    assert json.loads(await comm.receive_from(timeout=2)) == {"type": "history", "text": history}
    node = await database_sync_to_async(ready_session.node1)()
    (call,) = [c for c in fake_driver.calls if c[0] == "exec" and c[2][:2] == ["tmux", "capture-pane"]]
    assert call[1] == node.runtime_id and call[2][-2:] == ["-t", "main"]
    await comm.disconnect()


async def test_an_empty_enter_asks_for_no_check_a_typed_line_does(
        ready_session, ada, ws_headers, fake_driver, monkeypatch):
    """A page attaching sends Ctrl-U and Enter for a prompt: nothing ran, so no
    check (a class opening 100 terminals would check 100 nodes at once). A line
    typed in a container's shell (no command-end mark) is checked once quiet."""
    from labs.sandboxes.consumers import terminal
    runs = []
    monkeypatch.setattr(tasks.run_checks, "delay", lambda pk: runs.append(pk))
    monkeypatch.setattr(tasks.run_checks, "apply_async", lambda args, countdown: runs.append(args[0]))
    monkeypatch.setattr(checks, "_runs", {})
    monkeypatch.setattr(terminal, "QUIET_SECONDS", 0.1)

    comm = await owners_terminal(ready_session, ada, ws_headers)
    for keys in (b"\x15\r", b"\r", b"ls\x15\r", b"sleep 9\x03\r"):
        await comm.send_to(bytes_data=keys)
        await comm.receive_from(timeout=2)
    await asyncio.sleep(0.5)
    assert runs == []
    await comm.send_to(bytes_data=b"apt-get install -y iputils-ping\r")
    await comm.receive_from(timeout=2)
    await until(lambda: runs)
    assert runs == [ready_session.pk]
    await comm.disconnect()


def test_entered_a_line_follows_typing_across_chunks():
    from labs.sandboxes.consumers.terminal import entered_a_line
    assert entered_a_line(False, b"\r") == (False, False)
    assert entered_a_line(False, b"echo hi\r") == (True, False)
    assert entered_a_line(False, b"ech") == (False, True)
    assert entered_a_line(True, b"o\r") == (True, False)
    assert entered_a_line(True, b"\x15\r") == (False, False)
    assert entered_a_line(False, b"\x1b[A\r") == (True, False)  # arrow-up recalls a command
    assert entered_a_line(False, b"one\rtwo") == (True, True)
