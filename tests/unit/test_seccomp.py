"""The node seccomp filter is installed before a node command runs, by the small
helper (so the site's processes start commands without forking themselves),
or by preexec_fn where no C compiler is found. Runs as root, like the suite."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime import seccomp
from runtime.builtin import cgroups

# syslog(SYSLOG_ACTION_SIZE_BUFFER): harmless, allowed to host root, denied by the filter.
SYSLOG_SIZE = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
               "print(libc.syscall(103, 10, None, 0), ctypes.get_errno())")


@pytest.fixture
def fresh(monkeypatch):
    """No helper found or built yet in this process."""
    monkeypatch.setattr(seccomp, "_helper", None)
    monkeypatch.setattr(seccomp, "_no_helper", False)


def run(argv, preexec):
    return subprocess.run(argv, capture_output=True, text=True, preexec_fn=preexec).stdout.split()


def test_the_helper_installs_the_filter_and_needs_no_preexec_fn(fresh, runtime_dir):
    assert run([sys.executable, "-c", SYSLOG_SIZE], None)[0] != "-1"  # the control: allowed
    argv, preexec = seccomp.confine([sys.executable, "-c", SYSLOG_SIZE])
    assert preexec is None
    assert argv[0] == str(seccomp.helper_path()) and argv[0].startswith(str(runtime_dir))
    assert run(argv, preexec) == ["-1", "1"]  # EPERM
    status = subprocess.run(seccomp.confine(["grep", "Seccomp:", "/proc/self/status"])[0],
                            capture_output=True, text=True).stdout
    assert status.split() == ["Seccomp:", "2"]


def test_without_a_compiler_preexec_fn_installs_the_same_filter(fresh, monkeypatch):
    monkeypatch.setattr(seccomp.shutil, "which", lambda name: None)
    argv, preexec = seccomp.confine([sys.executable, "-c", SYSLOG_SIZE])
    assert argv == [sys.executable, "-c", SYSLOG_SIZE] and preexec is seccomp.install
    assert run(argv, preexec) == ["-1", "1"]


def test_a_changed_filter_is_a_new_helper_never_a_stale_one(monkeypatch):
    before = seccomp.helper_path()
    monkeypatch.setitem(seccomp.DENIED, "mbind", 237)
    assert seccomp.helper_path() != before


@pytest.fixture
def target(tmp_path):
    """A process in namespaces of its own (user, pid, mount, uts, ipc, net,
    cgroup), as a node's init is, with its working directory in tmp_path;
    and a cgroup for an entering process to join. Both removed after."""
    pids = next(((name, opts) for name, opts in cgroups.cgroup_hierarchies()
                 if "pids" in opts.split(",") or opts == "cgroup2"), None)
    assert pids, "no pids or cgroup v2 hierarchy on this host"
    name = pids[0]
    group = cgroups.node_cgroup_dirs(f"seccomp-enter-{os.getpid()}", [pids])[0]
    group.mkdir(parents=True)
    proc = subprocess.Popen(
        ["unshare", "--fork", "--pid", "--mount-proc", "--uts", "--ipc", "--net", "--cgroup",
         "--user", "--map-root-user", "sh", "-c", "hostname inner && echo up && exec sleep 60"],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        # The sleep (the namespaces' pid 1) is unshare's only child.
        inner = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        yield inner, group, name
    finally:
        proc.kill()
        proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(inner, signal.SIGKILL)
        for _ in range(100):  # the kernel frees a cgroup shortly after its last task
            with contextlib.suppress(OSError):
                group.rmdir()
            if not group.exists():
                break
            time.sleep(0.02)


INSIDE = ("hostname; id -u; pwd; echo $$; grep Seccomp: /proc/self/status; "
          "readlink /proc/self/ns/net /proc/self/ns/mnt /proc/self/ns/user; cat /proc/self/cgroup")


@pytest.mark.parametrize("compiler, by_shell", [(True, False), (True, True), (False, False)],
                         ids=["helper", "sh-and-nsenter-under-the-helper", "no-compiler"])
def test_enter_runs_a_command_inside_the_node_as_its_root_confined(fresh, monkeypatch, target,
                                                                   tmp_path, compiler, by_shell):
    if not compiler:
        monkeypatch.setattr(seccomp.shutil, "which", lambda name: None)
    pid, group, hierarchy = target
    argv, preexec = seccomp.enter(pid, True, [group], ["sh", "-c", INSIDE], by_shell=by_shell)
    assert (argv[0] == str(seccomp.helper_path())) == compiler and (preexec is None) == compiler
    assert (argv[1] == "--enter") == (compiler and not by_shell)
    done = subprocess.run(argv, capture_output=True, text=True, preexec_fn=preexec)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    node_ns = [os.readlink(f"/proc/{pid}/ns/{ns}") for ns in ("net", "mnt", "user")]
    assert lines[:3] == ["inner", "0", str(tmp_path)]
    assert int(lines[3]) > 1  # a pid of the node's pid namespace
    assert lines[4].split() == ["Seccomp:", "2"]
    assert lines[5:8] == node_ns
    # In the cgroup given (seen from the node's cgroup namespace).
    assert any(line.endswith(f"/{group.name}") for line in lines[8:]), lines[8:]


def test_enter_passes_the_command_status_on_and_names_what_failed(fresh, target):
    pid, group, _ = target
    run = lambda *argv: subprocess.run(seccomp.enter(pid, True, [group], list(argv))[0],
                                       capture_output=True, text=True)
    assert run("echo", "once").stdout == "once\n"  # run by the child only, not its waiting parent
    assert run("sh", "-c", "exit 7").returncode == 7
    assert run("sh", "-c", "kill -TERM $$").returncode == -signal.SIGTERM
    assert run("no-such-command").returncode == 127
    gone = subprocess.run(seccomp.enter(pid, True, [group / "missing"], ["true"])[0],
                          capture_output=True, text=True)
    assert gone.returncode == 126 and "cannot join" in gone.stderr and "missing" in gone.stderr
