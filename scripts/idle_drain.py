#!/usr/bin/env python3
"""Idle-server SIGTERM -> exit, with N idle keep-alive connections.

Starts the `server` example (the binary given, e.g.
target/release/examples/server), opens N keep-alive connections that each
get one `/health` answer and then stay idle, sends SIGTERM and times the
process's exit (waitpid) and reads its own `drain_latency_ms` from the JSON
report. Repeats RUNS times and prints the min, median and max of both.

    cargo build --release --example server
    scripts/idle_drain.py target/release/examples/server [N=100] [RUNS=11]

Compare two builds in one sitting by running it on each binary in turn.
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(binary, n):
    report = os.path.join(tempfile.mkdtemp(), "report.json")
    proc = subprocess.Popen(
        [binary, "--addr", "127.0.0.1:0", "--workers", str(n + 28), "--report", report],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = None
    for line in proc.stdout:
        if line.startswith("listening "):
            addr = line.split()[1]
        if line.strip() == "ready":
            break
    host, port = addr.rsplit(":", 1)
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while not got.endswith(b"ok\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("connection closed before the answer")
            got += chunk
        conns.append(s)
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    exit_ms = (time.perf_counter() - t0) * 1000
    for s in conns:
        s.close()
    with open(report) as f:
        drain_ms = json.load(f)["drain_latency_ms"]
    return exit_ms, drain_ms


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 11
    results = [one_run(binary, n) for _ in range(runs)]
    for name, values in (("SIGTERM -> exit", [r[0] for r in results]),
                         ("drain latency  ", [r[1] for r in results])):
        print(f"{name} ms, {n} idle keep-alive, {runs} runs: "
              f"min {min(values):.1f}  median {statistics.median(values):.1f}  "
              f"max {max(values):.1f}")


if __name__ == "__main__":
    main()
