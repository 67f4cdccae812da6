"""Ada's machine is saved when her session ends and resumed on her next Start
(labs/sandboxes/machines.py), on the fake driver with real saves in a
temporary store. The real node side: tests/integration/test_saves.py."""
import datetime

import pytest
from django.utils import timezone
from runtime import saves

from labs.classrooms import reports
from labs.sandboxes import machines, tasks
from labs.sandboxes.models import LabSession, SavedMachine

START = "/lessons/first-containers/start"
STOP = "/lessons/first-containers/stop"
PAGE = "/lessons/first-containers/"


@pytest.fixture
def saving(fake_driver, settings):
    fake_driver.saves_machines = True
    settings.LAB_SAVE = True
    return fake_driver


def stop(client, user):
    client.force_login(user)
    return client.post(STOP, HTTP_ACCEPT="application/json")


def test_stop_saves_the_machine_and_the_page_offers_resume_or_fresh(
        client, ada, ready_session, saving, django_capture_on_commit_callbacks):
    runtime_id = ready_session.node1().runtime_id
    with django_capture_on_commit_callbacks(execute=True):
        assert stop(client, ada).json()["stopping"] is True
    assert ("save", runtime_id, f"u{ada.pk}/first-containers/node1") in saving.calls
    assert runtime_id not in saving.nodes  # the node is gone either way
    saved = SavedMachine.objects.get(user=ada)
    assert saved.state == SavedMachine.SAVED and saved.size > 0 and saved.saved_at is not None
    assert [s.key for s in saves.get_store().list()] == [saved.key]
    html = client.get(PAGE).content.decode()
    assert 'id="resume-button"' in html and 'id="fresh-button"' in html
    assert 'id="saved-machine" hidden' not in html and "is saved (" in html
    assert "saved as it is (containers, images, files)" in html  # Stop's question says so


def test_resume_starts_from_the_save_and_start_fresh_does_not(
        client, ada, ready_session, saving, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(START, {"resume": "1"}).json()["ok"]
    spec = [c[1] for c in saving.calls if c[0] == "start"][-1]
    assert spec.restore == f"u{ada.pk}/first-containers/node1"
    session = LabSession.current_for(ada, ready_session.lesson)
    assert session.state == LabSession.READY and session.resume
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(START, {"resume": "0"})
    spec = [c[1] for c in saving.calls if c[0] == "start"][-1]
    assert spec.restore == ""
    # The fresh session's end replaces the save, it does not add one.
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    assert SavedMachine.objects.filter(user=ada).count() == 1 and len(saves.get_store().list()) == 1


def test_a_save_that_cannot_come_back_gives_a_fresh_machine_that_says_why(
        client, ada, ready_session, saving, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    saving.name = "fake-newer"  # the node image changed since the save
    with django_capture_on_commit_callbacks(execute=True):
        client.post(START, {"resume": "1"})
    session = LabSession.current_for(ada, ready_session.lesson)
    assert session.state == LabSession.READY
    told = [c for c in saving.calls if c[0] == "exec" and c[2][-1] == "cat > /run/lab-motd"]
    assert len(told) == 1
    assert not SavedMachine.objects.filter(user=ada).exists() and saves.get_store().list() == []


def test_past_the_learners_space_the_save_fails_cleanly(
        client, ada, lesson, ready_session, saving, settings, django_capture_on_commit_callbacks):
    settings.LAB_SAVE_MB = 1
    SavedMachine.objects.create(user=ada, lesson=lesson, node_name="node2", state="saved",
                                size=2**20, saved_at=timezone.now())
    runtime_id = ready_session.node1().runtime_id
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    row = SavedMachine.objects.get(user=ada, node_name="node1")
    assert row.state == SavedMachine.FAILED and "1 MB for saved machines are used" in row.message
    assert runtime_id not in saving.nodes
    assert LabSession.objects.get(pk=ready_session.pk).state == LabSession.STOPPED
    assert saves.get_store().list() == []


def test_another_learner_sees_and_resumes_nothing_of_adas(
        client, ada, bob, lesson, ready_session, saving, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    client.force_login(bob)
    html = client.get(PAGE).content.decode()
    assert "is saved (" not in html and 'id="saved-machine" hidden' in html
    with django_capture_on_commit_callbacks(execute=True):
        client.post(START, {"resume": "1"})
    spec = [c[1] for c in saving.calls if c[0] == "start"][-1]
    assert spec.restore == ""


def test_an_instructors_reset_discards_the_save_and_the_grid_shows_who_has_one(
        client, classroom, iris, ada, bob, lesson, ready_session, saving,
        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    assert reports.learner_row(classroom, ada)["saved"] == ["first-containers"]
    assert reports.learner_row(classroom, bob)["saved"] == []
    client.force_login(iris)
    response = client.post(f"/classrooms/{classroom.pk}/learners/{ada.pk}/reset",
                           {"lesson": "first-containers"})
    assert response.json() == {"ok": True, "discarded": True}
    assert not SavedMachine.objects.exists() and saves.get_store().list() == []
    assert reports.learner_row(classroom, ada)["saved"] == []


def test_a_reset_of_a_running_lab_saves_nothing_and_deletes_the_old_save(
        client, classroom, iris, ada, lesson, ready_session, saving,
        django_capture_on_commit_callbacks):
    SavedMachine.objects.create(user=ada, lesson=lesson, node_name="node1", state="saved",
                                size=10, saved_at=timezone.now())
    tasks.reset_session(ready_session.pk)
    assert not [c for c in saving.calls if c[0] == "save"]
    assert not SavedMachine.objects.exists()
    assert LabSession.current_for(ada, lesson).state == LabSession.READY


def test_beat_deletes_saves_older_than_the_days_kept(ada, lesson, ready_session, saving, settings,
                                                      client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    assert machines.prune() == []
    old = timezone.now() - datetime.timedelta(days=settings.LAB_SAVE_DAYS + 1)
    SavedMachine.objects.update(updated=old)
    assert tasks.prune_saves() == [f"u{ada.pk}/first-containers/node1"]
    assert not SavedMachine.objects.exists() and saves.get_store().list() == []


def test_with_saving_off_a_stop_removes_the_machine_as_before(
        client, ada, ready_session, saving, settings, django_capture_on_commit_callbacks):
    settings.LAB_SAVE = False
    runtime_id = ready_session.node1().runtime_id
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    assert ("stop", runtime_id) in saving.calls and not [c for c in saving.calls if c[0] == "save"]
    html = client.get(PAGE).content.decode()
    assert "will be removed" in html and not SavedMachine.objects.exists()


def test_the_admin_lists_saves_with_each_learners_use_and_deletes_their_data(
        client, django_user_model, ada, ready_session, saving, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        stop(client, ada)
    row = SavedMachine.objects.get(user=ada)
    client.force_login(django_user_model.objects.create_superuser("olga", password="x" * 12))
    page = client.get("/admin/sandboxes/savedmachine/").content.decode()
    assert "ada" in page and "0 of 2048 MB" in page
    client.post(f"/admin/sandboxes/savedmachine/{row.pk}/delete/", {"post": "yes"})
    assert not SavedMachine.objects.exists() and saves.get_store().list() == []
