"""Visitors see the lesson list and lesson pages; Ada sees her own progress."""
import re

import pytest

from labs.courses.models import StepProgress


def test_home_lists_the_lesson(client, lesson):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'href="/lessons/first-containers/"' in html
    assert "Run your first containers" in html
    assert "2 steps" in html


@pytest.mark.django_db
def test_unknown_lesson_is_404(client):
    assert client.get("/lessons/no-such-lesson/").status_code == 404


def test_anonymous_visitor_sees_steps_and_a_login_prompt(client, lesson):
    html = client.get("/lessons/first-containers/").content.decode()
    assert re.findall(r'data-step="(\d+)" data-state="(\w+)"', html) == [("1", "pending"), ("2", "pending")]
    assert "to get your own lab machine" in html
    assert 'id="start-button"' not in html


def test_ada_sees_stored_progress(client, lesson, ada):
    step1 = lesson.steps.get(number=1)
    StepProgress.record(ada, step1, StepProgress.DONE, "")
    StepProgress.record(ada, lesson.steps.get(number=2), StepProgress.PENDING, "List them all")
    client.force_login(ada)
    html = client.get("/lessons/first-containers/").content.decode()
    assert re.findall(r'data-step="(\d+)" data-state="(\w+)"', html) == [("1", "done"), ("2", "pending")]
    assert "List them all" in html
    assert 'id="start-button" class="button primary" disabled >' in html  # shown: no machine yet
    assert 'data-node=""' in html
    assert "/static/bundles/lesson.js" in html  # xterm.js and lesson.js, in one


def test_page_attaches_to_ready_node(client, ready_session, ada):
    client.force_login(ada)
    html = client.get("/lessons/first-containers/").content.decode()
    node = ready_session.node1()
    assert f'data-node="{node.pk}"' in html
    assert 'data-state="ready"' in html


def test_bobs_progress_is_not_shown_to_ada(client, lesson, ada, bob):
    StepProgress.record(bob, lesson.steps.get(number=1), StepProgress.DONE, "")
    client.force_login(ada)
    html = client.get("/lessons/first-containers/").content.decode()
    assert 'data-step="1" data-state="pending"' in html


def test_the_page_counts_steps_done_and_ends_with_the_next_lesson(client, lesson, two_node_lesson,
                                                                    ada):
    from datetime import timedelta

    from labs.courses.models import LessonActivity
    two_node_lesson.order = lesson.order + 1
    two_node_lesson.save()
    client.force_login(ada)
    html = client.get("/lessons/first-containers/").content.decode()
    assert re.search(r'id="steps-done">0</span> of 2 steps done', html)
    assert re.search(r'id="lesson-complete"[^>]*\bhidden\b', html)  # not over yet

    StepProgress.record(ada, lesson.steps.get(number=1), StepProgress.DONE, "")
    assert re.search(r'id="steps-done">1</span> of 2', client.get("/lessons/first-containers/")
                     .content.decode())
    StepProgress.record(ada, lesson.steps.get(number=2), StepProgress.DONE, "")
    LessonActivity.objects.filter(user=ada, lesson=lesson).update(
        started=StepProgress.objects.get(user=ada, step__number=2, step__lesson=lesson).done_at
        - timedelta(minutes=83))
    page = client.get("/lessons/first-containers/")
    html = page.content.decode()
    assert page.context["complete"] and page.context["took"] == "1 h 23 min"
    assert not re.search(r'id="lesson-complete"[^>]*\bhidden\b', html)
    assert "You did all 2 steps<span id=\"complete-took\"> in 1 h 23 min</span>." in html
    assert f'href="/lessons/{two_node_lesson.slug}/">Next lesson: {two_node_lesson.title}' in html
