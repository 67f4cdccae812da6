"""The docker driver: nodes as Docker-in-Docker containers on a host Docker engine.

The Play with Docker design, for operators who already run Docker. A node is
a container of the same Debian root filesystem the built-in
driver uses (imported once into the host engine as `lab-node:<hash>`), with
tini as PID 1 running the node's own dockerd; Docker's data lives in a
volume per node. Each session gets a user-defined bridge network
`lab-<session>`, so Docker's embedded DNS lets nodes reach each other by
name. Everything goes through the `docker` CLI (no SDK); $LAB_DOCKER_HOST
picks the engine (passed to the CLI as DOCKER_HOST).

State lives in the engine itself, as labels on the containers, volumes and
networks (lab.node, lab.session, lab.name), so any process finds the nodes.

Security: not --privileged (Play with Docker's way), but the set a node's
dockerd needs: Docker's default capabilities plus CAP_SYS_ADMIN and
CAP_NET_ADMIN, a seccomp profile built from the built-in driver's deny list
(seccomp_profile), a cgroup namespace of its own, no host devices. With an
engine on this host, each node also gets its own loop-mounted disk for
Docker's data and /root, and session bridges named labbrd<hash> fall under
the built-in driver's firewall (runtime/firewall.py: the registry is the only
host service, no link-local addresses, egress per LAB_EGRESS). What it cannot
match: there is no user namespace, and CAP_SYS_ADMIN outside one is host
root for a determined learner (a fresh procfs mount reaches host-wide kernel
settings). The README's table says so row by row; the built-in driver is the
one for strangers.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Optional

from . import disks, firewall, hostexec, images, netplan
from .dockerapi import EngineAPI, label_filter
from .limits import node_limits
from .model import Driver, ExecResult, LabRuntimeError, Node, NodeNotFound, NodeSpec, tmux_attach
from .paths import file_lock
from .pty_terminal import PtyTerminal
from .dockerplan import (
    NODE_ENV, START_TIMEOUT, IMAGE_REPO, LABEL, ID_RE, CLI_TIMEOUT, INIT_PATH,
    INIT_SCRIPT, container_name, volume_name, network_name, bridge_name, seccomp_profile,
    seccomp_profile_path, disk_dir, image_tag, import_changes, run_argv, node_files_tar,
    create_body)

# Also this module's names for them (tests and the bench import them from here).
__all__ = ["DockerDriver", "INIT_PATH", "INIT_SCRIPT", "bridge_name", "container_name",
           "disk_dir", "network_name", "run_argv", "seccomp_profile", "volume_name"]

log = logging.getLogger(__name__)


def _limits() -> dict:
    return node_limits()  # one set of settings for both drivers


class DockerDriver(Driver):
    name = "docker"

    def __init__(self, host: Optional[str] = None):
        # None: $LAB_DOCKER_HOST, else the CLI's own default (DOCKER_HOST or /var/run/docker.sock).
        self.host = host or os.environ.get("LAB_DOCKER_HOST") or None
        self._apparmor: Optional[bool] = None
        self._imported: set = set()  # tags seen in the engine (an inspect is ~40 ms a start)
        # The engine's HTTP API when it is a unix socket: a request instead of a
        # CLI process (30-60 ms each); None: the CLI (ssh://, tcp:// with TLS...).
        self.api = EngineAPI.for_host(self.host or os.environ.get("DOCKER_HOST")
                                      or "unix:///var/run/docker.sock")

    def local(self) -> bool:
        """Whether the engine runs on this host (a unix socket), so that the
        node's disk and the firewall can be made here."""
        where = self.host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return where.startswith("unix://") and os.geteuid() == 0

    def apparmor(self) -> bool:
        if self._apparmor is None and self.api:
            with contextlib.suppress(LabRuntimeError):
                self._apparmor = "apparmor" in json.dumps(self.api.get("/info").get(
                    "SecurityOptions"))
        if self._apparmor is None:
            proc = self.docker("info", "--format", "{{json .SecurityOptions}}", check=False,
                               timeout=15)
            self._apparmor = b"apparmor" in proc.stdout
        return self._apparmor

    # ---- the CLI ----------------------------------------------------------------
    def _env(self) -> dict:
        env = dict(os.environ)
        if self.host:
            env["DOCKER_HOST"] = self.host
        return env

    def _cli(self) -> str:
        found = os.environ.get("LAB_DOCKER_CLI") or shutil.which("docker")
        if not found:
            raise LabRuntimeError("the docker CLI is missing: apt-get install docker.io",
                                  permanent=True)
        return found

    def docker(self, *args, input: Optional[bytes] = None, check: bool = True,
               timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        """Run the docker CLI (blocking: call it from a thread, see `_call`)."""
        argv = [self._cli(), *args]
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, env=self._env(),
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabRuntimeError(f"`docker {args[0]}` did not answer within {timeout:.0f}s: "
                                  "is the host Docker engine overloaded?") from None
        if check and proc.returncode != 0:
            raise LabRuntimeError(f"`docker {' '.join(args[:3])}` failed: "
                                  f"{proc.stderr.decode(errors='replace').strip()}")
        return proc

    async def _call(self, fn, *args, **kw):
        """The one way blocking work leaves the event loop."""
        return await asyncio.to_thread(fn, *args, **kw)

    def _lock(self):
        """Serialises session-network bookkeeping across processes on this host."""
        return file_lock("dockerdriver.lock")

    # ---- checks -------------------------------------------------------------------
    def preflight(self) -> list:
        problems = []
        try:
            self._cli()
        except LabRuntimeError as e:
            return [e.reason]
        try:
            proc = self.docker("version", "--format", "{{.Server.Version}}", check=False,
                               timeout=15)
        except LabRuntimeError as e:
            return [e.reason]
        if proc.returncode != 0:
            where = self.host or os.environ.get("DOCKER_HOST") or "the default socket"
            problems.append(f"the host Docker engine at {where} does not answer "
                            f"({proc.stderr.decode(errors='replace').strip()}): start it, or "
                            "point LAB_DOCKER_HOST at one")
            return problems
        try:
            image_dir = images.current_image()
        except LabRuntimeError as e:
            if not self._image_present_any():
                problems.append(e.reason)
            return problems
        if not self._image_present(image_tag(image_dir)) and not shutil.which("tar"):
            problems.append("`tar` is missing, so the node image cannot be imported")
        return problems

    def _image_present(self, tag: str) -> bool:
        if self.api:
            return self.api.get(f"/images/{tag}/json", missing_ok=True) is not None
        return self.docker("image", "inspect", tag, check=False).returncode == 0

    def _image_present_any(self) -> bool:
        return bool(self.docker("images", "-q", IMAGE_REPO, check=False).stdout.strip())

    def ensure_image(self) -> str:
        """Import the built-in driver's node image into the engine, once."""
        image_dir = images.current_image()
        tag = image_tag(image_dir)
        if tag in self._imported or self._image_present(tag):
            self._imported.add(tag)
            return tag
        with self._lock():
            if self._image_present(tag):
                return tag
            log.info("importing %s into the host Docker engine as %s", image_dir, tag)
            changes = [a for c in import_changes() for a in ("--change", c)]
            tar = subprocess.Popen(["tar", "-C", str(image_dir), "--numeric-owner", "-c", "."],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                proc = subprocess.run([self._cli(), "import", *changes, "-", tag],
                                      stdin=tar.stdout, capture_output=True, env=self._env(),
                                      timeout=600)
            finally:
                tar.stdout.close()
                tar_err = tar.stderr.read().decode(errors="replace")
                tar.wait()
            if proc.returncode or tar.returncode:
                raise LabRuntimeError("importing the node image into the host Docker engine "
                                      f"failed: {proc.stderr.decode(errors='replace')} {tar_err}")
        self._imported.add(tag)
        return tag

    # ---- state --------------------------------------------------------------------
    def _inspect(self, *refs: str) -> list:
        if not refs:
            return []
        if self.api:
            found = (self.api.get(f"/containers/{ref}/json", missing_ok=True) for ref in refs)
            return [data for data in found if data]
        proc = self.docker("container", "inspect", *refs, check=False)
        if proc.returncode and b"No such" not in proc.stderr:
            raise LabRuntimeError("the host Docker engine did not answer: "
                                  f"{proc.stderr.decode(errors='replace').strip()}")
        with contextlib.suppress(ValueError):
            return json.loads(proc.stdout or b"[]") or []
        return []

    def _node_from(self, data: dict) -> Optional[Node]:
        labels = (data.get("Config") or {}).get("Labels") or {}
        node_id = labels.get(LABEL)
        if not node_id:
            return None
        session = labels.get("lab.session", "")
        nets = (data.get("NetworkSettings") or {}).get("Networks") or {}
        net = nets.get(network_name(session)) or {}
        state = (data.get("State") or {})
        return Node(id=node_id, session=session, name=labels.get("lab.name", ""),
                    driver=self.name, address=net.get("IPAddress", ""),
                    created=float(labels.get("lab.created") or 0),
                    extra={"container": data.get("Name", "").lstrip("/"),
                           "container_id": data.get("Id", "")[:12],
                           "network": network_name(session), "gateway": net.get("Gateway", ""),
                           "volume": volume_name(node_id), "pid": state.get("Pid") or 0,
                           "state": state.get("Status", ""),
                           "engine": self.host or os.environ.get("DOCKER_HOST", "")})

    def _container_ids(self, label: str) -> list:
        if self.api:
            return [c["Id"] for c in self.api.get("/containers/json",
                                                  {"all": "1", **label_filter(label)})]
        return self.docker("ps", "-aq", "--no-trunc", "--filter",
                           f"label={label}").stdout.decode().split()

    def list_nodes(self) -> list:
        ids = self._container_ids(LABEL)
        nodes = [self._node_from(d) for d in self._inspect(*ids)]
        return sorted((n for n in nodes if n), key=lambda n: (n.created, n.id))

    def get_node(self, node_id: str) -> Node:
        return self._load(node_id)

    def _load(self, node_id: str) -> Node:
        if not ID_RE.match(node_id or ""):
            raise NodeNotFound(node_id)
        found = self._inspect(container_name(node_id))
        node = self._node_from(found[0]) if found else None
        if node is None or node.id != node_id:
            raise NodeNotFound(node_id)
        return node

    # ---- sessions -------------------------------------------------------------------
    def _ensure_network(self, session: str) -> dict:
        """The session's bridge network (caller holds the lock); its inspect data."""
        name = network_name(session)
        if self.api:
            found = self.api.get(f"/networks/{name}", missing_ok=True)
            if found is None:
                self.api.call("POST", "/networks/create", body={
                    "Name": name, "Driver": "bridge", "CheckDuplicate": True,
                    "Options": {"com.docker.network.bridge.name": bridge_name(session)},
                    "Labels": {"lab.session": session}})
                if self.local():
                    firewall.apply()  # as below
                found = self.api.get(f"/networks/{name}")
            return found
        proc = self.docker("network", "inspect", name, check=False)
        if proc.returncode != 0:
            self.docker("network", "create", "--driver", "bridge",
                        "-o", f"com.docker.network.bridge.name={bridge_name(session)}",
                        "--label", f"lab.session={session}", name)
            if self.local():
                # Its bridge falls under the lab firewall's labbr+ rules: make sure
                # they are in place, once per new network (as the built-in driver does).
                firewall.apply()
            proc = self.docker("network", "inspect", name)
        return json.loads(proc.stdout)[0]

    @staticmethod
    def _gateway(network: dict) -> str:
        for cfg in (network.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Gateway"):
                return cfg["Gateway"]
        raise LabRuntimeError(f"network {network.get('Name')} has no gateway address: the lab "
                              "registry cannot be reached through it")

    def _remove_network_if_empty(self, session: str) -> None:
        left = self.docker("ps", "-aq", "--filter", f"label=lab.session={session}",
                           check=False).stdout.split()
        if left:
            return
        proc = self.docker("network", "rm", network_name(session), check=False)
        err = proc.stderr.decode(errors="replace")
        if proc.returncode and "not found" not in err and "No such" not in err:
            log.warning("could not remove network %s: %s", network_name(session), err.strip())

    # ---- start ---------------------------------------------------------------------
    async def start(self, spec: NodeSpec, on_progress=None) -> Node:
        return await self._call(self._start, spec, on_progress or (lambda event: None))

    def _start(self, spec: NodeSpec, progress) -> Node:
        started = time.monotonic()
        marks = [("begin", time.time())]  # as the built-in driver's (the bench reads them)
        progress({"progress": 5, "message": "checking the node image"})
        tag = self.ensure_image()
        node_id = secrets.token_hex(6)
        name = container_name(node_id)
        # The node's disk needs only its id: made while the engine is asked.
        disk = None
        if self.local():
            pool = concurrent.futures.ThreadPoolExecutor(1)
            disk = pool.submit(self._make_disk, node_id)
            pool.shutdown(wait=False)  # its thread ends with the disk
        try:
            with self._lock():
                if self._name_taken(spec):
                    raise LabRuntimeError(f"session {spec.session} already has a node called "
                                          f"{spec.name}", permanent=True)
                progress({"progress": 15, "message": "connecting the node to its network"})
                network = self._ensure_network(spec.session)
                gateway = self._gateway(network)
                registry = f"{gateway}:{netplan.registry_port()}"
                daemon = {"registry-mirrors": [f"http://{registry}"],
                          "insecure-registries": [registry], "storage-driver": "overlay2"}
                root_dir = files_dir = None
                volume_opts = []
                files = node_files_tar(spec, daemon)
                if disk is not None:
                    # (The engine mounts the volume, its device on the disk, at create.)
                    progress({"progress": 20, "message": "making the node's disk"})
                    fs = disk.result()
                    root_dir = str(fs / "root")
                    volume_opts = ["--opt", "type=none", "--opt", "o=bind",
                                   "--opt", f"device={fs / 'docker'}"]
                    if self.api:  # the files come in a bind mount (dockerplan.FILES_CMD)
                        with tarfile.open(fileobj=io.BytesIO(files)) as tar:
                            tar.extractall(fs / "files")
                        files_dir = str(fs / "files")
                self._create(spec, node_id, tag, root_dir, volume_opts, files_dir)
            marks.append(("created", time.time()))
            progress({"progress": 35, "message": "starting the node"})
            if self.api:
                if not files_dir:
                    self.api.call("PUT", f"/containers/{name}/archive", {"path": "/"}, files,
                                  content_type="application/x-tar")
                self.api.call("POST", f"/containers/{name}/start")
            else:
                self.docker("cp", "-", f"{name}:/", input=files)
                self.docker("start", name)
            marks.append(("started", time.time()))
            progress({"progress": 50, "message": "waiting for the Docker engine"})
            self._wait_for_engine(node_id)
            marks.append(("ready", time.time()))
            node = self._load(node_id)
        except BaseException as e:
            log.warning("node %s (%s/%s) failed to start: %s", node_id, spec.session, spec.name, e)
            if disk is not None:
                concurrent.futures.wait([disk])  # its mount must be there to be released
            with contextlib.suppress(Exception):
                self._stop(node_id, session=spec.session)
            if isinstance(e, LabRuntimeError):
                raise
            raise LabRuntimeError(f"the node could not start: {e}") from e
        seconds = time.monotonic() - started
        node = Node(**{**node.to_json(), "extra": {
            **node.extra, "start_seconds": round(seconds, 3),
            "marks": [[k, round(t, 6)] for k, t in marks]}})
        progress({"progress": 100, "message": "ready"})
        log.info("node %s (%s/%s) ready in %.2fs", node_id, spec.session, spec.name, seconds)
        return node

    def _name_taken(self, spec: NodeSpec) -> bool:
        if self.api:
            return any((c.get("Labels") or {}).get("lab.name") == spec.name
                       for c in self.api.get("/containers/json", {"all": "1", **label_filter(
                           LABEL, f"lab.session={spec.session}")}))
        return any(n.session == spec.session and n.name == spec.name for n in self.list_nodes())

    def _create(self, spec: NodeSpec, node_id: str, tag: str, root_dir, volume_opts: list,
                files_dir=None):
        """The node's volume and container (not started)."""
        if not self.api:
            self.docker("volume", "create", "--label", f"{LABEL}={node_id}",
                        "--label", f"lab.session={spec.session}", *volume_opts,
                        volume_name(node_id))
            self.docker(*run_argv(spec, node_id, tag, _limits(), str(seccomp_profile_path()),
                                  self.apparmor(), root_dir))
            return
        opts = dict(o.split("=", 1) for o in volume_opts[1::2])
        self.api.call("POST", "/volumes/create", body={
            "Name": volume_name(node_id), "DriverOpts": opts,
            "Labels": {LABEL: node_id, "lab.session": spec.session}})
        self.api.call("POST", "/containers/create", {"name": container_name(node_id)},
                      create_body(spec, node_id, tag, _limits(), self.apparmor(), root_dir,
                                  files_dir))

    def _make_disk(self, node_id: str) -> Path:
        """The node's own disk (LAB_NODE_DISK) for Docker's data and /root."""
        directory = disk_dir(node_id)
        directory.mkdir(parents=True, exist_ok=True)
        fs = disks.from_template(directory, _limits()["disk"], ("docker", "root"))
        home = images.current_image() / "root"
        if home.is_dir():  # the image's own /root (.bashrc, .profile) comes along
            shutil.copytree(home, fs / "root", symlinks=True, dirs_exist_ok=True)
        (fs / "root").chmod(0o700)
        return fs

    @staticmethod
    def _remove_disk(node_id: str) -> None:
        directory = disk_dir(node_id)
        if directory.exists():
            disks.release([directory / "fs"])
            shutil.rmtree(directory, ignore_errors=True)

    def _wait_for_engine(self, node_id: str) -> None:
        """Until the node's engine answers /info, as `docker info` would.

        When the host engine is local (its container pids are ours to see),
        the node's socket is asked directly through /proc/PID/root; otherwise
        through `docker exec ... docker info`.
        """
        name = container_name(node_id)
        deadline = time.monotonic() + START_TIMEOUT
        data = self._inspect(name)
        state = (data[0].get("State") or {}) if data else {}
        if not state.get("Running"):
            raise LabRuntimeError("the node stopped while starting: " + self._logs(name))
        pid = state.get("Pid") or 0
        sock = f"/proc/{pid}/root/run/docker.sock"
        local = bool(pid) and os.path.exists(f"/proc/{pid}/root/usr/local/sbin/lab-init")
        while time.monotonic() < deadline:
            if local:
                if hostexec.engine_answers(sock):
                    return
                if not os.path.exists(f"/proc/{pid}"):
                    raise LabRuntimeError("the node stopped while starting: " + self._logs(name))
                time.sleep(0.005)  # a refused connect: cheap, and a start waits for it
            else:
                proc = self.docker("exec", name, "docker", "info", "--format", "{{.ID}}",
                                   check=False, timeout=30)
                if proc.returncode == 0:
                    return
                if b"is not running" in proc.stderr or b"No such container" in proc.stderr:
                    raise LabRuntimeError("the node stopped while starting: " + self._logs(name))
                time.sleep(0.2)
        raise LabRuntimeError(f"the node's Docker engine did not answer within "
                              f"{START_TIMEOUT:.0f}s" + self._dockerd_log(name))

    def _logs(self, name: str) -> str:
        proc = self.docker("logs", "--tail", "30", name, check=False)
        text = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        return (text[-1500:] or "(no output)") + self._dockerd_log(name)

    def _dockerd_log(self, name: str) -> str:
        proc = self.docker("cp", f"{name}:/var/log/dockerd.log", "-", check=False, timeout=15)
        if proc.returncode:
            return ""
        with contextlib.suppress(tarfile.TarError, AttributeError):
            with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
                member = tar.getmembers()[0]
                text = tar.extractfile(member).read().decode(errors="replace")
                return "\ndockerd said: " + text[-1500:]
        return ""

    # ---- stop -------------------------------------------------------------------------
    async def stop(self, node_id: str) -> None:
        await self._call(self._stop, node_id)

    def _stop(self, node_id: str, session: str = "") -> None:
        if not ID_RE.match(node_id or ""):
            return  # no such node can exist: already gone
        name = container_name(node_id)
        found = self._inspect(name)
        if found:
            labels = (found[0].get("Config") or {}).get("Labels") or {}
            session = labels.get("lab.session", session)
        else:
            vol = self.docker("volume", "inspect", volume_name(node_id), check=False)
            with contextlib.suppress(ValueError, IndexError, TypeError):
                session = (json.loads(vol.stdout)[0].get("Labels") or {}).get(
                    "lab.session", session)
        proc = self.docker("rm", "-f", name, check=False)
        if proc.returncode and b"No such container" not in proc.stderr:
            raise LabRuntimeError(f"could not remove node {node_id}: "
                                  f"{proc.stderr.decode(errors='replace').strip()}")
        proc = self.docker("volume", "rm", "-f", volume_name(node_id), check=False)
        if proc.returncode and b"No such volume" not in proc.stderr:
            raise LabRuntimeError(f"could not remove node {node_id}'s volume: "
                                  f"{proc.stderr.decode(errors='replace').strip()}")
        self._remove_disk(node_id)
        if session:
            with self._lock():
                self._remove_network_if_empty(session)
        log.info("node %s removed", node_id)

    # ---- poll / exec / terminal -----------------------------------------------------
    async def poll(self, node_id: str):
        try:
            node = await self._call(self._load, node_id)
        except NodeNotFound:
            return "gone"
        return None if node.extra.get("state") == "running" else "stopped"

    async def _running(self, node_id: str) -> str:
        node = await self._call(self._load, node_id)
        if node.extra.get("state") != "running":
            raise LabRuntimeError(f"node {node_id} is not running", permanent=True)
        return node.extra["container"]

    def _env_args(self, tty: bool = False) -> list:
        return [a for k, v in NODE_ENV.items() if tty or k != "TERM" for a in ("-e", f"{k}={v}")]

    async def exec(self, node_id, argv, timeout=30.0, input=None, on_output=None) -> ExecResult:
        name = await self._running(node_id)
        limit, inner = hostexec.inner_timeout(argv, timeout)
        cmd = [self._cli(), "exec", *(["-i"] if input is not None else []),
               *self._env_args(), name, *inner]
        return await hostexec.run_limited(cmd, limit, timeout, input=input, on_output=on_output,
                                          env=self._env())

    async def open_control(self, node_id, name="main"):
        return await self.spawn_control([self._cli(), "exec", "-i", *self._env_args(tty=True),
                                         await self._running(node_id)], name, env=self._env())

    async def open_terminal(self, node_id, cols=80, rows=24, name="main"):
        container = await self._running(node_id)
        if not name.replace("-", "").isalnum():
            raise LabRuntimeError(f"invalid terminal name {name!r}", permanent=True)
        # tmux keeps the shell inside the node, so re-attaching finds it again.
        # `setsid -c`: the CLI owns the PTY, so it sees SIGWINCH on resize.
        argv = ["setsid", "-c", self._cli(), "exec", "-it", *self._env_args(tty=True),
                container, *tmux_attach(name, "-u")]
        return await PtyTerminal.spawn(argv, cols, rows, env=self._env())
