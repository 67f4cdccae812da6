"""Replays and why the class is stuck: the timeline the site keeps (checks that
failed on the learner's step, steps done), who may replay a terminal, the
recording merged with that timeline, the grid's reasons and the CSV's count."""
import csv
import datetime
import io
import json

import pytest
from django.utils import timezone

from runtime import ExecResult, castfile

from labs.classrooms import reports
from labs.courses.models import StepProgress
from labs.sandboxes import gateway, recordings, tasks
from labs.sandboxes.models import SessionMark
from labs.gateway_asgi import recording as gateway_recording

pytestmark = pytest.mark.django_db

NO_ALPINE = "No stopped container from the alpine image yet."


def checks_say(fake_driver, step1: ExecResult, step2: ExecResult):
    def respond(node, argv):
        if argv[:2] != ["/bin/sh", "-c"]:
            return ExecResult(0, "")  # the published-ports refresh
        return step1 if "ancestor=alpine" in argv[2] else step2
    fake_driver.responder = respond


def failed_marks(session):
    return list(SessionMark.objects.filter(session=session, kind=SessionMark.FAILED)
                .values_list("step", "text"))


def test_a_failure_of_the_current_step_is_noted_once_per_attempt(ready_session, ada, fake_driver):
    checks_say(fake_driver, ExecResult(1, NO_ALPINE + "\n"), ExecResult(1, "List them all.\n"))
    tasks.run_checks(ready_session.pk)
    tasks.run_checks(ready_session.pk)  # the trailing run of the same command: same attempt
    # Step 2 failed too, but Ada is on step 1: only step 1's failure counts.
    assert failed_marks(ready_session) == [(1, NO_ALPINE)]
    progress = StepProgress.objects.get(user=ada, step__number=1)
    assert progress.failed_checks == 1 and progress.failed_at is not None
    assert StepProgress.objects.get(user=ada, step__number=2).failed_checks == 0

    # A different reason is a new attempt; so is the same one later on.
    checks_say(fake_driver, ExecResult(1, "The container is still running.\n"), ExecResult(1, "x\n"))
    tasks.run_checks(ready_session.pk)
    SessionMark.objects.filter(session=ready_session).update(
        at=timezone.now() - timezone.timedelta(seconds=30))
    tasks.run_checks(ready_session.pk)
    assert [text for _, text in failed_marks(ready_session)] == [
        NO_ALPINE, "The container is still running.", "The container is still running."]
    assert StepProgress.objects.get(user=ada, step__number=1).failed_checks == 3


def test_a_step_done_is_on_the_timeline_and_the_next_failure_waits_for_an_attempt(
        ready_session, ada, fake_driver):
    checks_say(fake_driver, ExecResult(0, ""), ExecResult(1, "List them all.\n"))
    tasks.run_checks(ready_session.pk)
    # Step 1 was current in that run: step 2's failure is not one of Ada's yet.
    assert list(SessionMark.objects.values_list("kind", "step")) == [("done", 1)]
    tasks.run_checks(ready_session.pk)
    assert failed_marks(ready_session) == [(2, "List them all.")]
    labels = [m.label() for m in SessionMark.objects.all()]
    assert labels == ["step 1 done", "check failed (step 2): List them all."]


def test_could_not_check_is_not_the_learners_failure(ready_session, ada, fake_driver):
    fake_driver.responder = lambda node, argv: ExecResult(-1, "", timed_out=True)
    tasks.run_checks(ready_session.pk)
    assert not SessionMark.objects.exists()
    assert StepProgress.objects.get(user=ada, step__number=1).failed_checks == 0


# ---- who may replay -------------------------------------------------------------------

@pytest.mark.parametrize("who,status", [("ada", 200), ("iris", 200), ("bob", 403),
                                        ("ivan", 403), ("otto", 403)])
def test_the_learner_and_their_instructors_replay_everyone_else_gets_403(
        who, status, client, request, classroom, ready_session):
    client.force_login(request.getfixturevalue(who))
    page = client.get(f"/replays/{ready_session.pk}/")
    cast = client.get(f"/replays/{ready_session.pk}/node1.cast")
    assert (page.status_code, cast.status_code) == (status, status)
    if status == 200:
        assert f"/replays/{ready_session.pk}/node1.cast".encode() in page.content
        assert b"Only " in page.content and b"instructors" in page.content


def test_a_deleted_session_or_machine_is_404(client, ada, ready_session):
    client.force_login(ada)
    assert client.get(f"/replays/{ready_session.pk + 1000}/").status_code == 404
    assert client.get(f"/replays/{ready_session.pk}/node7.cast").status_code == 404
    assert client.get(f"/replays/{ready_session.pk}/?node=node7").status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(client, ready_session):
    response = client.get(f"/replays/{ready_session.pk}/node1.cast")
    assert response.status_code == 302 and "/login" in response["Location"]


# ---- the recording with the timeline merged in ----------------------------------------

def write_recording(session, lines: list) -> None:
    path = castfile.cast_path(session.runtime_name, "node1")
    path.parent.mkdir(parents=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_the_cast_merges_the_sites_marks_into_the_terminals_own(
        client, ada, ready_session, runtime_dir):
    start = int(timezone.now().timestamp()) - 60
    write_recording(ready_session, [
        json.dumps({"version": 2, "width": 100, "height": 30, "timestamp": start}),
        json.dumps([1.0, "o", "[node1] ~# "]),
        json.dumps([5.0, "o", "docker container run alpine hostname\r\nab12\r\n"]),
        json.dumps([5.1, "m", "$ docker container run alpine hostname [exit 0]"]),
        '[9.0, "o", "cut sho',  # a crash mid-line: the events before it still play
    ])
    SessionMark.objects.create(session=ready_session, kind=SessionMark.DONE, step=1,
                               at=datetime.datetime.fromtimestamp(start + 6, tz=datetime.timezone.utc))
    client.force_login(ada)
    response = client.get(f"/replays/{ready_session.pk}/node1.cast")
    assert response["Content-Type"].startswith("application/x-asciicast")
    lines = response.content.decode().splitlines()
    header, events = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    assert header["width"] == 100 and header["timestamp"] == start and "ada" in header["title"]
    assert [e[1:] for e in events] == [
        ["o", "[node1] ~# "], ["o", "docker container run alpine hostname\r\nab12\r\n"],
        ["m", "$ docker container run alpine hostname [exit 0]"], ["m", "step 1 done"],
        ["m", "recording ends early: 1 damaged line(s) skipped"]]
    assert events[3][0] == pytest.approx(6.0, abs=0.01)
    download = client.get(f"/replays/{ready_session.pk}/node1.cast?download=1")
    assert 'filename="ada-first-containers-' in download["Content-Disposition"]


def test_without_a_recording_the_timeline_alone_is_served(client, ada, ready_session, runtime_dir):
    SessionMark.objects.create(session=ready_session, kind=SessionMark.FAILED, step=1, text="nope")
    client.force_login(ada)
    lines = client.get(f"/replays/{ready_session.pk}/node1.cast").content.decode().splitlines()
    assert json.loads(lines[0])["version"] == 2
    assert [json.loads(line)[1:] for line in lines[1:]] == [["m", "check failed (step 1): nope"]]


def test_the_gateway_serves_a_recording_only_with_the_sites_token(ready_session, runtime_dir):
    write_recording(ready_session, [json.dumps({"version": 2, "width": 80, "height": 24,
                                                "timestamp": 1})])
    node = ready_session.node1()
    name = recordings.recording_name(node)
    token = gateway.sign(0, node.pk, name, purpose=recordings.PURPOSE)
    status, body = gateway_recording(f"/recordings/{node.pk}.cast", f"token={token}".encode())
    assert status == 200 and body.startswith(b'{"version": 2')
    # A terminal token, another node's path, a forged token: refused.
    terminal = gateway.sign(0, node.pk, name)
    assert gateway_recording(f"/recordings/{node.pk}.cast", f"token={terminal}".encode())[0] == 403
    assert gateway_recording(f"/recordings/{node.pk + 1}.cast", f"token={token}".encode())[0] == 403
    assert gateway_recording(f"/recordings/{node.pk}.cast", b"token=forged")[0] == 403


# ---- the classroom: why they are stuck, the CSV --------------------------------------

def test_the_grid_says_why_a_learner_is_stuck_and_links_the_replay(
        client, iris, ada, classroom, ready_session, fake_driver):
    from labs.courses.models import LessonActivity
    LessonActivity.touch(ada, ready_session.lesson, timezone.now())
    checks_say(fake_driver, ExecResult(1, NO_ALPINE + "\n"), ExecResult(1, "x\n"))
    tasks.run_checks(ready_session.pk)
    row = reports.learner_row(classroom, ada)
    assert row["current"]["step"] == 1
    assert row["current"]["reason"] == NO_ALPINE and row["current"]["failed"] == 1
    assert row["current"]["replay"].startswith(f"/replays/{ready_session.pk}/?node=node1&at=")
    assert row["cells"]["first-containers:1"]["replay"] == row["current"]["replay"]
    assert row["replay"] == f"/replays/{ready_session.pk}/"
    # Bob has not failed anything: no reason for him.
    assert (reports.learner_row(classroom, ada.__class__.objects.get(username="bob"))["current"]
            or {}).get("reason") is None

    client.force_login(iris)
    rows = list(csv.reader(io.StringIO(client.get(f"/classrooms/{classroom.pk}/progress.csv")
                                       .content.decode())))
    assert rows[0][-1] == "failed_checks"
    ada_rows = {r[4]: r for r in rows if r[0] == "ada"}
    assert ada_rows["1"][-1] == "1" and ada_rows["2"][-1] == "0"


def test_the_learners_replays_are_listed_on_my_progress(client, ada, ready_session):
    client.force_login(ada)
    html = client.get("/dashboard/").content.decode()
    assert f'href="/replays/{ready_session.pk}/"' in html


def test_the_lesson_page_says_the_terminal_is_recorded_and_who_sees_it(client, ada, lesson, settings):
    client.force_login(ada)
    html = client.get(f"/lessons/{lesson.slug}/").content.decode()
    assert "Recorded: you and your instructors can replay it" in html
    settings.LAB_RECORD = False
    assert "Recorded:" not in client.get(f"/lessons/{lesson.slug}/").content.decode()
