# shellcheck shell=bash disable=SC2034  # KWS_* are read by the scripts that source this file
# Sourced by scripts/image.sh and scripts/package.sh: a dev broker on 127.0.0.1 and a kcat round trip through
# a proxy, with bounded waits. The caller sets KWS_WORK (a scratch directory) and stops what it started.

# Waits up to $4 seconds (default 30) for a line matching ERE $2 in file $1 while process $3 lives; prints the
# first capture group of the first such line.
kws_wait_for_line() {
  local log="$1" re="$2" pid="$3" secs="${4:-30}" i
  for ((i = 0; i < secs * 10; i++)); do
    if grep -qE "$re" "$log" 2>/dev/null; then
      grep -E "$re" "$log" | head -n 1 | sed -nE "s/.*$re.*/\1/p"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# SIGTERM, then SIGKILL after 5 s; reaps the process (a child of this shell: not in a subshell) and sets
# KWS_EXIT to its exit status.
kws_stop() {
  local pid="$1" i
  KWS_EXIT=0
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || KWS_EXIT=$?
}

# Starts the dev broker $1 on 127.0.0.1, any free port (topics are made on first use, one partition each); sets
# KWS_BROKER_PID and KWS_BROKER_PORT.
kws_start_devbroker() {
  "$1" --listen 127.0.0.1:0 --default-partitions 1 >"$KWS_WORK/broker.log" 2>&1 &
  KWS_BROKER_PID=$!
  KWS_BROKER_PORT=$(kws_wait_for_line "$KWS_WORK/broker.log" 'listening ws=127\.0\.0\.1:([0-9]+)' \
    "$KWS_BROKER_PID" 30) || { cat "$KWS_WORK/broker.log" >&2; echo "the dev broker did not start" >&2; return 1; }
}

# kcat through the Kafka bootstrap address $1 (extra kcat arguments after it): metadata, five messages
# produced, consumed back from the beginning and compared byte for byte. $2 (optional) is an ERE the
# metadata must match.
kws_kcat_roundtrip() {
  local bootstrap="$1" want="${2:-}" rc=0
  shift 2 || shift
  timeout 20s kcat -b "$bootstrap" "$@" -L >"$KWS_WORK/metadata.txt" 2>"$KWS_WORK/kcat.err" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$KWS_WORK/kcat.err" >&2; echo "kcat -L exited with $rc (124: timed out)" >&2; return 1; }
  if [ -n "$want" ] && ! grep -qE "$want" "$KWS_WORK/metadata.txt"; then
    cat "$KWS_WORK/metadata.txt" >&2
    echo "metadata does not match '$want'" >&2
    return 1
  fi
  local topic="smoke-$RANDOM$RANDOM"
  printf 'k1:hello through %s\nk2:{"n":2}\nk3:ünïcödé\nk4:\nk5:the last one\n' "$bootstrap" >"$KWS_WORK/in.txt"
  timeout 20s kcat -b "$bootstrap" "$@" -P -t "$topic" -K: -l "$KWS_WORK/in.txt" 2>"$KWS_WORK/kcat.err" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$KWS_WORK/kcat.err" >&2; echo "kcat producer exited with $rc" >&2; return 1; }
  # One partition: the consumer's order is the producer's.
  timeout 20s kcat -b "$bootstrap" "$@" -C -t "$topic" -o beginning -e -f '%k:%s\n' >"$KWS_WORK/out.txt" \
    2>"$KWS_WORK/kcat.err" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$KWS_WORK/kcat.err" >&2; echo "kcat consumer exited with $rc" >&2; return 1; }
  if ! cmp -s "$KWS_WORK/in.txt" "$KWS_WORK/out.txt"; then
    diff "$KWS_WORK/in.txt" "$KWS_WORK/out.txt" >&2 || true
    echo "what came out differs from what went in" >&2
    return 1
  fi
  echo "kcat via $bootstrap: metadata, 5 messages produced and consumed back byte-identical"
}

# On a failed test: the last lines of every log in $KWS_WORK, then one line naming the step. $1: the test's
# name ("image", "package"), $2: the step, $3: the exit code.
kws_report_failure() {
  local f
  for f in "$KWS_WORK"/*.log; do
    [ -s "$f" ] && { echo "---- $f"; tail -n 30 "$f"; }
  done
  echo "kws $1 test: FAILED at '$2' (exit code $3)" >&2
}
