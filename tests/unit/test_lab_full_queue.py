"""When the lab is full, Start queues the learner with a position instead of failing."""
from __future__ import annotations

from labs.sandboxes.models import LabSession
from labs.sandboxes.tasks import start_queued, start_session
from runtime import LabFull


def test_a_full_lab_queues_then_starts_in_order(ada, bob, lesson, fake_driver, monkeypatch):
    real_start = fake_driver.start
    full = {"value": True}

    async def start(spec, on_progress=None):
        if full["value"]:
            raise LabFull("the lab is full: 250 of 250 nodes are in use")
        return await real_start(spec, on_progress)
    monkeypatch.setattr(fake_driver, "start", start)

    first, _ = LabSession.ensure_for(ada, lesson)
    second, _ = LabSession.ensure_for(bob, lesson)
    assert start_session(first.pk) == LabSession.QUEUED
    assert start_session(second.pk) == LabSession.QUEUED
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.event()["state"] == "queued" and first.event()["position"] == 1
    assert second.event()["position"] == 2
    assert "full" in first.error

    assert start_queued() == []  # still full: nobody moves, nobody fails
    full["value"] = False
    assert start_queued() == [first.pk, second.pk]
    first.refresh_from_db()
    assert first.state == LabSession.READY
