"""The built-in driver: nodes made of Linux namespaces, overlayfs, veth and bridges.

A node is a tree of processes in its own mount, pid, uts, ipc, net and cgroup
namespaces. Its root is an overlayfs over the shared read-only node image,
with a per-node upper directory; Docker's data sits on a plain per-node
directory. tini is PID 1 and runs dockerd. The host side keeps a JSON file
per node under nodes/<id>/node.json so any process (site, worker, CLI) can
find and manage every node.

The parts: common.py, cgroups.py, sessions.py (session networks),
pool.py (warm pool), launch.py (cold start); this module holds the driver's
state, start, stop, exec and terminals.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from .. import hostexec, images, netplan, nodefs, saves, seccomp
from ..limits import capacity, mem_available
from ..model import (Driver, ExecResult, LabFull, LabRuntimeError, Node, NodeNotFound, NodeSpec,
                     tmux_attach)
from ..paths import nodes_dir, sessions_dir
from ..pty_terminal import PtyTerminal
from .common import (_has_own_root, host_lock, _is_zombie, NODE_ENV, _pid_alive, POOL_SESSION, run,
                     START_TIMEOUT)
from .launch import Launcher
from .persist import Persist
from .pool import WarmPool
from .sessions import SessionNetworks
from .cgroups import CGROUP_PARENT, entry_dirs, node_cgroup_dirs, node_pids, set_frozen

log = logging.getLogger(__name__)




class BuiltinDriver(Launcher, Persist, WarmPool, SessionNetworks, Driver):
    name = "builtin"
    saves_machines = True

    def __init__(self):
        with contextlib.suppress(OSError):  # not root: preflight says so
            for d in (nodes_dir(), sessions_dir()):
                d.mkdir(parents=True, exist_ok=True)

    # ---- checks -------------------------------------------------------------
    def preflight(self) -> list:
        problems = []
        if os.geteuid() != 0:
            problems.append("the lab must run as root to create nodes "
                            "(namespaces, mounts and network devices need it)")
        for ns in ("mnt", "pid", "net", "uts", "ipc", "cgroup"):
            if not os.path.exists(f"/proc/self/ns/{ns}"):
                problems.append(f"this kernel has no {ns} namespaces")
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                problems.append("this kernel has no overlayfs (modprobe overlay)")
        for tool in ("unshare", "nsenter", "ip", "iptables"):
            if not shutil.which(tool):
                problems.append(f"`{tool}` is missing: run `make run` to install what is missing")
        if not problems:
            try:
                images.current_image()
            except LabRuntimeError as e:
                problems.append(e.reason)
        return problems

    # ---- state --------------------------------------------------------------
    def _node_dir(self, node_id: str) -> Path:
        return nodes_dir() / node_id

    def _save(self, node: Node) -> None:
        path = self._node_dir(node.id) / "node.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(node.to_json(), indent=1))
        os.replace(tmp, path)

    # A node.json not written for this long is taken from the last listing
    # when its inode, time and size are unchanged. (The file system's clock
    # is coarse, some milliseconds: two writes within one tick can leave the
    # same time, and _save's new file may get a freed inode back.)
    SETTLED_NS = 1_000_000_000

    def list_nodes(self) -> list:
        """Every node's state, from its node.json. Each claim from the pool
        and each of the recorder's scans lists every node: a class of forty
        arriving at once did so some eighty times, reading and parsing forty
        files each time (3 ms). A node's file is read again only when it
        changed, or changed lately (SETTLED_NS)."""
        top = nodes_dir()
        try:
            names = sorted(e.name for e in os.scandir(top) if not e.name.startswith("."))
        except FileNotFoundError:
            return []
        before = getattr(self, "_listed", {})
        listed, nodes = {}, []
        now = time.time_ns()
        for name in names:
            path = top / name / "node.json"
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            known = before.get(path)
            if known is None or known[0] != key or now - st.st_mtime_ns < self.SETTLED_NS:
                try:
                    known = (key, Node.from_json(json.loads(path.read_text())))
                except (OSError, ValueError, TypeError):
                    continue
            listed[path] = known
            nodes.append(known[1])  # (a Node is frozen; nobody changes its extra)
        self._listed = listed
        return nodes

    def _load(self, node_id: str) -> Node:
        if not node_id or "/" in node_id or node_id.startswith("."):
            raise NodeNotFound(node_id)
        path = self._node_dir(node_id) / "node.json"
        try:
            return Node.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise NodeNotFound(node_id) from None

    def _running_pid(self, node_id: str) -> int:
        return self._running(node_id)[1]

    def _running(self, node_id: str) -> tuple:
        """(the node's state, its init's host pid); an error if it is not running."""
        node = self._load(node_id)
        pid = node.extra.get("pid")
        if not pid or not self._owns(node, pid):
            raise LabRuntimeError(f"node {node_id} is not running", permanent=True)
        return node, pid

    @staticmethod
    def _owns(node: Node, pid: int) -> bool:
        """Is host `pid` still this node's init (and not a reused pid)?"""
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                return f"/{CGROUP_PARENT}/{node.id}" in f.read()
        except OSError:
            return False

    # ---- start ----------------------------------------------------------------
    async def start(self, spec: NodeSpec, on_progress=None) -> Node:
        return await asyncio.to_thread(self._start, spec, on_progress or (lambda event: None))

    def _start(self, spec: NodeSpec, progress) -> Node:
        problems = self.preflight()
        if problems:
            raise LabRuntimeError("; ".join(problems), permanent=True)
        if spec.session != POOL_SESSION and not spec.restore:
            claimed = self._claim(spec, progress)
            if claimed is not None:
                return claimed
        return self._cold_start(spec, progress)

    def _check_capacity(self) -> None:
        """Refuse a new node rather than overcommit the machine (caller holds the lock)."""
        limits = capacity()
        count = len(self.list_nodes())
        if count >= limits["max_nodes"]:
            raise LabFull(f"the lab is full: {count} of {limits['max_nodes']} nodes are in use")
        if mem_available() - limits["per_node"] < limits["headroom"]:
            raise LabFull("the lab is full: the machine has no memory to spare for another node")

    def _wait_for_engine(self, node: Node, pid: int, keeper: int) -> None:
        # (/var/run/docker.sock, resolved in the node's root: a restored
        # machine's disk is the learner's, and a plain path through
        # /proc/PID/root could lead out of it.)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                raise LabRuntimeError("the node stopped while starting: "
                                      + self._console_tail(node.id) + self._dockerd_log(pid, node))
            # Until the node's init has entered its own root, that path is the
            # host's /run/docker.sock: an operator's own engine there answered
            # for the node, which was then "ready" before it had a root.
            if _has_own_root(pid) and self._engine_answers(pid):
                return
            # A failed try costs a stat and a refused connect: poll often, a
            # cold start waits for it.
            time.sleep(0.005)
        raise LabRuntimeError(f"the node's Docker engine did not answer within {START_TIMEOUT:.0f}s"
                              + self._dockerd_log(pid, node))

    @staticmethod
    def _engine_answers(pid: int) -> bool:
        try:
            fd = nodefs.open_in_root(f"/proc/{pid}/root", "/var/run/docker.sock", kind="socket")
        except OSError:
            return False  # not made yet
        try:
            return hostexec.engine_answers(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    # ---- stop -----------------------------------------------------------------
    async def stop(self, node_id: str) -> None:
        await asyncio.to_thread(self._stop, node_id)

    def _stop(self, node_id: str) -> None:
        try:
            node = self._load(node_id)
        except NodeNotFound:
            if not self._node_dir(node_id).exists():
                return  # already gone: success
            node = Node(id=node_id, session="", name="", driver=self.name)
        cg_dirs = node_cgroup_dirs(node_id)
        self._kill_node(node_id, node)
        for path in cg_dirs:
            self._remove_cgroup_tree(path)
        self._release_host_mounts(self._node_dir(node_id))
        host_if, _ = netplan.veth_names(node_id)
        if Path(f"/sys/class/net/{host_if}").exists():
            run(["ip", "link", "del", host_if], check=False)
        directory = self._node_dir(node_id)
        if directory.exists():
            # --one-file-system: never follow into a mount, should one be left.
            run(["rm", "-rf", "--one-file-system", str(directory)], check=False)
        if node.session:
            with host_lock():
                self._remove_session_net_if_empty(node.session)
        log.info("node %s removed", node_id)

    def _kill_node(self, node_id: str, node: Node | None = None) -> None:
        """Kill everything in the node's cgroups (the nested containers too)
        until nothing is left; killing PID 1 alone would do, but the cgroup
        is the truth if the init was already gone."""
        if node is None:
            node = self._load(node_id)
        set_frozen(node_id, False)  # (a frozen process dies only once thawed)
        deadline = time.monotonic() + 15
        while True:
            pids = node_pids(node_id)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise LabRuntimeError(f"node {node_id}: processes {sorted(pids)} would not die")
            time.sleep(0.01)
        # The launcher reaps the node's init and exits; the host's init then
        # reaps the launcher. Wait until both have gone (a zombie holds nothing
        # but its pid, so one the host's init is slow to reap counts as gone).
        for pid in (node.extra.get("pid"), node.extra.get("keeper")):
            while pid and _pid_alive(pid) and not _is_zombie(pid) and time.monotonic() < deadline:
                time.sleep(0.005)

    async def save_and_stop(self, node_id: str, key: str, limit_bytes: int = 0):
        return await asyncio.to_thread(self._save_and_stop, node_id, key, limit_bytes,
                                       saves.get_store())

    @staticmethod
    def _remove_cgroup_tree(path: Path) -> None:
        if not path.exists():
            return
        # Deepest first. Another stop of the same node (the pool's reaping and
        # a returning host's both find a dead node) may remove directories
        # under our feet: os.walk skips what vanished where rglob raised.
        for parent, dirs, _ in os.walk(path, topdown=False):
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(parent, name))
        for _ in range(100):
            try:
                path.rmdir()
                return
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return
                time.sleep(0.01)  # the kernel frees a cgroup shortly after its last task

    # ---- poll / exec / terminal ---------------------------------------------------
    async def poll(self, node_id: str):
        try:
            node = self._load(node_id)
        except NodeNotFound:
            return "gone"
        pid = node.extra.get("pid")
        if not pid or not self._owns(node, pid):
            return "stopped"
        return None

    def _enter(self, node: Node, pid: int, argv: list, before=()) -> tuple:
        """(host argv, preexec_fn) that runs `argv` inside the running `node`
        (init `pid`): its cgroups, namespaces and root, seccomp-confined.
        `before` is a host command the entry runs under (setsid)."""
        dirs = entry_dirs(node.id)  # (thawed, if it was waiting)
        argv, preexec = seccomp.enter(pid, bool(node.extra.get("uid_base")), dirs, argv)
        return [*before, *argv], preexec

    async def exec(self, node_id, argv, timeout=30.0, input=None, on_output=None) -> ExecResult:
        node, pid = self._running(node_id)
        limit, inner = hostexec.inner_timeout(argv, timeout)
        host_argv, preexec = self._enter(node, pid, inner)
        return await hostexec.run_limited(host_argv, limit, timeout, input=input,
                                          on_output=on_output, env=dict(NODE_ENV),
                                          preexec_fn=preexec)

    opens_node_files = True

    def open_in_node(self, node_id, path, flags=os.O_RDONLY, kind="file"):
        # Through the node's own mounts (its disk is not mounted on the host).
        return nodefs.open_in_root(f"/proc/{self._running_pid(node_id)}/root", path, flags, kind)

    def make_fifo_in_node(self, node_id, path):
        node, pid = self._running(node_id)
        # Owned by the node's root: host uid uid_base in a user namespace.
        owner = node.extra.get("uid_base") or 0
        nodefs.make_fifo(f"/proc/{pid}/root", path, owner)

    async def open_control(self, node_id, name="main"):
        enter, preexec = self._enter(*self._running(node_id), [])
        return await self.spawn_control(enter, name, env=dict(NODE_ENV), preexec_fn=preexec)

    async def open_terminal(self, node_id, cols=80, rows=24, name="main"):
        node, pid = self._running(node_id)
        if not name.replace("-", "").isalnum():
            raise LabRuntimeError(f"invalid terminal name {name!r}", permanent=True)
        # tmux keeps the shell (and its screen) inside the node, so a new
        # attachment after a page reload or a site restart finds it again.
        argv, preexec = self._enter(node, pid, tmux_attach(name, "-u"), before=("setsid", "-c"))
        return await PtyTerminal.spawn(argv, cols, rows, env=dict(NODE_ENV), preexec_fn=preexec)
