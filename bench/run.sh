#!/usr/bin/env bash
# bench/run.sh: the proxy's benchmark matrix in one command (see bench/README.md, "run.sh").
#
# The broker is a WebSocket echo server in its own process (Node.js `ws`, bench/ws-echo). Every case runs
# through the proxy and directly against that server, alternating which goes first, --reps times; the table
# shows medians and proxy / direct. Unpinned, default proxy flags unless --threads is given.
#
#   bench/run.sh [--no-build] [--proxy PATH] [--threads N] [--reps N] [--duration SECONDS]
#                [--cases LIST] [--idle-conns N] [--no-kafka] [--kafka-messages N] [--syscalls] [--pin]
#
# Cases: lat (1 conn, 1 KiB, depth 1: added p50), d64 (1 conn, 1 KiB, depth 64), big1 (1 conn, 100 KiB,
# depth 1), big16 (1 conn, 100 KiB, depth 16), c200d1 (200 conns, 1 KiB, depth 1), c200d16 (200 conns, 1 KiB,
# depth 16), idle (idle proxied connections: the proxy's RSS per connection), kafka (librdkafka via kcat
# producing 100-byte messages through the proxy into the dev broker, against its TCP listener).
# Besides the ratios it prints the proxy's CPU time per round trip (from /proc, whole run incl. warm-up) and,
# with --syscalls, its system calls per round trip (perf stat -e raw_syscalls:sys_enter): figures that the
# load of a shared machine distorts far less than throughput. Each ratio shows the range of its reps' own
# ratios too (direct and proxied runs of one rep are neighbours in time).
# --pin (a diagnostic, not the issue's unpinned measurement): the echo server gets the last CPU to itself,
# the load generator and the proxy share the others, so that where the scheduler puts three processes on a
# small machine stops moving the ratios (see docs/benchmarks.md). The Kafka case pins only the proxy.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build_dir=${KWS_BENCH_BUILD:-$root/build/bench}
proxy=""
threads=""
reps=3
duration=3
warmup=0.5
cases="lat d64 big1 big16 c200d1 c200d16 idle kafka"
idle_conns=10000
kafka_messages=1000000
do_build=1
syscalls=0
pin=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) do_build=0 ;;
    --proxy) proxy=$2; shift ;;
    --threads) threads=$2; shift ;;
    --reps) reps=$2; shift ;;
    --duration) duration=$2; shift ;;
    --cases) cases=$2; shift ;;
    --idle-conns) idle_conns=$2; shift ;;
    --no-kafka) cases=${cases//kafka/} ;;
    --kafka-messages) kafka_messages=$2; shift ;;
    --syscalls) syscalls=1 ;;
    --pin) pin=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# What only the benchmarks need: Node.js for the echo server, ss and perf for the figures; npm where the
# nodejs package does not bring it (Debian's does not).
source "$root/scripts/deps.sh"
kws_ensure_packages nodejs iproute2 linux-perf
command -v npm >/dev/null || kws_ensure_packages npm

if [[ $do_build == 1 ]]; then
  (cd "$root" && cmake --preset bench -DKWS_BUILD_APPS=ON >/dev/null &&
    cmake --build --preset bench --target kafka-websocket-proxy kafka-websocket-devbroker kws_loadgen)
fi
proxy=${proxy:-$build_dir/apps/kafka-websocket-proxy/kafka-websocket-proxy}
loadgen=$build_dir/bench/kws_loadgen
devbroker=$build_dir/apps/kafka-websocket-devbroker/kafka-websocket-devbroker
for tool in node npm ss; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (Debian: nodejs, npm, iproute2)" >&2; exit 2; }
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

# Every proxied connection costs the proxy two descriptors; the hard limit decides how many fit.
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]]; then
  ulimit -n "$hard"
  fit=$(((hard - 64) / 2))
  if ((idle_conns > fit)); then
    echo "note: the descriptor hard limit is $hard (cannot be raised here); idle case uses $fit connections" >&2
    idle_conns=$fit
  fi
fi

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

start_echo() {
  "${on_broker_cpu[@]}" node "$here/ws-echo/echo.js" 0 >"$tmp/echo.out" 2>&1 &
  echo_pid=$!
  pids+=("$echo_pid")
  echo_port=$(listen_port "$echo_pid")
}

start_proxy() {
  local extra=()
  [[ -n $threads ]] && extra=(--threads "$threads")
  "${on_other_cpus[@]}" "$proxy" --listen 127.0.0.1 --port 0 --broker "127.0.0.1:$echo_port" --log-level warn "${extra[@]}" \
    2>>"$tmp/proxy.err" &
  proxy_pid=$!
  pids+=("$proxy_pid")
  proxy_port=$(listen_port "$proxy_pid")
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print a[int((NR+1)/2)]}'; }

declare -A spec=(
  [lat]="1 1 1024" [d64]="1 64 1024" [big1]="1 1 102400" [big16]="1 16 102400"
  [c200d1]="200 1 1024" [c200d16]="200 16 1024"
)
declare -A label=(
  [lat]="1 conn, 1 KiB, depth 1: added p50" [d64]="1 conn, 1 KiB, depth 64"
  [big1]="1 conn, 100 KiB, depth 1" [big16]="1 conn, 100 KiB, depth 16"
  [c200d1]="200 conns, 1 KiB, depth 1" [c200d16]="200 conns, 1 KiB, depth 16"
  [idle]="idle proxied connection" [kafka]="librdkafka produce, 100 B"
)
declare -A target=(
  [lat]="<= +25 us" [d64]=">= 0.9" [big1]=">= 0.8" [big16]=">= 0.9" [c200d1]=">= 0.8" [c200d16]=">= 0.9"
  [idle]="<= 4 KiB" [kafka]="-"
)

# The table's columns: case, result, the proxy's CPU %, its CPU us and system calls per round trip, target.
table_line() { printf '%-36s | %-46s | %6s | %6s | %6s | %s\n' "$@"; }
add_row() { rows+=("$(table_line "$@")"); }

hz=$(getconf CLK_TCK)
rows=()
warnings=()
failed=0

# One load generator run; appends "msgs_per_s p50_us" to $tmp/<case>.<path>, and when proxied the proxy's
# CPU % to <case>.cpu, its CPU us per round trip to <case>.cpurt and system calls per round trip to
# <case>.sys.
one_run() {
  local name=$1 path=$2 conns depth size url out t0 c0 t1 c1 total perf_pid=""
  read -r conns depth size <<<"${spec[$name]}"
  if [[ $path == proxy ]]; then url=tcp://127.0.0.1:$proxy_port; else url=ws://127.0.0.1:$echo_port/; fi
  t0=$(date +%s.%N)
  if [[ $path == proxy ]]; then
    c0=$(cpu_ticks "$proxy_pid")
    if [[ $syscalls == 1 ]]; then
      perf stat -x, -e raw_syscalls:sys_enter -p "$proxy_pid" -o "$tmp/perf.out" 2>/dev/null &
      perf_pid=$!
      sleep 0.2
    fi
  fi
  if ! out=$("${on_other_cpus[@]}" "$loadgen" --target "$url" --conns "$conns" --depth "$depth" --size "$size" \
    --duration "$duration" --warmup "$warmup" 2>"$tmp/loadgen.err"); then
    echo "run.sh: $name via $path failed: $out $(cat "$tmp/loadgen.err")" >&2
    failed=1
  fi
  if [[ $path == proxy ]]; then
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$proxy_pid")
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

machine() {
  echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "proxy: $proxy ${threads:+--threads $threads}"
  [[ $pin == 1 ]] && echo "pinned: echo server on CPU $((ncpu - 1)), load generator and proxy on 0-$((ncpu - 2))"
  return 0
}
machine

start_echo
start_proxy
for name in $cases; do
  [[ -n ${spec[$name]:-} ]] || continue
  for ((r = 0; r < reps; r++)); do
    if ((r % 2 == 0)); then one_run "$name" direct; one_run "$name" proxy
    else one_run "$name" proxy; one_run "$name" direct; fi
  done
  d_rate=$(awk '{print $1}' "$tmp/$name.direct" | median)
  p_rate=$(awk '{print $1}' "$tmp/$name.proxy" | median)
  d_p50=$(awk '{print $2}' "$tmp/$name.direct" | median)
  p_p50=$(awk '{print $2}' "$tmp/$name.proxy" | median)
  cpu=$(median <"$tmp/$name.cpu")
  cpurt=$(median <"$tmp/$name.cpurt")
  sys=$([[ -s $tmp/$name.sys ]] && median <"$tmp/$name.sys" || echo "-")
  if [[ $name == lat ]]; then
    result=$(awk -v p="$p_p50" -v d="$d_p50" 'BEGIN {printf "%+.0f us (p50 %.0f vs %.0f us)", p - d, p, d}')
  else
    range=$(paste -d' ' "$tmp/$name.proxy" "$tmp/$name.direct" |
      awk '{r = $1 / $3; if (NR == 1 || r < lo) lo = r; if (NR == 1 || r > hi) hi = r} END {printf "%.2f-%.2f", lo, hi}')
    result=$(awk -v p="$p_rate" -v d="$d_rate" -v r="$range" \
      'BEGIN {printf "%.2f (%.0f vs %.0f msg/s; %s)", p / d, p, d, r}')
  fi
  add_row "${label[$name]}" "$result" "$cpu%" "$cpurt" "$sys" "${target[$name]}"
  printf '%s\n' "${rows[-1]}" >&2
  # The direct path is meant to measure the echo server's limit, not the load generator's.
  gen=$(median <"$tmp/$name.direct.gen")
  if [[ $gen =~ ^[0-9.]+$ ]] && awk -v g="$gen" 'BEGIN {exit !(g >= 90)}'; then
    warnings+=("${label[$name]}: the load generator used $gen % of a core on the direct path; it, not the echo server, may have set that path's pace")
  fi
done
stop_pid "$proxy_pid"

if [[ " $cases " == *" idle "* ]]; then
  # A fresh proxy, so that its resident memory before the connections is its baseline.
  start_proxy
  if out=$("$loadgen" --target "tcp://127.0.0.1:$proxy_port" --idle "$idle_conns" --pid "$proxy_pid" \
    --hold 2 2>"$tmp/loadgen.err"); then
    kib=$(field kib_per_conn "$out")
    result="$kib KiB ($idle_conns conns, RSS $(field rss_before_kib "$out") -> $(field rss_after_kib "$out") KiB)"
  else
    result="failed: $(cat "$tmp/loadgen.err")"
    failed=1
  fi
  add_row "${label[idle]}" "$result" - - - "${target[idle]}"
  printf '%s\n' "${rows[-1]}" >&2
  stop_pid "$proxy_pid"
fi

if [[ " $cases " == *" kafka "* ]]; then
  if ! command -v kcat >/dev/null; then
    rows+=("$(printf '%-36s | %s' "${label[kafka]}" "skipped: kcat not installed")")
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
    echo_port_saved=$echo_port
    echo_port=$ws_port
    start_proxy
    echo_port=$echo_port_saved
    head -c 99 /dev/zero | tr '\0' 'x' >"$tmp/line"
    awk -v n="$kafka_messages" -v l="$(cat "$tmp/line")" 'BEGIN {for (i = 0; i < n; i++) print l}' \
      >"$tmp/messages"
    produce() {
      local t0 t1
      t0=$(date +%s.%N)
      timeout 300 kcat -P -b "127.0.0.1:$1" -t bench -l "$tmp/messages" -X queue.buffering.max.messages=1000000 \
        2>>"$tmp/kcat.err" || { echo "run.sh: kcat via $2 failed" >&2; failed=1; }
      t1=$(date +%s.%N)
      awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", b - a}'
    }
    for ((r = 0; r < reps; r++)); do
      if ((r % 2 == 0)); then
        produce "$tcp_port" direct$r >>"$tmp/kafka.direct"; produce "$proxy_port" proxy$r >>"$tmp/kafka.proxy"
      else
        produce "$proxy_port" proxy$r >>"$tmp/kafka.proxy"; produce "$tcp_port" direct$r >>"$tmp/kafka.direct"
      fi
    done
    d=$(median <"$tmp/kafka.direct")
    p=$(median <"$tmp/kafka.proxy")
    result=$(awk -v p="$p" -v d="$d" -v n="$kafka_messages" \
      'BEGIN {printf "%.2f (%.0f vs %.0f msg/s)", d / p, n / p, n / d}')
    add_row "${label[kafka]}" "$result" - - - "${target[kafka]}"
    stop_pid "$proxy_pid"
    stop_pid "$db_pid"
  fi
fi

echo
table_line "case" "proxy / direct (medians of $reps; range)" "CPU" "us/rt" "sys/rt" "target"
printf -- '-%.0s' {1..132}; echo
printf '%s\n' "${rows[@]}"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
for w in "${warnings[@]}"; do echo "warning: $w"; done
if [[ -s $tmp/proxy.err ]]; then
  echo "proxy warnings/errors:"; sort "$tmp/proxy.err" | uniq -c | head -20
fi
exit "$failed"
