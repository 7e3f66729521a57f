#!/usr/bin/env bash
# The test command: installs missing packages, builds, and runs every test.
#   scripts/test.sh            everything below, one after the other (what CI runs)
#   scripts/test.sh --dev      dev build (-Werror) only
#   scripts/test.sh --asan     AddressSanitizer + UndefinedBehaviorSanitizer build only
#   scripts/test.sh --tsan     ThreadSanitizer build only (library, servers and their tests; no librdkafka parts)
#   scripts/test.sh --fuzz     every fuzzer for a short bound (fuzz/run.sh 10)
#   scripts/test.sh --package  the Debian package and the container image, built, installed and run
#                              (scripts/package.sh --test, scripts/image.sh --test; as root)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
kws_ensure_packages

presets=(dev asan-ubsan tsan)
fuzz=1
package=1
case "${1:-}" in
  --dev) presets=(dev); fuzz=0; package=0 ;;
  --asan) presets=(asan-ubsan); fuzz=0; package=0 ;;
  --tsan) presets=(tsan); fuzz=0; package=0 ;;
  --fuzz) presets=(); package=0 ;;
  --package) presets=(); fuzz=0 ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--dev|--asan|--tsan|--fuzz|--package]" >&2; exit 2 ;;
esac

jobs=$(nproc)
for preset in "${presets[@]}"; do
  echo "== kws: configure and build ($preset)"
  cmake --preset "$preset" -DKWS_BUILD_TESTS=ON -DKWS_BUILD_APPS=ON >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  echo "== kws: test ($preset)"
  # The suite is mostly waiting on sockets and child processes, so run a little wider than the core count.
  ctest --preset "$preset" -j "$((jobs * 2))"
done

if [ "$fuzz" = 1 ]; then
  fuzz/run.sh 10
fi

if [ "$package" = 1 ]; then
  # The image reuses the package's release build.
  scripts/package.sh --test
  scripts/image.sh --test
fi
