#!/usr/bin/env bash
# A rolling restart behind HAProxy, with no failed request.
#
#   scripts/rolling_restart.sh [-n REPLICAS] [-c CONNECTIONS] [-m SLEEP_MS]
#                              [-p PRE_CLOSE_MS] [-o OUT_DIR]
#
# Starts REPLICAS (2-3) copies of the `server` example on 127.0.0.1 (free
# ports), HAProxy in front of them (health checks on /health every 100 ms,
# down after 2 failures, up after 2 successes), and the `loadgen` example
# sending `GET /sleep?ms=SLEEP_MS` through HAProxy on CONNECTIONS keep-alive
# connections. Then it restarts every replica in turn with SIGTERM (the
# replica answers 503 on /health for PRE_CLOSE_MS while it keeps serving,
# closes its listener, drains and exits; a new one is started on the same
# port and put back once HAProxy sees it up), and then replaces replica 0
# once more through the socket handover (SIGUSR2: the new process takes the
# listening socket, the old one drains). Then the load stops.
#
# It checks, and exits 1 if any check fails:
#   - every request the load generator sent got a complete 2xx (failed=0);
#   - every replica stopped by SIGTERM exited 130 with no forced connection,
#     and the handed-over one exited 0 with none forced;
#   - every replica restarted took its socket as expected (bound/handover).
#
# Prints `restart rK sigterm exit=130 drain_ms=X` (and `handover ...`)
# lines, then the load generator's `summary sent=N ok=N failed=N p50_ms=X
# p99_ms=X max_ms=X` line (also OUT_DIR/summary.json). Needs haproxy
# (Debian: apt-get install -y haproxy), curl and python3. Only 127.0.0.1.
set -euo pipefail

REPLICAS=3 CONNS=8 SLEEP_MS=5 PRE_CLOSE=600 OUT=
while getopts "n:c:m:p:o:" opt; do
    case $opt in
        n) REPLICAS=$OPTARG ;;
        c) CONNS=$OPTARG ;;
        m) SLEEP_MS=$OPTARG ;;
        p) PRE_CLOSE=$OPTARG ;;
        o) OUT=$OPTARG ;;
        *) sed -n '2,27p' "$0"; exit 2 ;;
    esac
done
case $REPLICAS in 2 | 3) ;; *) echo "-n: 2 or 3 replicas" >&2; exit 2 ;; esac

for tool in haproxy curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done
cd "$(dirname "$0")/.."
# BIN_DIR: prebuilt examples (the test passes its own); else build them.
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release --example server --example loadgen --quiet
    BIN_DIR=target/release/examples
fi
SERVER=$BIN_DIR/server LOADGEN=$BIN_DIR/loadgen

WORK=$(mktemp -d)
[ -n "$OUT" ] && mkdir -p "$OUT"
OUT=${OUT:-$WORK}
PIDS=() HAPROXY_PID= LOAD_PID=
cleanup() {
    # Only the processes this script started, by their ids.
    for pid in "${PIDS[@]}" $LOAD_PID $HAPROXY_PID; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (at most 30 s) for a line matching $2 in file $1 (no sleep as a
# synchronisation: a short poll of a file that a process writes).
wait_line() {
    for _ in $(seq 1 600); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "timed out waiting for '$2' in $1" >&2
    cat "$1" >&2
    return 1
}

# HAProxy's view of server $1: UP, DOWN, ... (from the CSV stats).
status_of() {
    curl -fsS "http://127.0.0.1:$STATS_PORT/stats;csv" 2>/dev/null |
        awk -F, -v s="$1" '$1 == "be" && $2 == s { print $18 }'
}

wait_status() { # server, wanted status
    for _ in $(seq 1 600); do
        [ "$(status_of "$1")" = "$2" ] && return 0
        sleep 0.05
    done
    echo "timed out waiting for $1 to be $2 (is $(status_of "$1"))" >&2
    return 1
}

start_replica() { # index
    local i=$1
    : >"$WORK/r$i.out"
    "$SERVER" --addr "127.0.0.1:${PORTS[$i]}" --workers "$WORKERS" --grace 10000 \
        --pre-close-delay "$PRE_CLOSE" --handover-signal USR2 \
        --report "$WORK/r$i.json" >>"$WORK/r$i.out" 2>>"$WORK/r$i.err" &
    PIDS[$i]=$!
    wait_line "$WORK/r$i.out" '^ready$'
}

# A replica's report: "exit_code forced drain_ms".
report_of() {
    python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["connections"]
print(r["exit_code"], c["forced"], r["drain_latency_ms"], c["accepted"], c["served"])
EOF
}

FAIL=0
check() { # description, condition result (0 = ok)
    if [ "$2" -ne 0 ]; then
        echo "FAILED: $1" >&2
        FAIL=1
    fi
}

# A handler thread per connection HAProxy may hold open to one replica
# (every client connection's, plus the health checks'), so that idle
# keep-alive connections never hold every handler and starve the checks.
WORKERS=$((2 * CONNS + 8))
PORTS=()
for i in $(seq 0 $((REPLICAS - 1))); do PORTS[$i]=$(free_port); done
FRONT_PORT=$(free_port) STATS_PORT=$(free_port)

{
    cat <<EOF
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch
    # A request on a reused keep-alive connection that the replica closed as
    # it stopped (the race every keep-alive server has at its close) gets no
    # response; HAProxy may resend such a request to another replica.
    retry-on conn-failure empty-response response-timeout
frontend front
    bind 127.0.0.1:$FRONT_PORT
    default_backend be
backend be
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server inter 100ms fall 2 rise 2
EOF
    for i in $(seq 0 $((REPLICAS - 1))); do
        echo "    server r$i 127.0.0.1:${PORTS[$i]} check"
    done
    cat <<EOF
listen stats
    bind 127.0.0.1:$STATS_PORT
    stats enable
    stats uri /stats
EOF
} >"$WORK/haproxy.cfg"
haproxy -c -q -f "$WORK/haproxy.cfg"

for i in $(seq 0 $((REPLICAS - 1))); do start_replica "$i"; done
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
for i in $(seq 0 $((REPLICAS - 1))); do wait_status "r$i" UP; done
echo "haproxy 127.0.0.1:$FRONT_PORT -> ${PORTS[*]}; load: $CONNS connections, /sleep?ms=$SLEEP_MS"

"$LOADGEN" --target "127.0.0.1:$FRONT_PORT" --connections "$CONNS" \
    --path "/sleep?ms=$SLEEP_MS" --summary "$OUT/summary.json" \
    >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD_PID=$!
wait_line "$WORK/load.out" '^running$'

# One after another: SIGTERM, drain, exit, start again, wait until UP.
for i in $(seq 0 $((REPLICAS - 1))); do
    old=${PIDS[$i]}
    kill -TERM "$old"
    wait_status "r$i" DOWN
    code=0
    wait "$old" || code=$?
    read -r exit_code forced drain_ms accepted served < <(report_of "$WORK/r$i.json")
    echo "restart r$i sigterm exit=$code forced=$forced drain_ms=$drain_ms accepted=$accepted served=$served"
    check "r$i exits 130 after SIGTERM" "$([ "$code" = 130 ] && echo 0 || echo 1)"
    check "r$i forced no connection" "$([ "$forced" = 0 ] && echo 0 || echo 1)"
    start_replica "$i"
    bound=0
    grep -q '^listener bound ' "$WORK/r$i.out" || bound=1
    check "r$i bound its socket" "$bound"
    wait_status "r$i" UP
done

# Once more through the handover: the new process takes the socket.
old=${PIDS[0]}
kill -USR2 "$old"
wait_line "$WORK/r0.out" '^listener handover pid='
code=0
wait "$old" || code=$?
PIDS[0]=$(sed -n 's/^listener handover pid=//p' "$WORK/r0.out" | tail -1)
read -r exit_code forced drain_ms accepted served < <(report_of "$WORK/r0.json")
echo "handover r0 old=$old new=${PIDS[0]} exit=$code forced=$forced drain_ms=$drain_ms accepted=$accepted served=$served"
check "r0 exits 0 after the handover" "$([ "$code" = 0 ] && echo 0 || echo 1)"
check "r0 forced no connection in the handover" "$([ "$forced" = 0 ] && echo 0 || echo 1)"
wait_status r0 UP

# A little more load on the new process, then stop the load generator.
curl -fsS -o /dev/null "http://127.0.0.1:$FRONT_PORT/sleep?ms=1"
kill -TERM "$LOAD_PID"
code=0
wait "$LOAD_PID" || code=$?
LOAD_PID=
grep '^summary ' "$WORK/load.out"
check "every request through HAProxy got a complete 2xx (loadgen exit $code)" "$code"
if [ -s "$WORK/load.err" ]; then
    echo "load generator errors:" >&2
    head -20 "$WORK/load.err" >&2
fi

kill -USR1 "$HAPROXY_PID" # soft stop
wait "$HAPROXY_PID" || true
HAPROXY_PID=

# Stop the replicas (not the script's children after a handover: by id).
for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
done
PIDS=()
exit $FAIL
