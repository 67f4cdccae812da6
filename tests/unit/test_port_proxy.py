"""Ada opens what her node publishes through the site; Bob and strangers get 403 / 4403.

The "app in the node" is a small HTTP and websocket server on 127.0.0.1, and the
fake node's address points there.
"""
import asyncio
import dataclasses
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator, WebsocketCommunicator
from runtime import ExecResult

from labs import tasks
from labs.asgi import application
from labs.portproxy import parse_ports

pytestmark = pytest.mark.django_db(transaction=True)

BIG = b"x" * (256 * 1024)


class App:
    """A tiny HTTP/1.1 server: records requests, answers by path."""

    def __init__(self):
        self.requests = []

    async def handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        self.requests.append({"method": method, "target": target, "headers": headers, "body": body})
        if target == "/redirect":
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /login?next=1\r\nContent-Length: 0\r\n\r\n")
        elif target == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\n"
                         b"Content-Type: text/plain\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        elif target == "/big":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG)
        else:
            page = b"<h1>Welcome to nginx!</h1><img src=\"/linux.png\">"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-App: yes\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(page) + (page if method != "HEAD" else b""))
        await writer.drain()
        writer.close()


@pytest.fixture
async def app_in_node(ready_session, fake_driver):
    """Ada's node1 'publishes' the App on 127.0.0.1:<port>; returns (LabNode, port, app)."""
    from websockets.asyncio.server import serve

    app = App()
    server = await asyncio.start_server(app.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    node = await database_sync_to_async(ready_session.node1)()
    fake = fake_driver.nodes[node.runtime_id]
    fake_driver.nodes[node.runtime_id] = dataclasses.replace(fake, address="127.0.0.1")

    async def echo(ws):
        async for message in ws:
            await ws.send(message if isinstance(message, bytes) else "echo:" + message)
    ws_server = await serve(echo, "127.0.0.1", 0)
    ws_port = ws_server.sockets[0].getsockname()[1] if hasattr(ws_server, "sockets") else None
    yield node, port, app, ws_port
    server.close()
    ws_server.close()


def cookie_headers(ws_headers, user):
    return [(b"host", b"localhost")] + ws_headers(user)


async def get(path, headers, method="GET", body=b""):
    comm = HttpCommunicator(application, method, path, body=body, headers=headers)
    return await comm.get_response(timeout=5)


def header(response, name):
    return dict((k.lower(), v) for k, v in response["headers"]).get(name)


async def test_owner_gets_the_app_through_the_site(app_in_node, ada, ws_headers):
    node, port, app, _ = app_in_node
    headers = await database_sync_to_async(cookie_headers)(ws_headers, ada)
    response = await get(f"/nodes/{node.pk}/ports/{port}/index.html?a=1", headers)
    assert response["status"] == 200
    assert b"Welcome to nginx!" in response["body"]
    assert header(response, b"x-app") == b"yes"
    (request,) = app.requests
    assert request["target"] == "/index.html?a=1"
    # The lab's own session cookie never reaches the learner's app.
    assert "cookie" not in request["headers"]
    assert request["headers"]["x-forwarded-prefix"] == f"/nodes/{node.pk}/ports/{port}"
    assert request["headers"]["connection"] == "close"


async def test_post_body_and_head(app_in_node, ada, ws_headers):
    node, port, app, _ = app_in_node
    headers = await database_sync_to_async(cookie_headers)(ws_headers, ada)
    await get(f"/nodes/{node.pk}/ports/{port}/form", headers, method="POST", body=b"name=ada")
    assert app.requests[-1]["body"] == b"name=ada"
    response = await get(f"/nodes/{node.pk}/ports/{port}/", headers, method="HEAD")
    assert response["status"] == 200 and response["body"] == b""


async def test_chunked_and_large_bodies_are_streamed_and_hop_by_hop_headers_dropped(
        app_in_node, ada, ws_headers):
    node, port, _, _ = app_in_node
    headers = await database_sync_to_async(cookie_headers)(ws_headers, ada)
    response = await get(f"/nodes/{node.pk}/ports/{port}/chunked", headers)
    assert response["body"] == b"hello world"
    assert header(response, b"transfer-encoding") is None
    assert header(response, b"keep-alive") is None
    response = await get(f"/nodes/{node.pk}/ports/{port}/big", headers)
    assert response["body"] == BIG


async def test_redirects_of_the_app_stay_under_the_prefix(app_in_node, ada, ws_headers):
    node, port, _, _ = app_in_node
    headers = await database_sync_to_async(cookie_headers)(ws_headers, ada)
    response = await get(f"/nodes/{node.pk}/ports/{port}/redirect", headers)
    assert response["status"] == 302
    assert header(response, b"location") == f"/nodes/{node.pk}/ports/{port}/login?next=1".encode()


async def test_absolute_links_of_a_proxied_page_are_sent_back_under_its_prefix(app_in_node, ada,
                                                                               ws_headers):
    node, port, _, _ = app_in_node
    headers = await database_sync_to_async(cookie_headers)(ws_headers, ada)
    referer = f"http://localhost/nodes/{node.pk}/ports/{port}/".encode()
    response = await get("/linux.png", headers + [(b"referer", referer)])
    assert response["status"] == 307
    assert header(response, b"location") == f"/nodes/{node.pk}/ports/{port}/linux.png".encode()
    # Without such a Referer, the site's own pages are untouched.
    response = await get("/linux.png", headers + [(b"referer", b"http://localhost/lessons/x/")])
    assert response["status"] == 404


async def test_bare_prefix_gets_a_trailing_slash(app_in_node, ada, ws_headers):
    node, port, _, _ = app_in_node
    headers = await database_sync_to_async(cookie_headers)(ws_headers, ada)
    response = await get(f"/nodes/{node.pk}/ports/{port}", headers)
    assert response["status"] == 301
    assert header(response, b"location") == f"/nodes/{node.pk}/ports/{port}/".encode()


@pytest.mark.parametrize("who", ["bob", "anonymous"])
async def test_others_get_403(who, app_in_node, bob, ws_headers):
    node, port, app, _ = app_in_node
    user = bob if who == "bob" else None
    headers = await database_sync_to_async(cookie_headers)(ws_headers, user)
    response = await get(f"/nodes/{node.pk}/ports/{port}/", headers)
    assert response["status"] == 403
    assert app.requests == []


async def test_nothing_listening_is_a_502_that_says_so(app_in_node, ada, ws_headers):
    node, _, _, _ = app_in_node
    headers = await database_sync_to_async(cookie_headers)(ws_headers, ada)
    response = await get(f"/nodes/{node.pk}/ports/1/", headers)
    assert response["status"] == 502
    assert b"Nothing answers on port 1 of node1" in response["body"]


async def test_stopped_node_is_503(app_in_node, ada, ws_headers, fake_driver):
    node, port, _, _ = app_in_node
    fake_driver.nodes.clear()
    headers = await database_sync_to_async(cookie_headers)(ws_headers, ada)
    assert (await get(f"/nodes/{node.pk}/ports/{port}/", headers))["status"] == 503


async def test_owner_websocket_is_relayed(app_in_node, ada, ws_headers):
    node, _, _, ws_port = app_in_node
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = WebsocketCommunicator(application, f"/nodes/{node.pk}/ports/{ws_port}/socket",
                                 headers=headers)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.send_to(text_data="hi")
    assert await comm.receive_from(timeout=5) == "echo:hi"
    await comm.send_to(bytes_data=b"\x00\x01")
    assert await comm.receive_from(timeout=5) == b"\x00\x01"
    await comm.disconnect()


@pytest.mark.parametrize("who", ["bob", "anonymous"])
async def test_others_websocket_is_closed_with_4403(who, app_in_node, bob, ws_headers):
    node, _, _, ws_port = app_in_node
    user = bob if who == "bob" else None
    headers = await database_sync_to_async(ws_headers)(user)
    comm = WebsocketCommunicator(application, f"/nodes/{node.pk}/ports/{ws_port}/socket",
                                 headers=headers)
    await comm.connect()
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}


def test_parse_ports():
    text = ("web1\t0.0.0.0:8080->80/tcp, :::8080->80/tcp\n"
            "db\t3306/tcp, 33060/tcp\n"
            "dns\t0.0.0.0:53->53/udp\n"
            "range\t0.0.0.0:9000-9002->9000-9002/tcp\n"
            "other\t127.0.0.1:81->80/tcp\n"
            "quiet\t\n")
    assert parse_ports(text) == [
        {"port": 81, "target": 80, "container": "other"},
        {"port": 8080, "target": 80, "container": "web1"},
        {"port": 9000, "target": 9000, "container": "range"},
        {"port": 9001, "target": 9001, "container": "range"},
        {"port": 9002, "target": 9002, "container": "range"},
    ]
    assert parse_ports("") == []


async def test_checks_refresh_the_ports_and_push_them(ready_session, ada, ws_headers, fake_driver):
    fake_driver.responder = lambda node, argv: (
        ExecResult(0, "web1\t0.0.0.0:8080->80/tcp, :::8080->80/tcp\n") if argv[0] == "docker"
        else ExecResult(0, ""))
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = WebsocketCommunicator(application, "/ws/lessons/first-containers/", headers=headers)
    assert (await comm.connect())[0]
    await comm.receive_from(timeout=2)  # the session event
    await database_sync_to_async(tasks.run_checks)(ready_session.pk)
    event = {"type": "step"}
    while event["type"] == "step":  # the step results come first
        event = json.loads(await comm.receive_from(timeout=2))
    node = await database_sync_to_async(ready_session.node1)()
    assert event == {"type": "ports", "node": node.pk, "name": "node1", "ports": [
        {"port": 8080, "target": 80, "container": "web1", "url": f"/nodes/{node.pk}/ports/8080/"}]}
    # Unchanged ports are not pushed again.
    await database_sync_to_async(tasks.run_checks)(ready_session.pk)
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


# ---- instructors: Iris (Ada's instructor) gets through; Ivan, Otto and Bob do not --------

@pytest.fixture
def ada_in_class(classroom, other_classroom):
    return classroom


async def test_adas_instructor_opens_her_port_link(app_in_node, ada_in_class, iris, ws_headers):
    node, port, app, ws_port = app_in_node
    headers = await database_sync_to_async(cookie_headers)(ws_headers, iris)
    response = await get(f"/nodes/{node.pk}/ports/{port}/", headers)
    assert response["status"] == 200 and b"Welcome to nginx!" in response["body"]
    comm = WebsocketCommunicator(application, f"/nodes/{node.pk}/ports/{ws_port}/socket",
                                 headers=await database_sync_to_async(ws_headers)(iris))
    assert (await comm.connect())[0]
    await comm.send_to(text_data="hi")
    assert await comm.receive_from(timeout=3) == "echo:hi"
    await comm.disconnect()


@pytest.mark.parametrize("who", ["ivan", "otto", "bob"])
async def test_other_instructors_and_classmates_get_403_and_4403(who, request, app_in_node, ada_in_class,
                                                                 ws_headers):
    node, port, app, ws_port = app_in_node
    user = request.getfixturevalue(who)
    headers = await database_sync_to_async(cookie_headers)(ws_headers, user)
    assert (await get(f"/nodes/{node.pk}/ports/{port}/", headers))["status"] == 403
    assert app.requests == []
    comm = WebsocketCommunicator(application, f"/nodes/{node.pk}/ports/{ws_port}/socket",
                                 headers=await database_sync_to_async(ws_headers)(user))
    await comm.connect()
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
