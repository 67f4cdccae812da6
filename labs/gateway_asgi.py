"""A sandbox host's gateway: `python -m labs.webserver labs.gateway_asgi:application`
on the host (Daphne; scripts/host.Procfile).

It serves the terminal websockets of the nodes on this host
(ws/nodes/<pk>/terminal/?token=...), each opened with a token the site signed
(labs/sandboxes/gateway.py), and their published ports on origins of their
own (n<node>-<port>.<LAB_PORTS_DOMAIN>, entered with a token the site signed),
and nothing else: no site pages, no site cookies, no origin check on the
terminal (the token is the credential, and it names the node). The
output's copies for watching instructors, the checks a command asks for and
the hints go through the shared channel layer and Celery, as on the site.
"""
import asyncio
import os
import re
from urllib.parse import parse_qs

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labs.settings")
get_asgi_application()  # sets Django up

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up)
from django.urls import path  # noqa: E402

from labs.sandboxes.consumers import TerminalConsumer  # noqa: E402
from labs.sandboxes.portproxy import PortOrigin, by_host  # noqa: E402


def gateway_scope(app):
    """Marks the scope as the gateway's: the terminal wants a token, not a login."""
    async def middleware(scope, receive, send):
        return await app(dict(scope, gateway=True), receive, send)
    return middleware


RECORDING_PATH = re.compile(r"/recordings/(\d+)\.cast")


def recording(path: str, query: bytes) -> tuple:
    """(status, body) for GET /recordings/<node pk>.cast?token=...: the node's
    terminal recording as this host wrote it, to the site that signed the
    token (it merges its own marks in and answers the browser)."""
    from labs.sandboxes import gateway, recordings
    match = RECORDING_PATH.fullmatch(path)
    token = (parse_qs(query.decode("latin-1")).get("token") or [""])[0]
    claims = gateway.verify(token, int(match.group(1)), purpose=recordings.PURPOSE) if match else None
    if claims is None:
        return 403, b"Not allowed.\n"
    try:
        return 200, recordings.local_path(claims["r"]).read_bytes()
    except (OSError, ValueError):
        return 404, b"No recording.\n"


async def http_app(scope, receive, send):
    """/health (for an operator's or a balancer's probe) and the recordings
    of this host's nodes (for the site); nothing else."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/health":
        status, body, kind = 200, b"ok\n", b"text/plain"
    elif scope["path"].startswith("/recordings/"):
        status, body = await asyncio.to_thread(recording, scope["path"], scope.get("query_string", b""))
        kind = b"application/x-asciicast" if status == 200 else b"text/plain"
    else:
        status, body, kind = 404, b"Not here: this is a lab host's gateway.\n", b"text/plain"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


# Published ports of this host's nodes, each on its own origin under this
# host's LAB_PORTS_DOMAIN (labs.sandboxes.portproxy; the site signs the way in).
port_origin = PortOrigin()

application = ProtocolTypeRouter({
    "http": by_host(port_origin, http_app),
    "websocket": by_host(port_origin, gateway_scope(URLRouter([
        path("ws/nodes/<int:node>/terminal/", TerminalConsumer.as_asgi()),
    ]))),
})
