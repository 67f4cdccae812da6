"""Ada's dashboard shows every lesson with her progress and where to resume; only hers."""
import pytest

from labs.courses.models import LessonActivity, StepProgress

pytestmark = pytest.mark.django_db


def test_dashboard_counts_steps_and_links_to_the_first_open_one(client, lesson, ada, bob):
    client.force_login(ada)
    client.get("/lessons/first-containers/")  # beginning the lesson is activity
    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")
    StepProgress.record(bob, lesson.steps.get(number=2), StepProgress.DONE, "")  # not Ada's
    page = client.get("/dashboard/")
    (row,) = page.context["rows"]
    assert (row["done"], row["total"], row["resume"]) == (1, 2, 2)
    assert row["last"] == LessonActivity.objects.get(user=ada, lesson=lesson).last
    assert b'href="/lessons/first-containers/#step-2"' in page.content
    assert b"1 / 2 steps" in page.content


def test_finished_lesson_says_done(client, lesson, ada):
    for step in lesson.steps.all():
        StepProgress.record(ada, step, StepProgress.DONE, "")
    client.force_login(ada)
    (row,) = client.get("/dashboard/").context["rows"]
    assert row["resume"] is None and row["done"] == row["total"] == 2


def test_lesson_page_marks_the_step_to_resume(client, lesson, ada):
    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")
    client.force_login(ada)
    page = client.get("/lessons/first-containers/")
    assert page.context["resume"] == 2
    assert b'class="step resume" id="step-2"' in page.content


def test_dashboard_needs_a_login(client, db):
    assert client.get("/dashboard/").status_code == 302


def test_running_labs_are_listed_with_a_stop_each_and_only_hers(client, ada, bob, ready_session):
    from labs.sandboxes.models import LabSession
    LabSession.objects.create(user=bob, lesson=ready_session.lesson, state=LabSession.READY)
    client.force_login(ada)
    page = client.get("/dashboard/")
    (running,) = page.context["running"]
    assert running.pk == ready_session.pk and running.node_count == 1
    html = page.content.decode()
    assert 'id="running-labs"' in html
    assert 'action="/lessons/first-containers/stop"' in html
    assert "left</span>" in html.replace("\n", "").replace("  ", "")
    # Asked to stop: shown as stopping, with no second Stop; once stopped, gone.
    LabSession.objects.filter(pk=ready_session.pk).update(ended_because="stopped")
    html = client.get("/dashboard/").content.decode()
    assert "stopping…" in html and 'action="/lessons/first-containers/stop"' not in html
    LabSession.objects.filter(pk=ready_session.pk).update(state=LabSession.STOPPED)
    page = client.get("/dashboard/")
    assert page.context["running"] == [] and "No lab machine is running" in page.content.decode()
