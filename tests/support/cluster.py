"""Sandbox hosts on this one machine, for the cluster tests and the cluster bench.

Each host is a network namespace of its own, joined to a test bridge in the
main namespace (10.77.0.1/24) with its own address (10.77.0.N). Its processes
share one mount namespace of their own, where /sys/class/net shows the host's
interfaces (the runtime reads them there), and have their own runtime
directory, uid range and cgroup parent. A host runs what a joined host runs:
a read-only lab registry for its nodes (serving this machine's image storage),
the Celery node worker (with the heartbeat), the checks worker and the gateway
(Daphne, labs.gateway_asgi) on 10.77.0.N:8001. They reach the site's Redis and
PostgreSQL at 10.77.0.1. The hosts have no default route: their traffic goes
to the bridge and nowhere else.

Everything is removed on the way out, also when a test fails: every host's
processes and nodes, their cgroups, mounts and runtime directories, the
namespaces and the bridge.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.livesite import ROOT, VENV_BIN, wait_for

SUBNET = "10.77.0"
SITE_ADDRESS = f"{SUBNET}.1"
GATEWAY_PORT = 8001
CGROUP_ROOT = Path("/sys/fs/cgroup")

# In the host's own mount namespace: a sysfs of its network namespace over
# the net directories of /sys (cgroups and the rest stay the machine's), then
# the host joins the site as an operator would have it join: `python -m
# runtime host join`, which asks the site, writes the answer and runs the
# host's processes (scripts/host.Procfile, under honcho).
HOST_SCRIPT = r"""
set -e
mkdir -p "$WORK/sys"
mount -t sysfs sysfs "$WORK/sys"
mount --bind "$WORK/sys/class/net" /sys/class/net
mount --bind "$WORK/sys/devices/virtual/net" /sys/devices/virtual/net
# The host reaches no resolver: its nodes' DNS goes to the site's address on
# the bridge, where no port 53 is open, and fails at once rather than after a
# resolver's timeouts (10 s in every `docker pull`), as where DNS answers.
printf 'nameserver %s\n' "$SITE_ADDRESS" > "$WORK/resolv.conf"
mount --bind "$WORK/resolv.conf" /etc/resolv.conf
ip link set lo up
cd "$ROOT"
exec "$PY" -m runtime host join --site "$SITE" --token "$TOKEN" --name "$LAB_HOST_NAME" \
    --gateway-url "$LAB_GATEWAY_URL" --no-setup
"""


def run(*argv, check=True):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    name: str
    index: int
    tag: str
    work: Path
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index + 2}"

    @property
    def netns(self) -> str:
        return f"lab{self.tag}{self.name}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.address}:{GATEWAY_PORT}"

    @property
    def ports_domain(self) -> str:
        """Its published ports open on n<node>-<port>.<this> (its gateway)."""
        return f"{self.name}.lab.test"

    @property
    def cgroup_parent(self) -> str:
        return f"dockerlab-{self.tag}-{self.name}"

    def log(self, name: str = "") -> str:
        """The host's output (honcho's), or the lines of one of its processes."""
        path = self.work / "host.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        if not name:
            return text
        return "".join(line for line in text.splitlines(keepends=True)
                       if f" {name}.1 " in line[:40])

    def wait_logged(self, name: str, text: str, seconds: float = 20) -> str:
        """The lines of process `name` once `text` is among them. A line comes
        some time after what it tells of: through the process's output, then
        honcho's, into host.log; on a busy machine a test that read the log at
        once missed a gateway's request it had just been answered by."""
        deadline = time.monotonic() + seconds
        while True:
            lines = self.log(name)
            if text in lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.1)

    def start(self) -> None:
        log = open(self.work / "host.log", "ab")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "nsenter",
             f"--net=/run/netns/{self.netns}", "bash", "-c", HOST_SCRIPT],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"host {self.name} ended: {self.log()[-2000:]}")
        try:
            with urllib.request.urlopen(self.gateway_url + "/health", timeout=2) as resp:
                gateway = resp.status == 200
        except OSError:
            gateway = False
        return gateway and all(" ready." in self.log(n) for n in ("nodes", "checks"))

    def pids(self) -> set:
        """The host's own processes: everything in its network namespace (honcho
        starts each of its processes in a session of its own)."""
        done = run("ip", "netns", "pids", self.netns, check=False)
        return {int(p) for p in done.stdout.split()} if done.returncode == 0 else set()

    def node_pids(self) -> set:
        pids = set()
        for procs in CGROUP_ROOT.glob(f"*/{self.cgroup_parent}/*/cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
        return pids

    def kill(self) -> None:
        """The host dies at once: every process of it and of its nodes, SIGKILLed."""
        # A frozen process dies only once thawed (the lab freezes no node
        # now, but a machine's death would take frozen ones all the same).
        for state in CGROUP_ROOT.glob(f"freezer/{self.cgroup_parent}/*/freezer.state"):
            with contextlib.suppress(OSError):
                state.write_text("THAWED")
        for _ in range(50):
            pids = self.pids() | self.node_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        """As an operator stops it (honcho hears SIGTERM and ends its processes);
        the nodes stay, for the host's next start to reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.pids():  # what did not end in time
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove_nodes(self) -> None:
        """Every node this host's runtime still has, removed from inside the host."""
        script = ("import asyncio\nfrom runtime import get_driver\nd = get_driver()\n"
                  "for n in d.list_nodes():\n    asyncio.run(d.stop(n.id))\n")
        subprocess.run(["unshare", "--mount", "--propagation", "private", "nsenter",
                        f"--net=/run/netns/{self.netns}", "bash", "-c",
                        'mkdir -p "$WORK/sys2" && mount -t sysfs sysfs "$WORK/sys2" && '
                        'mount --bind "$WORK/sys2/class/net" /sys/class/net && '
                        'mount --bind "$WORK/sys2/devices/virtual/net" /sys/devices/virtual/net && '
                        'cd "$ROOT" && exec "$PY" -c "$SCRIPT"'],
                       env={**self.env, "SCRIPT": script}, capture_output=True, timeout=120)

    def remove_cgroups(self) -> None:
        for parent in CGROUP_ROOT.glob(f"*/{self.cgroup_parent}"):
            for child in sorted(parent.glob("*/"), reverse=True):
                with contextlib.suppress(OSError):
                    child.rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()


@dataclass
class Cluster:
    hosts: list
    bridge: str
    database_url: str = ""
    tag: str = ""

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def names(self) -> dict:
        """{ports domain: gateway address}: the DNS a client of the cluster needs."""
        return {h.ports_domain: h.address for h in self.hosts}

    def wait_ready(self, hosts=None, seconds: float = 120) -> None:
        for host in hosts or self.hosts:
            wait_for(host.ready, seconds, f"sandbox host {host.name} to be ready", interval=0.5)

    def logs(self) -> str:
        return "\n".join(f"----- {h.name} {name} -----\n{h.log(name)[-3000:]}"
                         for h in self.hosts
                         for name in ("host", "nodes", "checks", "gateway", "recorder"))


def _host_env(site_env: dict, host: Host, site_url: str, token: str) -> dict:
    """The host machine's own environment: where its runtime keeps its state;
    what the site says (database, Redis, keys) comes with the join."""
    from runtime import paths, registry
    env = {k: v for k, v in site_env.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DB_PATH", "LAB_GATEWAY_KEY")}
    return {
        **env,
        "SITE": site_url, "TOKEN": token, "LAB_GATEWAY_BIND": host.address,
        "SITE_ADDRESS": SITE_ADDRESS,
        "LAB_GATEWAY_PORT": str(GATEWAY_PORT),
        "LAB_HOST_NAME": host.name, "LAB_GATEWAY_URL": host.gateway_url,
        "LAB_PORTS_DOMAIN": host.ports_domain,
        "LAB_RUNTIME_DIR": str(host.work / "runtime"),
        # The machine's node images and registry storage, read by every host.
        "LAB_IMAGES_DIR": str(paths.images_dir()), "LAB_REGISTRY_DIR": str(registry.storage_dir()),
        "LAB_CGROUP_PARENT": host.cgroup_parent,
        "LAB_UID_BASE": str(1_000_000_000 + host.index * 100_000_000),
        "LAB_POOL_SIZE": "0",
        "LAB_POOL_CLASSES": "0",
        # Hosts on one machine share its memory: their room differs by their
        # node limit, not by the noise of what is free at each heartbeat.
        "LAB_MAX_NODES": "4",
        "WORK": str(host.work), "ROOT": str(ROOT), "PY": str(VENV_BIN / "python"),
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
    }


@contextlib.contextmanager
def network(tag: str, count: int):
    """The test bridge with the site's address and `count` host namespaces on it."""
    bridge = f"labtb{tag}"
    made = []
    try:
        run("ip", "link", "add", bridge, "type", "bridge")
        run("ip", "addr", "add", f"{SITE_ADDRESS}/24", "dev", bridge)
        run("ip", "link", "set", bridge, "up")
        for index in range(count):
            netns, outside = f"lab{tag}h{index + 1}", f"lt{tag}{index}"
            run("ip", "netns", "add", netns)
            made.append(netns)
            run("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0",
                "netns", netns)
            run("ip", "link", "set", outside, "master", bridge, "up")
            run("ip", "-n", netns, "addr", "add", f"{SUBNET}.{index + 2}/24", "dev", "eth0")
            run("ip", "-n", netns, "link", "set", "eth0", "up")
            run("ip", "-n", netns, "link", "set", "lo", "up")
        yield bridge
    finally:
        for netns in made:
            run("ip", "netns", "del", netns, check=False)  # its veth goes with it
        run("ip", "link", "del", bridge, check=False)


@contextlib.contextmanager
def hosts(site, database_url: str, tag: str, count: int, host_env: dict | None = None):
    """`count` sandbox hosts (h1, h2, ...) on network(tag, count), joined to the
    running `site` (its Redis and `database_url` listening on SITE_ADDRESS);
    `host_env` adds to (or overrides) each host's environment."""
    top = Path(tempfile.mkdtemp(prefix="lab-cluster-"))
    top.chmod(0o755)  # nodes run as mapped users: they must reach their directories
    token = site.manage("hosts", "token").stdout.strip()
    site_url = site.url.replace("127.0.0.1", SITE_ADDRESS)
    made = []
    try:
        for index in range(count):
            host = Host(name=f"h{index + 1}", index=index, tag=tag, work=top / f"h{index + 1}")
            host.work.mkdir(parents=True)
            host.env = {**_host_env(site.env, host, site_url, token), **(host_env or {})}
            made.append(host)
            host.start()
        yield Cluster(hosts=made, bridge=f"labtb{tag}")
    finally:
        for host in made:
            host.stop()
        for host in made:
            host.remove_nodes()
            host.kill()  # anything the stop left
            host.remove_cgroups()
        shutil.rmtree(top, ignore_errors=True)


def host_rows(database_url: str) -> dict:
    """{name: (state, refused, seconds since its heartbeat)} from the site's database."""
    import psycopg
    with psycopg.connect(database_url) as db:
        rows = db.execute("SELECT name, state, refused, EXTRACT(EPOCH FROM now() - last_seen) "
                          "FROM labs_sandboxhost").fetchall()
    return {name: (state, refused, float(age) if age is not None else None)
            for name, state, refused, age in rows}


def done_steps(database_url: str) -> set:
    """{(username, step number)} of every step done, from the site's database."""
    import psycopg
    with psycopg.connect(database_url) as db:
        return set(db.execute(
            "SELECT u.username, st.number FROM labs_stepprogress p JOIN auth_user u "
            "ON u.id = p.user_id JOIN labs_step st ON st.id = p.step_id "
            "WHERE p.state = 'done'").fetchall())


@contextlib.contextmanager
def cluster_site(count: int = 3, extra_env: dict | None = None, host_env: dict | None = None,
                 quiet: bool = False):
    """The site (Daphne, its workers, beat, Redis, a PostgreSQL of its own) and
    `count` sandbox hosts, each beating as active. The site's own machine is
    drained: every learner goes to one of the hosts. `extra_env` goes to the
    site and the hosts, `host_env` to the hosts only. Yields (site, cluster)."""
    from tests.support.livesite import SESSION_PREFIX, live_site
    from tests.support.postgres import postgres_server

    tag = SESSION_PREFIX[-4:]
    env = {"LAB_HOST_TIMEOUT": "8", "LAB_HOST_HEARTBEAT_SECONDS": "2", **(extra_env or {})}
    with network(tag, count), \
            postgres_server(also_listen=SITE_ADDRESS, clients=f"{SUBNET}.0/24") as database_url, \
            live_site(prefix=SESSION_PREFIX, extra_env={
                "DATABASE_URL": database_url, **env,
                # The addresses the site gives the hosts that join (join's answer).
                "LAB_HOSTS_DATABASE_URL": database_url.replace("127.0.0.1", SITE_ADDRESS),
                # The hosts join at the site's address on the bridge.
                "ALLOWED_HOSTS": f"127.0.0.1,localhost,{SITE_ADDRESS}"},
                      also_listen=SITE_ADDRESS, beat=True, quiet=quiet) as site, \
            hosts(site, database_url, tag, count, host_env) as made:
        made.database_url, made.tag = database_url, tag
        try:
            made.wait_ready()
            names = {h.name for h in made.hosts} | {"local"}
            wait_for(lambda: names <= {n for n, (state, refused, age) in host_rows(
                database_url).items() if state == "active" and not refused and age < 5},
                60, "every host's heartbeat")
            drained = site.manage("hosts", "drain", "local")
            assert drained.returncode == 0, drained.stderr
            yield site, made
        except BaseException:
            if not quiet:
                import sys
                sys.stderr.write(made.logs())
            raise


def leftovers(tag: str) -> list:
    """What a cluster with this tag left behind: namespaces, the bridge, cgroups,
    host processes (its gateway and workers). Empty after a clean exit."""
    found = [f"netns {name}" for name in run("ip", "netns", "list").stdout.split()
             if name.startswith(f"lab{tag}")]
    if run("ip", "link", "show", f"labtb{tag}", check=False).returncode == 0:
        found.append(f"bridge labtb{tag}")
    found += [f"cgroup {path}" for path in CGROUP_ROOT.glob(f"*/dockerlab-{tag}-*")]
    procs = run("ps", "-eo", "pid,args").stdout.splitlines()
    found += [f"process {line.strip()}" for line in procs
              if "labs.gateway_asgi" in line or ("@h" in line and "celery" in line)]
    return found
