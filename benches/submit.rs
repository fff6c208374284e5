//! `submit/2`: N = 1,000,000 trivial jobs through W = 2 workers, ns per
//! job, winddown (`submit` in a loop, `Submitter::feed`, and
//! `Submitter::feed_batched` with 256 jobs per batch) against a raw
//! bounded crossbeam pool with the same capacity, in one binary and one run.
//! Timed: first submit → every job run and every worker joined (winddown:
//! drop the submitter, `run()` completes).
//!
//! `submit/2/parts/*` adds to the raw pool one at a time what winddown does
//! per job (a read lock per submit, two slot swaps per job with or without
//! a clock read, `catch_unwind`, a counter) or plain arithmetic in the
//! worker, to show where the per-job overhead goes.
//! Scenarios and defaults: `benches/README.md`.

mod support;

use std::fmt::Write as _;
use std::hint::black_box;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::Criterion;
use parking_lot::RwLock;
use support::{adaptive, fmt_d, save, smoke, Stats};
use winddown::Runtime;

/// What the raw pool does per job besides `send`/`recv`.
#[derive(Clone, Copy, Debug, Default)]
struct Extras {
    /// `RwLock<Option<Sender>>` read per submit (winddown's `Queue::send`).
    rwlock: bool,
    /// A clock read and two `AtomicU64::swap`s per job (the job slot as it
    /// was before #12).
    slot: bool,
    /// With `slot`: no clock read, so two swaps per job (winddown's slot
    /// since #12 numbers jobs instead of dating them: two CASes per job).
    noclock: bool,
    /// `catch_unwind` around the job.
    catch: bool,
    /// A per-worker counter bump and a per-submit `fetch_add`.
    counters: bool,
    /// Rounds of plain arithmetic per job in the worker (no atomics): how
    /// the pool's rate answers a slower consumer alone.
    work: u32,
}

const NONE: Extras = Extras {
    rwlock: false,
    slot: false,
    noclock: false,
    catch: false,
    counters: false,
    work: 0,
};

const PARTS: [(&str, Extras); 9] = [
    (
        "raw+rwlock",
        Extras {
            rwlock: true,
            ..NONE
        },
    ),
    ("raw+slot", Extras { slot: true, ..NONE }),
    (
        "raw+swaps",
        Extras {
            slot: true,
            noclock: true,
            ..NONE
        },
    ),
    (
        "raw+catch",
        Extras {
            catch: true,
            ..NONE
        },
    ),
    (
        "raw+counters",
        Extras {
            counters: true,
            ..NONE
        },
    ),
    ("raw+work20", Extras { work: 20, ..NONE }),
    ("raw+work40", Extras { work: 40, ..NONE }),
    (
        // What a submit path without the lock would leave: the worker's
        // side as today (two swaps, `catch_unwind`, counters).
        "raw+nolock",
        Extras {
            slot: true,
            noclock: true,
            catch: true,
            counters: true,
            ..NONE
        },
    ),
    (
        "raw+all",
        Extras {
            rwlock: true,
            slot: true,
            catch: true,
            counters: true,
            ..NONE
        },
    ),
];

const WORKERS: usize = 2;

/// The raw bounded crossbeam pool: 2 threads on a `Receiver`, the bench
/// thread sends, drops the `Sender`, joins.
fn raw(n: u64, cap: usize, x: Extras) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(cap);
    let tx = RwLock::new(Some(tx));
    let submitted = AtomicU64::new(0);
    let epoch = Instant::now();
    let handles: Vec<_> = (0..WORKERS)
        .map(|i| {
            let rx = rx.clone();
            let slot = Arc::new(AtomicU64::new(0));
            thread::Builder::new()
                .name(format!("bw-{i}"))
                .spawn(move || {
                    let done = AtomicU64::new(0);
                    while let Ok(job) = rx.recv() {
                        if x.slot {
                            let now = if x.noclock {
                                0
                            } else {
                                epoch.elapsed().as_nanos() as u64
                            };
                            black_box(slot.swap(now | 1 << 62, Ordering::AcqRel));
                        }
                        if x.work > 0 {
                            black_box(work(job, x.work));
                        }
                        if x.catch {
                            let _ = black_box(panic::catch_unwind(AssertUnwindSafe(|| {
                                black_box(job);
                            })));
                        } else {
                            black_box(job);
                        }
                        if x.slot {
                            black_box(slot.swap(0, Ordering::AcqRel));
                        }
                        if x.counters {
                            done.store(done.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                        }
                    }
                    black_box(done.load(Ordering::Relaxed));
                })
                .expect("spawn")
        })
        .collect();
    drop(rx);
    let t0 = Instant::now();
    if x.rwlock {
        for i in 0..n {
            let guard = tx.read();
            guard
                .as_ref()
                .expect("open")
                .send(i)
                .expect("workers alive");
            if x.counters {
                submitted.fetch_add(1, Ordering::Relaxed);
            }
        }
    } else {
        let guard = tx.read();
        let s = guard.as_ref().expect("open");
        for i in 0..n {
            s.send(i).expect("workers alive");
            if x.counters {
                submitted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    drop(tx.write().take());
    for h in handles {
        h.join().expect("raw worker");
    }
    let t = t0.elapsed();
    black_box(submitted.load(Ordering::Relaxed));
    t
}

/// How winddown's producer hands the jobs over.
#[derive(Clone, Copy, Debug)]
enum Producer {
    /// `submit` per job.
    Submit,
    /// One `feed` over the range.
    Feed,
    /// `feed_batched` with this many jobs per batch.
    Batched(usize),
}

/// Jobs per batch in `winddown-batch`.
const BATCH: usize = 256;

/// winddown: `submit` per job (or `feed`, or `feed_batched`), drop the
/// submitter, `run()`.
/// `rounds` rounds of plain arithmetic on `job`, the same in every pool.
fn work(job: u64, rounds: u32) -> u64 {
    let mut a = job;
    for i in 0..u64::from(rounds) {
        a = black_box(a.wrapping_mul(31).wrapping_add(i));
    }
    a
}

/// Winddown's pool: `n` jobs through `feed`; each job does `rounds` rounds
/// of [`work`].
fn winddown(n: u64, cap: usize, feed: Producer, rounds: u32) -> Duration {
    let mut rt = Runtime::builder().signals(false).build().expect("runtime");
    let sub = rt
        .pool::<u64>("bw")
        .workers(WORKERS)
        .capacity(cap)
        .start(move |job, _token| {
            if rounds > 0 {
                black_box(work(job, rounds));
            } else {
                black_box(job);
            }
            Ok(())
        })
        .expect("pool");
    let t0 = Instant::now();
    match feed {
        Producer::Feed => {
            let fed = sub.feed(0..n).expect("running");
            assert_eq!(fed, n);
        }
        Producer::Batched(len) => {
            let fed = sub.feed_batched(0..n, len).expect("running");
            assert_eq!(fed, n);
        }
        Producer::Submit => {
            for i in 0..n {
                if sub.submit(i).is_err() {
                    panic!("refused while running");
                }
            }
        }
    }
    drop(sub);
    let report = rt.run();
    let t = t0.elapsed();
    assert_eq!(report.pools[0].succeeded, n, "{report:#}");
    t
}

/// One line of the interleaved run: its name and one timed run.
type Line = (&'static str, Box<dyn Fn() -> Duration>);

/// `WINDDOWN_SUBMIT_INTERLEAVED=<reps>`: instead of criterion, run raw,
/// winddown, winddown-feed and winddown-batch one after another, `reps`
/// rounds per capacity (`WINDDOWN_SUBMIT_JOBS` jobs each, default
/// 200,000), and print medians with their ratio to raw. Interleaving keeps
/// a shared machine's drift out of the ratios; it is the quick run.
/// `WINDDOWN_SUBMIT_ONLY=<impl>` and `WINDDOWN_SUBMIT_CAP=<capacity>` narrow
/// it to one line, for a profiler (`perf record`); `WINDDOWN_SUBMIT_PARTS=1`
/// adds the `parts/*` lines (without the prefix) to the rounds.
fn interleaved(reps: usize) {
    let only = std::env::var("WINDDOWN_SUBMIT_ONLY").ok();
    let only_cap: Option<usize> = std::env::var("WINDDOWN_SUBMIT_CAP")
        .ok()
        .and_then(|s| s.parse().ok());
    let n: u64 = std::env::var("WINDDOWN_SUBMIT_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    // Work per job in every pool (raw, winddown and the parts alike), to
    // compare the pools at a job that is not trivial.
    let w: u32 = std::env::var("WINDDOWN_SUBMIT_JOB_WORK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    println!(
        "== submit, interleaved: ns per job, {n} jobs, {WORKERS} workers, {reps} rounds, {w} rounds of work per job =="
    );
    println!(
        "{:<8} {:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "capacity", "impl", "min", "median", "p99", "Mjobs/s", "/raw"
    );
    for cap in [2 * WORKERS, 1024] {
        if only_cap.is_some_and(|c| c != cap) {
            continue;
        }
        let impls: Vec<Line> = vec![
            (
                "raw",
                Box::new(move || raw(n, cap, Extras { work: w, ..NONE })),
            ),
            (
                "winddown",
                Box::new(move || winddown(n, cap, Producer::Submit, w)),
            ),
            (
                "winddown-feed",
                Box::new(move || winddown(n, cap, Producer::Feed, w)),
            ),
            (
                "winddown-batch",
                Box::new(move || winddown(n, cap, Producer::Batched(BATCH), w)),
            ),
        ];
        let mut impls = impls;
        if std::env::var_os("WINDDOWN_SUBMIT_PARTS").is_some() {
            for (name, x) in PARTS {
                let x = Extras {
                    work: x.work + w,
                    ..x
                };
                impls.push((name, Box::new(move || raw(n, cap, x))));
            }
        }
        let impls: Vec<_> = impls
            .into_iter()
            .filter(|(name, _)| only.as_deref().map_or(true, |o| o == *name))
            .collect();
        if impls.is_empty() {
            continue;
        }
        let mut got: Vec<Vec<Duration>> = vec![Vec::new(); impls.len()];
        for _ in 0..reps {
            for (i, (_, f)) in impls.iter().enumerate() {
                got[i].push(f() / n as u32);
            }
        }
        let stats: Vec<Stats> = got.into_iter().map(Stats::of).collect();
        // Ratios to raw when raw ran, else to the first line.
        let raw_median = stats[0].median.as_secs_f64();
        for ((name, _), s) in impls.iter().zip(&stats) {
            println!(
                "{:<8} {:<16} {:>9} {:>9} {:>9} {:>9.2} {:>8.2}x",
                cap,
                name,
                fmt_d(s.min),
                fmt_d(s.median),
                fmt_d(s.p99),
                1e3 / s.median.as_nanos().max(1) as f64,
                s.median.as_secs_f64() / raw_median,
            );
        }
    }
}

fn main() {
    if let Some(reps) = std::env::var("WINDDOWN_SUBMIT_INTERLEAVED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        interleaved(reps);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let smoke = smoke();
    let n: u64 = if smoke { 10_000 } else { 1_000_000 };
    let samples = support::samples(10);
    let w = 0; // trivial jobs
               // The pool's default capacity (2 × W) and a roomy one.
    let caps = [2 * WORKERS, 1024];
    let mut rows: Vec<(String, String, Stats)> = Vec::new();
    for cap in caps {
        let group = if cap == 2 * WORKERS {
            format!("submit/{WORKERS}")
        } else {
            format!("submit/{WORKERS}/cap{cap}")
        };
        let mut cases: Vec<(String, Box<dyn Fn() -> Duration>)> = vec![
            (
                "raw".into(),
                Box::new(move || raw(n, cap, Extras::default())),
            ),
            (
                "winddown".into(),
                Box::new(move || winddown(n, cap, Producer::Submit, w)),
            ),
            (
                "winddown-feed".into(),
                Box::new(move || winddown(n, cap, Producer::Feed, w)),
            ),
            (
                "winddown-batch".into(),
                Box::new(move || winddown(n, cap, Producer::Batched(BATCH), w)),
            ),
        ];
        for (name, x) in PARTS {
            cases.push((format!("parts/{name}"), Box::new(move || raw(n, cap, x))));
        }
        for (name, f) in cases {
            let mut got = Vec::new();
            let ran = adaptive(&mut c, &group, &name, samples, Some(n), || {
                let t = f();
                got.push(t / n as u32);
                t
            });
            if ran && !got.is_empty() {
                rows.push((group.clone(), name, Stats::of(got)));
            }
        }
    }
    c.final_summary();
    if rows.is_empty() {
        return;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== submit: ns per job, {n} jobs, {WORKERS} workers (all samples) ==\n{:<18} {:<20} {:>4} {:>9} {:>9} {:>9} {:>12} {:>8}",
        "group", "impl", "n", "min", "median", "p99", "Mjobs/s", "/raw"
    );
    let mut csv = String::from("group,impl,n,min_ns,median_ns,p99_ns\n");
    for (group, name, s) in &rows {
        let raw = rows
            .iter()
            .find(|(g, i, _)| g == group && i == "raw")
            .map(|(_, _, s)| s.median);
        let _ = writeln!(
            out,
            "{:<18} {:<20} {:>4} {:>9} {:>9} {:>9} {:>12.2} {:>8}",
            group,
            name,
            s.n,
            fmt_d(s.min),
            fmt_d(s.median),
            fmt_d(s.p99),
            1e3 / s.median.as_nanos().max(1) as f64,
            raw.map_or("-".into(), |r| format!(
                "{:.2}x",
                s.median.as_secs_f64() / r.as_secs_f64()
            )),
        );
        let _ = writeln!(
            csv,
            "{group},{name},{},{},{},{}",
            s.n,
            s.min.as_nanos(),
            s.median.as_nanos(),
            s.p99.as_nanos()
        );
    }
    println!("{out}");
    save("submit.csv", &csv);
}
