"""Open sockets get back into their groups when Redis loses its data.

The real thing (a Redis killed under an open lesson page) is in
tests/integration/test_restarts.py; here the parts, on the in-memory layer
and on a dict standing in for Redis's SET ... GET.
"""
import asyncio

import pytest
from channels.layers import InMemoryChannelLayer

from labs import groups


@pytest.fixture
def layer():
    groups._members.clear()  # sockets other tests left open
    layer = InMemoryChannelLayer()
    yield layer
    groups._members.clear()


async def heard(layer, channel, seconds=0.3):
    try:
        return await asyncio.wait_for(layer.receive(channel), seconds)
    except asyncio.TimeoutError:
        return None


async def test_rejoin_puts_open_sockets_back_and_lets_them_catch_up(layer):
    caught_up = []
    ada = await layer.new_channel()
    bob = await layer.new_channel()

    async def ada_catches_up():
        caught_up.append(ada)

    await groups.join(layer, ada, ["learner-1-lesson", "user-1"], on_rejoin=ada_catches_up)
    await groups.join(layer, bob, ["learner-2-lesson"])
    await layer.flush()  # what a Redis crash does to every group
    await layer.group_send("learner-1-lesson", {"type": "lesson.event"})
    assert await heard(layer, ada) is None

    await groups.rejoin_all()
    assert caught_up == [ada]
    await layer.group_send("user-1", {"type": "lesson.event"})
    assert await heard(layer, ada) == {"type": "lesson.event"}
    await layer.group_send("learner-2-lesson", {"type": "lesson.event"})
    assert await heard(layer, bob) == {"type": "lesson.event"}
    # Nobody joined anyone else's groups.
    await layer.group_send("learner-1-lesson", {"type": "lesson.event"})
    assert await heard(layer, bob) is None


async def test_a_socket_that_left_is_not_rejoined(layer):
    ada = await layer.new_channel()
    await groups.join(layer, ada, ["learner-1-lesson"])
    await groups.leave(layer, ada)
    await groups.rejoin_all()
    await layer.group_send("learner-1-lesson", {"type": "lesson.event"})
    assert await heard(layer, ada) is None


class DictRedis:
    """SET key value EX n GET, as Redis answers it (enough for the marker)."""

    def __init__(self):
        self.data = {}

    async def set(self, key, value, ex=None, get=False):
        before = self.data.get(key)
        self.data[key] = value.encode() if isinstance(value, str) else value
        return before


class RedisLayer(InMemoryChannelLayer):
    def __init__(self):
        super().__init__()
        self.redis = DictRedis()

    def connection(self, index):
        return self.redis


async def test_the_marker_tells_lost_and_rolled_back_data_from_a_clean_restart(monkeypatch):
    monkeypatch.setattr(groups, "_token", None)
    layer = RedisLayer()
    assert await groups._marker_was_gone(layer)  # first look: nothing written yet
    assert not await groups._marker_was_gone(layer)
    layer.redis.data = dict(layer.redis.data)  # a clean restart: saved on shutdown, loaded
    assert not await groups._marker_was_gone(layer)
    kept = dict(layer.redis.data)  # that snapshot...
    assert not await groups._marker_was_gone(layer)
    layer.redis.data = dict(kept)  # ...loaded after a later crash is older than the marker
    assert await groups._marker_was_gone(layer)
    assert not await groups._marker_was_gone(layer)
    layer.redis.data = {}  # a crash without a snapshot
    assert await groups._marker_was_gone(layer)
    assert not await groups._marker_was_gone(layer)
