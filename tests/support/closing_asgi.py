"""An ASGI application that accepts every websocket and closes it at once with
4403, as the site refuses a socket to another learner's node (for
tests/unit/test_webserver.py). HTTP gets an empty page, for a browser to open
its sockets from."""


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<!doctype html><title>ws</title>"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 4403})
    while (await receive())["type"] != "websocket.disconnect":
        pass
