#!/usr/bin/env bash
# Builds mqgate with sanitizers in build-test/ and runs the whole test suite.
# The last line printed is `N passed, N failed`. Extra arguments go to test/run.py
# (e.g. `scripts/test.sh test/integration/test_qos.py`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test

# MQTT.js, a test client (the versions pinned in test/js/package-lock.json).
if [ ! -d test/js/node_modules ] || [ test/js/package-lock.json -nt test/js/node_modules ]; then
  (cd test/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || {
    echo "npm ci failed in test/js"
    echo "0 passed, 1 failed"
    exit 1
  }
fi

build=build-test
if [ ! -f "$build/build.ninja" ]; then
  # -O1: what the sanitizers are designed for, and half the compile time of -O2.
  meson setup "$build" --buildtype=debugoptimized -Doptimization=1 \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
jobs=$(nproc 2>/dev/null || echo 2)
if ! ninja -C "$build" -j "$jobs" >"$build/ninja.log" 2>&1; then
  tail -n 60 "$build/ninja.log"
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
exec /usr/bin/python3 test/run.py --build-dir "$build" "$@"
