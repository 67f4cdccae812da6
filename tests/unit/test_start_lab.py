"""Ada presses Start: her machine is made once, and failures are said plainly."""
import pytest
from runtime import NodeSpec

from labs.sandboxes.models import LabNode, LabSession

START = "/lessons/first-containers/start"


def test_start_enqueues_after_commit_and_node_becomes_ready(client, lesson, ada, fake_driver,
                                                           django_capture_on_commit_callbacks):
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(START)
    assert response.status_code == 200
    assert response.json()["started"] is True
    assert response.json()["state"] == "starting"
    # Nothing ran yet: the task is only sent once the transaction commits.
    assert fake_driver.calls == []
    assert len(callbacks) == 1
    callbacks[0]()

    session = LabSession.objects.get(user=ada, lesson=lesson)
    node = session.nodes.get()
    assert fake_driver.calls == [("start", NodeSpec(session=f"s{session.pk}", name="node1"))]
    assert (session.state, node.state, node.name) == ("ready", "ready", "node1")
    assert node.runtime_id in fake_driver.nodes


def test_second_start_reuses_the_ready_node(client, ready_session, ada, fake_driver,
                                            django_capture_on_commit_callbacks):
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        body = client.post(START).json()
    assert callbacks == []
    assert body["started"] is False
    assert body["state"] == "ready"
    assert body["node"] == ready_session.node1().pk
    assert LabSession.objects.count() == 1 and LabNode.objects.count() == 1
    assert [c[0] for c in fake_driver.calls] == ["start"]


def test_failed_start_stores_the_reason_and_retry_starts_again(client, lesson, ada, fake_driver,
                                                              django_capture_on_commit_callbacks):
    fake_driver.fail_start = "no space left for node images: free some disk"
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(START).status_code == 200
    session = LabSession.objects.get(user=ada)
    node = session.nodes.get()
    assert session.state == "failed"
    assert session.error == "node1: no space left for node images: free some disk"
    assert (node.state, node.error) == ("failed", "no space left for node images: free some disk")

    fake_driver.fail_start = None
    with django_capture_on_commit_callbacks(execute=True):
        body = client.post(START).json()
    assert body["started"] is True
    session.refresh_from_db()
    assert session.state == "ready" and session.error == ""
    assert LabSession.objects.count() == 1


def test_preflight_problem_is_reported_and_nothing_enqueued(client, lesson, ada, fake_driver, monkeypatch,
                                                            django_capture_on_commit_callbacks):
    monkeypatch.setattr(fake_driver, "preflight",
                        lambda: ["The lab must run as root to create nodes: start it with sudo."])
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(START)
    assert response.status_code == 503
    assert response.json()["ok"] is False
    assert "must run as root" in response.json()["error"]
    assert callbacks == []
    assert fake_driver.calls == []
    assert not LabSession.objects.exists()


def test_anonymous_cannot_start(client, lesson, fake_driver):
    response = client.post(START)
    assert response.status_code == 403
    assert fake_driver.calls == []


@pytest.mark.django_db
def test_start_for_unknown_lesson_is_404(client, ada):
    client.force_login(ada)
    assert client.post("/lessons/nope/start").status_code == 404


def test_start_needs_post(client, lesson, ada):
    client.force_login(ada)
    assert client.get(START).status_code == 405


def test_stop_removes_the_node(client, ready_session, ada, fake_driver, django_capture_on_commit_callbacks):
    client.force_login(ada)
    runtime_id = ready_session.node1().runtime_id
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/lessons/first-containers/stop", HTTP_ACCEPT="application/json")
        assert response.json() == {"ok": True, "stopping": True}
    ready_session.refresh_from_db()
    assert ready_session.state == "stopped"
    assert ready_session.ended_because == "stopped"  # the page says who stopped it
    assert runtime_id not in fake_driver.nodes
    assert ("stop", runtime_id) in fake_driver.calls


@pytest.mark.parametrize("given, lands", [("/lessons/first-containers/", "/lessons/first-containers/"),
                                          ("", "/dashboard/"),
                                          ("https://elsewhere.example/", "/dashboard/"),
                                          ("//elsewhere.example/", "/dashboard/")])
def test_stop_from_a_form_goes_back_to_this_site_only(given, lands, client, ready_session, ada):
    client.force_login(ada)
    response = client.post("/lessons/first-containers/stop", {"next": given})
    assert response.status_code == 302 and response["Location"] == lands
    ready_session.refresh_from_db()
    # Until the worker has removed the nodes, the dashboard shows it as stopping.
    assert ready_session.stopping and ready_session.ended_because == "stopped"


def test_stopping_twice_keeps_the_first_reason(client, ready_session, ada):
    type(ready_session).objects.filter(pk=ready_session.pk).update(ended_because="expired")
    client.force_login(ada)
    client.post("/lessons/first-containers/stop", HTTP_ACCEPT="application/json")
    ready_session.refresh_from_db()
    assert ready_session.ended_because == "expired"
