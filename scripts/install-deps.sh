#!/bin/sh
# Installs the Debian packages the lab needs, only those missing. Safe to re-run.
# gcc and libc6-dev build runtime/seccomp.py's small helper (it works without
# them, more slowly).
set -eu
PACKAGES="redis-server docker-registry mmdebstrap busybox-static iptables iproute2 util-linux
tmux ca-certificates python3 python3-venv chromium fonts-dejavu-core procps curl docker.io
zstd tar
postgresql
gcc libc6-dev"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
