#!/usr/bin/env bash
# Fuzzes the codec, the broker logic and the password/ACL file parsers with libFuzzer for a bounded time.
#   scripts/fuzz.sh [seconds per target, default 60]
# Crashes land in fuzz-out/<target>/ (git-ignored) and make the script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
seconds=${1:-60}
build=build-fuzz
if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ meson setup "$build" --buildtype=debugoptimized -Dfuzz=true \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C "$build" -j "$(nproc)" test/fuzz/codec_fuzz test/fuzz/broker_fuzz \
  test/fuzz/authfiles_fuzz >/dev/null
status=0
for target in codec_fuzz broker_fuzz authfiles_fuzz; do
  out=fuzz-out/$target
  mkdir -p "$out/corpus" "$out/artifacts"
  /usr/bin/python3 test/fuzz/make_corpus.py "$out/corpus"
  echo "fuzzing $target for ${seconds}s"
  if ! "$build/test/fuzz/$target" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
      -dict=test/fuzz/mqtt.dict -artifact_prefix="$out/artifacts/" -print_final_stats=1 \
      "$out/corpus" >"$out/log" 2>&1; then
    echo "$target: FAILED, see $out/log and $out/artifacts/"
    tail -n 40 "$out/log"
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$out/log" | tail -n 2
  fi
done
exit $status
