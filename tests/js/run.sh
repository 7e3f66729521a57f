#!/bin/sh
# Runs the JavaScript tests under CTest, from js/ (whose node_modules they use).
#   run.sh ci          npm ci in js/ when node_modules is missing or older than package-lock.json
#   run.sh node ARGS   node with these arguments
# Exits 77, which CTest counts as skipped, when node or npm is not installed.
set -eu
cd "$(dirname "$0")/../../js"
for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "kws: $tool is not installed, so the JavaScript tests are skipped (Debian: apt-get install nodejs npm)"
    exit 77
  fi
done
case "$1" in
  ci)
    if [ node_modules/.package-lock.json -nt package-lock.json ]; then
      echo "kws: js/node_modules is up to date with package-lock.json"
    else
      npm ci --no-audit --no-fund
    fi
    ;;
  node)
    shift
    exec node "$@"
    ;;
  *)
    echo "usage: run.sh ci | run.sh node ARGS..." >&2
    exit 2
    ;;
esac
