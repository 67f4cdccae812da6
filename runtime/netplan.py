"""Pure functions that name and number the network pieces of sessions and nodes.

Every session gets a bridge and a /24; its nodes get a veth each into that
bridge. Keeping the naming here (no I/O) lets unit tests pin exact values.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

MAX_SESSIONS = 254
MAX_NODES_PER_SESSION = 250


def subnet_prefix() -> str:
    # Two octets; sessions take the third. Chosen away from Docker's own
    # defaults (172.17/16 and the 10.0.x overlay pools) so nested engines in
    # the nodes never collide with the session network.
    return os.environ.get("LAB_SUBNET_PREFIX", "10.213")


def registry_port() -> int:
    return int(os.environ.get("LAB_REGISTRY_PORT", "5000"))


def registry_address() -> str:
    """One host address every node reaches the lab registry at, whatever its session.

    It sits on a dummy interface of the host (labreg0), outside every session's
    /24, so a node's settings need not change when it moves between sessions.
    """
    return f"{subnet_prefix()}.0.1"


def registry_host() -> str:
    return f"{registry_address()}:{registry_port()}"


@dataclass(frozen=True)
class SessionNet:
    index: int
    bridge: str
    subnet: str
    gateway: str

    def node_address(self, slot: int) -> str:
        if not 1 <= slot <= MAX_NODES_PER_SESSION:
            raise ValueError(f"node slot {slot} out of range")
        return f"{self.subnet.rsplit('.', 1)[0]}.{slot + 1}"

    @property
    def registry(self) -> str:
        return registry_host()


def session_net(index: int, prefix: str | None = None) -> SessionNet:
    if not 1 <= index <= MAX_SESSIONS:
        raise ValueError(f"session index {index} out of range")
    prefix = prefix or subnet_prefix()
    return SessionNet(index=index, bridge=f"labbr{index}", subnet=f"{prefix}.{index}.0/24",
                      gateway=f"{prefix}.{index}.1")


def veth_names(node_id: str) -> tuple:
    """(host side, node side before it is renamed eth0); both fit IFNAMSIZ."""
    return f"lv{node_id[:12]}", f"lp{node_id[:12]}"


def nat_rules(net: SessionNet) -> list:
    """iptables rules (table, chain, spec) a session needs on the host.

    Only its NAT: what nodes may reach is decided for all sessions at once by
    runtime.firewall.
    """
    tag = ["-m", "comment", "--comment", f"lab:{net.bridge}"]
    return [
        ("nat", "POSTROUTING", ["-s", net.subnet, "!", "-o", net.bridge, "-j", "MASQUERADE", *tag]),
    ]


def daemon_json(net: SessionNet) -> dict:
    """The node's dockerd settings: the lab registry mirrors Docker Hub."""
    return {
        "registry-mirrors": [f"http://{net.registry}"],
        "insecure-registries": [net.registry],
        "storage-driver": "overlay2",
    }


def hosts_file(node_name: str, address: str, peers: dict) -> str:
    """/etc/hosts for a node: itself, its session peers by name."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{address}\t{node_name}"]
    lines += [f"{addr}\t{name}" for name, addr in sorted(peers.items()) if name != node_name]
    return "\n".join(lines) + "\n"
