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
if [ ! -f "$demo/ca.crt" ]; then
  echo "Making demo credentials in $demo/ (the seed's quick start):"
  mkdir -p "$demo"
  tools=$build/pki-tools
  "$tools/ca_creds" --country US --state NY --locality NY --org-name "My Org's Name" \
    --cn "my.domain.name" --output-dir "$demo"
  "$tools/server_creds" --country US --org-name "My Org's Name" --cn "my.domain.name" \
    --ca-key "$demo/ca.key" --ca-crt "$demo/ca.crt" --output-dir "$demo"
  "$tools/device_creds" --country US --org-name "My Org's Name" --device-id "$device" \
    --uri my.domain.name --ca-key "$demo/ca.key" --ca-crt "$demo/ca.crt" --output-dir "$demo"
fi

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
