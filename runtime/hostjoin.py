"""`python -m runtime host join --site URL --token TOKEN`: this machine becomes
one of a lab site's sandbox hosts.

It asks the site first (a wrong or expired token, or code, image recipes or a
clock that differ from the site's, are refused there, with the reason); the
site answers with what a host needs to work with it (its Redis, its database,
the gateway key). Then `make setup` installs what is missing and builds the
images, the answer is written to host.env in the runtime's directory
(LAB_RUNTIME_DIR, /var/lib/dockerlab), and the host's processes start
(scripts/host.Procfile: the node worker with the heartbeat, the checks worker,
the gateway and the registry). `python -m runtime host ls` lists the site's
hosts with their load. Only the standard library: the runtime knows no Django.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import hostinfo, paths

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "scripts" / "host.Procfile"
# The site's answer, beside the runtime's state (one per host, LAB_RUNTIME_DIR).
ENV_FILE = None


class JoinRefused(Exception):
    """The site said no; the message says why, in the site's words."""


def _call(url: str, payload: dict | None = None, token: str = "") -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            reason = f"HTTP {e.code} {e.reason}"
        raise JoinRefused(reason) from None
    except (urllib.error.URLError, OSError) as e:
        raise JoinRefused(f"cannot reach the site at {url}: {getattr(e, 'reason', e)}") from None


def ask_to_join(site: str, token: str, name: str, gateway_url: str) -> dict:
    """The site's answer: {"host": name, "env": {...}}; JoinRefused if it says no."""
    return _call(site.rstrip("/") + "/hosts/join", {
        "name": name, "gateway_url": gateway_url, "version": hostinfo.code_version(),
        "recipe": hostinfo.recipe_version(), "clock": time.time()}, token)


def write_env(answer: dict, name: str, gateway_url: str, path: Path | None = None) -> Path:
    path = path or ENV_FILE or paths.base_dir() / "host.env"
    env = {**answer["env"], "LAB_HOST_NAME": name, "LAB_GATEWAY_URL": gateway_url}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}={value}\n" for key, value in sorted(env.items())))
    path.chmod(0o600)  # it holds the database's and the gateway's secrets
    return path


def join(site: str, token: str, name: str, gateway_url: str, setup: bool, start: bool) -> int:
    try:
        answer = ask_to_join(site, token, name, gateway_url)
    except JoinRefused as e:
        print(f"error: the site refused host {name}: {e}", file=sys.stderr)
        return 2
    path = write_env(answer, name, gateway_url)
    print(f"joined {site} as host {name} (gateway {gateway_url}); settings in {path}")
    if setup:
        done = subprocess.run(["make", "-C", str(ROOT), "setup"])
        if done.returncode != 0:
            print("error: `make setup` failed: see above", file=sys.stderr)
            return done.returncode
    if not start:
        return 0
    honcho = shutil.which("honcho") or str(ROOT / ".venv" / "bin" / "honcho")
    os.execv(honcho, [honcho, "start", "-f", str(PROCFILE), "-d", str(ROOT), "-e", str(path)])
    return 0  # not reached


def list_hosts(site: str, token: str) -> int:
    try:
        hosts = _call(site.rstrip("/") + "/hosts/", token=token)["hosts"]
    except JoinRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'NAME':12}{'STATE':10}{'NODES':>6}{'ROOM':>6}  {'SEEN':>8}  {'GATEWAY':32}NOTE")
    for h in hosts:
        seen = f"{h['seen_seconds']:.0f}s" if h["seen_seconds"] is not None else "never"
        print(f"{h['name']:12}{h['state']:10}{h['nodes_now']:>6}{h['room']:>6}  {seen:>8}  "
              f"{h['gateway_url'] or '(the site)':32}{h['refused']}")
    return 0


def default_name() -> str:
    return socket.gethostname().split(".")[0].lower()
