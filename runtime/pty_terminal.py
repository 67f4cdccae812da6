"""A terminal on a host PTY whose far end is a process (here: a shell in a node)."""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import subprocess
import termios

from .model import Terminal

READ_SIZE = 65536


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyTerminal(Terminal):
    def __init__(self, master: int, proc: subprocess.Popen):
        self.master = master
        self.proc = proc
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=64)
        self._closed = False
        self._reading = True
        self._eof = False
        self._loop.add_reader(master, self._on_readable)

    @classmethod
    async def spawn(cls, argv: list, cols: int, rows: int, env: dict,
                    preexec_fn=None) -> "PtyTerminal":
        master, slave = os.openpty()
        try:
            set_winsize(slave, cols, rows)
            proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                    close_fds=True, preexec_fn=preexec_fn)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(master, proc)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the far end has gone
            data = b""
        if not data:
            self._eof = True
            self._stop_reading()
        self._queue.put_nowait(data)
        # Back-pressure: stop reading the PTY while the consumer is behind, so a
        # flood of output waits in the kernel instead of in our memory.
        if self._queue.full():
            self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.master)
            self._reading = False

    async def read(self) -> bytes:
        if self._closed and self._queue.empty():
            return b""
        data = await self._queue.get()
        if not (self._reading or self._eof or self._closed) and self._queue.qsize() < 16:
            self._reading = True
            self._loop.add_reader(self.master, self._on_readable)
        return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closed:
            try:
                n = os.write(self.master, view)
                view = view[n:]
            except BlockingIOError:
                await asyncio.sleep(0.005)
            except OSError:
                return

    def resize(self, cols: int, rows: int) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                set_winsize(self.master, max(1, int(cols)), max(1, int(rows)))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        os.close(self.master)  # the attached client gets SIGHUP; the shell lives on
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(b"")
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 5)
        except asyncio.TimeoutError:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
