"""Ada answers a quiz step: judged on the server, recorded, and pushed to her page.

A wrong answer says only that it is wrong; the explanation (which names the
answer) comes with a right answer, or when she gives up and asks for it.
"""
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from labs.asgi import application
from labs.courses.models import StepProgress

ANSWER = "/lessons/two-nodes/steps/1/answer"
REVEAL = "/lessons/two-nodes/steps/1/reveal"
EXPLAIN = "The swarm is initialised on node1, so node1 manages it."
JSON = {"HTTP_ACCEPT": "application/json"}


def test_right_answer_marks_the_step_done_and_explains(client, two_node_lesson, ada):
    client.force_login(ada)
    body = client.post(ANSWER, {"choice": "1"}, **JSON).json()
    assert body == {"ok": True, "correct": True, "answer": 1, "explain": EXPLAIN,
                    "type": "step", "step": 1, "state": "done", "message": ""}
    progress = StepProgress.objects.get(user=ada, step__number=1)
    assert progress.state == "done" and progress.done_at is not None


@pytest.mark.parametrize("choice, picked", [("0", "node2"), ("2", "neither")])
def test_wrong_answer_names_the_choice_and_gives_nothing_away(client, two_node_lesson, ada,
                                                              choice, picked):
    client.force_login(ada)
    response = client.post(ANSWER, {"choice": choice}, **JSON)
    body = response.json()
    assert body == {"ok": True, "correct": False, "type": "step", "step": 1, "state": "pending",
                    "message": f"Not quite. “{picked}” is not the right answer."}
    assert b"node1" not in response.content  # neither the right choice nor the explanation
    progress = StepProgress.objects.get(user=ada, step__number=1)
    assert progress.state == "pending" and progress.message == body["message"]


@pytest.mark.parametrize("choice", ["7", "-1", "3", "one", ""])
def test_something_that_is_no_choice_is_wrong(client, two_node_lesson, ada, choice):
    client.force_login(ada)
    response = client.post(ANSWER, {"choice": choice}, **JSON)
    body = response.json()
    assert body["correct"] is False and body["state"] == "pending"
    assert body["message"] == "Not quite. Pick one of the answers."
    assert b"node1" not in response.content
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
    assert f'formaction="{REVEAL}"' in page and "Show the answer" in page
    assert "so node1 manages it" not in page  # the explanation is only given after an answer
    assert " checked" not in page


def test_a_done_quiz_shows_its_answer_and_explanation(client, two_node_lesson, ada):
    client.force_login(ada)
    client.post(ANSWER, {"choice": "1"}, **JSON)
    page = client.get("/lessons/two-nodes/").content.decode()
    assert EXPLAIN in page
    assert 'value="1" required checked>' in page and page.count(" checked>") == 1


def test_show_the_answer_reveals_it_and_marks_nothing_done(client, two_node_lesson, ada):
    client.force_login(ada)
    body = client.post(REVEAL, **JSON).json()
    message = f"The answer is “node1”. {EXPLAIN}"
    assert body == {"ok": True, "answer": 1, "choice": "node1", "explain": EXPLAIN,
                    "type": "step", "step": 1, "state": "pending", "message": message}
    progress = StepProgress.objects.get(user=ada, step__number=1)
    assert (progress.state, progress.message, progress.done_at) == ("pending", message, None)
    # Kept for the page (also without JavaScript), and the step can still be done.
    assert message in client.get("/lessons/two-nodes/").content.decode()
    assert client.post(ANSWER, {"choice": "1"}, **JSON).json()["state"] == "done"


def test_show_the_answer_after_done_keeps_it_done(client, two_node_lesson, ada):
    client.force_login(ada)
    client.post(ANSWER, {"choice": "1"}, **JSON)
    body = client.post(REVEAL, **JSON).json()
    assert (body["state"], body["message"], body["answer"]) == ("done", "", 1)
    assert StepProgress.objects.get(user=ada, step__number=1).state == "done"


def test_show_the_answer_without_javascript_redirects_back_to_the_step(client, two_node_lesson, ada):
    client.force_login(ada)
    response = client.post(REVEAL)
    assert response.status_code == 302 and response["Location"] == "/lessons/two-nodes/#step-1"
    assert StepProgress.objects.get(user=ada, step__number=1).message.startswith("The answer is")


def test_show_the_answer_needs_a_learner_a_quiz_and_a_post(client, two_node_lesson, ada):
    assert client.post(REVEAL, **JSON).status_code == 403
    assert not StepProgress.objects.exists()
    client.force_login(ada)
    assert client.post("/lessons/two-nodes/steps/2/reveal", **JSON).status_code == 400
    assert client.post("/lessons/two-nodes/steps/9/reveal", **JSON).status_code == 404
    assert client.get(REVEAL).status_code == 405
    assert not StepProgress.objects.exists()


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


@pytest.mark.django_db(transaction=True)
async def test_a_revealed_answer_is_pushed_as_a_pending_step(two_node_lesson, ada, ws_headers, client):
    headers = await database_sync_to_async(ws_headers)(ada)
    comm = WebsocketCommunicator(application, "/ws/lessons/two-nodes/", headers=headers)
    assert (await comm.connect())[0]
    await database_sync_to_async(client.force_login)(ada)
    response = await database_sync_to_async(client.post)(REVEAL, **JSON)
    assert response.status_code == 200
    assert json.loads(await comm.receive_from(timeout=3)) == {
        "type": "step", "step": 1, "state": "pending",
        "message": f"The answer is “node1”. {EXPLAIN}"}
    await comm.disconnect()


def test_checks_skip_quiz_steps(two_node_session, ada, fake_driver):
    from labs.sandboxes import tasks
    results = tasks.run_checks(two_node_session.pk)
    assert sorted(results) == [2, 3]
