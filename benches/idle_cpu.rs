//! `idle_cpu/W`: process CPU time per second of wall time while a pool of W
//! workers sits idle (started, parked, nothing submitted), for winddown, the
//! floor and the idioms a user would otherwise write, in one binary and one
//! run. An idle pool must burn ~nothing (design invariant 3: no polling).
//! Scenarios and defaults: `benches/README.md`.
//!
//! Two clocks, read before and after a window of wall time in which the
//! bench thread sleeps:
//!
//! * **process** — `utime + stime` of `/proc/self/stat`, the figure the issue
//!   asks for; clock ticks (10 ms), so the window is long (2 s by default);
//! * **threads** — the sum of the first field of every
//!   `/proc/self/task/*/schedstat` except the bench thread's own (ns on a
//!   CPU), the fine-grained view that the tick clock cannot give.
//!
//! Criterion reports the *threads* figure, scaled to one second of wall
//! time, as its "time": `100 µs` means 100 µs of CPU per wall second, i.e.
//! 0.01 % of one core, and `1 ns` means none at all (criterion refuses a
//! zero). The table at the end has both clocks, as a
//! percentage of one core, and is saved as `target/winddown-bench/idle_cpu.csv`.

mod support;

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use criterion::Criterion;
use support::{adaptive, impls, save, smoke, Case, Impl, Started};

/// Process CPU time (user + system) from `/proc/self/stat`, if readable.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux ABI Rust supports.
    Some(Duration::from_millis(ticks * 10))
}

/// The calling thread's `task/<tid>` entry name.
fn own_tid() -> Option<String> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// CPU time of every thread of the process except the caller, from
/// `/proc/self/task/*/schedstat` (nanoseconds).
fn threads_cpu(skip: Option<&str>) -> Option<Duration> {
    let mut ns = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        if skip.is_some_and(|s| entry.file_name().to_string_lossy() == s) {
            continue;
        }
        let Ok(s) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue; // exited meanwhile, or no schedstats in this kernel
        };
        ns += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(ns))
}

/// One measured window.
#[derive(Clone, Copy, Debug)]
struct Window {
    wall: Duration,
    process: Option<Duration>,
    threads: Option<Duration>,
}

impl Window {
    fn measure(window: Duration) -> Window {
        let tid = own_tid();
        // The process clock is read inside the threads' scans, so that its
        // window does not hold the scans' own CPU (~5 ms at 1024 threads).
        let t0 = threads_cpu(tid.as_deref());
        let p0 = process_cpu();
        let start = Instant::now();
        thread::sleep(window);
        let wall = start.elapsed();
        let p1 = process_cpu();
        let t1 = threads_cpu(tid.as_deref());
        Window {
            wall,
            process: p0.zip(p1).map(|(a, b)| b.saturating_sub(a)),
            threads: t0.zip(t1).map(|(a, b)| b.saturating_sub(a)),
        }
    }
}

/// Percent of one core: `cpu / wall × 100`.
fn pct(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let smoke = smoke();
    let ws: &[usize] = if smoke { &[1, 8] } else { &[1, 64, 1024] };
    let window = std::env::var("WINDDOWN_BENCH_WINDOW_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(
            if smoke {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(2)
            },
            Duration::from_millis,
        );
    // Criterion's windows are shorter (threads clock only, ns resolution).
    let crit_window = window / 10;
    let samples = support::samples(10);
    let mut rows: Vec<(usize, Impl, Window)> = Vec::new();
    for &w in ws {
        for imp in impls() {
            let id = format!("idle_cpu/{w}/{}", imp.name());
            if !support::selected(&id) {
                continue;
            }
            let started = Started::new(imp, &Case::idle(w));
            // The long window, for the table (both clocks).
            rows.push((w, imp, Window::measure(window)));
            // Criterion: threads-clock CPU per wall second.
            adaptive(
                &mut c,
                &format!("idle_cpu/{w}"),
                imp.name(),
                samples,
                None,
                || {
                    let m = Window::measure(crit_window);
                    m.threads
                        .unwrap_or_default()
                        .mul_f64(1.0 / m.wall.as_secs_f64())
                        // Criterion refuses a zero; 1 ns reads as "none".
                        .max(Duration::from_nanos(1))
                },
            );
            started.stop();
        }
    }
    c.final_summary();
    if rows.is_empty() {
        return;
    }
    let mut out = String::new();
    let mut csv = String::from("workers,impl,wall_s,process_pct,threads_pct\n");
    let _ = writeln!(
        out,
        "\n== idle_cpu: CPU per wall time with W idle workers, % of one core \
         (window {window:?}; budget: winddown <= 1 % at 1024) ==\n{:>5} {:<11} {:>10} {:>10}",
        "W", "impl", "process %", "threads %"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    for (w, imp, m) in &rows {
        let p = m.process.map(|d| pct(d, m.wall));
        let t = m.threads.map(|d| pct(d, m.wall));
        let _ = writeln!(
            out,
            "{:>5} {:<11} {:>10} {:>10}",
            w,
            imp.name(),
            fmt(p),
            fmt(t)
        );
        let _ = writeln!(
            csv,
            "{w},{},{:.3},{},{}",
            imp.name(),
            m.wall.as_secs_f64(),
            fmt(p),
            fmt(t)
        );
    }
    println!("{out}");
    save("idle_cpu.csv", &csv);
}
