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

enter() starts a command inside a node: the helper's --enter mode joins
the node's cgroups and namespaces itself, where a shell and nsenter did.
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
   executes COMMAND; never executes anything without the filter.

   lab-seccomp-exec COMMAND [ARG...]
   lab-seccomp-exec --enter PID USERNS N CGROUP_DIR... -- COMMAND [ARG...]

   --enter runs COMMAND inside a node, as the shell line
   `for c in CGROUP_DIR...; do echo $$ > $c/cgroup.procs; done;
    exec nsenter -t PID [-U] -m -u -i -n -p -C -r -w -- COMMAND` did (USERNS
   "user" adds -U) without the two programs: a node command is started often
   (a terminal, a check, a watcher), and sh plus nsenter cost about 2 ms
   of CPU each time (python -m bench.execcost). The steps and their order are nsenter's (util-linux):
   every namespace but the user one while still host root, then the user
   namespace, root and working directory, uid and gid 0, and a fork so that
   COMMAND is in the node's pid namespace, the parent waiting to pass its
   status on. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sock_filter program[] = {
%(program)s
};

static int fail(const char *what, const char *detail) {
    fprintf(stderr, "lab-seccomp-exec: %%s%%s%%s: %%s\n", what, detail ? " " : "",
            detail ? detail : "", strerror(errno));
    return 126;
}

static const struct { const char *name; int type; } spaces[] = {
    /* nsenter's order; the user namespace is entered last, apart */
    {"cgroup", CLONE_NEWCGROUP}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS},
    {"net", CLONE_NEWNET}, {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS},
};
#define SPACES (sizeof spaces / sizeof spaces[0])

static int open_in(const char *pid, const char *name) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%%s/%%s", pid, name);
    return open(path, O_RDONLY | O_CLOEXEC);
}

/* Returns GO_ON in the process that goes on to execute COMMAND, else the
   exit status to end with (COMMAND's, passed on by the waiting parent);
   *command is set to COMMAND's argv. */
#define GO_ON -1
static int enter(int argc, char **argv, char ***command) {
    if (argc < 6)
        return errno = EINVAL, fail("--enter", "PID USERNS N DIR... -- COMMAND");
    const char *pid = argv[2];
    int userns = strcmp(argv[3], "user") == 0;
    int dirs = atoi(argv[4]);
    if (dirs < 0 || 5 + dirs + 1 >= argc || strcmp(argv[5 + dirs], "--") != 0)
        return errno = EINVAL, fail("--enter", "PID USERNS N DIR... -- COMMAND");
    *command = argv + 6 + dirs;

    /* The node's cgroups first, as host root (a frozen one was thawed by the caller). */
    char me[32];
    int len = snprintf(me, sizeof me, "%%d\n", (int) getpid());
    for (int i = 0; i < dirs; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%%s/cgroup.procs", argv[5 + i]);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, me, len) != len)
            return fail("cannot join", path);
        close(fd);
    }

    /* Everything is opened before anything is entered: /proc is the host's until then. */
    int fds[SPACES], user = -1, root, cwd;
    for (unsigned i = 0; i < SPACES; i++) {
        char name[16];
        snprintf(name, sizeof name, "ns/%%s", spaces[i].name);
        if ((fds[i] = open_in(pid, name)) < 0)
            return fail("cannot open the namespace", name);
    }
    if (userns && (user = open_in(pid, "ns/user")) < 0)
        return fail("cannot open the namespace", "ns/user");
    if ((root = open_in(pid, "root")) < 0 || (cwd = open_in(pid, "cwd")) < 0)
        return fail("cannot open the node's root or working directory", NULL);

    for (unsigned i = 0; i < SPACES; i++) {
        if (setns(fds[i], spaces[i].type) != 0)
            return fail("cannot enter the namespace", spaces[i].name);
        close(fds[i]);
    }
    if (userns) {
        if (setgroups(0, NULL) != 0)  /* while host root still may */
            return fail("setgroups", NULL);
        if (setns(user, CLONE_NEWUSER) != 0)
            return fail("cannot enter the namespace", "user");
        close(user);
    }
    if (fchdir(root) != 0 || chroot(".") != 0)
        return fail("cannot enter the node's root", NULL);
    if (fchdir(cwd) != 0)
        return fail("cannot enter the node's working directory", NULL);
    close(root);
    close(cwd);
    if (userns && (setgid(0) != 0 || setuid(0) != 0))
        return fail("cannot become the node's root", NULL);

    /* A pid namespace applies to children only. */
    signal(SIGCHLD, SIG_DFL);
    pid_t child = fork();
    if (child < 0)
        return fail("fork", NULL);
    if (child == 0)
        return GO_ON;
    int status;
    for (;;) {
        pid_t got = waitpid(child, &status, WUNTRACED);
        if (got < 0 && errno == EINTR)
            continue;
        if (got == child && WIFSTOPPED(status)) {
            /* stopped: stop as well, as nsenter does, and go on together */
            kill(getpid(), SIGSTOP);
            kill(child, SIGCONT);
            continue;
        }
        break;
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        kill(getpid(), WTERMSIG(status));
    }
    return 1;
}

int main(int argc, char **argv) {
    struct sock_fprog fprog = {sizeof program / sizeof program[0], program};
    char **command = argv + 1;
    if (argc < 2) {
        fputs("usage: lab-seccomp-exec [--enter PID USERNS N DIR... --] COMMAND [ARG...]\n",
              stderr);
        return 126;
    }
    if (strcmp(argv[1], "--enter") == 0) {
        int status = enter(argc, argv, &command);
        if (status != GO_ON)
            return status;
    }
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) {
        perror("lab-seccomp-exec: seccomp");
        return 126;
    }
    execvp(command[0], command);
    perror(command[0]);
    return 127;
}
"""


def enter(pid: int, userns: bool, cgroup_dirs, argv: list, by_shell: bool = False) -> tuple:
    """(argv, preexec_fn) for Popen and friends: `argv` runs inside a node,
    confined: in its cgroups `cgroup_dirs`, the namespaces, root and working
    directory of its init `pid` (its user namespace too when `userns`), as
    the node's root. The helper does it all (--enter); without a C compiler
    (or `by_shell`: python -m bench.execcost compares the two) a shell joins
    the cgroups and nsenter does the rest, under the helper or preexec_fn."""
    path = helper() if install.supported and not by_shell else None
    dirs = [str(d) for d in cgroup_dirs]
    if path is not None:
        return [path, "--enter", str(pid), "user" if userns else "-", str(len(dirs)), *dirs,
                "--", *argv], None
    join = "for c in %s; do echo $$ > \"$c/cgroup.procs\"; done; exec \"$@\"" % " ".join(dirs)
    return confine(["/bin/sh", "-c", join, "enter",
                    "nsenter", "-t", str(pid), *(["-U"] if userns else []),
                    "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--", *argv])


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
