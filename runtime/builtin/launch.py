"""A cold start: uid range, namespaces, disk, network, cgroups, and nodestart.sh
becoming the node's PID 1."""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

from .. import disks, idmap, images, netplan, nodefs, seccomp
from ..limits import node_limits
from ..model import LabRuntimeError, Node, NodeSpec
from .common import (host_lock, name_taken, MAX_UID_SLOTS, NODE_PATH, NODESTART, _pid_alive,
                     run, UID_BASE, UID_RANGE, USERNS, USERNS_OFF_WARNING)
from .cgroups import cgroup_limit_writes, cgroup_hierarchies, node_cgroup_dirs, _prepare_cpuset

log = logging.getLogger(__name__)


def mount_table(lower: Path, fs: Path, hierarchies) -> str:
    """The fstab file nodestart.sh mounts (one `mount -a -T`), as text: the
    node's root (overlayfs over the image; Docker's data beside it, since
    overlay2 cannot stack on overlayfs), proc, sys, cgroups; /dev, a directory
    on the node's disk (`node_dev_dir`) with the host's device nodes bound on
    its files; devpts, shm, mqueue, /run."""
    root = fs / "root"
    lines = [f"overlay {root} overlay lowerdir={lower},upperdir={fs / 'upper'},"
             f"workdir={fs / 'work'} 0 0",
             f"{fs / 'docker'} {root}/var/lib/docker none bind 0 0",
             f"proc {root}/proc proc nosuid,nodev,noexec 0 0",
             f"sysfs {root}/sys sysfs nosuid,nodev,noexec 0 0",
             f"cgroup {root}/sys/fs/cgroup tmpfs mode=755,nosuid,nodev,noexec 0 0"]
    for name, opts in hierarchies:
        if opts == "cgroup2":
            lines.append(f"cgroup2 {root}/sys/fs/cgroup/{name} cgroup2 "
                         "nosuid,nodev,noexec,X-mount.mkdir 0 0")
        else:
            lines.append(f"cgroup {root}/sys/fs/cgroup/{name} cgroup "
                         f"nosuid,nodev,noexec,{opts},X-mount.mkdir 0 0")
    lines.append(f"{fs / 'dev'} {root}/dev none bind 0 0")
    lines += [f"/dev/{d} {root}/dev/{d} none bind 0 0" for d in DEV_FILES]
    lines += [f"devpts {root}/dev/pts devpts newinstance,ptmxmode=0666,mode=0620,gid=5,"
              "nosuid,noexec 0 0",
              f"shm {root}/dev/shm tmpfs mode=1777,nosuid,nodev 0 0",
              f"mqueue {root}/dev/mqueue mqueue nosuid,nodev,noexec 0 0",
              f"tmpfs {root}/run tmpfs mode=755,nosuid,nodev 0 0"]
    return "\n".join(lines) + "\n"


# The node's /dev: the host's character devices a program expects (bound on
# empty files: a user namespace may not mknod), the usual links, mount points.
DEV_FILES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
DEV_DIRS = ("pts", "shm", "mqueue")


def node_dev_dir(fs: Path, owner: int) -> None:
    """Fill `fs`/dev (on the node's disk, before it starts) and the root's
    /.oldroot (pivot_root's), owned by the node's root: made here, nodestart.sh
    runs no touch, ln or mkdir for them (a process each)."""
    dev = fs / "dev"
    for d in ("", *DEV_DIRS):
        (dev / d).mkdir(exist_ok=True)
    for name in DEV_FILES:
        (dev / name).touch()
    for name, target in DEV_LINKS:
        if not (dev / name).is_symlink():
            os.symlink(target, dev / name)
    (fs / "upper/.oldroot").mkdir(parents=True, exist_ok=True)
    for path in (dev, *dev.iterdir(), fs / "upper/.oldroot"):
        os.lchown(path, owner, owner)


class _Background:
    """fn(*args) in a thread of its own; result() waits and re-raises its error."""

    def __init__(self, fn, *args):
        self._error: BaseException | None = None
        self.seconds = 0.0

        def run_it():
            began = time.monotonic()
            try:
                self._value = fn(*args)
            except BaseException as e:  # handed to the caller by result()
                self._error = e
            self.seconds = time.monotonic() - began

        self._thread = threading.Thread(target=run_it, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class _Launcher:
    """The node's launcher, started, waiting for the line that lets it go on."""

    def __init__(self, pipe, pidfile: Path):
        self._pipe, self._pidfile = pipe, pidfile

    def cancel(self) -> None:
        """It ends without starting anything (repeatable)."""
        with contextlib.suppress(OSError):
            self._pipe.close()

    def go(self, node: Node, driver) -> tuple:
        """Let it start the node's init: (keeper pid, init's pid)."""
        try:
            self._pipe.write(b"go\n")
            self._pipe.flush()
        except OSError:
            pass  # it ended already: said below
        finally:
            self.cancel()
        deadline = time.monotonic() + 10
        keeper = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                keeper = keeper or int(self._pidfile.read_text())
                kids = Path(f"/proc/{keeper}/task/{keeper}/children").read_text().split()
                if kids:
                    return keeper, int(kids[0])
            if keeper and not _pid_alive(keeper):
                break
            time.sleep(0.001)
        raise LabRuntimeError("the node's init did not start: " + driver._console_tail(node.id))


class Launcher:
    """BuiltinDriver's cold start (a mixin)."""

    def _cold_start(self, spec: NodeSpec, progress) -> Node:
        started = time.monotonic()
        # Wall-clock marks (time.time(): the same clock as dockerd's log lines),
        # kept in extra["marks"] so the bench can say where a cold start went.
        marks = [("begin", time.time())]
        image = images.current_image()
        node_id = secrets.token_hex(6)
        directory = self._node_dir(node_id)
        progress({"progress": 5, "message": "preparing the node's file system"})
        # A new node's disk (a copy and a loop mount: ~20 ms, mostly waiting for
        # the kernel) needs only its directory: it is made while the state is.
        # (Without node.json the directory is no node yet; the reaper leaves a
        # half-made one a minute.)
        disk = None
        if not spec.restore:
            directory.mkdir(parents=True)
            disk = _Background(self._make_disk, None, directory)
        try:
            with host_lock():
                if name_taken(self.list_nodes(), spec.session, spec.name):
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
                if not USERNS:
                    log.warning("node %s: %s", node_id, USERNS_OFF_WARNING)
                node = Node(id=node_id, session=spec.session, name=spec.name, driver=self.name,
                            address=address, created=time.time(),
                            extra={"image": str(image), "bridge": net.bridge,
                                   "gateway": net.gateway, "state": "starting",
                                   "uid_base": uid_base})
                self._save(node)
            marks.append(("state", time.time()))
            restored = None
            # The network (veth, bridge, addresses: a handful of `ip` runs)
            # only needs the namespace holder: it is made while the disk is,
            # and the node's init may start before it is done (its engine
            # needs no eth0 to start); it is waited for before the holder goes.
            with self._namespace_holder(node) as holder:
                marks.append(("namespaces", time.time()))
                network = _Background(self._make_netns, node, net, holder)
                # The launcher too (cgroups, then a process that joins them:
                # some 20 ms, waiting for the kernel more than working).
                starting = _Background(self._launcher, node, directory, holder)
                launcher = None
                try:
                    if spec.restore:
                        progress({"progress": 10, "message": "bringing back your saved machine"})
                        restored = self._restore_disk(node, directory, spec.restore, image)
                    else:
                        progress({"progress": 10, "message": "making the node's disk"})
                        disk.result()
                    marks.append(("disk", time.time()))
                    self._write_node_files(directory / "fs", spec, net, address, peers)
                    marks.append(("files", time.time()))
                    node_dev_dir(directory / "fs", node.extra["uid_base"])
                    self._prepare_ownership(node, image, directory, holder, restored)
                    marks.append(("ownership", time.time()))
                    progress({"progress": 35, "message": "starting the node"})
                    launcher = starting.result()
                    marks.append(("launcher", time.time()))
                    keeper, pid = launcher.go(node, self)
                    marks.append(("launched", time.time()))
                finally:
                    with contextlib.suppress(BaseException):
                        (launcher or starting.result()).cancel()  # (after go: nothing)
                    network.wait()  # the holder must outlive its `ip` runs
                progress({"progress": 40, "message": "connecting the node to its network"})
                network.result()
                marks.append(("network joined", time.time()))
                parallel = {"network": round(network.seconds * 1000, 1),
                            "launcher": round(starting.seconds * 1000, 1)}
            node = Node(**{**node.to_json(), "extra": {**node.extra, "pid": pid, "keeper": keeper,
                                                      "state": "starting"}})
            self._save(node)
            progress({"progress": 50, "message": "waiting for the Docker engine"})
            self._wait_for_engine(node, pid, keeper)
            marks.append(("ready", time.time()))
            # The node holds its own copies of its disk and image mounts now.
            self._release_host_mounts(directory)
            if restored is not None:
                progress({"progress": 90, "message": "starting the containers that were running"})
                self._resume_containers(node, restored)
            marks.append(("end", time.time()))
            node = Node(**{**node.to_json(), "extra": {**node.extra, "state": "running",
                           "start_seconds": round(time.monotonic() - started, 3),
                           "restored": spec.restore,
                           "marks": [[k, round(t, 6)] for k, t in marks],
                           "parallel": parallel}})
            self._save(node)
            self._refresh_session_hosts(spec.session)
        except BaseException as e:
            log.warning("node %s (%s/%s) failed to start: %s", node_id, spec.session, spec.name, e)
            if disk is not None:
                disk.wait()  # its mount must be there to be released
            with contextlib.suppress(Exception):
                self._stop(node_id)
            if isinstance(e, LabRuntimeError):
                raise
            raise LabRuntimeError(f"the node could not start: {e}") from e
        progress({"progress": 100, "message": "ready"})
        log.info("node %s (%s/%s) ready in %.2fs", node_id, spec.session, spec.name,
                 time.monotonic() - started)
        return node

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

    def _prepare_ownership(self, node: Node, image: Path, directory: Path, holder: int,
                           restored: dict | None = None) -> None:
        """Hand the node's directories to its root and map the image into its range."""
        if USERNS and restored is not None:
            self._restored_ownership(directory, restored, node.extra["uid_base"])
            idmap.idmapped_bind(str(image), str(directory / "lower"), f"/proc/{holder}/ns/user")
        elif USERNS:
            base = node.extra["uid_base"]
            for sub in ("upper", "work", "docker", "root"):
                for path in [directory / "fs" / sub, *(directory / "fs" / sub).rglob("*")]:
                    os.lchown(path, base, base)
            idmap.idmapped_bind(str(image), str(directory / "lower"),
                                f"/proc/{holder}/ns/user")
        else:
            run(["mount", "--bind", "-o", "ro", str(image), str(directory / "lower")])

    def _make_disk(self, node: Node | None, directory: Path) -> None:
        """The node's own file system for its writable layer and Docker's data
        (runtime/disks.py). The node keeps the mount in its own namespace; the
        kernel frees the loop device when the node ends."""
        fs = directory / "fs"
        disks.copy_sparse(disks.template(node_limits()["disk"]), directory / "disk.img")
        fs.mkdir(exist_ok=True)
        run(["mount", "-o", disks.MOUNT_OPTIONS, str(directory / "disk.img"), str(fs)])
        for sub in ("upper/etc/docker", "work", "docker", "root"):
            (fs / sub).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _release_host_mounts(directory: Path) -> None:
        disks.release([directory / "lower", directory / "fs"])

    def _make_netns(self, node: Node, net, holder: int) -> None:
        """The veth pair, its host end on the session bridge, the node's end as
        eth0 (IPv6 off) with its address and route: two `ip -batch` runs (each
        process here competes with the node's start for the host's CPUs)."""
        host_if, node_if = netplan.veth_names(node.id)
        run(["ip", "-batch", "-"], input=(
            f"link add {host_if} type veth peer name {node_if} netns {holder}\n"
            f"link set {host_if} master {net.bridge} up\n").encode())
        batch = (f"link set lo up\nlink set {node_if} name eth0\n"
                 f"addr add {node.address}/24 dev eth0\nlink set eth0 up\n"
                 f"route add default via {net.gateway}\n")
        ipv6 = f"/proc/sys/net/ipv6/conf/{node_if}/disable_ipv6"
        run(["nsenter", f"--net=/proc/{holder}/ns/net", "/bin/sh", "-c",
             f"if [ -e {ipv6} ]; then echo 1 > {ipv6}; fi; exec ip -batch -"],
            input=batch.encode())

    def _launch(self, node: Node, image: Path, directory: Path, holder: int,
                marks: list | None = None) -> tuple:
        """Start the node's init now: (keeper pid, init's pid)."""
        launcher = self._launcher(node, directory, holder, marks)
        return launcher.go(node, self)

    def _launcher(self, node: Node, directory: Path, holder: int,
                  marks: list | None = None) -> "_Launcher":
        """The node's cgroups, and the process that becomes its init, waiting
        for `go()`: it joins the cgroups (moving a process between cgroups
        waits for an RCU grace period, ~14 ms here) and is ready to enter the
        namespaces while the disk is made, off the start's path."""
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
        if marks is not None:
            marks.append(("cgroups", time.time()))
        table = directory / "mounts.fstab"
        table.write_text(mount_table(directory / "lower", directory / "fs", cgroup_hierarchies()))
        # The launcher joins the node's cgroups first, so the new cgroup namespace
        # is rooted at them; then, once told to go (a line on its stdin: the
        # node's disk and files are ready), it joins the holder's user and
        # network namespaces and makes the rest. `setsid -f` detaches it from
        # this process: the node outlives whichever process (site, worker, CLI)
        # started it, and the host's init reaps it. No line (this process gave
        # up, or died): it ends.
        pidfile = directory / "keeper.pid"
        script = directory / "nodestart.sh"
        shutil.copyfile(NODESTART, script)
        join = ("for c in $LAB_CGROUPS; do echo $$ > \"$c/cgroup.procs\"; done; "
                "echo $$ > \"$LAB_PIDFILE\"; read go || exit 1; exec \"$@\" </dev/null")
        enter = ["nsenter", f"--net=/proc/{holder}/ns/net"]
        if USERNS:
            enter += [f"--user=/proc/{holder}/ns/user", "--setuid=0", "--setgid=0"]
        argv = ["setsid", "-f", "/bin/sh", "-c", join, "launch", *enter,
                "unshare", "--mount", "--uts", "--ipc", "--pid", "--cgroup", "--fork",
                # A copy beside the node's state: the node's root may not be able
                # to read the project's directory.
                "/bin/sh", str(script), str(directory / "fs" / "root"), str(table)]
        argv, preexec = seccomp.confine(argv)
        with open(directory / "console.log", "ab") as console:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=console, stderr=console,
                                    close_fds=True, preexec_fn=preexec,
                                    env={"PATH": os.environ.get("PATH", NODE_PATH),
                                         "LAB_CGROUPS": " ".join(str(p) for p in cg_dirs),
                                         "LAB_PIDFILE": str(pidfile)})
        try:
            if proc.wait() != 0:
                raise LabRuntimeError("could not start the node's launcher (setsid): "
                                      + self._console_tail(node.id))
        except BaseException:
            proc.stdin.close()
            raise
        return _Launcher(proc.stdin, pidfile)


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

    def _dockerd_log(self, pid: int, node: Node) -> str:
        # Resolved in the node's root: a restored machine's disk is the
        # learner's, and this text is shown to them.
        with contextlib.suppress(OSError):
            text = nodefs.read_in_root(f"/proc/{pid}/root", "/var/log/dockerd.log", tail=1500)
            return "\ndockerd said: " + text.decode(errors="replace")
        return ""
