"""The open-file limit, raised for processes that hold many sockets.

Every open terminal holds a websocket, a PTY and Redis connections in Daphne,
and a client driving a class (the tests, the bench) holds the other ends.
Debian's default soft limit (1024) would cap a class at a few hundred; the
hard limit allows more, so a process takes it, up to `want`.
"""
import resource


def raise_open_file_limit(want: int = 65536) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
