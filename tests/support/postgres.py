"""A throwaway PostgreSQL server for the tests that need a shared database.

Debian's postgresql package: a cluster of its own in a temporary directory,
run as the postgres user (initdb refuses root), listening on loopback only at
a free port, with trust authentication (nothing but this machine's loopback
reaches it). Removed, data and all, when the block ends, also on failure.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile

from tests.support.livesite import free_port


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    assert found, "PostgreSQL is not installed: scripts/install-deps.sh installs postgresql"
    return os.path.dirname(found[-1])


def _as_postgres(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True,
                          text=True, timeout=120, **kwargs)


@contextlib.contextmanager
def postgres_server(database: str = "lab", also_listen: str = "", clients: str = ""):
    """Yields the DATABASE_URL of a fresh database `database` (its owner may
    create databases, as pytest-django's test databases need). `also_listen`:
    an address to listen on besides loopback, for the network `clients`
    (CIDR; the test cluster's sandbox hosts)."""
    bindir = _bindir()
    top = tempfile.mkdtemp(prefix="lab-postgres-")
    data, port = os.path.join(top, "data"), free_port()
    shutil.chown(top, "postgres", "postgres")
    started = False
    try:
        done = _as_postgres(f"{bindir}/initdb", "-D", data, "-U", "lab", "-A", "trust",
                            "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8")
        assert done.returncode == 0, done.stdout + done.stderr
        if clients:
            with open(os.path.join(data, "pg_hba.conf"), "a") as hba:
                hba.write(f"host all all {clients} trust\n")
        listen = ",".join(filter(None, ["127.0.0.1", also_listen]))
        # fsync off: a test database need not survive a power cut.
        options = f"-h {listen} -p {port} -k {top} -c fsync=off -c max_connections=300"
        done = _as_postgres(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(top, "log"),
                            "-o", options, "-w", "-t", "60", "start")
        started = done.returncode == 0
        assert started, done.stdout + done.stderr + _log(top)
        done = _as_postgres(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "lab",
                            database)
        assert done.returncode == 0, done.stdout + done.stderr
        yield f"postgresql://lab@127.0.0.1:{port}/{database}"
    finally:
        if started:
            _as_postgres(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(top, ignore_errors=True)


def _log(top: str) -> str:
    with contextlib.suppress(OSError), open(os.path.join(top, "log")) as f:
        return f.read()[-3000:]
    return ""
