"""The whole lab, started for real for the integration tests and the bench.

Like `make run`, but on free ports with a throwaway database: a real
redis-server, the lab registry, Daphne serving the site and a Celery worker,
all using the built-in runtime (or the driver asked for). Every process and
every node the site starts is removed afterwards, also when a test fails or
the bench is interrupted; the processes' logs are printed when something goes
wrong so a failure explains itself.

Plain Python: it starts the site's processes and talks to them, it never
imports Django (the bench runs it without settings).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# Runtime sessions of a test site are named with a prefix of its own, so
# cleaning up after it never touches a lab (or an earlier, crashed test run)
# on the same machine.
SESSION_PREFIX = "it" + "".join(random.choice(string.ascii_lowercase) for _ in range(4))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, seconds: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {seconds:.0f}s waiting for {what}")


def stop_process(proc: subprocess.Popen, seconds: float = 10) -> None:
    """Ask `proc` to end (SIGTERM); SIGKILL it if it has not within `seconds`."""
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def remove_test_recordings(prefix: str = SESSION_PREFIX) -> None:
    """The recordings of this site's sessions (<prefix><number>), from the runtime directory."""
    from runtime.castfile import recordings_dir
    top = recordings_dir()
    if top.is_dir():
        for session in top.iterdir():
            if session.name.startswith(prefix) and session.name[len(prefix):].isdigit():
                shutil.rmtree(session, ignore_errors=True)


def remove_test_nodes(driver, prefix: str = SESSION_PREFIX) -> None:
    """Stop every node of the test site's sessions (those named with `prefix`).

    In a thread of its own: a test (Playwright's sync API, say) may still
    hold an event loop in this one, where asyncio.run() refuses to work.
    """
    async def stop_all():
        for node in driver.list_nodes():
            if node.session.startswith(prefix):
                await driver.stop(node.id)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, stop_all()).result()


@dataclass
class LiveSite:
    url: str
    env: dict
    workdir: Path
    procs: dict = field(default_factory=dict)
    prefix: str = SESSION_PREFIX
    driver: str = "builtin"

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def dump_logs(self) -> str:
        return "\n".join(f"----- {name} -----\n{self.log(name)[-4000:]}" for name in self.procs)

    commands: dict = field(default_factory=dict)

    def start(self, name: str) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(self.commands[name], cwd=ROOT, env=self.env,
                                                stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def restart(self, name: str, crash: bool = False) -> None:
        """Stop one process of the site as an operator would (or kill it, as a
        crash would: it saves nothing) and start it again."""
        proc = self.procs[name]
        if crash:
            os.killpg(proc.pid, 9)
        else:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        ready_before = self.log(name).count(" ready.")
        self.start(name)
        if name == "web":
            wait_for(lambda: _answers(self.url + "/"), 30, "the site to answer again")
        elif name == "redis":
            port = int(self.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
            wait_for(lambda: _listens(port), 30, "Redis to answer again")
        elif name in ("worker", "nodes"):
            wait_for(lambda: self.log(name).count(" ready.") > ready_before, 60,
                     "the Celery worker to be ready again")

    def manage(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "python"), "manage.py", *args], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=120)


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def live_site(prefix: str = SESSION_PREFIX, driver: str = "builtin", workers: int = 4,
              extra_env: dict | None = None, quiet: bool = False, also_listen: str = "",
              beat: bool = False):
    """The running site. `prefix` names its runtime sessions (and is what the
    clean-up removes); `workers` is the Celery worker's concurrency, as
    LAB_WORKERS sets it for `make run`. `quiet` keeps the logs to itself on failure.
    `also_listen`: an address Daphne and Redis listen on besides loopback (the
    test cluster's bridge, for its sandbox hosts). `beat`: run Celery beat too."""
    from runtime import get_driver, registry

    workdir = Path(tempfile.mkdtemp(prefix="lab-site-"))
    port, redis_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DB_PATH": str(workdir / "db.sqlite3"),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "LAB_SESSION_PREFIX": prefix,
        "LAB_DRIVER": driver,
        "CHANNEL_LAYER": "redis",
        "DEBUG": "0",
        "LOG_LEVEL": "INFO",
        # No warm pool unless asked for: pool nodes belong to no test's prefix,
        # so the clean-up below would leave them behind.
        "LAB_POOL_SIZE": "0",
        # Test classrooms start "now" with learners who never start a lab: a
        # pool for them would fill the shared test site with idle nodes.
        "LAB_POOL_CLASSES": "0",
        # Saved machines go with the test site.
        "LAB_SAVE_DIR": str(workdir / "saves"),
        **(extra_env or {}),
    }
    if also_listen:  # the Redis address the site gives hosts that join
        env.setdefault("LAB_HOSTS_REDIS_URL", f"redis://{also_listen}:{redis_port}/0")
    host = env.get("LAB_HOST_NAME", "local")
    commands = {
        # As the Procfile: no snapshots while running, one on shutdown, so a
        # restarted Redis still has its queued tasks and channel groups.
        # Listening on the test cluster's bridge too, protected mode (loopback
        # only without a password) would turn its hosts away: that bridge
        # reaches nothing but this machine's test hosts.
        "redis": ["redis-server", "--bind", "127.0.0.1",
                  *([also_listen, "--protected-mode", "no"] if also_listen else []),
                  "--port", str(redis_port),
                  "--save", "", "--appendonly", "no", "--dir", str(workdir),
                  "--dbfilename", "redis.rdb", "--shutdown-on-sigterm", "save",
                  "--shutdown-on-sigint", "save"],
        # As the Procfile: a websocket may take up to 30 s to be accepted
        # when the site is busy (Daphne's default, 5 s, drops it silently).
        # As the Procfile: LAB_WEB_PROCESSES Daphne servers on one socket.
        "web": [str(VENV_BIN / "python"), str(ROOT / "scripts" / "web.py"), "--bind", "127.0.0.1",
                "--port", str(port), *(["--also", also_listen] if also_listen else [])],
        # As the Procfile: one worker for checks, one for node work.
        "worker": [str(VENV_BIN / "celery"), "-A", "labs.celery:app", "worker", "-n", "checks@%h",
                   "-Q", f"celery,checks.{host}", "--loglevel=INFO", f"--concurrency={workers}",
                   "--without-gossip", "--without-mingle"],
        # The node worker beats as the host's heartbeat (labs/sandboxes/hosts.py).
        "nodes": ["env", "LAB_HOST_HEARTBEAT=1", str(VENV_BIN / "celery"), "-A", "labs.celery:app",
                  "worker", "-n", "nodes@%h", "-Q", f"nodes.{host}", "--loglevel=INFO", f"--concurrency={workers}",
                  "--without-gossip", "--without-mingle"],
    }
    # As the Procfile: every terminal of the site's sessions is recorded.
    commands["recorder"] = [str(VENV_BIN / "python"), "-m", "runtime", "record"]
    if beat:
        commands["beat"] = [str(VENV_BIN / "celery"), "-A", "labs.celery:app", "beat",
                            "--loglevel=INFO", "--schedule", str(workdir / "celerybeat-schedule")]
    site = LiveSite(url=f"http://127.0.0.1:{port}", env=env, workdir=workdir, prefix=prefix,
                    driver=driver, commands=commands)
    failed = True
    # Made now, so the clean-up never depends on importing anything later.
    runtime_driver = get_driver(driver)
    with registry.ensure_running():
        try:
            for args in (["migrate", "--noinput"], ["sync_lessons"]):
                done = site.manage(*args)
                assert done.returncode == 0, done.stdout + done.stderr
            for name in commands:
                site.start(name)
            wait_for(lambda: _answers(site.url + "/"), 30, "the site to answer")
            for name in ("worker", "nodes"):
                wait_for(lambda: "ready" in site.log(name), 60, f"the Celery {name} worker")
            yield site
            failed = False
        finally:
            for name, proc in site.procs.items():
                if proc.poll() is None:
                    proc.terminate()
            for name, proc in site.procs.items():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
            remove_test_nodes(runtime_driver, prefix)
            remove_test_recordings(prefix)
            if failed and not quiet:
                sys.stderr.write(site.dump_logs())
            shutil.rmtree(workdir, ignore_errors=True)
