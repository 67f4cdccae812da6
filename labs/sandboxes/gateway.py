"""Host gateways: terminals of nodes on other machines, reached directly.

A sandbox host runs a gateway (Daphne with labs.gateway_asgi) that serves the
terminal websockets of the nodes on that host and nothing else. The lesson
page asks the site for a terminal URL (views.terminal_url); for a node on
another host the site answers with the host gateway's address and a token it
signed: who (the user), which node (and its runtime id) and what for, valid
for LAB_GATEWAY_TOKEN_SECONDS. The gateway checks the signature, the node and
the age before anything else, with no database round trip: a token for
another node or user, a forged one or an old one closes with 4403.

The keystrokes then go browser -> gateway -> node, with no hop through the
site; the page's other traffic (steps, checks, the watchers' copies of the
output) goes through the shared channel layer and Celery as on one machine.
Nodes on the site's own machine keep the site's own socket (no token).
"""
from __future__ import annotations

import hashlib
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.core import signing

SALT = "labs.sandboxes.gateway"


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(key=key(), salt=SALT)


def key() -> str:
    """The key gateway tokens are signed with: LAB_GATEWAY_KEY, or one derived
    from SECRET_KEY on one machine (hosts are given it when they join; never
    the SECRET_KEY itself, which signs the site's sessions)."""
    return settings.LAB_GATEWAY_KEY or hashlib.sha256(
        ("lab gateway key\0" + settings.SECRET_KEY).encode()).hexdigest()


def sign(user_id: int, node_pk: int, runtime_id: str, purpose: str = "terminal") -> str:
    return _signer().sign_object({"u": user_id, "n": node_pk, "r": runtime_id, "p": purpose},
                                 compress=True)


def verify(token: str, node_pk: int, purpose: str = "terminal") -> dict | None:
    """The token's claims if the site signed it for this node and purpose lately, else None."""
    try:
        claims = _signer().unsign_object(token, max_age=settings.LAB_GATEWAY_TOKEN_SECONDS)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if not isinstance(claims, dict) or claims.get("n") != node_pk or claims.get("p") != purpose:
        return None
    return claims


def is_here(session) -> bool:
    """Whether the session's nodes run on this machine (so this process reaches them)."""
    return session.host_id is None or session.host.name == settings.LAB_HOST_NAME


def websocket_base(gateway_url: str) -> str:
    """ws://host:port of a gateway's http://host:port (wss for https)."""
    parts = urlsplit(gateway_url)
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}"


def terminal_url(node, user) -> str:
    """Where the page opens the node's terminal: the site's own socket (a path)
    for a node on this machine, else its host gateway's with a fresh token."""
    path = f"/ws/nodes/{node.pk}/terminal/"
    session = node.session
    if is_here(session) or not session.host.gateway_url:
        return path
    token = sign(user.pk, node.pk, node.runtime_id)
    return websocket_base(session.host.gateway_url) + path + "?" + urlencode({"token": token})
