//! The three outputs: a table for people, JSON for scripts, an SVG plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::load::{Bucket, Counts};
use crate::probe::{delay_text, Delay, Measured, Results};
use crate::run::{signal_name, Outcome, Run};
use crate::stats::Summary;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The latencies (ms) of the measured runs.
fn latencies(c: &Measured) -> Vec<f64> {
    c.runs
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Measured { latency, .. } => Some(ms(latency)),
            _ => None,
        })
        .collect()
}

/// How many runs ended each way: `exit 130`, `killed by signal SIGTERM`,
/// `timed out`, ….
fn statuses(c: &Measured) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in &c.runs {
        *m.entry(status_key(&r.outcome)).or_insert(0) += 1;
    }
    m
}

fn status_key(o: &Outcome) -> String {
    match o {
        Outcome::Measured { status, .. } => status.describe(),
        Outcome::TimedOut { .. } => "timed out".into(),
        Outcome::ExitedEarly { .. } => "exited early".into(),
        Outcome::NotReady => "not ready".into(),
        Outcome::Failed(_) => "failed".into(),
    }
}

/// One line about a run, for the progress lines on stderr.
pub(crate) fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Measured { latency, status } => {
            format!("{:.3} ms, {}", ms(*latency), status.describe())
        }
        Outcome::TimedOut { status } => format!(
            "timed out, killed ({})",
            status.map_or_else(|| "no exit seen".into(), |s| s.describe())
        ),
        Outcome::ExitedEarly {
            status,
            before_ready,
        } => format!(
            "{} before {}",
            status.describe(),
            if *before_ready { "ready" } else { "the signal" }
        ),
        Outcome::NotReady => "not ready in time, killed".into(),
        Outcome::Failed(e) => format!("failed: {e}"),
    }
}

fn load_total(c: &Measured) -> Option<Counts> {
    let mut total: Option<Counts> = None;
    for l in c.runs.iter().filter_map(|r| r.load.as_ref()) {
        total.get_or_insert_with(Counts::default).add(l);
    }
    total
}

fn median(c: &Measured) -> Option<f64> {
    Summary::of(&latencies(c)).map(|s| s.p50)
}

// ===== the table =====

/// The human table: one row per command, its statuses, its load, and with
/// two or more commands each one's median against the first's.
pub(crate) fn table(r: &Results) -> String {
    let mut out = String::new();
    let width = r
        .commands
        .iter()
        .map(|c| c.command.len())
        .max()
        .unwrap_or(0)
        .min(48);
    let _ = writeln!(
        out,
        "drain latency: {} → exit, ready on {}, delay {}, timeout {} ms",
        r.signal,
        r.ready,
        delay_text(r.delay),
        r.timeout_ms
    );
    let _ = writeln!(
        out,
        "{:<3} {:<width$} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "command", "runs", "min ms", "p50 ms", "p99 ms", "max ms", "mean ms"
    );
    for c in &r.commands {
        let name = if c.command.len() > width {
            let cut = c
                .command
                .char_indices()
                .nth(width.saturating_sub(1))
                .map_or(0, |(i, _)| i);
            format!("{}…", &c.command[..cut])
        } else {
            c.command.clone()
        };
        let _ = write!(out, "{:<3} {:<width$} {:>4}", c.label, name, c.runs.len());
        match Summary::of(&latencies(c)) {
            Some(s) => {
                let _ = writeln!(
                    out,
                    " {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                    s.min, s.p50, s.p99, s.max, s.mean
                );
            }
            None => {
                let _ = writeln!(out, " {:>9} (no run measured)", "-");
            }
        }
        let statuses: Vec<String> = statuses(c)
            .into_iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        let _ = writeln!(out, "    status: {}", statuses.join(", "));
        let stopping: Vec<f64> = c
            .runs
            .iter()
            .filter_map(|r| r.stopping_after)
            .map(ms)
            .collect();
        if let Some(s) = Summary::of(&stopping) {
            let _ = writeln!(
                out,
                "    signal → STOPPING=1: p50 {:.3} ms, p99 {:.3} ms",
                s.p50, s.p99
            );
        }
        if let Some(l) = load_total(c) {
            let _ = writeln!(
                out,
                "    load before the signal: {}",
                bucket_text(&l.before)
            );
            let _ = writeln!(out, "    load after the signal:  {}", bucket_text(&l.after));
        }
    }
    if r.commands.len() > 1 {
        if let Some(base) = median(&r.commands[0]) {
            for c in &r.commands[1..] {
                if let Some(m) = median(c) {
                    let _ = writeln!(
                        out,
                        "{} vs {}: median {:.3} ms / {:.3} ms = {:.2}×",
                        c.label,
                        r.commands[0].label,
                        m,
                        base,
                        m / base
                    );
                }
            }
        }
    }
    out
}

fn bucket_text(b: &Bucket) -> String {
    format!(
        "{} requests, {} ok, {} failed ({} connect, {} non-2xx, {} incomplete)",
        b.total(),
        b.ok,
        b.failed(),
        b.connect_errors,
        b.non_2xx,
        b.incomplete
    )
}

// ===== JSON =====

fn bucket_json(b: &Bucket) -> Value {
    json!({
        "requests": b.total(),
        "ok": b.ok,
        "failed": b.failed(),
        "connect_errors": b.connect_errors,
        "non_2xx": b.non_2xx,
        "incomplete": b.incomplete,
    })
}

fn counts_json(c: &Counts) -> Value {
    json!({ "before_signal": bucket_json(&c.before), "after_signal": bucket_json(&c.after) })
}

fn run_json(i: usize, r: &Run) -> Value {
    let (latency, exit_code, signal) = match &r.outcome {
        Outcome::Measured { latency, status } => {
            let (code, sig) = status_parts(*status);
            (Some(ms(*latency)), code, sig)
        }
        Outcome::TimedOut { status: Some(s) } | Outcome::ExitedEarly { status: s, .. } => {
            let (code, sig) = status_parts(*s);
            (None, code, sig)
        }
        _ => (None, None, None),
    };
    json!({
        "run": i + 1,
        "outcome": r.outcome.kind(),
        "status": status_key(&r.outcome),
        "latency_ms": latency,
        "exit_code": exit_code,
        "killed_by": signal,
        "ready_ms": r.ready_after.map(ms),
        "delay_ms": ms(r.delay),
        "stopping_ms": r.stopping_after.map(ms),
        "error": match &r.outcome { Outcome::Failed(e) => Some(e.clone()), _ => None },
        "load": r.load.as_ref().map(counts_json),
    })
}

fn status_parts(s: crate::run::Status) -> (Option<i32>, Option<String>) {
    match s {
        crate::run::Status::Exited(c) => (Some(c), None),
        crate::run::Status::Killed(sig) => (None, Some(signal_name(sig))),
    }
}

/// The results as one JSON document (the fields are described in the
/// README, "Measuring drain latency of any program").
pub(crate) fn json(r: &Results) -> Value {
    let commands: Vec<Value> = r
        .commands
        .iter()
        .map(|c| {
            let lat = latencies(c);
            let summary = Summary::of(&lat).map(|s| {
                json!({
                    "count": s.count, "min_ms": s.min, "p50_ms": s.p50,
                    "p99_ms": s.p99, "max_ms": s.max, "mean_ms": s.mean,
                })
            });
            let count = |kind: &str| c.runs.iter().filter(|x| x.outcome.kind() == kind).count();
            json!({
                "label": c.label,
                "command": c.command,
                "runs": c.runs.iter().enumerate().map(|(i, x)| run_json(i, x)).collect::<Vec<_>>(),
                "latency": summary,
                "statuses": statuses(c),
                "measured": count("measured"),
                "timeouts": count("timed_out"),
                "not_ready": count("not_ready"),
                "exited_early": count("exited_early"),
                "failed": count("failed"),
                "load": load_total(c).as_ref().map(counts_json),
            })
        })
        .collect();
    let comparison: Vec<Value> = match r.commands.first().and_then(median) {
        Some(base) if r.commands.len() > 1 => r.commands[1..]
            .iter()
            .filter_map(|c| {
                median(c).map(|m| {
                    json!({
                        "label": c.label, "baseline": r.commands[0].label,
                        "p50_ms": m, "baseline_p50_ms": base, "ratio_of_medians": m / base,
                    })
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let (delay_min, delay_max) = match r.delay {
        Delay::Fixed(ms) => (ms, ms),
        Delay::Range(lo, hi) => (lo, hi),
    };
    json!({
        "probe": env!("CARGO_PKG_VERSION"),
        "signal": r.signal.as_str(),
        "ready": r.ready,
        "delay_ms": { "min": delay_min, "max": delay_max },
        "timeout_ms": r.timeout_ms,
        "seed": r.seed,
        "load": r.load.as_ref().map(|(url, rate, threads)| json!({ "url": url, "rate": rate, "threads": threads })),
        "commands": commands,
        "comparison": comparison,
    })
}

// ===== SVG =====

/// Escapes text for an XML text node or attribute.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A "nice" axis end at or above `max`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&v| v >= max)
        .unwrap_or(10.0 * p)
}

/// A plot: one row per command, a dot per measured run (spread vertically so
/// equal values stay visible), the p50 and p99 as marks, on a shared
/// millisecond axis.
pub(crate) fn svg(r: &Results) -> String {
    const W: f64 = 760.0;
    const LEFT: f64 = 150.0;
    const RIGHT: f64 = 30.0;
    const TOP: f64 = 40.0;
    const ROW: f64 = 60.0;
    let rows = r.commands.len() as f64;
    let height = TOP + ROW * rows + 50.0;
    let all: Vec<f64> = r.commands.iter().flat_map(latencies).collect();
    let axis_max = nice_ceiling(all.iter().copied().fold(0.0, f64::max));
    let x = |v: f64| LEFT + (v / axis_max) * (W - LEFT - RIGHT);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{height}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14">{} → exit latency (ms), ready on {}</text>"#,
        xml(r.signal.as_str()),
        xml(&r.ready)
    );
    let axis_y = TOP + ROW * rows;
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##,
        W - RIGHT
    );
    for i in 0..=5 {
        let v = axis_max * f64::from(i) / 5.0;
        let tx = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{axis_y}" stroke="#eee"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            axis_y + 16.0,
            trim_number(v)
        );
    }
    for (row, c) in r.commands.iter().enumerate() {
        let mid = TOP + ROW * (row as f64 + 0.5);
        let lat = latencies(c);
        let _ = writeln!(
            s,
            r#"<text x="8" y="{:.1}">{}: {}</text>"#,
            mid - 4.0,
            xml(&c.label),
            xml(&shorten(&c.command, 20))
        );
        let _ = writeln!(
            s,
            r##"<text x="8" y="{:.1}" fill="#666">{} of {} measured</text>"##,
            mid + 12.0,
            lat.len(),
            c.runs.len()
        );
        for (i, v) in lat.iter().enumerate() {
            // A fixed spread by index (no randomness: the same results draw
            // the same plot).
            let dy = ((i * 7) % 11) as f64 / 10.0 * (ROW * 0.5) - ROW * 0.25;
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#1f77b4" fill-opacity="0.6"><title>{v:.3} ms</title></circle>"##,
                x(*v),
                mid + dy
            );
        }
        if let Some(sum) = Summary::of(&lat) {
            for (name, v, colour) in [("p50", sum.p50, "#2ca02c"), ("p99", sum.p99, "#d62728")] {
                let tx = x(v);
                let _ = writeln!(
                    s,
                    r#"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"><title>{name} {v:.3} ms</title></line>"#,
                    mid - ROW * 0.4,
                    mid + ROW * 0.4
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{tx:.1}" y="{:.1}" fill="{colour}" text-anchor="middle" font-size="10">{name}</text>"#,
                    mid - ROW * 0.42
                );
            }
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">milliseconds from the signal to the exit</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        axis_y + 36.0
    );
    s.push_str("</svg>\n");
    s
}

fn trim_number(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(xml(r#"a<b & "c"'"#), "a&lt;b &amp; &quot;c&quot;&apos;");
    }

    #[test]
    fn axis_ends_are_nice_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
    }
}
