"""Opening a file inside a running node from the host, so that nothing the
node holds can point the host anywhere else.

A learner is root in their node and may make any path there a symlink. The
host reaches a node's files through /proc/PID/root/<path>, and a plain open()
of that resolves an absolute symlink met on the way against the *host's*
root: a node's /etc/hosts made a link to /etc/passwd had the host (as root)
write the session's hosts file over its own /etc/passwd when a second node
joined. Here every path is resolved with openat2(RESOLVE_IN_ROOT): inside the
node's root, as the node itself would resolve it, never leaving it; the last
component is never followed if it is a symlink, and the file must be of the
kind the caller expects (a FIFO for the recorder's pipe, a socket for the
engine, a regular file for the rest).

The same holds before a node runs: a restored machine's writable layer is
the learner's, and the files the lab writes into it at start (hostname,
hosts, the lesson's files) once followed a link there onto the host's own
files. place() writes inside the layer only.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat

# linux/openat2.h
_SYS_OPENAT2 = 437  # the same number on every architecture (unified syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


KINDS = {"file": stat.S_ISREG, "fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK,
         "dir": stat.S_ISDIR}


def _openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    """openat2(dirfd, path) resolved inside dirfd, as if it were "/"."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path.lstrip("/") or "."), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{os.strerror(err)} (in the node)", path)
    return fd


def open_in_root(root: str, path: str, flags: int = os.O_RDONLY, kind: str = "file",
                 mode: int = 0o644) -> int:
    """A file descriptor of `path` (absolute, as the node sees it) under the
    directory `root` (a node's /proc/PID/root), resolved as if `root` were
    "/". OSError if it is missing, a symlink, or not of `kind` ("file",
    "fifo", "dir", "socket"; sockets are opened O_PATH, to connect through
    /proc/self/fd/N). The caller closes it."""
    check = KINDS[kind]
    if kind == "socket":
        flags = os.O_PATH
    # O_NONBLOCK on top: opening a FIFO nobody writes to must not hang a
    # caller that expected a regular file.
    dirfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _openat2(dirfd, path,
                      flags | os.O_NOFOLLOW | (os.O_NONBLOCK if kind != "socket" else 0),
                      mode if flags & os.O_CREAT else 0)
    finally:
        os.close(dirfd)
    try:
        if not check(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"not a {kind} (in the node)", path)
        if kind != "socket" and not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)  # as asked: the O_NONBLOCK above was for the open only
    except BaseException:
        os.close(fd)
        raise
    return fd


def place(root: str, path: str, data: bytes, mode: int = 0o644) -> None:
    """Put a file the lab owns at `path` in a node's writable layer `root` (a
    directory on the host, before the node runs), making its directories:
    all resolved inside `root`. A link the learner left at `path` itself (a
    restored machine's layer is theirs) is replaced by the file, not
    followed. Mode set on the file itself, never through a link."""
    parts = [p for p in path.split("/") if p]
    if not parts or ".." in parts:
        raise OSError(errno.EINVAL, "not an absolute path without '..'", path)
    top = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parent = _openat2(top, ".", os.O_PATH | os.O_DIRECTORY)
        for i, name in enumerate(parts[:-1]):
            inner = "/".join(parts[:i + 1])
            try:
                below = _openat2(top, inner, os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                os.mkdir(name, 0o755, dir_fd=parent)
                below = _openat2(top, inner, os.O_PATH | os.O_DIRECTORY)
            os.close(parent)
            parent = below
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                os.unlink(name, dir_fd=parent)  # a link, a FIFO...: the lab's file goes there
        except FileNotFoundError:
            pass
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode, dir_fd=parent)
        finally:
            os.close(parent)
    finally:
        os.close(top)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        os.fchmod(f.fileno(), mode)


def read_in_root(root: str, path: str, tail: int = 1 << 20) -> bytes:
    """The last `tail` bytes of a regular file in the node (see open_in_root)."""
    fd = open_in_root(root, path)
    with os.fdopen(fd, "rb") as f:
        f.seek(max(0, os.fstat(fd).st_size - tail))
        return f.read(tail)


def write_in_root(root: str, path: str, data: bytes) -> None:
    """Replace the content of a regular file in the node (made if missing)."""
    fd = open_in_root(root, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_fifo(root: str, path: str, owner: int = 0, mode: int = 0o600) -> None:
    """A new FIFO at `path` in the running node (its directory resolved inside
    `root`, as open_in_root does), owned by host uid and gid `owner` (the
    node's root, when the node has a user namespace). Whatever was at `path`
    (a link, a file, an older FIFO) is removed first, never followed."""
    directory, _, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise OSError(errno.EINVAL, "not a path to a file", path)
    top = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parent = _openat2(top, directory or "/", os.O_PATH | os.O_DIRECTORY)
    finally:
        os.close(top)
    try:
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        # Made as its owner, not chowned after: the node's file systems are
        # its user namespace's, where the host's root has no uid, and an
        # inode made by it there fails (EOVERFLOW).
        with _fs_identity(owner):
            os.mkfifo(name, mode, dir_fd=parent)
    finally:
        os.close(parent)


@contextlib.contextmanager
def _fs_identity(uid: int):
    """This thread makes files as `uid` (and gid `uid`) meanwhile. The file
    system ids are the calling thread's own in Linux (setfsuid(2)), so the
    process's other threads are untouched; back to root, the capabilities
    the change cleared come back (capabilities(7))."""
    if uid == 0:
        yield
        return
    old_gid = _libc.setfsgid(uid)
    old_uid = _libc.setfsuid(uid)
    try:
        yield
    finally:
        _libc.setfsuid(old_uid)
        _libc.setfsgid(old_gid)
