"""The site's Daphne (labs/webserver.py): a slow peer still gets our close code.

A real Daphne serves a socket that is closed at once with 4403, as the site
closes a socket to another learner's node. The client reads the close frame
1.5 s late, as a busy browser does, then answers it. Plain Daphne (autobahn)
has reset the connection after 1 s by then, so the browser's answer fails and
it reports 1006; ours still waits for the answer then.
"""
from __future__ import annotations

import base64
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.livesite import free_port, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.support.closing_asgi:application"


@pytest.fixture
def server(request):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", request.param, "-b", "127.0.0.1",
                             "-p", str(port), APP], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def listening():
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    try:
        wait_for(listening, 30, f"{request.param} to listen", interval=0.1)
        yield port
    finally:
        stop_process(proc)
        proc.stderr.close()


def slow_close(port: int, delay: float) -> tuple:
    """Open a websocket and read the server's close frame `delay` s late:
    (the code in it, whether the server still waits for our answer then or
    has reset the connection, as a browser's answer would find it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        time.sleep(delay)
        frame = answer.split(b"\r\n\r\n", 1)[1]
        while len(frame) < 4:
            frame += sock.recv(4096)  # data sent before a reset is still read
        assert frame[0] == 0x88, frame  # a close frame
        code = struct.unpack("!H", frame[2:4])[0]
        sock.setblocking(False)  # look, do not wait
        try:
            sock.recv(1, socket.MSG_PEEK)
            state = "closed"
        except BlockingIOError:
            state = "waiting"  # nothing more, the connection open: our answer is awaited
        except ConnectionResetError:
            state = "reset"
        return code, state


@pytest.mark.parametrize("server", ["labs.webserver"], indirect=True)
def test_a_peer_that_answers_our_close_late_is_still_waited_for(server):
    assert slow_close(server, 1.5) == (4403, "waiting")


@pytest.mark.parametrize("server", ["daphne"], indirect=True)
def test_plain_daphne_resets_a_peer_that_answers_our_close_late(server):
    # Why labs.webserver exists. If this fails (Daphne waits longer), Daphne
    # has changed and labs/webserver.py may go.
    assert slow_close(server, 1.5) == (4403, "reset")
