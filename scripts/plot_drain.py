#!/usr/bin/env python3
"""Plot drain latency against worker count (log-log) from the drain bench.

Reads the CSV that `cargo bench --bench drain` writes
(`target/winddown-bench/drain.csv`; columns
`scenario,workers,impl,metric,n,min_us,median_us,p99_us,max_us`) and draws,
for the `idle` scenario, the median drain latency of every implementation,
winddown's return latency, and p99 as a thin band for winddown and the floor.

    python3 scripts/plot_drain.py [CSV] [OUT] [--title "machine"]

Defaults: CSV = docs/bench/drain.csv, OUT = docs/drain_latency.svg.
Needs matplotlib (`pip install matplotlib`).
"""

import argparse
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Order and style of the lines; anything else in the CSV is drawn after.
STYLE = {
    ("winddown", "drain"): dict(color="#d62728", marker="o", lw=2.4, label="winddown — drain (runtime knows all done)"),
    ("winddown", "return"): dict(color="#d62728", marker="o", lw=1.4, ls="--", mfc="white", label="winddown — return (run() returned, all joined)"),
    ("floor", "return"): dict(color="black", marker="s", lw=2.0, label="floor — crossbeam + join (the baseline)"),
    ("floor-done", "drain"): dict(color="#7f7f7f", marker="s", lw=1.2, ls=":", label="floor + done channel — drain"),
    ("mpsc-mutex", "return"): dict(color="#1f77b4", marker="^", lw=1.2, label="std mpsc behind a Mutex — join"),
    ("threadpool", "drain"): dict(color="#2ca02c", marker="v", lw=1.2, label="threadpool crate — last thread exit"),
    ("rayon", "drain"): dict(color="#9467bd", marker="D", lw=1.2, label="rayon scope + flag — last thread exit"),
    ("poll-10ms", "return"): dict(color="#ff7f0e", marker="x", lw=1.2, label="AtomicBool + recv_timeout(10 ms) — join"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="?", default="docs/bench/drain.csv")
    ap.add_argument("out", nargs="?", default="docs/drain_latency.svg")
    ap.add_argument("--scenario", default="idle")
    ap.add_argument("--title", default="")
    args = ap.parse_args()

    # (impl, metric) -> [(workers, median_us, p99_us)]
    series = defaultdict(list)
    with open(args.csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["scenario"] != args.scenario:
                continue
            series[(row["impl"], row["metric"])].append(
                (int(row["workers"]), float(row["median_us"]), float(row["p99_us"]))
            )
    if not series:
        print(f"no rows for scenario {args.scenario!r} in {args.csv}", file=sys.stderr)
        return 1

    fig, (ax, rx) = plt.subplots(
        2, 1, figsize=(9, 7.2), sharex=True, gridspec_kw=dict(height_ratios=[3, 1.2])
    )
    # Only the figures in STYLE: for pools without a done signal the CSV's
    # "drain" row repeats the join, and winddown/floor carry the budget.
    keys = [k for k in STYLE if k in series]
    for key in keys:
        pts = sorted(series[key])
        ws = [p[0] for p in pts]
        med = [p[1] / 1e3 for p in pts]
        p99 = [p[2] / 1e3 for p in pts]
        style = dict(STYLE.get(key, dict(label=f"{key[0]} — {key[1]}")))
        line = ax.plot(ws, med, ms=5, **style)[0]
        if key[0] in ("winddown", "floor"):
            ax.fill_between(ws, med, p99, color=line.get_color(), alpha=0.08, lw=0)

    # Lower panel: winddown's figures over the floor's join, the budget's
    # ratio (1.0 = the floor).
    floor = {w: m for w, m, _ in series.get(("floor", "return"), [])}
    for metric, style in [("drain", dict(color="#d62728", marker="o", lw=2.0)),
                          ("return", dict(color="#d62728", marker="o", lw=1.2, ls="--", mfc="white"))]:
        pts = [(w, m / floor[w]) for w, m, _ in sorted(series.get(("winddown", metric), [])) if w in floor]
        if pts:
            rx.plot([p[0] for p in pts], [p[1] for p in pts], ms=5, label=f"winddown {metric} / floor join", **style)
    rx.axhline(1.0, color="black", lw=1.0)
    rx.set_ylabel("÷ floor (median)")
    rx.set_ylim(bottom=0)
    rx.grid(True, alpha=0.35)
    rx.legend(fontsize=8, loc="upper right")

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    rx.set_xlabel("idle workers W (log)")
    ax.set_ylabel("ms from the trigger (log)\nmedian; band to p99")
    title = f"drain/{args.scenario}/W: trigger → every worker out of its loop / joined"
    if args.title:
        title += f"\n{args.title}"
    ax.set_title(title, fontsize=10)
    allw = sorted({w for pts in series.values() for w, _, _ in pts})
    rx.set_xticks(allw)
    rx.set_xticklabels([str(w) for w in allw])
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out, metadata={"Date": None} if args.out.endswith(".svg") else None)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
