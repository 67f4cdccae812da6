"""What nodes may reach: the host firewall for every session network.

Rules are built by pure functions (unit-tested as exact values) and applied
as two chains of our own, LAB-INPUT and LAB-FORWARD, jumped to first from
INPUT and FORWARD for traffic of the lab's bridges (labbr+):

- nodes of one session talk over their bridge (switched, never routed);
  traffic routed between two lab bridges, i.e. between sessions, is dropped;
- of the host's own services a node reaches only the lab registry (and ping);
- no node reaches a link-local address (cloud metadata lives there);
- egress follows LAB_EGRESS: `open` (anything), `mirrors` (default: DNS to the
  host's resolvers and HTTP(S) to the package mirrors the host's apt uses),
  or `none`.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import subprocess
from urllib.parse import urlparse

from .model import LabRuntimeError
from .netplan import registry_port
from .paths import base_dir

log = logging.getLogger(__name__)

BRIDGES = "labbr+"
POLICIES = ("open", "mirrors", "none")


def egress_policy() -> str:
    policy = os.environ.get("LAB_EGRESS", "mirrors")
    if policy not in POLICIES:
        raise LabRuntimeError(f"LAB_EGRESS={policy!r}: use one of {', '.join(POLICIES)}",
                              permanent=True)
    return policy


def input_rules(port: int) -> list:
    """LAB-INPUT: packets from nodes to the host itself."""
    return [
        ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ["-p", "tcp", "--dport", str(port), "-j", "ACCEPT"],
        ["-p", "icmp", "--icmp-type", "echo-request", "-j", "ACCEPT"],
        ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"],
    ]


def forward_rules(policy: str, resolvers: list, mirrors: list) -> list:
    """LAB-FORWARD: packets routed to or from a lab bridge."""
    rules = [
        ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        # Switched within one session's bridge (seen here when the host has
        # br_netfilter loaded): nodes of a session talk freely.
        ["-i", BRIDGES, "-m", "physdev", "--physdev-is-bridged", "-j", "ACCEPT"],
        ["-i", BRIDGES, "-o", BRIDGES, "-j", "DROP"],
        ["-i", BRIDGES, "-d", "169.254.0.0/16", "-j", "DROP"],
    ]
    if policy == "open":
        rules.append(["-i", BRIDGES, "-j", "ACCEPT"])
    elif policy == "mirrors":
        for ip in resolvers:
            for proto in ("udp", "tcp"):
                rules.append(["-i", BRIDGES, "-d", ip, "-p", proto, "--dport", "53",
                              "-j", "ACCEPT"])
        for ip in mirrors:
            rules.append(["-i", BRIDGES, "-d", ip, "-p", "tcp", "-m", "multiport",
                          "--dports", "80,443", "-j", "ACCEPT"])
    rules += [
        ["-i", BRIDGES, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"],
        # Nothing from outside opens a connection into a node.
        ["-o", BRIDGES, "-j", "DROP"],
    ]
    return rules


def host_resolvers() -> list:
    servers = []
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1] \
                        and not parts[1].startswith("127."):
                    servers.append(parts[1])
    except OSError:
        pass
    return servers


def mirror_hosts() -> list:
    """Host names of the package mirrors the host's apt is configured with."""
    from .images import host_apt_sources
    hosts = set()
    for path in host_apt_sources():
        with open(path) as f:
            text = "\n".join(line for line in f if not line.lstrip().startswith("#"))
            for url in re.findall(r"\b(?:https?)://[^\s\]]+", text):
                if urlparse(url).hostname:
                    hosts.add(urlparse(url).hostname)
    return sorted(hosts)


def resolve(hosts: list) -> list:
    addresses = set()
    for host in hosts:
        try:
            for info in socket.getaddrinfo(host, 80, socket.AF_INET, socket.SOCK_STREAM):
                addresses.add(info[4][0])
        except OSError as e:
            log.warning("cannot resolve package mirror %s: %s", host, e)
    return sorted(addresses)


def _iptables(*args, check=True):
    proc = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if check and proc.returncode:
        raise LabRuntimeError(f"`iptables {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def restore_text(chains: dict) -> str:
    """iptables-restore input that replaces our chains in one transaction."""
    lines = ["*filter"] + [f":{chain} - [0:0]" for chain in chains]
    for chain, (_parent, rules) in chains.items():
        lines += [" ".join(["-A", chain, *(shlex.quote(a) for a in rule)]) for rule in rules]
    return "\n".join(lines + ["COMMIT", ""])


def apply() -> None:
    """Write LAB-INPUT and LAB-FORWARD (when they changed) and jump to them first.

    The chains are replaced atomically (iptables-restore --noflush), so there
    is never a moment without rules; unchanged rules are left alone, so their
    packet counters keep counting.
    """
    policy = egress_policy()
    mirrors = resolve(mirror_hosts()) if policy == "mirrors" else []
    chains = {
        "LAB-INPUT": ("INPUT", input_rules(registry_port())),
        "LAB-FORWARD": ("FORWARD", forward_rules(policy, host_resolvers(), mirrors)),
    }
    text = restore_text(chains)
    stamp = base_dir() / "firewall.rules"
    # One listing answers both questions: do our chains exist, are they jumped to?
    listing = _iptables("-S").stdout.splitlines()
    exists = all(f"-N {chain}" in listing for chain in chains)
    if not (exists and stamp.exists() and stamp.read_text() == text):
        proc = subprocess.run(["iptables-restore", "-w", "--noflush"], input=text,
                              capture_output=True, text=True)
        if proc.returncode:
            raise LabRuntimeError(f"iptables-restore failed: {proc.stderr.strip()}")
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(text)
    for chain, (parent, _rules) in chains.items():
        for direction in ("-i", "-o"):
            if parent == "INPUT" and direction == "-o":
                continue
            if f"-A {parent} {direction} {BRIDGES} -j {chain}" not in listing:
                _iptables("-I", parent, "1", direction, BRIDGES, "-j", chain)
