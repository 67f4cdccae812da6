"""Host-side ways into a node, shared by the drivers: run a command with a
time limit (they differ only in the host argv that enters the node: the
seccomp helper's --enter for the built-in driver, `docker exec` for the
docker one), and ask a node's engine whether it answers.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time

from .model import ExecResult


class _PipeCollector(asyncio.Protocol):
    """Collects a command's output from a pipe (and hands it on as it comes)."""

    def __init__(self, on_output=None):
        self.chunks: list = []
        self.on_output = on_output
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.on_output:
            self.on_output(data)

    def eof_received(self):
        self.closed.set()

    def connection_lost(self, exc) -> None:
        self.closed.set()

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


def inner_timeout(argv: list, timeout: float) -> tuple:
    """(limit, argv): `timeout` inside the node kills the command itself; killing
    only the host side would leave it running in the node."""
    limit = max(1, int(timeout))
    return limit, ["timeout", "-s", "KILL", str(limit), *argv]


async def run_limited(host_argv: list, limit: int, timeout: float, input=None, on_output=None,
                      env=None, preexec_fn=None) -> ExecResult:
    """Run `host_argv` (which wraps the node command in inner_timeout) and collect
    its output; the result says whether the limit killed it."""
    # Our own pipe for the output: when the command ends we stop reading, even
    # if something it left in the background still holds the pipe open.
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *host_argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=write_fd, stderr=write_fd, env=env, start_new_session=True,
            preexec_fn=preexec_fn)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    began = time.monotonic()
    reader = _PipeCollector(on_output)
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: reader, os.fdopen(read_fd, "rb", buffering=0))
    try:
        if input is not None:
            proc.stdin.write(input)
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
            proc.stdin.close()
        try:
            code = await asyncio.wait_for(proc.wait(), timeout + 5)
        except (asyncio.TimeoutError, asyncio.CancelledError) as stopped:
            # The whole process group: for the entering helper that includes
            # the command inside the node, which stays in the group across
            # namespaces.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
            if isinstance(stopped, asyncio.CancelledError):
                raise
            return ExecResult(-1, reader.text(), timed_out=True)
        # Output already written is still in the pipe: take it, briefly.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader.closed.wait(), 0.5)
    finally:
        transport.close()
    # A KILL from `timeout` shows as 137 or -9 (the helper re-raises the child's
    # signal); an OOM kill looks the same and is told apart by the time taken.
    timed_out = code in (137, -9) and time.monotonic() - began >= limit - 0.05
    return ExecResult(code, reader.text(), timed_out=timed_out)


def engine_answers(sock_path: str) -> bool:
    """The check `docker info` makes: the engine's /info endpoint answers 200."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(sock_path)
            s.sendall(b"GET /info HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False
