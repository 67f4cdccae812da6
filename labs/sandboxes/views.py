"""A learner's lab machines from the lesson page: Start, Stop, Check, Extend, and
the link to a published port."""
from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpResponse, HttpResponseForbidden, HttpResponseNotFound, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from labs import broadcast
from labs.classrooms.access import visible_node
from labs.courses.models import Lesson
from runtime import LabRuntimeError, get_driver

from . import checks, gateway, hosts, portproxy, recordings, tasks
from .models import LabNode, LabSession, SandboxHost

log = logging.getLogger(__name__)


def preflight_problems() -> list:
    try:
        return list(get_driver().preflight())
    except LabRuntimeError as exc:
        return [exc.reason]


@require_POST
def start(request, slug):
    lesson = get_object_or_404(Lesson, slug=slug)
    if not request.user.is_authenticated:
        return JsonResponse({"ok": False, "error": "Log in to start a lab."}, status=403)
    body, status, _ = start_lab(request.user, lesson, resume=request.POST.get("resume") == "1")
    return JsonResponse(body, status=status)


def start_lab(user, lesson, resume: bool = False, with_event: bool = True,
              new_user: bool = False) -> tuple:
    """Start (or find) `user`'s lab for `lesson`: (the JSON for the page, HTTP
    status, the session or None). Also what joining a class by its link does,
    so the machine is on its way while the lesson page loads. with_event=False
    leaves the session's event (three queries) out of the JSON, for a caller
    that sends none; new_user: `user` was made in this transaction (no nodes
    or sessions to look for)."""
    room = LabSession.room_for(user, lesson, new_user=new_user)
    if room:
        return {"ok": False, "state": "failed", "error": room,
                "running_url": reverse("dashboard") + "#running-labs"}, 409, None
    problems = preflight_problems()
    if problems:
        log.warning("not starting a lab for %s: %s", user, "; ".join(problems))
        error = "The lab machines cannot start on this server: " + " ".join(problems)
        return {"ok": False, "state": "failed", "error": error}, 503, None
    # (No savepoint inside the join's transaction: a failure here fails the join.)
    with transaction.atomic(savepoint=False):
        session, needs_start = LabSession.ensure_for(user, lesson, new_user=new_user)
        if needs_start and session.resume != resume:
            # Resume my machine (the page's default when there is a save) or Start fresh.
            session.resume = resume
            LabSession.objects.filter(pk=session.pk).update(resume=session.resume)
        # Placed on the host with the most room, or queued when all are full.
        if needs_start and hosts.place_session(session):
            # To the queue of the host just chosen: the router would ask the
            # database which one that is.
            session_id, queue = session.pk, session.host.queue("nodes")
            transaction.on_commit(lambda: tasks.start_session.apply_async(
                (session_id,), queue=queue))
    body = {"ok": True, "session": session.pk, "started": needs_start}
    if with_event:
        session.refresh_from_db()
        body.update(session.event())
    return body, 200, session


@require_POST
@login_required
def stop(request, slug):
    """The learner's Stop (lesson page or dashboard): the session's nodes are
    removed, with everything on them; step progress stays. A form post (the
    dashboard's) goes back to `next` on this site."""
    lesson = get_object_or_404(Lesson, slug=slug)
    session = LabSession.current_for(request.user, lesson)
    if session is not None and session.state == LabSession.LOST:
        session.mark(LabSession.STOPPED, session.error)  # its nodes went with its host
        broadcast.push(broadcast.session_group(session), session.event())
        session = None
    if session is not None:
        session_id = session.pk
        if not session.ended_because:  # "stopping" on the dashboard until it is gone
            LabSession.objects.filter(pk=session_id).update(ended_because="stopped",
                                                            controller=None)
        transaction.on_commit(lambda: tasks.stop_session.delay(session_id))
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"ok": True, "stopping": session is not None})
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = reverse("dashboard")
    return redirect(target)


@require_POST
@login_required
def check(request, slug):
    lesson = get_object_or_404(Lesson, slug=slug)
    session = LabSession.current_for(request.user, lesson)
    if session is None or session.state != LabSession.READY:
        return JsonResponse({"ok": False, "error": "Start the lab first, then check."}, status=409)
    session_id = session.pk
    transaction.on_commit(lambda: checks.request(session_id))
    return JsonResponse({"ok": True})


def _live_session(request, slug):
    lesson = get_object_or_404(Lesson, slug=slug)
    return lesson, LabSession.current_for(request.user, lesson)


@require_POST
@login_required
def extend(request, slug):
    """The learner's Extend button: more time for the session."""
    lesson, session = _live_session(request, slug)
    if session is None or not session.extend():
        return JsonResponse({"ok": False, "error": "No lab session is running."}, status=409)
    event = session.event()
    transaction.on_commit(lambda: broadcast.push(broadcast.session_group(session), event))
    return JsonResponse({"ok": True, **event})


def terminal_url(request, pk):
    """Where the lesson page opens node `pk`'s terminal: the site's own socket,
    or the node's host gateway with a token signed for this learner and node
    (labs.sandboxes.gateway). Asked before each connect, so a token is fresh."""
    if not request.user.is_authenticated:
        return JsonResponse({"ok": False, "error": "Log in first."}, status=403)
    node = (LabNode.objects.select_related("session", "session__host")
            .filter(pk=pk, session__user=request.user).first())
    if node is None:
        return JsonResponse({"ok": False, "error": "This lab machine is not yours."}, status=403)
    if node.state != LabNode.READY or not node.runtime_id:
        return JsonResponse({"ok": False, "error": "This lab machine is not running."}, status=410)
    return JsonResponse({"ok": True, "url": gateway.terminal_url(node, request.user)})


@login_required
def open_port(request, pk, port, rest=None):
    """The lesson page's link to a published port: off to the port's own origin.

    Only the node's owner and their instructors get a token for it (see
    labs.sandboxes.portproxy); the port origin turns the token into its own cookie.
    """
    port = int(port)
    if not 0 < port <= 65535:
        return HttpResponseNotFound("No such port.\n", content_type="text/plain")
    if visible_node(request.user, int(pk)) is None:
        return HttpResponseForbidden("This lab machine is not yours.\n", content_type="text/plain")
    path = rest or "/"
    if request.META.get("QUERY_STRING"):
        path += "?" + request.META["QUERY_STRING"]
    host = SandboxHost.objects.filter(sessions__nodes__pk=int(pk)).first()  # None: this machine
    return redirect(portproxy.enter_url(request, int(pk), port, request.user, path, host))


# ---- replays ------------------------------------------------------------------------

def _replay_node(request, pk, name):
    session = recordings.replayable_session(request.user, pk)
    nodes = list(session.nodes.order_by("name"))
    node = next((n for n in nodes if n.name == (name or (nodes[0].name if nodes else ""))), None)
    if node is None:
        raise Http404("This lab session has no such machine.")
    return session, nodes, node


@login_required
def replay(request, pk):
    """A node's terminal played back against the session's timeline (?node=
    picks the machine, ?at=<unix seconds> opens paused at that moment)."""
    session, nodes, node = _replay_node(request, pk, request.GET.get("node"))
    try:
        at = float(request.GET.get("at", ""))
    except ValueError:
        at = None
    return render(request, "sandboxes/replay.html", {
        "session": session, "nodes": nodes, "node": node, "at": at,
        "mine": session.user_id == request.user.pk})


@login_required
def replay_cast(request, pk, name):
    """The recording (asciicast v2) with the session's marks merged in;
    ?download=1 saves it as a .cast file."""
    session, _, node = _replay_node(request, pk, name)
    response = HttpResponse(recordings.merged_cast(node),
                            content_type="application/x-asciicast; charset=utf-8")
    response["Cache-Control"] = "no-store"
    if request.GET.get("download"):
        filename = f"{session.user.username}-{session.lesson.slug}-{session.pk}-{node.name}.cast"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
