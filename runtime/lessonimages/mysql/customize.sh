#!/bin/sh
# mmdebstrap customize hook: $1 is the root filesystem being built.
set -eu
ROOT=$1
# mariadb-server's postinst initialised a datadir; the entrypoint makes a
# fresh one on first start, with the container's passwords (and ~100 MB less).
rm -rf "$ROOT"/var/lib/mysql/*
mkdir -p "$ROOT/run/mysqld"
chroot "$ROOT" chown mysql:mysql /var/lib/mysql /run/mysqld
