//! The batched feed (issue 12, point 3): `submit_batch` and `feed_batched`
//! move many jobs per channel entry, and every job is still accounted for
//! one by one — run once, handed back in order, or abandoned — including
//! the rest of a batch a worker holds when the stop comes. A refused batch
//! comes back to its caller whole. No sleeps: the tests hold jobs with
//! gates and learn where a worker is from channels.

mod common_api;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common_api::{assert_balanced, rt, Gate, HANG};
use winddown::{DrainPolicy, SubmitTimeoutError, TrySubmitError};

/// How often each job id's function ran; a second run panics the test.
struct Ledger(Vec<AtomicU8>);

impl Ledger {
    fn new(n: usize) -> Arc<Ledger> {
        Arc::new(Ledger((0..n).map(|_| AtomicU8::new(0)).collect()))
    }

    fn ran(&self, id: u32) {
        let before = self.0[id as usize].fetch_add(1, Ordering::Relaxed);
        assert_eq!(before, 0, "job {id} ran twice");
    }

    fn ran_ids(&self) -> Vec<u32> {
        (0..self.0.len() as u32)
            .filter(|&i| self.0[i as usize].load(Ordering::Relaxed) > 0)
            .collect()
    }
}

#[test]
fn a_batch_runs_every_job_once_with_errors_and_panics_counted_per_job() {
    let n = 5_000u32;
    let ledger = Ledger::new(n as usize);
    let mut runtime = rt().build().unwrap();
    let l = ledger.clone();
    let pool = runtime
        .pool::<u32>("b")
        .workers(2)
        .capacity(2)
        .start(move |id, _| {
            l.ran(id);
            if id % 97 == 0 {
                panic!("planned panic {id}");
            }
            anyhow::ensure!(id % 13 != 0, "planned failure {id}");
            Ok(())
        })
        .unwrap();
    // Batches of every size from 1 up, then the rest through feed_batched.
    let mut next = 0u32;
    for len in 1..=40u32 {
        pool.submit_batch((next..next + len).collect()).unwrap();
        next += len;
    }
    assert_eq!(pool.feed_batched(next..n, 64).unwrap(), u64::from(n - next));
    drop(pool);
    let report = runtime.run();
    let p = &report.pools[0];
    let panicked = (0..n).filter(|i| i % 97 == 0).count() as u64;
    let failed = (0..n).filter(|i| i % 97 != 0 && i % 13 == 0).count() as u64;
    assert_eq!(p.submitted, u64::from(n), "{report:#}");
    assert_eq!((p.panicked, p.failed), (panicked, failed), "{report:#}");
    assert_eq!(p.succeeded, u64::from(n) - panicked - failed);
    assert_eq!(ledger.ran_ids().len(), n as usize);
    assert_balanced(&report);
}

#[test]
fn a_batch_submitted_to_a_closed_pool_comes_back_whole() {
    let mut runtime = rt().build().unwrap();
    let pool = runtime.pool::<u32>("c").start(|_, _| Ok(())).unwrap();
    pool.close();
    assert_eq!(pool.submit_batch(vec![1, 2, 3]).unwrap_err().0, [1, 2, 3]);
    assert_eq!(
        pool.try_submit_batch(vec![4, 5]).unwrap_err(),
        TrySubmitError::Stopped(vec![4, 5])
    );
    assert_eq!(
        pool.submit_batch_timeout(vec![6], HANG).unwrap_err(),
        SubmitTimeoutError::Stopped(vec![6])
    );
    assert!(
        pool.submit_batch(Vec::new()).is_err(),
        "closed, even if empty"
    );
    let err = pool.feed_batched(0..10, 4).unwrap_err();
    assert_eq!((err.submitted, err.job.clone()), (0, vec![0, 1, 2, 3]));
    assert_eq!(
        err.into_unsubmitted_jobs().collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    drop(pool);
    let report = runtime.run();
    assert_eq!(report.pools[0].submitted, 0, "{report:#}");
}

#[test]
fn a_full_queue_refuses_a_batch_whole_and_a_blocked_one_is_released_by_the_stop() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (started_tx, started) = crossbeam_channel::unbounded();
    let g = gate.clone();
    let pool = runtime
        .pool::<u32>("full")
        .workers(1)
        .capacity(1)
        .drain(DrainPolicy::HandBack)
        .start(move |id, _| {
            started_tx.send(id).unwrap();
            g.wait();
            Ok(())
        })
        .unwrap();
    pool.submit_batch(vec![0, 1]).unwrap();
    assert_eq!(started.recv_timeout(HANG), Ok(0)); // the worker holds 0, 1
    pool.submit_batch(vec![2, 3, 4]).unwrap(); // the one place in the queue
    assert_eq!(
        pool.try_submit_batch(vec![5, 6]).unwrap_err(),
        TrySubmitError::Full(vec![5, 6])
    );
    assert_eq!(
        pool.submit_batch_timeout(vec![7], Duration::from_millis(20))
            .unwrap_err(),
        SubmitTimeoutError::Timeout(vec![7])
    );
    let blocked = {
        let s = pool.submitter();
        std::thread::spawn(move || s.submit_batch(vec![8, 9]))
    };
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.in_flight), (3, 1), "{stats:?}");
    let handle = runtime.handle();
    let id = pool.id();
    drop(pool);
    handle.request("stop");
    let refused = blocked.join().unwrap().unwrap_err();
    assert_eq!(refused.into_inner(), [8, 9]);
    gate.open();
    let mut report = runtime.run();
    let p = report.pools[0].clone();
    assert_eq!((p.submitted, p.succeeded), (5, 1), "{report:#}");
    // The rest of the worker's batch (1), then the queued batch, in order.
    assert_eq!(report.take_handed_back(id), [1, 2, 3, 4]);
    assert_balanced(&report);
}

#[test]
fn under_hand_back_a_worker_finishes_its_job_and_hands_back_the_rest_of_its_batch() {
    for keyed in [false, true] {
        let mut runtime = rt().build().unwrap();
        let gate = Gate::new();
        let (started_tx, started) = crossbeam_channel::unbounded();
        let g = gate.clone();
        let builder = runtime
            .pool::<u32>("hb")
            .workers(1)
            .drain(DrainPolicy::HandBack);
        let builder = if keyed { builder.key(|n| *n) } else { builder };
        let pool = builder
            .start(move |id, _| {
                started_tx.send(id).unwrap();
                if id == 3 {
                    g.wait();
                }
                Ok(())
            })
            .unwrap();
        let id = pool.id();
        let kept = pool.submitter(); // reads the final counts after the run
        pool.submit_batch((0..10).collect()).unwrap();
        for want in 0..=3 {
            assert_eq!(started.recv_timeout(HANG), Ok(want));
        }
        runtime.handle().request("stop");
        gate.open();
        drop(pool);
        let mut report = runtime.run();
        let p = report.pools[0].clone();
        assert_eq!(
            (p.succeeded, p.handed_back),
            (4, 6),
            "keyed {keyed}: {report:#}"
        );
        assert_eq!(report.take_handed_back(id), (4..10).collect::<Vec<_>>());
        if keyed {
            assert_eq!(p.handed_back_keys, ["4", "5", "6", "7", "8", "9"]);
        }
        let last = kept.stats();
        assert_eq!(
            (
                last.queued,
                last.in_flight,
                last.succeeded,
                last.handed_back
            ),
            (0, 0, 4, 6),
            "{last:?}"
        );
        assert_balanced(&report);
    }
}

#[test]
fn past_the_deadline_the_rest_of_a_stuck_worker_s_batch_is_abandoned_not_lost() {
    // The stuck job first, in the middle and last of its batch: the jobs
    // before it returned `Ok` before the stop (without a key function the
    // worker ran on past them with no CAS, and the seal reads how far it
    // got), so they count as succeeded; the stuck one and the rest of the
    // batch are abandoned.
    for stuck_at in [0, 2, 7] {
        for keyed in [false, true] {
            let mut runtime = rt()
                .grace(Duration::from_millis(100))
                .kill_grace(Duration::from_millis(50))
                .build()
                .unwrap();
            let stuck = Gate::new();
            let (started_tx, started) = crossbeam_channel::unbounded();
            let g = stuck.clone();
            let builder = runtime.pool::<u32>("st").workers(1);
            let builder = if keyed { builder.key(|n| *n) } else { builder };
            let pool = builder
                .start(move |id, _| {
                    started_tx.send(id).unwrap();
                    if id == stuck_at {
                        g.wait(); // ignores every token
                    }
                    Ok(())
                })
                .unwrap();
            let id = pool.id();
            let kept = pool.submitter();
            pool.submit_batch((0..8).collect()).unwrap();
            pool.submit_batch((8..12).collect()).unwrap(); // queued
            for want in 0..=stuck_at {
                assert_eq!(started.recv_timeout(HANG), Ok(want));
            }
            runtime.handle().request("stop");
            drop(pool);
            let mut report = runtime.run();
            stuck.open(); // the detached worker ends; it records nothing more
            let p = report.pools[0].clone();
            let ctx = format!("stuck at {stuck_at}, keyed {keyed}: {report:#}");
            assert_eq!(p.succeeded, u64::from(stuck_at), "{ctx}");
            // The stuck job was in flight; the rest of its batch was in the
            // worker's hands, never started: all abandoned, by difference.
            // The queued batch comes back.
            assert_eq!(p.abandoned, 8 - u64::from(stuck_at), "{ctx}");
            assert_eq!(report.take_handed_back(id), (8..12).collect::<Vec<_>>());
            assert_eq!(report.stuck.len(), 1, "{ctx}");
            let s = &report.stuck[0];
            assert!(
                s.in_job.is_some_and(|d| d >= Duration::from_millis(150)),
                "{ctx}"
            );
            if keyed {
                let key = stuck_at.to_string();
                assert_eq!(p.abandoned_keys, std::slice::from_ref(&key), "{ctx}");
                assert_eq!(s.job_key.as_deref(), Some(key.as_str()), "{ctx}");
            }
            assert_balanced(&report);
            // Once the report is made the live counts are the final ones,
            // the successes the seal read included.
            let live = kept.stats();
            assert_eq!(
                (live.succeeded, live.abandoned, live.handed_back),
                (p.succeeded, p.abandoned, p.handed_back),
                "{ctx}"
            );
        }
    }
}

/// Producers mixing single submits and batches of random sizes, a stop at
/// a random moment, either policy: every job either ran exactly once or
/// came back, none both, none neither.
#[test]
fn stress_every_job_of_every_batch_runs_once_or_comes_back() {
    let rounds = if cfg!(debug_assertions) { 30 } else { 120 };
    let seed = std::env::var("WINDDOWN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    for round in 0..rounds {
        let seed = seed.wrapping_add(round);
        let mut rng = fastrand::Rng::with_seed(seed);
        let producers = rng.usize(1..=3);
        let per_producer = rng.u32(1..2_000);
        let n = producers as u32 * per_producer;
        let policy = if rng.bool() {
            DrainPolicy::Finish
        } else {
            DrainPolicy::HandBack
        };
        let keyed = rng.bool();
        let stop_after = rng.u32(0..n.max(1));
        let ctx = format!(
            "seed {seed} (WINDDOWN_SEED to replay): {producers} producers × {per_producer}, {policy:?}, keyed {keyed}, stop after {stop_after}"
        );
        let ledger = Ledger::new(n as usize);
        let mut runtime = rt().build().unwrap();
        let handle = runtime.handle();
        let l = ledger.clone();
        let ran = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let r = ran.clone();
        let h = handle.clone();
        let builder = runtime
            .pool::<u32>("s")
            .workers(rng.usize(1..=3))
            .capacity(rng.usize(0..=4))
            .drain(policy);
        let builder = if keyed { builder.key(|n| *n) } else { builder };
        let pool = builder
            .start(move |id, _| {
                l.ran(id);
                if r.fetch_add(1, Ordering::Relaxed) == stop_after {
                    h.request("stress");
                }
                if id % 31 == 0 {
                    anyhow::bail!("planned {id}");
                }
                Ok(())
            })
            .unwrap();
        let id = pool.id();
        let mut refused = Vec::new();
        std::thread::scope(|scope| {
            let mut joins = Vec::new();
            for p in 0..producers as u32 {
                let s = pool.submitter();
                let mut rng = fastrand::Rng::with_seed(seed ^ u64::from(p + 1));
                joins.push(scope.spawn(move || {
                    let mut back = Vec::new();
                    let mut next = p * per_producer;
                    let end = next + per_producer;
                    while next < end {
                        let len = rng.u32(1..=64).min(end - next);
                        if len == 1 && rng.bool() {
                            if let Err(e) = s.submit(next) {
                                back.push(e.into_inner());
                            }
                        } else if let Err(e) = s.submit_batch((next..next + len).collect()) {
                            back.extend(e.into_inner());
                        }
                        next += len;
                    }
                    back
                }));
            }
            for j in joins {
                refused.extend(j.join().unwrap());
            }
        });
        drop(pool);
        let mut report = runtime.run();
        let p = report.pools[0].clone();
        let back = report.take_handed_back(id);
        let mut seen = vec![0u8; n as usize];
        for &i in ledger.ran_ids().iter().chain(&back).chain(&refused) {
            seen[i as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c == 1), "{ctx}: {report:#}");
        assert_eq!(p.abandoned, 0, "no deadline passed: {ctx}");
        assert_eq!(p.submitted, u64::from(n) - refused.len() as u64, "{ctx}");
        assert_eq!(p.handed_back, back.len() as u64, "{ctx}");
        let mut sorted = back.clone();
        sorted.sort_unstable();
        if producers == 1 {
            assert_eq!(
                back, sorted,
                "one producer's jobs come back in order: {ctx}"
            );
        }
        assert_balanced(&report);
    }
}
