"""Wakes for the terminal recorder (runtime/recorder.py): node workers tell
it that nodes are ready or going, so it scans at once rather than at its
next full scan. Each running recorder reads a FIFO of its own in the
recordings directory; wake() writes a byte into each."""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import stat

from .castfile import recordings_dir

log = logging.getLogger(__name__)

# Each running recorder reads a FIFO of this name in the recordings directory
# (more than one when sites share the runtime directory).
_WAKE_GLOB = ".wake-*"


def wake() -> None:
    """Tell this host's recorders that lab nodes are ready or going: each
    scans at once rather than at its next full scan (the learner's first
    command counts). A byte into each recorder's FIFO: unlike a file's time,
    which the recorder once compared before and after a scan, a wake that
    comes during a scan is never taken for an old one."""
    try:
        paths = list(recordings_dir().glob(_WAKE_GLOB))  # none when there is no directory
    except OSError:
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                # Nobody reads it: its recorder died (a FIFO gets its name
                # only once its recorder has it open, see Wakeups).
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, b"!")
        except BlockingIOError:
            pass  # full: that recorder has been woken already
        except OSError:
            log.debug("could not wake the recorder at %s", path, exc_info=True)
        finally:
            os.close(fd)


class Wakeups:
    """This recorder's FIFO, into which wake() writes: `woken` is set when a
    byte came in (read there and then: a byte still in it would set `woken`
    again after the clear() before a scan)."""

    def __init__(self):
        top = recordings_dir()
        top.mkdir(parents=True, exist_ok=True, mode=0o700)
        (top / ".wake").unlink(missing_ok=True)  # the file whose time said it, before
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        made = top / f".making-wake-{name}"
        os.mkfifo(made, 0o600)
        # Open (read and write, so it never reads as ended) before it gets its
        # name: wake() may then take a FIFO nobody reads for a dead recorder's.
        self.fd = os.open(made, os.O_RDWR | os.O_NONBLOCK)
        self.path = top / f".wake-{name}"
        os.rename(made, self.path)
        self.woken = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass
        self.woken.set()

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
