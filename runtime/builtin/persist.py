"""Saving a node when its session ends, and starting a node from a save
(runtime/saves.py has the format and the store)."""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import struct
import time
from pathlib import Path

from .. import disks, nodefs, recorder, saves
from ..model import LabRuntimeError, Node
from .cgroups import node_pids
from .common import UID_RANGE, USERNS

log = logging.getLogger(__name__)

STOP_SECONDS = 3  # a container's time to end cleanly (a database flushes) before it is killed
ENGINE_STOP_SECONDS = 20  # dockerd's own end
MOTD = "/run/lab-motd"
# linux/fs.h: _IOWR('X', 119, int), _IOWR('X', 120, int), _IOWR('X', 121, struct fstrim_range)
FIFREEZE, FITHAW, FITRIM = 0xC0045877, 0xC0045878, 0xC0185879
_CONTAINER_LINE = re.compile(r"[0-9a-f]{64} \S+")  # printed once by the first shell (lab.bashrc)


class Persist:
    """BuiltinDriver's save and restore (a mixin)."""

    def _save_and_stop(self, node_id: str, key: str, limit_bytes: int,
                       store: saves.SaveStore) -> saves.SaveInfo:
        """Stop the node, keeping its disk, and store that disk under `key`.
        The node is removed whatever happens; SaveError says why no save.

        The node's mount namespace is held open (an fd on it) past the end of
        its processes: its disk stays mounted there, idle, and is frozen
        (fsfreeze: everything written is on the disk image, its journal
        clean) while it is packed. Waiting for the kernel to let go of the
        disk instead was at the mercy of anything else holding a file of the
        node open (seen: the recorder's pipe in its /run, on a test host)."""
        started = time.monotonic()
        node = self._load(node_id)
        pid = self._running_pid(node_id)
        image = Path(node.extra["image"])
        # Said first, so that reap_dead leaves a node whose engine stops on purpose.
        node = Node(**{**node.to_json(), "extra": {**node.extra, "state": "saving",
                                                  "saving_since": time.time()}})
        self._save(node)
        recorder.wake()  # the host's recorder lets go of the node's terminal now
        namespace = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
        disk = staging = None
        try:
            # The disk's directory, opened now (in the node's root: nodefs).
            # The trim and the freeze are asked of it directly, with no
            # program: `fstrim` or `fsfreeze` run in the node's mounts is the
            # node's own file, which the learner can replace, and it ran as
            # the host's root.
            try:
                disk = nodefs.open_in_root(f"/proc/{pid}/root", "/var/lib/docker",
                                           os.O_RDONLY | os.O_DIRECTORY, kind="dir")
            except OSError as exc:
                raise saves.SaveError("the machine could not be saved: its Docker disk is not "
                                      f"where it belongs ({exc.strerror})") from exc
            running = self._engine_running(node_id)
            # Blocks the node freed go back as holes in its disk image: a
            # deleted image costs the save nothing.
            _trim(disk)
            self._stop_engine(node_id, running)
            self._kill_node(node_id)
            stopped = time.monotonic()
            try:
                fcntl.ioctl(disk, FIFREEZE, 0)
            except OSError as exc:
                raise saves.SaveError("the machine could not be saved: its disk could not be "
                                      "brought to rest") from exc
            try:
                staging = store.staging(key)
                size = saves.pack(self._node_dir(node_id) / "disk.img", staging, {
                    "node": node.name, "image": image.name, "disk": "disk.img",
                    "uid_base": node.extra.get("uid_base", 0) if USERNS else 0,
                    "running": running}, limit_bytes)
            finally:
                with contextlib.suppress(OSError):
                    fcntl.ioctl(disk, FITHAW, 0)
            info = store.put(key, staging)
        except BaseException:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            if disk is not None:
                os.close(disk)
            os.close(namespace)
            self._stop(node_id)
        log.info("node %s saved as %s: %.1f MB in %.1f s (%.1f s to stop it)", node_id, key,
                 size / 1e6, time.monotonic() - started, stopped - started)
        return info

    def _node_exec(self, node_id: str, argv: list, timeout: float, input: bytes | None = None):
        """driver.exec (the node's environment and seccomp filter) from this
        synchronous code, which runs in a worker thread; None if it failed."""
        with contextlib.suppress(LabRuntimeError):
            return asyncio.run(self.exec(node_id, argv, timeout=timeout, input=input))
        return None

    def _engine_running(self, node_id: str) -> list:
        """The node's running containers, [[id, name]] (none if its engine does not answer)."""
        done = self._node_exec(node_id, ["docker", "ps", "--no-trunc",
                                         "--format", "{{.ID}} {{.Names}}"], 15)
        if done is None or not done.ok:
            return []
        # (exec's output has stderr in it too: only lines that are an id and a name)
        return [line.split(" ", 1) for line in done.output.splitlines()
                if _CONTAINER_LINE.fullmatch(line)]

    def _stop_engine(self, node_id: str, running: list) -> None:
        """The running containers stopped (STOP_SECONDS each for a clean end,
        then killed: a `sleep` ignores SIGTERM), then SIGTERM to the node's
        dockerd: it writes its state and ends; the node ends with it."""
        if running:
            self._node_exec(node_id, ["docker", "stop", "--time", str(STOP_SECONDS),
                                      *(cid for cid, _ in running)], STOP_SECONDS + 20)
        for candidate in node_pids(node_id):
            if _comm(candidate) == "dockerd":
                with contextlib.suppress(OSError):
                    os.kill(candidate, signal.SIGTERM)
        deadline = time.monotonic() + ENGINE_STOP_SECONDS
        while time.monotonic() < deadline and any(
                _comm(p) == "dockerd" for p in node_pids(node_id)):
            time.sleep(0.05)

    def _restore_disk(self, node: Node, directory: Path, key: str, image: Path) -> dict:
        """The node's disk from the save `key` instead of a new one; its meta."""
        began = time.monotonic()
        save_dir = saves.get_store().fetch(key)
        meta = saves.unpack(save_dir, directory)
        log.info("node %s: save %s unpacked in %.2f s", node.id, key, time.monotonic() - began)
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
        began, changed = time.monotonic(), 0
        for sub in ("upper", "work", "docker", "root"):
            changed += saves.shift_owners(directory / "fs" / sub, meta.get("uid_base", 0), uid_base,
                                          UID_RANGE, root_to=uid_base)
        log.info("restored disk: %d owner(s) moved to uid %d in %.2f s", changed, uid_base,
                 time.monotonic() - began)

    def _resume_containers(self, node: Node, meta: dict) -> None:
        """Start what was running at the save, and leave the first shell a
        line that says so."""
        running = meta.get("running") or []
        began = time.monotonic()
        lines = ["Your machine is back as you left it."]
        if running:
            self._node_exec(node.id, ["docker", "start", *(cid for cid, _ in running)], 60)
            up = {cid for cid, _ in self._engine_running(node.id)}
            names = [name for cid, name in running if cid in up]
            failed = [name for cid, name in running if cid not in up]
            if names:
                lines.append("Running again: " + ", ".join(names) + ".")
            if failed:
                lines.append("Could not start again: " + ", ".join(failed) + ".")
            log.info("node %s: %d container(s) started again in %.2f s", node.id, len(names),
                     time.monotonic() - began)
        # Written from inside: the node's /run belongs to its user namespace,
        # where the host's root has no id to own a file with.
        self._node_exec(node.id, ["sh", "-c", f"cat > {MOTD}"], 15,
                        input="".join(f"{line}\n" for line in lines).encode())


def _trim(fd: int) -> None:
    """FITRIM on the file system of `fd`: its free blocks are discarded (holes
    in a loop device's image). Nothing lost if it cannot."""
    whole = bytearray(struct.pack("QQQ", 0, 2**64 - 1, 0))  # struct fstrim_range
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, FITRIM, whole, True)


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""

