"""Celery beat's reaper removes nodes whose session has ended, and only those."""
from __future__ import annotations

import asyncio

from labs.sandboxes.models import LabSession
from labs.sandboxes.tasks import reap_nodes
from runtime import NodeSpec


def test_reaper_removes_nodes_of_ended_sessions_only(ada, lesson, fake_driver, settings):
    live = LabSession.objects.create(user=ada, lesson=lesson, state=LabSession.READY)
    ended = LabSession.objects.create(user=ada, lesson=lesson, state=LabSession.STOPPED)
    keep = asyncio.run(fake_driver.start(NodeSpec(session=live.runtime_name)))
    orphan = asyncio.run(fake_driver.start(NodeSpec(session=ended.runtime_name)))
    deleted = asyncio.run(fake_driver.start(NodeSpec(session=f"{settings.LAB_SESSION_PREFIX}99999")))
    foreign = asyncio.run(fake_driver.start(NodeSpec(session="other-site-1")))

    removed = reap_nodes()

    assert sorted(removed) == sorted([orphan.id, deleted.id])
    assert {n.id for n in fake_driver.list_nodes()} == {keep.id, foreign.id}


def test_maintain_pool_refills_and_reaps(fake_driver, settings, monkeypatch, db):
    from labs.sandboxes.tasks import maintain_pool
    calls = []
    monkeypatch.setattr(fake_driver, "reap_dead", lambda: calls.append("reap") or ["dead1"])
    monkeypatch.setattr(fake_driver, "fill_pool",
                        lambda size, nodes=1: calls.append(size) or ["new1"])
    settings.LAB_POOL_SIZE = 3
    assert maintain_pool() == {"reaped": ["dead1"], "started": ["new1"], "trimmed": []}
    assert calls == ["reap", 3]
    settings.LAB_POOL_SIZE = 0
    calls.clear()
    assert maintain_pool()["started"] == [] and calls == ["reap"]
