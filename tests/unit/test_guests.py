"""Try as a guest: a real user flagged guest; signing up keeps the user and its progress."""
import pytest
from django.contrib.auth import get_user_model

from labs.models import Profile, StepProgress, is_guest

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
