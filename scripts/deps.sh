#!/usr/bin/env bash
# Installs the Debian 12 packages mqgate needs, and only those that are missing.
#   scripts/deps.sh run    build + run the broker
#   scripts/deps.sh test   everything `run` needs, plus the test and fuzz tools
#   scripts/deps.sh bench  everything `test` needs, plus the benchmark tools
#   scripts/deps.sh package  everything `run` needs, plus Debian's packaging tools
set -euo pipefail

profile=${1:-run}
# scdoc makes the man pages (without it the build skips them, saying so).
run_pkgs=(g++ meson ninja-build pkg-config libuv1-dev libmbedtls-dev libtomlplusplus-dev
  libcxxopts-dev libsqlite3-dev libnats-dev mosquitto-clients scdoc)
# scripts/package.sh: dpkg-buildpackage (dpkg-dev, build-essential), debhelper, lintian.
package_pkgs=(build-essential dpkg-dev debhelper lintian)
# nodejs/npm run MQTT.js (test/js, `npm ci`); chromium runs its browser bundle;
# prometheus's promtool checks GET /metrics; nats-server carries the [cluster] tests;
# the packaging tools build the .deb that test_package.py installs.
test_pkgs=(doctest-dev python3 python3-paho-mqtt openssl mosquitto clang libclang-rt-14-dev nodejs
  chromium prometheus nats-server "${package_pkgs[@]}")
bench_pkgs=(procps liblmdb-dev)

case "$profile" in
  run) want=("${run_pkgs[@]}") ;;
  test) want=("${run_pkgs[@]}" "${test_pkgs[@]}") ;;
  bench) want=("${run_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  package) want=("${run_pkgs[@]}" "${package_pkgs[@]}") ;;
  *) echo "deps.sh: unknown profile '$profile' (expected run, test, bench or package)" >&2; exit 2 ;;
esac

# Debian ships npm apart from nodejs; other builds of nodejs (NodeSource) include it.
if [ "$profile" != run ] && [ "$profile" != package ] && ! command -v npm >/dev/null; then want+=(npm); fi

missing=()
for pkg in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing missing Debian packages: ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi

# The mosquitto package (used by the interoperability tests and the benchmark, started
# by them on ephemeral ports) would start a system service on port 1883 and take the
# port mqgate's default config uses. Debian's policy-rc.d hook stops that, for this
# install only.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  own_policy=1
fi
cleanup() { [ "$own_policy" -eq 1 ] && "${sudo[@]}" rm -f "$policy"; true; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null || "${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  "${missing[@]}" >/dev/null
echo "deps.sh: installed ${missing[*]}" >&2
