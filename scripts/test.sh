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
# Warnings are errors here (and so in CI), not in the project's defaults: a user's
# build on another compiler version must not fail on a new warning.
if [ ! -f "$build/build.ninja" ]; then
  # -O1: what the sanitizers are designed for, and half the compile time of -O2.
  meson setup "$build" --buildtype=debugoptimized -Doptimization=1 \
    -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true >/dev/null
elif ! meson introspect "$build" --buildoptions | /usr/bin/python3 -c \
  'import json, sys; sys.exit(not any(o["name"] == "werror" and o["value"] for o in json.load(sys.stdin)))'; then
  # Set up before werror left the defaults.
  meson configure "$build" -Dwerror=true >/dev/null
fi
jobs=$(nproc 2>/dev/null || echo 2)
if ! ninja -C "$build" -j "$jobs" >"$build/ninja.log" 2>&1; then
  tail -n 60 "$build/ninja.log"
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
exec /usr/bin/python3 test/run.py --build-dir "$build" "$@"
