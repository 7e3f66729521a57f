#!/usr/bin/env bash
# The Debian package kafka-websocket-shim, built with CPack in the `package` preset (build/package).
#   scripts/package.sh          build the .deb (path printed at the end)
#   scripts/package.sh --test   and check it: its control fields and file list (no dev broker), then, as root,
#                               install it with apt-get, run the installed proxy and plugin against the dev
#                               broker with kcat, check the systemd unit (systemd-analyze verify, where it
#                               exists), and purge the package again
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
kws_ensure_packages dpkg-dev

mode=build
case "${1:-}" in
  --test) mode="test" ;;
  "") ;;
  *) echo "usage: scripts/package.sh [--test]" >&2; exit 2 ;;
esac

echo "== kws package: build (preset package, build/package)"
cmake --preset package >/dev/null
cmake --build --preset package
echo "== kws package: cpack"
rm -f build/package/kafka-websocket-shim_*.deb
cpack --preset package >build/package/cpack.log 2>&1 || { cat build/package/cpack.log >&2; exit 1; }
deb=$(ls "$PWD"/build/package/kafka-websocket-shim_*.deb)
size=$(stat -c %s "$deb")
echo "$deb: $size bytes ($((size / 1024)) KiB)"
[ "$mode" = build ] && exit 0

# ---- --test ----
pkg=kafka-websocket-shim
KWS_WORK=$(mktemp -d /tmp/kws-package-test.XXXXXX)
# shellcheck source=scripts/smoke.sh
source scripts/smoke.sh
KWS_BROKER_PID=""
proxy_pid=""
installed=no
step="start"
# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$proxy_pid" ] && kws_stop "$proxy_pid"
  [ -n "$KWS_BROKER_PID" ] && kws_stop "$KWS_BROKER_PID"
  if [ "$installed" = yes ]; then
    DEBIAN_FRONTEND=noninteractive timeout 120 apt-get purge -y -qq "$pkg" >/dev/null 2>&1 ||
      echo "kws package test: could not purge $pkg" >&2
  fi
  [ "$rc" -ne 0 ] && kws_report_failure package "$step" "$rc"
  rm -rf "$KWS_WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() { echo "kws package test: $*" >&2; exit 1; }

step="control fields"
echo "== kws package test: $step"
dpkg-deb --info "$deb"
depends=$(dpkg-deb --field "$deb" Depends)
for dep in libc6 libstdc++6 libssl3 librdkafka1 libjemalloc2 libprometheus-cpp-core1.0; do
  tr ',' '\n' <<<"$depends" | awk '{ print $1 }' | grep -qxF "$dep" || fail "Depends has no $dep: $depends"
done
[ "$(dpkg-deb --info "$deb" conffiles)" = /etc/default/kafka-websocket-proxy ] ||
  fail "/etc/default/kafka-websocket-proxy is not a conffile"
for script in postinst prerm postrm; do
  dpkg-deb --info "$deb" "$script" >/dev/null || fail "no $script in the package"
done

step="file list"
echo "== kws package test: $step"
dpkg-deb --contents "$deb" | awk '{print $6 ($7 ? " " $7 " " $8 : "")}' | sed 's|^\./|/|' >"$KWS_WORK/contents.txt"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
expected=(
  /usr/bin/kafka-websocket-proxy
  /usr/bin/kafka-websocket-gateway
  "/usr/lib/$multiarch/libkws_shim.a"
  "/usr/lib/$multiarch/libkws_rdkafka_hook.a"
  "/usr/lib/$multiarch/libkws_rdkafka.so"
  "/usr/lib/$multiarch/cmake/kws/kwsConfig.cmake"
  "/usr/lib/$multiarch/cmake/kws/kwsConfigVersion.cmake"
  "/usr/lib/$multiarch/cmake/kws/kwsTargets.cmake"
  "/usr/lib/$multiarch/cmake/kws/kwsRdkafkaTargets.cmake"
  /usr/include/kws/kws.hpp
  /usr/include/kws/connection.hpp
  /usr/include/kws/rdkafka.hpp
  /usr/lib/systemd/system/kafka-websocket-proxy.service
  /etc/default/kafka-websocket-proxy
)
for f in "${expected[@]}"; do
  grep -qxF "$f" "$KWS_WORK/contents.txt" || fail "$f is not in the package"
done
if grep -q devbroker "$KWS_WORK/contents.txt"; then
  grep devbroker "$KWS_WORK/contents.txt" >&2
  fail "the dev broker is in the package"
fi
echo "$(grep -cv '/$' "$KWS_WORK/contents.txt") files; the ${#expected[@]} expected ones present, no dev broker"

if [ "$(id -u)" -ne 0 ]; then
  echo "kws package test: installing needs root; the checks of the installed package were not run" >&2
  exit 1
fi

step="install"
echo "== kws package test: $step"
# The test installs and purges the package: it must not take over an installation that is already there.
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "installed"; then
  fail "$pkg is installed already; remove it first (the test purges what it installs)"
fi
[ ! -e /usr/bin/kafka-websocket-proxy ] || fail "/usr/bin/kafka-websocket-proxy exists already"
installed=yes
DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends "$deb" \
  >"$KWS_WORK/apt.log" 2>&1 || { cat "$KWS_WORK/apt.log" >&2; fail "apt-get install $deb failed"; }
dpkg-query -W -f='${Package} ${Version} ${Status}\n' "$pkg"
got=$(/usr/bin/kafka-websocket-proxy --version)
echo "$got"
[ "$got" = "kafka-websocket-proxy $(dpkg-deb --field "$deb" Version | sed 's/-[^-]*$//')" ] ||
  fail "--version printed '$got'"
/usr/bin/kafka-websocket-gateway --version

step="relay through the installed proxy"
echo "== kws package test: $step"
kws_start_devbroker build/package/apps/kafka-websocket-devbroker/kafka-websocket-devbroker
# The flags the service would pass, plus a local port of its own: the packaged defaults name the broker.
# shellcheck disable=SC1091
KWS_PROXY_ARGS=$(. /etc/default/kafka-websocket-proxy && echo "$KWS_PROXY_ARGS")
echo "KWS_PROXY_ARGS from /etc/default/kafka-websocket-proxy: $KWS_PROXY_ARGS"
# shellcheck disable=SC2086  # split at spaces, as systemd does with $KWS_PROXY_ARGS
/usr/bin/kafka-websocket-proxy $KWS_PROXY_ARGS --listen 127.0.0.1 --port 0 --broker "localhost:$KWS_BROKER_PORT" \
  >"$KWS_WORK/proxy.log" 2>&1 &
proxy_pid=$!
port=$(kws_wait_for_line "$KWS_WORK/proxy.log" 'listening on 127\.0\.0\.1:([0-9]+)' "$proxy_pid" 30) ||
  fail "the installed proxy did not start listening"
kws_kcat_roundtrip "127.0.0.1:$port" "broker [0-9]+ at 127\.0\.0\.1:$port"
kws_stop "$proxy_pid"
proxy_pid=""
[ "$KWS_EXIT" = 0 ] || fail "the installed proxy exited with $KWS_EXIT after SIGTERM"

step="the installed librdkafka plugin"
echo "== kws package test: $step"
# By name alone: the dynamic loader finds it in the multiarch directory.
kws_kcat_roundtrip "127.0.0.1:$KWS_BROKER_PORT" "" -X plugin.library.paths=libkws_rdkafka

step="systemd unit"
echo "== kws package test: $step"
unit=/usr/lib/systemd/system/kafka-websocket-proxy.service
# shellcheck disable=SC2016  # a literal $KWS_PROXY_ARGS: systemd expands it
grep -qxF 'ExecStart=/usr/bin/kafka-websocket-proxy $KWS_PROXY_ARGS' "$unit" || fail "unexpected ExecStart in $unit"
if command -v systemd-analyze >/dev/null; then
  # Offline: loads the unit and checks its settings and the ExecStart binary; needs no running systemd.
  SYSTEMD_LOG_LEVEL=notice timeout 60 systemd-analyze verify "$unit" 2>&1 | tee "$KWS_WORK/verify.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || fail "systemd-analyze verify exited with $rc"
  if grep -q kafka-websocket-proxy "$KWS_WORK/verify.log"; then fail "systemd-analyze verify complains about the unit"; fi
  echo "systemd-analyze verify: the unit loads without a complaint"
  timeout 60 systemd-analyze security --offline=true "$unit" 2>/dev/null | grep 'Overall exposure' || true
else
  echo "systemd-analyze is not installed: the unit was not verified"
fi

step="purge"
echo "== kws package test: $step"
DEBIAN_FRONTEND=noninteractive timeout 120 apt-get purge -y -qq "$pkg" >"$KWS_WORK/apt.log" 2>&1 ||
  { cat "$KWS_WORK/apt.log" >&2; fail "apt-get purge failed"; }
installed=no
for f in /usr/bin/kafka-websocket-proxy "$unit" /etc/default/kafka-websocket-proxy "/usr/lib/$multiarch/libkws_rdkafka.so"; do
  [ ! -e "$f" ] || fail "$f is still there after the purge"
done

step="done"
echo "== kws package test: OK ($(basename "$deb"), $((size / 1024)) KiB; installed, used and purged)"
