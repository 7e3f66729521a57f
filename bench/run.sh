#!/usr/bin/env bash
# bench/run.sh: the benchmark matrix of the proxy and the gateway in one command (see bench/README.md, "run.sh").
#
# Every case runs through the process under test (the proxy or the gateway) and directly against the broker
# it stands in front of, alternating which goes first, --reps times; the table shows medians and via / direct.
# Unpinned, default flags unless --threads is given (the gateway gets its handshake admission limits raised).
#
#   bench/run.sh [--no-build] [--proxy PATH] [--gateway PATH] [--threads N] [--reps N] [--duration SECONDS]
#                [--cases LIST] [--idle-conns "N ..."] [--idle-size S] [--no-kafka] [--kafka-messages N]
#                [--syscalls] [--pin]
#
# Cases (LIST: names or the groups ws, wss, gw, gwss; default: all of them):
#   ws://, the proxy in front of a WebSocket echo server (Node.js `ws`, bench/ws-echo), against a WebSocket
#     client straight to it: lat (1 conn, 1 KiB, depth 1: added p50), d64 (1 conn, 1 KiB, depth 64), big1
#     (1 conn, 100 KiB, depth 1), big16 (1 conn, 100 KiB, depth 16), c200d1 (200 conns, 1 KiB, depth 1),
#     c200d16 (200 conns, 1 KiB, depth 16).
#   wss://, the same echo server behind TLS (certificate made at run time), the proxy with --ca-file, against
#     a wss:// client straight to it: wss-lat wss-d64 wss-big1 wss-big16 wss-c200d1 wss-c200d16.
#   the gateway, a WebSocket client -> kafka-websocket-gateway -> a Kafka-framed TCP echo server
#     (kws_tcp_echo), against a TCP client straight to that server: gw-lat gw-d16 gw-d64 gw-big1 gw-big16
#     gw-c200d1 gw-c200d16 gw-c200d64; the same over wss:// (the gateway's TLS listener), against a TLS
#     client straight to a TLS echo server: gwss-lat gwss-d16 ... gwss-c200d64.
#   idle (proxy), gw-idle (gateway), wss-idle, gwss-idle: a fresh proxy or gateway, its RSS before and after
#     N idle connections that made one round trip each, per connection, once for each N of --idle-conns.
#     The round trip's frame is 64 bytes, or --idle-size bytes (what an idle connection keeps after it).
#     Over TLS on the TCP side too: tls-idle (TLS Kafka clients, the proxy with --client-tls-cert in front of
#     the ws:// echo server) and gw-tls-idle (the gateway dialling the TLS echo server with --upstream-tls).
#   kafka: librdkafka via kcat producing 100-byte messages through the proxy into the dev broker, against its
#     TCP listener.
#   chain: kcat producing --kafka-messages of 100 bytes, then consuming them, through the proxy -> the gateway
#     -> librdkafka's mock cluster (3 brokers) and through the librdkafka plugin -> the gateway -> the mock
#     cluster, against kcat straight to the mock cluster.
# Each throughput case also runs once the direct path's client through a bare TCP relay (socat, one process
# per connection, 64 KiB buffers) to the same server: the "relay" column is what one more hop that does no
# work costs on this machine (loopback, scheduler), the floor under any proxy or gateway's ratio.
# Besides the ratios it prints the CPU time per round trip of the process under test (from /proc, whole run
# incl. warm-up) and, with --syscalls, its system calls per round trip (perf stat -e raw_syscalls:sys_enter):
# figures that the load of a shared machine distorts far less than throughput. Each ratio shows the range of
# its reps' own ratios too (direct and proxied runs of one rep are neighbours in time).
# --pin (a diagnostic, not the issue's unpinned measurement): the echo server gets the last CPU to itself,
# the load generator and the proxy or gateway share the others, so that where the scheduler puts three
# processes on a small machine stops moving the ratios (see docs/benchmarks.md). The kafka and chain cases pin
# only the proxy and the gateway.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build_dir=${KWS_BENCH_BUILD:-$root/build/bench}
proxy=""
gateway=""
threads=""
reps=2
duration=1.5
warmup=0.5
ws_cases="lat d64 big1 big16 c200d1 c200d16"
wss_cases="wss-lat wss-d64 wss-big1 wss-big16 wss-c200d1 wss-c200d16"
gw_cases="gw-lat gw-d16 gw-d64 gw-big1 gw-big16 gw-c200d1 gw-c200d16 gw-c200d64"
gwss_cases=${gw_cases//gw-/gwss-}
cases="$ws_cases $wss_cases $gw_cases $gwss_cases idle wss-idle gw-idle gwss-idle tls-idle gw-tls-idle kafka chain"
idle_counts="10000 50000"
idle_size=64
kafka_messages=1000000
do_build=1
syscalls=0
pin=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) do_build=0 ;;
    --proxy) proxy=$2; shift ;;
    --gateway) gateway=$2; shift ;;
    --threads) threads=$2; shift ;;
    --reps) reps=$2; shift ;;
    --duration) duration=$2; shift ;;
    --cases) cases=$2; shift ;;
    --idle-conns) idle_counts=$2; shift ;;
    --idle-size) idle_size=$2; shift ;;
    --no-kafka) cases=${cases//kafka/} ;;
    --kafka-messages) kafka_messages=$2; shift ;;
    --syscalls) syscalls=1 ;;
    --pin) pin=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# Groups in --cases stand for their cases.
expanded=""
for c in $cases; do
  case $c in
    ws) expanded+=" $ws_cases" ;;
    wss) expanded+=" $wss_cases" ;;
    gw) expanded+=" $gw_cases" ;;
    gwss) expanded+=" $gwss_cases" ;;
    *) expanded+=" $c" ;;
  esac
done
cases=$expanded

# What only the benchmarks need: Node.js for the echo server, ss and perf for the figures, openssl for the
# TLS cases' certificate; npm where the nodejs package does not bring it (Debian's does not).
source "$root/scripts/deps.sh"
kws_ensure_packages nodejs iproute2 linux-perf openssl socat
command -v npm >/dev/null || kws_ensure_packages npm

if [[ $do_build == 1 ]]; then
  (cd "$root" && cmake --preset bench -DKWS_BUILD_APPS=ON >/dev/null &&
    cmake --build --preset bench --target kafka-websocket-proxy kafka-websocket-gateway \
      kafka-websocket-devbroker kws_loadgen kws_tcp_echo kws_bench_mock_cluster kws_rdkafka_plugin)
fi
proxy=${proxy:-$build_dir/apps/kafka-websocket-proxy/kafka-websocket-proxy}
gateway=${gateway:-$build_dir/apps/kafka-websocket-gateway/kafka-websocket-gateway}
loadgen=$build_dir/bench/kws_loadgen
tcp_echo=$build_dir/bench/kws_tcp_echo
devbroker=$build_dir/apps/kafka-websocket-devbroker/kafka-websocket-devbroker
for tool in node npm ss openssl socat; do
  command -v "$tool" >/dev/null ||
    { echo "run.sh: $tool is missing (Debian: nodejs, npm, iproute2, openssl, socat)" >&2; exit 2; }
done
if [[ ! -d $here/ws-echo/node_modules/ws ]]; then
  (cd "$here/ws-echo" && npm ci --no-audit --no-fund --silent)
fi

on_broker_cpu=()
on_other_cpus=()
if [[ $pin == 1 ]]; then
  ncpu=$(nproc)
  ((ncpu >= 2)) || { echo "run.sh: --pin needs at least 2 CPUs" >&2; exit 2; }
  on_broker_cpu=(taskset -c "$((ncpu - 1))")
  on_other_cpus=(taskset -c "0-$((ncpu - 2))")
fi

tmp=$(mktemp -d)
pids=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Idle connections: every one costs the proxy or the gateway two descriptors (client, broker), and the load
# generator and the echo server one each. The hard limit decides how many fit. Each side's connections all go
# to one address and port, so the ephemeral port range bounds them too.
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]]; then ulimit -n "$hard"; fi
read -r port_lo port_hi </proc/sys/net/ipv4/ip_local_port_range
fit_ports=$((port_hi - port_lo + 1 - 1000))
clamped=""
for n in $idle_counts; do
  if [[ $hard != unlimited ]] && ((n > (hard - 64) / 2)); then
    echo "note: the descriptor hard limit is $hard (cannot be raised here);" \
      "$n idle connections become $(((hard - 64) / 2))" >&2
    n=$(((hard - 64) / 2))
  fi
  if ((n > fit_ports)); then
    echo "note: the ephemeral port range is $port_lo-$port_hi; $n idle connections become $fit_ports" \
      "(sysctl -w net.ipv4.ip_local_port_range='1024 65535' makes room for more)" >&2
    n=$fit_ports
  fi
  [[ " $clamped " == *" $n "* ]] || clamped+=" $n"
done
idle_counts=$clamped

# Waits (bounded) until PID listens on a TCP port and prints the port.
listen_port() {
  local pid=$1 port
  for _ in $(seq 1 200); do
    port=$(ss -ltnpH 2>/dev/null | grep "pid=$pid," | awk '{print $4}' | sed 's/.*://' | head -1)
    if [[ -n $port ]]; then echo "$port"; return 0; fi
    sleep 0.05
  done
  echo "run.sh: pid $pid never listened" >&2
  return 1
}

# The TLS cases' certificate: one self-signed P-256 certificate for localhost and 127.0.0.1, made once.
cert=$tmp/cert.pem
key=$tmp/key.pem
make_cert() {
  [[ -s $cert ]] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$key" -out "$cert" -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>"$tmp/openssl.err"
}

# Node.js WebSocket echo server; with "tls", behind Node's https. Sets echo_pid, echo_port.
start_ws_echo() {
  local tls=()
  [[ ${1:-} == tls ]] && tls=("$cert" "$key")
  "${on_broker_cpu[@]}" node "$here/ws-echo/echo.js" 0 "${tls[@]}" >"$tmp/echo.out" 2>&1 &
  echo_pid=$!
  pids+=("$echo_pid")
  echo_port=$(listen_port "$echo_pid")
}

# Kafka-framed TCP echo server; with "tls", over TLS. Sets tcp_echo_pid, tcp_echo_port.
start_tcp_echo() {
  local tls=()
  [[ ${1:-} == tls ]] && tls=(--tls-cert "$cert" --tls-key "$key")
  "${on_broker_cpu[@]}" "$tcp_echo" "${tls[@]}" >"$tmp/tcp_echo.out" 2>>"$tmp/tcp_echo.err" &
  tcp_echo_pid=$!
  pids+=("$tcp_echo_pid")
  tcp_echo_port=$(listen_port "$tcp_echo_pid")
}

# start_proxy BROKER [FLAG...]: the proxy, default flags but --threads. Sets proxy_pid, proxy_port.
start_proxy() {
  local broker=$1 extra=()
  shift
  [[ -n $threads ]] && extra=(--threads "$threads")
  "${on_other_cpus[@]}" "$proxy" --listen 127.0.0.1 --port 0 --broker "$broker" --log-level warn "${extra[@]}" "$@" \
    2>>"$tmp/proxy.err" &
  proxy_pid=$!
  pids+=("$proxy_pid")
  proxy_port=$(listen_port "$proxy_pid")
}

# start_gateway UPSTREAM [FLAG...]: the gateway, default flags but --threads and its per-address handshake
# limit: the load generator sends its upgrade requests from one address, more than the default 64 at a time
# (those are refused, not slowed). The bound on all handshakes under way (--max-handshakes, 1024) stays; the
# idle cases keep fewer than 512 upgrades unanswered (--max-opening). Sets gateway_pid, gateway_port.
start_gateway() {
  local upstream=$1 extra=()
  shift
  [[ -n $threads ]] && extra=(--threads "$threads")
  "${on_other_cpus[@]}" "$gateway" --listen 127.0.0.1:0 --upstream "$upstream" --log-level warn \
    --max-handshakes-per-address 1000000 "${extra[@]}" "$@" 2>>"$tmp/gateway.err" &
  gateway_pid=$!
  pids+=("$gateway_pid")
  gateway_port=$(listen_port "$gateway_pid")
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# The processes of one family of cases. Sets mid_pid (the process under test), via_url / via_args (the load
# generator's target through it) and direct_url / direct_args (straight to the broker), and family_pids.
# FLAG... go to the proxy or the gateway.
start_family() {
  local fam=$1
  shift
  case $fam in
    ws)
      start_ws_echo
      start_proxy "127.0.0.1:$echo_port" "$@"
      mid_pid=$proxy_pid family_pids=("$proxy_pid" "$echo_pid")
      via_url=tcp://127.0.0.1:$proxy_port via_args=()
      direct_url=ws://127.0.0.1:$echo_port/ direct_args=()
      ;;
    wss)
      make_cert
      start_ws_echo tls
      start_proxy "wss://127.0.0.1:$echo_port/" --ca-file "$cert" "$@"
      mid_pid=$proxy_pid family_pids=("$proxy_pid" "$echo_pid")
      via_url=tcp://127.0.0.1:$proxy_port via_args=()
      direct_url=wss://127.0.0.1:$echo_port/ direct_args=(--ca-file "$cert")
      ;;
    gw)
      start_tcp_echo
      start_gateway "127.0.0.1:$tcp_echo_port" "$@"
      mid_pid=$gateway_pid family_pids=("$gateway_pid" "$tcp_echo_pid")
      via_url=ws://127.0.0.1:$gateway_port/ via_args=()
      direct_url=tcp://127.0.0.1:$tcp_echo_port direct_args=()
      ;;
    gwss)
      # The gateway serves wss:// and relays to the plain echo server, as to a cluster's plain listener;
      # the direct path is a Kafka client's TLS connection straight to a TLS listener (a second echo server).
      make_cert
      start_tcp_echo
      start_gateway "127.0.0.1:$tcp_echo_port" --tls-cert "$cert" --tls-key "$key" "$@"
      mid_pid=$gateway_pid family_pids=("$gateway_pid" "$tcp_echo_pid")
      start_tcp_echo tls
      family_pids+=("$tcp_echo_pid")
      via_url=wss://127.0.0.1:$gateway_port/ via_args=(--ca-file "$cert")
      direct_url=tls://127.0.0.1:$tcp_echo_port direct_args=(--ca-file "$cert")
      ;;
    tls)
      # Kafka clients over TLS to the proxy (--client-tls-cert), which relays to the plain echo server. The
      # load generator starts every handshake at once: on two cores, 2,000 of them outlast the default 10 s.
      make_cert
      start_ws_echo
      start_proxy "127.0.0.1:$echo_port" --client-tls-cert "$cert" --client-tls-key "$key" \
        --handshake-timeout 60s "$@"
      mid_pid=$proxy_pid family_pids=("$proxy_pid" "$echo_pid")
      via_url=tls://127.0.0.1:$proxy_port via_args=(--ca-file "$cert")
      direct_url=ws://127.0.0.1:$echo_port/ direct_args=()
      ;;
    gwtls)
      # The gateway dials its cluster over TLS (--upstream-tls): the TLS echo server. Its one thread does
      # every handshake in turn; thousands of them at once outlast the default 5 s of --connect-timeout, which
      # bounds the upstream TLS handshake too.
      make_cert
      start_tcp_echo tls
      start_gateway "127.0.0.1:$tcp_echo_port" --upstream-tls --upstream-ca-file "$cert" --connect-timeout 60s "$@"
      mid_pid=$gateway_pid family_pids=("$gateway_pid" "$tcp_echo_pid")
      via_url=ws://127.0.0.1:$gateway_port/ via_args=()
      direct_url=tls://127.0.0.1:$tcp_echo_port direct_args=(--ca-file "$cert")
      ;;
  esac
  start_relay
}

# The bare relay (socat) in front of the direct path's server. Sets relay_url.
start_relay() {
  local dport=${direct_url##*:} relay_pid relay_port
  dport=${dport%%/*}
  socat -b65536 TCP-LISTEN:0,bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=1024 "TCP:127.0.0.1:$dport,nodelay" \
    2>/dev/null &  # it reports each client's close as a broken pipe: the load generator reports real failures
  relay_pid=$!
  pids+=("$relay_pid")
  family_pids+=("$relay_pid")
  relay_port=$(listen_port "$relay_pid")
  relay_url=${direct_url/:$dport/:$relay_port}
}

stop_family() {
  local p
  for p in "${family_pids[@]}"; do stop_pid "$p"; done
  family_pids=()
}

family_of() {
  case $1 in
    wss-*) echo wss ;;
    gwss-*) echo gwss ;;
    gw-tls-*) echo gwtls ;;
    tls-*) echo tls ;;
    gw-*) echo gw ;;
    *) echo ws ;;
  esac
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print a[int((NR+1)/2)]}'; }

# Connections, depth and frame size of each throughput case, its label and target.
declare -A spec=(
  [lat]="1 1 1024" [d64]="1 64 1024" [big1]="1 1 102400" [big16]="1 16 102400"
  [c200d1]="200 1 1024" [c200d16]="200 16 1024"
  [d16]="1 16 1024" [c200d64]="200 64 1024"
)
declare -A label=(
  [lat]="1 conn, 1 KiB, depth 1: added p50" [d64]="1 conn, 1 KiB, depth 64" [d16]="1 conn, 1 KiB, depth 16"
  [big1]="1 conn, 100 KiB, depth 1" [big16]="1 conn, 100 KiB, depth 16"
  [c200d1]="200 conns, 1 KiB, depth 1" [c200d16]="200 conns, 1 KiB, depth 16"
  [c200d64]="200 conns, 1 KiB, depth 64"
  [idle]="idle proxied connection" [kafka]="librdkafka produce, 100 B"
)
declare -A target=(
  [lat]="<= +25 us" [d64]=">= 0.9" [big1]=">= 0.8" [big16]=">= 0.9" [c200d1]=">= 0.8" [c200d16]=">= 0.9"
  [idle]="<= 4 KiB" [kafka]="-"
)
declare -A family_label=([ws]="" [wss]="wss: " [gw]="gw: " [gwss]="gw wss: ")
# The issue 25 targets: every wss and gateway case >= 0.9 of direct, the added p50 <= +25 us.
for fam in wss gw gwss; do
  for c in lat d16 d64 big1 big16 c200d1 c200d16 c200d64; do
    spec[$fam-$c]=${spec[$c]}
    label[$fam-$c]="${family_label[$fam]}${label[$c]}"
    target[$fam-$c]=">= 0.9"
  done
  target[$fam-lat]="<= +25 us"
done
label[chain-produce]="chain: librdkafka produce, 100 B"
label[chain-proxy-produce]="chain, proxy: librdkafka produce, 100 B"
label[chain-proxy-consume]="chain, proxy: librdkafka consume, 100 B"
label[chain-plugin-produce]="chain, plugin: librdkafka produce, 100 B"
label[chain-plugin-consume]="chain, plugin: librdkafka consume, 100 B"
target[chain-produce]=">= 0.9"
label[wss-idle]="idle proxied connection, wss"
label[gw-idle]="idle gateway connection"
label[gwss-idle]="idle gateway connection, wss"
label[tls-idle]="idle proxied connection, TLS client"
label[gw-tls-idle]="idle gateway connection, TLS upstream"
for c in wss-idle gw-idle gwss-idle tls-idle gw-tls-idle; do target[$c]="<= 4 KiB"; done

# The table's columns: case, result, the bare relay's ratio to direct (or its added p50; one run), CPU %, CPU
# us and system calls per round trip of the proxy or gateway, target.
table_line() { printf '%-42s | %-46s | %6s | %6s | %6s | %6s | %s\n' "$@"; }
add_row() { rows+=("$(table_line "$@")"); }

hz=$(getconf CLK_TCK)
rows=()
warnings=()
failed=0

# One load generator run; appends "msgs_per_s p50_us" to $tmp/<case>.<path>, and when via the proxy or
# gateway (path "via") that process's CPU % to <case>.cpu, its CPU us per round trip to <case>.cpurt and
# system calls per round trip to <case>.sys.
one_run() {
  local name=$1 path=$2 conns depth size url args out t0 c0 t1 c1 total perf_pid=""
  read -r conns depth size <<<"${spec[$name]}"
  case $path in
    via) url=$via_url args=("${via_args[@]}") ;;
    relay) url=$relay_url args=("${direct_args[@]}") ;;
    *) url=$direct_url args=("${direct_args[@]}") ;;
  esac
  t0=$(date +%s.%N)
  if [[ $path == via ]]; then
    c0=$(cpu_ticks "$mid_pid")
    if [[ $syscalls == 1 ]]; then
      perf stat -x, -e raw_syscalls:sys_enter -p "$mid_pid" -o "$tmp/perf.out" 2>/dev/null &
      perf_pid=$!
      sleep 0.2
    fi
  fi
  if ! out=$("${on_other_cpus[@]}" "$loadgen" --target "$url" "${args[@]}" --conns "$conns" --depth "$depth" \
    --size "$size" --duration "$duration" --warmup "$warmup" 2>"$tmp/loadgen.err"); then
    echo "run.sh: $name via $path failed: $out $(cat "$tmp/loadgen.err")" >&2
    failed=1
  fi
  if [[ $path == via ]]; then
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$mid_pid")
    total=$(field total "$out")
    awk -v c="$((c1 - c0))" -v hz="$hz" -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
      'BEGIN {printf "%.0f\n", 100 * c / hz / t}' >>"$tmp/$name.cpu"
    awk -v c="$((c1 - c0))" -v hz="$hz" -v n="${total:-0}" \
      'BEGIN {if (n > 0) printf "%.1f\n", 1e6 * c / hz / n; else print "nan"}' >>"$tmp/$name.cpurt"
    if [[ -n $perf_pid ]]; then
      kill -INT "$perf_pid" 2>/dev/null || true
      wait "$perf_pid" 2>/dev/null || true
      awk -F, -v n="${total:-0}" '/raw_syscalls/ {if (n > 0) printf "%.2f\n", $1 / n}' "$tmp/perf.out" \
        >>"$tmp/$name.sys"
    fi
  fi
  echo "$(field msgs_per_s "$out") $(field p50_us "$out")" >>"$tmp/$name.$path"
  field cpu_pct "$out" >>"$tmp/$name.$path.gen"
}

# All reps of one throughput case on the running family, and its row.
throughput_case() {
  local name=$1 r d_rate p_rate d_p50 p_p50 cpu cpurt sys range result gen relay
  for ((r = 0; r < reps; r++)); do
    if ((r % 2 == 0)); then one_run "$name" direct; one_run "$name" via
    else one_run "$name" via; one_run "$name" direct; fi
  done
  one_run "$name" relay
  d_rate=$(awk '{print $1}' "$tmp/$name.direct" | median)
  p_rate=$(awk '{print $1}' "$tmp/$name.via" | median)
  d_p50=$(awk '{print $2}' "$tmp/$name.direct" | median)
  p_p50=$(awk '{print $2}' "$tmp/$name.via" | median)
  cpu=$(median <"$tmp/$name.cpu")
  cpurt=$(median <"$tmp/$name.cpurt")
  sys=$([[ -s $tmp/$name.sys ]] && median <"$tmp/$name.sys" || echo "-")
  read -r relay_rate relay_p50 <"$tmp/$name.relay"
  if [[ $name == lat || $name == *-lat ]]; then
    result=$(awk -v p="$p_p50" -v d="$d_p50" 'BEGIN {printf "%+.0f us (p50 %.0f vs %.0f us)", p - d, p, d}')
    relay=$(awk -v p="$relay_p50" -v d="$d_p50" 'BEGIN {printf "%+.0f us", p - d}')
  else
    range=$(paste -d' ' "$tmp/$name.via" "$tmp/$name.direct" |
      awk '{r = $1 / $3; if (NR == 1 || r < lo) lo = r; if (NR == 1 || r > hi) hi = r} END {printf "%.2f-%.2f", lo, hi}')
    result=$(awk -v p="$p_rate" -v d="$d_rate" -v r="$range" \
      'BEGIN {printf "%.2f (%.0f vs %.0f msg/s; %s)", p / d, p, d, r}')
    relay=$(awk -v p="$relay_rate" -v d="$d_rate" 'BEGIN {printf "%.2f", p / d}')
  fi
  add_row "${label[$name]}" "$result" "$relay" "$cpu%" "$cpurt" "$sys" "${target[$name]}"
  printf '%s\n' "${rows[-1]}" >&2
  # The direct path is meant to measure the echo server's own limit, not the load generator's.
  gen=$(median <"$tmp/$name.direct.gen")
  if [[ $gen =~ ^[0-9.]+$ ]] && awk -v g="$gen" 'BEGIN {exit !(g >= 90)}'; then
    warnings+=("${label[$name]}: the load generator used $gen % of a core on the direct path; it, not the echo server, may have set that path's pace")
  fi
}

# idle_case NAME N: a fresh proxy or gateway (of NAME's family), its resident memory before N connections
# that made one 64-byte round trip each and after, per connection. Both get --max-connections above N.
idle_case() {
  local name=$1 n=$2 fam out kib result
  fam=$(family_of "$name")
  start_family "$fam" --max-connections "$((n + 64))"
  if out=$("$loadgen" --target "$via_url" "${via_args[@]}" --idle "$n" --pid "$mid_pid" --hold 2 --max-opening 512 --idle-size "$idle_size" \
    2>"$tmp/loadgen.err"); then
    kib=$(field kib_per_conn "$out")
    result="$kib KiB ($n conns, RSS $(field rss_before_kib "$out") -> $(field rss_after_kib "$out") KiB)"
  else
    result="failed: $(cat "$tmp/loadgen.err")"
    failed=1
  fi
  add_row "${label[$name]}" "$result" - - - - "${target[$name]}"
  printf '%s\n' "${rows[-1]}" >&2
  stop_family
}

machine() {
  echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "proxy: $proxy ${threads:+--threads $threads}"
  echo "gateway: $gateway ${threads:+--threads $threads}"
  [[ $pin == 1 ]] &&
    echo "pinned: echo server on CPU $((ncpu - 1)), load generator and proxy or gateway on 0-$((ncpu - 2))"
  return 0
}
machine

# Throughput cases family by family (each family's processes started once), in --cases order within one.
for fam in ws wss gw gwss; do
  started=0
  for name in $cases; do
    [[ -n ${spec[$name]:-} && $(family_of "$name") == "$fam" ]] || continue
    if [[ $started == 0 ]]; then start_family "$fam"; started=1; fi
    throughput_case "$name"
  done
  [[ $started == 1 ]] && stop_family
done

for name in idle wss-idle gw-idle gwss-idle tls-idle gw-tls-idle; do
  [[ " $cases " == *" $name "* ]] || continue
  for n in $idle_counts; do idle_case "$name" "$n"; done
done

# N messages of 100 bytes (99 and a newline) for kcat -P -l, made once.
make_messages() {
  [[ -s $tmp/messages ]] && return 0
  head -c 99 /dev/zero | tr '\0' 'x' >"$tmp/line"
  awk -v n="$kafka_messages" -v l="$(cat "$tmp/line")" 'BEGIN {for (i = 0; i < n; i++) print l}' >"$tmp/messages"
}

# produce BOOTSTRAP TOPIC WHAT [FLAG...]: kcat (librdkafka) producing the messages; prints the seconds it took.
produce() {
  local t0 t1 at=$1 topic=$2 what=$3
  shift 3
  t0=$(date +%s.%N)
  timeout 300 kcat -P -b "$at" -t "$topic" -l "$tmp/messages" -X queue.buffering.max.messages=1000000 "$@" \
    2>>"$tmp/kcat.err" || { echo "run.sh: kcat producing $what failed" >&2; failed=1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", b - a}'
}

# consume BOOTSTRAP TOPIC WHAT [FLAG...]: kcat reading the topic from the beginning to its end; checks the
# count and prints the seconds it took.
consume() {
  local t0 t1 n at=$1 topic=$2 what=$3
  shift 3
  t0=$(date +%s.%N)
  n=$(timeout 300 kcat -C -b "$at" -t "$topic" -o beginning -e -q "$@" 2>>"$tmp/kcat.err" | wc -l) || true
  t1=$(date +%s.%N)
  if [[ $n != "$kafka_messages" ]]; then
    echo "run.sh: kcat consuming $what read $n of $kafka_messages messages" >&2
    failed=1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", b - a}'
}

# kafka_row LABEL TARGET FILE [VIA]: the row of one kcat measurement from FILE.direct and FILE.VIA (default
# via; seconds per run): direct time / time through, and the rates.
kafka_row() {
  local d p result
  d=$(median <"$3.direct")
  p=$(median <"$3.${4:-via}")
  result=$(awk -v p="$p" -v d="$d" -v n="$kafka_messages" \
    'BEGIN {printf "%.2f (%.0f vs %.0f msg/s, %.1f vs %.1f MB/s)", d / p, n / p, n / d, n * 1e-4 / p, n * 1e-4 / d}')
  add_row "$1" "$result" - - - - "$2"
  printf '%s\n' "${rows[-1]}" >&2
}

if [[ " $cases " == *" kafka "* ]]; then
  if ! command -v kcat >/dev/null; then
    rows+=("$(printf '%-42s | %s' "${label[kafka]}" "skipped: kcat not installed")")
  else
    # Dev broker with both listeners; the proxy in front of its WebSocket listener.
    "$devbroker" --listen 127.0.0.1:0 --tcp-listen 127.0.0.1:0 --log-level warn \
      >"$tmp/devbroker.out" 2>"$tmp/devbroker.err" &
    db_pid=$!
    pids+=("$db_pid")
    # It prints "listening ws=HOST:PORT tcp=HOST:PORT" once both listeners are open.
    for _ in $(seq 1 200); do grep -q '^listening' "$tmp/devbroker.out" && break; sleep 0.05; done
    ws_port=$(sed -n 's/^listening ws=[^ ]*:\([0-9]*\).*/\1/p' "$tmp/devbroker.out")
    tcp_port=$(sed -n 's/.* tcp=[^ ]*:\([0-9]*\).*/\1/p' "$tmp/devbroker.out")
    start_proxy "127.0.0.1:$ws_port"
    make_messages
    for ((r = 0; r < reps; r++)); do
      if ((r % 2 == 0)); then
        produce "127.0.0.1:$tcp_port" bench direct$r >>"$tmp/kafka.direct"
        produce "127.0.0.1:$proxy_port" bench proxy$r >>"$tmp/kafka.via"
      else
        produce "127.0.0.1:$proxy_port" bench proxy$r >>"$tmp/kafka.via"
        produce "127.0.0.1:$tcp_port" bench direct$r >>"$tmp/kafka.direct"
      fi
    done
    kafka_row "${label[kafka]}" "${target[kafka]}" "$tmp/kafka"
    stop_pid "$proxy_pid"
    stop_pid "$db_pid"
  fi
fi

# The whole chain: kcat -> proxy -> gateway -> librdkafka's mock cluster (3 brokers), and kcat with the
# librdkafka plugin -> gateway -> mock cluster, against kcat straight to the mock cluster; each run produces
# into a topic of its own, then consumes it. The mock cluster keeps about
# 5 MB per partition and drops the oldest messages beyond that (librdkafka 2.0.2: 3 partitions kept 132,449
# of 1,000,000), so the topics have 48 partitions and the producer spreads messages evenly over them
# (sticky.partitioning.linger.ms=0: a random partition per message, not per batch), or the consumer would
# find most of them gone.
if [[ " $cases " == *" chain "* ]]; then
  mock=$build_dir/bench/kws_bench_mock_cluster
  plugin=$build_dir/src/rdkafka/libkws_rdkafka.so
  if ! command -v kcat >/dev/null || [[ ! -x $mock || ! -f $plugin ]]; then
    rows+=("$(printf '%-42s | %s' "${label[chain-produce]}" "skipped: kcat, $mock or $plugin missing")")
  else
    topics=()
    for ((r = 0; r < reps; r++)); do
      topics+=(--topic "direct$r:48" --topic "proxy$r:48" --topic "plugin$r:48")
    done
    # It runs until its standard input ends: a FIFO that this script holds open. It prints its bootstrap
    # servers once its partition leaders are placed, which can take some seconds (tests/gateway/mock_cluster.cpp).
    mkfifo "$tmp/mock.in"
    exec {mock_fd}<>"$tmp/mock.in"
    "$mock" --brokers 3 "${topics[@]}" <"$tmp/mock.in" >"$tmp/mock.out" 2>"$tmp/mock.err" &
    mock_pid=$!
    pids+=("$mock_pid")
    for _ in $(seq 1 1200); do grep -q '^bootstrap=' "$tmp/mock.out" && break; sleep 0.05; done
    bootstrap=$(sed -n 's/^bootstrap=//p' "$tmp/mock.out")
    # librdkafka tells brokers apart by address: each gets a name of its own (port 0: the listen port).
    start_gateway "$bootstrap" --advertise 'b{node_id}.bench:0'
    start_proxy "ws://127.0.0.1:$gateway_port/kafka" \
      --broker-url-template "ws://127.0.0.1:$gateway_port/kafka/{node_id}"
    make_messages
    plugin_flags=(-X "plugin.library.paths=$plugin" -X "kws.bootstrap.url.template=ws://127.0.0.1:$gateway_port/kafka"
      -X "kws.url.template=ws://127.0.0.1:$gateway_port/kafka/{node_id}")
    chain_run() {
      local path=$1 r=$2 at=$bootstrap flags=()
      [[ $path == proxy ]] && at=127.0.0.1:$proxy_port
      [[ $path == plugin ]] && at=127.0.0.1:$gateway_port flags=("${plugin_flags[@]}")
      produce "$at" "$path$r" "$path$r" -X sticky.partitioning.linger.ms=0 "${flags[@]}" \
        >>"$tmp/chain-produce.$path"
      consume "$at" "$path$r" "$path$r" "${flags[@]}" >>"$tmp/chain-consume.$path"
    }
    for ((r = 0; r < reps; r++)); do
      if ((r % 2 == 0)); then chain_run direct "$r"; chain_run proxy "$r"; chain_run plugin "$r"
      else chain_run plugin "$r"; chain_run proxy "$r"; chain_run direct "$r"; fi
    done
    for what in produce consume; do
      for path in proxy plugin; do
        kafka_row "${label[chain-$path-$what]}" "${target[chain-produce]}" "$tmp/chain-$what" "$path"
      done
    done
    stop_pid "$proxy_pid"
    stop_pid "$gateway_pid"
    stop_pid "$mock_pid"
    exec {mock_fd}>&-
  fi
fi

echo
table_line "case" "via / direct (medians of $reps; range)" "relay" "CPU" "us/rt" "sys/rt" "target"
printf -- '-%.0s' {1..147}; echo
printf '%s\n' "${rows[@]}"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); took $((SECONDS / 60)) min $((SECONDS % 60)) s"
for w in "${warnings[@]}"; do echo "warning: $w"; done
for f in proxy gateway tcp_echo mock; do
  if [[ -s $tmp/$f.err ]]; then
    echo "$f warnings/errors:"; sort "$tmp/$f.err" | uniq -c | head -20
  fi
done
exit "$failed"
