"""Ada opens what her node publishes on its own origin; Bob and strangers get 403 / 4403.

The "app in the node" is a small HTTP and websocket server on 127.0.0.1, and the
fake node's address points there. The way in is the real one: the site's link
(/nodes/N/ports/P/) redirects to the port origin with a token, the port origin
trades it for its cookie.
"""
import asyncio
import dataclasses
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator, WebsocketCommunicator
from runtime import ExecResult

from labs.sandboxes import tasks
from labs.asgi import application
from labs.sandboxes import portproxy
from labs.sandboxes.portproxy import parse_port_host
from runtime.ports import parse_ports
from urllib.parse import urlsplit

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
        elif target == "/cookie":
            writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: theme=dark; Domain=localhost; Path=/\r\n"
                         b"Set-Cookie: lab_port=forged; Path=/\r\nContent-Length: 0\r\n\r\n")
        elif target == "/missing":
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
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


def headers_all(response, name):
    return [v for k, v in response["headers"] if k.lower() == name]


async def site_link(user, ws_headers, node_pk, port, path="/"):
    """What the site answers to `user` opening the lesson page's port link."""
    headers = await database_sync_to_async(cookie_headers)(ws_headers, user)
    return await get(f"/nodes/{node_pk}/ports/{port}{path}", headers)


async def enter(user, ws_headers, node_pk, port, path="/"):
    """Follow the port link as a browser would: -> (port origin headers, where it lands)."""
    response = await site_link(user, ws_headers, node_pk, port, path)
    assert response["status"] == 302, response
    url = urlsplit(header(response, b"location").decode())
    assert url.netloc == f"n{node_pk}-{port}.localhost" and url.path == "/.lab/enter"
    host = [(b"host", url.netloc.encode())]
    entered = await get(f"{url.path}?{url.query}", host)
    assert entered["status"] == 302, entered
    (cookie,) = headers_all(entered, b"set-cookie")
    return host + [(b"cookie", cookie.split(b";")[0])], header(entered, b"location").decode()


def port_origin(node_pk, port, cookie=b""):
    headers = [(b"host", f"n{node_pk}-{port}.localhost".encode())]
    return headers + ([(b"cookie", cookie)] if cookie else [])


async def test_owner_gets_the_app_on_its_own_origin(app_in_node, ada, ws_headers):
    node, port, app, _ = app_in_node
    headers, landing = await enter(ada, ws_headers, node.pk, port, "/index.html?a=1")
    assert landing == "/index.html?a=1"
    response = await get(landing, headers)
    assert response["status"] == 200
    assert b"Welcome to nginx!" in response["body"]
    assert header(response, b"x-app") == b"yes"
    (request,) = app.requests
    # Served at the origin's root: the app sees its own paths, and its own Host.
    assert request["target"] == "/index.html?a=1"
    assert request["headers"]["host"] == f"n{node.pk}-{port}.localhost"
    # Neither the lab's port cookie nor anything of the site reaches the learner's app.
    assert "cookie" not in request["headers"]
    assert "x-forwarded-prefix" not in request["headers"]


async def test_the_port_cookie_is_host_only_httponly_and_lax(app_in_node, ada, ws_headers):
    node, port, _, _ = app_in_node
    response = await site_link(ada, ws_headers, node.pk, port)
    url = urlsplit(header(response, b"location").decode())
    entered = await get(f"{url.path}?{url.query}", port_origin(node.pk, port))
    (cookie,) = headers_all(entered, b"set-cookie")
    attributes = [a.strip().lower() for a in cookie.decode().split(";")[1:]]
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert not any(a.startswith("domain") for a in attributes)
    assert header(entered, b"location") == b"/"


async def test_the_site_is_never_served_on_a_port_origin(app_in_node, ada, ws_headers):
    node, port, app, _ = app_in_node
    headers, _ = await enter(ada, ws_headers, node.pk, port)
    # /dashboard/ on the port origin is the app's /dashboard/, not the site's page.
    response = await get("/dashboard/", headers)
    assert b"Welcome to nginx!" in response["body"]
    assert app.requests[-1]["target"] == "/dashboard/"


async def test_post_body_and_head(app_in_node, ada, ws_headers):
    node, port, app, _ = app_in_node
    headers, _ = await enter(ada, ws_headers, node.pk, port)
    await get("/form", headers + [(b"content-length", b"8")], method="POST", body=b"name=ada")
    assert app.requests[-1]["body"] == b"name=ada"
    response = await get("/", headers, method="HEAD")
    assert response["status"] == 200 and response["body"] == b""


async def test_chunked_and_large_bodies_are_streamed_and_hop_by_hop_headers_dropped(
        app_in_node, ada, ws_headers):
    node, port, _, _ = app_in_node
    headers, _ = await enter(ada, ws_headers, node.pk, port)
    response = await get("/chunked", headers)
    assert response["body"] == b"hello world"
    assert header(response, b"transfer-encoding") is None
    assert header(response, b"keep-alive") is None
    response = await get("/big", headers)
    assert response["body"] == BIG


async def test_redirects_of_the_app_pass_unchanged(app_in_node, ada, ws_headers):
    node, port, _, _ = app_in_node
    headers, _ = await enter(ada, ws_headers, node.pk, port)
    response = await get("/redirect", headers)
    assert response["status"] == 302
    assert header(response, b"location") == b"/login?next=1"


async def test_the_app_cannot_set_cookies_for_other_hosts_or_the_lab(app_in_node, ada, ws_headers):
    node, port, _, _ = app_in_node
    headers, _ = await enter(ada, ws_headers, node.pk, port)
    response = await get("/cookie", headers)
    assert headers_all(response, b"set-cookie") == [b"theme=dark; Path=/"]


@pytest.mark.parametrize("who", ["bob", "anonymous"])
async def test_others_get_no_way_in(who, app_in_node, bob, ws_headers):
    node, port, app, _ = app_in_node
    response = await site_link(bob if who == "bob" else None, ws_headers, node.pk, port)
    if who == "bob":
        assert response["status"] == 403
    else:  # the site asks a stranger to log in first
        assert response["status"] == 302
        assert header(response, b"location").startswith(b"/accounts/login/")
    response = await get("/", port_origin(node.pk, port))
    assert response["status"] == 403
    assert b"Open it again from the lesson page" in response["body"]
    assert app.requests == []


async def test_the_sites_own_cookie_opens_no_port_origin(app_in_node, ada, ws_headers):
    node, port, app, _ = app_in_node
    site_cookie = dict(await database_sync_to_async(cookie_headers)(ws_headers, ada))[b"cookie"]
    assert (await get("/", port_origin(node.pk, port, site_cookie)))["status"] == 403
    assert app.requests == []


async def test_a_port_cookie_replayed_for_another_port_or_node_is_403(app_in_node, ada, bob,
                                                                      ws_headers):
    node, port, app, _ = app_in_node
    headers, _ = await enter(ada, ws_headers, node.pk, port)
    cookie = dict(headers)[b"cookie"]
    assert (await get("/", port_origin(node.pk, port + 1, cookie)))["status"] == 403
    assert (await get("/", port_origin(node.pk + 1000, port, cookie)))["status"] == 403
    assert app.requests == []
    # A cookie of the right shape but not signed by the site: 403 as well.
    forged = cookie.split(b"=", 1)[0] + b"=" + b'{"u":1,"n":%d,"p":%d}' % (node.pk, port)
    assert (await get("/", port_origin(node.pk, port, forged)))["status"] == 403


async def test_a_token_that_expired_or_names_another_node_is_403(app_in_node, ada, ws_headers,
                                                                  monkeypatch):
    node, port, app, _ = app_in_node
    response = await site_link(ada, ws_headers, node.pk, port)
    url = urlsplit(header(response, b"location").decode())
    # The same token at another node's origin.
    elsewhere = await get(f"{url.path}?{url.query}", port_origin(node.pk + 1000, port))
    assert elsewhere["status"] == 403 and not headers_all(elsewhere, b"set-cookie")
    monkeypatch.setattr(portproxy, "TOKEN_SECONDS", -1)
    expired = await get(f"{url.path}?{url.query}", port_origin(node.pk, port))
    assert expired["status"] == 403 and not headers_all(expired, b"set-cookie")
    assert b"expired" in expired["body"]


async def test_entry_only_redirects_within_the_port_origin(app_in_node, ada, ws_headers):
    node, port, _, _ = app_in_node
    response = await site_link(ada, ws_headers, node.pk, port)
    url = urlsplit(header(response, b"location").decode())
    token = url.query.split("&")[0]
    entered = await get(f"{url.path}?{token}&next=//evil.example/", port_origin(node.pk, port))
    assert header(entered, b"location") == b"/"


def test_port_hosts():
    assert parse_port_host("n5-80.localhost:8000") == (5, 80)
    assert parse_port_host("N5-8080.LOCALHOST") == (5, 8080)
    for host in ("localhost", "localhost:8000", "n5-80.localhost.evil.example", "n5-0.localhost",
                 "n5-70000.localhost", "xn5-80.localhost", "a.n5-80.localhost", "[::1]:8000",
                 "n5-80localhost", ""):
        assert parse_port_host(host) is None, host


async def test_nothing_listening_is_a_502_that_says_so(app_in_node, ada, ws_headers):
    node, _, _, _ = app_in_node
    headers, _ = await enter(ada, ws_headers, node.pk, 1)
    response = await get("/", headers)
    assert response["status"] == 502
    assert b"Nothing answers on port 1 of node1" in response["body"]


async def test_stopped_node_is_503(app_in_node, ada, ws_headers, fake_driver):
    node, port, _, _ = app_in_node
    headers, _ = await enter(ada, ws_headers, node.pk, port)
    fake_driver.nodes.clear()
    assert (await get("/", headers))["status"] == 503


def websocket_to(headers, origin=None):
    """A websocket to /socket of the port origin in `headers`, opened by a page of
    that origin unless `origin` says otherwise."""
    origin = origin or b"http://" + dict(headers)[b"host"]
    return WebsocketCommunicator(application, "/socket", headers=headers + [(b"origin", origin)])


async def test_owner_websocket_is_relayed(app_in_node, ada, ws_headers):
    node, _, _, ws_port = app_in_node
    headers, _ = await enter(ada, ws_headers, node.pk, ws_port)
    comm = websocket_to(headers)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await comm.send_to(text_data="hi")
    assert await comm.receive_from(timeout=5) == "echo:hi"
    await comm.send_to(bytes_data=b"\x00\x01")
    assert await comm.receive_from(timeout=5) == b"\x00\x01"
    await comm.disconnect()


async def test_websockets_without_the_cookie_or_from_another_origin_get_4403(app_in_node, ada,
                                                                            ws_headers):
    node, _, _, ws_port = app_in_node
    comm = websocket_to(port_origin(node.pk, ws_port))
    await comm.connect()
    assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
    # With Ada's cookie, but opened by a page of the site (or any other origin).
    headers, _ = await enter(ada, ws_headers, node.pk, ws_port)
    comm = websocket_to(headers, origin=b"http://localhost")
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
    assert json.loads(await comm.receive_from(timeout=2))["type"] == "checked"  # the run's end
    # Unchanged ports are not pushed again: the next run sends only its end.
    await database_sync_to_async(tasks.run_checks)(ready_session.pk)
    assert json.loads(await comm.receive_from(timeout=2)) == {"type": "checked", "open": []}
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


# ---- instructors: Iris (Ada's instructor) gets through; Ivan, Otto and Bob do not --------

@pytest.fixture
def ada_in_class(classroom, other_classroom):
    return classroom


async def test_adas_instructor_opens_her_port_link(app_in_node, ada_in_class, iris, ws_headers):
    node, port, app, ws_port = app_in_node
    headers, landing = await enter(iris, ws_headers, node.pk, port)
    response = await get(landing, headers)
    assert response["status"] == 200 and b"Welcome to nginx!" in response["body"]
    headers, _ = await enter(iris, ws_headers, node.pk, ws_port)
    comm = websocket_to(headers)
    assert (await comm.connect())[0]
    await comm.send_to(text_data="hi")
    assert await comm.receive_from(timeout=3) == "echo:hi"
    await comm.disconnect()


@pytest.mark.parametrize("who", ["ivan", "otto", "bob"])
async def test_other_instructors_and_classmates_get_403(who, request, app_in_node, ada_in_class,
                                                        ws_headers):
    node, port, app, ws_port = app_in_node
    user = request.getfixturevalue(who)
    assert (await site_link(user, ws_headers, node.pk, port))["status"] == 403
    # A token made for them (as if the site had been fooled) still gets nothing.
    token = portproxy.signing.dumps({"u": user.pk, "n": node.pk, "p": port},
                                    salt=portproxy.TOKEN_SALT)
    entered = await get(f"/.lab/enter?token={token}", port_origin(node.pk, port))
    assert entered["status"] == 403
    assert app.requests == []


def test_a_visit_line_is_one_line_for_pages_served():
    assert portproxy.visit_line(80, 200, "GET", "/linux.png") == "80 200 GET /linux.png"
    assert portproxy.visit_line(8080, 304, "HEAD", "/") == "8080 304 HEAD /"
    # A path cannot add a line of its own or a second field.
    assert portproxy.visit_line(80, 200, "GET", "/a\n80 200 GET /linux.png") == "80 200 GET /a"
    assert portproxy.visit_line(80, 200, "GET", "/a b") == "80 200 GET /a"
    # Not a page served: an error, or a form posted.
    assert portproxy.visit_line(80, 404, "GET", "/linux.png") is None
    assert portproxy.visit_line(80, 502, "GET", "/") is None
    assert portproxy.visit_line(80, 200, "POST", "/") is None


def _visits_written(fake_driver):
    return [call[2][-1] for call in fake_driver.calls
            if call[0] == "exec" and portproxy.VISITS_FILE in " ".join(call[2])]


async def visit(path, headers):
    """GET through the port origin, and let the proxy finish what it does after
    the response went out (recording the visit, asking for a check)."""
    comm = HttpCommunicator(application, "GET", path, headers=headers)
    response = await comm.get_response(timeout=5)
    await comm.wait(timeout=5)
    return response


async def test_the_owners_visit_is_written_into_the_node_once(app_in_node, ada, ws_headers,
                                                              fake_driver, monkeypatch):
    node, port, app, _ = app_in_node
    portproxy._written_visits.clear()
    asked = []

    async def arequest(session_id, since=None):
        # The visit is in the node before the check that reads it is asked for.
        asked.append((session_id, list(_visits_written(fake_driver))))
    monkeypatch.setattr(portproxy.checks, "arequest", arequest)
    headers, landing = await enter(ada, ws_headers, node.pk, port, "/index.html?a=1")
    assert (await visit(landing, headers))["status"] == 200
    assert asked == [(node.session_id, [f"{port} 200 GET /index.html"])]
    assert (await visit(landing, headers))["status"] == 200  # the same page again: no new line
    assert (await visit("/missing", headers))["status"] == 404  # not served: no line
    # Every answer still asks for a check (a 404 page may be what a step wants to see).
    assert len(asked) == 3
    assert _visits_written(fake_driver) == [f"{port} 200 GET /index.html"]


async def test_an_instructors_visit_is_not_the_learners_work(app_in_node, ada_in_class, iris,
                                                             ws_headers, fake_driver, monkeypatch):
    node, port, app, _ = app_in_node
    portproxy._written_visits.clear()
    asked = []

    async def arequest(session_id, since=None):
        asked.append(session_id)
    monkeypatch.setattr(portproxy.checks, "arequest", arequest)
    headers, landing = await enter(iris, ws_headers, node.pk, port)
    assert (await visit(landing, headers))["status"] == 200
    assert asked
    assert _visits_written(fake_driver) == []
