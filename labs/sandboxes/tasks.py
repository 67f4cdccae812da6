"""Celery tasks: start and stop a learner's nodes, run step checks.

Tasks take ids and re-fetch; if the row is gone they return. Results reach
the browser through the channel layer (group_send to the learner's group).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from asgiref.sync import async_to_sync, sync_to_async
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from runtime import (LabFull, LabRuntimeError, NodeSpec, checkbatch, get_driver, ports, recorder,
                     saves)
from runtime import paths

from labs import asyncbridge, broadcast
from labs.classrooms.tasks import push_learner_rows
from labs.courses.models import StepProgress

from . import hosts, machines, pools
from .models import LabNode, LabSession, SandboxHost, SessionMark

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 20


def mark_session(session, state: str, error: str = "") -> None:
    """Set the session's state; tell the learner's page (and, when their machines
    changed, their classrooms' grids)."""
    if session.mark(state, error):
        broadcast.grid_rows_changed(session.user, session.lesson_id)
    broadcast.push(broadcast.session_group(session), session.event())


def _session(session_id):
    try:
        # (The host too: the session's event names its gateway.)
        return LabSession.objects.select_related("lesson", "user", "host").get(pk=session_id)
    except LabSession.DoesNotExist:
        log.info("session %s is gone; nothing to do", session_id)
        return None


@shared_task(soft_time_limit=150, time_limit=180)
def start_session(session_id: int) -> str | None:
    session = _session(session_id)
    if session is None:
        return None
    group = broadcast.session_group(session)
    driver = get_driver()
    if session.state == LabSession.QUEUED:
        mark_session(session, LabSession.STARTING)  # its turn came: the page shows the start
    nodes = list(session.nodes.all())
    last_node = ""
    for node in nodes:
        if node.state == LabNode.READY and node.runtime_id:
            continue
        try:
            spec = NodeSpec(session=session.runtime_name, name=node.name,
                            files=session.lesson.files_for(node.name),
                            restore=machines.restore_key(session, node.name),
                            session_nodes=len(nodes))
            try:
                started = _run(_start_node(driver, spec, group, node.pk))
            except saves.SaveError as exc:
                if not spec.restore:
                    raise
                # A save that cannot come back: a fresh machine, and it says why.
                notice = machines.refused(session, node.name, exc.reason)
                spec = NodeSpec(session=spec.session, name=spec.name, files=spec.files)
                started = _run(_start_node(driver, spec, group, node.pk))
                _run(driver.exec(started.id, ["sh", "-c", "cat > /run/lab-motd"],
                                 input=(notice + "\n").encode()))
        except LabFull as exc:
            # No room here after all: wait in the queue (start_queued places it
            # again, on any host), never overcommit.
            log.info("lab full; %s queued: %s", session.runtime_name, exc.reason)
            LabSession.objects.filter(pk=session.pk).update(host=None)
            mark_session(session, LabSession.QUEUED, exc.reason)
            return LabSession.QUEUED
        except Exception as exc:
            if isinstance(exc, LabRuntimeError):
                reason = exc.reason
            elif isinstance(exc, SoftTimeLimitExceeded):
                reason = "starting the node took too long; try again"
            else:
                log.exception("starting %s/%s crashed", session.runtime_name, node.name)
                reason = f"starting the node failed unexpectedly ({type(exc).__name__}); try again"
            log.warning("starting %s/%s failed: %s", session.runtime_name, node.name, reason)
            node.mark_failed(reason)
            mark_session(session, LabSession.FAILED, f"{node.name}: {reason}")
            return LabSession.FAILED
        if node is nodes[-1]:
            last_node = started.id  # marked with the session's state, in one write below
        else:
            node.mark_ready(started.id)
        log.info("started %s/%s as %s", spec.session, spec.name, started.id)
    # This host's recorder attaches to the new nodes now, not at its next
    # scan: the learner's first command is on the recording.
    recorder.wake()
    # One transaction for the last node and the session (each write waits for
    # SQLite's one write lock); the grids hear it from a task on the site's
    # queue: forty rows computed here would hold up the class's other starts.
    with transaction.atomic():
        if last_node:
            nodes[-1].mark_ready(last_node)
        if session.mark(LabSession.READY):
            # (Only to grids open now: a task per learner costs the workers
            # some 10 ms even when nobody watches.)
            rooms = [pk for pk in broadcast.grid_rooms(session.user, session.lesson_id)
                     if broadcast.grid_is_open(pk)]
            if rooms:
                user_id = session.user_id
                transaction.on_commit(lambda: push_learner_rows.delay(user_id, rooms))
    broadcast.push(broadcast.session_group(session), session.event())
    # Replace what this start took from this host's pool: at most one refill
    # every few seconds, whatever the number of starts (a class arriving would
    # otherwise queue forty, each taking a worker from the starts). Sent now,
    # not with a countdown: a worker holding a delayed message unacknowledged
    # died when Redis restarted under it (kombu, restoring it; CI: test_restarts).
    if driver.has_pool and (settings.LAB_POOL_SIZE or settings.LAB_POOL_CLASSES) \
            and _refill_due():
        maintain_pool.apply_async(queue=f"nodes.{settings.LAB_HOST_NAME}", expires=30)
    return LabSession.READY


REFILL_DELAY = 3


def _refill_due() -> bool:
    """Whether no refill of this host's pool is planned yet (a marker file's
    time, shared by the worker's processes)."""
    marker = paths.base_dir() / "pool-refill.at"
    now = time.time()
    with contextlib.suppress(OSError):
        if now - marker.stat().st_mtime < REFILL_DELAY:
            return False
    with contextlib.suppress(OSError):
        marker.touch()
    return True


@shared_task(soft_time_limit=300, time_limit=330)
def stop_session(session_id: int) -> None:
    """Remove the session's nodes; a session that ran keeps its machines as
    saves (labs/sandboxes/machines.py) unless saving is off or it was reset."""
    session = _session(session_id)
    if session is None:
        return
    driver = get_driver()
    save = machines.saving_enabled(driver) and session.ended_because not in machines.NOT_SAVED
    for node in session.nodes.all():
        if node.runtime_id and save and node.state == LabNode.READY:
            machines.save_and_stop(session, node, driver, _run)
        elif node.runtime_id:
            try:
                _run(driver.stop(node.runtime_id))
            except LabRuntimeError as exc:
                log.warning("stopping %s failed: %s", node.runtime_id, exc.reason)
                node.mark_failed(exc.reason)
                continue
        node.state = LabNode.STOPPED
        node.save(update_fields=["state"])
    mark_session(session, LabSession.STOPPED)


@shared_task(soft_time_limit=CHECK_TIMEOUT * 6, time_limit=CHECK_TIMEOUT * 6 + 30)
def run_checks(session_id: int) -> dict | None:
    """Run every open step's check in the step's node; record and push what changed.

    One exec per node (runtime/checkbatch.py) runs all of that node's open
    checks and lists its published ports; the nodes of a session are asked at
    once, and each step is recorded and pushed as soon as its check ends. Quiz
    steps are answered on the page, not checked here. Returns {step number:
    state} of the checked steps (handy for tests and the shell).
    """
    began = time.monotonic()
    session = _session(session_id)
    if session is None or session.state != LabSession.READY:
        return None
    nodes = {n.name: n for n in session.nodes.all() if n.runtime_id}
    if not nodes:
        return None
    driver = get_driver()
    results = {}
    # A step once done stays done, so its check need not run again: after the
    # first steps, a check run costs only the steps still open.
    done = set(StepProgress.objects.filter(user=session.user, step__lesson=session.lesson,
                                           state=StepProgress.DONE).values_list("step_id", flat=True))
    open_steps = []
    for step in session.lesson.steps.order_by("number"):
        if not step.has_check:
            continue
        if step.pk in done:
            results[step.number] = StepProgress.DONE
        else:
            open_steps.append(step)
    batches = {name: checkbatch.Batch(
        {**{str(s.number): ["/bin/sh", "-c", s.check_script] for s in open_steps
            if s.node == name}, "ports": ports.ARGV}, timeout=CHECK_TIMEOUT)
        for name in nodes}
    steps = {(s.node, str(s.number)): s for s in open_steps}
    group = broadcast.session_group(session)
    reported: set = set()

    timing = {}
    unchanged = set()

    # The step the learner is on: its failures go on the recording's timeline
    # and into "why the class is stuck" (the later steps fail too, unasked).
    current = open_steps[0] if open_steps else None

    def record(step, state, message):
        t0 = time.monotonic()
        timing.setdefault("first_result", t0 - began)
        progress, changed = StepProgress.record(session.user, step, state, message)
        noted = note_check(session, step, state, message,
                           changed, step is current)
        timing["record"] = timing.get("record", 0) + time.monotonic() - t0
        results[step.number] = progress.state
        if changed:
            broadcast.push(group, progress.event())
        if changed or noted:
            broadcast.grid_rows_changed(session.user, session.lesson_id)
        if not changed:
            unchanged.add(step.pk)

    def on_result(name: str, key: str, result) -> None:
        """One command of a node's batch finished: record and push it now, so a
        step's verdict does not wait for the checks after it."""
        reported.add((name, key))
        if key == "ports":
            if result.ok and nodes[name].set_ports(ports.parse_ports(result.output)):
                broadcast.push(group, nodes[name].ports_event())
        else:
            record(steps[(name, key)], *_verdict(result))

    timing["prepare"] = time.monotonic() - began
    answers = _run(_run_batches(driver, nodes, batches, on_result))
    timing["total"] = time.monotonic() - began
    if log.isEnabledFor(logging.DEBUG):  # the text is built only when it is wanted
        log.debug("checks of %s: %s", session.runtime_name,
                  ", ".join(f"{k.replace('_', ' ')} {v * 1000:.0f} ms" for k, v in timing.items()))
    for name, answer in answers.items():  # what did not finish in time, or at all
        if isinstance(answer, LabRuntimeError):
            for (node_name, _key), step in steps.items():
                if node_name == name:
                    record(step, None, f"could not check ({answer.reason})")
            continue
        for key, result in answer.items():
            if (name, key) not in reported:
                on_result(name, key, result)
    for step in open_steps:
        if step.node not in nodes:
            record(step, None, f"could not check (this lab has no node {step.node})")
    StepProgress.mark_checked(session.user, unchanged)
    # After the step events of this run: the page's Check my work says what it found.
    broadcast.push(group, {"type": "checked",
                           "open": sorted(n for n, state in results.items()
                                          if state != StepProgress.DONE)})
    return results


# Checks of one step that fail with the same reason within this many seconds
# are one attempt (a command's check run and the trailing one after its
# engine events), not two.
SAME_ATTEMPT_SECONDS = 5.0


def note_check(session, step, state, message: str, changed: bool, current: bool) -> bool:
    """Put a check result on the session's timeline: every step done, and a
    failure of the learner's current step (counted on their progress).
    True when a failure was noted (the classroom's grid shows the reason)."""
    if state == StepProgress.DONE:
        if changed:
            SessionMark.objects.create(session=session, kind=SessionMark.DONE, step=step.number,
                                       node=step.node)
        return False
    if state != StepProgress.PENDING or not current:
        return False  # "could not check" is the lab's trouble, not the learner's
    now = timezone.now()
    last = (SessionMark.objects.filter(session=session, step=step.number, kind=SessionMark.FAILED)
            .order_by("-at").first())
    if last is not None and last.text == message and \
            (now - last.at).total_seconds() < SAME_ATTEMPT_SECONDS:
        return False
    SessionMark.objects.create(session=session, kind=SessionMark.FAILED, step=step.number,
                               node=step.node, text=message[:500], at=now)
    StepProgress.objects.filter(user=session.user, step=step).update(
        failed_checks=F("failed_checks") + 1, failed_at=now)
    return True


async def _run_batches(driver, nodes: dict, batches: dict, on_result) -> dict:
    """Run each node's batch (the nodes at once), calling on_result(node name, key,
    ExecResult) as each command finishes; returns {node name: {key: ExecResult}},
    or the LabRuntimeError that stopped that node's exec."""
    record = sync_to_async(on_result)  # it writes the database

    async def one(name):
        batch, reader = batches[name], batches[name].reader()
        loop = asyncio.get_running_loop()
        finished: asyncio.Queue = asyncio.Queue()

        def on_output(chunk: bytes):
            loop.call_soon_threadsafe(finished.put_nowait, reader.feed(chunk))

        async def report():
            while True:
                done = await finished.get()
                try:
                    for key, result in done.items():
                        await record(name, key, result)
                except Exception:
                    log.exception("recording a check result of %s failed", name)
                finally:
                    finished.task_done()

        reporter = asyncio.ensure_future(report())
        try:
            result = await driver.exec(nodes[name].runtime_id, checkbatch.ARGV,
                                       input=batch.program().encode(),
                                       timeout=batch.exec_timeout(), on_output=on_output)
        except LabRuntimeError as exc:
            log.warning("checks in %s failed to run: %s", nodes[name].runtime_id, exc.reason)
            return name, exc
        finally:
            await asyncio.sleep(0)  # the last call_soon_threadsafe
            await finished.join()
            reporter.cancel()
        return name, batch.results(result)
    return dict(await asyncio.gather(*(one(name) for name in batches)))


def screen_message(screen) -> dict:
    """The channel-layer message that draws a terminal screen in a watch view."""
    return {"type": "watch.screen", "cols": screen.cols, "rows": screen.rows,
            "data": screen.replay()}


@shared_task(soft_time_limit=20, time_limit=30)
def send_screen(session_id: int, node_pk: int, channel_name: str) -> bool:
    """On the node's host: read its terminal's screen and send it to the watch
    socket `channel_name` (an instructor opened the watch view on the site)."""
    node = LabNode.objects.filter(pk=node_pk, session_id=session_id).first()
    if node is None or not node.runtime_id:
        return False
    screen = _run(get_driver().terminal_screen(node.runtime_id))
    if screen is None:
        return False
    asyncbridge.call(get_channel_layer().send, channel_name, screen_message(screen))
    return True


def _verdict(result) -> tuple:
    """(state, message) of one step from its check's ExecResult."""
    if result.timed_out:
        return None, "could not check (timed out)"
    if result.exit_code == 0:
        return StepProgress.DONE, ""
    return (StepProgress.PENDING,
            result.output.strip()[-2000:] or f"not done yet (check exited {result.exit_code})")


def _run(coro):
    """Run a driver coroutine from this synchronous task.

    async_to_sync rather than asyncio.run: under an ASGI server or an eager
    test it runs on the outer event loop (where the channel layer lives), in
    a worker it gets a loop of its own. (Not asyncbridge.call: the check
    batches' coroutine writes the database through sync_to_async, which
    async_to_sync runs on this thread, with this task's connection.)
    """
    async def wrapper():
        return await coro
    return async_to_sync(wrapper)()


async def _start_node(driver, spec: NodeSpec, group: str, node_pk: int):
    """driver.start with its progress pushed to the learner as it happens.

    on_progress is a plain callback called from inside the driver's coroutine
    (or, for some drivers, from a helper thread), so it cannot block on the
    channel layer: it schedules the sends on this loop and we await them at the end.
    """
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    sends: list = []

    def on_progress(info):
        if layer is None:
            return
        event = {"type": "progress", "node": node_pk, "name": spec.name,
                 "progress": int(info.get("progress", 0)), "message": str(info.get("message", ""))}
        coro = layer.group_send(group, broadcast.lesson_message(event))
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            sends.append(loop.create_task(coro))
        else:
            sends.append(asyncio.run_coroutine_threadsafe(coro, loop))

    try:
        return await driver.start(spec, on_progress=on_progress)
    finally:
        waits = [s if isinstance(s, asyncio.Future) else asyncio.wrap_future(s) for s in sends]
        for result in await asyncio.gather(*waits, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("could not push progress to %s: %s", group, result)


@shared_task(soft_time_limit=120, time_limit=150)
def reap_nodes() -> list:
    """Remove runtime nodes that no live session of this site owns any more.

    Run by Celery beat. It catches nodes left behind by a crash between
    starting a node and recording it, or by a session deleted while running.
    Only sessions named with this site's prefix are touched, so another site
    sharing the machine keeps its nodes.
    """
    prefix = settings.LAB_SESSION_PREFIX
    # Live here: a session placed on another host has no business on this one
    # (one never placed, from before hosts, ran on the site's machine: kept).
    here = Q(host__name=settings.LAB_HOST_NAME) | Q(host__isnull=True)
    live = set(LabSession.objects.filter(here, state__in=[LabSession.STARTING, LabSession.READY])
               .values_list("pk", flat=True))
    driver = get_driver()
    removed = []
    for node in driver.list_nodes():
        number = node.session[len(prefix):]
        if not node.session.startswith(prefix) or not number.isdigit():
            continue
        if int(number) in live:
            continue
        try:
            _run(driver.stop(node.id))
        except LabRuntimeError as exc:
            log.warning("could not reap node %s: %s", node.id, exc.reason)
            continue
        log.info("reaped node %s of ended session %s", node.id, node.session)
        removed.append(node.id)
    return removed


@shared_task(soft_time_limit=240, time_limit=300)
def maintain_pool() -> dict:
    """Run by beat (and after each start): remove dead nodes, bring the warm
    pool to its size: LAB_POOL_SIZE, plus ready machines for the classes
    starting about now (pools.py); beyond that it shrinks.

    The runtime stops filling when the lab is at its node limit or memory
    headroom, so the pool never overcommits the machine. One fill at a time
    per host: a fill of a class's forty nodes outlasts beat's round.
    """
    driver = get_driver()
    reaped = driver.reap_dead()
    started, trimmed = [], []
    with paths.try_file_lock("pool-fill.lock") as mine:
        if not mine:
            return {"reaped": reaped, "started": [], "trimmed": [], "busy": True}
        target = pools.targets(settings.LAB_HOST_NAME)
        counts = driver.pool_counts()
        for size, have in counts.items():
            if have > target.get(size, 0):
                trimmed += driver.trim_pool(target.get(size, 0), size)
        # Starts on their way count as taken already (their sessions are
        # still in the target's demand until they have their machines).
        claiming = pools.claiming(settings.LAB_HOST_NAME) if driver.has_pool else {}
        for size, count in sorted(target.items()):
            count -= claiming.get(size, 0)
            if count > counts.get(size, 0):
                started += driver.fill_pool(count, size)
        if driver.has_pool:  # a driver without one has nothing to report
            pools.record(settings.LAB_HOST_NAME, target, driver.pool_counts())
    if reaped or started or trimmed:
        log.info("pool: reaped %d dead node(s), started %d, trimmed %d", len(reaped),
                 len(started), len(trimmed))
    return {"reaped": reaped, "started": started, "trimmed": trimmed}


@shared_task(soft_time_limit=240, time_limit=270)
def end_sessions() -> list:
    """Run by beat: end sessions past their length or idle for too long; their
    nodes are stopped by one stop_session task each (nodes queue).

    Progress lives in StepProgress rows and is never touched; the learner's
    page is told why the session ended. Nodes whose session row is gone are
    removed by reap_nodes.
    """
    ended = []
    for session, reason in LabSession.over_limits():
        LabSession.objects.filter(pk=session.pk).update(ended_because=reason, controller=None)
        log.info("ending session %s (%s): %s", session.runtime_name, session.user, reason)
        # One stop per session, on the nodes queue: a long list of ends never
        # holds up the checks (nor one slow stop the rest).
        stop_session.delay(session.pk)
        ended.append((session.pk, reason))
    return ended


@shared_task(soft_time_limit=240, time_limit=270)
def reset_session(session_id: int) -> str | None:
    """An instructor's reset: stop the learner's nodes, then start fresh ones. Progress stays."""
    session = _session(session_id)
    if session is None:
        return None
    LabSession.objects.filter(pk=session.pk).update(ended_because="reset", controller=None)
    stop_session(session.pk)
    machines.discard(session.user, session.lesson)  # a reset starts the learner over
    fresh, _ = LabSession.ensure_for(session.user, session.lesson)
    if fresh.host_id is None:  # the new session stays on this host, where this runs
        LabSession.objects.filter(pk=fresh.pk).update(host=session.host_id)
        fresh.host_id = session.host_id
    broadcast.push(broadcast.session_group(fresh), fresh.event())
    return start_session(fresh.pk)


@shared_task(soft_time_limit=240, time_limit=300)
def start_queued() -> list:
    """Run by beat: place queued sessions, oldest first, while a host has room,
    and send each its start; then tell the ones still waiting where they stand."""
    started = []
    # Before any host has reported its room (one machine whose node worker has
    # not beaten yet), only the runtime here knows: start here, in turn.
    known_room = SandboxHost.objects.filter(last_seen__isnull=False).exists()
    for session_id in LabSession.objects.filter(state=LabSession.QUEUED).order_by(
            "created").values_list("pk", flat=True):
        if not known_room:
            if start_session(session_id) == LabSession.QUEUED:
                break  # still full: the rest keep their places
            started.append(session_id)
            continue
        session = _session(session_id)
        if session is None:
            continue
        with transaction.atomic():
            host = hosts.place(len(session.lesson.nodes))
            if host is None:
                break  # every host is full: the rest keep their places
            if not LabSession.objects.filter(pk=session.pk, state=LabSession.QUEUED).update(
                    host=host, state=LabSession.STARTING):
                continue  # stopped meanwhile
        mark_session(session, LabSession.STARTING)  # its turn came: the page shows the start
        start_session.delay(session.pk)
        started.append(session_id)
    if started:
        for session in LabSession.objects.filter(state=LabSession.QUEUED).select_related("lesson"):
            broadcast.push(broadcast.session_group(session), session.event())
    return started


@shared_task(soft_time_limit=30, time_limit=60)
def on_every_host(task_name: str) -> list:
    """Run by beat: send `task_name` (maintain_pool, reap_nodes) to the node
    queue of every host that beats, so each looks after its own nodes."""
    task = {"maintain_pool": maintain_pool, "reap_nodes": reap_nodes}[task_name]
    names = list(SandboxHost.objects.filter(state__in=[SandboxHost.ACTIVE, SandboxHost.DRAINING])
                 .filter(last_seen__gte=timezone.now() - hosts.timeout())
                 .values_list("name", flat=True)) or [settings.LAB_HOST_NAME]
    # A host that is down does not pile these up in its queue: each expires
    # when beat would have sent the next one anyway.
    every = settings.CELERY_BEAT_SCHEDULE[
        {"maintain_pool": "maintain-pool", "reap_nodes": "reap-nodes"}[task_name]]["schedule"]
    for name in names:
        task.apply_async(queue=f"nodes.{name}", expires=every)
    return names


@shared_task(name="labs.sandboxes.tasks.lose_dead_hosts", soft_time_limit=30, time_limit=60)
def lose_dead_hosts_task() -> list:
    """Run by beat: hosts silent too long are lost, and their sessions (hosts.py)."""
    return hosts.lose_dead_hosts()


@shared_task(soft_time_limit=600, time_limit=660)
def prune_saves() -> list:
    """Run by beat: saved machines past LAB_SAVE_DAYS are deleted."""
    gone = machines.prune()
    if gone:
        log.info("deleted %d saved machine(s) older than %d days", len(gone), settings.LAB_SAVE_DAYS)
    return gone
