//! `drain/idle/W` and `drain/busy/W/unit`: trigger → every job finished and
//! every thread out of its loop (drain latency) → every thread joined
//! (return latency), for winddown, the hand-written floor and the idioms a
//! user would otherwise write, in one binary and one run. Scenarios and
//! defaults: `benches/README.md`.
//!
//! `drain/idle-reuse/W` runs winddown with `winddown::reuse_threads` on (its
//! threads park between runs and run the next runtime's workers) against the
//! same floor. `measure/idle/W` is the in-process API (`winddown::Measure`)
//! driven by criterion's `iter_custom`, as a program would bench its own
//! shutdown.
//!
//! Criterion times the return latency (the drain latency where a pool cannot
//! join); the table printed at the end has both, with medians, p99s and the
//! ratios to the floor, and is saved as `target/winddown-bench/drain.csv`.

mod support;

use std::time::Duration;

use criterion::Criterion;
use support::{adaptive, impls, ratio_table, run_once, save, smoke, table, Case, Record};

/// The small stack of the `drain/idle-stack128k/W` scenario.
const STACK: usize = 128 * 1024;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let smoke = smoke();
    let idle_ws: &[usize] = if smoke {
        &[1, 2]
    } else {
        &[1, 2, 8, 64, 256, 1024]
    };
    let busy_ws: &[usize] = if smoke { &[1] } else { &[1, 8, 64] };
    let units: &[u64] = if smoke { &[1] } else { &[1, 10] };
    let samples = support::samples(if smoke { 10 } else { 30 });
    let impls = impls();
    let mut records = Vec::new();

    for &w in idle_ws {
        for &imp in &impls {
            // rayon takes ~4 s per iteration at 1024 threads (its pool's
            // start and drop): the minimum of 10 samples there.
            let samples = if imp == support::Impl::Rayon && w >= 1024 {
                10
            } else {
                samples
            };
            bench(
                &mut c,
                &format!("drain/idle/{w}"),
                Case::idle(w),
                imp,
                samples,
                &mut records,
            );
        }
    }
    for &w in busy_ws {
        for &unit in units {
            let case = Case {
                busy: Some(Duration::from_millis(unit)),
                ..Case::idle(w)
            };
            // A 64 × 10 ms iteration keeps both cores busy for ~0.3 s.
            let samples = if w * unit as usize >= 256 {
                10
            } else {
                samples
            };
            for &imp in &impls {
                let group = format!("drain/busy/{w}/{unit}ms");
                bench(&mut c, &group, case, imp, samples, &mut records);
            }
        }
    }
    // Smaller stacks (the pool's `stack_size` option), winddown and the
    // floor alike, at the worker counts where thread teardown dominates.
    let stack_ws: &[usize] = if smoke { &[2] } else { &[64, 256, 1024] };
    for &w in stack_ws {
        let case = Case {
            stack: Some(STACK),
            ..Case::idle(w)
        };
        for imp in [support::Impl::Winddown, support::Impl::Floor] {
            if impls.contains(&imp) {
                let group = format!("drain/idle-stack{}k/{w}", STACK / 1024);
                bench(&mut c, &group, case, imp, samples, &mut records);
            }
        }
    }
    // Thread reuse (issue 12): winddown's stops skip the kernel's thread
    // teardown; the floor is unchanged. Default stacks only (the bench
    // counts the parked threads by name).
    let reuse_ws: &[usize] = if smoke { &[2] } else { &[2, 64, 1024] };
    support::reuse_threads(true);
    for &w in reuse_ws {
        for imp in [support::Impl::Winddown, support::Impl::Floor] {
            if impls.contains(&imp) {
                let group = format!("drain/idle-reuse/{w}");
                bench(&mut c, &group, Case::idle(w), imp, samples, &mut records);
            }
        }
    }
    support::reuse_threads(false);
    // The measurement API under criterion: return latency of an idle pool,
    // triggered as soon as `run` begins (no wait for the workers to park).
    for &w in if smoke { &[2][..] } else { &[2, 64][..] } {
        measure_group(&mut c, w, samples);
    }
    c.final_summary();

    if !records.is_empty() {
        println!("\n== drain: all samples (pilot and warm-up included) ==");
        println!("{}", table(&records));
        println!("== winddown against the floor (median ratios; budget: issue 3) ==");
        println!("{}", ratio_table(&records));
        save("drain.csv", &support::csv(&records));
    }
}

fn measure_group(c: &mut Criterion, workers: usize, samples: usize) {
    let mut g = c.benchmark_group("measure/idle");
    g.sample_size(samples.max(10));
    g.bench_function(format!("{workers}"), |b| {
        b.iter_custom(|iters| {
            let m = winddown::Measure::new(iters as usize)
                .run(|_| {
                    let mut rt = winddown::Runtime::builder().signals(false).build()?;
                    let jobs = rt
                        .pool::<u64>(support::PREFIX)
                        .workers(workers)
                        .start(|_, _| Ok(()))?;
                    Ok::<_, anyhow::Error>(winddown::Trial::new(rt).keep(jobs))
                })
                .expect("measured");
            m.total_return_latency()
        })
    });
    g.finish();
}

fn bench(
    c: &mut Criterion,
    group: &str,
    case: Case,
    imp: support::Impl,
    samples: usize,
    records: &mut Vec<Record>,
) {
    let mut got = Vec::new();
    let ran = adaptive(c, group, imp.name(), samples, None, || {
        let s = run_once(imp, &case);
        got.push(s);
        s.timed()
    });
    if ran && !got.is_empty() {
        records.push(Record {
            scenario: case.scenario(),
            workers: case.workers,
            imp,
            samples: got,
        });
    }
}
