"""A private host Docker engine for the docker driver's tests and bench.

The docker driver runs nodes on a host Docker engine an operator already
has. Tests and the bench must not depend on (or disturb) one, so this module
runs Debian's `dockerd` with everything of its own: data root, exec root,
pid file, a socket at /run/lab-hostdocker.sock, no default bridge (the
driver makes a user-defined network per session) and its own containerd.

It keeps its hands off the host's firewall: `--iptables=false` and
`--ip-forward=false`, so it never touches the DOCKER* chains (at start
dockerd 20.10 would remove and recreate the ones another engine owns) or the
FORWARD policy. What its networks need from the firewall (all in the private
pool ADDRESS_POOL) this module applies itself at start and removes at stop,
in chains of its own named LAB-HOSTDOCKER, built by pure functions:

- filter, jumped to first from FORWARD for traffic from or to the pool:
  traffic of the lab's bridges (labbr+, which the docker driver's session
  bridges labbrd<hash> match) returns to the lab's own LAB-FORWARD; for any
  other network of the pool, switched traffic within one network is accepted, traffic routed between
  two networks of the pool (two sessions) is dropped, traffic towards the
  built-in driver's bridges is left to its LAB-FORWARD, the pool's egress and
  its return traffic are accepted (so a FORWARD policy of DROP set by another
  engine does not cut nodes off);
- nat, jumped to from POSTROUTING: egress from the pool is masqueraded.

The built-in driver's LAB-INPUT/LAB-FORWARD chains only match labbr+
interfaces; these rules only match the pool's addresses.

    python -m tests.support.hostdocker start|stop|status
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime.firewall import BRIDGES
from runtime.model import LabRuntimeError
from runtime.paths import base_dir

log = logging.getLogger(__name__)

SOCKET_PATH = "/run/lab-hostdocker.sock"
HOST = f"unix://{SOCKET_PATH}"
EXEC_ROOT = "/run/lab-hostdocker"
# Away from the default pools (172.17/16 ...) that the engines inside the
# nodes use for their own docker0, and from the built-in driver's 10.213.
POOL = "10.214.0.0/16"
ADDRESS_POOL = f"base={POOL},size=24"
START_TIMEOUT = 60.0
CHAIN = "LAB-HOSTDOCKER"
TABLES = ("filter", "nat")


def home() -> Path:
    return base_dir() / "hostdocker"


def pidfile() -> Path:
    return home() / "dockerd.pid"


def logfile() -> Path:
    return home() / "dockerd.log"


def dockerd_argv() -> list:
    """The private engine's command line (pure: a unit test may compare it)."""
    return ["dockerd", f"--host={HOST}", f"--data-root={home() / 'data'}",
            f"--exec-root={EXEC_ROOT}", f"--pidfile={pidfile()}",
            f"--config-file={home() / 'daemon.json'}", "--bridge=none",
            "--iptables=false", "--ip-forward=false", "--ip-masq=false",
            f"--default-address-pool={ADDRESS_POOL}", "--log-level=warn"]


def _env() -> dict:
    return {**os.environ, "DOCKER_HOST": HOST}


def answers(timeout: float = 5) -> bool:
    cli = shutil.which("docker")
    if not cli or not os.path.exists(SOCKET_PATH):
        return False
    with contextlib.suppress(subprocess.TimeoutExpired):
        return subprocess.run([cli, "version", "--format", "{{.Server.Version}}"], env=_env(),
                              capture_output=True, timeout=timeout).returncode == 0
    return False


def _running_pid() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile().read_text())
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"dockerd"):
            return pid
    return None


def filter_rules(pool: str = POOL) -> list:
    """LAB-HOSTDOCKER (filter): packets routed from or to the pool."""
    return [
        # The lab's bridges (the built-in driver's, and the docker driver's
        # labbrd<hash>): LAB-FORWARD decides, with the lab's egress rules.
        ["-i", BRIDGES, "-j", "RETURN"],
        ["-o", BRIDGES, "-j", "RETURN"],
        # Switched within one network's bridge (seen here when the host has
        # br_netfilter loaded): the nodes of a session talk freely.
        ["-m", "physdev", "--physdev-is-bridged", "-j", "ACCEPT"],
        # Routed between two networks of the pool: sessions are isolated.
        ["-s", pool, "-d", pool, "-j", "DROP"],
        ["-d", pool, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ["-s", pool, "-j", "ACCEPT"],
    ]


def nat_rules(pool: str = POOL) -> list:
    """LAB-HOSTDOCKER (nat): egress from the pool leaves with the host's address."""
    return [["-s", pool, "!", "-d", pool, "-j", "MASQUERADE"]]


def jump_rules(pool: str = POOL) -> dict:
    """Per table, the rules (chain first) that send the pool's traffic to CHAIN."""
    return {"filter": [["FORWARD", "-s", pool, "-j", CHAIN], ["FORWARD", "-d", pool, "-j", CHAIN]],
            "nat": [["POSTROUTING", "-s", pool, "-j", CHAIN]]}


def restore_text(pool: str = POOL) -> str:
    """iptables-restore --noflush input: both chains and the jumps to them, first."""
    lines = []
    for table, rules in (("filter", filter_rules(pool)), ("nat", nat_rules(pool))):
        lines += [f"*{table}", f":{CHAIN} - [0:0]"]
        lines += [" ".join(["-A", CHAIN, *rule]) for rule in rules]
        lines += [" ".join(["-I", jump[0], "1", *jump[1:]]) for jump in jump_rules(pool)[table]]
        lines.append("COMMIT")
    return "\n".join(lines + [""])


def removal_commands(table: str, listing: list) -> list:
    """iptables argv tails that remove CHAIN from a table, given its `iptables -S` lines."""
    commands = []
    for line in listing:
        parts = line.split()
        if parts[:1] == ["-A"] and parts[1] != CHAIN and parts[-2:] == ["-j", CHAIN]:
            commands.append(["-t", table, "-D", *parts[1:]])
    if f"-N {CHAIN}" in listing:
        commands += [["-t", table, "-F", CHAIN], ["-t", table, "-X", CHAIN]]
    return commands


def _listing(table: str) -> list:
    proc = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True)
    if proc.returncode:
        raise LabRuntimeError(f"`iptables -t {table} -S` failed: {proc.stderr.strip()}")
    return proc.stdout.splitlines()


def remove_firewall() -> None:
    """Remove our chains and the jumps to them; nothing there is success."""
    if not shutil.which("iptables"):
        return
    for table in TABLES:
        for args in removal_commands(table, _listing(table)):
            proc = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
            if proc.returncode:
                raise LabRuntimeError(f"`iptables {' '.join(args)}` failed: "
                                      f"{proc.stderr.strip()}")


def apply_firewall() -> None:
    """Our chains, fresh: leftovers of an earlier run are removed first."""
    if not shutil.which("iptables-restore"):
        raise LabRuntimeError("iptables is missing: apt-get install iptables", permanent=True)
    remove_firewall()
    proc = subprocess.run(["iptables-restore", "-w", "--noflush"], input=restore_text(),
                          capture_output=True, text=True)
    if proc.returncode:
        raise LabRuntimeError(f"iptables-restore failed: {proc.stderr.strip()}")


def start() -> str:
    """Start the private engine unless it runs; return its DOCKER_HOST."""
    if _running_pid() and answers():
        return HOST
    if not shutil.which("dockerd"):
        raise LabRuntimeError("dockerd is missing: apt-get install docker.io", permanent=True)
    if not shutil.which("docker"):
        raise LabRuntimeError("the docker CLI is missing: apt-get install docker.io",
                              permanent=True)
    home().mkdir(parents=True, exist_ok=True)
    (home() / "daemon.json").write_text("{}\n")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    apply_firewall()
    with open(logfile(), "ab") as out:
        proc = subprocess.Popen(dockerd_argv(),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(timeout=2):
        if proc.poll() is not None:
            remove_firewall()
            raise LabRuntimeError(f"the private host dockerd exited (code {proc.returncode}); "
                                  f"its log ({logfile()}):\n{_tail()}")
        if time.monotonic() > deadline:
            stop()
            raise LabRuntimeError(f"the private host dockerd did not answer within "
                                  f"{START_TIMEOUT:.0f}s:\n{_tail()}")
        time.sleep(0.1)
    log.info("private host dockerd (pid %d) at %s", proc.pid, HOST)
    return HOST


def stop(purge: bool = False) -> None:
    """Stop the private engine (its containers die with it) and remove our chains.

    Repeatable: what is already gone is skipped.

    `purge` also deletes its data root (imported node image, volumes).
    """
    pid = _running_pid()
    if pid:
        # dockerd stops its containers (with a grace period) and containerd.
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    # Its containerd (and shims) live in its exec root's cgroup-less tree: find
    # them by the exec root on their command line.
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if EXEC_ROOT.encode() in proc.read_bytes():
                os.kill(int(proc.parent.name), signal.SIGKILL)
    remove_firewall()
    with contextlib.suppress(OSError):
        os.unlink(SOCKET_PATH)
    for mount in reversed(_mounts_under(EXEC_ROOT, str(home()))):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(EXEC_ROOT, ignore_errors=True)
    if purge:
        subprocess.run(["rm", "-rf", "--one-file-system", str(home())], capture_output=True)


def _mounts_under(*roots: str) -> list:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if any(p == r or p.startswith(r + "/") for r in roots)]


def _tail() -> str:
    with contextlib.suppress(OSError):
        return logfile().read_text(errors="replace")[-2000:]
    return "(no log)"


@contextlib.contextmanager
def running():
    """The private engine for the duration; stopped again if started here."""
    was_running = bool(_running_pid()) and answers()
    host = start()
    try:
        yield host
    finally:
        if not was_running:
            stop()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cmd = argv[0] if argv else "status"
    try:
        if cmd == "start":
            print(start())
        elif cmd == "stop":
            stop(purge="--purge" in argv)
        elif cmd == "status":
            print("running" if _running_pid() and answers() else "stopped")
        else:
            print("usage: python -m tests.support.hostdocker start|stop [--purge]|status",
                  file=sys.stderr)
            return 2
    except LabRuntimeError as e:
        print(f"error: {e.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
