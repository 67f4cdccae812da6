"""Websocket helpers shared by the unit tests of the consumers."""
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from labs.asgi import application


async def node1_terminal(session, headers, query: str = ""):
    """The terminal socket of `session`'s node1 (`query`: e.g. "?cols=100&rows=30"),
    connected with `headers`; the test asserts the connect went through."""
    node = await database_sync_to_async(session.node1)()
    term = WebsocketCommunicator(application, f"/ws/nodes/{node.pk}/terminal/{query}",
                                 headers=headers)
    assert (await term.connect())[0]
    return term


async def until(condition, seconds=3):
    """Wait until `condition()` holds; fail the test after `seconds`."""
    import asyncio
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
