"""Docker engine events in Ada's node run her checks; a failed command with a known
error puts a hint beside her current step."""
import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from runtime import ExecResult

from labs.sandboxes import consumers
from labs.asgi import application
from tests.unit.sockets import node1_terminal, until

pytestmark = pytest.mark.django_db(transaction=True)

LESSON_PATH = "/ws/lessons/first-containers/"


def event_line(action, kind="container", **attributes):
    return json.dumps({"Type": kind, "Action": action, "status": action,
                       "Actor": {"ID": "abc", "Attributes": attributes}})


def engine(events, checks=ExecResult(0, "")):
    """A responder: the watcher's `docker events` prints `events`; checks answer `checks`."""
    def respond(node, argv):
        if argv[:2] == ["/bin/sh", "-c"] and argv[3:4] == ["watch"]:
            return ExecResult(137, "lab-watch-pid 42\n" + "".join(e + "\n" for e in events))
        if argv[:2] == ["/bin/sh", "-c"]:
            return checks
        return ExecResult(0, "")
    return respond


def blocking_stream(fake_driver, events):
    """The watcher's stream prints `events` and then blocks, like `docker events` does."""
    plain = fake_driver.exec

    async def exec(node_id, argv, timeout=30.0, input=None, on_output=None):
        if argv[3:4] != ["watch"]:
            return await plain(node_id, argv, timeout, input, on_output)
        fake_driver.calls.append(("exec", node_id, list(argv)))
        on_output(("lab-watch-pid 42\n" + "".join(e + "\n" for e in events)).encode())
        await asyncio.Event().wait()
    fake_driver.exec = exec


def check_calls(fake_driver):
    return [c for c in fake_driver.calls if c[0] == "exec" and c[2][:2] == ["/bin/sh", "-c"]
            and c[2][3:4] != ["watch"]]


async def lesson_socket(headers):
    comm = WebsocketCommunicator(application, LESSON_PATH, headers=headers)
    assert (await comm.connect())[0]
    assert json.loads(await comm.receive_from(timeout=2))["type"] == "session"
    return comm


async def test_engine_events_run_the_checks(ready_session, ada, ws_headers, fake_driver, settings):
    settings.LAB_WATCH_ENGINE_EVENTS = True
    fake_driver.responder = engine([])
    blocking_stream(fake_driver, [event_line("create"), event_line("start"), event_line("die")])
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    event = json.loads(await comm.receive_from(timeout=5))
    assert event["type"] == "step" and event["state"] == "done"
    watch = [c for c in fake_driver.calls if c[0] == "exec" and c[2][3:4] == ["watch"]][0][2]
    assert watch[4:8] == ["docker", "events", "--format", "{{json .}}"]
    assert "event=exec_start" not in watch and "event=start" in watch
    (watcher,) = consumers.EngineWatcher.active.values()
    assert watcher.changes == 3 and watcher.pid == "42"
    await comm.disconnect()
    # The last page gone: the watcher stops, and its stream in the node is killed.
    assert consumers.EngineWatcher.active == {}
    await until(lambda: ("exec", watcher.runtime_id, ["kill", "42"]) in fake_driver.calls)


async def test_events_of_checks_themselves_are_ignored(ready_session, ada, ws_headers, fake_driver,
                                                       settings):
    settings.LAB_WATCH_ENGINE_EVENTS = True
    fake_driver.responder = engine([event_line("exec_start: sh -c true"),
                                    event_line("start", **{"lab.check": "1"}),
                                    event_line("health_status: healthy"), "not json"])
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    assert await comm.receive_nothing(timeout=1.5)
    assert check_calls(fake_driver) == []
    await comm.disconnect()


async def test_two_pages_share_one_watcher(ready_session, ada, ws_headers, fake_driver, settings):
    settings.LAB_WATCH_ENGINE_EVENTS = True
    fake_driver.responder = engine([])
    headers = await database_sync_to_async(ws_headers)(ada)
    first, second = await lesson_socket(headers), await lesson_socket(headers)
    await until(lambda: sum(w.refs for w in consumers.EngineWatcher.active.values()) == 2)
    (watcher,) = consumers.EngineWatcher.active.values()
    assert watcher.refs == 2
    await first.disconnect()
    assert watcher.refs == 1 and consumers.EngineWatcher.active
    await second.disconnect()
    assert consumers.EngineWatcher.active == {}


async def test_a_machine_just_ready_is_watched_a_moment_later_from_the_moment_of_ready(
        fake_driver, monkeypatch):
    # A class's forty machines come up within seconds: their streams wait a
    # little (not taking CPU from the prompts), and replay from ready on.
    monkeypatch.setattr(consumers.engine, "WATCH_AFTER_READY_SECONDS", 0.5)
    fake_driver.responder = engine([])
    blocking_stream(fake_driver, [])
    ready_at = time.time()
    watcher = consumers.EngineWatcher.acquire("fake-node", 7, delay=0.5)
    try:
        await asyncio.sleep(0.2)
        assert not [c for c in fake_driver.calls if c[0] == "exec"]
        await until(lambda: [c for c in fake_driver.calls if c[0] == "exec"])
        (watch,) = [c[2] for c in fake_driver.calls if c[0] == "exec"]
        since = float(watch[watch.index("--since") + 1])
        assert ready_at - 0.01 <= since <= ready_at + 0.1
    finally:
        watcher.release()


def test_counts_as_change():
    assert consumers.counts_as_change(event_line("destroy"))
    assert consumers.counts_as_change(event_line("tag", kind="image"))
    assert not consumers.counts_as_change(event_line("exec_die"))
    assert not consumers.counts_as_change(event_line("die", **{"lab.check": "true"}))
    assert not consumers.counts_as_change("[]")
    assert not consumers.counts_as_change("")


async def read_until_hint(comm):
    while True:
        event = json.loads(await comm.receive_from(timeout=3))
        if event["type"] == "hint":
            return event


async def test_failed_command_with_a_known_error_gets_a_hint(ready_session, ada, ws_headers,
                                                             fake_driver):
    fake_driver.responder = lambda node, argv: ExecResult(1, "not yet")
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    term = await node1_terminal(ready_session, headers)
    await term.send_to(bytes_data=b"[node1] ~# docker run --name web -p 8080:80 nginx\r\n")
    await term.send_to(bytes_data=b"docker: Error response from daemon: driver failed: Bind for "
                                  b"0.0.0.0:8080 failed: port is already \x1b[1mallocated\x1b[0m.\r\n"
                                  b"\x1b]6973;cmd-end;125\x07[node1] ~# ")
    hint = await read_until_hint(comm)
    assert hint["step"] == 1 and hint["node"] == "node1"
    assert "host port is already taken" in hint["message"]
    await term.disconnect()
    await comm.disconnect()


async def test_hint_goes_to_the_first_step_not_done(ready_session, ada, ws_headers, fake_driver):
    from labs.courses.models import Step, StepProgress
    step1 = await database_sync_to_async(Step.objects.get)(lesson_id=ready_session.lesson_id, number=1)
    await database_sync_to_async(StepProgress.record)(ada, step1, StepProgress.DONE, "")
    fake_driver.responder = lambda node, argv: ExecResult(1, "not yet")
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    term = await node1_terminal(ready_session, headers)
    await term.send_to(bytes_data=b"Error: No such container: mydb\r\n\x1b]6973;cmd-end;1\x07")
    assert (await read_until_hint(comm))["step"] == 2
    await term.disconnect()
    await comm.disconnect()


async def test_no_hint_when_the_command_succeeded_or_the_error_is_unknown(ready_session, ada,
                                                                         ws_headers, fake_driver):
    fake_driver.responder = lambda node, argv: ExecResult(1, "not yet")
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = await lesson_socket(headers)
    term = await node1_terminal(ready_session, headers)
    # Exit 0: the text mentions an error but the command worked.
    await term.send_to(bytes_data=b"grep 'No such container' notes\r\nNo such container\r\n"
                                  b"\x1b]6973;cmd-end;0\x07")
    # Exit 1, unknown error. (The earlier output was cleared by the mark.)
    await term.send_to(bytes_data=b"ls /nope\r\nls: cannot access\r\n\x1b]6973;cmd-end;2\x07")
    events = []
    while not await comm.receive_nothing(timeout=1):
        events.append(json.loads(await comm.receive_from()))
    assert events and all(e["type"] != "hint" for e in events)
    await term.disconnect()
    await comm.disconnect()


async def test_events_are_read_from_the_engine_socket_with_since_until_and_filters(tmp_path):
    """The engine's /events over its socket (chunked, a line split across
    chunks): the watcher's feed gets the JSON lines, and the request asks for
    the window and the same filters as `docker events`."""
    import os
    import urllib.parse
    from labs.sandboxes.consumers.engine import EVENT_ACTIONS, EVENT_TYPES, read_events
    from runtime import nodefs

    asked = []
    first, second = event_line("create"), event_line("start")
    body = [first[:10], first[10:] + "\n", second + "\n"]

    async def engine(reader, writer):
        asked.append((await reader.readline()).decode())
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for part in body:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part.encode()))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(engine, path=str(tmp_path / "docker.sock"))
    got = bytearray()
    try:
        fd = nodefs.open_in_root(str(tmp_path), "/docker.sock", kind="socket")
        await asyncio.wait_for(read_events(fd, 1700000000.5, 1700000120.5, got.extend), 10)
    finally:
        server.close()
    assert got.decode() == first + "\n" + second + "\n"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(asked[0].split()[1]).query)
    assert query["since"] == ["1700000000.500"] and query["until"] == ["1700000120.500"]
    filters = json.loads(query["filters"][0])
    assert filters == {"type": list(EVENT_TYPES), "event": list(EVENT_ACTIONS)}
    with pytest.raises(OSError):
        os.fstat(fd)  # read_events closed the descriptor it was given
