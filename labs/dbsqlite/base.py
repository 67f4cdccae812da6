"""Django's SQLite backend, with writers taking turns on a lock file.

SQLite has one write lock. A transaction that finds it taken waits in
SQLite's busy handler, which polls with sleeps that grow to 100 ms: with a
class joining at once, the web processes and the workers all write, each
waiter slept past the moments the lock was free, and a join spent nearly all
of its 3-7 s there (py-spy: 87-90% of the views' thread in BEGIN IMMEDIATE)
while the CPU idled. Here a transaction first takes an exclusive lock on
`<database>.writers` (flock, polled every millisecond or so), then begins;
the lock goes with the commit or rollback. Writers then follow each other as
soon as one is done. Single statements outside a transaction still use
SQLite's own wait (they hold the lock for one statement only).

In-memory databases (the unit tests') have no file to lock and behave as
Django's backend does.
"""
from __future__ import annotations

import fcntl
import os
import time

from django.db.backends.sqlite3 import base

# As long as SQLite's own timeout (settings: OPTIONS["timeout"]); past it the
# transaction goes ahead and SQLite's wait decides.
WAIT_SECONDS = 20.0


class DatabaseWrapper(base.DatabaseWrapper):
    _writers_fd = None

    def _writers_path(self) -> str | None:
        name = str(self.settings_dict.get("NAME") or "")
        if not name or name == ":memory:" or name.startswith("file:") or "mode=memory" in name:
            return None
        return name + ".writers"

    def _take_writers_lock(self) -> None:
        path = self._writers_path()
        if path is None or self._writers_fd is not None:
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + WAIT_SECONDS
        pause = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return
                time.sleep(pause)
                pause = min(pause * 2, 0.004)
        self._writers_fd = fd

    def _release_writers_lock(self) -> None:
        fd, self._writers_fd = self._writers_fd, None
        if fd is not None:
            os.close(fd)  # closing the file lets the lock go

    def _start_transaction_under_autocommit(self):
        self._take_writers_lock()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writers_lock()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_writers_lock()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_writers_lock()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release_writers_lock()
