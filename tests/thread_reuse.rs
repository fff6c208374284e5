//! Thread reuse (`winddown::reuse_threads`, issue 12 point 5): with it on,
//! the next runtime's threads of the same name and stack size run on the
//! parked threads of the last one; names stay exact, accounting is intact,
//! a full cache or another name gets a new thread, and the parked threads
//! exit when reuse is turned off or their keep-alive passes.
//!
//! The cache is process-wide, so every test takes `SERIAL` and uses its own
//! thread names.

mod common_api;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use common_api::{assert_balanced, rt, threads_named, threads_named_after_exit};
use parking_lot::Mutex;
use winddown::{reuse_threads, StopReason, ThreadOutcome};

static SERIAL: Mutex<()> = Mutex::new(());

const KEEP: Duration = Duration::from_secs(60);

/// Runs one runtime with a pool `name` of `workers` workers doing `jobs`
/// jobs; returns the (thread name, id) of every worker.
fn run_pool(name: &str, workers: usize, jobs: u32) -> HashSet<(String, ThreadId)> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut rt = rt().build().unwrap();
    let init_seen = seen.clone();
    let pool = rt
        .pool::<u32>(name)
        .workers(workers)
        .start_with(
            move |_index| {
                let t = std::thread::current();
                init_seen
                    .lock()
                    .insert((t.name().unwrap_or("?").to_owned(), t.id()));
                Ok(0u32)
            },
            |done, _job, _token| {
                *done += 1;
                Ok(())
            },
        )
        .unwrap();
    for j in 0..jobs {
        pool.submit(j).expect("running");
    }
    drop(pool);
    let report = rt.run();
    assert_eq!(report.reason, StopReason::Completed, "{report:#}");
    assert_eq!(report.pools[0].succeeded, u64::from(jobs), "{report:#}");
    assert_balanced(&report);
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), workers, "every worker ran its init");
    seen
}

fn ids(set: &HashSet<(String, ThreadId)>) -> HashSet<ThreadId> {
    set.iter().map(|(_, id)| *id).collect()
}

#[test]
fn the_next_runtime_runs_on_the_same_threads_under_the_same_names() {
    let _serial = SERIAL.lock();
    reuse_threads(64, KEEP);
    let first = run_pool("ra", 3, 50);
    let second = run_pool("ra", 3, 50);
    let names: BTreeSet<_> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ra-0", "ra-1", "ra-2"].into(), "names stay exact");
    assert_eq!(first, second, "the same threads, each under its own name");
    assert_eq!(threads_named("ra-"), 3, "parked between runs");
    reuse_threads(0, Duration::ZERO);
    assert_eq!(threads_named_after_exit("ra-"), 0, "off: the parked exit");
}

#[test]
fn without_reuse_every_runtime_gets_new_threads() {
    let _serial = SERIAL.lock();
    reuse_threads(0, Duration::ZERO);
    let first = run_pool("rb", 2, 10);
    let second = run_pool("rb", 2, 10);
    assert!(
        ids(&first).is_disjoint(&ids(&second)),
        "{first:?} {second:?}"
    );
    assert_eq!(threads_named_after_exit("rb-"), 0, "joined and gone");
}

#[test]
fn another_name_or_a_full_cache_gets_a_new_thread() {
    let _serial = SERIAL.lock();
    reuse_threads(1, KEEP);
    let first = run_pool("rc", 2, 10);
    // Room for one: one of the two parked, the other exited.
    assert_eq!(threads_named_after_exit_but("rc-", 1), 1);
    let other = run_pool("rd", 1, 1);
    assert!(ids(&first).is_disjoint(&ids(&other)), "another name");
    let second = run_pool("rc", 2, 10);
    assert_eq!(
        ids(&first).intersection(&ids(&second)).count(),
        1,
        "one reused, one new: {first:?} {second:?}"
    );
    reuse_threads(0, Duration::ZERO);
    assert_eq!(threads_named_after_exit("rc-"), 0);
    assert_eq!(threads_named_after_exit("rd-"), 0);
}

#[test]
fn parked_threads_exit_when_their_keep_alive_passes() {
    let _serial = SERIAL.lock();
    reuse_threads(64, Duration::from_millis(20));
    run_pool("re", 2, 1);
    assert_eq!(threads_named_after_exit("re-"), 0, "keep-alive over");
    reuse_threads(0, Duration::ZERO);
}

#[test]
fn a_reused_thread_reports_failures_and_panics_of_its_new_body() {
    let _serial = SERIAL.lock();
    reuse_threads(64, KEEP);
    let ids = Arc::new(Mutex::new(Vec::new()));
    for round in 0..3 {
        let mut rt = rt().build().unwrap();
        let seen = ids.clone();
        rt.spawn("rf-bg", move |_token| {
            seen.lock().push(std::thread::current().id());
            match round {
                0 => Ok(()),
                1 => anyhow::bail!("round one fails"),
                _ => panic!("round two panics"),
            }
        })
        .unwrap();
        let report = rt.run();
        let outcome = &report.threads[0].outcome;
        match round {
            0 => assert_eq!(*outcome, ThreadOutcome::Returned, "{report:#}"),
            1 => assert_eq!(
                *outcome,
                ThreadOutcome::Failed("round one fails".into()),
                "{report:#}"
            ),
            _ => assert_eq!(
                *outcome,
                ThreadOutcome::Panicked("round two panics".into()),
                "{report:#}"
            ),
        }
    }
    let ids = ids.lock();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one thread for all: {ids:?}"
    );
    reuse_threads(0, Duration::ZERO);
    assert_eq!(threads_named_after_exit("rf-bg"), 0);
}

/// Like `threads_named_after_exit`, but waits until at most `keep` remain.
fn threads_named_after_exit_but(prefix: &str, keep: usize) -> usize {
    let deadline = std::time::Instant::now() + common_api::HANG;
    loop {
        let n = threads_named(prefix);
        if n <= keep || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
