"""What a sandbox host asks of the site: to join, and the list of hosts.

`python -m runtime host join` posts here with a join token an operator made
(`manage.py hosts token`); `python -m runtime host ls` reads the list with it.
Both speak JSON and answer a refusal with {"error": why}, in words an
operator can act on.
"""
from __future__ import annotations

import datetime
import json
import logging
import re

from django.conf import settings
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import gateway, hosts
from .models import SandboxHost

log = logging.getLogger(__name__)


def _token(request) -> str:
    header = request.headers.get("Authorization", "")
    return header[len("Bearer "):] if header.startswith("Bearer ") else ""


def _refuse(status: int, why: str) -> JsonResponse:
    return JsonResponse({"ok": False, "error": why}, status=status)


BAD_TOKEN = ("this join token is wrong or has expired: ask the site's operator for a new one "
             "(manage.py hosts token)")


@csrf_exempt  # no browser and no cookie: the join token is the credential
@require_POST
def join(request):
    if not hosts.valid_join_token(_token(request)):
        return _refuse(403, BAD_TOKEN)
    try:
        body = json.loads(request.body)
        name, gateway_url = str(body["name"]), str(body["gateway_url"])
    except (ValueError, KeyError, TypeError):
        return _refuse(400, "expected JSON with name, gateway_url, version, recipe and clock")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", name):
        return _refuse(400, f"{name!r} is not a host name: lower-case letters, digits and dashes")
    if name == settings.LAB_HOST_NAME:
        return _refuse(409, f"{name!r} is the site's own machine: choose another name")
    if not settings.DATABASE_URL:
        return _refuse(409, "this site keeps its data in SQLite on its own machine: its operator "
                            "sets DATABASE_URL (PostgreSQL) before other hosts can join")
    host, _ = SandboxHost.objects.get_or_create(name=name)
    clock = body.get("clock")
    host.gateway_url, host.version, host.recipe = gateway_url, str(body.get("version", "")), \
        str(body.get("recipe", ""))
    host.last_seen = timezone.now()
    host.host_clock = (datetime.datetime.fromtimestamp(float(clock), datetime.timezone.utc)
                       if isinstance(clock, (int, float)) else None)
    if host.state in (SandboxHost.REMOVED, SandboxHost.LOST):
        host.state = SandboxHost.LOST  # it reaps what it had before it takes sessions
    host.refused = hosts.refusal(host)
    host.save()
    if host.refused:
        log.warning("host %s may not join: %s", name, host.refused)
        return _refuse(409, host.refused)
    log.info("host %s joined (gateway %s)", name, gateway_url)
    return JsonResponse({"ok": True, "host": name, "env": {
        "DATABASE_URL": settings.LAB_HOSTS_DATABASE_URL or settings.DATABASE_URL,
        "REDIS_URL": settings.LAB_HOSTS_REDIS_URL or settings.REDIS_URL,
        "LAB_GATEWAY_KEY": gateway.key(),
        "LAB_SESSION_PREFIX": settings.LAB_SESSION_PREFIX,
        "LAB_HOST_TIMEOUT": str(settings.LAB_HOST_TIMEOUT),
        "LAB_HOST_HEARTBEAT_SECONDS": str(settings.LAB_HOST_HEARTBEAT_SECONDS)}})


@require_GET
def host_list(request):
    if not hosts.valid_join_token(_token(request)):
        return _refuse(403, BAD_TOKEN)
    now = timezone.now()
    return JsonResponse({"ok": True, "hosts": [{
        "name": h.name, "state": h.state, "nodes_now": h.nodes_now, "room": h.room,
        "max_nodes": h.max_nodes, "memory_free": h.memory_free, "gateway_url": h.gateway_url,
        "refused": h.refused,
        "seen_seconds": (now - h.last_seen).total_seconds() if h.last_seen else None}
        for h in SandboxHost.objects.all()]})
