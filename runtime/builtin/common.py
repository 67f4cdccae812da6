"""What every part of the built-in driver uses: the node's environment,
uid ranges, the warm pool's session, and small host helpers."""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Optional

from .. import nodefs
from ..model import LabRuntimeError
from ..paths import file_lock

log = logging.getLogger(__name__)


NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


NODE_ENV = {"PATH": NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm-256color",
            "USER": "root"}


NODESTART = Path(__file__).with_name("nodestart.sh")  # next to this file
# How long a node's engine may take to answer (driver.py reads it at each start).
START_TIMEOUT = float(os.environ.get("LAB_NODE_START_TIMEOUT", "60"))


# Root in a node is an unprivileged uid range on the host, a different one per
# node: [UID_BASE + k*UID_RANGE, +UID_RANGE). Off only for debugging: root in
# a node is then the host's root (USERNS_OFF_WARNING says so at each start).
USERNS = os.environ.get("LAB_USERNS", "1") not in ("0", "false", "no", "off")
USERNS_OFF_WARNING = ("LAB_USERNS is off: root in this node is root on the host. "
                      "For debugging the runtime only, never with learners.")


UID_BASE = int(os.environ.get("LAB_UID_BASE", str(10_000_000)))


UID_RANGE = 65536


MAX_UID_SLOTS = (2**32 - 2 - UID_BASE) // UID_RANGE


# Ready nodes wait in this session until a learner's start claims one.
POOL_SESSION = "warm-pool"


def run(argv: list, check: bool = True, input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    """Run a host command; a failure becomes a LabRuntimeError naming it."""
    proc = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if check and proc.returncode != 0:
        raise LabRuntimeError(f"`{' '.join(argv)}` failed: "
                              f"{proc.stdout.decode(errors='replace').strip()}")
    return proc


def host_lock():
    """One lock for session and address bookkeeping across every process."""
    return file_lock("lock")


def _has_own_root(pid: int) -> bool:
    """Has process `pid` left the host's root directory (for its node's)?"""
    try:
        mine, host = os.stat(f"/proc/{pid}/root/"), os.stat("/")
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) != (host.st_dev, host.st_ino)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _place_files(root: Path, files) -> None:
    """Write (path, content[, mode]) files under `root` (a node's upper layer),
    inside it only (runtime/nodefs.py: a restored layer is the learner's)."""
    for path, content, *mode in files:
        if not str(path).startswith("/") or ".." in Path(path).parts:
            raise LabRuntimeError(f"file path {path!r} must be absolute, without '..'",
                                  permanent=True)
        try:
            nodefs.place(str(root), str(path),
                         content.encode() if isinstance(content, str) else content,
                         mode[0] if mode else 0o644)
        except OSError as exc:
            raise LabRuntimeError(f"could not place {path} in the node: {exc}") from exc


def _disable_ipv6(ifname: str, netns: str | None = None) -> None:
    if netns is None:  # this process's own network namespace: no need for a process
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")
        return
    run(["nsenter", f"--net={netns}", "sysctl", "-q", "-w",
         f"net.ipv6.conf.{ifname}.disable_ipv6=1"], check=False)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def name_taken(listed: list, session: str, name: str) -> bool:
    """Whether `session` has a node called `name` among `listed`. A pre-built
    session's nodes wait "reserved" under the names lessons use until each
    is handed out (runtime/builtin/pool.py): those do not count."""
    return any(n.session == session and n.name == name and n.extra.get("state") != "reserved"
               for n in listed)
