#!/usr/bin/env bash
# Load test of the server drain (not run in CI): wrk drives the `server`
# example on 127.0.0.1 with keep-alive connections; in the middle of the run
# the script sends SIGTERM and reports what happened to the traffic.
#
#   scripts/load_test.sh [-c CONNECTIONS] [-t THREADS] [-d SECONDS]
#                        [-s SIGNAL_AT_SECONDS] [-m SLEEP_MS] [-p PRE_CLOSE_MS]
#
# Needs wrk (Debian: apt-get install wrk) and python3 (to read the JSON
# report). Only ever targets 127.0.0.1.
#
# What it prints:
#   in flight at the signal   /sleep handlers running when the stop began
#                              (the example's `stopping inflight=N` line)
#   completed requests         wrk's count, and the server's `served`
#   failures                   non-2xx responses, and wrk's socket errors
#                              split, with the server's own accounting
#                              (accepted = closed + idle_closed + drained +
#                              forced), into errors on accepted connections
#                              (at most forced + idle_closed) and connects
#                              refused after the listener closed (expected;
#                              wrk connects without blocking, so it counts a
#                              refused connect as a *write* error). An
#                              accepted request that failed shows as
#                              forced > 0, a non-2xx, or wrk completing more
#                              requests than the server served.
#   signal -> exit             from kill(1) to the process's exit, and the
#                              runtime's drain latency
set -euo pipefail

CONNS=64 THREADS=2 DURATION=6 SIGNAL_AT=3 SLEEP_MS=20 PRE_CLOSE=0
while getopts "c:t:d:s:m:p:" opt; do
    case $opt in
        c) CONNS=$OPTARG ;;
        t) THREADS=$OPTARG ;;
        d) DURATION=$OPTARG ;;
        s) SIGNAL_AT=$OPTARG ;;
        m) SLEEP_MS=$OPTARG ;;
        p) PRE_CLOSE=$OPTARG ;;
        *) sed -n '2,10p' "$0"; exit 2 ;;
    esac
done

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
cd "$(dirname "$0")/.."
cargo build --release --example server --quiet
BIN=target/release/examples/server

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    # Only the server this script started, by its id.
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# One handler thread per connection, so no connection waits in the queue.
"$BIN" --addr 127.0.0.1:0 --workers "$CONNS" --grace 10000 \
    --pre-close-delay "$PRE_CLOSE" --report "$WORK/report.json" \
    >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!

# Readiness: the `ready` line, not a sleep.
for _ in $(seq 1 300); do
    grep -qx ready "$WORK/stdout" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/stderr" >&2; exit 1; }
    sleep 0.1
done
ADDR=$(sed -n 's/^listening //p' "$WORK/stdout")
case $ADDR in 127.0.0.1:*) ;; *) echo "unexpected address '$ADDR'" >&2; exit 1 ;; esac
URL="http://$ADDR/sleep?ms=$SLEEP_MS"
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s $URL; SIGTERM at ${SIGNAL_AT}s"

wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 10s "$URL" >"$WORK/wrk" 2>&1 &
WRK_PID=$!

sleep "$SIGNAL_AT" # the load's duration before the signal, not a synchronisation
T0=$(date +%s%N)
kill -TERM "$SERVER_PID"
set +e
wait "$SERVER_PID"
CODE=$?
set -e
T1=$(date +%s%N)
SERVER_PID=
wait "$WRK_PID" || true

echo
echo "--- wrk ---"
cat "$WORK/wrk"
echo "--- server stderr (report) ---"
head -n 1 "$WORK/stderr"
echo

python3 - "$WORK/report.json" "$WORK/stdout" "$WORK/wrk" "$CODE" "$T0" "$T1" <<'EOF'
import json, re, sys

report_path, stdout_path, wrk_path, code, t0, t1 = sys.argv[1:]
report = json.load(open(report_path))
stdout = open(stdout_path).read()
wrk = open(wrk_path).read()
c = report["connections"]

m = re.search(r"^stopping inflight=(\d+)$", stdout, re.M)
inflight = int(m.group(1)) if m else None
m = re.search(r"(\d+) requests in", wrk)
wrk_requests = int(m.group(1)) if m else 0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
non2xx = int(m.group(1)) if m else 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk)
connect, read, write, timeout = map(int, m.groups()) if m else (0, 0, 0, 0)

on_accepted = c["forced"] + c["idle_closed"]
errors = connect + read + write + timeout
print("=== results ===")
print(f"requests in flight at the signal : {inflight}")
print(f"completed requests               : {wrk_requests} (wrk), {c['served']} served (server)")
print(f"connections (server)             : accepted {c['accepted']} = closed {c['closed']} "
      f"+ idle_closed {c['idle_closed']} + drained {c['drained']} + forced {c['forced']}")
print(f"non-2xx responses                : {non2xx}")
print(f"wrk socket errors                : connect {connect}, read {read}, write {write}, timeout {timeout}")
print(f"  on accepted connections (at most forced + idle_closed): {min(on_accepted, errors)}")
print(f"    accepted requests not answered in full (forced): {c['forced']}")
print(f"    connections closed idle, no request received (idle_closed): {c['idle_closed']}")
print(f"  connects refused after the listener closed: at least {errors - min(on_accepted, errors)}")
print("    (wrk connects without blocking, so a refused connect surfaces at its first")
print("     write and is counted as a write error, not a connect error)")
print(f"signal -> exit                   : {(int(t1) - int(t0)) / 1e6:.1f} ms "
      f"(drain latency {report['drain_latency_ms']:.1f} ms), exit code {code}")
ok = c["forced"] == 0 and non2xx == 0 and wrk_requests <= c["served"]
print("failed accepted requests         :", "none" if ok else "SOME")
sys.exit(0 if ok else 1)
EOF
