"""Checks run in Ada's node and record what she has done."""
from runtime import ExecResult

from labs.sandboxes import tasks
from labs.courses.models import StepProgress


def responder_by_step(results):
    """Answer each step's check by a phrase found in its script."""
    def respond(node, argv):
        if argv[:3] == ["docker", "container", "ls"]:  # the published-ports refresh
            return ExecResult(0, "")
        assert argv[:2] == ["/bin/sh", "-c"]
        for phrase, result in results.items():
            if phrase in argv[2]:
                return result
        raise AssertionError(f"unexpected check {argv[2]!r}")
    return respond


def test_passed_check_is_done_and_failed_check_keeps_its_reason(ready_session, ada, fake_driver):
    fake_driver.responder = responder_by_step({
        "ancestor=alpine": ExecResult(0, ""),
        "bash_history": ExecResult(1, "List every container, stopped ones too.\n"),
    })
    assert tasks.run_checks(ready_session.pk) == {1: "done", 2: "pending"}
    progress = {p.step.number: p for p in StepProgress.objects.filter(user=ada)}
    assert (progress[1].state, progress[1].message) == ("done", "")
    assert progress[1].done_at is not None
    assert (progress[2].state, progress[2].message) == ("pending", "List every container, stopped ones too.")
    assert progress[2].done_at is None
    node_id = ready_session.node1().runtime_id
    checks = [c for c in fake_driver.calls if c[0] == "exec" and c[2][0] == "/bin/sh"]
    assert [c[1] for c in checks] == [node_id, node_id]


def test_timed_out_check_says_so_and_keeps_the_state(ready_session, ada, fake_driver):
    fake_driver.responder = responder_by_step({
        "ancestor=alpine": ExecResult(0, ""),
        "bash_history": ExecResult(0, ""),
    })
    tasks.run_checks(ready_session.pk)
    fake_driver.responder = lambda node, argv: ExecResult(-1, "", timed_out=True)
    execs_before = len([c for c in fake_driver.calls if c[0] == "exec"])
    # Done steps stay done and are not checked again, so a hanging check
    # cannot even touch them.
    assert tasks.run_checks(ready_session.pk) == {1: "done", 2: "done"}
    assert len([c for c in fake_driver.calls if c[0] == "exec"]) - execs_before <= 1  # ports only
    messages = set(StepProgress.objects.filter(user=ada).values_list("message", flat=True))
    assert messages == {""}


def test_timed_out_check_of_pending_step_stays_pending(ready_session, ada, fake_driver):
    fake_driver.responder = lambda node, argv: ExecResult(-1, "", timed_out=True)
    assert tasks.run_checks(ready_session.pk) == {1: "pending", 2: "pending"}
    assert StepProgress.objects.get(user=ada, step__number=1).message == "could not check (timed out)"


def test_check_without_output_gets_a_generic_reason(ready_session, ada, fake_driver):
    fake_driver.responder = lambda node, argv: ExecResult(3, "")
    tasks.run_checks(ready_session.pk)
    assert StepProgress.objects.get(user=ada, step__number=1).message == "not done yet (check exited 3)"


def test_checks_of_a_vanished_session_do_nothing(ready_session, fake_driver):
    session_id = ready_session.pk
    ready_session.delete()
    assert tasks.run_checks(session_id) is None
    assert tasks.start_session(session_id) is None
    assert [c for c in fake_driver.calls if c[0] == "exec"] == []


def test_checks_wait_for_a_ready_node(lesson, ada, fake_driver):
    from labs.sandboxes.models import LabSession

    session, _ = LabSession.ensure_for(ada, lesson)
    assert tasks.run_checks(session.pk) is None
    assert fake_driver.calls == []


def test_check_button_post_runs_checks_after_commit(client, ready_session, ada, fake_driver,
                                                    django_capture_on_commit_callbacks):
    fake_driver.responder = lambda node, argv: ExecResult(0, "")
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert client.post("/lessons/first-containers/check").json() == {"ok": True}
    assert len(callbacks) == 1
    assert set(StepProgress.objects.filter(user=ada).values_list("state", flat=True)) == {"done"}


def test_check_button_before_start_is_refused(client, lesson, ada, fake_driver):
    client.force_login(ada)
    response = client.post("/lessons/first-containers/check")
    assert response.status_code == 409
    assert response.json()["error"] == "Start the lab first, then check."
    assert fake_driver.calls == []


def test_a_check_run_that_changes_nothing_writes_once(ready_session, ada, fake_driver):
    """With a class checking at once every write waits for the database's lock:
    a run that only confirms what the rows say stamps checked_at in one write."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fake_driver.responder = responder_by_step({
        "ancestor=alpine": ExecResult(1, "No alpine container has run hostname yet.\n"),
        "bash_history": ExecResult(1, "List every container, stopped ones too.\n"),
    })
    tasks.run_checks(ready_session.pk)
    first = {p.step_id: p.checked_at for p in StepProgress.objects.filter(user=ada)}
    with CaptureQueriesContext(connection) as seen:
        assert tasks.run_checks(ready_session.pk) == {1: "pending", 2: "pending"}
    writes = [q["sql"] for q in seen.captured_queries
              if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert len(writes) == 1 and "checked_at" in writes[0], writes
    again = {p.step_id: p.checked_at for p in StepProgress.objects.filter(user=ada)}
    assert all(again[k] > first[k] for k in first)
    assert StepProgress.objects.get(user=ada, step__number=1).message == \
        "No alpine container has run hostname yet."
