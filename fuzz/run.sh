#!/usr/bin/env bash
# Builds every libFuzzer target (clang, in a build tree of its own) and runs each from its seeds for a bounded
# time. Exits 1 at the first target that crashes or breaks an invariant; the input is left in
# build/fuzz/artifacts/ (replay it with build/fuzz/fuzz/kws_<target> <file>, then make it a unit test).
#   fuzz/run.sh [seconds per target]     (default 60; CI runs a short bound)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
kws_ensure_packages clang-14 libclang-rt-14-dev

seconds=${1:-60}
case "$seconds" in '' | *[!0-9]*) echo "usage: fuzz/run.sh [seconds per target]" >&2; exit 2 ;; esac

# target name -> its seed corpus in fuzz/corpus/
declare -A corpus=(
  [frame_fuzz]=frame_fuzz
  [kafka_header_fuzz]=kafka_header_fuzz
  [kafka_rewrite_fuzz]=kafka_rewrite
  [kafka_tracker_fuzz]=kafka_tracker
  [address_fuzz]=address
  [websocket_fuzz]=websocket
  [proxy_protocol_fuzz]=proxy_protocol
)
targets=(frame_fuzz kafka_header_fuzz kafka_rewrite_fuzz kafka_tracker_fuzz address_fuzz websocket_fuzz proxy_protocol_fuzz)

echo "== kws fuzz: configure and build (clang-14, ASan + UBSan + libFuzzer)"
cmake -S . -B build/fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 -DKWS_BUILD_FUZZ=ON -DKWS_BUILD_TESTS=OFF \
  -DKWS_BUILD_APPS=OFF -DKWS_BUILD_EXAMPLES=OFF -DKWS_BUILD_RDKAFKA=OFF >/dev/null
cmake --build build/fuzz -j "$(nproc)" --target "${targets[@]/#/kws_}"

mkdir -p build/fuzz/artifacts
for t in "${targets[@]}"; do
  echo "== kws fuzz: $t for ${seconds}s"
  # New inputs go to a scratch directory; the seeds in the tree are only read.
  work="build/fuzz/work/$t"
  rm -rf "$work" && mkdir -p "$work"
  if ! "build/fuzz/fuzz/kws_$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
    -artifact_prefix="build/fuzz/artifacts/$t-" "$work" "fuzz/corpus/${corpus[$t]}" >"build/fuzz/$t.log" 2>&1; then
    tail -n 40 "build/fuzz/$t.log"
    echo "kws fuzz: $t FAILED (see build/fuzz/$t.log and build/fuzz/artifacts/)" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "build/fuzz/$t.log" | tr '\n' ' '
  echo
done
echo "== kws fuzz: every target ran ${seconds}s without a finding"
