"""Sandbox hosts: heartbeats, placement, a host that goes away and comes back.

The processes of a host (its worker's heartbeat, its queues) run for real in
the multi-host integration tests; here the rules: who gets a session, what
a silent host costs its learners (their machines, never their progress).
"""
from __future__ import annotations

import datetime
import time

from django.conf import settings
from django.utils import timezone

from labs.courses.models import StepProgress
from labs.sandboxes import hosts, tasks
from labs.sandboxes.models import LabSession, SandboxHost

START = "/lessons/first-containers/start"
STOP = "/lessons/first-containers/stop"


def beat(name, room=10, **kwargs):
    versions = hosts.site_versions()
    kwargs.setdefault("version", versions["version"])
    kwargs.setdefault("recipe", versions["recipe"])
    # A host with room for `room` nodes and none running (the site placed none there yet).
    return hosts.heartbeat(name, {"max_nodes": room, "nodes_now": 0, "room": room,
                                  "memory_free": 2**33}, **kwargs)


def test_a_heartbeat_records_the_hosts_load_and_refuses_a_host_that_differs(db):
    host = beat("alpha", room=7, gateway_url="http://10.0.0.2:8001", clock=time.time)
    assert (host.room, host.max_nodes, host.refused, host.state) == (7, 7, "", "active")
    assert host.gateway_url == "http://10.0.0.2:8001"
    assert host.queue("nodes") == "nodes.alpha" and host.queue("checks") == "checks.alpha"
    beat("beta", room=50, clock=lambda: time.time() - 60)
    beat("gamma", room=50, version="0123456789abcdef")
    beat("delta", room=50, recipe="fedcba9876543210")

    # None of those is given a session, though each has more room; the site
    # says why in the hosts' rows (manage.py hosts shows it).
    assert hosts.place(1) == host
    refused = dict(SandboxHost.objects.values_list("name", "refused"))
    assert refused["alpha"] == ""
    assert "clock is -60 s off" in refused["beta"]
    assert "its code (0123456789abcdef) is not the site's" in refused["gamma"]
    assert "image recipes (fedcba9876543210)" in refused["delta"]
    SandboxHost.objects.filter(name="alpha").update(room=0)
    assert hosts.place(1) is None
    beat("beta", room=50, clock=time.time)  # its clock was put right
    assert hosts.place(1).name == "beta"
    assert SandboxHost.objects.get(name="beta").refused == ""


def test_a_beat_that_waits_for_the_database_is_not_taken_for_a_clock_behind(db):
    """The host reads its clock before and after its write, and the database
    stamps last_seen in between: a write that took 8 s (the database busy) says
    nothing of the host's clock, while a clock 8 s behind, read just as often,
    is still refused."""
    def waited(seconds):
        readings = iter([time.time() - seconds, time.time()])  # before, after the write
        return lambda: next(readings)
    beat("alpha", room=5, clock=waited(8))
    assert hosts.place(1).name == "alpha"
    assert hosts.refusal(SandboxHost.objects.get(name="alpha")) == ""
    beat("alpha", room=5, clock=lambda: time.time() - 8)
    assert "clock is -8 s off" in hosts.refusal(SandboxHost.objects.get(name="alpha"))
    assert hosts.place(1) is None


def test_placement_picks_the_host_with_most_room_and_skips_late_draining_and_full(db):
    assert hosts.place(1).name == "local"  # before any heartbeat: this machine
    beat("alpha", room=3)
    beat("beta", room=9)
    beat("gamma", room=20)
    beat("delta", room=50)
    SandboxHost.objects.filter(name="gamma").update(state=SandboxHost.DRAINING)
    SandboxHost.objects.filter(name="delta").update(
        last_seen=timezone.now() - datetime.timedelta(seconds=60))  # late: skipped
    assert hosts.place(1).name == "beta"
    assert hosts.place(4).name == "beta"
    SandboxHost.objects.filter(name="beta").update(room=2)
    assert hosts.place(3).name == "alpha"  # two nodes' room is not three
    assert hosts.place(4) is None


def test_nodes_still_starting_count_against_a_hosts_room(client, ada, bob, lesson,
                                                         django_capture_on_commit_callbacks):
    beat("alpha", room=1)
    beat("beta", room=1)
    for learner in (ada, bob):
        client.force_login(learner)
        with django_capture_on_commit_callbacks(execute=False):
            assert client.post(START).json()["state"] == "starting"
    # One each: alpha's one room was taken by the first start before its
    # heartbeat could count the node.
    assert sorted(LabSession.objects.values_list("host__name", flat=True)) == ["alpha", "beta"]


def test_when_every_host_is_full_start_queues_and_beat_places_it_later(
        client, ada, lesson, fake_driver, django_capture_on_commit_callbacks):
    beat("alpha", room=0)
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        body = client.post(START).json()
    assert callbacks == []  # no start sent anywhere
    assert (body["state"], body["position"]) == ("queued", 1)
    assert "every lab host is full" in body["error"]
    assert tasks.start_queued() == []

    beat("beta", room=5)
    assert tasks.start_queued() == [body["session"]]  # eager here: started on beta's queue
    session = LabSession.objects.get(pk=body["session"])
    assert (session.host.name, session.state) == ("beta", "ready")


def test_a_sessions_tasks_go_to_its_hosts_queues_and_a_start_names_its_queue(
        client, ada, lesson, monkeypatch, django_assert_num_queries,
        django_capture_on_commit_callbacks):
    """The router looks up the session's host (a queued session may have been
    placed since); a start sent just after the placing names the queue, and
    then the router asks the database nothing."""
    from labs.celery import app
    beat("alpha", room=5)
    sent = []
    monkeypatch.setattr(tasks.start_session, "apply_async",
                        lambda args, **options: sent.append((args, options)))
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        body = client.post(START).json()
    assert sent == [((body["session"],), {"queue": "nodes.alpha"})]
    router = app.amqp.router
    assert router.route({}, hosts.TASKS + "run_checks", (body["session"],))["queue"].name == \
        "checks.alpha"
    with django_assert_num_queries(0):
        route = router.route({"queue": "nodes.alpha"}, hosts.TASKS + "start_session",
                             (body["session"],))
    assert route["queue"].name == "nodes.alpha"


def test_a_silent_host_loses_its_sessions_not_their_progress(client, ada, lesson, fake_driver,
                                                             django_capture_on_commit_callbacks):
    beat("alpha", room=5)
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(START).json()
    session = LabSession.objects.get(pk=first["session"])
    assert (session.host.name, session.state) == ("alpha", "ready")
    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")

    assert hosts.lose_dead_hosts() == []  # still beating
    SandboxHost.objects.filter(name="alpha").update(
        last_seen=timezone.now() - datetime.timedelta(seconds=16))
    beat("beta", room=5)
    assert tasks.lose_dead_hosts_task() == ["alpha"]
    session.refresh_from_db()
    event = session.event()
    assert (event["state"], session.host.state) == ("lost", "lost")
    assert "(alpha) stopped answering" in event["error"] and "progress is saved" in event["error"]
    assert {n["state"] for n in event["nodes"]} == {"failed"}
    assert StepProgress.objects.get(user=ada, step__number=1).state == StepProgress.DONE
    assert hosts.lose_dead_hosts() == []  # once

    # Start again: a new session, on the host that is there; the lost one ends.
    with django_capture_on_commit_callbacks(execute=True):
        again = client.post(START).json()
    assert again["session"] != session.pk
    fresh = LabSession.objects.get(pk=again["session"])
    assert (fresh.host.name, fresh.state) == ("beta", "ready")
    session.refresh_from_db()
    assert session.state == "stopped"


def test_stopping_a_lost_session_needs_no_host(client, ada, lesson, fake_driver,
                                               django_capture_on_commit_callbacks):
    beat("alpha", room=5)
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        session_id = client.post(START).json()["session"]
    SandboxHost.objects.filter(name="alpha").update(
        last_seen=timezone.now() - datetime.timedelta(seconds=60))
    hosts.lose_dead_hosts()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(STOP, HTTP_ACCEPT="application/json")
    assert callbacks == []  # no stop sent to a host that is gone
    assert LabSession.objects.get(pk=session_id).state == "stopped"


def test_a_lost_host_that_comes_back_reaps_before_it_takes_sessions(db, fake_driver, settings):
    settings.LAB_HOST_NAME = "alpha"
    reaped = []
    thread = hosts.HeartbeatThread(fake_driver, lambda: reaped.append("reap") or [])
    assert thread.beat_once(first=True).state == "active"
    assert reaped == ["reap"]  # a worker that just started reaps first
    thread.beat_once(first=False)
    assert reaped == ["reap"]
    SandboxHost.objects.filter(name="alpha").update(state=SandboxHost.LOST)
    thread.beat_once(first=False)
    assert reaped == ["reap", "reap"]
    assert SandboxHost.objects.get(name="alpha").state == "active"


def test_beat_asks_every_live_host_to_look_after_its_own_nodes(db, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.maintain_pool, "apply_async",
                        lambda queue, expires: sent.append((queue, expires)))
    assert tasks.on_every_host("maintain_pool") == ["local"]  # no host yet: this machine
    beat("alpha")
    beat("beta")
    beat("gamma")
    SandboxHost.objects.filter(name="gamma").update(
        last_seen=timezone.now() - datetime.timedelta(seconds=60))
    assert tasks.on_every_host("maintain_pool") == ["alpha", "beta"]
    # Each expires by the next round, so a host that is down does not pile them up.
    every = settings.CELERY_BEAT_SCHEDULE["maintain-pool"]["schedule"]
    assert sent == [("nodes.local", every), ("nodes.alpha", every), ("nodes.beta", every)]
