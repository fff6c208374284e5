#!/usr/bin/env python3
"""Turn the benches' CSV output into the Markdown tables of BENCHMARKS.md.

    python3 scripts/plot_tables.py [DIR]

DIR (default docs/bench) holds drain.csv, signal.csv, submit.csv and
idle_cpu.csv as written by `cargo bench` (`target/winddown-bench/`). Prints
Markdown to stdout. Medians throughout; every ratio is to the floor's
join-based figure (its return latency) of the same scenario and W, measured
in the same run.
"""

import csv
import os
import sys
from collections import defaultdict


def fmt_us(us):
    if us is None:
        return "–"
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1000:
        return f"{us / 1000:.2f} ms" if us < 10000 else f"{us / 1000:.1f} ms"
    return f"{us:.1f} µs" if us < 100 else f"{us:.0f} µs"


def ratio(a, b):
    return "–" if a is None or not b else f"{a / b:.2f}×"


def load(path):
    # (scenario, workers, impl, metric) -> row
    rows = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows[(r["scenario"], int(r["workers"]), r["impl"], r["metric"])] = r
    return rows


def med(rows, sc, w, imp, metric):
    r = rows.get((sc, w, imp, metric))
    return float(r["median_us"]) if r else None


def p99(rows, sc, w, imp, metric):
    r = rows.get((sc, w, imp, metric))
    return float(r["p99_us"]) if r else None


def budget_table(rows, title):
    scen = sorted({(k[0], k[1]) for k in rows if k[2] == "winddown"}, key=lambda x: (x[0], x[1]))
    print(f"#### {title}\n")
    print("| scenario | W | winddown drain (p99) | winddown return (p99) | floor join (p99) | drain / floor | return / floor |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for sc, w in scen:
        fl = med(rows, sc, w, "floor", "return")
        d, r = med(rows, sc, w, "winddown", "drain"), med(rows, sc, w, "winddown", "return")
        print(
            f"| {sc} | {w} | {fmt_us(d)} ({fmt_us(p99(rows, sc, w, 'winddown', 'drain'))}) "
            f"| {fmt_us(r)} ({fmt_us(p99(rows, sc, w, 'winddown', 'return'))}) "
            f"| {fmt_us(fl)} ({fmt_us(p99(rows, sc, w, 'floor', 'return'))}) "
            f"| {ratio(d, fl)} | {ratio(r, fl)} |"
        )
    print()


def peers_table(rows, scenario):
    peers = ["floor-done", "poll-10ms", "mpsc-mutex", "threadpool", "rayon"]
    ws = sorted({k[1] for k in rows if k[0] == scenario})
    if not ws:
        return
    print(f"#### `{scenario}`: every implementation, median latency (ratio to the floor's join)\n")
    head = ["W", "winddown drain", "winddown return", "floor join"] + peers
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join(["---:"] * len(head)) + " |")
    for w in ws:
        fl = med(rows, scenario, w, "floor", "return")
        cells = [str(w)]
        for imp, metric in [("winddown", "drain"), ("winddown", "return"), ("floor", "return")]:
            v = med(rows, scenario, w, imp, metric)
            cells.append(fmt_us(v) if imp == "floor" else f"{fmt_us(v)} ({ratio(v, fl)})")
        for p in peers:
            # Pools that join: their return; threadpool/rayon: last exit.
            v = med(rows, scenario, w, p, "return")
            if v is None:
                v = med(rows, scenario, w, p, "drain")
            cells.append("–" if v is None else f"{fmt_us(v)} ({ratio(v, fl)})")
        print("| " + " | ".join(cells) + " |")
    print()


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "docs/bench"
    p = os.path.join(d, "drain.csv")
    if os.path.exists(p):
        rows = load(p)
        budget_table(rows, "drain (drain.csv)")
        for sc in sorted({k[0] for k in rows}):
            peers_table(rows, sc)
    p = os.path.join(d, "signal.csv")
    if os.path.exists(p):
        budget_table({k: v for k, v in load(p).items() if k[0] == "signal"}, "signal (signal.csv)")
        rows = load(p)
        print("| W | winddown SIGTERM drain | winddown SIGTERM return | winddown request return (same run) |")
        print("| ---: | ---: | ---: | ---: |")
        for w in sorted({k[1] for k in rows}):
            print(
                f"| {w} | {fmt_us(med(rows, 'signal', w, 'winddown', 'drain'))} "
                f"| {fmt_us(med(rows, 'signal', w, 'winddown', 'return'))} "
                f"| {fmt_us(med(rows, 'idle', w, 'winddown', 'return'))} |"
            )
        print()
    p = os.path.join(d, "submit.csv")
    if os.path.exists(p):
        rows = defaultdict(dict)
        with open(p, newline="") as f:
            for r in csv.DictReader(f):
                rows[r["group"]][r["impl"]] = r
        print("| group | impl | min ns/job | median ns/job | p99 ns/job | Mjobs/s (median) | / raw (median) |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for g, impls in rows.items():
            raw = float(impls["raw"]["median_ns"]) if "raw" in impls else None
            for name, r in impls.items():
                m = float(r["median_ns"])
                print(
                    f"| {g} | {name} | {r['min_ns']} | {r['median_ns']} | {r['p99_ns']} "
                    f"| {1e3 / m:.2f} | {ratio(m, raw)} |"
                )
        print()
    p = os.path.join(d, "idle_cpu.csv")
    if os.path.exists(p):
        print("| W | impl | process CPU, % of one core | threads' CPU, % of one core |")
        print("| ---: | --- | ---: | ---: |")
        with open(p, newline="") as f:
            for r in csv.DictReader(f):
                print(f"| {r['workers']} | {r['impl']} | {r['process_pct']} | {r['threads_pct']} |")
        print()


if __name__ == "__main__":
    main()
