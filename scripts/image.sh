#!/usr/bin/env bash
# The container image kafka-websocket-proxy, built with podman from this repository alone: FROM scratch, so no
# image registry is contacted. The proxy is built in the `package` preset (build/package), then the build
# context build/image is laid out: rootfs/ holds the stripped binary, exactly the shared libraries ldd names
# plus the dynamic loader, Debian's CA bundle, /etc/passwd and /etc/group with the user kws (10001).
#   scripts/image.sh           build the image, tagged kafka-websocket-proxy:latest and :VERSION
#   scripts/image.sh --test    build it under a tag of its own, run the proxy from it against the dev broker
#                              (host network, 127.0.0.1) with kcat producing and consuming through it, check
#                              TLS against the image's trust store and a clean stop; then remove the container
#                              and the tag
# podman reads CONTAINERS_CONF; when unset, build/image/containers.conf is used (no default ulimits: inside a
# container podman may not set them). KWS_PODMAN_RUNTIME (default runc) picks the OCI runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
kws_ensure_packages podman runc ca-certificates

mode=build
case "${1:-}" in
  --test) mode="test" ;;
  "") ;;
  *) echo "usage: scripts/image.sh [--test]" >&2; exit 2 ;;
esac

out=build/image
proxy=build/package/apps/kafka-websocket-proxy/kafka-websocket-proxy
devbroker=build/package/apps/kafka-websocket-devbroker/kafka-websocket-devbroker
mkdir -p "$out"
if [ -z "${CONTAINERS_CONF:-}" ]; then
  printf '[containers]\ndefault_ulimits = []\n' >"$out/containers.conf"
  export CONTAINERS_CONF="$PWD/$out/containers.conf"
fi
pm=(podman --runtime "${KWS_PODMAN_RUNTIME:-runc}")

echo "== kws image: build the proxy (preset package, build/package)"
cmake --preset package >/dev/null
targets=(kafka-websocket-proxy)
[ "$mode" = test ] && targets+=(kafka-websocket-devbroker)
cmake --build --preset package --target "${targets[@]}"
version=$("$proxy" --version | awk '{print $2}')

# Copies executable $1, stripped, to /usr/bin in root filesystem $2, with exactly the shared objects ldd names
# for it (and the dynamic loader); prints their paths.
add_executable_with_libraries() {
  local exe="$1" root="$2" lib libs interp
  mkdir -p "$root/usr/bin"
  strip --strip-unneeded -o "$root/usr/bin/$(basename "$exe")" "$exe"
  ldd "$exe" >"$out/ldd.txt"
  if grep -q 'not found' "$out/ldd.txt"; then
    cat "$out/ldd.txt" >&2
    echo "kws image: $exe needs a library that is not installed" >&2
    return 1
  fi
  # "name => /path (addr)" for libraries, "/path (addr)" for the loader; linux-vdso has no file. Each goes to
  # the path ldd found it at, which is in the loader's default directories (the image has no ld.so.cache).
  libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' "$out/ldd.txt")
  interp=$(readelf -l "$exe" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
  grep -qxF "$interp" <<<"$libs" || libs+=$'\n'"$interp"
  for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  echo "$libs"
}

echo "== kws image: root filesystem ($out/rootfs)"
root="$out/rootfs"
rm -rf "$root"
mkdir -p "$root/etc/ssl/certs"
libs=$(add_executable_with_libraries "$proxy" "$root")
# OpenSSL looks for its default trust store in OPENSSLDIR (Debian: /usr/lib/ssl), which points at the bundle.
ssldir=$(openssl version -d | sed 's/^OPENSSLDIR: "\(.*\)"$/\1/')
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$root$ssldir"
ln -s /etc/ssl/certs/ca-certificates.crt "$root$ssldir/cert.pem"
ln -s /etc/ssl/certs "$root$ssldir/certs"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nkws:x:10001:10001:kafka-websocket-proxy:/nonexistent:/usr/sbin/nologin\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nkws:x:10001:\n' >"$root/etc/group"
# Broker names through /etc/hosts, then DNS (glibc 2.34+ has both built in, nothing to dlopen).
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod -R u=rwX,go=rX "$root"
echo "$(wc -l <<<"$libs") shared objects: $(tr '\n' ' ' <<<"$libs")"
du -sh --apparent-size "$root" | awk '{print "root filesystem: " $1}'

if [ "$mode" = build ]; then
  tags=(kafka-websocket-proxy:latest "kafka-websocket-proxy:$version")
else
  tags=("kafka-websocket-proxy:test-$$-$RANDOM")
fi
echo "== kws image: podman build ${tags[*]}"
timeout 300 podman build --pull=never --layers=false -f Containerfile --build-arg "KWS_VERSION=$version" \
  "${tags[@]/#/--tag=}" "$out"
tag=${tags[0]}
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "image $tag: $size bytes ($((size / 1024)) KiB)"
[ "$mode" = build ] && exit 0

# ---- --test ----
KWS_WORK=$(mktemp -d /tmp/kws-image-test.XXXXXX)
# shellcheck source=scripts/smoke.sh
source scripts/smoke.sh
container="kws-image-test-$$"
KWS_BROKER_PID=""
proxy_pid=""
socat_pid=""
broker_tag=""
step="start"
# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local c
  [ "$rc" -eq 0 ] || podman logs "$container-broker" >"$KWS_WORK/$container-broker.log" 2>&1 || true
  for c in "$container" "$container-tls" "$container-compose" "$container-broker"; do
    "${pm[@]}" rm --force --ignore --time 0 "$c" >/dev/null 2>&1 || true
  done
  [ -n "$proxy_pid" ] && kws_stop "$proxy_pid"
  [ -n "$socat_pid" ] && kws_stop "$socat_pid"
  [ -n "$KWS_BROKER_PID" ] && kws_stop "$KWS_BROKER_PID"
  [ -n "$broker_tag" ] && podman rmi -f "$broker_tag" >/dev/null 2>&1
  podman rmi -f "$tag" >/dev/null 2>&1 || true
  [ "$rc" -ne 0 ] && kws_report_failure image "$step" "$rc"
  rm -rf "$KWS_WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() { echo "kws image test: $*" >&2; exit 1; }

step="image configuration"
echo "== kws image test: $step"
config=$(podman image inspect --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$tag")
echo "$config"
[ "$config" = '10001:10001 ["/usr/bin/kafka-websocket-proxy"] ["-port","8080","-broker","localhost:8787"]' ] ||
  fail "unexpected user, entrypoint or cmd"

step="the binary starts inside the image"
echo "== kws image test: $step"
got=$(timeout 60 "${pm[@]}" run --rm --network none "$tag" --version) || fail "podman run --version failed"
[ "$got" = "kafka-websocket-proxy $version" ] || fail "--version printed '$got'"
echo "$got"

step="dev broker"
echo "== kws image test: $step"
kws_start_devbroker "$devbroker"
echo "dev broker on ws://127.0.0.1:$KWS_BROKER_PORT/"

step="proxy container"
echo "== kws image test: $step"
"${pm[@]}" run --name "$container" --network host "$tag" --listen 127.0.0.1 --port 0 \
  --broker "localhost:$KWS_BROKER_PORT" >"$KWS_WORK/proxy.log" 2>&1 &
proxy_pid=$!
port=$(kws_wait_for_line "$KWS_WORK/proxy.log" 'listening on 127\.0\.0\.1:([0-9]+)' "$proxy_pid" 60) ||
  fail "the proxy in the container did not start listening"
pid=$(podman inspect --format '{{.State.Pid}}' "$container")
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
echo "proxy in container $container on 127.0.0.1:$port, host pid $pid, uid $uid"
[ "$uid" = 10001 ] || fail "the proxy runs as uid $uid, not 10001"

step="kcat through the containerised proxy"
echo "== kws image test: $step"
kws_kcat_roundtrip "127.0.0.1:$port" "broker [0-9]+ at 127\.0\.0\.1:$port"

step="stop with SIGTERM"
echo "== kws image test: $step"
timeout 60 podman stop -t 20 "$container" >/dev/null
wait "$proxy_pid" || true
proxy_pid=""
code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
grep -q 'no new connections' "$KWS_WORK/proxy.log" || fail "no drain line in the proxy's log"
[ "$code" = 0 ] || fail "the proxy exited with $code after SIGTERM"
echo "exit code $code after SIGTERM (drained)"
"${pm[@]}" rm -f "$container" >/dev/null

step="compose-style: broker and proxy as containers on a bridge network"
echo "== kws image test: $step"
# What the compose snippet in README does: the broker is a container called broker, the proxy gets only
# command: ["-broker", "broker:8787"] (its port stays the default, 8080) and ports: ["8080:8080"], published
# here on 127.0.0.1. Compose's name service is stood in for by --add-host. The dev broker gets an image of
# its own for this, on top of the proxy's (same libraries), removed with it.
broker_ctx="$out/broker-context"
rm -rf "$broker_ctx"
mkdir -p "$broker_ctx"
add_executable_with_libraries "$devbroker" "$broker_ctx/rootfs" >/dev/null
chmod -R u=rwX,go=rX "$broker_ctx/rootfs"
printf 'FROM %s\nCOPY rootfs/ /\nENTRYPOINT ["/usr/bin/kafka-websocket-devbroker"]\nCMD []\n' "$tag" \
  >"$broker_ctx/Containerfile"
broker_tag="kafka-websocket-devbroker:${tag#*:}"
timeout 300 podman build --pull=never --layers=false -q -t "$broker_tag" "$broker_ctx" >/dev/null
timeout 60 "${pm[@]}" run -d --name "$container-broker" "$broker_tag" --listen 0.0.0.0:8787 \
  --advertise broker:8787 >/dev/null
broker_ip=$(podman inspect --format '{{.NetworkSettings.IPAddress}}' "$container-broker")
host_port=8080
args=(-broker broker:8787)
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  # Something on this machine has 8080: the same port inside and out, so that the advertised port holds.
  host_port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  args+=(-port "$host_port")
  echo "127.0.0.1:8080 is in use: the proxy takes $host_port inside and outside instead"
fi
"${pm[@]}" run --name "$container-compose" --add-host "broker:$broker_ip" -p "127.0.0.1:$host_port:$host_port" \
  "$tag" "${args[@]}" >"$KWS_WORK/$container-compose.log" 2>&1 &
proxy_pid=$!
kws_wait_for_line "$KWS_WORK/$container-compose.log" "listening on (.*:$host_port) " "$proxy_pid" 60 >/dev/null ||
  fail "the proxy in container $container-compose did not start listening"
echo "broker container at $broker_ip:8787; proxy container published on 127.0.0.1:$host_port; args: ${args[*]}"
kws_kcat_roundtrip "127.0.0.1:$host_port" "broker [0-9]+ at localhost:$host_port"
timeout 60 podman stop -t 20 "$container-compose" >/dev/null
wait "$proxy_pid" || true
proxy_pid=""
"${pm[@]}" rm --force --ignore --time 0 "$container-compose" "$container-broker" >/dev/null
podman rmi -f "$broker_tag" >/dev/null

step="wss:// with the image's trust store"
echo "== kws image test: $step"
# A CA of the test's own, put in place of the image's bundle: the proxy trusts it with no --ca-file, so the
# image's default store is the file OpenSSL reads. socat ends TLS in front of the dev broker.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=kws image test CA" -keyout "$KWS_WORK/ca.key" \
  -out "$KWS_WORK/ca.pem" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$KWS_WORK/server.key" \
  -out "$KWS_WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$KWS_WORK/san.ext"
openssl x509 -req -in "$KWS_WORK/server.csr" -CA "$KWS_WORK/ca.pem" -CAkey "$KWS_WORK/ca.key" -CAcreateserial \
  -days 1 -extfile "$KWS_WORK/san.ext" -out "$KWS_WORK/server.pem" 2>/dev/null
chmod 644 "$KWS_WORK"/*.pem
tls_port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
socat "OPENSSL-LISTEN:$tls_port,bind=127.0.0.1,reuseaddr,fork,cert=$KWS_WORK/server.pem,key=$KWS_WORK/server.key,verify=0" \
  "TCP:127.0.0.1:$KWS_BROKER_PORT" >"$KWS_WORK/socat.log" 2>&1 &
socat_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null && break; sleep 0.1; done
# Starts the proxy from the image as container $1 for the wss:// broker, with more podman arguments after it;
# sets proxy_pid and port.
start_tls_proxy() {
  local name="$1"
  shift
  "${pm[@]}" run --name "$name" --network host "$@" "$tag" --listen 127.0.0.1 --port 0 \
    --broker "localhost:$tls_port" --tls --broker-url-template "wss://localhost:$tls_port/" --dial-retries 0 \
    >"$KWS_WORK/$name.log" 2>&1 &
  proxy_pid=$!
  port=$(kws_wait_for_line "$KWS_WORK/$name.log" 'listening on 127\.0\.0\.1:([0-9]+)' "$proxy_pid" 60) ||
    fail "the proxy in container $name did not start listening"
}
stop_container() {
  timeout 60 podman stop -t 20 "$1" >/dev/null
  wait "$proxy_pid" || true
  proxy_pid=""
  "${pm[@]}" rm -f "$1" >/dev/null
}
start_tls_proxy "$container-tls" -v "$KWS_WORK/ca.pem:/etc/ssl/certs/ca-certificates.crt:ro"
kws_kcat_roundtrip "127.0.0.1:$port" "broker [0-9]+ at 127\.0\.0\.1:$port"
grep -q "broker=wss://localhost:$tls_port/" "$KWS_WORK/$container-tls.log" || fail "the proxy did not use wss://"
stop_container "$container-tls"
echo "the test CA in place of the image's bundle: trusted"
# The image's own bundle (Debian's CAs) does not hold the test CA: the same dial must be refused.
start_tls_proxy "$container-tls"
timeout 20 kcat -b "127.0.0.1:$port" -m 5 -L >/dev/null 2>&1 || true
grep -E "certificate" "$KWS_WORK/$container-tls.log" | head -n 1 | grep . ||
  fail "with the image's own bundle the proxy did not refuse the test CA's certificate"
stop_container "$container-tls"
echo "the image's own bundle: the test CA's certificate refused"

step="done"
echo "== kws image test: OK (image $((size / 1024)) KiB; container and tag removed)"
