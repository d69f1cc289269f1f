#!/usr/bin/env bash
# Makes the demo credentials (a CA, the server's certificate, one device's) with the
# pki-tools, once: scripts/run.sh and scripts/cluster.sh share them.
#   scripts/demo_creds.sh <build dir> <demo dir> <device id>
set -euo pipefail
build=$1 demo=$2 device=$3
[ -f "$demo/ca.crt" ] && exit 0
echo "Making demo credentials in $demo/ (the seed's quick start):"
mkdir -p "$demo"
tools=$build/pki-tools
"$tools/ca_creds" --country US --state NY --locality NY --org-name "My Org's Name" \
  --cn "my.domain.name" --output-dir "$demo"
"$tools/server_creds" --country US --org-name "My Org's Name" --cn "my.domain.name" \
  --ca-key "$demo/ca.key" --ca-crt "$demo/ca.crt" --output-dir "$demo"
"$tools/device_creds" --country US --org-name "My Org's Name" --device-id "$device" \
  --uri my.domain.name --ca-key "$demo/ca.key" --ca-crt "$demo/ca.crt" --output-dir "$demo"
