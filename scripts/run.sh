#!/usr/bin/env bash
# Builds mqgate (release) in build/ and runs the seed scenario on etc/mqgate.toml:
# plain MQTT on 127.0.0.1:1883 and mutual-TLS MQTT with certauth on 127.0.0.1:8883.
# On first run it makes demo credentials with the pki-tools in demo/ (git-ignored).
# Extra arguments go to mqgate, e.g. `scripts/run.sh --config my.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh run

build=build
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dtests=false >/dev/null
fi
ninja -C "$build" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null

demo=demo
device=myUniqueDeviceId
scripts/demo_creds.sh "$build" "$demo" "$device"

if [ $# -eq 0 ]; then
  set -- --config etc/mqgate.toml
  # Started as root the broker would drop to the `mqgate` user (docs/operations.md,
  # "Running as a service"), who cannot read the demo's files in this tree: the demo
  # keeps root explicitly.
  if [ "$(id -u)" -eq 0 ]; then set -- "$@" --user root; fi
  cat <<MSG

mqgate is starting: plain MQTT on 127.0.0.1:1883, MQTT over mutual TLS on 127.0.0.1:8883.
In another terminal, watch everything on the plain listener:

  mosquitto_sub -h 127.0.0.1 -p 1883 -t 'devices/#' -v

and publish as the demo device, proving its identity with its certificate:

  mosquitto_pub -h 127.0.0.1 -p 8883 --cafile $demo/ca.crt --cert $demo/$device.crt --key $demo/$device.key -i $device -t devices/$device/hello -m hi

With another client id (-i someoneElse) or without --cert, the broker answers
"not authorised" (CONNACK 5). Ctrl-C stops the broker.

MSG
fi
exec "$build/core/mqgate" "$@"
