"""Replays: a node's terminal recording with the session's timeline merged in.

The node's host records the terminal (runtime/recorder.py) into an asciicast v2
file under its runtime directory, outside the node. The site knows the rest of
the timeline (checks that failed on the learner's step, steps done:
SessionMark) and adds those as marker events when it serves the recording. A
recording on another host is fetched from that host's gateway with a token the
site signs (labs/gateway_asgi.py), like its terminals.

Who may replay: the learner, and the instructors teaching them. Nobody else,
not even another learner of the same class (labs/classrooms/access.py's rule).
"""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from django.http import Http404
from django.core.exceptions import PermissionDenied

from labs.classrooms.models import Classroom
from runtime import castfile

from . import gateway
from .models import LabNode, LabSession

log = logging.getLogger(__name__)

PURPOSE = "recording"


def replayable_session(user, pk: int) -> LabSession:
    """The session `pk` if `user` may replay it: 404 when there is none, 403
    when it is someone else's and `user` does not teach them."""
    session = (LabSession.objects.select_related("lesson", "user", "host").filter(pk=pk).first())
    if session is None:
        raise Http404("No such lab session.")
    if not user.is_authenticated or (session.user_id != user.pk
                                     and not Classroom.teaching(user, session.user_id)):
        raise PermissionDenied("This recording is not yours to see.")
    return session


def recording_name(node: LabNode) -> str:
    """<runtime session>/<node name>: where its host keeps the recording."""
    return f"{node.session.runtime_name}/{node.name}"


def local_path(name: str) -> Path:
    session, node = name.split("/", 1)
    return castfile.cast_path(session, node)


def raw_recording(node: LabNode) -> str | None:
    """The recording file's text as the node's host wrote it (None: there is none)."""
    session = node.session
    if gateway.is_here(session) or not session.host.gateway_url:
        try:
            return local_path(recording_name(node)).read_text(encoding="utf-8", errors="replace")
        except (OSError, ValueError):
            return None
    token = gateway.sign(0, node.pk, recording_name(node), purpose=PURPOSE)
    url = f"{session.host.gateway_url.rstrip('/')}/recordings/{node.pk}.cast?" + urlencode({"token": token})
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            log.warning("recording of node %s from %s: HTTP %s", node.pk, session.host.name, exc.code)
        return None
    except OSError as exc:
        log.warning("recording of node %s from %s: %s", node.pk, session.host.name, exc)
        return None


def merged_cast(node: LabNode) -> str:
    """The node's recording with the session's marks (checks, steps) merged in,
    as asciicast v2 text. With no recording file, the marks alone (so the
    timeline of checks is there even when recording was off)."""
    session = node.session
    text = raw_recording(node)
    header, events, damaged = castfile.parse_cast(text.splitlines()) if text else (None, [], 0)
    if header is None:
        header = {"version": 2, "width": 80, "height": 24,
                  "timestamp": int(session.created.timestamp())}
    header["title"] = f"{session.user.username} · {session.lesson.title} · {node.name}"
    start = float(header.get("timestamp", 0))
    for mark in session.marks.all():
        events.append([round(max(0.0, mark.at.timestamp() - start), 3), "m", mark.label()])
    if damaged:
        last = max((e[0] for e in events), default=0.0)
        events.append([last, "m", f"recording ends early: {damaged} damaged line(s) skipped"])
    events.sort(key=lambda e: e[0])  # stable: the terminal's own order stays
    lines = [json.dumps(header)] + [json.dumps(e, ensure_ascii=False) for e in events]
    return "\n".join(lines) + "\n"
