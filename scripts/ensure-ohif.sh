#!/usr/bin/env bash
# The OHIF Viewer (npm package @ohif/app, which ships its built app in dist/) for the browser
# test of the SEG and SR in a real viewer (tests/viewer/). Fetched once with `npm pack` and
# unpacked into the git-ignored .cache/ohif/VERSION/; prints the dist directory.
# Progress goes to stderr, so `dist=$(bash scripts/ensure-ohif.sh)` gets the path alone.
set -euo pipefail
version="${OHIF_VERSION:-3.13.2}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$repo/.cache/ohif/$version"
dist="$target/dist"

# The marker is written last: a fetch cut short leaves no half-unpacked viewer behind.
if [[ -f "$target/.complete" && -f "$dist/index.html" ]]; then
    echo "$dist"
    exit 0
fi
if ! command -v npm >/dev/null; then
    bash "$repo/scripts/ensure-system-packages.sh" npm >&2
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/ohif.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "fetching @ohif/app@$version with npm pack" >&2
tarball="$(cd "$work" && npm pack --silent "@ohif/app@$version" | tail -1)"
if [[ ! -f "$work/$tarball" ]]; then
    echo "expected npm pack to write a tarball of @ohif/app@$version, found '$tarball'" >&2
    exit 1
fi
tar -xzf "$work/$tarball" -C "$work"
if [[ ! -f "$work/package/dist/index.html" ]]; then
    echo "expected dist/index.html in @ohif/app@$version, found none" >&2
    exit 1
fi
rm -rf "$target"
mkdir -p "$target"
mv "$work/package/dist" "$dist"
mv "$work/package/package.json" "$target/package.json"
touch "$target/.complete"
echo "$dist"
