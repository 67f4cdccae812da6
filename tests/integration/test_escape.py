"""The escape suite: attempts to break out of a node, every one of which must fail.

Each case names what it attacks and checks that it fails for the right
reason (the error the protection gives), and where it is safe, that the same
move works without the protection, so the test could fail.

Attacker: node1 of session A. Victims: node1 of session B, the host.
"""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from runtime import images
from runtime.builtin import BuiltinDriver, node_cgroup_dirs
from tests.support.hostnet import link_local_drops

from .conftest import NodeFactory

PERL_SYSCALL = "perl -e '$r = syscall(%d, 0, 0, 0, 0, 0); print \"ret=$r err=$!\\n\"'"


@pytest.fixture(scope="module")
def arena():
    """Two sessions (attacker and victim) and a secret on the host, for the module."""
    driver = BuiltinDriver()
    factory = NodeFactory(driver)
    marker = Path(f"/root/lab-escape-marker-{secrets.token_hex(4)}")
    secret = "host-secret-" + secrets.token_hex(8)
    marker.write_text(secret)
    marker.chmod(0o644)  # readable by anyone who can see it: only visibility protects it
    try:
        attacker = factory.start(name="node1")
        victim = factory.start(name="node1")
        factory.sh(victim, "echo victim-secret-b > /root/secret-b")
        yield {"factory": factory, "a": attacker, "b": victim, "marker": marker,
               "secret": secret, "driver": driver}
    finally:
        marker.unlink(missing_ok=True)
        factory.cleanup()


def sh(arena, script, node="a", timeout=60):
    return arena["factory"].sh(arena[node], script, timeout=timeout)


# ---- simple attempts: a command in the attacker node, and the error that stops it
FAILS = [
    # (what it attacks, command, pattern the failure must show)
    ("mount the host's disk: no block device is there",
     "mount /dev/vda /mnt", r"(does not exist|No such file|can't find|permission denied)"),
    ("make the host disk's device node",
     "mknod /tmp/vda b 254 0", r"Operation not permitted"),
    ("make /dev/mem",
     "mknod /tmp/mem c 1 1", r"Operation not permitted"),
    ("load a kernel module with modprobe",
     "modprobe dummy", r"(not permitted|not found|FATAL|No such file)"),
    ("init_module syscall", PERL_SYSCALL % 175, r"err=Operation not permitted"),
    ("finit_module syscall", PERL_SYSCALL % 313, r"err=Operation not permitted"),
    ("kexec_load syscall", PERL_SYSCALL % 246, r"err=Operation not permitted"),
    ("kexec_file_load syscall", PERL_SYSCALL % 320, r"err=Operation not permitted"),
    ("bpf syscall", PERL_SYSCALL % 321, r"err=Operation not permitted"),
    ("perf_event_open syscall", PERL_SYSCALL % 298, r"err=Operation not permitted"),
    ("open_by_handle_at (the 'shocker' escape)", PERL_SYSCALL % 304,
     r"err=Operation not permitted"),
    ("swapon syscall", PERL_SYSCALL % 167, r"err=Operation not permitted"),
    ("reboot syscall", PERL_SYSCALL % 169, r"err=Operation not permitted"),
    ("write kernel.core_pattern (runs a program as host root on a crash)",
     "echo '|/tmp/evil' > /proc/sys/kernel/core_pattern", r"(Permission denied|Read-only)"),
    # (Kernels built without sysrq or kcore have no such files: also a failure.)
    ("trigger sysrq", "echo b > /proc/sysrq-trigger",
     r"(Permission denied|Read-only|nonexistent|No such file)"),
    ("enable sysrq", "echo 1 > /proc/sys/kernel/sysrq",
     r"(Permission denied|Read-only|nonexistent|No such file)"),
    ("make the host panic on oops", "echo 1 > /proc/sys/kernel/panic_on_oops",
     r"(Permission denied|Read-only)"),
    ("turn off the host's address randomisation",
     "echo 0 > /proc/sys/kernel/randomize_va_space", r"(Permission denied|Read-only)"),
    ("drop the host's page cache", "echo 3 > /proc/sys/vm/drop_caches",
     r"(Permission denied|Read-only)"),
    ("read kernel memory", "head -c1 /proc/kcore",
     r"(Permission denied|Operation not permitted|No such file)"),
    ("write a host sysfs knob", "echo 1 > /sys/kernel/mm/ksm/run",
     r"(Permission denied|Read-only)"),
    ("set the host clock", "date -s '2001-01-01'", r"(not permitted|Operation)"),
    ("raise the node's own memory limit",
     "echo -1 > /sys/fs/cgroup/memory/memory.limit_in_bytes", r"Permission denied"),
    ("raise the node's own pid limit", "echo max > /sys/fs/cgroup/pids/pids.max",
     r"Permission denied"),
    ("allow all devices in the node's device cgroup",
     "echo a > /sys/fs/cgroup/devices/devices.allow", r"Permission denied"),
    ("set a cgroup release_agent (runs a program as host root)",
     "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg && "
     "echo /tmp/evil > /tmp/cg/release_agent",
     r"(Permission denied|No such file|can't create|Operation not permitted)"),
]


@pytest.mark.parametrize("what,command,reason", FAILS, ids=[f[0] for f in FAILS])
def test_attempt_fails(arena, what, command, reason):
    result = sh(arena, command + "; echo exit=$?")
    assert not result.output.rstrip().endswith("exit=0") or "err=" in result.output, \
        f"{what}: succeeded:\n{result.output}"
    assert re.search(reason, result.output), f"{what}: failed for another reason:\n{result.output}"


def test_control_perf_event_open_is_stopped_by_the_filter_not_by_chance(arena):
    """Without the node's seccomp filter, a user-namespace root reaches perf_event_open."""
    control = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c",
                              PERL_SYSCALL % 298], capture_output=True, text=True)
    assert "err=Operation not permitted" not in control.stdout, control.stdout
    assert "err=Operation not permitted" in sh(arena, PERL_SYSCALL % 298).output


def test_node_root_is_an_unprivileged_uid_on_the_host(arena):
    """Host `ps` shows node processes under the node's own uid range, never root."""
    for node in (arena["a"], arena["b"]):
        base = node.extra["uid_base"]
        assert base >= 100000
        pids = []
        for path in node_cgroup_dirs(node.id):
            if path.parent.parent.name == "pids":
                pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        assert pids
        for pid in pids:
            uid = int(re.search(r"Uid:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])
            assert base <= uid < base + 65536, f"pid {pid} runs as host uid {uid}"
    assert arena["a"].extra["uid_base"] != arena["b"].extra["uid_base"]


def test_privileged_container_in_the_node_finds_no_host_disk(arena):
    out = sh(arena, "docker run --rm --privileged alpine sh -c "
                    "'ls /dev; mknod /tmp/d b 254 0 && mount /tmp/d /mnt && echo MOUNTED'",
             timeout=120).output
    assert "vda" not in out and "MOUNTED" not in out


def test_overwriting_node_binaries_never_touches_the_shared_image(arena):
    image_ls = images.current_image() / "usr/bin/ls"
    before = image_ls.read_bytes()
    out = sh(arena, "cp /bin/true /usr/bin/ls && echo replaced; "
                    "echo x >> /proc/1/exe; echo exe=$?").output
    assert "replaced" in out  # the node may change its own copy...
    assert "Text file busy" in out and "exe=0" not in out  # ...not its running init...
    assert image_ls.read_bytes() == before  # ...and never the image every node shares
    assert "root" in sh(arena, "ls /", node="b").output


def test_workdir_through_leaked_fds_sees_no_host_files(arena):
    """`WORKDIR /proc/self/fd/N` (runc CVE-2024-21626) must not reach the host's files."""
    name = arena["marker"].name
    script = "; ".join(
        f"docker run --rm -w /proc/self/fd/{fd} alpine cat ../../../../../../../root/{name} "
        f"../../../../../../../../var/lib/dockerlab/images 2>&1" for fd in range(3, 10))
    out = sh(arena, script, timeout=180).output
    assert arena["secret"] not in out


def test_host_and_other_nodes_files_are_invisible(arena):
    name = arena["marker"].name
    out = sh(arena, f"cat /root/{name} /proc/1/root/root/{name} /proc/*/root/root/secret-b; "
                    f"find / -xdev \\( -name {name} -o -name secret-b \\) 2>/dev/null").output
    assert arena["secret"] not in out and "victim-secret-b" not in out
    assert arena["marker"].read_text() == arena["secret"]  # control: it is there on the host


def test_processes_of_the_host_and_other_nodes_are_out_of_reach(arena):
    victim_init = arena["b"].extra["pid"]
    mine = os.getpid()
    out = sh(arena, f"kill -0 {victim_init}; echo victim=$?; kill -9 {mine}; echo host=$?; "
                    f"perl -e 'print syscall(101, 16, {victim_init}, 0, 0) == -1 ? \"ptrace:$!\" : "
                    f"\"ptrace:ok\"'; ps -e -o comm= | sort | uniq -c").output
    assert "victim=1" in out and "host=1" in out
    assert "ptrace:No such process" in out
    # Its own engine only: one dockerd, no pytest, no host init.
    assert re.search(r"\b1 dockerd\b", out) and "pytest" not in out
    assert Path(f"/proc/{victim_init}").exists() and Path(f"/proc/{mine}").exists()


def test_other_sessions_are_unreachable_but_the_own_session_is(arena):
    factory = arena["factory"]
    peer = factory.start(session=arena["a"].session, name="node2")
    victim = arena["b"].address
    out = sh(arena, f"ping -c1 -W2 {victim}; echo ping=$?; "
                    f"curl -sS -m3 http://{victim}:2377/ ; echo curl=$?").output
    assert "ping=1" in out and "curl=0" not in out
    assert factory.exec(arena["a"], ["ping", "-c1", "-W2", peer.address]).exit_code == 0


def test_host_services_are_unreachable_except_the_registry(arena, host_service):
    gateway = arena["a"].extra["gateway"]
    host_ip = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()[0]
    out = sh(arena, f"nc -w2 {gateway} {host_service}; echo gw=$?; "
                    f"nc -w2 {host_ip} {host_service}; echo eth=$?; "
                    f"nc -w2 {gateway} 6390 </dev/null; echo redis=$?; "
                    f"curl -s -m3 -o /dev/null -w '%{{http_code}}' http://{gateway}:5000/v2/; "
                    f"echo; ").output
    assert "HOST-SERVICE" not in out
    assert "gw=1" in out and "eth=1" in out and "redis=1" in out
    # Control: the same service answers from the host itself.
    with socket.create_connection(("127.0.0.1", host_service), timeout=2) as s:
        assert s.recv(32) == b"HOST-SERVICE\n"


def test_cloud_metadata_address_is_blocked_by_the_firewall(arena):
    before = link_local_drops()
    out = sh(arena, "curl -sS -m3 http://169.254.169.254/latest/meta-data/; echo rc=$?").output
    assert "rc=0" not in out
    assert link_local_drops() > before, "the link-local rule should have dropped the attempt"


def test_node_firewall_changes_stay_in_the_node(arena):
    before = subprocess.run(["iptables", "-w", "-S", "LAB-FORWARD"], capture_output=True,
                            text=True).stdout
    sh(arena, "iptables -F; iptables -P FORWARD ACCEPT; iptables -t nat -F; "
              "sysctl -w net.ipv4.ip_forward=1")
    after = subprocess.run(["iptables", "-w", "-S", "LAB-FORWARD"], capture_output=True,
                           text=True).stdout
    assert before == after and "REJECT" in after


def test_hostname_change_stays_in_the_node(arena):
    host = socket.gethostname()
    sh(arena, "hostname evil-host")
    assert socket.gethostname() == host


def test_chroot_trick_does_not_leave_the_node(arena):
    name = arena["marker"].name
    out = sh(arena, "mkdir -p /tmp/j && perl -e 'chroot(\"/tmp/j\"); chdir(\"../../../../..\") "
                    "for 1..5; chroot(\".\"); exec(\"/bin/ls\", \"/root\")'").output
    assert name not in out


def test_links_in_the_node_never_lead_the_hosts_writes_and_reads_out(arena, tmp_path):
    """The host writes a session's /etc/hosts into its nodes when another node
    joins, and the recorder reads the node's command log. Links to host files
    made there (absolute paths, which a plain open of /proc/PID/root/... once
    resolved in the host's root) must not let either reach the host's files."""
    factory, attacker = arena["factory"], arena["a"]
    host_file = Path(f"/root/lab-escape-hosts-{secrets.token_hex(4)}")
    host_file.write_text("the host's own\n")
    mate = None
    try:
        sh(arena, f"rm -f /etc/hosts && ln -s {host_file} /etc/hosts && "
                  f"ln -sf {arena['marker']} /root/.lab_commands")
        mate = factory.start(session=attacker.session, name="node3")
        assert host_file.read_text() == "the host's own\n"
        # The joining node still learns its peer's name; the attacker's link stays a link.
        assert "node1" in factory.sh(mate, "cat /etc/hosts").output
        assert sh(arena, "readlink /etc/hosts").output.strip() == str(host_file)
        # The recorder's view of the command log: the link is not followed.
        with pytest.raises(OSError):
            arena["driver"].open_in_node(attacker.id, "/root/.lab_commands")
        fd = arena["driver"].open_in_node(attacker.id, "/etc/hostname")
        os.close(fd)  # a plain file in the node opens as before
    finally:
        host_file.unlink(missing_ok=True)
        if mate is not None:
            asyncio.run(arena["driver"].stop(mate.id))
        sh(arena, "rm -f /etc/hosts /root/.lab_commands; echo '127.0.0.1 localhost' > /etc/hosts")


def test_the_recorders_pipe_is_made_in_the_node_for_the_nodes_root(arena):
    """The recorder makes its FIFO from the host (driver.make_fifo_in_node): a
    link the learner left there is replaced, not followed, and the FIFO is
    the node's root's (its user namespace's root, not the host's)."""
    host_file = Path(f"/root/lab-escape-fifo-{secrets.token_hex(4)}")
    host_file.write_text("the host's own\n")
    try:
        sh(arena, f"ln -sf {host_file} /run/lab-record-escape.fifo")
        arena["driver"].make_fifo_in_node(arena["a"].id, "/run/lab-record-escape.fifo")
        assert host_file.read_text() == "the host's own\n"
        assert not stat.S_ISFIFO(os.lstat(host_file).st_mode)
        seen = sh(arena, "stat -c '%F %U %a' /run/lab-record-escape.fifo").output.strip()
        assert seen == "fifo root 600"
    finally:
        host_file.unlink(missing_ok=True)
        sh(arena, "rm -f /run/lab-record-escape.fifo")


# ---- exhaustion: one node's excess leaves other nodes and the host responsive

def _responsive(factory, node, seconds=10) -> float:
    began = time.monotonic()
    result = factory.exec(node, ["docker", "info", "--format", "{{.Name}}"], timeout=seconds)
    assert result.exit_code == 0, result.output
    return time.monotonic() - began


def test_fork_bomb_is_capped_by_the_pid_limit(arena, monkeypatch):
    monkeypatch.setenv("LAB_NODE_PIDS", "300")
    factory = arena["factory"]
    bomber = factory.start(name="node1")
    pids_max = next(p for p in node_cgroup_dirs(bomber.id) if p.parent.parent.name == "pids")
    assert (pids_max / "pids.max").read_text().strip() == "300"
    out = factory.sh(bomber, "bomb() { bomb | bomb & }; bomb; sleep 4; "
                             "cat /sys/fs/cgroup/pids/pids.current", timeout=20).output
    assert int((pids_max / "pids.max").read_text()) == 300
    assert int((pids_max / "pids.events").read_text().split()[1]) > 0, out  # limit was hit
    assert _responsive(factory, arena["b"]) < 5
    asyncio.run(arena["driver"].stop(bomber.id))  # stop copes with a node full of forks


def test_memory_hog_is_killed_inside_its_node(arena, monkeypatch):
    monkeypatch.setenv("LAB_NODE_MEMORY", "256m")
    factory = arena["factory"]
    hog = factory.start(name="node1")
    out = factory.sh(hog, "head -c 800m /dev/zero | tail > /dev/null; echo hog=$?", timeout=60)
    assert "hog=137" in out.output or "Killed" in out.output, out.output
    memory = next(p for p in node_cgroup_dirs(hog.id) if p.parent.parent.name == "memory")
    kills = dict(line.split() for line in (memory / "memory.oom_control").read_text().splitlines())
    assert int(kills["oom_kill"]) > 0  # the kernel's OOM killer acted in this node's cgroup
    assert _responsive(factory, hog) < 5  # the node itself lives on
    assert _responsive(factory, arena["b"]) < 5


def test_disk_filler_hits_its_own_disk_limit(arena, monkeypatch):
    monkeypatch.setenv("LAB_NODE_DISK", "1g")
    factory = arena["factory"]
    filler = factory.start(name="node1")
    free_before = os.statvfs("/var/lib/dockerlab").f_bavail * os.statvfs("/").f_frsize
    out = factory.sh(filler, "dd if=/dev/zero of=/root/fill bs=1M count=3000 2>&1",
                     timeout=120).output
    assert "No space left on device" in out
    free_after = os.statvfs("/var/lib/dockerlab").f_bavail * os.statvfs("/").f_frsize
    assert free_before - free_after < 1.2 * 2**30
    assert factory.sh(arena["b"], "dd if=/dev/zero of=/root/ok bs=1M count=10 && echo wrote"
                      ).output.strip().endswith("wrote")


def test_inode_filler_hits_its_own_disk_limit(arena, monkeypatch):
    monkeypatch.setenv("LAB_NODE_DISK", "256m")
    factory = arena["factory"]
    filler = factory.start(name="node1")
    out = factory.sh(filler, "mkdir /root/i && perl -e 'for (1..1000000) { open(F, \">/root/i/$_\") "
                             "or die \"stopped at $_: $!\\n\"; close F }'", timeout=120).output
    assert "No space left on device" in out
    assert factory.sh(arena["b"], "touch /root/still-ok && echo ok").output.strip() == "ok"


# ---- shared services: what every learner's node uses must not be writable by one

def _registry_digest(repository: str) -> str:
    """The manifest digest the registry serves for repository:latest (from the host)."""
    import urllib.request
    from runtime import registry
    from runtime.registry import MANIFEST_TYPES, url
    request = urllib.request.Request(url(f"/v2/{repository}/manifests/latest"), method="HEAD",
                                     headers={"Accept": MANIFEST_TYPES})
    with registry.opener.open(request) as r:
        return r.headers["Docker-Content-Digest"]


def test_the_lab_registry_refuses_writes_from_a_node(arena, lab_registry):
    from runtime.netplan import registry_host
    before = _registry_digest("library/alpine")
    base = f"http://{registry_host()}/v2/library/alpine"
    out = sh(arena, f"""
        code() {{ curl -s -m10 -o /dev/null -w '%{{http_code}}' "$@"; echo; }}
        echo upload=$(code -X POST {base}/blobs/uploads/)
        echo delete=$(code -X DELETE {base}/manifests/{before})
        echo tag=$(code -X PUT -H 'Content-Type: application/vnd.docker.distribution.manifest.v2+json' \
                        --data '{{"schemaVersion": 2}}' {base}/manifests/latest)
        echo read=$(code {base}/manifests/latest \
                         -H 'Accept: application/vnd.docker.distribution.manifest.v2+json')
    """).output
    found = dict(re.findall(r"^(\w+)=(\d+)$", out, re.M))
    # No upload session, no delete, no new tag: every write is refused at once.
    assert found["upload"] in ("405", "503"), out
    assert found["delete"] in ("405", "503"), out
    assert found["tag"] in ("405", "503"), out
    assert found["read"] == "200", out  # and reading still works
    assert _registry_digest("library/alpine") == before


def test_docker_push_from_a_node_fails_at_once_with_a_clear_error(arena, lab_registry):
    from runtime.netplan import registry_host
    began = time.monotonic()
    result = sh(arena, f"docker pull -q alpine >/dev/null && "
                       f"docker tag alpine {registry_host()}/library/alpine:latest && "
                       f"docker push {registry_host()}/library/alpine:latest", timeout=120)
    assert result.exit_code != 0, result.output
    assert re.search(r"(?i)(denied|unsupported|not allowed|read.?only)", result.output), \
        result.output
    # Pulling the image took most of that; the refused push itself is quick.
    assert time.monotonic() - began < 90, result.output


def test_the_registry_writer_is_out_of_every_nodes_reach(arena, lab_registry):
    """The lab's builds push through a writer on the host's loopback: a node
    cannot reach it, on the registry's address or the gateway."""
    from runtime import registry
    from runtime.netplan import registry_address
    gateway = arena["a"].extra["gateway"]
    with registry.writer() as writer:
        port = writer.rsplit(":", 1)[1]
        out = sh(arena, f"for host in {registry_address()} {gateway}; do "
                        f"curl -s -m3 -o /dev/null -w \"$host=%{{http_code}}\\n\" "
                        f"http://$host:{port}/v2/; done").output
        # Control: from the host the writer answers, and takes an upload.
        import urllib.request
        opener = registry.opener
        request = urllib.request.Request(f"{writer}/v2/library/alpine/blobs/uploads/",
                                         method="POST")
        with opener.open(request, timeout=5) as response:
            assert response.status == 202
            location = response.headers["Location"]
        opener.open(urllib.request.Request(
            location if location.startswith("http") else writer + location, method="DELETE"),
            timeout=5).close()  # cancel that upload session
    assert f"{registry_address()}=000" in out and f"{gateway}=000" in out, out
