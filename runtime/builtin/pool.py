"""The warm pool: pre-built sessions waiting ready until a learner's start
takes one. A pre-built session (POOL_SESSION-<n>x<token>) has its own session
network (bridge, NAT) and n nodes on it; a single node is a pre-built session
of one. A start of a session with no node yet takes a whole one of its size:
the session's network becomes the learner's (no bridge, address or firewall
work while the learner waits), and each node is renamed and given its files
as the learner's start reaches it. A further node of a session that already
has nodes takes a single one and moves it onto the session's network.

A pool node's terminal shell is started while it waits (the login bash
alone costs about 25 ms of CPU, tmux more, and a class arriving at once
paid that forty times over). Pool nodes are named as lessons name theirs
(node1, node2...), so the prompt drawn then is the learner's; a claim under
another name starts the shell again.

A pool node waits running, not frozen. Its idle engine costs 0.38 ms of
CPU a second (since containerd's collector waits for changes: see
nodeimage/containerd.toml); a frozen one cost nothing while it waited but
caught up when the claim thawed it, in a class's busiest seconds: 22-26 ms
of CPU per node after ten minutes, the pool's lead time before a class
(python -m bench.poolwait, 2026-12-03)."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Optional

from .. import netplan, nodefs
from ..model import LabFull, LabRuntimeError, Node, NodeSpec, tmux_make
from ..paths import nodes_dir, sessions_dir
from .cgroups import set_frozen
from .common import START_TIMEOUT, NODE_ENV, POOL_SESSION, run, host_lock, name_taken

log = logging.getLogger(__name__)


SAVE_GRACE_SECONDS = 600
TERMINAL = "main"  # the terminal the site opens (Driver.open_terminal's name)


def is_pool_session(session: str) -> bool:
    """The single nodes' pool session, or a pre-built session waiting in the pool."""
    return session == POOL_SESSION or session.startswith(POOL_SESSION + "-")


class WarmPool:
    """BuiltinDriver's warm pool (a mixin)."""

    has_pool = True

    # ---- warm pool ------------------------------------------------------------
    def pool_nodes(self) -> list:
        """Ready single pool nodes (pre-built sessions of one); dead ones (a host
        restart) are the reaper's, not the pool's."""
        return [members[0] for _, members in self.pool_sets(1)]

    def pool_sets(self, nodes: int, listed: Optional[list] = None, first: bool = False) -> list:
        """Ready pre-built sessions of `nodes` nodes: [(session, [node, ...]), ...]
        (of `listed`, when given; `first`: only the first one found)."""
        groups: dict = {}
        for n in self.list_nodes() if listed is None else listed:
            if is_pool_session(n.session):
                groups.setdefault(n.session, []).append(n)
        found = []
        for session, members in sorted(groups.items()):
            if len(members) == nodes and all(m.extra.get("pool_set") == nodes
                                             and m.extra.get("state") == "running"
                                             for m in members) \
                    and all(self._owns(m, m.extra.get("pid")) for m in members):
                found.append((session, members))
                if first:
                    break
        return found

    def pool_counts(self) -> dict:
        counts = {1: 0}
        listed = self.list_nodes()
        sizes = {n.extra.get("pool_set") for n in listed if is_pool_session(n.session)}
        for size in sorted(s for s in sizes if isinstance(s, int) and s > 0):
            counts[size] = len(self.pool_sets(size, listed))
        return counts

    def fill_pool(self, size: int, nodes: int = 1) -> list:
        """Build pre-built sessions of `nodes` nodes until `size` wait ready;
        stops early when the lab is full."""
        started: list = []
        while len(self.pool_sets(nodes)) < size:
            try:
                started += self._build_pool_set(nodes)
            except LabFull as e:
                log.info("warm pool stays at %d (of %d nodes each): %s",
                         len(self.pool_sets(nodes)), nodes, e.reason)
                break
        return started

    def _build_pool_set(self, nodes: int) -> list:
        """One pre-built session of `nodes` nodes; all of it or none."""
        session = f"{POOL_SESSION}-{nodes}x{secrets.token_hex(4)}"
        made = []
        try:
            for i in range(nodes):
                node = self._cold_start(NodeSpec(session=session, name=f"node{i + 1}"),
                                        lambda event: None)
                made.append(node.id)
                self._start_shell(node)
                node = self._load(node.id)
                self._save(Node(**{**node.to_json(),
                                   "extra": {**node.extra, "pool_set": nodes}}))
        except BaseException:
            for node_id in made:
                with contextlib.suppress(Exception):
                    self._stop(node_id)
            with host_lock():
                self._remove_session_net_if_empty(session)
            raise
        return made

    def trim_pool(self, size: int, nodes: int = 1) -> list:
        """Remove waiting pre-built sessions of `nodes` nodes beyond `size`:
        after a class has started, the pool shrinks back."""
        with host_lock():
            extra = [n for _, members in self.pool_sets(nodes)[size:] for n in members]
            # No longer "running": no claim can take them while they stop.
            for n in extra:
                self._save(Node(**{**n.to_json(), "extra": {**n.extra, "state": "trimming"}}))
        for n in extra:
            with contextlib.suppress(LabRuntimeError):
                self._stop(n.id)
        if extra:
            log.info("warm pool trimmed by %d node(s) (%d per session)", len(extra), nodes)
        return [n.id for n in extra]

    def _claim(self, spec: NodeSpec, progress) -> Optional[Node]:
        """Hand a ready pool node to `spec`'s session, or None if the pool is empty."""
        began = time.monotonic()
        # What runs under the host's lock is kept short: a class arriving at
        # once has its starts take turns here (one listing of the nodes, and
        # /proc looked at only for the pre-built session taken).
        with host_lock():
            listed = self.list_nodes()
            if name_taken(listed, spec.session, spec.name):
                raise LabRuntimeError(f"session {spec.session} already has a node called "
                                      f"{spec.name}", permanent=True)
            node, mates = self._reserved_node(spec, listed)
            moved = node is None
            if node is None:  # the session has nodes already: a single one joins them
                node = next((m[0] for _, m in self.pool_sets(1, listed, first=True)), None)
            if node is None:
                return None
            left = node.session  # a single one's own network goes once it is moved
            renamed = node.name != spec.name
            if moved:
                net = self._ensure_session_net(spec.session)
            else:  # the adopted network is made already: no `ip` or `iptables` run here
                net = netplan.session_net(
                    json.loads(self._session_file(spec.session).read_text())["index"])
            peers = {n.name: n.address for n in (listed if moved else mates)
                     if n.session == spec.session and n.id != node.id}
            address = node.address
            if moved:
                taken = set(peers.values())
                slot = next(s for s in range(1, netplan.MAX_NODES_PER_SESSION + 1)
                            if net.node_address(s) not in taken)
                address = net.node_address(slot)
            node = Node(**{**node.to_json(), "session": spec.session, "name": spec.name,
                           "address": address,
                           "extra": {**node.extra, "bridge": net.bridge, "gateway": net.gateway,
                                     "state": "claiming"}})
            self._save(node)
        try:
            set_frozen(node.id, False)  # (one that an older version of the lab froze)
            # (No progress news: a claim is over in milliseconds, and each
            # message is a round trip to Redis for the worker.)
            self._reconfigure(node, spec, net, peers, moved, renamed)
            node = Node(**{**node.to_json(), "extra": {**node.extra, "state": "running",
                           "start_seconds": round(time.monotonic() - began, 3)}})
            self._save(node)
            if peers:  # (a session of one has nobody else to tell)
                self._refresh_session_hosts(spec.session)
            if moved:
                with host_lock():
                    self._remove_session_net_if_empty(left)
        except BaseException as e:
            log.warning("claiming pool node %s failed: %s", node.id, e)
            with contextlib.suppress(Exception):
                self._stop(node.id)
            return None  # the caller falls back to a cold start
        log.info("node %s (%s/%s) claimed from the pool in %.3fs", node.id, spec.session,
                 spec.name, time.monotonic() - began)
        return node

    def _reserved_node(self, spec: NodeSpec, listed: list) -> Optional[Node]:
        """A node of a pre-built session that `spec`'s session has taken (its
        first start adopts a whole one of spec.session_nodes: caller holds the
        lock and gives the nodes it listed), or None; and the session's nodes."""
        mine = [n for n in listed if n.session == spec.session]
        if not mine:
            sets = self.pool_sets(spec.session_nodes, listed, first=True)
            if not sets:
                return None, []
            pool_session, members = sets[0]
            # The pre-built session's network becomes this session's: same
            # bridge and addresses, so its nodes need no network change.
            self._remove_session_net_if_empty(spec.session)
            record = json.loads(self._session_file(pool_session).read_text())
            self._session_file(spec.session).write_text(
                json.dumps({**record, "session": spec.session}))
            self._session_file(pool_session).unlink()
            for m in members:
                self._save(Node(**{**m.to_json(), "session": spec.session,
                                   "extra": {**m.extra, "state": "reserved"}}))
            mine = [self._load(m.id) for m in members]
            log.info("session %s takes the pre-built session %s (%d nodes)", spec.session,
                     pool_session, len(members))
        reserved = [n for n in mine if n.extra.get("state") == "reserved"
                    and self._owns(n, n.extra.get("pid"))]
        # The one already named so keeps its waiting shell (see the module's doc).
        return min(reserved, key=lambda n: (n.name != spec.name, n.address), default=None), mine

    def _reconfigure(self, node: Node, spec: NodeSpec, net, peers: dict, move: bool = True,
                     rename: bool = True) -> None:
        """Give a running node to another session: network (unless it is on the
        session's network already), name, files."""
        pid = node.extra["pid"]
        if rename:
            # The waiting shell's prompt has the old name (bash reads the
            # host name once): the terminal starts a new one when opened.
            self._in_node(node, ["sh", "-c", "tmux kill-server 2>/dev/null; true"],
                          "could not stop the waiting shell")
        if move:
            host_if, _ = netplan.veth_names(node.id)
            run(["ip", "link", "set", host_if, "master", net.bridge])
            batch = (f"addr flush dev eth0\naddr add {node.address}/24 dev eth0\n"
                     f"route replace default via {net.gateway}\n")
            run(["nsenter", "-t", str(pid), "-n", "ip", "-batch", "-"], input=batch.encode())
        root = f"/proc/{pid}/root"
        if rename:
            run(["nsenter", "-t", str(pid), "-u", "hostname", spec.name])
            nodefs.write_in_root(root, "/etc/hostname", (spec.name + "\n").encode())
        nodefs.write_in_root(root, "/etc/hosts",
                             netplan.hosts_file(spec.name, node.address, peers).encode())
        if spec.files:
            self._extract_in_node(node, spec.files)

    def _start_shell(self, node: Node) -> None:
        """Start the node's terminal (its tmux session and login shell) now,
        as the terminal's first opening would. A failure only logs: the
        terminal then starts it when opened, as on a cold node."""
        try:
            self._in_node(node, tmux_make(TERMINAL), "could not start the shell")
        except (LabRuntimeError, subprocess.TimeoutExpired) as e:
            log.warning("pool node %s: its shell starts when its terminal opens: %s",
                        node.id, getattr(e, "reason", e))

    def _in_node(self, node: Node, argv: list, failed: str, stdin: bytes = b"") -> None:
        """Run `argv` in the node as its root (seccomp-confined, as a
        learner's commands are); a failure is a LabRuntimeError: `failed`
        and the command's stderr."""
        enter, preexec = self._enter(node, node.extra["pid"], argv)
        proc = subprocess.run(enter, input=stdin, capture_output=True, env=dict(NODE_ENV),
                              preexec_fn=preexec, timeout=START_TIMEOUT)
        if proc.returncode:
            raise LabRuntimeError(f"{failed} in the node: "
                                  + proc.stderr.decode(errors="replace").strip())

    def _extract_in_node(self, node: Node, files) -> None:
        """Place files in a running node, as its root (the host's root may not
        create files on the node's user-namespaced mounts)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path, content, *mode in files:
                if not str(path).startswith("/") or ".." in Path(path).parts:
                    raise LabRuntimeError(f"file path {path!r} must be absolute, without '..'",
                                          permanent=True)
                data = content.encode() if isinstance(content, str) else content
                info = tarfile.TarInfo(str(path).lstrip("/"))
                info.size, info.mode, info.mtime = len(data), mode[0] if mode else 0o644, time.time()
                tar.addfile(info, io.BytesIO(data))
        self._in_node(node, ["tar", "-x", "-C", "/"], "could not place the lesson's files",
                      buffer.getvalue())

    # ---- reaping ----------------------------------------------------------------
    def reap_dead(self) -> list:
        """Remove nodes whose processes died (a crash, a reboot) and half-made ones."""
        # in_use: the sessions of the nodes listed (one reaped now takes its
        # session's network along when it was the last; else the next round does)
        reaped, in_use = [], set()
        for directory in nodes_dir().iterdir():
            state = directory / "node.json"
            try:
                node = Node.from_json(json.loads(state.read_text()))
            except (OSError, ValueError, TypeError):
                # Half-made (no state yet): leave it a minute, it may be starting.
                # (Gone meanwhile: another process's stop removed it.)
                age = 0.0
                with contextlib.suppress(FileNotFoundError):
                    age = time.time() - directory.stat().st_mtime
                if age > 60:
                    self._stop(directory.name)
                    reaped.append(directory.name)
                continue
            pid = node.extra.get("pid")
            starting = node.extra.get("state") in ("starting", "claiming")
            in_use.add(node.session)
            if starting and time.time() - node.created < START_TIMEOUT + 30:
                continue
            # Being saved (runtime/builtin/persist.py): its engine stops on
            # purpose, and the save removes it when its disk is kept aside.
            saving = node.extra.get("state") == "saving"
            if saving and time.time() - node.extra.get("saving_since", 0) < SAVE_GRACE_SECONDS:
                continue
            if not pid or not self._owns(node, pid):
                self._stop(node.id)
                reaped.append(node.id)
        self._reap_empty_session_nets(in_use)
        return reaped

    # A session network made this long ago with no node in it is left over.
    # (One being set up has its first node listed under the same lock; the
    # age is a second guard, as for half-made nodes above.)
    EMPTY_NET_GRACE_SECONDS = 60

    def _reap_empty_session_nets(self, in_use: set) -> None:
        """Remove session networks (bridge, NAT rules, address range) whose last
        node went without taking them along: a node removed by hand, a stop
        that crashed, a claim racing a trim. Each holds one of the host's few
        hundred session subnets until then. `in_use`: sessions with nodes."""
        for path in sessions_dir().glob("*.json"):
            session = path.stem
            with contextlib.suppress(FileNotFoundError):
                if session in in_use or \
                        time.time() - path.stat().st_mtime < self.EMPTY_NET_GRACE_SECONDS:
                    continue
                try:
                    with host_lock():  # (it looks at the nodes again, under the lock)
                        self._remove_session_net_if_empty(session)
                except (OSError, ValueError, KeyError, LabRuntimeError) as exc:
                    log.warning("could not remove the network of session %s: %s", session, exc)
                    continue
                if not path.exists():
                    log.info("removed the network of session %s: no node was left in it", session)
