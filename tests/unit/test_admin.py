"""The operator's admin: users (instructor role, guest flag), classrooms, lessons, progress."""
import pytest
from django.contrib.auth.models import Group

from labs.models import StepProgress, is_instructor

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("olga", password="operator horse battery")


def test_every_admin_page_opens(client, operator, classroom, ada, lesson):
    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")
    client.force_login(operator)
    for url in ["/admin/auth/user/", f"/admin/auth/user/{ada.pk}/change/", "/admin/labs/classroom/",
                f"/admin/labs/classroom/{classroom.pk}/change/", "/admin/labs/lesson/",
                f"/admin/labs/lesson/{lesson.pk}/change/", "/admin/labs/stepprogress/",
                "/admin/labs/labsession/", "/admin/labs/lessonactivity/", "/admin/labs/classmessage/"]:
        assert client.get(url).status_code == 200, url


def test_the_instructor_role_is_granted_by_the_group(operator, otto):
    assert not is_instructor(otto)
    otto.groups.add(Group.objects.get(name="instructors"))  # what the admin's Groups box does
    assert is_instructor(otto)


def test_learners_cannot_open_the_admin(client, ada):
    client.force_login(ada)
    assert client.get("/admin/labs/classroom/").status_code == 302  # to the admin login
