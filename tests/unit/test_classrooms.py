"""Iris creates a classroom; Ada joins with its code or link; only instructors create."""
import pytest
from django.utils import timezone

from labs.accounts.models import is_guest
from labs.classrooms.models import Classroom, Membership

pytestmark = pytest.mark.django_db


def form(lesson, **extra):
    return {"name": "Docker 101", "lessons": [lesson.pk], "starts": "2026-01-05T09:00",
            "ends": "2036-01-05T12:00", **extra}


def test_instructor_creates_a_classroom_with_a_code(client, iris, lesson):
    client.force_login(iris)
    response = client.post("/classrooms/", form(lesson))
    room = Classroom.objects.get()
    assert response["Location"] == f"/classrooms/{room.pk}/"
    assert room.owner == iris and list(room.lessons.all()) == [lesson]
    assert len(room.code) == 8 and room.code.isalnum()
    page = client.get(f"/classrooms/{room.pk}/")
    assert room.code.encode() in page.content
    assert f"/join/{room.code}/".encode() in page.content


def test_the_new_classroom_form_ticks_no_lesson(client, iris, lesson):
    client.force_login(iris)
    html = client.get("/classrooms/").content.decode()
    boxes = [tag for tag in html.split("<input") if 'name="lessons"' in tag]
    assert boxes and not any("checked" in tag.split(">")[0] for tag in boxes)


def test_end_must_follow_start(client, iris, lesson):
    client.force_login(iris)
    response = client.post("/classrooms/", form(lesson, ends="2026-01-05T08:00"))
    assert response.status_code == 200 and not Classroom.objects.exists()


@pytest.mark.parametrize("who", ["ada", "otto"])
def test_only_instructors_create_classrooms(who, client, request, lesson):
    client.force_login(request.getfixturevalue(who))
    assert client.get("/classrooms/").status_code == 403
    assert client.post("/classrooms/", form(lesson)).status_code == 403
    assert not Classroom.objects.exists()


def test_learner_joins_with_the_code(client, iris, otto, lesson, classroom):
    client.force_login(otto)
    response = client.post("/join/", {"code": classroom.code.lower()})
    assert response["Location"] == "/lessons/first-containers/"
    assert Membership.objects.filter(classroom=classroom, user=otto).exists()


def test_the_join_form_asks_a_stranger_to_log_in_or_be_a_guest(client, classroom):
    # The typed-in code (not the link) leads to the page that offers the choice.
    response = client.post("/join/", {"code": classroom.code})
    assert response["Location"] == f"/join/{classroom.code}/"
    assert classroom.memberships.count() == 2
    # As a guest: one click makes the guest, joins and opens the first lesson.
    response = client.post(f"/join/{classroom.code}/", {"as_guest": "1"})
    assert response["Location"] == "/lessons/first-containers/"
    assert classroom.memberships.count() == 3
    guest = classroom.memberships.latest("pk").user
    assert is_guest(guest) and client.get("/dashboard/").context["user"] == guest


def test_a_guest_of_an_ended_class_is_not_made(client, classroom, django_user_model):
    Classroom.objects.filter(pk=classroom.pk).update(ends=timezone.now() - timezone.timedelta(minutes=1))
    users = django_user_model.objects.count()
    assert b"has ended" in client.post(f"/join/{classroom.code}/", {"as_guest": "1"}).content
    assert django_user_model.objects.count() == users


def test_wrong_or_ended_codes_are_refused(client, otto, classroom):
    client.force_login(otto)
    assert b"No classroom has that code" in client.post("/join/", {"code": "NOPE1234"}).content
    Classroom.objects.filter(pk=classroom.pk).update(ends=timezone.now() - timezone.timedelta(minutes=1))
    assert b"has ended" in client.post(f"/join/{classroom.code}/").content
    assert not Membership.objects.filter(user=otto).exists()
