"""The channel layer's sends from synchronous code: `call(fn, *args)`.

In a Celery worker no event loop runs anywhere in the process, and asgiref's
async_to_sync then makes a thread and an event loop for every call; the
channel layer opens a new Redis connection on each loop. One push to a page
cost the worker about 6 ms of CPU that way, against 0.5 ms on a loop kept
for the process's life, and every node start and check run pushes. So each
worker process (labs/celery.py: worker_process_init) runs one loop in
a thread of its own, and calls go there.

Everywhere else (a view on an ASGI server's synchronous thread, an eager
test inside an async one) async_to_sync runs the call on the outer loop,
where the channel layer already lives: that stays as it is.

Only for coroutines that touch no database: one that calls sync_to_async
would have that code run on asgiref's own thread here, with a database
connection of its own, where async_to_sync runs it on the caller's thread
(inside the task's transaction). The driver's coroutines keep async_to_sync
(labs/sandboxes/tasks.py: _run).
"""
from __future__ import annotations

import asyncio
import threading

from asgiref.sync import async_to_sync

_loop: asyncio.AbstractEventLoop | None = None
_own_loop = False
_lock = threading.Lock()


def use_own_loop() -> None:
    """From now on this process runs calls on a loop of its own (started at
    the first call, so a process forked after this starts its own)."""
    global _own_loop
    _own_loop = True


def call(fn, *args, **kwargs):
    """fn(*args, **kwargs), a coroutine function, run to its result."""
    if not _own_loop:
        return async_to_sync(fn)(*args, **kwargs)
    return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), _running_loop()).result()


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="asyncbridge", daemon=True).start()
            _loop = loop
        return _loop
