"""One shared database for many machines: the lab on a real PostgreSQL server.

SQLite stays the one-machine default; sandbox hosts on other machines need a
database they all reach, set with DATABASE_URL. Here a throwaway PostgreSQL
server (tests/support/postgres.py) takes the site's migrations and the unit
tests that lean hardest on the database run against it. The running site
and its hosts' workers write to PostgreSQL in tests/integration/test_cluster.py.
"""
from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from tests.support.livesite import ROOT
from tests.support.postgres import postgres_server


# The unit tests that lean on the database: its transactions, constraints,
# aggregates and migrations (the state-only split is checked table by table).
DATABASE_HEAVY = ["test_migrations.py", "test_start_lab.py", "test_lab_full_queue.py",
                  "test_run_checks.py", "test_classroom_grid.py", "test_quiz.py",
                  "test_session_limits.py", "test_hosts.py"]


def test_database_heavy_unit_tests_pass_on_postgresql():
    with postgres_server() as url:
        done = subprocess.run(
            # --reuse-db keeps pytest-django's test database: proof of where they ran.
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "--reuse-db",
             *(f"tests/unit/{name}" for name in DATABASE_HEAVY)],
            cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True,
            timeout=600)
        # The tests really ran on PostgreSQL: pytest-django made its test database there.
        with psycopg.connect(url, autocommit=True) as db:
            names = {row[0] for row in db.execute("SELECT datname FROM pg_database")}
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]
    assert "test_lab" in names, names

