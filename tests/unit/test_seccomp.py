"""The node seccomp filter is installed before a node command runs, by the small
helper (so the site's processes start commands without forking themselves),
or by preexec_fn where no C compiler is found. Runs as root, like the suite."""
from __future__ import annotations

import subprocess
import sys

import pytest

from runtime import seccomp

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
