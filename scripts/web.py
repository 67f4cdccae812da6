#!/usr/bin/env python3
"""The site's web processes: LAB_WEB_PROCESSES Daphne servers sharing one
listening socket (made here, handed to each with `--fd`; the kernel spreads
connections over them).

Why more than one: Django runs every synchronous view, and every database
call of the sockets' consumers, on one thread per process, one at a time. A
class of forty opening the join link at once queued there for seconds with
the CPU half idle (a view waiting on the database lock or on Redis holds up
all the others). Processes share nothing but Redis and the database, which
the site already relies on (channel layer, sessions, every state).

    scripts/web.py [--bind ADDR] [--port PORT] [--also ADDR] [--processes N]

Runs until SIGTERM or SIGINT, which it passes on; if one server exits, the
others are stopped and this exits with its code (honcho then stops the rest).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("web")
VENV_BIN = Path(sys.executable).parent


def default_processes() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def listening_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default=os.environ.get("LAB_BIND", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("LAB_PORT", "8000")))
    parser.add_argument("--also", default="", help="another address to listen on, same port")
    parser.add_argument("--processes", type=int,
                        default=int(os.environ.get("LAB_WEB_PROCESSES") or default_processes()))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s web: %(message)s")

    sockets = [listening_socket(args.bind, args.port)]
    if args.also:
        sockets.append(listening_socket(args.also, args.port))
    fds = [s.fileno() for s in sockets]
    # labs.webserver: Daphne, waiting longer for a browser to answer our close.
    argv = [sys.executable, "-m", "labs.webserver", "--fd", str(fds[0]),
            *[a for fd in fds[1:] for a in ("-e", f"fd:fileno={fd}")],
            # A websocket may take up to 30 s to be accepted when the site is
            # busy (Daphne's default, 5 s, drops it silently).
            "--websocket_connect_timeout", "30", "labs.asgi:application"]
    servers = [subprocess.Popen(argv, pass_fds=fds) for _ in range(max(1, args.processes))]
    log.info("%d Daphne processes on %s:%d%s", len(servers), args.bind, args.port,
             f" and {args.also}" if args.also else "")
    for s in sockets:
        s.close()  # the servers hold it now

    stopping = []

    def stop(signum, frame):
        stopping.append(signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while not stopping:
        done = [p for p in servers if p.poll() is not None]
        if done:
            code = done[0].returncode or 1
            log.error("a Daphne process exited (%s): stopping the others", done[0].returncode)
            break
        time.sleep(0.2)
    for p in servers:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in servers:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return 0 if stopping else code


if __name__ == "__main__":
    sys.exit(main())
