"""The lab registry: Debian's docker-registry on the host, the nodes' Docker Hub.

Every node's dockerd lists `http://<gateway>:<port>` as its registry mirror
(netplan.daemon_json), so `docker run alpine` in a node asks this registry
for `library/alpine` first. Two modes, from $LAB_REGISTRY_MODE:

- `standins` (default): a plain registry; `python -m runtime images build`
  pushes the lab's stand-in images (runtime/lessonimages.py) into it. For
  machines that cannot reach Docker Hub.
- `mirror`: a pull-through cache of Docker Hub, for machines that reach it.
  Such a registry refuses pushes, so no stand-ins are built.

Learners do not trust each other, and every node pulls from this registry:
so the registry nodes reach is read-only (distribution's maintenance
read-only mode, deletes disabled). A push, a delete or an upload from a node
is refused at once. The lab's own image builds write through `writer()`: a
second registry process on the same storage, listening on the host's
loopback only (no node reaches it), run only while a build pushes.

`python -m runtime registry serve` runs it in the foreground (Procfile);
`ensure_running()` starts a temporary one when nothing answers.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from string import Template

from .model import LabRuntimeError
from .netplan import registry_port
from .paths import base_dir

log = logging.getLogger(__name__)

MODES = ("standins", "mirror")
DOCKER_HUB = "https://registry-1.docker.io"
BINARY = "docker-registry"
TEMPLATE = Path(__file__).with_name("lessonimages") / "registry.yml"
START_TIMEOUT = 20.0
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])

# Talk to the local registry directly, whatever http_proxy says (the lab's
# image pushes and the tests use it too).
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def mode() -> str:
    value = os.environ.get("LAB_REGISTRY_MODE", "standins").strip() or "standins"
    if value not in MODES:
        raise LabRuntimeError(f"LAB_REGISTRY_MODE={value!r} is not a registry mode: use "
                              "'standins' (no Docker Hub: the lab pushes stand-in images) "
                              "or 'mirror' (a pull-through cache of Docker Hub)", permanent=True)
    return value


def storage_dir() -> Path:
    # Read-only registries of several hosts may serve one storage: LAB_REGISTRY_DIR.
    return Path(os.environ.get("LAB_REGISTRY_DIR") or base_dir() / "registry")


def config_path() -> Path:
    return base_dir() / "registry.yml"


def config_text(registry_mode: str, port: int, root: str, writer: bool = False) -> str:
    """The registry's YAML configuration (pure: unit tests compare it).

    The one nodes reach listens on every address and is read-only; the
    `writer` listens on the host's loopback only and takes pushes. A mirror
    refuses pushes by itself (distribution's pull-through cache has no
    uploads) and must write what it caches, so it is not put in read-only mode.
    """
    proxy = f"proxy:\n  remoteurl: {DOCKER_HUB}\n" if registry_mode == "mirror" else ""
    addr = f"127.0.0.1:{port}" if writer else f"0.0.0.0:{port}"
    readonly = not writer and registry_mode == "standins"
    # A JSON string is a valid YAML scalar, whatever the path holds.
    return Template(TEMPLATE.read_text()).substitute(
        root=json.dumps(root), addr=json.dumps(addr), proxy=proxy,
        readonly="true" if readonly else "false")


def write_config(port: int | None = None, writer: bool = False) -> Path:
    path = writer_config_path() if writer else config_path()
    storage_dir().mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)  # storage may live elsewhere (LAB_REGISTRY_DIR)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(config_text(mode(), port or registry_port(), str(storage_dir()), writer))
    os.replace(tmp, path)
    return path


def writer_config_path() -> Path:
    return base_dir() / "registry-writer.yml"


def _binary() -> str:
    found = shutil.which(BINARY)
    if not found:
        raise LabRuntimeError("the lab registry needs Debian's docker-registry: "
                              "apt-get install docker-registry (or run `make run`)", permanent=True)
    return found


def serve() -> None:
    """Replace this process with the registry, in the foreground, logging to stderr."""
    path = write_config()
    binary = _binary()
    log.info("lab registry (%s mode) on port %d, storage %s", mode(), registry_port(), storage_dir())
    os.execv(binary, [binary, "serve", str(path)])


def url(path: str = "", port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or registry_port()}{path}"


def _status(path: str, method: str = "GET", headers: dict | None = None,
            timeout: float = 2.0, port: int | None = None) -> int:
    """HTTP status of a request to the local registry; 0 when nothing answers."""
    request = urllib.request.Request(url(path, port), method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return 0


def answers(port: int | None = None) -> bool:
    """Does a registry answer the Docker registry API on the lab's port (or `port`)?"""
    return _status("/v2/", port=port) in (200, 401)


def has_image(repository: str, tag: str = "latest") -> bool:
    return _status(f"/v2/{repository}/manifests/{tag}", method="HEAD",
                   headers={"Accept": MANIFEST_TYPES}) == 200


@contextlib.contextmanager
def ensure_running():
    """Use the registry that answers on the lab's port, or run a temporary one.

    A registry started here (same configuration as `registry serve`) is
    stopped on leaving; one that was already running is left alone.
    """
    if answers():
        log.debug("lab registry answers at %s", url())
        yield
        return
    with _temporary(write_config(), registry_port(), "temporary lab registry"):
        yield


@contextlib.contextmanager
def writer():
    """A writable registry on the same storage, on the host's loopback only,
    for as long as the caller pushes; yields its base URL."""
    with socket.socket() as s:  # a free port, taken again at once by the writer
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with _temporary(write_config(port, writer=True), port, "lab registry writer"):
        yield url(port=port)


@contextlib.contextmanager
def _temporary(path: Path, port: int, what: str):
    """Run docker-registry with the configuration at `path` until the block ends."""
    logfile = base_dir() / f"{path.stem}.log"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([_binary(), "serve", str(path)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
    log.info("started a %s (pid %d) on port %d; its log: %s", what, proc.pid, port, logfile)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(port):
            if proc.poll() is not None:
                raise LabRuntimeError(
                    f"the {what} exited at start (code {proc.returncode}); "
                    f"is port {port} taken? Its log:\n" + _tail(logfile))
            if time.monotonic() > deadline:
                raise LabRuntimeError(f"the {what} did not answer on port {port} within "
                                      f"{START_TIMEOUT:.0f}s:\n" + _tail(logfile))
            time.sleep(0.05)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info("stopped the %s", what)


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-1500:]
    return "(no log)"
