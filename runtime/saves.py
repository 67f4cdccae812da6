"""Saved machines: a node's disk kept after its session, to start from again.

A save is the node's own disk (runtime/disks.py: its writable layer, /root
with the shell history, and Docker's data), taken after the node's engine has
stopped cleanly, as a sparse tar compressed with zstd: only the blocks the node
wrote, so a node that pulled three images saves in a few hundred MB. Beside it,
meta.json says what a restore needs to know (the node image it was made on, the
uid range its files belong to, the containers that were running).

Saves live in a SaveStore. The default, DirectoryStore, is a directory
($LAB_SAVE_DIR, default <runtime dir>/saves): on one machine nothing more is
needed; with sandbox hosts on several machines it must be one directory they
all mount (NFS or the like), or another SaveStore. A save is written under a
temporary name and renamed when complete, so a save cut short (a crash, a
full disk, a site restart) is never restored: it is discarded.

Keys are "<owner>/<lesson>/<node>", e.g. "u12/first-containers/node1".
"""
from __future__ import annotations

import abc
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .model import LabRuntimeError
from .paths import base_dir

FORMAT = 1
DATA = "disk.tar.zst"
META = "meta.json"
_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class SaveError(LabRuntimeError):
    """A save could not be made or used; `reason` says why, for the learner."""


@dataclass
class SaveInfo:
    key: str
    size: int  # bytes in the store
    created: float
    meta: dict = field(default_factory=dict)


def check_key(key: str) -> str:
    parts = key.split("/")
    if len(parts) != 3 or not all(_KEY_PART.fullmatch(p) for p in parts):
        raise ValueError(f"invalid save key {key!r}: want owner/lesson/node")
    return key


class SaveStore(abc.ABC):
    """Where saves live. put() takes a finished save's files; fetch() gives a
    local directory with them for the time of a restore."""

    def staging(self, key: str) -> Path:
        """A fresh local directory to pack a save of `key` into, before put()."""
        path = base_dir() / "saves-staging" / check_key(key).replace("/", "_")
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)
        return path

    @abc.abstractmethod
    def put(self, key: str, directory: Path) -> SaveInfo:
        """Store the save packed in `directory` (from staging()) under `key`,
        replacing an older save of that key only once the new one is complete."""

    @abc.abstractmethod
    def fetch(self, key: str) -> Path:
        """A local directory holding the save's DATA and META (SaveError: none)."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove a save; False if there was none."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list:
        """Every complete save whose key starts with `prefix`: [SaveInfo]."""

    def usage(self, owner: str) -> int:
        return sum(s.size for s in self.list(owner + "/"))


class DirectoryStore(SaveStore):
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root or os.environ.get("LAB_SAVE_DIR") or base_dir() / "saves")

    def _dir(self, key: str) -> Path:
        return self.root / check_key(key)

    def staging(self, key: str) -> Path:
        # In the store's own directory: put() is then a rename. Its name
        # starts with a dot and says "partial": list() never shows it, and
        # discard_partial() removes it if the save was cut short.
        target = self._dir(key)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700)
        return path

    def put(self, key: str, directory: Path) -> SaveInfo:
        target = self._dir(key)
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        try:
            if target.exists():
                os.rename(target, old)
            os.rename(directory, target)
        except OSError as e:
            shutil.rmtree(directory, ignore_errors=True)
            raise SaveError(f"the save could not be stored: {e.strerror or e}") from e
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return self._info(key, target)

    def fetch(self, key: str) -> Path:
        target = self._dir(key)
        if not (target / META).exists() or not (target / DATA).exists():
            raise SaveError("there is no saved machine to resume", permanent=True)
        return target

    def delete(self, key: str) -> bool:
        target = self._dir(key)
        if not target.exists():
            return False
        shutil.rmtree(target, ignore_errors=True)
        return True

    def list(self, prefix: str = "") -> list:
        found = []
        if not self.root.exists():
            return found
        for meta in sorted(self.root.glob(f"*/*/*/{META}")):
            key = str(meta.parent.relative_to(self.root))
            if key.startswith(prefix):
                with contextlib.suppress(OSError, ValueError):
                    found.append(self._info(key, meta.parent))
        return found

    def discard_partial(self, older_than: float = 3600) -> list:
        """Saves cut short (a crash mid-save): removed once surely abandoned."""
        gone = []
        if self.root.exists():
            for path in self.root.glob("*/*/.*.partial-*"):
                if time.time() - path.stat().st_mtime > older_than:
                    shutil.rmtree(path, ignore_errors=True)
                    gone.append(str(path))
        return gone

    @staticmethod
    def _info(key: str, directory: Path) -> SaveInfo:
        meta = json.loads((directory / META).read_text())
        size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
        return SaveInfo(key=key, size=size, created=meta.get("created", 0), meta=meta)


def get_store() -> SaveStore:
    return DirectoryStore()


# ---- packing a node's disk ----------------------------------------------------------

def pack(image: Path, out_dir: Path, meta: dict, limit_bytes: int = 0) -> int:
    """Compress the disk image `image` (sparse) into out_dir/DATA, write META;
    the save's size. SaveError past `limit_bytes` (0: no limit) or on failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / DATA
    # tar --sparse reads only the blocks the file has (SEEK_DATA), so a 20 GB
    # disk that holds 300 MB costs 300 MB of reading.
    tar = subprocess.Popen(["tar", "--sparse", "-cf", "-", "-C", str(image.parent),
                            f"--transform=s|.*|{meta.get('disk', 'disk.img')}|", image.name],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(data, "wb") as out:
        zstd = subprocess.run(["zstd", "-q", "-3", "-T0", "-c"], stdin=tar.stdout, stdout=out,
                              stderr=subprocess.PIPE)
    tar.stdout.close()
    tar_err = tar.stderr.read().decode(errors="replace").strip()
    tar.wait()
    if tar.returncode or zstd.returncode:
        problem = tar_err or zstd.stderr.decode(errors="replace").strip()
        if "No space left" in problem:
            raise SaveError("the machine could not be saved: the disk for saves is full")
        raise SaveError(f"the machine could not be saved: {problem[-300:]}")
    size = data.stat().st_size
    if limit_bytes and size > limit_bytes:
        raise SaveError(f"the machine was not saved: it takes {size / 2**20:.0f} MB, more than "
                        f"the {limit_bytes / 2**20:.0f} MB left of your space for saved machines",
                        permanent=True)
    (out_dir / META).write_text(json.dumps({**meta, "format": FORMAT, "created": time.time(),
                                            "size": size}))
    return size


def unpack(save_dir: Path, into: Path) -> dict:
    """Restore the disk image of the save in `save_dir` into directory `into`;
    the save's meta. SaveError if it is damaged."""
    try:
        meta = json.loads((save_dir / META).read_text())
    except (OSError, ValueError) as e:
        raise SaveError("the saved machine is damaged (its description cannot be read); "
                        "start fresh", permanent=True) from e
    if meta.get("format") != FORMAT:
        raise SaveError("the saved machine was made by another version of the lab; start fresh",
                        permanent=True)
    into.mkdir(parents=True, exist_ok=True)
    zstd = subprocess.Popen(["zstd", "-q", "-d", "-c", str(save_dir / DATA)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tar = subprocess.run(["tar", "--sparse", "-xf", "-", "-C", str(into)], stdin=zstd.stdout,
                         capture_output=True)
    zstd.stdout.close()
    zstd.wait()
    if zstd.returncode or tar.returncode or not (into / meta.get("disk", "disk.img")).exists():
        raise SaveError("the saved machine is damaged (its data does not unpack); start fresh",
                        permanent=True)
    return meta


def shift_owners(root: Path, old_base: int, new_base: int, span: int, root_to=None) -> int:
    """Files that belonged to a node with uid range [old_base, old_base+span)
    given to the same ids in [new_base, ...): a save restored on a node with
    another range. Files of the host's root go to `root_to` if given; other
    ids stay. The count of entries changed."""
    changed = 0

    def shifted(value: int) -> int:
        if old_base <= value < old_base + span:
            return value - old_base + new_base
        return root_to if value == 0 and root_to is not None else value

    def shift(path: str) -> None:
        nonlocal changed
        st = os.lstat(path)
        uid, gid = shifted(st.st_uid), shifted(st.st_gid)
        if (uid, gid) != (st.st_uid, st.st_gid):
            os.lchown(path, uid, gid)
            # chown clears set-uid and set-gid bits: put them back.
            if st.st_mode & 0o6000 and not os.path.islink(path):
                os.chmod(path, st.st_mode & 0o7777)
            changed += 1

    shift(str(root))
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            shift(os.path.join(directory, name))
    return changed
