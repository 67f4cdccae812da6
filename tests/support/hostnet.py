"""Host-side probes the escape and contract suites share."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import threading


@contextlib.contextmanager
def host_service():
    """A TCP service on every host address, as Redis or Daphne would be if misbound;
    yields its port. It answers HOST-SERVICE to whoever connects."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.sendall(b"HOST-SERVICE\n")
                conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def link_local_drops() -> int:
    """Packets LAB-FORWARD's link-local rule (169.254.0.0/16, cloud metadata) dropped."""
    rules = subprocess.run(["iptables", "-w", "-v", "-x", "-n", "-L", "LAB-FORWARD"],
                           capture_output=True, text=True).stdout
    line = next(line for line in rules.splitlines() if "169.254.0.0/16" in line)
    return int(line.split()[0])
