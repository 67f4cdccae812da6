"""Saving a node when its session ends, and starting a node from a save
(runtime/saves.py has the format and the store)."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from .. import disks, saves
from ..model import Node
from ..paths import base_dir
from .cgroups import node_pids
from .common import run, UID_RANGE, USERNS

log = logging.getLogger(__name__)

STOP_SECONDS = 3  # a container's time to end cleanly (a database flushes) before it is killed
ENGINE_STOP_SECONDS = 20  # dockerd's own end
MOTD = "/run/lab-motd"  # printed once by the first shell (lab.bashrc)


class Persist:
    """BuiltinDriver's save and restore (a mixin)."""

    def _save_and_stop(self, node_id: str, key: str, limit_bytes: int,
                       store: saves.SaveStore) -> saves.SaveInfo:
        """Stop the node, keeping its disk, and store that disk under `key`.
        The node is removed whatever happens; SaveError says why no save."""
        started = time.monotonic()
        node = self._load(node_id)
        pid = self._running_pid(node_id)
        image = Path(node.extra["image"])
        kept = base_dir() / "saves-staging" / f"{node_id}.img"
        try:
            running = self._engine_running(node, pid)
            # Blocks the node freed go back as holes in its disk image: a
            # deleted image costs the save nothing.
            run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", "fstrim", "/var/lib/docker"], check=False)
            self._stop_engine(node, pid, running)
            self._kill_node(node_id)
            disk = self._node_dir(node_id) / "disk.img"
            self._wait_disk_released(disk)
            kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(disk, kept)
        except BaseException:
            with contextlib.suppress(OSError):
                kept.unlink()
            self._stop(node_id)
            raise
        self._stop(node_id)  # the rest of the node goes now: its save takes a while
        stopped = time.monotonic()
        staging = store.staging(key)
        try:
            size = saves.pack(kept, staging, {
                "node": node.name, "image": image.name, "disk": "disk.img",
                "uid_base": node.extra.get("uid_base", 0) if USERNS else 0,
                "running": running}, limit_bytes)
            info = store.put(key, staging)
        except BaseException:
            with contextlib.suppress(OSError):
                for path in staging.iterdir():
                    path.unlink()
                staging.rmdir()
            raise
        finally:
            with contextlib.suppress(OSError):
                kept.unlink()
        log.info("node %s saved as %s: %.1f MB in %.1f s (%.1f s to stop it)", node_id, key,
                 size / 1e6, time.monotonic() - started, stopped - started)
        return info

    def _engine_running(self, node: Node, pid: int) -> list:
        """The node's running containers, [[id, name]] (none if its engine does not answer)."""
        argv = self._enter_argv(pid, node.id, ["docker", "ps", "--no-trunc",
                                                "--format", "{{.ID}} {{.Names}}"])
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=15)
            if proc.returncode == 0:
                return [line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line]
        return []

    def _stop_engine(self, node: Node, pid: int, running: list) -> None:
        """The running containers stopped (STOP_SECONDS each for a clean end,
        then killed: a `sleep` ignores SIGTERM), then SIGTERM to the node's
        dockerd: it writes its state and ends; the node ends with it."""
        node_id = node.id
        if running:
            argv = self._enter_argv(pid, node_id, ["docker", "stop", "--time", str(STOP_SECONDS),
                                                   *(cid for cid, _ in running)])
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(argv, capture_output=True, timeout=STOP_SECONDS + 20)
        for candidate in node_pids(node_id):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{candidate}/comm").read_text().strip() == "dockerd":
                    os.kill(candidate, signal.SIGTERM)
        deadline = time.monotonic() + ENGINE_STOP_SECONDS
        while time.monotonic() < deadline and any(
                _comm(p) == "dockerd" for p in node_pids(node_id)):
            time.sleep(0.05)

    @staticmethod
    def _wait_disk_released(disk: Path, seconds: float = 15) -> None:
        """Until no loop device holds the node's disk: its file system is then
        unmounted, and consistent (the mount died with the node's namespace)."""
        deadline = time.monotonic() + seconds
        while True:
            held = subprocess.run(["losetup", "-j", str(disk)], capture_output=True, text=True)
            if held.returncode == 0 and not held.stdout.strip():
                return
            if time.monotonic() > deadline:
                raise saves.SaveError("the machine could not be saved: its disk stayed in use")
            time.sleep(0.05)

    def _restore_disk(self, node: Node, directory: Path, key: str, image: Path) -> dict:
        """The node's disk from the save `key` instead of a new one; its meta."""
        save_dir = saves.get_store().fetch(key)
        meta = saves.unpack(save_dir, directory)
        if meta.get("image") != image.name:
            raise saves.SaveError("the saved machine was made on an older node image; "
                                  "start fresh", permanent=True)
        disks.mount(directory)
        return meta

    @staticmethod
    def _restored_ownership(directory: Path, meta: dict, uid_base: int) -> None:
        """A restored disk's files moved to this node's uid range; the files
        just written for it (by the host's root) to the node's root."""
        if not USERNS:
            return
        for sub in ("upper", "work", "docker", "root"):
            saves.shift_owners(directory / "fs" / sub, meta.get("uid_base", 0), uid_base,
                               UID_RANGE, root_to=uid_base)

    def _resume_containers(self, node: Node, pid: int, meta: dict) -> None:
        """Start what was running at the save, and leave the first shell a
        line that says so."""
        running = meta.get("running") or []
        lines = ["Your machine is back as you left it."]
        if running:
            ids = [cid for cid, _ in running]
            argv = self._enter_argv(pid, node.id, ["docker", "start", *ids])
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(argv, capture_output=True, timeout=60)
            again = self._engine_running(node, pid)
            up = {cid for cid, _ in again}
            names = [name for cid, name in running if cid in up]
            failed = [name for cid, name in running if cid not in up]
            if names:
                lines.append("Running again: " + ", ".join(names) + ".")
            if failed:
                lines.append("Could not start again: " + ", ".join(failed) + ".")
        # Written from inside: the node's /run belongs to its user namespace,
        # where the host's root has no id to own a file with.
        argv = self._enter_argv(pid, node.id, ["sh", "-c", f"cat > {MOTD}"])
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(argv, input="".join(f"{line}\n" for line in lines).encode(),
                           capture_output=True, timeout=15)


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""
