"""labs/asyncbridge.py: a worker process's channel-layer sends run on one
event loop kept for the process's life, not on a new loop (and a new Redis
connection) per send."""
import asyncio

import pytest

from labs import asyncbridge


async def loop_of(value):
    await asyncio.sleep(0)
    return asyncio.get_running_loop(), value


async def fails():
    raise ValueError("no such group")


@pytest.fixture
def own_loop(monkeypatch):
    monkeypatch.setattr(asyncbridge, "_own_loop", False)
    monkeypatch.setattr(asyncbridge, "_loop", None)
    asyncbridge.use_own_loop()
    yield
    if asyncbridge._loop is not None:
        asyncbridge._loop.call_soon_threadsafe(asyncbridge._loop.stop)


def test_a_worker_process_runs_every_call_on_its_one_loop(own_loop):
    first, a = asyncbridge.call(loop_of, "a")
    second, b = asyncbridge.call(loop_of, value="b")
    assert (a, b) == ("a", "b") and first is second and not first.is_closed()
    with pytest.raises(ValueError, match="no such group"):
        asyncbridge.call(fails)


def test_elsewhere_each_call_gets_async_to_sync(monkeypatch):
    monkeypatch.setattr(asyncbridge, "_own_loop", False)
    first, _ = asyncbridge.call(loop_of, 1)
    second, _ = asyncbridge.call(loop_of, 2)
    # asgiref made a loop for each call and closed it after (what a worker no longer pays).
    assert first is not second and first.is_closed() and second.is_closed()
