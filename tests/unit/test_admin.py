"""The operator's admin: users (instructor role, guest flag), classrooms, lessons, progress."""
import pytest
from django.contrib.auth.models import Group

from labs.accounts.models import is_instructor
from labs.courses.models import StepProgress

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("olga", password="operator horse battery")


def test_every_admin_page_opens(client, operator, classroom, ada, lesson):
    from labs.sandboxes.hosts import heartbeat
    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")
    host = heartbeat("h2", {"max_nodes": 40, "nodes_now": 3, "room": 37, "memory_free": 2**33},
                     "http://h2.example.org:8001")
    client.force_login(operator)
    hosts_page = client.get("/admin/sandboxes/sandboxhost/").content.decode()
    assert "h2" in hosts_page and "http://h2.example.org:8001" in hosts_page
    assert client.get(f"/admin/sandboxes/sandboxhost/{host.pk}/change/").status_code == 200
    for url in ["/admin/auth/user/", f"/admin/auth/user/{ada.pk}/change/", "/admin/classrooms/classroom/",
                f"/admin/classrooms/classroom/{classroom.pk}/change/", "/admin/courses/lesson/",
                f"/admin/courses/lesson/{lesson.pk}/change/", "/admin/courses/stepprogress/",
                "/admin/sandboxes/labsession/", "/admin/courses/lessonactivity/", "/admin/classrooms/classmessage/",
                "/admin/sandboxes/savedmachine/"]:
        assert client.get(url).status_code == 200, url


def test_the_instructor_role_is_granted_by_the_group(operator, otto):
    assert not is_instructor(otto)
    otto.groups.add(Group.objects.get(name="instructors"))  # what the admin's Groups box does
    assert is_instructor(otto)


def test_learners_cannot_open_the_admin(client, ada):
    client.force_login(ada)
    assert client.get("/admin/classrooms/classroom/").status_code == 302  # to the admin login


def test_admin_pages_from_before_the_split_lead_to_their_new_place(client, operator, classroom):
    client.force_login(operator)
    response = client.get(f"/admin/labs/classroom/{classroom.pk}/change/?x=1")
    assert response.status_code == 301
    assert response["Location"] == f"/admin/classrooms/classroom/{classroom.pk}/change/?x=1"
    assert client.get("/admin/labs/labsession/")["Location"] == "/admin/sandboxes/labsession/"
    assert client.get("/admin/labs/nosuchmodel/").status_code == 404
