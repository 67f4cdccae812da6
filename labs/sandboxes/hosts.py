"""Sandbox hosts: their heartbeats, where a session goes, the queues of their
work, and what happens when one goes away.

Every host (the site's own machine, LAB_HOST_NAME, and each one that joined)
runs Celery workers on its own queues, `nodes.<name>` (starts, stops, the warm
pool, reaping) and `checks.<name>`; `route` sends a session's tasks to its
host's queues, so a node's work runs where the node is. The host's node
worker beats every LAB_HOST_HEARTBEAT_SECONDS (HeartbeatThread) with its load.

Placement is Play with Docker's admission: a session (all its nodes) goes to
the host with the most room among those that answered lately; a host that
is late, full, draining or refused is skipped. A host silent for
LAB_HOST_TIMEOUT seconds is lost (lose_dead_hosts): its sessions end, their
pages say so and offer a start elsewhere; progress lives in the database and
is untouched. A lost host that beats again first reaps the nodes it still has.
"""
from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Callable

from django.conf import settings
from django.core import signing
from django.db import close_old_connections, models
from django.db.models.functions import Now
from django.utils import timezone

from labs import broadcast

from .models import LabNode, LabSession, SandboxHost

log = logging.getLogger(__name__)

TASKS = "labs.sandboxes.tasks."
# The tasks about one session, and which of its host's queues does them.
SESSION_TASKS = {TASKS + "start_session": "nodes", TASKS + "stop_session": "nodes",
                 TASKS + "reset_session": "nodes", TASKS + "run_checks": "checks",
                 TASKS + "send_screen": "checks"}
# A host's clock may differ from the site's by this much before it is refused
# (session limits and heartbeats compare times written by both).
CLOCK_SKEW_SECONDS = 5

JOIN_SALT = "labs.sandboxes.hosts.join"


def join_token() -> str:
    """A token that lets a machine join as a host (or list the hosts) for
    LAB_JOIN_TOKEN_HOURS; made by an operator: manage.py hosts token."""
    from .gateway import key
    return signing.TimestampSigner(key=key(), salt=JOIN_SALT).sign("join")


def valid_join_token(token: str) -> bool:
    from .gateway import key
    try:
        return signing.TimestampSigner(key=key(), salt=JOIN_SALT).unsign(
            token, max_age=settings.LAB_JOIN_TOKEN_HOURS * 3600) == "join"
    except signing.BadSignature:
        return False


def timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.LAB_HOST_TIMEOUT)


def embedded() -> SandboxHost:
    """The site's own machine as a host (made on first use)."""
    host, _ = SandboxHost.objects.get_or_create(name=settings.LAB_HOST_NAME)
    return host


def heartbeat(name: str, load: dict, gateway_url: str = "", version: str = "", recipe: str = "",
              clock: Callable[[], float] | None = None) -> SandboxHost:
    """Record host `name`'s heartbeat (its node worker calls this): its load
    (runtime.hostinfo.load), where its gateway is, its versions and its clock
    (`clock`: the host's time.time). last_seen is the database's clock, so a
    host's own clock cannot make it look alive; the site compares the two
    (refusal). Returns the row; a LOST row stays lost until the host has
    reaped its nodes (HeartbeatThread)."""
    host, _ = SandboxHost.objects.get_or_create(name=name)
    fields = {key: load.get(key, 0)
              for key in ("max_nodes", "nodes_now", "room", "memory_free", "pool_ready")}
    before = clock() if clock else None
    SandboxHost.objects.filter(pk=host.pk).update(
        gateway_url=gateway_url, ports_domain=settings.LAB_PORTS_DOMAIN, version=version, recipe=recipe, last_seen=Now(),
        **fields)
    host.refresh_from_db()
    if clock:
        host.host_clock = host_clock_at(host.last_seen, before, clock())
        SandboxHost.objects.filter(pk=host.pk).update(host_clock=host.host_clock)
    return host


def host_clock_at(seen: datetime.datetime, before: float, after: float) -> datetime.datetime:
    """The host's clock at the moment the database stamped `seen`, which it
    did between the host's `before` and `after`: as close to `seen` as those
    allow (NTP's round trip). Read once, before the write, a beat that waited
    seconds for the database (a class arriving at a site on SQLite, with the
    site's own machine as its host) would look like a host clock that many
    seconds behind, and the host would take no sessions until its next beat:
    only a difference the wait cannot explain counts."""
    stamp = seen.timestamp()
    closest = min(max(stamp, before), after)
    return datetime.datetime.fromtimestamp(closest, datetime.timezone.utc)


def site_versions() -> dict:
    """The site's own code and image-recipe versions (this process's files;
    runtime.hostinfo computes each once)."""
    from runtime import hostinfo
    return {"version": hostinfo.code_version(), "recipe": hostinfo.recipe_version()}


def refusal(host: SandboxHost) -> str:
    """Why the site gives this host no sessions though it beats ("" if none):
    its code or image recipes are not the site's, or its clock is off (session
    limits and heartbeats compare times written on both sides)."""
    problems = []
    site = site_versions()
    if host.version and host.version != site["version"]:
        problems.append(f"its code ({host.version}) is not the site's ({site['version']})")
    if host.recipe and host.recipe != site["recipe"]:
        problems.append(f"its image recipes ({host.recipe}) are not the site's ({site['recipe']})")
    if host.host_clock and host.last_seen:
        skew = (host.host_clock - host.last_seen).total_seconds()
        if abs(skew) > CLOCK_SKEW_SECONDS:
            problems.append(f"its clock is {skew:+.0f} s off the site's")
    return "; ".join(problems)


def live_hosts():
    """Hosts that may take new sessions, refusal aside: active, heard from lately."""
    return SandboxHost.objects.filter(state=SandboxHost.ACTIVE,
                                      last_seen__gte=timezone.now() - timeout())


def place(nodes: int) -> SandboxHost | None:
    """The host for a new session of `nodes` nodes, or None when every host is
    full (the session waits in the queue). Call it in a transaction: the live
    hosts' rows stay locked until it commits, so placements happen one at a
    time and two learners never both take a host's last room.

    Room is the host's own figure at its last heartbeat, less the nodes the
    site has placed there that the heartbeat did not count yet (sessions
    starting, or ready since it beat). Before any host has ever beaten (a site
    just started on one machine) the site's own machine takes it and its
    runtime decides.
    """
    if not SandboxHost.objects.filter(last_seen__isnull=False).exists():
        return embedded()
    # No aggregate may go with FOR UPDATE: lock first, count after.
    ids = list(live_hosts().select_for_update().values_list("pk", flat=True))
    placed = models.Count("sessions__nodes", filter=models.Q(
        sessions__state__in=[LabSession.STARTING, LabSession.READY])
        & ~models.Q(sessions__nodes__state=LabNode.STOPPED))
    best, best_room = None, -1
    for host in SandboxHost.objects.filter(pk__in=ids).annotate(placed=placed).order_by("name"):
        refused = refusal(host)
        if refused != host.refused:  # the operator's listing says why
            SandboxHost.objects.filter(pk=host.pk).update(refused=refused)
            log.warning("host %s %s", host.name,
                        f"takes no sessions: {refused}" if refused else "takes sessions again")
        if refused:
            continue
        room = host.room - max(0, host.placed - host.nodes_now)
        if room >= nodes and room > best_room:
            best, best_room = host, room
    return best


def place_session(session: LabSession) -> bool:
    """Give a session without a host one; False when every host is full (the
    session is then queued: start_queued places it when one has room)."""
    if session.host_id is not None:
        return True
    host = place(len(session.lesson.nodes))
    if host is None:
        session.mark(LabSession.QUEUED, "every lab host is full")
        return False
    LabSession.objects.filter(pk=session.pk).update(host=host)
    session.host = host
    return True


def host_name_of(session_id: int) -> str:
    """The name of the session's host (this machine's for a session never placed).
    One indexed query per task sent: a queued session is placed later, so a
    session's host may change while it waits and is not cached."""
    return (LabSession.objects.filter(pk=session_id).values_list("host__name", flat=True).first()
            or settings.LAB_HOST_NAME)


def route(name, args, kwargs, options, task=None, **kw):
    """Celery's router (CELERY_TASK_ROUTES): a session's tasks go to its host's
    queues; a task sent with an explicit queue keeps it; the rest go to the
    site's queue (celery)."""
    kind = SESSION_TASKS.get(name)
    if kind is None or not args or options.get("queue"):
        return None  # (Celery asks even when the sender named the queue: no query then)
    return {"queue": f"{kind}.{host_name_of(args[0])}"}


def lose_dead_hosts() -> list:
    """Hosts silent for longer than LAB_HOST_TIMEOUT become lost, and so do
    their live sessions; each learner's page hears why and may start again
    (placed elsewhere). Returns the names of the hosts lost now."""
    cutoff = timezone.now() - timeout()
    lost = []
    for host in SandboxHost.objects.filter(state__in=[SandboxHost.ACTIVE, SandboxHost.DRAINING],
                                           last_seen__lt=cutoff):
        if not SandboxHost.objects.filter(pk=host.pk, last_seen__lt=cutoff).exclude(
                state=SandboxHost.LOST).update(state=SandboxHost.LOST):
            continue  # it beat meanwhile
        silent = (timezone.now() - host.last_seen).total_seconds()
        log.warning("host %s lost: no heartbeat for %.0f s", host.name, silent)
        lost.append(host.name)
        for session in (LabSession.objects.filter(host=host).exclude(state__in=LabSession.ENDED)
                        .select_related("lesson", "user")):
            lose_session(session, host)
    return lost


LOST_MESSAGE = ("The machine your lab ran on ({host}) stopped answering, and your lab "
                "machines went with it. Your progress is saved: start again and you get "
                "new machines on another host.")


def lose_session(session: LabSession, host: SandboxHost) -> None:
    session.nodes.exclude(state=LabNode.STOPPED).update(state=LabNode.FAILED,
                                                        error=f"host {host.name} went away")
    LabSession.objects.filter(pk=session.pk).update(controller=None)
    session.controller = None
    if session.mark(LabSession.LOST, LOST_MESSAGE.format(host=host.name)):
        broadcast.grid_rows_changed(session.user, session.lesson_id)
    broadcast.push(broadcast.session_group(session), session.event())


class HeartbeatThread(threading.Thread):
    """In a host's node worker: beat every LAB_HOST_HEARTBEAT_SECONDS with this
    machine's load. Before it takes sessions (after a start, or when the site
    had given it up as lost) it reaps the nodes no live session of its own
    owns any more."""

    def __init__(self, driver, reap):
        super().__init__(name="lab-heartbeat", daemon=True)
        self.driver, self.reap = driver, reap  # reap: tasks.reap_nodes, returns what it removed
        self.stopping = threading.Event()

    def beat_once(self, first: bool) -> SandboxHost:
        from runtime import hostinfo
        pool = sum(size * count for size, count in self.driver.pool_counts().items())
        load = hostinfo.load(len(self.driver.list_nodes()), pool)
        host = heartbeat(settings.LAB_HOST_NAME, load, settings.LAB_GATEWAY_URL,
                         hostinfo.code_version(), hostinfo.recipe_version(), time.time)
        if first or host.state == SandboxHost.LOST:
            reaped = self.reap()
            if host.state == SandboxHost.LOST:
                log.info("host %s is back: reaped %d orphaned node(s); taking sessions again",
                         host.name, len(reaped))
                SandboxHost.objects.filter(pk=host.pk, state=SandboxHost.LOST).update(
                    state=SandboxHost.ACTIVE)
        return host

    def run(self):
        first = True
        while not self.stopping.is_set():
            try:
                self.beat_once(first)
                first = False
            except Exception:
                log.exception("heartbeat of host %s failed", settings.LAB_HOST_NAME)
            finally:
                close_old_connections()
            self.stopping.wait(settings.LAB_HOST_HEARTBEAT_SECONDS)
