"""Published ports of a node, as `docker container ls` shows them (pure, no I/O)."""
from __future__ import annotations

# What lists them in a node (run with the checks, see runtime/checkbatch.py).
ARGV = ["docker", "container", "ls", "--format", "{{.Names}}\t{{.Ports}}"]
# A published range longer than this counts as its first port only.
MAX_RANGE = 20


def parse_ports(text: str) -> list:
    """Published TCP ports from `docker container ls --format '{{.Names}}\\t{{.Ports}}'`.

    "web1\\t0.0.0.0:8080->80/tcp, :::8080->80/tcp" -> [{"port": 8080, "target": 80,
    "container": "web1"}]. Unpublished ports ("80/tcp") and UDP are left out;
    one entry per host port, sorted.
    """
    found: dict = {}
    for line in text.splitlines():
        name, _, column = line.partition("\t")
        if not column:
            name, column = "", name
        for entry in column.split(","):
            entry = entry.strip()
            if "->" not in entry or not entry.endswith("/tcp"):
                continue
            left, right = entry.split("->", 1)
            host = left.rsplit(":", 1)[-1]
            target = right[:-len("/tcp")]
            hosts, targets = _port_range(host), _port_range(target)
            if not hosts:
                continue
            if len(targets) != len(hosts):
                targets = [targets[0] if targets else None] * len(hosts)
            for h, t in zip(hosts, targets):
                found.setdefault(h, {"port": h, "target": t, "container": name.strip()})
    return [found[p] for p in sorted(found)]


def _port_range(text: str) -> list:
    first, _, last = text.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return []
    start, end = int(first), int(last or first)
    if not (0 < start <= end <= 65535) or end - start >= MAX_RANGE:
        return [start] if 0 < start <= 65535 else []
    return list(range(start, end + 1))
