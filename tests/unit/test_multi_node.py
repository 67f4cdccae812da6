"""A lesson with two nodes: one session, a LabNode and a runtime node each, files placed,
checks run where each step says, a terminal per node, and tabs on the page."""
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from runtime import ExecResult, NodeSpec

from labs.sandboxes import tasks
from labs.asgi import application
from labs.courses.models import LessonFile, StepProgress
from labs.sandboxes.models import LabNode, LabSession


def test_session_creates_a_labnode_and_a_runtime_node_per_lesson_node(two_node_session, fake_driver):
    nodes = list(two_node_session.nodes.order_by("name"))
    assert [(n.name, n.state) for n in nodes] == [("node1", "ready"), ("node2", "ready")]
    starts = [c[1] for c in fake_driver.calls if c[0] == "start"]
    assert [(s.session, s.name) for s in starts] == [(two_node_session.runtime_name, "node1"),
                                                     (two_node_session.runtime_name, "node2")]
    assert {n.runtime_id for n in nodes} == set(fake_driver.nodes)
    assert LabNode.objects.count() == 2


def test_lesson_files_are_passed_to_the_nodespec_of_their_node(two_node_session, fake_driver):
    specs = {c[1].name: c[1] for c in fake_driver.calls if c[0] == "start"}
    assert specs["node1"] == NodeSpec(session=two_node_session.runtime_name, name="node1",
                                      session_nodes=2, files=(
        ("/root/app/Dockerfile", b"FROM nginx\n", 0o644),
        ("/root/app/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
    ))
    assert specs["node2"].files == (("/root/app/linux.png", b"\x89PNG\r\n\x1a\n\x00\xff", 0o644),)


def test_resync_updates_and_removes_files(two_node_lesson, tmp_path):
    from labs.courses.models import Lesson
    from tests.unit.conftest import make_lesson_def

    lesson_def = make_lesson_def(tmp_path / "v2", steps=[
        {"number": 1, "name": "01-init", "check": "true\n"}],
        files=[("node1", "/root/app/Dockerfile", "files/Dockerfile", b"FROM nginx:1.25\n", 0o600)])
    lesson, changed = Lesson.sync_from(lesson_def)
    assert changed
    assert [(f.node, f.path, bytes(f.content), f.mode) for f in LessonFile.objects.all()] == [
        ("node1", "/root/app/Dockerfile", b"FROM nginx:1.25\n", 0o600)]
    assert Lesson.sync_from(lesson_def) == (lesson, False)


def test_steps_remember_their_node(two_node_lesson):
    assert {s.number: s.node for s in two_node_lesson.steps.all()} == {1: "node1", 2: "node1",
                                                                       3: "node2"}


def test_each_check_runs_in_its_steps_node(two_node_session, ada, fake_driver):
    by_name = {n.name: n.runtime_id for n in two_node_session.nodes.all()}
    fake_driver.responder = lambda node, argv: (
        ExecResult(0, "") if argv[0] != "/bin/sh" or node.name in argv[2] else ExecResult(1, "wrong node"))
    assert tasks.run_checks(two_node_session.pk) == {2: "done", 3: "done"}
    checks = [(c[1], c[2][2]) for c in fake_driver.calls if c[0] == "exec" and c[2][0] == "/bin/sh"]
    assert checks == [(by_name["node1"], "docker node ls # on node1\n"),
                      (by_name["node2"], "docker info # on node2\n")]


def test_session_event_lists_every_node(two_node_session):
    event = two_node_session.event()
    nodes = list(two_node_session.nodes.order_by("name"))
    assert event["node"] == nodes[0].pk
    assert [(n["id"], n["name"]) for n in event["nodes"]] == [(nodes[0].pk, "node1"),
                                                              (nodes[1].pk, "node2")]


def test_page_has_a_terminal_tab_per_node(client, two_node_session, ada):
    client.force_login(ada)
    page = client.get("/lessons/two-nodes/").content.decode()
    assert 'data-node-names="node1,node2"' in page
    assert page.count('class="term-tab"') == 2
    assert page.count('class="terminal" data-node-name=') == 2
    assert 'data-step="3" data-state="pending" data-node="node2"' in page
    assert '<code class="language-sh">docker swarm join --token &lt;token&gt; node1:2377' in page


@pytest.mark.django_db(transaction=True)
async def test_each_node_has_its_own_terminal(two_node_session, ada, ws_headers, fake_driver):
    nodes = await database_sync_to_async(lambda: list(two_node_session.nodes.order_by("name")))()
    headers = await database_sync_to_async(ws_headers)(ada)
    comms = []
    for node in nodes:
        comm = WebsocketCommunicator(application, f"/ws/nodes/{node.pk}/terminal/", headers=headers)
        assert (await comm.connect())[0]
        comms.append(comm)
    assert [t.node_id for t in fake_driver.terminals] == [n.runtime_id for n in nodes]
    await comms[1].send_to(bytes_data=b"hostname\r")
    assert await comms[1].receive_from(timeout=2) == b"hostname\r"
    assert await comms[0].receive_nothing(timeout=0.2)
    for comm in comms:
        await comm.disconnect()


def test_missing_node_for_a_step_is_could_not_check(two_node_session, ada, fake_driver):
    two_node_session.nodes.filter(name="node2").delete()
    tasks.run_checks(two_node_session.pk)
    progress = StepProgress.objects.get(user=ada, step__number=3)
    assert progress.message == "could not check (this lab has no node node2)"


def test_restart_reuses_both_ready_nodes(two_node_session, ada, two_node_lesson):
    session, needs_start = LabSession.ensure_for(ada, two_node_lesson)
    assert session == two_node_session and needs_start is False
