//! The rayon pool (feature `rayon`), in-process: threads named and joined
//! in the drain, the per-item stop, handed-back items in input order, the
//! accounting identity, panics and failures counted, `par_map`'s results
//! and remainder, scopes, a stuck item named at the deadline.
//!
//! No test sleeps to synchronise: a stop is requested from inside an item
//! (so it lands at a known point of the input), and blocked items wait on
//! channels.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rayon::prelude::*;
use winddown::{Report, Runtime, ScopeError, StopReason};

/// Only "does not hang".
const HANG: Duration = Duration::from_secs(30);

fn runtime() -> Runtime {
    Runtime::builder().signals(false).build().expect("runtime")
}

fn balanced(report: &Report, name: &str) {
    let p = report
        .pool(name)
        .unwrap_or_else(|| panic!("no pool {name}"));
    assert!(p.is_balanced(), "{p:?}");
}

#[test]
fn rayon_pool_types_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<winddown::RayonPool>();
    both::<winddown::ParOutcome>();
    both::<winddown::Mapped<u32, u64>>();
}

#[test]
fn items_run_on_threads_named_after_the_pool_and_the_run_completes_when_the_handle_is_dropped() {
    let mut rt = runtime();
    let pool = rt.rayon("hash").threads(3).build().unwrap();
    let seen = Mutex::new(HashSet::new());
    let outcome = pool.par_for_each((0..5000u64).collect::<Vec<_>>(), |_, _| {
        let name = std::thread::current().name().map(str::to_owned);
        seen.lock().insert(name.unwrap_or_default());
        Ok(())
    });
    assert_eq!((outcome.items, outcome.succeeded), (5000, 5000));
    assert!(outcome.is_complete());
    let allowed: HashSet<String> = (0..3).map(|i| format!("hash-{i}")).collect();
    let seen = seen.into_inner();
    assert!(!seen.is_empty() && seen.is_subset(&allowed), "{seen:?}");
    drop(pool);
    let started = Instant::now();
    let report = rt.run();
    assert!(started.elapsed() < HANG);
    assert_eq!(report.reason, StopReason::Completed);
    assert!(report.stuck.is_empty(), "{report:#}");
    let p = report.pool("hash").unwrap();
    assert_eq!((p.submitted, p.succeeded, p.workers), (5000, 5000, 3));
    assert_eq!(report.exit_code, 0);
}

#[test]
fn a_build_with_zero_threads_or_a_taken_name_is_refused_and_frees_nothing_else() {
    let mut rt = runtime();
    assert!(matches!(
        rt.rayon("z").threads(0).build(),
        Err(winddown::BuildError::ZeroWorkers { .. })
    ));
    let _first = rt
        .pool::<u32>("taken")
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    assert!(matches!(
        rt.rayon("taken").threads(1).build(),
        Err(winddown::BuildError::DuplicateName(_))
    ));
    // The name `z` was never reserved by the refused build.
    let z = rt.rayon("z").threads(1).build().unwrap();
    drop((z, _first));
    rt.run();
}

#[test]
fn a_stop_mid_call_hands_back_every_unstarted_item_in_input_order() {
    for round in 0..10 {
        let mut rt = runtime();
        let handle = rt.handle();
        let pool = rt.rayon("p").threads(2).build().unwrap();
        let id = pool.id::<u64>();
        let n = 20_000u64;
        let stop_at = 500 + round * 1700;
        let ran = Mutex::new(Vec::new());
        let outcome = pool.par_for_each((0..n).collect::<Vec<_>>(), |x, _| {
            ran.lock().push(x);
            if x == stop_at {
                handle.request("enough");
            }
            Ok(())
        });
        drop(pool);
        let mut report = rt.run();
        let back = report.take_handed_back(id);
        let ran = ran.into_inner();
        assert!(ran.contains(&stop_at));
        assert_eq!(outcome.succeeded as usize, ran.len());
        assert_eq!(outcome.handed_back as usize, back.len());
        assert!(back.windows(2).all(|w| w[0] < w[1]), "input order");
        let ran: HashSet<u64> = ran.into_iter().collect();
        assert!(
            back.iter().all(|x| !ran.contains(x)),
            "an item both ran and came back"
        );
        assert_eq!(ran.len() + back.len(), n as usize, "every item once");
        let p = report.pool("p").unwrap();
        assert_eq!((p.submitted, p.handed_back), (n, back.len() as u64));
        assert_eq!(p.abandoned, 0);
        balanced(&report, "p");
    }
}

#[test]
fn a_range_hands_back_merged_index_ranges_disjoint_from_what_ran() {
    let mut rt = runtime();
    let handle = rt.handle();
    let pool = rt.rayon("r").threads(2).build().unwrap();
    let id = pool.id::<Range<usize>>();
    let ran = Mutex::new(Vec::new());
    let outcome = pool.par_for_each_range(100..50_100, |i, _| {
        ran.lock().push(i);
        if i == 3_000 {
            handle.request("enough");
        }
        Ok(())
    });
    drop(pool);
    let mut report = rt.run();
    let back = report.take_handed_back(id);
    assert!(
        back.windows(2).all(|w| w[0].end < w[1].start),
        "sorted, merged: {back:?}"
    );
    let mut all: Vec<usize> = ran.into_inner();
    let ran_count = all.len();
    all.extend(back.iter().cloned().flatten());
    all.sort_unstable();
    assert_eq!(all, (100..50_100).collect::<Vec<_>>(), "every index once");
    assert_eq!(outcome.handed_back as usize, all.len() - ran_count);
    let p = report.pool("r").unwrap();
    assert_eq!((p.handed_back, p.abandoned), (outcome.handed_back, 0));
    balanced(&report, "r");
}

#[test]
fn par_map_stopping_early_returns_results_with_positions_and_the_remainder() {
    let mut rt = runtime();
    let handle = rt.handle();
    let pool = rt.rayon("m").threads(2).build().unwrap();
    let input: Vec<u64> = (0..30_000).map(|i| i * 3).collect();
    let mapped = pool.par_map(input.clone(), |x, _| {
        if x == 3 * 2_000 {
            handle.request("enough");
        }
        winddown::anyhow::ensure!(x % 7 != 0, "seven");
        Ok(x + 1)
    });
    assert!(!mapped.remainder.is_empty() && !mapped.results.is_empty());
    for &(at, r) in &mapped.results {
        assert_eq!(r, input[at] + 1);
    }
    for &(at, x) in &mapped.remainder {
        assert_eq!(x, input[at]);
    }
    for &at in &mapped.failed {
        assert_eq!(input[at] % 7, 0);
    }
    let mut positions: Vec<usize> = mapped.results.iter().map(|(at, _)| *at).collect();
    positions.extend(&mapped.failed);
    positions.extend(mapped.remainder.iter().map(|(at, _)| *at));
    assert!(mapped.remainder.windows(2).all(|w| w[0].0 < w[1].0));
    positions.sort_unstable();
    assert_eq!(
        positions,
        (0..input.len()).collect::<Vec<_>>(),
        "nothing dropped"
    );
    let o = mapped.outcome;
    assert_eq!(o.handed_back as usize, mapped.remainder.len());
    assert_eq!(o.failed as usize, mapped.failed.len());
    drop(pool);
    let report = rt.run();
    let p = report.pool("m").unwrap();
    assert_eq!(p.handed_back as usize, mapped.remainder.len());
    assert_eq!(p.failed as usize, mapped.failed.len());
    assert_eq!(p.abandoned, 0);
    balanced(&report, "m");
}

/// Positions are not carried with the items but computed from what each
/// leaf has left; a chained input makes rayon feed one folder from two
/// iterators in turn (`Chain`'s producer folds `a`, then `b`), so a
/// position that restarted at each iterator would show here — in the
/// results, the failures and the remainder — with and without a stop.
#[test]
fn a_chained_input_keeps_every_position_across_the_iterators_of_one_piece() {
    let mut cut_some = false;
    for stop_at in [None, Some(1_500u64), Some(2_900)] {
        let mut rt = runtime();
        let handle = rt.handle();
        let pool = rt.rayon("chain").threads(2).build().unwrap();
        let (a, b): (Vec<u64>, Vec<u64>) = ((0..1_000).collect(), (1_000..3_000).collect());
        // `with_min_len` drives the chain through its producer, which
        // folds both halves into one folder where a leaf straddles them
        // (a plain `chain` splits the consumer at the junction instead).
        let input = a.clone().into_par_iter().chain(b.clone()).with_min_len(1);
        let mapped = pool.par_map(input, |x, _| {
            if Some(x) == stop_at {
                handle.request("enough");
            }
            winddown::anyhow::ensure!(x % 11 != 5, "eleven");
            Ok(x * 2)
        });
        // The value of the item at position `at` is `at` itself.
        for &(at, r) in &mapped.results {
            assert_eq!(r, at as u64 * 2, "a result at the wrong position");
        }
        for &(at, x) in &mapped.remainder {
            assert_eq!(x, at as u64, "a handed-back item at the wrong position");
        }
        for &at in &mapped.failed {
            assert_eq!(at % 11, 5, "a failure at the wrong position");
        }
        let mut positions: Vec<usize> = mapped.results.iter().map(|(at, _)| *at).collect();
        positions.extend(&mapped.failed);
        positions.extend(mapped.remainder.iter().map(|(at, _)| *at));
        positions.sort_unstable();
        assert_eq!(positions, (0..3_000).collect::<Vec<_>>(), "nothing dropped");
        cut_some |= !mapped.remainder.is_empty();
        if stop_at.is_none() {
            assert!(mapped.outcome.is_complete() && mapped.remainder.is_empty());
            assert_eq!(
                mapped.failed.len(),
                (0..3_000).filter(|i| i % 11 == 5).count()
            );
        }
        drop(pool);
        let report = rt.run();
        balanced(&report, "chain");
    }
    assert!(
        cut_some,
        "no stop handed anything back: the remainder's positions went unchecked"
    );
}

#[test]
fn panics_and_errors_in_items_are_caught_counted_and_make_the_exit_code_one() {
    let mut rt = runtime();
    let pool = rt.rayon("e").threads(2).build().unwrap();
    let outcome = pool.par_for_each((1..=700u32).collect::<Vec<_>>(), |n, _| {
        assert!(n % 7 != 0, "injected panic {n}");
        winddown::anyhow::ensure!(n % 5 != 0, "injected failure {n}");
        Ok(())
    });
    assert_eq!(outcome.panicked, 100);
    assert_eq!(outcome.failed, 140 - 20); // multiples of 5, less those of 35
    assert_eq!(outcome.succeeded, 700 - 100 - 120);
    drop(pool);
    let report = rt.run();
    let p = report.pool("e").unwrap();
    assert_eq!((p.panicked, p.failed), (100, 120));
    assert_eq!(p.errors.len(), 8, "the first eight are kept");
    assert_eq!(report.exit_code, 1);
    balanced(&report, "e");
}

#[test]
fn fail_fast_stops_the_run_at_the_first_failure_and_hands_back_the_rest() {
    let mut rt = runtime();
    let pool = rt.rayon("ff").threads(2).fail_fast(true).build().unwrap();
    let outcome = pool.par_for_each_range(0..100_000, |i, _| {
        winddown::anyhow::ensure!(i != 10, "ten");
        Ok(())
    });
    assert!(
        outcome.failed >= 1 && outcome.handed_back > 0,
        "{outcome:?}"
    );
    drop(pool);
    let report = rt.run();
    assert!(matches!(report.reason, StopReason::JobFailed { ref pool, .. } if pool == "ff"));
    let p = report.pool("ff").unwrap();
    assert_eq!((p.handed_back, p.abandoned), (outcome.handed_back, 0));
    balanced(&report, "ff");
}

#[test]
fn a_pool_built_after_the_stop_starts_stopped_and_hands_everything_back() {
    let mut rt = runtime();
    rt.handle().request("before");
    let pool = rt.rayon("late").threads(2).build().unwrap();
    let id = pool.id::<String>();
    let ran = AtomicBool::new(false);
    let items: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let outcome = pool.par_for_each(items.clone(), |_, _| {
        ran.store(true, Ordering::Relaxed);
        Ok(())
    });
    assert!(!ran.load(Ordering::Relaxed));
    assert_eq!(outcome.handed_back, 50);
    assert_eq!(pool.scope(|_, _| ()), Err(ScopeError::Stopped));
    drop(pool);
    let mut report = rt.run();
    assert_eq!(report.take_handed_back(id), items);
    let p = report.pool("late").unwrap();
    assert_eq!((p.submitted, p.handed_back), (51, 51));
    balanced(&report, "late");
}

#[test]
fn a_scope_runs_its_tasks_and_a_panic_in_one_is_caught_and_counted() {
    let mut rt = runtime();
    let pool = rt.rayon("s").threads(2).build().unwrap();
    let hits = Mutex::new(0);
    let r = pool.scope(|s, _| {
        for _ in 0..10 {
            s.spawn(|_| *hits.lock() += 1);
        }
        7
    });
    assert_eq!(r, Ok(7));
    assert_eq!(*hits.lock(), 10);
    let r = pool.scope(|s, _| s.spawn(|_| panic!("task boom")));
    assert_eq!(r, Err(ScopeError::Panicked("task boom".into())));
    drop(pool);
    let report = rt.run();
    let p = report.pool("s").unwrap();
    assert_eq!((p.submitted, p.succeeded, p.panicked), (2, 1, 1));
    balanced(&report, "s");
}

#[test]
fn an_item_deaf_to_every_token_is_named_stuck_and_its_piece_abandoned_by_the_deadline() {
    let mut rt = Runtime::builder()
        .signals(false)
        .grace(Duration::from_millis(100))
        .kill_grace(Duration::from_millis(100))
        .build()
        .unwrap();
    let pool = Arc::new(rt.rayon("deaf").threads(2).build().unwrap());
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let (began_tx, began_rx) = crossbeam_channel::bounded::<()>(1);
    let caller = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            pool.par_for_each_range(0..1000, |i, _| {
                if i == 0 {
                    let _ = began_tx.send(());
                    // Deaf to the tokens, like a blocking system call.
                    let _ = release_rx.recv();
                }
                Ok(())
            })
        })
    };
    began_rx.recv().unwrap();
    rt.handle().request("stop");
    let started = Instant::now();
    let report = rt.run();
    assert!(started.elapsed() < HANG);
    assert!(report.hard_stopped());
    assert!(
        report
            .stuck
            .iter()
            .any(|s| s.thread.starts_with("deaf-") && s.pool.as_deref() == Some("deaf")),
        "{report:#}"
    );
    let p = report.pool("deaf").unwrap();
    assert!(p.abandoned >= 1, "{p:?}");
    balanced(&report, "deaf");
    assert_eq!(report.exit_code, 1);
    // Let the thread go, so the test leaves nothing running.
    drop(release_tx);
    let outcome = caller.join().unwrap();
    assert_eq!(outcome.items, 1000);
}

#[test]
fn an_item_that_watches_the_hard_token_returns_at_the_deadline_and_nothing_is_stuck() {
    let mut rt = Runtime::builder()
        .signals(false)
        .grace(Duration::from_millis(100))
        .kill_grace(Duration::from_secs(20))
        .build()
        .unwrap();
    let handle = rt.handle();
    let pool = rt.rayon("coop").threads(2).build().unwrap();
    rt.spawn("caller", move |_| {
        let outcome = pool.par_for_each_range(0..100, |i, token| {
            if i == 0 {
                handle.request("stop");
                token.wait_hard();
            }
            Ok(())
        });
        assert_eq!(outcome.items, 100);
        Ok(())
    })
    .unwrap();
    let started = Instant::now();
    let report = rt.run();
    assert!(started.elapsed() < HANG);
    assert!(report.hard_stopped());
    assert!(report.stuck.is_empty(), "{report:#}");
    let p = report.pool("coop").unwrap();
    assert_eq!(p.abandoned, 0);
    assert!(p.succeeded >= 1);
    balanced(&report, "coop");
}

#[test]
fn live_counts_are_listed_by_the_handle() {
    let mut rt = runtime();
    let pool = rt.rayon("live").threads(2).build().unwrap();
    pool.par_for_each_range(0..1000, |_, _| Ok(()));
    let stats = rt.handle().pool_stats("live").expect("listed");
    assert_eq!(
        (stats.workers, stats.submitted, stats.succeeded),
        (2, 1000, 1000)
    );
    drop(pool);
    rt.run();
}
