"""A class starts fast: the join link joins in one request, and the warm pool
is sized from the classroom schedule (labs/sandboxes/pools.py)."""
import datetime

import pytest
from django.test import Client
from django.utils import timezone

from labs.accounts.models import is_guest
from labs.classrooms.models import ClassMessage, Classroom
from labs.sandboxes import pools
from labs.sandboxes.hosts import heartbeat
from labs.sandboxes.models import LabSession, SandboxHost
from labs.sandboxes.tasks import maintain_pool

pytestmark = pytest.mark.django_db


def minutes(n):
    return timezone.now() + datetime.timedelta(minutes=n)


def test_the_join_link_makes_a_guest_joins_and_starts_the_lab_in_one_request(
        client, classroom, fake_driver, django_user_model, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.get(f"/join/{classroom.code}/",
                              HTTP_USER_AGENT="Mozilla/5.0 Firefox/140")
    # The lesson page itself, in the same response (no redirect and second
    # request); its script puts the lesson's address in the address bar.
    assert response.status_code == 200
    assert b'data-page-url="/lessons/first-containers/"' in response.content
    guest = classroom.memberships.latest("pk").user
    assert response.context["user"] == guest
    assert is_guest(guest) and classroom.memberships.count() == 3
    # No password, so no hash was computed for it.
    assert not guest.has_usable_password() and guest.password.startswith("!")
    # The machine is on its way before the lesson page asks (eager Celery here).
    session = LabSession.objects.get(user=guest)
    assert session.state == LabSession.READY
    assert [c[0] for c in fake_driver.calls] == ["start"]
    # Logged in: the lesson page is the guest's.
    assert client.get("/dashboard/").context["user"] == guest
    # Opening the link again is the same guest and the same lab.
    client.get(f"/join/{classroom.code}/")
    assert django_user_model.objects.filter(pk=guest.pk).count() == 1
    assert LabSession.objects.filter(user=guest).count() == 1


def test_the_join_link_page_shows_what_the_class_was_told_before(client, classroom, iris, ada,
                                                                fake_driver):
    """A guest made by the link is in no other classroom and was sent nothing
    yet: their page shows the class's messages of the last hours, not a
    message the instructor sent one learner, nor one sent long ago."""
    ClassMessage.objects.create(classroom=classroom, sender=iris, text="We start at 9:05")
    ClassMessage.objects.create(classroom=classroom, sender=iris, to_user=ada, text="Ada, see me")
    old = ClassMessage.objects.create(classroom=classroom, sender=iris, text="Yesterday's notes")
    ClassMessage.objects.filter(pk=old.pk).update(sent=minutes(-60 * 24))
    html = client.get(f"/join/{classroom.code}/", HTTP_USER_AGENT="Mozilla/5.0 Firefox/140"
                      ).content.decode()
    assert "iris (to the class): </strong>We start at 9:05" in html
    assert "Ada, see me" not in html and "Yesterday" not in html


def test_a_link_preview_gets_the_page_and_makes_no_guest(client, classroom, django_user_model,
                                                         fake_driver):
    users = django_user_model.objects.count()
    page = client.get(f"/join/{classroom.code}/",
                      HTTP_USER_AGENT="Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)")
    assert page.status_code == 200 and b"Join as a guest" in page.content
    assert django_user_model.objects.count() == users and not fake_driver.calls


def test_joining_long_before_the_class_starts_no_machine(client, classroom, fake_driver):
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(120), ends=minutes(300))
    response = client.get(f"/join/{classroom.code}/")
    assert response.status_code == 200 and b'id="start-button"' in response.content
    assert classroom.memberships.count() == 3 and not LabSession.objects.exists()


def test_the_instructor_opening_the_link_does_not_join_their_own_class(client, classroom, iris):
    client.force_login(iris)
    page = client.get(f"/join/{classroom.code}/")
    assert page.status_code == 200 and not classroom.has_learner(iris.pk)


def test_someone_logged_in_is_never_joined_by_opening_a_link(client, classroom, otto, fake_driver,
                                                             django_capture_on_commit_callbacks):
    # Any page could send Otto to a stranger's class link: its instructor would
    # then see his progress and terminal. He is shown the class and presses Join.
    client.force_login(otto)
    page = client.get(f"/join/{classroom.code}/")
    assert page.status_code == 200 and b"join-button" in page.content
    assert not classroom.has_learner(otto.pk) and not LabSession.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/join/{classroom.code}/")
    assert response["Location"] == "/lessons/first-containers/"
    assert classroom.has_learner(otto.pk)
    assert LabSession.objects.get(user=otto).state == LabSession.READY  # the press started it


# ---- the pool, from the schedule -------------------------------------------------

def test_between_classes_the_pool_is_its_configured_size(settings, classroom):
    settings.LAB_POOL_SIZE = 2
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(60), ends=minutes(200))
    assert pools.targets(settings.LAB_HOST_NAME) == {1: 2}


def test_a_class_about_to_start_needs_a_machine_per_expected_learner(settings, classroom, ada,
                                                                      lesson):
    settings.LAB_POOL_SIZE, settings.LAB_POOL_LEAD_MINUTES = 2, 10
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(5), ends=minutes(200),
                                                     seats=40)
    assert pools.targets(settings.LAB_HOST_NAME) == {1: 2 + 40}
    # Ada's start is on its way but has no machine yet: hers is still needed
    # (the pool must not shrink under a class whose starts are queued).
    session = LabSession.objects.create(user=ada, lesson=lesson, state=LabSession.STARTING)
    node = session.nodes.create(name="node1")
    assert pools.targets(settings.LAB_HOST_NAME) == {1: 2 + 40}
    # Her start took a machine: one fewer to keep ready.
    node.mark_ready("n1")
    assert pools.targets(settings.LAB_HOST_NAME) == {1: 2 + 39}
    LabSession.objects.filter(pk=session.pk).update(state=LabSession.READY)
    assert pools.targets(settings.LAB_HOST_NAME) == {1: 2 + 39}
    # More learners joined than expected: who has joined counts.
    Classroom.objects.filter(pk=classroom.pk).update(seats=1)
    assert pools.targets(settings.LAB_HOST_NAME) == {1: 2 + 1}  # Ada and Bob, Ada running


def test_with_the_schedule_off_the_pool_keeps_its_size(settings, classroom):
    settings.LAB_POOL_SIZE, settings.LAB_POOL_CLASSES = 2, False
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(5), ends=minutes(200), seats=40)
    assert pools.targets(settings.LAB_HOST_NAME) == {1: 2}
    assert pools.readiness(Classroom.objects.get(pk=classroom.pk)) is None


def test_the_window_opens_at_the_lead_time_and_closes_after_the_hold(settings, classroom):
    settings.LAB_POOL_SIZE, settings.LAB_POOL_LEAD_MINUTES = 0, 10
    settings.LAB_POOL_HOLD_MINUTES = 15
    Classroom.objects.filter(pk=classroom.pk).update(seats=30)
    for start, counted in ((11, False), (9, True), (-14, True), (-16, False)):
        Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(start), ends=minutes(180))
        assert pools.targets(settings.LAB_HOST_NAME).get(1, 0) == (30 if counted else 0), start


def test_overlapping_classes_add_up_and_multi_node_lessons_get_whole_sessions(
        settings, classroom, other_classroom, two_node_lesson):
    settings.LAB_POOL_SIZE = 1
    Classroom.objects.filter(pk__in=[classroom.pk, other_classroom.pk]).update(
        starts=minutes(3), ends=minutes(100), seats=10)
    other_classroom.lessons.set([two_node_lesson])
    assert pools.targets(settings.LAB_HOST_NAME) == {1: 1 + 10, 2: 10}


def test_the_demand_is_shared_by_the_hosts_taking_sessions(settings, classroom):
    settings.LAB_POOL_SIZE = 2
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(1), ends=minutes(100), seats=41)
    for name in ("alpha", "beta"):
        heartbeat(name, {"max_nodes": 100, "nodes_now": 0, "room": 100, "memory_free": 2**34})
    assert pools.targets("alpha") == {1: 2 + 21} == pools.targets("beta")


def test_maintain_pool_grows_for_the_class_and_shrinks_after(settings, classroom, fake_driver):
    settings.LAB_POOL_SIZE = 2
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(4), ends=minutes(100), seats=40)
    maintain_pool()
    assert fake_driver.pool_counts() == {1: 42}
    host = SandboxHost.objects.get(name=settings.LAB_HOST_NAME)
    assert (host.pool_target, host.pool_ready, host.pool_short) == (42, 42, "")
    # The class has started long enough ago: back to the configured size.
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(-30))
    maintain_pool()
    assert fake_driver.pool_counts() == {1: 2}
    assert ("trim_pool", 2, 1) in fake_driver.pool_calls


def test_while_the_class_arrives_the_pool_is_neither_trimmed_nor_refilled_under_it(
        settings, classroom, fake_driver, ada, bob, lesson):
    settings.LAB_POOL_SIZE = 2
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(4), ends=minutes(100), seats=40)
    maintain_pool()
    assert fake_driver.pool_counts() == {1: 42}
    host = SandboxHost.objects.get(name=settings.LAB_HOST_NAME)
    # Ada's and Bob's starts are queued on this host, no machine yet: the
    # pool keeps theirs (it was trimmed to 2 + 38 here before).
    starts = [LabSession.objects.create(user=u, lesson=lesson, host=host,
                                        state=LabSession.STARTING) for u in (ada, bob)]
    for s in starts:
        s.nodes.create(name="node1")
    maintain_pool()
    assert fake_driver.pool_counts() == {1: 42}
    # Ada's start took a pool node and has not recorded it yet: no cold start
    # to replace it.
    fake_driver.pool[1] -= 1
    calls = len(fake_driver.pool_calls)
    maintain_pool()
    assert fake_driver.pool_counts() == {1: 41}
    assert not [c for c in fake_driver.pool_calls[calls:] if c[0] == "fill_pool"]


def test_a_pool_that_cannot_be_filled_says_so_on_the_classroom_page(settings, client, iris,
                                                                    classroom, fake_driver):
    settings.LAB_POOL_SIZE = 2
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(4), ends=minutes(100), seats=40)
    heartbeat(settings.LAB_HOST_NAME, {"max_nodes": 32, "nodes_now": 0, "room": 32,
                                       "memory_free": 2**34})
    fake_driver.pool_room = 32  # the host holds 32 pool nodes: 2 of them between classes
    maintain_pool()
    assert fake_driver.pool_counts() == {1: 32}
    assert SandboxHost.objects.get(name=settings.LAB_HOST_NAME).pool_short
    client.force_login(iris)
    html = client.get(f"/classrooms/{classroom.pk}/").content.decode()
    assert "room for 30 of 40 ready machines" in " ".join(html.split())
    # Filled: the page counts them.
    fake_driver.pool_room = None
    maintain_pool()
    html = client.get(f"/classrooms/{classroom.pk}/").content.decode()
    assert "Ready machines waiting for this class: 40 of 40" in " ".join(html.split())


def test_the_instructor_gives_the_expected_learners_or_leaves_it_empty(client, iris, lesson):
    client.force_login(iris)
    base = {"name": "Docker 101", "lessons": [lesson.pk], "starts": "2026-01-05T09:00",
            "ends": "2036-01-05T12:00"}
    client.post("/classrooms/", {**base, "seats": "40"})
    client.post("/classrooms/", {**base, "seats": ""})
    assert sorted(Classroom.objects.values_list("seats", flat=True)) == [0, 40]


def test_an_upcoming_class_says_when_its_machines_are_prepared(settings, client, iris, classroom):
    Classroom.objects.filter(pk=classroom.pk).update(starts=minutes(120), ends=minutes(300))
    client.force_login(iris)
    html = " ".join(client.get(f"/classrooms/{classroom.pk}/").content.decode().split())
    assert "Ready machines are prepared for this class from" in html


def test_a_two_node_lesson_takes_a_whole_pre_built_session(
        settings, two_node_lesson, ada, fake_driver, client, django_capture_on_commit_callbacks):
    fake_driver.fill_pool(1, 2)
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/lessons/{two_node_lesson.slug}/start")
    starts = [c[1] for c in fake_driver.calls if c[0] == "start"]
    assert [s.session_nodes for s in starts] == [2, 2]
    assert fake_driver.pool_counts()[2] == 0
    assert all(n.extra["claimed"] for n in fake_driver.nodes.values())


def test_the_join_link_asks_the_database_little(client, classroom, fake_driver,
                                                django_assert_max_num_queries):
    """A class of forty joins at once, each request on the one database: a
    new guest's join (guest, membership, session and nodes, placed on a host)
    and the lesson page it answers with stay within a count of queries that a
    change adding to it has to raise."""
    client.get(f"/join/{classroom.code}/", HTTP_USER_AGENT="Mozilla/5.0 Firefox/140")  # the host row
    with django_assert_max_num_queries(23):
        response = Client().get(f"/join/{classroom.code}/", HTTP_USER_AGENT="Mozilla/5.0 Firefox/140")
    assert response.status_code == 200
