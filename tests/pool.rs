//! Pools (issue 2, items 3 and 5, and the misuse cases of item 11): named
//! workers, errors and panics caught and recorded with the job's key while
//! the worker goes on, fail-fast, the two drain policies, and the accounting
//! identity `submitted = succeeded + failed + panicked + handed back +
//! abandoned` — checked on every report, and job by job in a randomised run.

mod common_api;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;

use anyhow::anyhow;
use common_api::{assert_balanced, rt, Gate, HANG};
use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use winddown::{BuildError, DrainPolicy, Runtime, StopReason, Submitter, ThreadOutcome};

/// A one-worker pool under `policy` whose jobs report their id when they
/// start and then block on `gate`; keys are the ids.
fn gated_pool(
    rt: &mut Runtime,
    name: &str,
    workers: usize,
    policy: DrainPolicy,
    gate: &Arc<Gate>,
) -> (Submitter<u32>, Receiver<u32>) {
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let gate = gate.clone();
    let submitter = rt
        .pool::<u32>(name)
        .workers(workers)
        .capacity(64)
        .drain(policy)
        .key(|n: &u32| *n)
        .start(move |n, _token| {
            started_tx.send(n).unwrap();
            gate.wait();
            Ok(())
        })
        .unwrap()
        .into_submitter();
    (submitter, started_rx)
}

#[test]
fn workers_are_named_after_the_pool_with_their_index() {
    const W: usize = 4;
    let mut runtime = rt().build().unwrap();
    let names = Arc::new(Mutex::new(BTreeSet::new()));
    // Each job waits until all W are running, so each runs on its own worker.
    let barrier = Arc::new(Barrier::new(W));
    let submitter = {
        let (names, barrier) = (names.clone(), barrier.clone());
        runtime
            .pool::<u32>("named")
            .workers(W)
            .start(move |_, _| {
                let name = thread::current().name().map(str::to_owned);
                names.lock().insert(name.expect("workers are named"));
                barrier.wait();
                Ok(())
            })
            .unwrap()
    };
    for n in 0..W as u32 {
        submitter.submit(n).unwrap();
    }
    drop(submitter);
    let report = runtime.run();
    assert_eq!(report.reason, StopReason::Completed);
    let want: BTreeSet<String> = (0..W).map(|i| format!("named-{i}")).collect();
    assert_eq!(*names.lock(), want);
    assert_eq!(report.pools[0].workers, W);
}

#[test]
fn an_error_or_a_panic_is_counted_and_recorded_with_its_key_and_the_worker_goes_on() {
    let mut runtime = rt().build().unwrap();
    let threads = Arc::new(Mutex::new(Vec::new()));
    let submitter = {
        let threads = threads.clone();
        runtime
            .pool::<u32>("faulty")
            .workers(1)
            .key(|n: &u32| format!("job-{n}"))
            .start(move |n, _| {
                threads
                    .lock()
                    .push(thread::current().name().map(str::to_owned));
                match n {
                    3 => Err(anyhow!("disk full").context(format!("writing {n}"))),
                    5 => panic!("boom {n}"),
                    _ => Ok(()),
                }
            })
            .unwrap()
    };
    assert_eq!(submitter.feed(0..8).unwrap(), 8);
    drop(submitter);
    let report = runtime.run();
    assert_eq!(report.reason, StopReason::Completed);
    assert_balanced(&report);
    let pool = report.pool("faulty").unwrap();
    assert_eq!(
        (pool.succeeded, pool.failed, pool.panicked),
        (6, 1, 1),
        "{report:#}"
    );
    assert_eq!(pool.errors.len(), 2);
    let failed = &pool.errors[0];
    assert_eq!(failed.pool, "faulty");
    assert_eq!(failed.key.as_deref(), Some("\"job-3\""));
    assert!(!failed.panicked);
    assert!(failed.message.contains("writing 3") && failed.message.contains("disk full"));
    let panicked = &pool.errors[1];
    assert_eq!(panicked.key.as_deref(), Some("\"job-5\""));
    assert!(panicked.panicked);
    assert!(panicked.message.contains("boom 5"), "{}", panicked.message);
    assert_eq!(report.errors().count(), 2);
    // The one worker ran all eight jobs: it went on after the error and the
    // panic.
    assert_eq!(*threads.lock(), vec![Some("faulty-0".to_owned()); 8]);
    assert_eq!(report.exit_code, 1, "a failed job makes the exit code 1");
}

#[test]
fn only_the_first_few_error_messages_are_kept_but_every_failure_is_counted() {
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<u32>("many-errors")
        .workers(1)
        .key(|n: &u32| *n)
        .start(|n, _| Err(anyhow!("error {n}")))
        .unwrap();
    submitter.feed(0..100).unwrap();
    drop(submitter);
    let report = runtime.run();
    let pool = &report.pools[0];
    assert_eq!(pool.failed, 100);
    assert!(!pool.errors.is_empty() && pool.errors.len() < 100);
    // One worker: the kept ones are the first, in order.
    for (i, e) in pool.errors.iter().enumerate() {
        assert_eq!(e.key, Some(i.to_string()));
        assert_eq!(e.message, format!("error {i}"));
    }
    assert_balanced(&report);
}

#[test]
fn a_panicking_key_function_counts_as_the_jobs_panic_and_the_worker_goes_on() {
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<u32>("badkey")
        .workers(1)
        .key(|n: &u32| {
            assert!(*n != 2, "no key for 2");
            *n
        })
        .start(|_, _| Ok(()))
        .unwrap();
    submitter.feed(0..5).unwrap();
    drop(submitter);
    let report = runtime.run();
    let pool = &report.pools[0];
    assert_eq!((pool.succeeded, pool.panicked), (4, 1));
    assert!(pool.errors[0].message.contains("no key for 2"));
    assert_balanced(&report);
}

#[test]
fn fail_fast_stops_the_run_with_a_reason_naming_the_pool_and_the_error() {
    for panics in [false, true] {
        let mut runtime = rt().build().unwrap();
        let submitter = runtime
            .pool::<u32>("ff")
            .workers(2)
            .fail_fast(true)
            .start(move |n, _| match n {
                7 if panics => panic!("the flux capacitor"),
                7 => Err(anyhow!("the flux capacitor")),
                _ => Ok(()),
            })
            .unwrap();
        let producer = thread::spawn(move || match submitter.feed(0..) {
            Ok(_) => unreachable!("an endless feed ends only when refused"),
            Err(e) => e.submitted,
        });
        let report = runtime.run(); // no request: the failure stops it
        let fed = producer.join().unwrap();
        match &report.reason {
            StopReason::JobFailed { pool, error } => {
                assert_eq!(pool, "ff");
                assert!(error.contains("the flux capacitor"), "{error}");
            }
            other => panic!("reason {other:?}"),
        }
        assert!(report.reason.to_string().contains("ff"));
        assert_eq!(report.exit_code, 1);
        assert_balanced(&report);
        let pool = &report.pools[0];
        assert_eq!(pool.submitted, fed);
        assert_eq!(pool.failed + pool.panicked, 1, "{report:#}");
        assert_eq!(pool.panicked, u64::from(panics));
    }
}

#[test]
fn without_fail_fast_a_failure_does_not_stop_the_run() {
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<u32>("no-ff")
        .workers(1)
        .start(|_, _| Err(anyhow!("nope")))
        .unwrap();
    submitter.feed(0..5).unwrap();
    drop(submitter);
    let report = runtime.run();
    assert_eq!(report.reason, StopReason::Completed, "{report:#}");
    assert_eq!(report.pools[0].failed, 5, "every job ran");
    assert_eq!(report.exit_code, 1);
}

#[test]
fn hand_back_returns_queued_jobs_in_queue_order() {
    const W: usize = 3;
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "hb", W, DrainPolicy::HandBack, &gate);
    for n in 0..W as u32 {
        submitter.submit(n).unwrap();
    }
    // Every worker holds a job, so the rest stays queued, in order.
    let mut running: Vec<u32> = (0..W)
        .map(|_| started.recv_timeout(HANG).unwrap())
        .collect();
    running.sort_unstable();
    assert_eq!(running, [0, 1, 2]);
    for n in W as u32..40 {
        submitter.submit(n).unwrap();
    }
    runtime.handle().request("checkpoint");
    gate.open();
    let mut report = runtime.run();
    assert_balanced(&report);
    let pool = report.pool("hb").unwrap();
    assert_eq!(pool.succeeded, W as u64, "only the jobs in flight finish");
    assert_eq!(pool.handed_back, 37);
    let want: Vec<u32> = (W as u32..40).collect();
    let keys: Vec<String> = want.iter().map(u32::to_string).collect();
    assert_eq!(pool.handed_back_keys, keys);
    assert_eq!(
        report.take_handed_back_named::<u64>("hb").ok(),
        None,
        "wrong type"
    );
    assert_eq!(
        report.take_handed_back_named::<u32>("nope").ok(),
        None,
        "no such pool"
    );
    assert_eq!(report.take_handed_back_named::<u32>("hb").ok(), Some(want));
    assert_eq!(
        report.take_handed_back_named::<u32>("hb").ok(),
        None,
        "taken once"
    );
    assert_eq!(report.pool("hb").unwrap().handed_back, 37, "counts stay");
    assert_eq!(started.try_iter().count(), 0, "no queued job ran");
    assert_eq!(report.exit_code, 0);
}

#[test]
fn finish_runs_everything_queued() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "fin", 1, DrainPolicy::Finish, &gate);
    submitter.feed(0..20).unwrap();
    assert_eq!(started.recv_timeout(HANG), Ok(0));
    runtime.handle().request("drain");
    assert!(submitter.submit(99).is_err());
    gate.open();
    let report = runtime.run();
    assert_balanced(&report);
    let pool = &report.pools[0];
    assert_eq!(
        (pool.submitted, pool.succeeded, pool.handed_back),
        (20, 20, 0)
    );
    assert_eq!(
        started.try_iter().collect::<Vec<_>>(),
        (1..20).collect::<Vec<_>>(),
        "the queue ran in order"
    );
    assert_eq!(report.reason, StopReason::Requested("drain".into()));
    assert!(report.timings.hard_stop.is_none());
}

#[test]
fn zero_workers_is_refused_with_zero_workers() {
    let mut runtime = rt().build().unwrap();
    let err = runtime
        .pool::<u32>("empty")
        .workers(0)
        .start(|_, _| Ok(()))
        .unwrap_err();
    match &err {
        BuildError::ZeroWorkers { pool } => assert_eq!(pool, "empty"),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.to_string(), "pool \"empty\" needs at least one worker");
    // The refused pool left nothing behind and its name is still free.
    runtime
        .pool::<u32>("empty")
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    let report = runtime.run();
    assert_eq!(report.pools.len(), 1);
}

#[test]
fn bad_names_are_refused_with_typed_errors_and_pools_after_the_stop_start_stopped() {
    let mut runtime = rt().build().unwrap();
    let ok = |_: u32, _: &winddown::Token| Ok(());
    runtime.pool::<u32>("dup").workers(1).start(ok).unwrap();
    assert!(matches!(
        runtime.pool::<u32>("dup").workers(1).start(ok),
        Err(BuildError::DuplicateName(n)) if n == "dup"
    ));
    assert!(matches!(
        runtime.spawn("dup", |_| Ok(())),
        Err(BuildError::DuplicateName(_))
    ));
    assert!(matches!(
        runtime.pool::<u32>("").workers(1).start(ok),
        Err(BuildError::InvalidName(_))
    ));
    assert!(matches!(
        runtime.pool::<u32>("nul\0").workers(1).start(ok),
        Err(BuildError::InvalidName(_))
    ));
    // A thread named like a pool's worker collides with it.
    assert!(matches!(
        runtime.spawn("dup-0", |_| Ok(())),
        Err(BuildError::DuplicateName(_))
    ));
    // A stop during start-up is not an error: what starts after it starts
    // stopped, and its submitters hand every job back.
    runtime.handle().request("stop");
    let late = runtime
        .pool::<u32>("late")
        .workers(1)
        .start(ok)
        .expect("a pool started after the stop starts stopped");
    assert_eq!(late.submit(7).unwrap_err().into_inner(), 7);
    runtime
        .spawn("late-bg", |token| {
            assert!(token.is_stopping(), "born stopped");
            Ok(())
        })
        .expect("a thread spawned after the stop starts with a stopped token");
    drop(late);
    let report = runtime.run();
    assert_eq!(report.pools.len(), 2);
    assert_eq!(report.pool("late").unwrap().submitted, 0);
    assert_eq!(report.threads[0].outcome, ThreadOutcome::Returned);
}

#[test]
fn a_zero_capacity_pool_runs_every_job() {
    let mut runtime = rt().build().unwrap();
    let (ran_tx, ran_rx) = crossbeam_channel::unbounded();
    let submitter = runtime
        .pool::<u32>("rendezvous")
        .workers(2)
        .capacity(0)
        .start(move |n, _| {
            ran_tx.send(n).unwrap();
            Ok(())
        })
        .unwrap();
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let s = submitter.clone();
            thread::spawn(move || s.feed(p * 100..(p + 1) * 100).unwrap())
        })
        .collect();
    drop(submitter);
    let report = runtime.run();
    assert_eq!(
        producers
            .into_iter()
            .map(|p| p.join().unwrap())
            .sum::<u64>(),
        300
    );
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(report.pools[0].succeeded, 300);
    let ran: BTreeSet<u32> = ran_rx.try_iter().collect();
    assert_eq!(ran, (0..300).collect());
}

#[test]
fn a_zero_capacity_hand_back_pool_stops_with_nothing_to_hand_back() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let submitter = {
        let gate = gate.clone();
        runtime
            .pool::<u32>("r0hb")
            .workers(1)
            .capacity(0)
            .drain(DrainPolicy::HandBack)
            .start(move |n, _| {
                started_tx.send(n).unwrap();
                gate.wait();
                Ok(())
            })
            .unwrap()
    };
    submitter.submit(1).unwrap();
    assert_eq!(started_rx.recv_timeout(HANG), Ok(1));
    runtime.handle().request("stop");
    gate.open();
    let report = runtime.run();
    assert_balanced(&report);
    assert_eq!(
        (report.pools[0].succeeded, report.pools[0].handed_back),
        (1, 0)
    );
}

/// Every job's fate, recorded once by whoever settles it.
#[derive(Default)]
struct Ledger {
    ran: Mutex<Vec<(u32, &'static str)>>,
}

#[test]
fn every_report_is_balanced_and_every_job_is_accounted_for_exactly_once() {
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..12 {
        let mut runtime = rt().build().unwrap();
        let ledger = Arc::new(Ledger::default());
        let (ran_tx, ran_rx) = crossbeam_channel::unbounded::<()>();
        let mut submitters = Vec::new();
        let pools = rng.usize(1..=3);
        for p in 0..pools {
            let policy = if rng.bool() {
                DrainPolicy::HandBack
            } else {
                DrainPolicy::Finish
            };
            let (fail_every, panic_every) = (rng.u32(3..20), rng.u32(3..20));
            let (ledger, ran_tx) = (ledger.clone(), ran_tx.clone());
            let s = runtime
                .pool::<u32>(format!("p{p}"))
                .workers(rng.usize(1..=4))
                .capacity(rng.usize(0..=4))
                .drain(policy)
                .key(|n: &u32| *n)
                .start(move |n, _| {
                    let _ = ran_tx.send(());
                    let outcome = if n % panic_every == 0 {
                        "panic"
                    } else if n % fail_every == 0 {
                        "fail"
                    } else {
                        "ok"
                    };
                    ledger.ran.lock().push((n, outcome));
                    match outcome {
                        "panic" => panic!("job {n}"),
                        "fail" => Err(anyhow!("job {n}")),
                        _ => Ok(()),
                    }
                })
                .unwrap();
            submitters.push(s);
        }
        drop(ran_tx);
        let per = rng.u32(50..300);
        let producers: Vec<_> = submitters
            .iter()
            .enumerate()
            .map(|(p, s)| {
                let s = s.submitter();
                let base = p as u32 * 10_000;
                thread::spawn(move || match s.feed(base..base + per) {
                    Ok(_) => Vec::new(),
                    Err(e) => e.into_unsubmitted().collect::<Vec<_>>(),
                })
            })
            .collect();
        drop(submitters);
        // Stop after a random number of jobs ran (or at completion).
        let stop_after = rng.u32(0..per);
        for _ in 0..stop_after {
            if ran_rx.recv_timeout(HANG).is_err() {
                break;
            }
        }
        runtime.handle().request("random moment");
        let mut report = runtime.run();
        let refused: Vec<Vec<u32>> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        let ctx = format!("seed {seed}, round {round}\n{report:#}");
        assert_balanced(&report);
        let ran = ledger.ran.lock().clone();
        for (p, pool) in report.pools.clone().iter().enumerate() {
            let base = p as u32 * 10_000;
            let mine = |n: &u32| (base..base + per).contains(n);
            let count = |o: &str| ran.iter().filter(|(n, k)| mine(n) && *k == o).count() as u64;
            assert_eq!(pool.succeeded, count("ok"), "{ctx}");
            assert_eq!(pool.failed, count("fail"), "{ctx}");
            assert_eq!(pool.panicked, count("panic"), "{ctx}");
            assert_eq!(pool.abandoned, 0, "{ctx}");
            let handed_back = report
                .take_handed_back_named::<u32>(&pool.name)
                .ok()
                .unwrap();
            let mut all: Vec<u32> = ran.iter().map(|(n, _)| *n).filter(mine).collect();
            all.extend(&handed_back);
            all.extend(&refused[p]);
            all.sort_unstable();
            assert_eq!(
                all,
                (base..base + per).collect::<Vec<_>>(),
                "pool {p}: a job was lost or counted twice; {ctx}"
            );
            assert_eq!(
                pool.submitted,
                u64::from(per) - refused[p].len() as u64,
                "{ctx}"
            );
        }
    }
}

#[test]
fn a_hand_back_pool_whose_submitters_drop_runs_everything_and_completes() {
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<u32>("hb-complete")
        .workers(2)
        .capacity(4)
        .drain(DrainPolicy::HandBack)
        .start(|_, _| Ok(()))
        .unwrap();
    submitter.feed(0..100).unwrap();
    drop(submitter);
    let mut report = runtime.run();
    assert_eq!(report.reason, StopReason::Completed);
    let pool = &report.pools[0];
    assert_eq!((pool.succeeded, pool.handed_back), (100, 0));
    assert_eq!(
        report.take_handed_back_named::<u32>("hb-complete").ok(),
        Some(vec![])
    );
}

/// Several workers each take a job just as the stop begins and hand it back
/// themselves, in whatever order they get there; the report must still list
/// every handed-back job in queue order (the jobs' sequence numbers restore
/// it). Before the fix, a debug build saw swaps such as
/// `[3443, 3444, 3445, 3442, 3446, …]` within a few hundred rounds.
#[test]
fn handed_back_jobs_stay_in_queue_order_when_workers_race_the_stop() {
    for round in 0..1000 {
        let mut runtime = rt().build().unwrap();
        let (ran_tx, ran_rx) = crossbeam_channel::unbounded::<()>();
        let submitter = runtime
            .pool::<u32>("race")
            .workers(8)
            .capacity(64)
            .drain(DrainPolicy::HandBack)
            .start(move |_, _| {
                let _ = ran_tx.send(());
                Ok(())
            })
            .unwrap();
        let producer = thread::spawn(move || {
            let _ = submitter.feed(0..);
        });
        for _ in 0..(round % 50) {
            ran_rx.recv().unwrap();
        }
        runtime.handle().request("race");
        let mut report = runtime.run();
        producer.join().unwrap();
        let back = report.take_handed_back_named::<u32>("race").ok().unwrap();
        let mut sorted = back.clone();
        sorted.sort_unstable();
        assert_eq!(back, sorted, "round {round}");
    }
}
