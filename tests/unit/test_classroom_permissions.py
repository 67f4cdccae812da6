"""Only Iris sees Iris's classroom: every page, JSON, CSV, action and socket, tried by the others.

Ada and Bob are learners in it, Ivan teaches another classroom, Otto is outside,
and an anonymous visitor has no session at all.
"""
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from labs.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

OTHERS = ["ada", "bob", "ivan", "otto"]


def pages(room, ada, node_pk=None):
    base = f"/classrooms/{room.pk}/"
    found = [("get", base), ("get", base + "grid.json"), ("get", base + "progress.csv"),
             ("get", base + f"learners/{ada.pk}/progress.json"),
             ("post", base + "message"), ("post", base + f"learners/{ada.pk}/lower-hand"),
             ("post", base + f"learners/{ada.pk}/reset")]
    if node_pk:
        found.append(("get", base + f"nodes/{node_pk}/watch/"))
    return found


@pytest.mark.parametrize("who", OTHERS)
def test_others_get_403_everywhere(who, request, client, classroom, other_classroom, ada, ready_session):
    client.force_login(request.getfixturevalue(who))
    for method, url in pages(classroom, ada, ready_session.node1().pk):
        response = getattr(client, method)(url, {"text": "hi", "lesson": "first-containers"})
        assert response.status_code == 403, (who, url)


def test_anonymous_is_sent_to_log_in(client, classroom, ada):
    for method, url in pages(classroom, ada):
        assert getattr(client, method)(url).status_code == 302, url


def test_iris_gets_through(client, classroom, iris, ada, ready_session):
    client.force_login(iris)
    for method, url in pages(classroom, ada, ready_session.node1().pk):
        if method == "get":
            assert client.get(url).status_code == 200, url


def test_iris_cannot_reach_a_learner_outside_her_classroom(client, classroom, other_classroom, iris, otto):
    client.force_login(iris)
    assert client.get(f"/classrooms/{classroom.pk}/learners/{otto.pk}/progress.json").status_code == 403
    assert client.get(f"/classrooms/{other_classroom.pk}/").status_code == 403


def test_instructor_role_is_the_group(client, classroom, ada):
    from django.contrib.auth.models import Group
    # An instructor who does not own the classroom is still refused...
    ada.groups.add(Group.objects.get(name="instructors"))
    client.force_login(ada)
    assert client.get("/classrooms/").status_code == 200
    assert client.get(f"/classrooms/{classroom.pk}/").status_code == 403


@pytest.mark.parametrize("who", OTHERS + ["anonymous"])
async def test_others_get_4403_on_the_grid_socket(who, request, classroom, other_classroom, ws_headers):
    user = None if who == "anonymous" else request.getfixturevalue(who)
    headers = await database_sync_to_async(ws_headers)(user)
    comm = WebsocketCommunicator(application, f"/ws/classrooms/{classroom.pk}/", headers=headers)
    connected, _ = await comm.connect()
    assert connected
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}


async def test_bob_cannot_open_adas_terminal_or_see_her_progress(classroom, ready_session, bob, ws_headers,
                                                                 fake_driver):
    node = await database_sync_to_async(ready_session.node1)()
    headers = await database_sync_to_async(ws_headers)(bob)
    comm = WebsocketCommunicator(application, f"/ws/nodes/{node.pk}/terminal/", headers=headers)
    await comm.connect()
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
    assert fake_driver.terminals == []
