"""The lab registry: Debian's docker-registry on the host, the nodes' Docker Hub.

Every node's dockerd lists `http://<gateway>:<port>` as its registry mirror
(netplan.daemon_json), so `docker run alpine` in a node asks this registry
for `library/alpine` first. Two modes, from $LAB_REGISTRY_MODE:

- `standins` (default): a plain registry; `python -m runtime images build`
  pushes the lab's stand-in images (runtime/lessonimages.py) into it. For
  machines that cannot reach Docker Hub.
- `mirror`: a pull-through cache of Docker Hub, for machines that reach it.
  Such a registry refuses pushes, so no stand-ins are built.

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

# Talk to the local registry directly, whatever http_proxy says.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def mode() -> str:
    value = os.environ.get("LAB_REGISTRY_MODE", "standins").strip() or "standins"
    if value not in MODES:
        raise LabRuntimeError(f"LAB_REGISTRY_MODE={value!r} is not a registry mode: use "
                              "'standins' (no Docker Hub: the lab pushes stand-in images) "
                              "or 'mirror' (a pull-through cache of Docker Hub)", permanent=True)
    return value


def storage_dir() -> Path:
    return base_dir() / "registry"


def config_path() -> Path:
    return base_dir() / "registry.yml"


def config_text(registry_mode: str, port: int, root: str) -> str:
    """The registry's YAML configuration (pure: unit tests compare it)."""
    proxy = f"proxy:\n  remoteurl: {DOCKER_HUB}\n" if registry_mode == "mirror" else ""
    # A JSON string is a valid YAML scalar, whatever the path holds.
    return Template(TEMPLATE.read_text()).substitute(
        root=json.dumps(root), addr=json.dumps(f"0.0.0.0:{port}"), proxy=proxy)


def write_config() -> Path:
    path = config_path()
    storage_dir().mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(config_text(mode(), registry_port(), str(storage_dir())))
    os.replace(tmp, path)
    return path


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


def url(path: str = "") -> str:
    return f"http://127.0.0.1:{registry_port()}{path}"


def _status(path: str, method: str = "GET", headers: dict | None = None,
            timeout: float = 2.0) -> int:
    """HTTP status of a request to the local registry; 0 when nothing answers."""
    request = urllib.request.Request(url(path), method=method, headers=headers or {})
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return 0


def answers() -> bool:
    """Does a registry answer the Docker registry API on the lab's port?"""
    return _status("/v2/") in (200, 401)


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
    path = write_config()
    logfile = base_dir() / "registry-temporary.log"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([_binary(), "serve", str(path)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
    log.info("started a temporary lab registry (pid %d) on port %d; its log: %s",
             proc.pid, registry_port(), logfile)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers():
            if proc.poll() is not None:
                raise LabRuntimeError(
                    f"the lab registry exited at start (code {proc.returncode}); "
                    f"is port {registry_port()} taken? Its log:\n" + _tail(logfile))
            if time.monotonic() > deadline:
                raise LabRuntimeError(f"the lab registry did not answer on port "
                                      f"{registry_port()} within {START_TIMEOUT:.0f}s:\n"
                                      + _tail(logfile))
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
        log.info("stopped the temporary lab registry")


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-1500:]
    return "(no log)"
