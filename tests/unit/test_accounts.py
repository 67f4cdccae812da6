"""A newcomer signs up, logs out and logs back in."""
import pytest
from django.contrib.auth import get_user_model


@pytest.mark.django_db
def test_newcomer_signs_up_and_is_logged_in(client):
    response = client.post("/accounts/signup/", {
        "username": "grace", "password1": "a long pass phrase 42", "password2": "a long pass phrase 42"})
    assert response.status_code == 302
    assert get_user_model().objects.filter(username="grace").exists()
    home = client.get("/")
    assert b"grace" in home.content and b"Log out" in home.content


@pytest.mark.django_db
def test_signup_with_mismatched_passwords_shows_the_form_again(client):
    response = client.post("/accounts/signup/", {
        "username": "grace", "password1": "a long pass phrase 42", "password2": "different 42 phrase"})
    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="grace").exists()


def test_ada_logs_in_and_out(client, ada):
    response = client.post("/accounts/login/", {"username": "ada", "password": "correct horse battery"})
    assert response.status_code == 302
    assert b"ada" in client.get("/").content
    assert client.post("/accounts/logout/").status_code == 302
    assert b"Log in" in client.get("/").content


def test_wrong_password_is_refused(client, ada):
    response = client.post("/accounts/login/", {"username": "ada", "password": "nope"})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
