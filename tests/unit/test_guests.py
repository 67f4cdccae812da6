"""Try as a guest: a real user flagged guest; signing up keeps the user and its progress."""
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from labs.accounts.models import Profile, is_guest
from labs.courses.models import StepProgress

pytestmark = pytest.mark.django_db


def test_try_as_a_guest_makes_a_logged_in_guest(client, lesson):
    response = client.post("/accounts/guest/", {"next": "/lessons/first-containers/"})
    assert response.status_code == 302 and response["Location"] == "/lessons/first-containers/"
    guest = get_user_model().objects.get(username__startswith="guest-")
    assert is_guest(guest) and not guest.has_usable_password()
    page = client.get("/lessons/first-containers/")
    assert page.context["user"] == guest
    assert b'id="start-button"' in page.content  # a guest gets a lab machine like anyone


def test_guest_next_never_leaves_the_site(client, lesson):
    response = client.post("/accounts/guest/", {"next": "https://evil.example/"})
    assert response["Location"] == "/dashboard/"


def test_signing_up_converts_the_guest_and_keeps_progress(client, lesson):
    client.post("/accounts/guest/")
    guest = get_user_model().objects.get(username__startswith="guest-")
    StepProgress.record(guest, lesson.steps.get(number=1), StepProgress.DONE, "")
    response = client.post("/accounts/signup/", {"username": "gina", "password1": "a-long-pass-phrase-42",
                                                 "password2": "a-long-pass-phrase-42"})
    assert response.status_code == 302
    gina = get_user_model().objects.get(username="gina")
    assert gina.pk == guest.pk  # the same user, so everything it had stays
    assert not Profile.objects.get(user=gina).guest
    assert gina.check_password("a-long-pass-phrase-42")
    assert StepProgress.objects.get(user=gina, step__number=1).state == StepProgress.DONE
    assert get_user_model().objects.count() == 1
    dash = client.get("/dashboard/")
    assert dash.context["user"] == gina
    assert b'data-done="1" data-total="2"' in dash.content


def test_signing_up_without_being_a_guest_makes_a_new_user(client, db):
    client.post("/accounts/signup/", {"username": "hal", "password1": "a-long-pass-phrase-42",
                                      "password2": "a-long-pass-phrase-42"})
    assert not is_guest(get_user_model().objects.get(username="hal"))


def _guest_made(days_ago: int):
    guest = Profile.make_guest()
    joined = timezone.now() - timezone.timedelta(days=days_ago)
    get_user_model().objects.filter(pk=guest.pk).update(date_joined=joined)
    return guest


def test_beat_removes_guests_nobody_will_come_back_to(lesson, classroom, settings):
    from labs.accounts import tasks
    from labs.classrooms.models import Membership
    from labs.courses.models import LessonActivity
    from labs.sandboxes.models import LabSession

    settings.LAB_GUEST_DAYS = 30
    gone = _guest_made(40)  # tried a lesson once, long ago
    StepProgress.record(gone, lesson.steps.get(number=1), StepProgress.DONE, "")
    old = timezone.now() - timezone.timedelta(days=40)
    LessonActivity.objects.filter(user=gone).update(started=old, last=old)
    new = _guest_made(3)
    came_back = _guest_made(40)
    LessonActivity.touch(came_back, lesson)  # active today
    in_class = _guest_made(40)
    Membership.objects.create(classroom=classroom, user=in_class)
    running = _guest_made(40)
    session = LabSession.objects.create(user=running, lesson=lesson, state=LabSession.READY)
    LabSession.objects.filter(pk=session.pk).update(updated=old)
    account = get_user_model().objects.create_user("old-account", password="x-long-pass-42")
    get_user_model().objects.filter(pk=account.pk).update(date_joined=old)

    assert tasks.remove_stale_guests() == 1
    left = set(get_user_model().objects.values_list("pk", flat=True))
    assert gone.pk not in left
    assert {new.pk, came_back.pk, in_class.pk, running.pk, account.pk} <= left
    assert not StepProgress.objects.filter(user_id=gone.pk).exists()


def test_guest_days_zero_keeps_every_guest(settings):
    from labs.accounts import tasks

    settings.LAB_GUEST_DAYS = 0
    guest = _guest_made(400)
    assert tasks.remove_stale_guests() == 0
    assert get_user_model().objects.filter(pk=guest.pk).exists()


def test_a_guest_name_taken_already_is_drawn_again(db, monkeypatch, django_user_model):
    django_user_model.objects.create_user("guest-0000000a")
    drawn = iter(["0000000a", "0000000b"])
    monkeypatch.setattr("labs.accounts.models.secrets.token_hex", lambda n: next(drawn))
    guest = Profile.make_guest()
    assert guest.username == "guest-0000000b" and is_guest(guest)
    assert django_user_model.objects.filter(username__startswith="guest-").count() == 2
