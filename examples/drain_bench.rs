//! Measures drain and return latency on your machine: winddown against the
//! hand-written floor (and, with `--impls`, the other idioms), side by side.
//!
//! ```text
//! cargo run --release --example drain_bench -- --workers 1,8,64,256 --reps 200
//! cargo run --release --example drain_bench -- --workers 64 --busy-ms 1 --impls all
//! ```
//!
//! * **drain latency** — trigger → every job finished and every thread out of
//!   its loop, as the pool itself learns it (winddown: `Report::timings`'s
//!   `drain_latency`; the floor has no earlier signal than its joins);
//! * **return latency** — trigger → every thread joined (winddown: `run`
//!   returned).
//!
//! With `--busy-ms`, every worker is inside a job of that length at the
//! trigger and both figures count from the end of the last job. The
//! implementations run interleaved, rep by rep, so drift on a shared machine
//! hits them alike. The scenarios are those of `benches/drain.rs`; see
//! `benches/README.md` and `BENCHMARKS.md`.

#[path = "../benches/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use support::{ratio_table, run_once, table, Case, Impl, Record};

/// Drain and return latency (median, p99) of winddown against the floor,
/// side by side.
#[derive(Debug, Parser)]
struct Args {
    /// Worker counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    workers: Vec<usize>,
    /// Repetitions per worker count and implementation.
    #[arg(long, default_value_t = 200)]
    reps: usize,
    /// Make every worker busy in a job of this many milliseconds at the
    /// trigger (default: idle pools).
    #[arg(long)]
    busy_ms: Option<u64>,
    /// Worker stack size in KiB for every pool (default: each pool's own).
    #[arg(long)]
    stack_kib: Option<usize>,
    /// Reuse winddown's threads from one run to the next
    /// (`winddown::reuse_threads`): its stops then skip the kernel's thread
    /// teardown. The floor and the others are unchanged.
    #[arg(long)]
    reuse_threads: bool,
    /// Implementations, comma-separated, or `all`: winddown, floor,
    /// floor-done, poll-10ms, mpsc-mutex, threadpool, rayon.
    #[arg(long, value_delimiter = ',', default_value = "winddown,floor")]
    impls: Vec<String>,
    /// Also write the samples' statistics as CSV to this file.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let impls: Vec<Impl> = if args.impls.iter().any(|s| s == "all") {
        Impl::ALL.to_vec()
    } else {
        let mut v = Vec::new();
        for s in &args.impls {
            match Impl::parse(s.trim()) {
                Some(i) => v.push(i),
                None => {
                    eprintln!("unknown implementation {s:?}; see --help");
                    return ExitCode::from(2);
                }
            }
        }
        v
    };
    if args.reps == 0 || args.workers.contains(&0) || impls.is_empty() {
        eprintln!("--reps, every --workers value and --impls must be non-empty / non-zero");
        return ExitCode::from(2);
    }
    if args.reuse_threads && args.stack_kib.is_some() {
        eprintln!("--reuse-threads and --stack-kib do not combine (the bench counts parked threads by name)");
        return ExitCode::from(2);
    }
    support::reuse_threads(args.reuse_threads);
    let mut records = Vec::new();
    for &w in &args.workers {
        let case = Case {
            busy: args.busy_ms.map(Duration::from_millis),
            stack: args.stack_kib.map(|k| k * 1024),
            ..Case::idle(w)
        };
        eprint!("W = {w:>5}: ");
        let mut samples: Vec<Vec<_>> = vec![Vec::with_capacity(args.reps); impls.len()];
        // One warm-up cycle each, not recorded.
        for &imp in &impls {
            run_once(imp, &case);
        }
        for rep in 0..args.reps {
            // Rotate the order so no implementation always goes first.
            for k in 0..impls.len() {
                let i = (k + rep) % impls.len();
                samples[i].push(run_once(impls[i], &case));
            }
            if rep % (args.reps / 10).max(1) == 0 {
                eprint!(".");
            }
        }
        eprintln!();
        for (imp, samples) in impls.iter().zip(samples) {
            records.push(Record {
                scenario: case.scenario(),
                workers: w,
                imp: *imp,
                samples,
            });
        }
    }
    println!(
        "drain and return latency, {} reps, {} CPUs\n",
        args.reps,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("{}", table(&records));
    if impls.contains(&Impl::Winddown) && impls.contains(&Impl::Floor) {
        println!("winddown against the floor (medians):\n");
        println!("{}", ratio_table(&records));
    }
    if let Some(path) = &args.csv {
        if let Err(e) = std::fs::write(path, support::csv(&records)) {
            eprintln!("could not write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
