#!/usr/bin/env bash
# Build the demo Node app's release archives (the layout of `npm pack`: package/...):
#   examples/node-app/build.sh OUTDIR
# OUTDIR/selfhosted-node-demo-<version>.tgz for 1.0.0 and 1.1.0 (good) and 1.1.1 (built broken: /ready answers 503,
# for rollout tests). Needs only tar (no Node.js on the controller). Rebuilds only what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)

build() { # version broken
  local version=$1 broken=$2 tgz="$out/selfhosted-node-demo-$1.tgz"
  [ -f "$tgz" ] && [ "$tgz" -nt "$here/src/api.js" ] && [ "$tgz" -nt "$here/src/worker.js" ] && [ "$tgz" -nt "$here/src/redis.js" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  mkdir "$tmp/package"
  cp -r "$here/src" "$here/package-lock.json" "$tmp/package/"
  sed "s/\"version\": \"0.0.0\"/\"version\": \"$version\"/" "$here/package.json" >"$tmp/package/package.json"
  printf '{"version": "%s", "broken": %s}\n' "$version" "$broken" >"$tmp/package/build.json"
  tar -C "$tmp" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -czf "$tgz" package
  rm -rf "$tmp"
  echo "built $tgz"
}

build 1.0.0 false
build 1.1.0 false
build 1.1.1 true
