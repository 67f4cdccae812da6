"""Published ports of a learner's node, each on an origin of its own.

    http://n<node pk>-<port>.<LAB_PORTS_DOMAIN>[:<site port>]/<path>
        ->  http://<node address>:<port>/<path>

Why an origin of its own: a learner's app is code the lab did not write. Served
under the site's origin, a script in it could read the site's pages and post as
whoever opened the link (the learner's instructor, say). On its own origin the
browser's same-origin policy keeps it out: it gets neither the site's cookies
(they are host-only) nor any page of the site. The app is served at its origin's
root, so its absolute links and websockets work as they would on their own.

Access, in three hops:
1. The lesson page links to /nodes/<pk>/ports/<port>/ on the site
   (`views.open_port`). For the node's owner and the instructors of the owner's
   classrooms it redirects to the port origin's ENTER_PATH with a signed token
   that names user, node and port and lives TOKEN_SECONDS.
2. The port origin trades the token for a cookie of its own (COOKIE_NAME:
   host-only, HttpOnly, SameSite=Lax) and redirects to the page asked for.
3. Every request and websocket on the port origin needs that cookie, signed for
   this node and port, held by a user who may still see the node. Anyone else
   gets a 403 page (websockets: closed with 4403). The cookie never reaches the
   app, and the app cannot set a cookie for any other host.

Upstream HTTP goes through httpx (streamed both ways, keep-alive per node
address); websockets are relayed with the `websockets` client.

Visits are lesson work ("open your website"): each page the node's owner was
served (status below 400, 304 included) is written into the node, one line
`PORT STATUS METHOD PATH` in VISITS_FILE, before a check is asked for. A check
reads that file, not the app's own log: the log reaches Docker a moment after
the response, so a check run at once could miss it, and nothing would ask again.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote, urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing

from labs.classrooms.access import visible_node
from runtime import LabRuntimeError, get_driver

from . import checks
from .models import LabNode

log = logging.getLogger(__name__)

HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
              b"proxy-connection", b"te", b"trailer", b"trailers", b"transfer-encoding",
              b"upgrade"}
MAX_REQUEST_BODY = 10 * 1024 * 1024
CONNECT_TIMEOUT = 5.0
RESPONSE_TIMEOUT = 60.0
CLOSE_FORBIDDEN = 4403
CLOSE_UPSTREAM_FAILED = 1011

# A path of the port origin the proxy answers itself (never the app's).
ENTER_PATH = "/.lab/enter"
COOKIE_NAME = "lab_port"
TOKEN_SECONDS = 60
# The salts keep the names of the days this module was labs.portproxy: a renamed
# salt would void every token and cookie handed out before an upgrade.
TOKEN_SALT = "labs.portproxy.token"
COOKIE_SALT = "labs.portproxy.cookie"
VISITS_FILE = "/root/.lab_visits"
VISITS_REMEMBERED = 4096  # visits already written (per node, port, path, status)
DENIED_PAGE = (b"<!doctype html><meta charset=utf-8><title>Not allowed</title>"
               b"<h1>403: not allowed</h1><p>This link has expired, or it is for a lab "
               b"machine that is not yours. Open it again from the lesson page.</p>\n")


# ---- the port origin's name, tokens and cookies ------------------------------

def port_host(node_pk: int, port: int) -> str:
    return f"n{int(node_pk)}-{int(port)}.{settings.LAB_PORTS_DOMAIN}"


def parse_port_host(host: str) -> tuple | None:
    """(node pk, port) if `host` (a Host header, maybe with :port) is a port origin."""
    name = host.lower()
    if name.startswith("["):
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    suffix = "." + settings.LAB_PORTS_DOMAIN
    if not name.endswith(suffix):
        return None
    match = re.fullmatch(r"n(\d{1,10})-(\d{1,5})", name[:-len(suffix)])
    if not match:
        return None
    port = int(match.group(2))
    return (int(match.group(1)), port) if 0 < port <= 65535 else None


def enter_url(request, node_pk: int, port: int, user, path: str, host=None) -> str:
    """Where the site sends `user` to open `path` of the node's port: its origin,
    with a token. A node on another host (`host`, with a gateway) has its ports
    on that host's gateway, under the ports domain the host reported."""
    token = signing.dumps({"u": user.pk, "n": int(node_pk), "p": int(port)}, salt=TOKEN_SALT,
                          key=_key())
    if host is not None and host.gateway_url and host.ports_domain:
        gateway = urlsplit(host.gateway_url)
        origin = (f"{gateway.scheme}://n{int(node_pk)}-{int(port)}.{host.ports_domain}"
                  + (f":{gateway.port}" if gateway.port else ""))
    else:
        site_host = request.get_host()
        site_port = site_host.rsplit(":", 1)[1] if ":" in site_host.rsplit("]", 1)[-1] else ""
        origin = (f"{request.scheme}://{port_host(node_pk, port)}"
                  + (f":{site_port}" if site_port else ""))
    return f"{origin}{ENTER_PATH}?token={quote(token)}&next={quote(path, safe='')}"


def _key() -> str:
    """Port tokens and cookies are made on the site and read on the node's host
    (its gateway): signed with the key both have, the gateway key."""
    from .gateway import key
    return key()


def _claims(value: str, salt: str, max_age: int, node_pk: int, port: int) -> int | None:
    """The user pk in a signed token or cookie, if it is valid and names this node and port."""
    try:
        data = signing.loads(value, salt=salt, max_age=max_age, key=_key())
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("n") != node_pk or data.get("p") != port:
        return None
    user = data.get("u")
    return user if isinstance(user, int) else None


def _header(scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return b""


def _cookie(scope, name: str) -> str:
    jar = SimpleCookie()
    for key, value in scope.get("headers", ()):
        if key.lower() == b"cookie":
            with contextlib.suppress(Exception):
                jar.load(value.decode("latin-1"))
    return jar[name].value if name in jar else ""


async def _respond(send, status: int, body: bytes, headers=(), html=False):
    headers = list(headers)
    if body:
        kind = b"text/html; charset=utf-8" if html else b"text/plain; charset=utf-8"
        headers.append((b"content-type", kind))
    headers += [(b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@database_sync_to_async
def _visible_node(user_pk, node_pk):
    user = get_user_model().objects.filter(pk=user_pk, is_active=True).first()
    return visible_node(user, node_pk) if user is not None else None


async def _address(node) -> str:
    """The node's address on its session network ("" when it is not running)."""
    if node.state != LabNode.READY or not node.runtime_id:
        return ""
    try:
        found = await asyncio.to_thread(get_driver().get_node, node.runtime_id)
    except LabRuntimeError:
        return ""
    return found.address


# ---- the ASGI app -------------------------------------------------------------

def by_host(port_app, site_app):
    """An ASGI app that sends requests for a port origin to `port_app`, the rest to `site_app`."""
    async def app(scope, receive, send):
        if scope["type"] in ("http", "websocket") and parse_port_host(
                _header(scope, b"host").decode("latin-1")):
            return await port_app(scope, receive, send)
        return await site_app(scope, receive, send)
    return app


class PortOrigin:
    """ASGI app for every request to n<pk>-<port>.<LAB_PORTS_DOMAIN>."""

    async def __call__(self, scope, receive, send):
        node_pk, port = parse_port_host(_header(scope, b"host").decode("latin-1"))
        if scope["type"] == "http" and scope["path"] == ENTER_PATH:
            return await self.enter(scope, send, node_pk, port)
        user_pk = _claims(_cookie(scope, COOKIE_NAME), COOKIE_SALT,
                          settings.LAB_PORTS_COOKIE_HOURS * 3600, node_pk, port)
        node = await _visible_node(user_pk, node_pk) if user_pk is not None else None
        if scope["type"] == "websocket":
            return await self.websocket(scope, receive, send, node, port)
        if node is None:
            return await _respond(send, 403, DENIED_PAGE, html=True)
        address = await _address(node)
        if not address:
            return await _respond(send, 503, b"This lab machine is not running. "
                                             b"Start it from the lesson page.\n")
        owner = node.session.user_id == user_pk
        await HttpForward(scope, receive, send, node, address, port, owner).run()

    async def enter(self, scope, send, node_pk, port):
        """Trade the site's short-lived token for this origin's cookie."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        user_pk = _claims((query.get("token") or [""])[0], TOKEN_SALT, TOKEN_SECONDS,
                          node_pk, port)
        if user_pk is None or await _visible_node(user_pk, node_pk) is None:
            return await _respond(send, 403, DENIED_PAGE, html=True)
        target = (query.get("next") or ["/"])[0]
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = "/"
        value = signing.dumps({"u": user_pk, "n": node_pk, "p": port}, salt=COOKIE_SALT,
                              key=_key())
        cookie = (f"{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; "
                  f"Max-Age={settings.LAB_PORTS_COOKIE_HOURS * 3600}")
        if scope.get("scheme") == "https":
            cookie += "; Secure"
        await _respond(send, 302, b"", [(b"location", target.encode("latin-1")),
                                        (b"set-cookie", cookie.encode("latin-1")),
                                        (b"referrer-policy", b"no-referrer")])

    async def websocket(self, scope, receive, send, node, port):
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        # A page of another origin may not use this origin's cookie to talk to the app.
        origin = _header(scope, b"origin").decode("latin-1")
        host = _header(scope, b"host").decode("latin-1")
        foreign = bool(origin) and origin.split("://", 1)[-1].lower() != host.lower()
        address = await _address(node) if node is not None and not foreign else ""
        if node is None or foreign or not address:
            # Accept first: a close before the handshake reaches the page only as 1006.
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close",
                        "code": CLOSE_FORBIDDEN if node is None or foreign
                        else CLOSE_UPSTREAM_FAILED})
            return
        await WebsocketForward(scope, receive, send, address, port).run()


def _target(scope) -> str:
    """The path and query to ask the app for: the request's own."""
    path = (scope.get("raw_path") or b"").decode("latin-1") or \
        quote(scope["path"], safe="/%:@!$&'()*+,;=~")
    if scope.get("query_string"):
        path += "?" + scope["query_string"].decode("latin-1")
    return path or "/"


def _forward_headers(scope) -> list:
    """Request headers for the app: hop-by-hop headers and the lab's own cookie removed."""
    connection_named = {t.strip().lower().encode() for t in
                        _header(scope, b"connection").decode("latin-1").split(",") if t.strip()}
    drop = HOP_BY_HOP | connection_named | {b"expect"}
    ours = {COOKIE_NAME, settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME}
    headers = []
    for key, value in scope.get("headers", ()):
        key = key.lower()
        if key in drop or key.startswith(b"sec-websocket-"):
            continue
        if key == b"cookie":
            kept = [c for c in value.decode("latin-1").split(";")
                    if c.strip() and c.split("=", 1)[0].strip() not in ours]
            if not kept:
                continue
            value = ";".join(kept).strip().encode("latin-1")
        headers.append((key, value))
    client = scope.get("client") or ("", 0)
    headers += [(b"x-forwarded-for", str(client[0]).encode()),
                (b"x-forwarded-host", _header(scope, b"host")),
                (b"x-forwarded-proto", b"https" if scope.get("scheme") in ("https", "wss") else b"http")]
    return headers


def _app_cookie(value: bytes) -> bytes | None:
    """A Set-Cookie of the app, kept to its own host; None for a cookie named like the lab's."""
    text = value.decode("latin-1")
    parts = text.split(";")
    if parts[0].split("=", 1)[0].strip() == COOKIE_NAME:
        return None
    kept = [parts[0]] + [p for p in parts[1:] if p.split("=", 1)[0].strip().lower() != "domain"]
    return ";".join(kept).encode("latin-1")


# One httpx client per event loop (Daphne has one; tests start a loop per test).
_clients: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _client():
    import httpx

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # trust_env=False: a proxy set for the site's own traffic must not carry
        # requests meant for a node.
        client = httpx.AsyncClient(
            trust_env=False, follow_redirects=False,
            timeout=httpx.Timeout(RESPONSE_TIMEOUT, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=20,
                                keepalive_expiry=5.0))
        # The app sees the browser's headers, not httpx's defaults (Accept-Encoding,
        # User-Agent and the like).
        client.headers.clear()
        _clients[loop] = client
    return client


class BodyTooLarge(Exception):
    pass


class BrowserLeft(Exception):
    pass


_written_visits: dict = {}  # (runtime id, port, visit line) -> None, oldest first


def visit_line(port: int, status: int, method: str, path: str) -> str | None:
    """The line a visit adds to VISITS_FILE, or None for a visit that is not one
    (an error status, a method other than GET or HEAD). The path is cut at its
    first whitespace or control character, so one visit is always one line."""
    if status >= 400 or method not in ("GET", "HEAD"):
        return None
    path = re.split(r"[\s\x00-\x1f\x7f]", path, maxsplit=1)[0] or "/"
    return f"{port} {status} {method} {path[:500]}"


async def record_visit(node, port: int, status: int, method: str, path: str) -> bool:
    """Write the visit into the node (once per node, port, path and status);
    True when a line was written."""
    line = visit_line(port, status, method, path)
    key = (node.runtime_id, port, line)
    if line is None or key in _written_visits:
        return False
    result = await get_driver().exec(
        node.runtime_id, ["/bin/sh", "-c", 'printf "%s\\n" "$1" >> ' + VISITS_FILE, "sh", line],
        timeout=10)
    if result.exit_code != 0:
        log.warning("could not record a visit in node %s: %s", node.pk, result.output[-200:])
        return False
    _written_visits[key] = None
    while len(_written_visits) > VISITS_REMEMBERED:
        del _written_visits[next(iter(_written_visits))]
    return True


class HttpForward:
    def __init__(self, scope, receive, send, node, address: str, port: int,
                 owner: bool = False):
        self.scope, self.receive, self.send = scope, receive, send
        self.node, self.address, self.port = node, address, port
        self.owner = owner  # the node's learner (an instructor's visit is not their work)
        self.started = False
        self.status = 0
        self.body_done = asyncio.Event()

    async def run(self):
        import httpx

        relay = asyncio.create_task(self._relay())
        watcher = asyncio.create_task(self._wait_disconnect())
        try:
            await asyncio.wait({watcher, relay}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, relay):
                task.cancel()
            for task in (watcher, relay):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finished = relay.done() and not relay.cancelled()
        exc = relay.exception() if finished else None
        if self.owner and finished and exc is None:  # visiting an app can be a lesson step
            try:
                await record_visit(self.node, self.port, self.status,
                                   self.scope["method"].upper(), self.scope["path"])
            except Exception:
                log.exception("could not record a visit to node %s", self.node.pk)
        if self.started:
            try:
                await checks.arequest(self.node.session_id)
            except Exception:
                log.exception("could not check after a visit to node %s", self.node.pk)
        if exc is None or isinstance(exc, BrowserLeft):
            return
        log.info("proxying to %s:%s failed: %r", self.address, self.port, exc)
        if self.started:  # the headers went out: end the body where it broke
            with contextlib.suppress(Exception):
                await self.send({"type": "http.response.body", "body": b""})
        elif isinstance(exc, BodyTooLarge):
            await _respond(self.send, 413, b"Request body too large for the lab proxy.\n")
        elif isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            await _respond(self.send, 502, (
                f"Nothing answers on port {self.port} of {self.node.name} "
                f"({type(exc).__name__}). Is a container publishing it?\n").encode())
        else:
            status = 504 if isinstance(exc, httpx.TimeoutException) else 502
            await _respond(self.send, status, f"The app on port {self.port} did not answer "
                                              f"properly ({type(exc).__name__}).\n".encode())

    async def _body(self):
        """The browser's request body, streamed to the app as it comes."""
        size = 0
        try:
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    raise BrowserLeft()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_REQUEST_BODY:
                    raise BodyTooLarge()
                if chunk:
                    yield chunk
                if not message.get("more_body"):
                    return
        finally:
            self.body_done.set()

    async def _wait_disconnect(self):
        await self.body_done.wait()  # until then, _body is the one reading
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return

    async def _relay(self):
        import httpx

        headers = _forward_headers(self.scope)
        method = self.scope["method"].upper()
        length = _header(self.scope, b"content-length")
        has_body = bool(length.strip(b"0")) or bool(_header(self.scope, b"transfer-encoding"))
        if has_body:
            content = self._body()
        else:
            self.body_done.set()
            content = None
            headers = [(k, v) for k, v in headers if k != b"content-length"]
        url = httpx.URL(scheme="http", host=self.address, port=self.port,
                        raw_path=_target(self.scope).encode("latin-1"))
        client = _client()
        request = client.build_request(method, url, headers=headers, content=content)
        response = await client.send(request, stream=True)
        try:
            connection_named = {t.strip().lower().encode() for t in
                                response.headers.get("connection", "").split(",") if t.strip()}
            out = []
            for key, value in response.headers.raw:
                key = key.lower()
                if key in HOP_BY_HOP or key in connection_named:
                    continue
                if key == b"set-cookie":
                    value = _app_cookie(value)
                    if value is None:
                        continue
                out.append((key, value))
            await self.send({"type": "http.response.start", "status": response.status_code,
                             "headers": out})
            self.started = True
            self.status = response.status_code
            async for data in response.aiter_raw():
                await self.send({"type": "http.response.body", "body": data, "more_body": True})
            await self.send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


class WebsocketForward:
    """Relays one websocket between the browser and the app in the node."""

    def __init__(self, scope, receive, send, address: str, port: int):
        self.scope, self.receive, self.send = scope, receive, send
        self.address, self.port = address, port

    async def run(self):
        from websockets.asyncio.client import connect

        uri = f"ws://{self.address}:{self.port}{_target(self.scope)}"
        headers = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in _forward_headers(self.scope)
                   if k not in (b"host", b"origin", b"user-agent")]
        origin = _header(self.scope, b"origin").decode("latin-1") or None
        protocols = self.scope.get("subprotocols") or None
        try:
            upstream = await connect(uri, additional_headers=headers, origin=origin,
                                     subprotocols=protocols, open_timeout=CONNECT_TIMEOUT,
                                     max_size=None, compression=None, user_agent_header=None,
                                     proxy=None)
        except Exception as exc:
            log.info("websocket to %s failed: %s", uri, exc)
            await self.send({"type": "websocket.accept"})
            await self.send({"type": "websocket.close", "code": CLOSE_UPSTREAM_FAILED})
            return
        accept = {"type": "websocket.accept"}
        if upstream.subprotocol:
            accept["subprotocol"] = upstream.subprotocol
        await self.send(accept)
        up = asyncio.create_task(self._from_browser(upstream))
        down = asyncio.create_task(self._from_app(upstream))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            for task in (up, down):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await upstream.close()
        if down.done() and not down.cancelled():
            code = upstream.close_code or 1000
            with contextlib.suppress(Exception):
                await self.send({"type": "websocket.close",
                                 "code": code if code not in (1005, 1006, 1015) else 1000})

    async def _from_browser(self, upstream):
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    async def _from_app(self, upstream):
        from websockets.exceptions import ConnectionClosed
        try:
            async for data in upstream:
                if isinstance(data, bytes):
                    await self.send({"type": "websocket.send", "bytes": data})
                else:
                    await self.send({"type": "websocket.send", "text": data})
        except ConnectionClosed:
            pass
