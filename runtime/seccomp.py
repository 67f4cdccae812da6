"""A seccomp filter for everything that runs in a node.

User namespaces already keep node root away from the host; this filter
removes kernel interfaces a Docker host never needs and that have a history
of privilege escalation (module loading, kexec, eBPF, perf events, handle
opening, swap, clock and time setting...). Docker's own default profile
still applies, stacked, to the containers a learner starts inside the node.

The filter is installed right before the command is executed, by a process
that is still host root, so no_new_privs is not needed and set-uid programs
inside the node keep working. It is inherited by every descendant and cannot
be removed. Two ways, the same filter (confine() picks):

- a tiny C helper, built on first use from the source below with the
  filter compiled in (`lab-seccomp-exec-<digest> COMMAND...`: install, then
  exec). The site's processes start node commands all the time (a terminal,
  an engine watcher, a check); with the helper Python can start them with
  vfork, about 1 ms of CPU, where a preexec_fn makes it fork the whole
  process and run Python in the child, about 11 ms (a class of forty
  arriving spent a seventh of the web processes' CPU there);
- Popen's preexec_fn (Installer below), where no C compiler is found.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import platform
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from .paths import base_dir, file_lock

log = logging.getLogger(__name__)

AUDIT_ARCH_X86_64 = 0xC000003E
SYS_SECCOMP_X86_64 = 317
X32_SYSCALL_BIT = 0x40000000

# x86_64 numbers of the denied calls.
DENIED = {
    "syslog": 103, "vhangup": 153, "adjtimex": 159, "acct": 163, "settimeofday": 164,
    "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "create_module": 174, "init_module": 175, "delete_module": 176,
    "get_kernel_syms": 177, "query_module": 178, "quotactl": 179, "nfsservctl": 180,
    "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246,
    "perf_event_open": 298, "open_by_handle_at": 304, "clock_adjtime": 305,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
}

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_RET_K = 0x06
RET_ALLOW = 0x7FFF0000
RET_EPERM = 0x00050000 | errno.EPERM


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def filter_program() -> bytes:
    """The classic-BPF program: EPERM for the denied calls and foreign ABIs."""
    numbers = sorted(DENIED.values())
    n = len(numbers)
    prog = [
        _insn(BPF_LD_W_ABS, 0, 0, 4),                       # A = arch
        _insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),          # native? skip next
        _insn(BPF_RET_K, 0, 0, RET_EPERM),                  # i386 ABI: numbers differ
        _insn(BPF_LD_W_ABS, 0, 0, 0),                       # A = syscall number
        _insn(BPF_JGE_K, n + 1, 0, X32_SYSCALL_BIT),        # x32 ABI -> EPERM
    ]
    for i, number in enumerate(numbers):
        # match: jump to the EPERM return after the remaining checks and ALLOW
        prog.append(_insn(BPF_JEQ_K, n - i, 0, number))
    prog += [_insn(BPF_RET_K, 0, 0, RET_ALLOW), _insn(BPF_RET_K, 0, 0, RET_EPERM)]
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Installer:
    """Everything prepared in the parent, so the forked child only makes one call."""

    def __init__(self):
        self.supported = platform.machine() == "x86_64"
        if not self.supported:
            log.warning("no seccomp filter for nodes on %s: only x86_64 is wired",
                        platform.machine())
            return
        program = filter_program()
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._fprog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def __call__(self) -> None:
        """preexec_fn: install the filter in this (child) process."""
        if self.supported and self._libc.syscall(SYS_SECCOMP_X86_64, 1, 0,
                                                 ctypes.byref(self._fprog)) != 0:
            raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER) failed")


install = Installer()


HELPER_SOURCE = r"""/* Installs the lab's node seccomp filter (runtime/seccomp.py), then
   executes COMMAND; never executes anything without the filter. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct sock_filter program[] = {
%(program)s
};

int main(int argc, char **argv) {
    struct sock_fprog fprog = {sizeof program / sizeof program[0], program};
    if (argc < 2) {
        fputs("usage: lab-seccomp-exec COMMAND [ARG...]\n", stderr);
        return 126;
    }
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) {
        perror("lab-seccomp-exec: seccomp");
        return 126;
    }
    execvp(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
"""


def helper_source() -> str:
    program = filter_program()
    lines = []
    for at in range(0, len(program), 8):
        code, jt, jf, k = struct.unpack("HBBI", program[at:at + 8])
        lines.append(f"    {{0x{code:02x}, {jt}, {jf}, 0x{k:08x}}},")
    return HELPER_SOURCE % {"program": "\n".join(lines)}


def helper_path() -> Path:
    """Where this filter's helper lives: its name carries a digest of its
    source, so a changed filter is a new helper, never a stale one."""
    digest = hashlib.sha256(helper_source().encode()).hexdigest()[:12]
    return base_dir() / "bin" / f"lab-seccomp-exec-{digest}"


_helper: Optional[str] = None  # its path once built or found
_no_helper = False  # no compiler here: preexec_fn from now on


def helper() -> Optional[str]:
    """The helper's path, built if missing (under a host-wide lock); None
    when it cannot be built here (no C compiler), which is logged once."""
    global _helper, _no_helper
    if _helper is not None or _no_helper:
        return _helper
    path = helper_path()
    if not path.exists():
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            log.warning("no C compiler (cc): node commands start with Python's preexec_fn, "
                        "which forks the whole process each time; install gcc to avoid it")
            _no_helper = True
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock("seccomp-helper.lock"):
            if not path.exists():
                with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                    source = Path(tmp) / "lab-seccomp-exec.c"
                    source.write_text(helper_source())
                    built = Path(tmp) / "lab-seccomp-exec"
                    done = subprocess.run([compiler, "-O2", "-o", str(built), str(source)],
                                          capture_output=True, text=True)
                    if done.returncode:
                        log.warning("could not build the seccomp helper, using preexec_fn: %s",
                                    done.stderr.strip()[-500:])
                        _no_helper = True
                        return None
                    os.chmod(built, 0o755)
                    os.replace(built, path)
    _helper = str(path)
    return _helper


def confine(argv: list) -> tuple:
    """(argv, preexec_fn) for Popen and friends: `argv` runs with the node
    filter installed, by the helper when there is one (preexec_fn None, so
    the process is started with vfork), else by Installer in the child."""
    if not install.supported:
        return argv, None
    path = helper()
    if path is not None:
        return [path, *argv], None
    return argv, install
