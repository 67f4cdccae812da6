"""Ada answers a quiz step: judged on the server, recorded, and pushed to her page."""
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from labs.asgi import application
from labs.courses.models import StepProgress

ANSWER = "/lessons/two-nodes/steps/1/answer"
JSON = {"HTTP_ACCEPT": "application/json"}


def test_right_answer_marks_the_step_done(client, two_node_lesson, ada):
    client.force_login(ada)
    body = client.post(ANSWER, {"choice": "1"}, **JSON).json()
    assert body == {"ok": True, "correct": True, "type": "step", "step": 1, "state": "done",
                    "message": ""}
    progress = StepProgress.objects.get(user=ada, step__number=1)
    assert progress.state == "done" and progress.done_at is not None


@pytest.mark.parametrize("choice", ["0", "2", "7", "-1", "one", ""])
def test_wrong_answer_explains_and_stays_pending(client, two_node_lesson, ada, choice):
    client.force_login(ada)
    body = client.post(ANSWER, {"choice": choice}, **JSON).json()
    assert body["correct"] is False and body["state"] == "pending"
    assert body["message"] == "Not quite. The swarm is initialised on node1, so node1 manages it."
    assert StepProgress.objects.get(user=ada, step__number=1).state == "pending"


def test_done_stays_done_after_a_later_wrong_answer(client, two_node_lesson, ada):
    client.force_login(ada)
    client.post(ANSWER, {"choice": "1"}, **JSON)
    assert client.post(ANSWER, {"choice": "0"}, **JSON).json()["state"] == "done"


def test_form_post_without_javascript_redirects_back_to_the_step(client, two_node_lesson, ada):
    client.force_login(ada)
    response = client.post(ANSWER, {"choice": "1"})
    assert response.status_code == 302
    assert response["Location"] == "/lessons/two-nodes/#step-1"


def test_anonymous_cannot_answer(client, two_node_lesson):
    assert client.post(ANSWER, {"choice": "1"}, **JSON).status_code == 403
    assert not StepProgress.objects.exists()


def test_a_step_without_a_question_cannot_be_answered(client, two_node_lesson, ada):
    client.force_login(ada)
    assert client.post("/lessons/two-nodes/steps/2/answer", {"choice": "0"}, **JSON).status_code == 400
    assert client.post("/lessons/two-nodes/steps/9/answer", {"choice": "0"}, **JSON).status_code == 404
    assert client.get(ANSWER).status_code == 405


def test_page_shows_the_choices_but_not_the_answer(client, two_node_lesson, ada):
    client.force_login(ada)
    page = client.get("/lessons/two-nodes/").content.decode()
    assert "Which node runs the manager?" in page
    assert page.count('type="radio" name="choice"') == 3
    assert "Check answer" in page
    assert "so node1 manages it" not in page  # the explanation is only given after an answer


@pytest.mark.django_db(transaction=True)
async def test_right_answer_is_pushed_to_the_lesson_socket(two_node_lesson, ada, ws_headers, client):
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = WebsocketCommunicator(application, "/ws/lessons/two-nodes/", headers=headers)
    assert (await comm.connect())[0]
    await database_sync_to_async(client.force_login)(ada)  # her page answers the quiz
    response = await database_sync_to_async(client.post)(ANSWER, {"choice": "1"}, **JSON)
    assert response.status_code == 200
    assert json.loads(await comm.receive_from(timeout=3)) == {
        "type": "step", "step": 1, "state": "done", "message": ""}
    await comm.disconnect()


def test_checks_skip_quiz_steps(two_node_session, ada, fake_driver):
    from labs.sandboxes import tasks
    results = tasks.run_checks(two_node_session.pk)
    assert sorted(results) == [2, 3]
