"""The dind peer: a node made the Play-with-Docker way, measured beside ours.

Play with Docker (play-with-docker/play-with-docker: docker/docker.go
`CreateContainer`, provisioner/dind.go) runs each node as a privileged
container of a dind image on a host Docker engine, with tmpfs for
/var/lib/docker, and counts the node as up once `docker exec <c> docker info`
answers. The peer does exactly that on the docker driver's host engine
(bench/runtime.py `docker_engine`: the private test engine unless one is
configured), with the node image the docker driver imported there
(`lab-node:<hash>`: Debian's docker.io, the same dockerd our nodes run),
with Debian's default iptables backend (nft) put back.

One start: from the `docker run` request to the first `docker exec ... docker
info` that succeeds, polled back to back. The container is removed after each
sample (not timed). Also, for the breakdown, where the peer's time went:
`docker run` returning, then the engine's own log lines (dockerd started,
containerd booted, API listening), then the polling.
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import time

from runtime.model import LabRuntimeError

log = logging.getLogger(__name__)

PREFIX = "labpeer-"
# PWD runs `--privileged`. That asks runc for every capability the engine
# knows, and fails where the host's bounding set lacks one (this lab's VMs have
# no CAP_SYS_RESOURCE: "unable to apply caps"); the nearest equivalent that
# starts everywhere: every capability the host has, no seccomp, no masked
# /proc paths, a cgroup namespace of its own. It costs the peer nothing at start.
PRIVILEGED = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
              "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
              "--cgroupns", "private")


class DindPeer:
    """PWD-style dind nodes on a host engine (DOCKER_HOST `host`, "" for the CLI's own)."""

    def __init__(self, host: str = ""):
        self.host = host
        self.tag = ""
        self.network = ""
        self.cli = shutil.which("docker") or "docker"

    def docker(self, *args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        if self.host:
            env["DOCKER_HOST"] = self.host
        proc = subprocess.run([self.cli, *args], capture_output=True, env=env, timeout=timeout)
        if check and proc.returncode:
            raise LabRuntimeError(f"`docker {' '.join(args[:2])}` failed: "
                                  f"{proc.stderr.decode(errors='replace').strip()}")
        return proc

    def __enter__(self):
        from runtime.dockerdriver import DockerDriver
        # The docker driver's own import of the node image (done once, not timed).
        node_tag = DockerDriver(self.host or None).ensure_image()
        # ... as Debian ships it: the node image switches iptables to its legacy
        # backend (a lab-node tuning), Debian's default is iptables-nft.
        self.tag = PREFIX + "image:" + node_tag.split(":")[-1]
        if self.docker("image", "inspect", self.tag, check=False).returncode:
            recipe = (f"FROM {node_tag}\nRUN " + " && ".join(
                f"update-alternatives --set {t} /usr/sbin/{t}-nft" for t in ("iptables", "ip6tables"))
                + "\n").encode()
            env = {**os.environ, "DOCKER_BUILDKIT": "0",
                   **({"DOCKER_HOST": self.host} if self.host else {})}
            proc = subprocess.run([self.cli, "build", "--network", "none", "-q", "-t", self.tag, "-"],
                                  input=recipe, capture_output=True, env=env, timeout=300)
            if proc.returncode:
                raise LabRuntimeError("building the dind peer's image failed: "
                                      + proc.stderr.decode(errors="replace"))
        # PWD makes a network per session once; the nodes join it.
        self.network = PREFIX + secrets.token_hex(3)
        self.docker("network", "create", "--label", "lab.bench=peer", self.network)
        return self

    def __exit__(self, *exc):
        out = self.docker("ps", "-aq", "--filter", f"name={PREFIX}", check=False).stdout.split()
        if out:
            self.docker("rm", "-f", "-v", *[o.decode() for o in out], check=False)
        if self.network:
            self.docker("network", "rm", self.network, check=False)

    def start_once(self) -> dict:
        """One PWD-style start; {"seconds": float, "marks": [[name, wall time], ...]}."""
        name = PREFIX + secrets.token_hex(4)
        marks = [["begin", time.time()]]
        began = time.perf_counter()
        try:
            self.docker("run", "-d", *PRIVILEGED, "--tmpfs", "/var/lib/docker",
                        "--network", self.network, "--name", name, "--hostname", name,
                        self.tag, "dockerd")
            marks.append(["run", time.time()])
            deadline = time.monotonic() + 60
            while True:
                proc = self.docker("exec", name, "docker", "info", "--format", "{{.ID}}",
                                   check=False)
                if proc.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise LabRuntimeError("the dind peer's engine did not answer within 60s: "
                                          + proc.stderr.decode(errors="replace"))
            seconds = time.perf_counter() - began
            marks.append(["ready", time.time()])
            with contextlib.suppress(LabRuntimeError, subprocess.SubprocessError):
                # dockerd logs to the container's stdout/stderr here.
                logs = self.docker("logs", name, check=False)
                marks += engine_marks((logs.stdout + logs.stderr).decode(errors="replace"))
            return {"seconds": seconds, "marks": marks}
        finally:
            self.docker("rm", "-f", "-v", name, check=False)


# dockerd's log lines that mark the stages of its start-up.
ENGINE_LINES = (
    ("dockerd exec", 'msg="Starting up"'),
    ("containerd", "containerd successfully booted"),
    ("dockerd setup", 'msg="Loading containers: start."'),
    ("networks (docker0, iptables)", 'msg="Loading containers: done."'),
    ("dockerd API listen", 'msg="API listen on'),
)


def engine_marks(log_text: str) -> list:
    """[[stage, wall time], ...] from dockerd's log (its `time="...Z"` stamps, UTC)."""
    import datetime
    found = []
    for stage, needle in ENGINE_LINES:
        for line in log_text.splitlines():
            if needle in line and line.startswith('time="'):
                stamp = line[6:line.index('"', 6)]
                head, _, frac = stamp.rstrip("Z").partition(".")
                when = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(
                    tzinfo=datetime.timezone.utc).timestamp() + float("0." + (frac or "0"))
                found.append([stage, when])
                break
    return found


def phases(marks: list) -> list:
    """[(phase, ms), ...]: the time between consecutive marks, in time order, each
    phase named after the mark that ends it (the first mark is the request)."""
    ordered = sorted(marks, key=lambda m: m[1])
    return [(b[0], (b[1] - a[1]) * 1000) for a, b in zip(ordered, ordered[1:])]
