"""A newcomer signs up, logs out and logs back in."""
import pytest
from django.contrib.auth import get_user_model

# Sign-up and log-in here go through the site's own password hashers.
pytestmark = pytest.mark.real_hashers


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


def test_password_hashes_run_a_bounded_number_at_once(monkeypatch):
    """A class signing up at once must not put every core to hashing: the
    hasher lets only its slots' worth of hashes run together, at a lower CPU
    priority than the rest of the site; the others wait. The hashes stay
    Django's own pbkdf2_sha256, checkable by the stock hasher."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor
    import time
    from django.contrib.auth import hashers as django_hashers
    from django.contrib.auth.hashers import PBKDF2PasswordHasher, check_password, make_password
    from labs.accounts import hashers

    stock = make_password("a long pass phrase 42", hasher=PBKDF2PasswordHasher())
    assert check_password("a long pass phrase 42", stock)  # verified by ours, the default
    ours = make_password("a long pass phrase 42")
    assert ours.startswith("pbkdf2_sha256$")
    assert PBKDF2PasswordHasher().verify("a long pass phrase 42", ours)

    monkeypatch.setattr(hashers, "_pool", ThreadPoolExecutor(
        max_workers=2, initializer=hashers._lower_priority))
    running, most, niceness = [0], [0], set()
    lock = threading.Lock()
    real = django_hashers.pbkdf2

    def slow_pbkdf2(*args, **kwargs):
        niceness.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return real(*args, **kwargs)
    monkeypatch.setattr(django_hashers, "pbkdf2", slow_pbkdf2)

    threads = [threading.Thread(target=make_password, args=("pw %d" % i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 2
    assert niceness == {min(19, os.getpriority(os.PRIO_PROCESS, 0) + hashers.NICE)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < min(niceness)


@pytest.mark.django_db(transaction=True)
def test_signup_hashes_the_password_outside_any_transaction(client, monkeypatch):
    """A transaction holds SQLite's write lock (BEGIN IMMEDIATE): hashing in
    one would keep every other write waiting for the whole hash."""
    from django.db import connection
    from labs.accounts.hashers import BoundedPBKDF2PasswordHasher
    seen = []
    real = BoundedPBKDF2PasswordHasher.encode

    def encode(self, *args, **kwargs):
        seen.append(connection.in_atomic_block)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(BoundedPBKDF2PasswordHasher, "encode", encode)
    response = client.post("/accounts/signup/", {
        "username": "grace", "password1": "a long pass phrase 42", "password2": "a long pass phrase 42"})
    assert response.status_code == 302
    assert seen == [False]
    assert get_user_model().objects.get(username="grace").check_password("a long pass phrase 42")


def test_a_new_visitors_login_writes_its_session_once_and_a_brought_key_is_changed(client, ada):
    """labs/accounts/sessions.py: a visitor without a session logs in with
    one insert of the session row (no lookup of the new key, no empty row
    updated after); a visitor who brought a session key gets another one on
    login, so nobody can plant a key and share the session it becomes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.post("/accounts/login/", {"username": "ada", "password": "correct horse battery"})
    assert response.status_code == 302
    touching = [q["sql"].split()[0] for q in queries.captured_queries if "django_session" in q["sql"]]
    assert touching == ["INSERT"], touching
    assert client.get("/dashboard/").context["user"] == ada

    client.post("/accounts/logout/")
    planted = client.session  # a saved session, its key in the cookie
    planted["seen"] = 1
    planted.save()
    client.cookies["sessionid"] = planted.session_key
    client.post("/accounts/login/", {"username": "ada", "password": "correct horse battery"})
    assert client.cookies["sessionid"].value != planted.session_key
    assert client.get("/dashboard/").context["user"] == ada
