"""A sandbox host's gateway: `daphne labs.gateway_asgi:application` on the host.

It serves the terminal websockets of the nodes on this host
(ws/nodes/<pk>/terminal/?token=...), each opened with a token the site signed
(labs/sandboxes/gateway.py), and their published ports on origins of their
own (n<node>-<port>.<LAB_PORTS_DOMAIN>, entered with a token the site signed),
and nothing else: no site pages, no site cookies, no origin check on the
terminal (the token is the credential, and it names the node). The
output's copies for watching instructors, the checks a command asks for and
the hints go through the shared channel layer and Celery, as on the site.
"""
import os

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


async def http_app(scope, receive, send):
    """Only /health answers (for an operator's or a balancer's probe)."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    ok = scope["path"] == "/health"
    body = b"ok\n" if ok else b"Not here: this is a lab host's gateway.\n"
    await send({"type": "http.response.start", "status": 200 if ok else 404,
                "headers": [(b"content-type", b"text/plain")]})
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
