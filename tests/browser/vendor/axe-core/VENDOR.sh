#!/bin/sh
# Re-create the vendored axe-core (the accessibility checker the browser tests
# run in pages) in this directory from the npm registry.
# Usage: sh tests/browser/vendor/axe-core/VENDOR.sh
set -eu
VERSION=4.14.1
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "axe-core@$VERSION" >/dev/null
tar -xzf "axe-core-$VERSION.tgz"
cp package/axe.min.js package/LICENSE "$here/"
echo "vendored axe-core $VERSION into $here"
