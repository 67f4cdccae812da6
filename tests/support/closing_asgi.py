"""An ASGI application that accepts every websocket and closes it at once with
4403, as the site refuses a socket to another learner's node (for
tests/unit/test_webserver.py)."""


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 4403})
    while (await receive())["type"] != "websocket.disconnect":
        pass
