#!/usr/bin/env bash
# A cluster on this machine (docs/cluster.md): three nats-server processes routed
# together with JetStream (store in a temporary folder) and three mqgate nodes, each with
# a plain listener and a mutual-TLS one (the demo CA of scripts/run.sh) and each joined to
# "its" NATS server (the others listed for failover). Prints client lines to try and
# stops everything on Ctrl-C.
#   scripts/cluster.sh            ports: NATS 14222-14224, MQTT 1884-1886, mTLS 8884-8886,
#                                 http 9184-9186 (BASE_PORT=... shifts the MQTT ones;
#                                 BUILD_DIR=... uses another build than build/)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh run
command -v nats-server >/dev/null || {
  echo "cluster.sh: nats-server is missing (scripts/deps.sh test installs it)" >&2
  exit 1
}

build=${BUILD_DIR:-build}
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dtests=false >/dev/null
fi
ninja -C "$build" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
demo=$PWD/demo
device=myUniqueDeviceId
scripts/demo_creds.sh "$build" "$demo" "$device"

base=${BASE_PORT:-1884}
tmp=$(mktemp -d /tmp/mqgate-cluster.XXXXXX)
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping ${#pids[@]} processes"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap stop INT TERM EXIT

nats_port() { echo $((14222 + $1)); }
route_port() { echo $((16222 + $1)); }
for i in 0 1 2; do
  routes=""
  for j in 0 1 2; do
    [ "$j" = "$i" ] || routes+="${routes:+, }\"nats://127.0.0.1:$(route_port "$j")\""
  done
  cat >"$tmp/nats$i.conf" <<CONF
server_name: "nats$i"
listen: 127.0.0.1:$(nats_port "$i")
cluster { name: "demo", listen: 127.0.0.1:$(route_port "$i"), routes: [$routes] }
jetstream { store_dir: "$tmp/js$i" }
CONF
  nats-server -c "$tmp/nats$i.conf" >"$tmp/nats$i.log" 2>&1 &
  pids+=($!)
done

for i in 0 1 2; do
  urls="\"nats://127.0.0.1:$(nats_port "$i")\""
  for j in 0 1 2; do [ "$j" = "$i" ] || urls+=", \"nats://127.0.0.1:$(nats_port "$j")\""; done
  cat >"$tmp/node$i.toml" <<CONF
log_level = "info"
sys_interval = 0

[listeners.default]
bind = "127.0.0.1:$((base + i))"
plugins = ["anonymous"]

[listeners.mtls]
bind = "127.0.0.1:$((8884 + i))"
ssl = true
certfile = "$demo/server.crt"
keyfile = "$demo/server.key"
cafile = "$demo/ca.crt"
client_cert = "required"
plugins = ["certauth"]

[http]
bind = "127.0.0.1:$((9184 + i))"

[plugins.anonymous]
allow_anonymous = true

[plugins.certauth]
uri_domain = "my.domain.name"
allowed_topics = ["devices/{device_id}/#"]

[cluster]
node = "node$i"
name = "demo"
nats = [$urls]
CONF
  # Root keeps root here (the demo files are not the mqgate user's; docs/operations.md).
  run_as=(); if [ "$(id -u)" -eq 0 ]; then run_as=(--user root); fi
  "$build/core/mqgate" --config "$tmp/node$i.toml" "${run_as[@]}" >"$tmp/node$i.log" 2>&1 &
  pids+=($!)
done

sleep 1
for i in 0 1 2; do
  grep -q "connected to NATS" "$tmp/node$i.log" || sleep 1
done
cat <<MSG

Three NATS servers (JetStream, routes) and three mqgate nodes are running; logs in $tmp.
  node0: mqtt 127.0.0.1:$base   mtls 127.0.0.1:8884   http://127.0.0.1:9184/healthz
  node1: mqtt 127.0.0.1:$((base + 1))   mtls 127.0.0.1:8885   http://127.0.0.1:9185/metrics
  node2: mqtt 127.0.0.1:$((base + 2))   mtls 127.0.0.1:8886

Subscribe on node2:

  mosquitto_sub -h 127.0.0.1 -p $((base + 2)) -t 'devices/#' -v -q 1

publish on node0, and as the demo device over mTLS on node1:

  mosquitto_pub -h 127.0.0.1 -p $base -t devices/plain/hello -m 'from node0' -q 1
  mosquitto_pub -h 127.0.0.1 -p 8885 --cafile $demo/ca.crt --cert $demo/$device.crt --key $demo/$device.key -i $device -t devices/$device/hello -m 'from node1'

Ctrl-C stops everything.
MSG
wait
