"""A seccomp filter for everything that runs in a node.

User namespaces already keep node root away from the host; this filter
removes kernel interfaces a Docker host never needs and that have a history
of privilege escalation (module loading, kexec, eBPF, perf events, handle
opening, swap, clock and time setting...). Docker's own default profile
still applies, stacked, to the containers a learner starts inside the node.

The filter is installed in the child right before exec (Popen's
preexec_fn) by a process that is still host root, so no_new_privs is not
needed and set-uid programs inside the node keep working. It is inherited
by every descendant and cannot be removed.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import platform
import struct

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
