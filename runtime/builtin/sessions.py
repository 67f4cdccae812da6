"""Session networks of the built-in driver: one bridge and /24 per session,
and the files (hosts, resolv.conf) that name the nodes of a session."""
from __future__ import annotations

import contextlib
import json
import logging
import shlex
from pathlib import Path

from .. import firewall, netplan, nodefs
from ..model import LabRuntimeError, NodeSpec
from ..paths import sessions_dir
from .common import run, _place_files, _disable_ipv6

log = logging.getLogger(__name__)


class SessionNetworks:
    """BuiltinDriver's session networks (a mixin: it uses the driver's state)."""

    # ---- sessions -------------------------------------------------------------
    def _session_file(self, session: str) -> Path:
        return sessions_dir() / f"{session}.json"

    def _ensure_session_net(self, session: str) -> netplan.SessionNet:
        """Allocate the session's subnet and make its bridge and NAT (caller holds the lock)."""
        path = self._session_file(session)
        if path.exists():
            net = netplan.session_net(json.loads(path.read_text())["index"])
        else:
            used = set()
            for other in sessions_dir().glob("*.json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    used.add(json.loads(other.read_text())["index"])
            free = [i for i in range(1, netplan.MAX_SESSIONS + 1) if i not in used]
            if not free:
                raise LabRuntimeError("every session network is in use: the lab is full")
            net = netplan.session_net(free[0])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"index": net.index, "session": session}))
        # A port-less bridge just to hold the registry's address (no dummy
        # interfaces on every kernel).
        if not Path("/sys/class/net/labreg0").exists():
            run(["ip", "-batch", "-"], input=(
                "link add labreg0 type bridge\n"
                f"addr add {netplan.registry_address()}/32 dev labreg0\n"
                "link set labreg0 up\n").encode())
        if not Path(f"/sys/class/net/{net.bridge}").exists():
            run(["ip", "link", "add", net.bridge, "type", "bridge"])
            # No IPv6 on lab bridges: a link-local address would let nodes reach
            # host services listening on [::] around the IPv4 firewall.
            _disable_ipv6(net.bridge)
            run(["ip", "-batch", "-"], input=(f"addr add {net.gateway}/24 dev {net.bridge}\n"
                                              f"link set {net.bridge} up\n").encode())
            firewall.apply()
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        for table, chain, spec in netplan.nat_rules(net):
            if run(["iptables", "-w", "-t", table, "-C", chain, *spec], check=False).returncode:
                run(["iptables", "-w", "-t", table, "-I", chain, *spec])
        return net

    def _remove_session_net_if_empty(self, session: str) -> None:
        path = self._session_file(session)
        if not path.exists() or any(n.session == session for n in self.list_nodes()):
            return
        net = netplan.session_net(json.loads(path.read_text())["index"])
        # Every rule tagged with this bridge, also ones an older version made.
        for table in ("nat", "filter"):
            listing = run(["iptables", "-w", "-t", table, "-S"], check=False).stdout.decode()
            for line in listing.splitlines():
                if f"lab:{net.bridge}" in line.split() or f'"lab:{net.bridge}"' in line:
                    spec = shlex.split(line)
                    run(["iptables", "-w", "-t", table, "-D", *spec[1:]], check=False)
        if Path(f"/sys/class/net/{net.bridge}").exists():
            run(["ip", "link", "del", net.bridge], check=False)
        path.unlink(missing_ok=True)

    def _write_node_files(self, directory: Path, spec: NodeSpec, net, address: str, peers: dict):
        _place_files(directory / "upper", [
            ("/etc/hostname", spec.name + "\n"),
            ("/etc/hosts", netplan.hosts_file(spec.name, address, peers)),
            ("/etc/resolv.conf", self._resolv_conf()),
            ("/etc/docker/daemon.json", json.dumps(netplan.daemon_json(net), indent=1)),
            *spec.files])

    @staticmethod
    def _resolv_conf() -> str:
        """The host's resolvers, as long as a node can reach them through NAT."""
        servers = []
        with contextlib.suppress(OSError), open("/etc/resolv.conf") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and not parts[1].startswith("127."):
                    servers.append(parts[1])
        if not servers:
            raise LabRuntimeError("the host's /etc/resolv.conf names no resolver a node can "
                                  "reach (only loopback ones): set a real nameserver",
                                  permanent=True)
        return "".join(f"nameserver {s}\n" for s in servers)

    def _refresh_session_hosts(self, session: str) -> None:
        """Every node of a session knows every other one by name."""
        nodes = [n for n in self.list_nodes() if n.session == session]
        peers = {n.name: n.address for n in nodes}
        for n in nodes:
            pid = n.extra.get("pid")
            # Through the node's own mounts (its disk is not mounted on the
            # host), resolved in its root: the learner may have made the file
            # a link anywhere (runtime/nodefs.py).
            try:
                if pid and self._owns(n, pid):
                    nodefs.write_in_root(f"/proc/{pid}/root", "/etc/hosts",
                                         netplan.hosts_file(n.name, n.address, peers).encode())
            except OSError as exc:
                log.info("left /etc/hosts of node %s as it is: %s", n.id, exc)
