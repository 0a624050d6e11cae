#!/usr/bin/env bash
# Build the demo Node app's release archives (the layout of `npm pack`: package/...):
#   examples/node-app/build.sh OUTDIR
# OUTDIR/selfhosted-node-demo-<version>.tgz for 1.0.0 and 1.1.0 (good), 1.1.1 (built broken: /ready answers 503) and
# 1.2.1 (built failing: healthy and ready, but /version and /api/ answer 500), for rollout tests. Needs only tar (no
# Node.js on the controller). Rebuilds what is missing or older than the sources.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)

build() { # version broken failing
  local version=$1 broken=$2 failing=$3 tgz="$out/selfhosted-node-demo-$1.tgz"
  [ -f "$tgz" ] && [ -z "$(find "$here/src" "$here/package.json" "$here/package-lock.json" -newer "$tgz" -type f)" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  mkdir "$tmp/package"
  cp -r "$here/src" "$here/package-lock.json" "$tmp/package/"
  sed "s/\"version\": \"0.0.0\"/\"version\": \"$version\"/" "$here/package.json" >"$tmp/package/package.json"
  printf '{"version": "%s", "broken": %s, "failing": %s}\n' "$version" "$broken" "$failing" >"$tmp/package/build.json"
  tar -C "$tmp" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -czf "$tgz" package
  rm -rf "$tmp"
  echo "built $tgz"
}

build 1.0.0 false false
build 1.1.0 false false
build 1.1.1 true false
build 1.2.1 false true
