#!/bin/sh
# mmdebstrap customize hook: $1 is the root filesystem being built.
set -eu
ROOT=$1
# Debian's own default site would answer on port 80 first; the official
# image's conf.d/default.conf (COPY in the Dockerfile) takes its place.
rm -f "$ROOT/etc/nginx/sites-enabled/default"
# Logs go to the container's output, so `docker logs` shows them.
ln -sf /dev/stdout "$ROOT/var/log/nginx/access.log"
ln -sf /dev/stderr "$ROOT/var/log/nginx/error.log"
# Debian's nginx-common ships the "Welcome to nginx!" page the real image serves.
test -s "$ROOT/usr/share/nginx/html/index.html"
