#!/bin/sh
# Re-create the vendored xterm.js files in this directory from the npm registry.
# Usage: sh static/vendor/xterm/VENDOR.sh
set -eu
XTERM_VERSION=6.0.0
FIT_VERSION=0.11.0
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "@xterm/xterm@$XTERM_VERSION" "@xterm/addon-fit@$FIT_VERSION" >/dev/null
mkdir xterm fit
tar -xzf "xterm-xterm-$XTERM_VERSION.tgz" -C xterm
tar -xzf "xterm-addon-fit-$FIT_VERSION.tgz" -C fit
cp xterm/package/lib/xterm.js xterm/package/css/xterm.css fit/package/lib/addon-fit.js "$here/"
cp xterm/package/LICENSE "$here/LICENSE.xterm"
echo "vendored @xterm/xterm $XTERM_VERSION and @xterm/addon-fit $FIT_VERSION into $here"
