//! `drain/signal/W`: `drain/idle/W` triggered by a real signal to the own
//! process. winddown gets SIGTERM through its ctrlc path (each iteration
//! builds a runtime with `.signals(true)`, which registers with the
//! process-wide handler installed by the first one); the floor gets SIGUSR1
//! through a `sigwait` thread, the shortest signal → drain path there is.
//! `winddown-request` is the same runtime stopped by `Handle::request`, for
//! the cost of the signal path itself. Scenarios: `benches/README.md`.
//!
//! A SIGTERM with no runtime live makes winddown exit the process with 130,
//! so the signal is only ever sent between `build` and `run` returning.

mod support;

use criterion::Criterion;
use support::{adaptive, ratio_table, run_once, save, smoke, table, Case, Impl, Record, Trigger};

fn main() {
    // Before any thread exists, so that every thread inherits the mask.
    support::block_sigusr1();
    let mut c = Criterion::default().configure_from_args();
    let smoke = smoke();
    let ws: &[usize] = if smoke {
        &[1, 2]
    } else {
        &[1, 2, 8, 64, 256, 1024]
    };
    let samples = support::samples(if smoke { 10 } else { 30 });
    let mut records = Vec::new();
    for &w in ws {
        let group = format!("drain/signal/{w}");
        let signal = Case {
            trigger: Trigger::Signal,
            ..Case::idle(w)
        };
        let runs = [
            ("winddown", Impl::Winddown, signal),
            ("floor", Impl::Floor, signal),
            ("floor-done", Impl::FloorDone, signal),
            ("winddown-request", Impl::Winddown, Case::idle(w)),
        ];
        for (name, imp, case) in runs {
            let mut got = Vec::new();
            let ran = adaptive(&mut c, &group, name, samples, None, || {
                let s = run_once(imp, &case);
                got.push(s);
                s.timed()
            });
            if ran && !got.is_empty() {
                records.push(Record {
                    scenario: case.scenario(),
                    workers: w,
                    imp,
                    samples: got,
                });
            }
        }
    }
    c.final_summary();
    if !records.is_empty() {
        // The request rows are labelled `idle`: the same runtime, stopped in
        // process, measured in this run; compare them with the `signal`
        // rows for the cost of the signal path.
        println!("\n== signal: all samples (pilot and warm-up included) ==");
        println!("{}", table(&records));
        println!("== winddown against the floor (median ratios) ==");
        println!("{}", ratio_table(&records));
        save("signal.csv", &support::csv(&records));
    }
}
