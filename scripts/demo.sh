#!/usr/bin/env bash
# The main job, end to end: build the proxy and the dev broker, start both, produce a few messages with kcat
# through the proxy, consume them back, compare, stop both servers.
#
#   kcat ──TCP 127.0.0.1:8080──▶ kafka-websocket-proxy ──ws://localhost:8787/──▶ kafka-websocket-devbroker
#
# The dev broker advertises its own WebSocket address in Metadata, and has no TCP listener; the proxy rewrites
# that address to its own, so kcat stays on the proxy after bootstrapping (see docs/addressing.md).
# If 8080 or 8787 is taken, the demo says so and uses a free port instead.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PROXY_PORT=8080
BROKER_PORT=8787
TOPIC=test-topic
KCAT_TIMEOUT=20s
PROXY=build/dev/apps/kafka-websocket-proxy/kafka-websocket-proxy
BROKER=build/dev/apps/kafka-websocket-devbroker/kafka-websocket-devbroker

step_name="start"
step() {
  step_name="$1"
  echo
  echo "== kws demo: $1"
}
fail() {
  echo "kws demo: FAILED at step '$step_name': $*" >&2
  exit 1
}

work=$(mktemp -d /tmp/kws-demo.XXXXXX) || fail "mktemp"
proxy_pid=""
broker_pid=""

show_logs() {
  local f
  for f in proxy broker; do
    if [ -s "$work/$f.log" ]; then
      echo "---- $f log ($work/$f.log) ----"
      cat "$work/$f.log"
    fi
  done
}

# Stops a server with SIGTERM, then SIGKILL if it is still there after 5 s.
stop() {
  local pid="$1"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop "$proxy_pid"
  stop "$broker_pid"
  if [ "$rc" -ne 0 ] || [ "${shown_logs:-}" != yes ]; then
    echo
    show_logs
  fi
  rm -rf "$work"
  [ "$rc" -eq 0 ] || echo "kws demo: exit code $rc (failed step: $step_name)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# True when something on 127.0.0.1 listens on the port.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 15 s for a line matching $2 in log $1 while process $3 lives; prints the first capture group.
wait_for_line() {
  local log="$1" re="$2" pid="$3"
  for _ in $(seq 150); do
    if grep -qE "$re" "$log" 2>/dev/null; then
      sed -nE "s/.*$re.*/\1/p" "$log" | head -n 1
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

step "check Debian packages"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
kws_ensure_packages || fail "missing Debian packages (see the command above)"

step "configure and build (cmake preset dev)"
cmake --preset dev >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; fail "cmake --preset dev"; }
cmake --build --preset dev --target kafka-websocket-proxy kafka-websocket-devbroker ||
  fail "cmake --build --preset dev"

step "choose ports"
if port_busy "$BROKER_PORT"; then
  BROKER_PORT=$(free_port) || fail "no free port for the dev broker"
  echo "port 8787 is in use on 127.0.0.1: the dev broker takes $BROKER_PORT instead"
fi
if port_busy "$PROXY_PORT"; then
  PROXY_PORT=$(free_port) || fail "no free port for the proxy"
  echo "port 8080 is in use on 127.0.0.1: the proxy takes $PROXY_PORT instead"
fi
echo "proxy 127.0.0.1:$PROXY_PORT, dev broker ws://127.0.0.1:$BROKER_PORT/"

step "start kafka-websocket-proxy"
# The original Go proxy's command line (single-dash flags), bound to 127.0.0.1 for the demo.
echo "+ $PROXY -listen 127.0.0.1 -port $PROXY_PORT -broker localhost:$BROKER_PORT"
"$PROXY" -listen 127.0.0.1 -port "$PROXY_PORT" -broker "localhost:$BROKER_PORT" >"$work/proxy.log" 2>&1 &
proxy_pid=$!
wait_for_line "$work/proxy.log" 'listening on 127\.0\.0\.1:([0-9]+)' "$proxy_pid" >/dev/null ||
  fail "the proxy did not start on 127.0.0.1:$PROXY_PORT (log below)"
echo "proxy running (pid $proxy_pid)"

step "start kafka-websocket-devbroker"
echo "+ $BROKER --listen 127.0.0.1:$BROKER_PORT"
"$BROKER" --listen "127.0.0.1:$BROKER_PORT" >"$work/broker.log" 2>&1 &
broker_pid=$!
wait_for_line "$work/broker.log" 'listening ws=127\.0\.0\.1:([0-9]+)' "$broker_pid" >/dev/null ||
  fail "the dev broker did not start on 127.0.0.1:$BROKER_PORT (log below)"
echo "dev broker running (pid $broker_pid)"

step "metadata through the proxy"
echo "+ kcat -b 127.0.0.1:$PROXY_PORT -L"
timeout "$KCAT_TIMEOUT" kcat -b "127.0.0.1:$PROXY_PORT" -L >"$work/metadata.txt" 2>"$work/metadata.err" ||
  { cat "$work/metadata.err" >&2; fail "kcat -L failed"; }
sed -n 's/^ *\(broker .*\)/  \1/p' "$work/metadata.txt"
grep -q "broker 0 at 127.0.0.1:$PROXY_PORT" "$work/metadata.txt" ||
  fail "the broker is not advertised at the proxy's address"
echo "the broker advertises its own WebSocket address, 127.0.0.1:$BROKER_PORT; clients see the proxy's instead"

step "produce with kcat through the proxy"
cat >"$work/in.txt" <<'EOF'
user-1:hello over WebSocket
user-2:{"event":"login","ok":true}
user-1:a value with spaces, commas, and ünïcödé
user-3:
user-2:the last one
EOF
echo "going in (key:value, topic $TOPIC):"
sed 's/^/  > /' "$work/in.txt"
echo "+ kcat -b 127.0.0.1:$PROXY_PORT -P -t $TOPIC -K: -l in.txt"
timeout "$KCAT_TIMEOUT" kcat -b "127.0.0.1:$PROXY_PORT" -P -t "$TOPIC" -K: -l "$work/in.txt" \
  2>"$work/produce.err"
rc=$?
[ "$rc" -eq 0 ] || { cat "$work/produce.err" >&2; fail "kcat producer exited with $rc (124: timed out)"; }

step "consume with kcat through the proxy"
printf '%s\n' "+ kcat -b 127.0.0.1:$PROXY_PORT -C -t $TOPIC -o beginning -e -f '%k:%s\n'"
timeout "$KCAT_TIMEOUT" kcat -b "127.0.0.1:$PROXY_PORT" -C -t "$TOPIC" -o beginning -e -f '%k:%s\n' \
  >"$work/out.txt" 2>"$work/consume.err"
rc=$?
[ "$rc" -eq 0 ] || { cat "$work/consume.err" >&2; fail "kcat consumer exited with $rc (124: timed out)"; }
echo "coming out:"
sed 's/^/  < /' "$work/out.txt"

step "compare"
if ! cmp -s "$work/in.txt" "$work/out.txt"; then
  diff "$work/in.txt" "$work/out.txt" >&2
  fail "what came out differs from what went in"
fi
echo "$(wc -l <"$work/in.txt") messages went in and came out byte-identical"

step "stop the servers"
stop "$proxy_pid"
proxy_pid=""
stop "$broker_pid"
broker_pid=""
show_logs
shown_logs=yes

step "done"
echo "OK: kcat -> kafka-websocket-proxy (127.0.0.1:$PROXY_PORT) -> WebSocket -> kafka-websocket-devbroker" \
  "(127.0.0.1:$BROKER_PORT) and back"
exit 0
