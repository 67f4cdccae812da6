"""The one rule that queues check runs (labs/checks.py), as plain arithmetic."""
from __future__ import annotations

import pytest

from labs.sandboxes import checks, tasks

W = checks.WINDOW


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(checks, "_runs", {})


def test_the_first_ask_runs_at_once_and_a_burst_adds_one_run_at_the_windows_end():
    assert checks.plan(1, now=100.0) == 0.0
    assert checks.plan(1, now=100.0 + W / 4) == pytest.approx(W * 3 / 4)  # trailing run
    assert checks.plan(1, now=100.0 + W / 2) is None  # the trailing run will see it
    # After the trailing run started, a new ask in its window trails it.
    assert checks.plan(1, now=100.0 + W * 1.5) == pytest.approx(W / 2)
    # Quiet for a window: at once again.
    assert checks.plan(1, now=200.0) == 0.0


def test_sessions_do_not_share_a_window():
    assert checks.plan(1, now=10.0) == 0.0
    assert checks.plan(2, now=10.0) == 0.0


def test_what_a_queued_run_already_saw_is_covered():
    assert checks.plan(1, now=50.0) == 0.0  # say, the command's own end
    assert checks.plan(1, now=50.1, since=49.9) is None  # its engine events came before
    assert checks.plan(1, now=50.1, since=50.05) == pytest.approx(W - 0.1)


def test_requests_queue_run_checks_now_or_with_a_countdown(monkeypatch):
    runs = []
    monkeypatch.setattr(tasks.run_checks, "delay", lambda pk: runs.append((pk, 0)))
    monkeypatch.setattr(tasks.run_checks, "apply_async",
                        lambda args, countdown: runs.append((args[0], countdown)))
    assert checks.request(7) == 0.0
    assert checks.request(7) > 0
    assert checks.request(7) is None
    assert [pk for pk, _ in runs] == [7, 7] and runs[0][1] == 0 and 0 < runs[1][1] <= W
