#!/usr/bin/env bash
# Builds mqgate (release) in build/ and runs it on etc/mqgate.toml (127.0.0.1:1883).
# Extra arguments go to mqgate, e.g. `scripts/run.sh --config my.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh run

build=build
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dtests=false >/dev/null
fi
ninja -C "$build" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null

if [ $# -eq 0 ]; then set -- --config etc/mqgate.toml; fi
exec "$build/core/mqgate" "$@"
