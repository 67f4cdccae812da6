"""How big each host's warm pool should be, from the classroom schedule.

Between classes a host keeps LAB_POOL_SIZE ready nodes. From
LAB_POOL_LEAD_MINUTES before a classroom starts until LAB_POOL_HOLD_MINUTES
after, the class's first lesson needs one ready machine per expected learner
whose lab has no machine for it yet (expected: the classroom's seats, or who
has joined if more). A multi-node lesson needs whole pre-built sessions, not
single nodes. Classrooms that overlap add up; the demand is spread evenly over
the hosts that take sessions. maintain_pool (each host, every
LAB_POOL_SECONDS) fills to the target and trims what is beyond it, so the
pool shrinks once the class has its machines.

Whether the pool could be filled (each host reports its ready pool nodes in
its heartbeat) is what the instructor's classroom page shows: "room for 30 of
40 ready machines".
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .models import LabSession, SandboxHost


# A session whose start has taken its machine (the pool's, or its own).
HAS_MACHINE = Q(nodes__runtime_id__gt="")


@dataclass
class Demand:
    classroom: object
    lesson: object
    nodes: int       # nodes per session of the class's first lesson
    machines: int    # sessions still to start (expected learners without one)


def window(now=None) -> tuple:
    """(earliest, latest) start of a classroom whose pool is being kept now."""
    now = now or timezone.now()
    return (now - datetime.timedelta(minutes=settings.LAB_POOL_HOLD_MINUTES),
            now + datetime.timedelta(minutes=settings.LAB_POOL_LEAD_MINUTES))


def demands(now=None) -> list:
    """What each classroom starting about now still needs (nothing when
    LAB_POOL_CLASSES=0: the pool keeps LAB_POOL_SIZE whatever the schedule)."""
    from labs.classrooms.models import Classroom
    if not settings.LAB_POOL_CLASSES:
        return []
    now = now or timezone.now()
    earliest, latest = window(now)
    found = []
    rooms = Classroom.objects.filter(starts__gte=earliest, starts__lte=latest, ends__gt=now)
    for room in rooms.prefetch_related("lessons"):
        lessons = room.ordered_lessons()
        if not lessons:
            continue
        first = lessons[0]
        expected = max(room.seats, room.memberships.count())
        # Served: a learner whose lab has its machine. A session still queued
        # or starting has not taken one from the pool yet: counting it served
        # trimmed the pool under a class arriving at once (forty sessions made
        # in five seconds, claimed over the next twenty), and the learners at
        # the back got cold starts.
        running = (LabSession.objects.filter(
            lesson=first, user__memberships__classroom=room,
            state__in=[LabSession.STARTING, LabSession.READY])
            .filter(Q(state=LabSession.READY) | HAS_MACHINE)
            .values("user").distinct().count())
        found.append(Demand(room, first, max(1, len(first.nodes)), max(0, expected - running)))
    return found


def pool_hosts() -> list:
    """Names of the hosts that share the scheduled demand: the ones taking sessions."""
    from . import hosts
    names = [h.name for h in hosts.live_hosts() if not h.refused]
    return names or [settings.LAB_HOST_NAME]


def targets(host_name: str, now=None) -> dict:
    """{nodes per session: how many ready ones `host_name` should keep}."""
    wanted: dict = {1: settings.LAB_POOL_SIZE}
    by_size: dict = {}
    for d in demands(now):
        by_size[d.nodes] = by_size.get(d.nodes, 0) + d.machines
    sharing = pool_hosts()
    if host_name not in sharing:
        return wanted
    for size, machines in by_size.items():
        wanted[size] = wanted.get(size, 0) + math.ceil(machines / len(sharing))
    return wanted


def claiming(host_name: str) -> dict:
    """{nodes per session: starts placed on `host_name` that have no machine
    yet}. Each of them is about to take one from the pool (or to start its own
    when the pool has none), so the pool need not be refilled for them: a
    refill during a class's arrival would cold-start nodes beside the claims,
    for the pool to trim them again once the class has its machines."""
    counts: dict = {}
    starting = (LabSession.objects.filter(host__name=host_name, state=LabSession.STARTING)
                .exclude(HAS_MACHINE).select_related("lesson"))
    for session in starting:
        size = max(1, len(session.lesson.nodes))
        counts[size] = counts.get(size, 0) + 1
    return counts


def record(host_name: str, target: dict, ready: dict) -> None:
    """What a host was asked to keep and has (in nodes), for the classroom page;
    short of the target after a fill means the host had no room for more."""
    wanted = sum(size * n for size, n in target.items())
    have = sum(size * n for size, n in ready.items())
    values = {"pool_target": wanted, "pool_ready": have,
              "pool_short": "" if have >= wanted else f"room for {have} of {wanted} ready nodes"}
    # Written only when it changed: a class arriving runs this once per start,
    # and every write waits for the database's one write lock (SQLite).
    if not SandboxHost.objects.filter(name=host_name, **values).exists():
        SandboxHost.objects.update_or_create(name=host_name, defaults=values)


def readiness(room, now=None) -> dict | None:
    """For the instructor's page: how many ready machines the class has, while
    its pool is being kept (None otherwise). `short` when the hosts could not
    hold what the classes starting now need."""
    now = now or timezone.now()
    earliest, latest = window(now)
    if not (earliest <= room.starts <= latest and room.ends > now):
        return None
    everyone = demands(now)
    mine = next((d for d in everyone if d.classroom.pk == room.pk), None)
    if mine is None:
        return None
    wanted = sum(d.machines * d.nodes for d in everyone)
    sharing = pool_hosts()
    rows = SandboxHost.objects.filter(name__in=sharing)
    base = settings.LAB_POOL_SIZE * len(sharing)
    ready = max(0, sum(h.pool_ready for h in rows) - base) if rows else 0
    # This class's share of what is ready, when several classes share it.
    need = mine.machines * mine.nodes
    share = need if wanted <= ready else (ready * need // wanted if wanted else 0)
    return {"machines": mine.machines, "nodes": mine.nodes, "ready": share // mine.nodes,
            # The hosts filled what they could and it is not enough (while they
            # are still filling, the page shows the count rising instead).
            "short": share < need and any(h.pool_short for h in rows),
            "lead_minutes": settings.LAB_POOL_LEAD_MINUTES}
