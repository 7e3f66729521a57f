#!/usr/bin/env bash
# The test command: installs missing packages, builds, and runs every test.
#   scripts/test.sh            both builds below, one after the other (what CI runs)
#   scripts/test.sh --dev      dev build (-Werror) only
#   scripts/test.sh --asan     AddressSanitizer + UndefinedBehaviorSanitizer build only
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
kws_ensure_packages

presets=(dev asan-ubsan)
case "${1:-}" in
  --dev) presets=(dev) ;;
  --asan) presets=(asan-ubsan) ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--dev|--asan]" >&2; exit 2 ;;
esac

jobs=$(nproc)
for preset in "${presets[@]}"; do
  echo "== kws: configure and build ($preset)"
  cmake --preset "$preset" -DKWS_BUILD_TESTS=ON -DKWS_BUILD_APPS=ON -DKWS_BUILD_EXAMPLES=ON >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  echo "== kws: test ($preset)"
  # The suite is mostly waiting on sockets and child processes, so run a little wider than the core count.
  ctest --preset "$preset" -j "$((jobs * 2))"
done
