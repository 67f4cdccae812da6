#!/bin/sh
# Re-create the vendored DejaVu Mono web font files in this directory from the npm registry.
# Usage: sh static/vendor/dejavu-mono/VENDOR.sh
set -eu
VERSION=5.3.0
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "@fontsource/dejavu-mono@$VERSION" >/dev/null
tar -xzf "fontsource-dejavu-mono-$VERSION.tgz"
for weight in 400 700; do
    cp "package/files/dejavu-mono-latin-$weight-normal.woff2" "$here/"
done
cp package/LICENSE "$here/LICENSE"
echo "vendored @fontsource/dejavu-mono $VERSION into $here"
