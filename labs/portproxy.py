"""Published ports of a learner's node, opened through the site.

    /nodes/<LabNode pk>/ports/<port>/<path>   ->   http://<node address>:<port>/<path>

A raw ASGI app (mounted in labs.asgi in front of Django and the websocket
router) proxies HTTP and websockets. Only the node's owner and the instructors
of the owner's classrooms get through: anyone else gets 403 (websockets:
closed with 4403).

HTTP is a small HTTP/1.1 client on asyncio streams: one upstream connection
per request (`Connection: close`), the request body read first (lab apps get
small requests; capped at MAX_REQUEST_BODY), the response streamed back as it
arrives (chunked bodies are de-chunked; the ASGI server re-frames them).
Hop-by-hop headers are dropped both ways, as are the site's own cookies on
the way in (the learner's app has no business with the lab's session).

Absolute links: an app that links to `/linux.png` means its own root, not the
site's. Two things keep those working without rewriting bodies:
- `Location` headers pointing at the app (`/x`, `http://<node>:<port>/x`) get
  the prefix added;
- a request outside the prefix whose Referer is a proxied page
  (`/nodes/N/ports/P/...`) is redirected (307) to the same path under that
  prefix. Limitation: this needs the browser to send a Referer (the default
  policy does for same-origin requests; an app that sets
  `Referrer-Policy: no-referrer` breaks it), and websockets opened by an app
  with an absolute path are not covered (the handshake has no Referer).

Parsing of `docker container ls` port columns lives here too (`parse_ports`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings

log = logging.getLogger(__name__)

PATH_RE = re.compile(r"^/nodes/(\d+)/ports/(\d+)(/.*)?$", re.S)
REFERER_RE = re.compile(r"^/nodes/(\d+)/ports/(\d+)/")
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
              b"proxy-connection", b"te", b"trailer", b"trailers", b"transfer-encoding",
              b"upgrade"}
MAX_REQUEST_BODY = 10 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
CONNECT_TIMEOUT = 5.0
RESPONSE_TIMEOUT = 60.0
READ_SIZE = 64 * 1024
MAX_RANGE = 20
CLOSE_FORBIDDEN = 4403
CLOSE_UPSTREAM_FAILED = 1011


# ---- ports in `docker container ls` output ---------------------------------

def parse_ports(text: str) -> list:
    """Published TCP ports from `docker container ls --format '{{.Names}}\\t{{.Ports}}'`.

    "web1\\t0.0.0.0:8080->80/tcp, :::8080->80/tcp" -> [{"port": 8080, "target": 80,
    "container": "web1"}]. Unpublished ports ("80/tcp") and UDP are left out;
    one entry per host port, sorted.
    """
    found: dict = {}
    for line in text.splitlines():
        name, _, column = line.partition("\t")
        if not column:
            name, column = "", name
        for entry in column.split(","):
            entry = entry.strip()
            if "->" not in entry or not entry.endswith("/tcp"):
                continue
            left, right = entry.split("->", 1)
            host = left.rsplit(":", 1)[-1]
            target = right[:-len("/tcp")]
            hosts, targets = _port_range(host), _port_range(target)
            if not hosts:
                continue
            if len(targets) != len(hosts):
                targets = [targets[0] if targets else None] * len(hosts)
            for h, t in zip(hosts, targets):
                found.setdefault(h, {"port": h, "target": t, "container": name.strip()})
    return [found[p] for p in sorted(found)]


def _port_range(text: str) -> list:
    first, _, last = text.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return []
    start, end = int(first), int(last or first)
    if not (0 < start <= end <= 65535) or end - start >= MAX_RANGE:
        return [start] if 0 < start <= 65535 else []
    return list(range(start, end + 1))


# ---- the ASGI app -------------------------------------------------------------

def mount(site_app, proxy_app):
    """An ASGI app that sends proxied paths to `proxy_app` and the rest to `site_app`.

    For HTTP it also redirects absolute links of a proxied page back under
    its prefix (see the module docstring).
    """
    async def app(scope, receive, send):
        if scope["type"] in ("http", "websocket") and PATH_RE.match(scope.get("path", "")):
            return await proxy_app(scope, receive, send)
        if scope["type"] == "http":
            target = _referer_redirect(scope)
            if target:
                return await _respond(send, 307, b"", [(b"location", target.encode("latin-1"))])
        return await site_app(scope, receive, send)
    return app


def _header(scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return b""


def _referer_redirect(scope) -> str | None:
    referer = _header(scope, b"referer").decode("latin-1")
    if not referer:
        return None
    parts = urlsplit(referer)
    host = _header(scope, b"host").decode("latin-1")
    if parts.netloc and host and parts.netloc != host:
        return None
    match = REFERER_RE.match(parts.path)
    if not match:
        return None
    path = scope.get("raw_path") or scope["path"].encode()
    target = f"/nodes/{match.group(1)}/ports/{match.group(2)}" + path.decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    return target


async def _respond(send, status: int, body: bytes, headers=()):
    headers = list(headers)
    if body:
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PortProxy:
    """ASGI app for /nodes/<pk>/ports/<port>/...; needs scope["user"] (AuthMiddlewareStack)."""

    async def __call__(self, scope, receive, send):
        match = PATH_RE.match(scope["path"])
        node_pk, port = int(match.group(1)), int(match.group(2))
        user = scope.get("user")
        node = await _visible_node(user, node_pk)
        if scope["type"] == "websocket":
            return await self.websocket(scope, receive, send, node, port)
        if not _host_allowed(scope):
            return await _respond(send, 400, b"Bad Host header.\n")
        if node is None:
            return await _respond(send, 403, b"This lab machine is not yours.\n")
        if not (0 < port <= 65535):
            return await _respond(send, 404, b"No such port.\n")
        if match.group(3) is None:  # /nodes/1/ports/80 -> /nodes/1/ports/80/ (relative links)
            location = scope["path"] + "/"
            if scope.get("query_string"):
                location += "?" + scope["query_string"].decode("latin-1")
            return await _respond(send, 301, b"", [(b"location", location.encode("latin-1"))])
        address = await _address(node)
        if not address:
            return await _respond(send, 503, b"This lab machine is not running. "
                                             b"Start it from the lesson page.\n")
        await HttpForward(scope, receive, send, node, address, port).run()

    async def websocket(self, scope, receive, send, node, port):
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        address = await _address(node) if node is not None else ""
        if node is None or not address or not (0 < port <= 65535):
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close",
                        "code": CLOSE_FORBIDDEN if node is None else CLOSE_UPSTREAM_FAILED})
            return
        await WebsocketForward(scope, receive, send, address, port).run()


def _host_allowed(scope) -> bool:
    from django.http.request import split_domain_port, validate_host
    domain, _ = split_domain_port(_header(scope, b"host").decode("latin-1"))
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


@database_sync_to_async
def _visible_node(user, pk):
    from .models import LabNode
    return LabNode.visible(user, pk)


async def _address(node) -> str:
    """The node's address on its session network ("" when it is not running)."""
    from runtime import LabRuntimeError, get_driver
    from .models import LabNode

    if node.state != LabNode.READY or not node.runtime_id:
        return ""
    try:
        found = await asyncio.to_thread(get_driver().get_node, node.runtime_id)
    except LabRuntimeError:
        return ""
    return found.address


def _prefix(scope) -> str:
    match = PATH_RE.match(scope["path"])
    return f"/nodes/{match.group(1)}/ports/{match.group(2)}"


def _upstream_target(scope) -> str:
    """The path (and query) to ask the app for: the request's, without our prefix."""
    prefix = _prefix(scope)
    raw = (scope.get("raw_path") or b"").decode("latin-1")
    if raw.startswith(prefix + "/"):
        path = raw[len(prefix):]
    else:
        from urllib.parse import quote
        path = quote(scope["path"][len(prefix):], safe="/%:@!$&'()*+,;=~")
    if scope.get("query_string"):
        path += "?" + scope["query_string"].decode("latin-1")
    return path or "/"


def _forward_headers(scope, host_and_port: str) -> list:
    """Request headers for the app: hop-by-hop and the site's cookies removed."""
    connection_named = {t.strip().lower().encode() for t in
                        _header(scope, b"connection").decode("latin-1").split(",") if t.strip()}
    drop = HOP_BY_HOP | connection_named | {b"content-length", b"expect", b"host"}
    ours = {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME}
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
    host = _header(scope, b"host") or host_and_port.encode()
    client = scope.get("client") or ("", 0)
    headers += [(b"host", host),
                (b"x-forwarded-for", str(client[0]).encode()),
                (b"x-forwarded-host", host),
                (b"x-forwarded-proto", b"https" if scope.get("scheme") in ("https", "wss") else b"http"),
                (b"x-forwarded-prefix", _prefix(scope).encode())]
    return headers


class UpstreamError(Exception):
    pass


# Visiting a published app can be a lesson step: check (at most this often per node).
VISIT_CHECK_SECONDS = 2.0
_last_visit_check: dict = {}


async def _check_after_visit(node) -> None:
    from . import tasks
    now = asyncio.get_running_loop().time()
    if now - _last_visit_check.get(node.pk, -VISIT_CHECK_SECONDS) < VISIT_CHECK_SECONDS:
        return
    _last_visit_check[node.pk] = now
    try:
        await database_sync_to_async(tasks.run_checks.delay)(node.session_id)
    except Exception:
        log.exception("could not check after a visit to node %s", node.pk)


class HttpForward:
    def __init__(self, scope, receive, send, node, address: str, port: int):
        self.scope, self.receive, self.send = scope, receive, send
        self.node, self.address, self.port = node, address, port
        self.prefix = _prefix(scope)
        self.started = False

    async def run(self):
        body = await self._request_body()
        if body is False:  # the browser went away
            return
        if body is None:
            return await _respond(self.send, 413, b"Request body too large for the lab proxy.\n")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.address, self.port, limit=MAX_HEADER_BYTES),
                CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            message = (f"Nothing answers on port {self.port} of {self.node.name} "
                       f"({type(exc).__name__}). Is a container publishing it?\n")
            return await _respond(self.send, 502, message.encode())
        watcher = asyncio.create_task(self._wait_disconnect())
        relay = asyncio.create_task(self._relay(reader, writer, body))
        try:
            await asyncio.wait({watcher, relay}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, relay):
                task.cancel()
            for task in (watcher, relay):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if self.started:
            await _check_after_visit(self.node)
        if relay.done() and not relay.cancelled() and relay.exception() is not None:
            exc = relay.exception()
            log.info("proxying to %s:%s failed: %s", self.address, self.port, exc)
            if not self.started:
                status = 504 if isinstance(exc, asyncio.TimeoutError) else 502
                await _respond(self.send, status, f"The app on port {self.port} did not answer "
                                                  f"properly ({type(exc).__name__}).\n".encode())
            else:
                with contextlib.suppress(Exception):
                    await self.send({"type": "http.response.body", "body": b""})

    async def _request_body(self):
        """The whole request body; None if too large, False if the browser left."""
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_REQUEST_BODY:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _wait_disconnect(self):
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return

    async def _relay(self, reader, writer, body: bytes):
        method = self.scope["method"].upper()
        lines = [f"{method} {_upstream_target(self.scope)} HTTP/1.1".encode("latin-1")]
        for key, value in _forward_headers(self.scope, f"{self.address}:{self.port}"):
            lines.append(key + b": " + value)
        lines.append(b"connection: close")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: " + str(len(body)).encode())
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()

        while True:  # skip interim 1xx responses
            status, headers = await asyncio.wait_for(self._read_head(reader), RESPONSE_TIMEOUT)
            if not 100 <= status < 200 or status == 101:
                break
        names = {k for k, _ in headers}
        chunked = b"chunked" in b",".join(v.lower() for k, v in headers if k == b"transfer-encoding")
        connection_named = {t.strip().lower() for k, v in headers if k == b"connection"
                            for t in v.split(b",") if t.strip()}
        out = []
        for key, value in headers:
            if key in HOP_BY_HOP or key in connection_named:
                continue
            if key == b"content-length" and chunked:
                continue
            if key == b"location":
                value = self._location(value)
            out.append((key, value))
        await self.send({"type": "http.response.start", "status": status, "headers": out})
        self.started = True
        if method == "HEAD" or status in (204, 304) or status < 200:
            await self.send({"type": "http.response.body", "body": b""})
            return
        if chunked:
            await self._chunked(reader)
        elif b"content-length" in names:
            length = int(next(v for k, v in headers if k == b"content-length").strip() or 0)
            await self._exactly(reader, length)
        else:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                await self.send({"type": "http.response.body", "body": data, "more_body": True})
        await self.send({"type": "http.response.body", "body": b""})

    async def _read_head(self, reader) -> tuple:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise UpstreamError("the app closed the connection without an answer") from exc
        except asyncio.LimitOverrunError as exc:
            raise UpstreamError("response headers too large") from exc
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise UpstreamError(f"not an HTTP response: {lines[0][:80]!r}")
        headers = []
        for line in lines[1:]:
            key, sep, value = line.partition(b":")
            if sep:
                headers.append((key.strip().lower(), value.strip()))
        return int(parts[1]), headers

    async def _exactly(self, reader, length: int):
        left = length
        while left > 0:
            data = await reader.read(min(READ_SIZE, left))
            if not data:
                raise UpstreamError("the app closed the connection mid-body")
            left -= len(data)
            await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def _chunked(self, reader):
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return
            await self._exactly(reader, size)
            await reader.readexactly(2)

    def _location(self, value: bytes) -> bytes:
        """Point a redirect at the app back under our prefix."""
        text = value.decode("latin-1")
        if text.startswith("/") and not text.startswith("//"):
            return (self.prefix + text).encode("latin-1") if not text.startswith(self.prefix + "/") else value
        parts = urlsplit(text)
        host = _header(self.scope, b"host").decode("latin-1")
        ours = {f"{self.address}:{self.port}", host}
        if self.port == 80:
            ours.add(self.address)
        if parts.scheme in ("http", "https") and parts.netloc in ours:
            path = parts.path or "/"
            if parts.netloc == host and path.startswith(self.prefix + "/"):
                return value
            new = self.prefix + path + (("?" + parts.query) if parts.query else "")
            if parts.fragment:
                new += "#" + parts.fragment
            return new.encode("latin-1")
        return value


class WebsocketForward:
    """Relays one websocket between the browser and the app in the node."""

    def __init__(self, scope, receive, send, address: str, port: int):
        self.scope, self.receive, self.send = scope, receive, send
        self.address, self.port = address, port

    async def run(self):
        from websockets.asyncio.client import connect

        uri = f"ws://{self.address}:{self.port}{_upstream_target(self.scope)}"
        headers = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in _forward_headers(self.scope, f"{self.address}:{self.port}")
                   if k not in (b"host", b"origin", b"user-agent")]
        origin = _header(self.scope, b"origin").decode("latin-1") or None
        protocols = self.scope.get("subprotocols") or None
        try:
            upstream = await connect(uri, additional_headers=headers, origin=origin,
                                     subprotocols=protocols, open_timeout=CONNECT_TIMEOUT,
                                     max_size=None, compression=None, user_agent_header=None)
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

