"""The built-in driver: nodes made of Linux namespaces, overlayfs, veth and bridges.

A node is a tree of processes in its own mount, pid, uts, ipc, net and cgroup
namespaces. Its root is an overlayfs over the shared read-only node image,
with a per-node upper directory; Docker's data sits on a plain per-node
directory. tini is PID 1 and runs dockerd. The host side keeps a JSON file
per node under nodes/<id>/node.json so any process (site, worker, CLI) can
find and manage every node.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Optional

from . import disks, firewall, hostexec, idmap, images, netplan, seccomp
from .model import Driver, ExecResult, LabFull, LabRuntimeError, Node, NodeNotFound, NodeSpec
from .paths import file_lock, nodes_dir, sessions_dir
from .pty_terminal import PtyTerminal

log = logging.getLogger(__name__)

NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE_ENV = {"PATH": NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm-256color",
            "USER": "root"}
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "dockerlab"
NODESTART = Path(__file__).with_name("nodestart.sh")
START_TIMEOUT = float(os.environ.get("LAB_NODE_START_TIMEOUT", "60"))
# Root in a node is an unprivileged uid range on the host, a different one per
# node: [UID_BASE + k*UID_RANGE, +UID_RANGE). Off only for debugging.
USERNS = os.environ.get("LAB_USERNS", "1") not in ("0", "false", "no", "off")
UID_BASE = int(os.environ.get("LAB_UID_BASE", str(10_000_000)))
UID_RANGE = 65536
MAX_UID_SLOTS = (2**32 - 2 - UID_BASE) // UID_RANGE
# Ready nodes wait in this session until a learner's start claims one.
POOL_SESSION = "warm-pool"


def _size(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    text = text.strip().lower().rstrip("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def node_limits() -> dict:
    """Per-node limits from the environment (LAB_NODE_MEMORY/DISK/PIDS/CPUS)."""
    try:
        return {"memory": _size(os.environ.get("LAB_NODE_MEMORY", "2g")),
                "disk": _size(os.environ.get("LAB_NODE_DISK", "20g")),
                "pids": int(os.environ.get("LAB_NODE_PIDS", "2048")),
                "cpus": float(os.environ.get("LAB_NODE_CPUS", "1.0"))}
    except (ValueError, IndexError) as e:
        raise LabRuntimeError(f"bad node limit setting (LAB_NODE_MEMORY/DISK/PIDS/CPUS): {e}",
                              permanent=True) from None


def capacity() -> dict:
    """The global limits: LAB_MAX_NODES and LAB_MEMORY_HEADROOM (memory kept free)."""
    try:
        return {"max_nodes": int(os.environ.get("LAB_MAX_NODES", "250")),
                "headroom": _size(os.environ.get("LAB_MEMORY_HEADROOM", "2g")),
                # What a new idle node takes, so the headroom still holds after it.
                "per_node": _size(os.environ.get("LAB_NODE_MEMORY_ESTIMATE", "96m"))}
    except (ValueError, IndexError) as e:
        raise LabRuntimeError(f"bad capacity setting (LAB_MAX_NODES/LAB_MEMORY_HEADROOM): {e}",
                              permanent=True) from None


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# Character devices a node may use (its /dev holds just these, and pty slaves).
ALLOWED_DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                   "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm")


def cgroup_limit_writes(limits: dict) -> list:
    """(hierarchy, file, value) writes that confine one node, in order."""
    memory = str(limits["memory"])
    return [
        ("memory", "memory.limit_in_bytes", memory),
        ("memory", "memory.memsw.limit_in_bytes", memory),  # no swap to escape into
        ("pids", "pids.max", str(limits["pids"])),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", str(int(limits["cpus"] * 100000))),
        ("devices", "devices.deny", "a"),
        *[("devices", "devices.allow", rule) for rule in ALLOWED_DEVICES],
    ]


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


def cgroup_hierarchies() -> list:
    """[(directory under /sys/fs/cgroup, mount options)] for every mounted hierarchy.

    Read from the host's mount table so it works on v1, v2 and hybrid hosts.
    """
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, _source, superopts = right.split()[:3]
            mountpoint = fields[4]
            if not mountpoint.startswith(str(CGROUP_ROOT) + "/") and mountpoint != str(CGROUP_ROOT):
                continue
            name = os.path.relpath(mountpoint, CGROUP_ROOT)
            if fstype == "cgroup2":
                found.append((name if name != "." else "unified", "cgroup2"))
            elif fstype == "cgroup":
                opts = [o for o in superopts.split(",") if o not in ("rw", "ro", "relatime")]
                found.append((name, ",".join(opts)))
    return found


def node_cgroup_dirs(node_id: str) -> list:
    dirs = []
    for name, _opts in cgroup_hierarchies():
        mountpoint = CGROUP_ROOT if name == "unified" and not (CGROUP_ROOT / name).exists() \
            else CGROUP_ROOT / name
        dirs.append(mountpoint / CGROUP_PARENT / node_id)
    return dirs


def _cgroup_procs(path: Path) -> list:
    pids = []
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def _prepare_cpuset(path: Path) -> None:
    # A v1 cpuset cgroup takes no task until cpus and mems are set; copy the parent's.
    for part in (path.parent, path):
        for knob in ("cpuset.cpus", "cpuset.mems"):
            target = part / knob
            if target.exists() and not target.read_text().strip():
                target.write_text((part.parent / knob).read_text())


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
    """Write (path, content[, mode]) files under `root` (a node's upper layer)."""
    for path, content, *mode in files:
        if not str(path).startswith("/") or ".." in Path(path).parts:
            raise LabRuntimeError(f"file path {path!r} must be absolute, without '..'",
                                  permanent=True)
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        target.chmod(mode[0] if mode else 0o644)


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


class BuiltinDriver(Driver):
    name = "builtin"

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

    def list_nodes(self) -> list:
        nodes = []
        for path in sorted(nodes_dir().glob("*/node.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                nodes.append(Node.from_json(json.loads(path.read_text())))
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
        node = self._load(node_id)
        pid = node.extra.get("pid")
        if not pid or not self._owns(node, pid):
            raise LabRuntimeError(f"node {node_id} is not running", permanent=True)
        return pid

    @staticmethod
    def _owns(node: Node, pid: int) -> bool:
        """Is host `pid` still this node's init (and not a reused pid)?"""
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                return f"/{CGROUP_PARENT}/{node.id}" in f.read()
        except OSError:
            return False

    # ---- sessions -------------------------------------------------------------
    def _session_file(self, session: str) -> Path:
        return sessions_dir() / f"{session}.json"

    def _ensure_session_net(self, session: str) -> netplan.SessionNet:
        """Allocate the session's subnet and make its bridge and NAT (caller holds the lock)."""
        path = self._session_file(session)
        if path.exists():
            net = netplan.session_net(json.loads(path.read_text())["index"])
        else:
            used = set()
            for other in sessions_dir().glob("*.json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    used.add(json.loads(other.read_text())["index"])
            free = [i for i in range(1, netplan.MAX_SESSIONS + 1) if i not in used]
            if not free:
                raise LabRuntimeError("every session network is in use: the lab is full")
            net = netplan.session_net(free[0])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"index": net.index, "session": session}))
        # A port-less bridge just to hold the registry's address (no dummy
        # interfaces on every kernel).
        if not Path("/sys/class/net/labreg0").exists():
            run(["ip", "-batch", "-"], input=(
                "link add labreg0 type bridge\n"
                f"addr add {netplan.registry_address()}/32 dev labreg0\n"
                "link set labreg0 up\n").encode())
        if not Path(f"/sys/class/net/{net.bridge}").exists():
            run(["ip", "link", "add", net.bridge, "type", "bridge"])
            # No IPv6 on lab bridges: a link-local address would let nodes reach
            # host services listening on [::] around the IPv4 firewall.
            _disable_ipv6(net.bridge)
            run(["ip", "-batch", "-"], input=(f"addr add {net.gateway}/24 dev {net.bridge}\n"
                                              f"link set {net.bridge} up\n").encode())
            firewall.apply()
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        for table, chain, spec in netplan.nat_rules(net):
            if run(["iptables", "-w", "-t", table, "-C", chain, *spec], check=False).returncode:
                run(["iptables", "-w", "-t", table, "-I", chain, *spec])
        return net

    def _remove_session_net_if_empty(self, session: str) -> None:
        path = self._session_file(session)
        if not path.exists() or any(n.session == session for n in self.list_nodes()):
            return
        net = netplan.session_net(json.loads(path.read_text())["index"])
        # Every rule tagged with this bridge, also ones an older version made.
        for table in ("nat", "filter"):
            listing = run(["iptables", "-w", "-t", table, "-S"], check=False).stdout.decode()
            for line in listing.splitlines():
                if f"lab:{net.bridge}" in line.split() or f'"lab:{net.bridge}"' in line:
                    spec = shlex.split(line)
                    run(["iptables", "-w", "-t", table, "-D", *spec[1:]], check=False)
        if Path(f"/sys/class/net/{net.bridge}").exists():
            run(["ip", "link", "del", net.bridge], check=False)
        path.unlink(missing_ok=True)

    # ---- start ----------------------------------------------------------------
    async def start(self, spec: NodeSpec, on_progress=None) -> Node:
        return await asyncio.to_thread(self._start, spec, on_progress or (lambda event: None))

    def _start(self, spec: NodeSpec, progress) -> Node:
        problems = self.preflight()
        if problems:
            raise LabRuntimeError("; ".join(problems), permanent=True)
        if spec.session != POOL_SESSION:
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

    def _cold_start(self, spec: NodeSpec, progress) -> Node:
        started = time.monotonic()
        image = images.current_image()
        node_id = secrets.token_hex(6)
        directory = self._node_dir(node_id)
        progress({"progress": 5, "message": "preparing the node's file system"})
        try:
            with host_lock():
                if any(n.session == spec.session and n.name == spec.name for n in self.list_nodes()):
                    raise LabRuntimeError(f"session {spec.session} already has a node called "
                                          f"{spec.name}", permanent=True)
                self._check_capacity()
                net = self._ensure_session_net(spec.session)
                peers = {n.name: n.address for n in self.list_nodes() if n.session == spec.session}
                taken = set(peers.values())
                slot = next(s for s in range(1, netplan.MAX_NODES_PER_SESSION + 1)
                            if net.node_address(s) not in taken)
                address = net.node_address(slot)
                (directory / "lower").mkdir(parents=True, exist_ok=True)
                uid_base = self._free_uid_base() if USERNS else 0
                node = Node(id=node_id, session=spec.session, name=spec.name, driver=self.name,
                            address=address, created=time.time(),
                            extra={"image": str(image), "bridge": net.bridge,
                                   "gateway": net.gateway, "state": "starting",
                                   "uid_base": uid_base})
                self._save(node)
            progress({"progress": 10, "message": "making the node's disk"})
            self._make_disk(node, directory)
            self._write_node_files(directory / "fs", spec, net, address, peers)
            progress({"progress": 20, "message": "connecting the node to its network"})
            with self._namespace_holder(node) as holder:
                self._prepare_ownership(node, image, directory, holder)
                self._make_netns(node, net, holder)
                progress({"progress": 35, "message": "starting the node"})
                keeper, pid = self._launch(node, image, directory, holder)
            node = Node(**{**node.to_json(), "extra": {**node.extra, "pid": pid, "keeper": keeper,
                                                      "state": "starting"}})
            self._save(node)
            progress({"progress": 50, "message": "waiting for the Docker engine"})
            self._wait_for_engine(node, pid, keeper)
            # The node holds its own copies of its disk and image mounts now.
            self._release_host_mounts(directory)
            node = Node(**{**node.to_json(), "extra": {**node.extra, "state": "running",
                           "start_seconds": round(time.monotonic() - started, 3)}})
            self._save(node)
            self._refresh_session_hosts(spec.session)
        except BaseException as e:
            log.warning("node %s (%s/%s) failed to start: %s", node_id, spec.session, spec.name, e)
            with contextlib.suppress(Exception):
                self._stop(node_id)
            if isinstance(e, LabRuntimeError):
                raise
            raise LabRuntimeError(f"the node could not start: {e}") from e
        progress({"progress": 100, "message": "ready"})
        log.info("node %s (%s/%s) ready in %.2fs", node_id, spec.session, spec.name,
                 time.monotonic() - started)
        return node

    def _write_node_files(self, directory: Path, spec: NodeSpec, net, address: str, peers: dict):
        etc = directory / "upper/etc"
        (etc / "hostname").write_text(spec.name + "\n")
        (etc / "hosts").write_text(netplan.hosts_file(spec.name, address, peers))
        (etc / "resolv.conf").write_text(self._resolv_conf())
        (etc / "docker/daemon.json").write_text(json.dumps(netplan.daemon_json(net), indent=1))
        _place_files(directory / "upper", spec.files)

    @staticmethod
    def _resolv_conf() -> str:
        """The host's resolvers, as long as a node can reach them through NAT."""
        servers = []
        with contextlib.suppress(OSError), open("/etc/resolv.conf") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and not parts[1].startswith("127."):
                    servers.append(parts[1])
        if not servers:
            raise LabRuntimeError("the host's /etc/resolv.conf names no resolver a node can "
                                  "reach (only loopback ones): set a real nameserver",
                                  permanent=True)
        return "".join(f"nameserver {s}\n" for s in servers)

    def _free_uid_base(self) -> int:
        """The first uid range no node uses (caller holds the lock)."""
        used = {n.extra.get("uid_base") for n in self.list_nodes()}
        for k in range(MAX_UID_SLOTS):
            base = UID_BASE + k * UID_RANGE
            if base not in used:
                return base
        raise LabRuntimeError("every node uid range is in use: the lab is full")

    @contextlib.contextmanager
    def _namespace_holder(self, node: Node):
        """A placeholder process owning the node's new user and network namespaces.

        The host sets them up (uid map, veth, addresses) before anything runs
        in them; the node's init then joins them and the holder goes away.
        """
        argv = ["unshare", "--net", *(["--user"] if USERNS else []), "--", "sleep", "infinity"]
        holder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            ours = os.readlink("/proc/self/ns/net")
            deadline = time.monotonic() + 5
            while True:
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{holder.pid}/ns/net") != ours:
                        break
                if holder.poll() is not None or time.monotonic() > deadline:
                    raise LabRuntimeError("could not create the node's namespaces (unshare)")
                time.sleep(0.001)
            if USERNS:
                base = node.extra["uid_base"]
                for name in ("uid_map", "gid_map"):
                    Path(f"/proc/{holder.pid}/{name}").write_text(f"0 {base} {UID_RANGE}\n")
            yield holder.pid
        finally:
            holder.kill()
            holder.wait()

    def _prepare_ownership(self, node: Node, image: Path, directory: Path, holder: int) -> None:
        """Hand the node's directories to its root and map the image into its range."""
        if USERNS:
            base = node.extra["uid_base"]
            for sub in ("upper", "work", "docker", "root"):
                for path in [directory / "fs" / sub, *(directory / "fs" / sub).rglob("*")]:
                    os.lchown(path, base, base)
            idmap.idmapped_bind(str(image), str(directory / "lower"),
                                f"/proc/{holder}/ns/user")
        else:
            run(["mount", "--bind", "-o", "ro", str(image), str(directory / "lower")])

    def _make_disk(self, node: Node, directory: Path) -> None:
        """The node's own file system for its writable layer and Docker's data
        (runtime/disks.py). The node keeps the mount in its own namespace; the
        kernel frees the loop device when the node ends."""
        disks.make(directory, node_limits()["disk"], ("upper/etc/docker", "work", "docker", "root"))

    @staticmethod
    def _release_host_mounts(directory: Path) -> None:
        disks.release([directory / "lower", directory / "fs"])

    def _make_netns(self, node: Node, net, holder: int) -> None:
        host_if, node_if = netplan.veth_names(node.id)
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if])
        run(["ip", "link", "set", node_if, "netns", str(holder)])
        run(["ip", "link", "set", host_if, "master", net.bridge, "up"])
        _disable_ipv6(node_if, netns=f"/proc/{holder}/ns/net")
        batch = (f"link set lo up\nlink set {node_if} name eth0\n"
                 f"addr add {node.address}/24 dev eth0\nlink set eth0 up\n"
                 f"route add default via {net.gateway}\n")
        run(["nsenter", f"--net=/proc/{holder}/ns/net", "ip", "-batch", "-"], input=batch.encode())

    def _launch(self, node: Node, image: Path, directory: Path, holder: int) -> tuple:
        hierarchies = cgroup_hierarchies()
        cg_dirs = node_cgroup_dirs(node.id)
        for path in cg_dirs:
            path.mkdir(parents=True, exist_ok=True)
            if path.parent.parent.name == "cpuset" or (path.parent.parent / "cpuset.cpus").exists():
                _prepare_cpuset(path)
            if USERNS:
                # The node's root may make sub-cgroups (its containers) and move
                # tasks, but not touch the limits set on its own cgroup.
                base = node.extra["uid_base"]
                for name in ("", "cgroup.procs", "tasks", "cgroup.subtree_control",
                             "cgroup.threads"):
                    with contextlib.suppress(FileNotFoundError):
                        os.chown(path / name, base, base)
        self._apply_limits(cg_dirs)
        cg_mounts = " ".join(f"{name}:{opts}" for name, opts in hierarchies)
        # The launcher joins the node's cgroups first, so the new cgroup namespace
        # is rooted at them; then it joins the holder's user and network
        # namespaces and makes the rest. `setsid -f` detaches it from this
        # process: the node outlives whichever process (site, worker, CLI)
        # started it, and the host's init reaps it.
        pidfile = directory / "keeper.pid"
        script = directory / "nodestart.sh"
        shutil.copyfile(NODESTART, script)
        join = ("for c in $LAB_CGROUPS; do echo $$ > \"$c/cgroup.procs\"; done; "
                "echo $$ > \"$LAB_PIDFILE\"; exec \"$@\"")
        enter = ["nsenter", f"--net=/proc/{holder}/ns/net"]
        if USERNS:
            enter += [f"--user=/proc/{holder}/ns/user", "--setuid=0", "--setgid=0"]
        argv = ["setsid", "-f", "/bin/sh", "-c", join, "launch", *enter,
                "unshare", "--mount", "--uts", "--ipc", "--pid", "--cgroup", "--fork",
                # A copy beside the node's state: the node's root may not be able
                # to read the project's directory.
                "/bin/sh", str(script),
                str(directory / "lower"), str(directory / "fs"), node.name, cg_mounts]
        with open(directory / "console.log", "ab") as console:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                           close_fds=True, check=True, preexec_fn=seccomp.install,
                           env={"PATH": os.environ.get("PATH", NODE_PATH),
                                "LAB_CGROUPS": " ".join(str(p) for p in cg_dirs),
                                "LAB_PIDFILE": str(pidfile)})
        deadline = time.monotonic() + 10
        keeper = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                keeper = keeper or int(pidfile.read_text())
                kids = Path(f"/proc/{keeper}/task/{keeper}/children").read_text().split()
                if kids:
                    return keeper, int(kids[0])
            if keeper and not _pid_alive(keeper):
                break
            time.sleep(0.002)
        raise LabRuntimeError("the node's init did not start: " + self._console_tail(node.id))

    @staticmethod
    def _apply_limits(cg_dirs: list) -> None:
        by_hierarchy = {path.parent.parent.name: path for path in cg_dirs}
        for hierarchy, name, value in cgroup_limit_writes(node_limits()):
            path = by_hierarchy.get(hierarchy)
            if path is None or not (path / name).exists():
                continue  # this host lacks the controller (or swap accounting)
            try:
                (path / name).write_text(value)
            except OSError as e:
                raise LabRuntimeError(f"could not set {name}={value} on the node's cgroup: {e}")

    def _console_tail(self, node_id: str) -> str:
        with contextlib.suppress(OSError):
            text = (self._node_dir(node_id) / "console.log").read_text(errors="replace").strip()
            return text[-1500:] or "(no output)"
        return "(no output)"

    def _wait_for_engine(self, node: Node, pid: int, keeper: int) -> None:
        # /var/run is an absolute symlink to /run, which /proc/PID/root would
        # resolve against the host's root: name the real path.
        sock_path = f"/proc/{pid}/root/run/docker.sock"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                raise LabRuntimeError("the node stopped while starting: "
                                      + self._console_tail(node.id) + self._dockerd_log(pid, node))
            # Until the node's init has entered its own root, that path is the
            # host's /run/docker.sock: an operator's own engine there answered
            # for the node, which was then "ready" before it had a root.
            if _has_own_root(pid) and hostexec.engine_answers(sock_path):
                return
            time.sleep(0.02)
        raise LabRuntimeError(f"the node's Docker engine did not answer within {START_TIMEOUT:.0f}s"
                              + self._dockerd_log(pid, node))

    def _dockerd_log(self, pid: int, node: Node) -> str:
        path = Path(f"/proc/{pid}/root/var/log/dockerd.log")
        with contextlib.suppress(OSError):
            return "\ndockerd said: " + path.read_text(errors="replace")[-1500:]
        return ""

    def _refresh_session_hosts(self, session: str) -> None:
        """Every node of a session knows every other one by name."""
        nodes = [n for n in self.list_nodes() if n.session == session]
        peers = {n.name: n.address for n in nodes}
        for n in nodes:
            pid = n.extra.get("pid")
            # Through the node's own mounts: its disk is not mounted on the host.
            with contextlib.suppress(OSError):
                if pid and self._owns(n, pid):
                    Path(f"/proc/{pid}/root/etc/hosts").write_text(
                        netplan.hosts_file(n.name, n.address, peers))

    # ---- warm pool ------------------------------------------------------------
    def pool_nodes(self) -> list:
        """Ready pool nodes; dead ones (a host restart) are the reaper's, not the pool's."""
        return [n for n in self.list_nodes()
                if n.session == POOL_SESSION and n.extra.get("state") == "running"
                and self._owns(n, n.extra.get("pid"))]

    def fill_pool(self, size: int) -> list:
        """Start pool nodes until `size` wait ready; stops early when the lab is full."""
        started = []
        while len(self.pool_nodes()) < size:
            try:
                node = self._cold_start(NodeSpec(session=POOL_SESSION,
                                                 name="warm-" + secrets.token_hex(4)),
                                        lambda event: None)
            except LabFull as e:
                log.info("warm pool stays at %d: %s", len(self.pool_nodes()), e.reason)
                break
            started.append(node.id)
        return started

    def _claim(self, spec: NodeSpec, progress) -> Optional[Node]:
        """Hand a ready pool node to `spec`'s session, or None if the pool is empty."""
        began = time.monotonic()
        with host_lock():
            if any(n.session == spec.session and n.name == spec.name for n in self.list_nodes()):
                raise LabRuntimeError(f"session {spec.session} already has a node called "
                                      f"{spec.name}", permanent=True)
            node = next(iter(self.pool_nodes()), None)
            if node is None:
                return None
            net = self._ensure_session_net(spec.session)
            peers = {n.name: n.address for n in self.list_nodes() if n.session == spec.session}
            taken = set(peers.values())
            slot = next(s for s in range(1, netplan.MAX_NODES_PER_SESSION + 1)
                        if net.node_address(s) not in taken)
            node = Node(**{**node.to_json(), "session": spec.session, "name": spec.name,
                           "address": net.node_address(slot),
                           "extra": {**node.extra, "bridge": net.bridge, "gateway": net.gateway,
                                     "state": "claiming"}})
            self._save(node)
        try:
            progress({"progress": 50, "message": "handing you a ready node"})
            self._reconfigure(node, spec, net, peers)
            node = Node(**{**node.to_json(), "extra": {**node.extra, "state": "running",
                           "start_seconds": round(time.monotonic() - began, 3)}})
            self._save(node)
            self._refresh_session_hosts(spec.session)
            with host_lock():
                self._remove_session_net_if_empty(POOL_SESSION)
        except BaseException as e:
            log.warning("claiming pool node %s failed: %s", node.id, e)
            with contextlib.suppress(Exception):
                self._stop(node.id)
            return None  # the caller falls back to a cold start
        progress({"progress": 100, "message": "ready"})
        log.info("node %s (%s/%s) claimed from the pool in %.3fs", node.id, spec.session,
                 spec.name, time.monotonic() - began)
        return node

    def _reconfigure(self, node: Node, spec: NodeSpec, net, peers: dict) -> None:
        """Move a running node to another session: network, name, registry, files."""
        pid = node.extra["pid"]
        host_if, _ = netplan.veth_names(node.id)
        run(["ip", "link", "set", host_if, "master", net.bridge])
        batch = (f"addr flush dev eth0\naddr add {node.address}/24 dev eth0\n"
                 f"route replace default via {net.gateway}\n")
        run(["nsenter", "-t", str(pid), "-n", "ip", "-batch", "-"], input=batch.encode())
        run(["nsenter", "-t", str(pid), "-u", "hostname", spec.name])
        root = Path(f"/proc/{pid}/root")
        (root / "etc/hostname").write_text(spec.name + "\n")
        (root / "etc/hosts").write_text(netplan.hosts_file(spec.name, node.address, peers))
        if spec.files:
            self._extract_in_node(node, spec.files)
        # The registry mirror's address is the same in every session
        # (netplan.registry_address), so the node's engine needs no reload.

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
        proc = subprocess.run(self._enter_argv(node.extra["pid"], node.id, ["tar", "-x", "-C", "/"]),
                              input=buffer.getvalue(), capture_output=True, env=dict(NODE_ENV),
                              preexec_fn=seccomp.install)
        if proc.returncode:
            raise LabRuntimeError("could not place the lesson's files in the node: "
                                  + proc.stderr.decode(errors="replace").strip())

    # ---- reaping ----------------------------------------------------------------
    def reap_dead(self) -> list:
        """Remove nodes whose processes died (a crash, a reboot) and half-made ones."""
        reaped = []
        for directory in nodes_dir().iterdir():
            state = directory / "node.json"
            try:
                node = Node.from_json(json.loads(state.read_text()))
            except (OSError, ValueError, TypeError):
                # Half-made (no state yet): leave it a minute, it may be starting.
                if time.time() - directory.stat().st_mtime > 60:
                    self._stop(directory.name)
                    reaped.append(directory.name)
                continue
            pid = node.extra.get("pid")
            starting = node.extra.get("state") in ("starting", "claiming")
            if starting and time.time() - node.created < START_TIMEOUT + 30:
                continue
            if not pid or not self._owns(node, pid):
                self._stop(node.id)
                reaped.append(node.id)
        return reaped

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
        # Kill everything in the node's cgroups (the nested containers too)
        # until nothing is left; killing PID 1 alone would do, but the cgroup
        # is the truth if the init was already gone.
        deadline = time.monotonic() + 15
        while True:
            pids = set()
            for path in cg_dirs:
                if path.exists():
                    pids.update(_cgroup_procs(path))
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

    @staticmethod
    def _remove_cgroup_tree(path: Path) -> None:
        if not path.exists():
            return
        for sub in sorted((p for p in path.rglob("*") if p.is_dir()),
                          key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
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

    def _enter_argv(self, pid: int, node_id: str, argv: list) -> list:
        in_userns = bool(self._load(node_id).extra.get("uid_base"))
        """Host argv that runs `argv` inside the node: its cgroups, namespaces and root."""
        cg = " ".join(str(p) for p in node_cgroup_dirs(node_id))
        join = "for c in %s; do echo $$ > \"$c/cgroup.procs\"; done; exec \"$@\"" % cg
        return ["/bin/sh", "-c", join, "enter",
                "nsenter", "-t", str(pid), *(["-U"] if in_userns else []),
                "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--", *argv]

    async def exec(self, node_id, argv, timeout=30.0, input=None, on_output=None) -> ExecResult:
        pid = self._running_pid(node_id)
        limit, inner = hostexec.inner_timeout(argv, timeout)
        return await hostexec.run_limited(self._enter_argv(pid, node_id, inner), limit, timeout,
                                          input=input, on_output=on_output, env=dict(NODE_ENV),
                                          preexec_fn=seccomp.install)

    async def open_terminal(self, node_id, cols=80, rows=24, name="main"):
        pid = self._running_pid(node_id)
        if not name.replace("-", "").isalnum():
            raise LabRuntimeError(f"invalid terminal name {name!r}", permanent=True)
        # tmux keeps the shell (and its screen) inside the node, so a new
        # attachment after a page reload or a site restart finds it again.
        argv = ["setsid", "-c", *self._enter_argv(pid, node_id,
                ["tmux", "-u", "new-session", "-A", "-s", name, "-c", "/root"])]
        return await PtyTerminal.spawn(argv, cols, rows, env=dict(NODE_ENV),
                                       preexec_fn=seccomp.install)

