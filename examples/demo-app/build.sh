#!/usr/bin/env bash
# Build the demo app's wheels and an offline wheelhouse for Debian 12 (Python 3.11) and 13 (Python 3.13).
#   examples/demo-app/build.sh OUTDIR
# OUTDIR/selfhosted_demo_app-<version>-py3-none-any.whl for 1.0.0 and 1.1.0 (good) and 1.1.1 (built broken:
# /ready answers 503, for rollout tests), and OUTDIR/wheelhouse/ with every dependency for both Pythons.
# Rebuilds only what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
py=${PYTHON:-python3}

build() { # version broken
  local version=$1 broken=$2 wheel="$out/selfhosted_demo_app-$1-py3-none-any.whl"
  # Built already, and no source newer than the wheel.
  [ -f "$wheel" ] && [ -z "$(find "$here/src" "$here/pyproject.toml" -newer "$wheel" -type f ! -name _build.py ! -path '*/__pycache__/*')" ] && return 0
  local src
  src=$(mktemp -d)
  cp -r "$here/pyproject.toml" "$here/src" "$src/"
  printf '# Written by build.sh\nVERSION = "%s"\nBROKEN = %s\n' "$version" "$broken" >"$src/src/demo_app/_build.py"
  "$py" -m pip wheel -q --no-deps -w "$out" "$src" >/dev/null
  rm -rf "$src"
  echo "built $wheel"
}

build 1.0.0 False
build 1.1.0 False
build 1.1.1 True

if [ ! -f "$out/wheelhouse/.complete" ]; then
  mkdir -p "$out/wheelhouse"
  for pyver in 3.11 3.13; do
    "$py" -m pip download -q --dest "$out/wheelhouse" --only-binary=:all: --python-version "$pyver" \
      --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_28_x86_64 --platform any "$out/selfhosted_demo_app-1.0.0-py3-none-any.whl" >/dev/null
  done
  touch "$out/wheelhouse/.complete"
  echo "wheelhouse: $(find "$out/wheelhouse" -name "*.whl" | wc -l) wheels"
fi
# The demo app's own wheels, as built now.
cp -p "$out"/selfhosted_demo_app-*.whl "$out/wheelhouse/"
