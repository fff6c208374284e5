//! The runtime as a whole (issue 2, items 2, 6, 9, 10 and 11): concurrent
//! triggers, runtimes dropped without running, many runtimes in one process
//! (one after another and side by side, with and without signals),
//! background threads, exit codes and the report's `Display`. The
//! signal-install errors and the signal router are in
//! `tests/signal_router.rs`.
//!
//! "No thread left behind" is checked by name in `/proc/self/task` (Linux):
//! the test harness runs other tests' threads in this process at the same
//! time, so only the threads a runtime named are counted. The signal-driven
//! exit code 130 is tested on real processes in `tests/signals.rs`.

mod common_api;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use anyhow::anyhow;
use common_api::{assert_balanced, rt, threads_named, threads_named_after_exit, HANG};
use winddown::{BuildError, ExitCodes, HookOutcome, Phase, Runtime, StopReason, ThreadOutcome};

const BUDGET: Duration = Duration::from_secs(5);

#[test]
fn reports_runtimes_and_builders_are_send_and_their_debug_leaks_nothing() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<Runtime>();
    assert_send_sync::<winddown::Report>();
    assert_send_sync::<winddown::Handle>();
    let runtime = rt().grace(Duration::from_secs(3)).build().unwrap();
    let debug = format!("{runtime:?}");
    assert!(debug.contains("Running") && debug.contains("3s"), "{debug}");
    let builder = format!("{:?}", rt().on_phase(|_| {}));
    assert!(builder.contains("<closure>"), "{builder}");
}

#[test]
fn concurrent_requests_from_many_threads_one_reason_wins_and_hooks_run_once() {
    const THREADS: usize = 12;
    for round in 0..10 {
        let mut runtime = rt().build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let calls = calls.clone();
            runtime.on_release("count", BUDGET, move || {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
        }
        let submitter = runtime
            .pool::<u32>("busy")
            .workers(2)
            .start(|_, _| Ok(()))
            .unwrap();
        let barrier = Arc::new(Barrier::new(THREADS));
        let requesters: Vec<_> = (0..THREADS)
            .map(|i| {
                let (handle, barrier) = (runtime.handle(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    (i, handle.request(format!("r{i}")))
                })
            })
            .collect();
        let producer = thread::spawn(move || submitter.feed(0..).unwrap_err().submitted);
        let report = runtime.run();
        let winners: Vec<usize> = requesters
            .into_iter()
            .map(|r| r.join().unwrap())
            .filter(|(_, won)| *won)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(
            report.reason,
            StopReason::Requested(format!("r{}", winners[0]))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3, "each hook exactly once");
        assert_eq!(report.pools[0].submitted, producer.join().unwrap());
        assert_balanced(&report);
        assert_eq!(report.exit_code, 0);
    }
}

#[test]
fn a_runtime_dropped_without_run_still_stops_and_joins_its_threads() {
    const W: usize = 4;
    assert_eq!(threads_named("dropme"), 0);
    let mut runtime = rt().build().unwrap();
    let (ran_tx, ran_rx) = crossbeam_channel::unbounded();
    // The first W jobs meet here, so every worker is up (and named).
    let barrier = Arc::new(Barrier::new(W + 1));
    let b = barrier.clone();
    let submitter = runtime
        .pool::<usize>("dropme")
        .workers(W)
        .start(move |n, _| {
            if n < W {
                b.wait();
            }
            ran_tx.send(n).unwrap();
            Ok(())
        })
        .unwrap();
    let (up_tx, up_rx) = crossbeam_channel::bounded(1);
    let (bg_tx, bg_rx) = crossbeam_channel::bounded(1);
    runtime
        .spawn("dropme-bg", move |token| {
            up_tx.send(()).unwrap();
            token.wait();
            let _ = bg_tx.send(token.reason());
            Ok(())
        })
        .unwrap();
    let released = Arc::new(AtomicUsize::new(0));
    let r = released.clone();
    runtime.on_release("dropme-hook", BUDGET, move || {
        r.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    let handle = runtime.handle();
    submitter.feed(0..W).unwrap();
    barrier.wait();
    up_rx.recv_timeout(HANG).unwrap();
    submitter.feed(W..W + 10).unwrap();
    assert_eq!(
        threads_named("dropme"),
        W + 1,
        "workers and a background thread"
    );
    drop(runtime);
    assert_eq!(
        threads_named_after_exit("dropme"),
        0,
        "a thread was left behind"
    );
    assert_eq!(handle.phase(), Phase::Done);
    assert_eq!(
        bg_rx.try_recv(),
        Ok(Some(StopReason::Requested(
            "runtime dropped without run".into()
        )))
    );
    assert_eq!(released.load(Ordering::SeqCst), 1);
    assert_eq!(
        ran_rx.try_iter().count(),
        W + 10,
        "Finish ran what was queued"
    );
    assert_eq!(submitter.submit(99).unwrap_err().0, 99);
}

#[test]
fn many_runtimes_one_after_another_leave_no_thread_behind() {
    for i in 0..25 {
        let mut runtime = rt().build().unwrap();
        let submitter = runtime
            .pool::<u32>("seq")
            .workers(3)
            .start(|_, _| Ok(()))
            .unwrap();
        runtime
            .spawn("seq-bg", |token| {
                token.wait();
                Ok(())
            })
            .unwrap();
        runtime.on_release("seq", BUDGET, || Ok(()));
        submitter.feed(0..20).unwrap();
        match i % 3 {
            0 => {
                drop(submitter);
                let report = runtime.run();
                assert_eq!(report.reason, StopReason::Completed, "run {i}");
                assert_eq!(report.pools[0].succeeded, 20);
            }
            1 => {
                runtime.handle().request("next");
                assert_eq!(runtime.run().pools[0].succeeded, 20, "run {i}");
            }
            _ => drop(runtime),
        }
        assert_eq!(threads_named_after_exit("seq"), 0, "run {i} left threads");
        assert_eq!(threads_named_after_exit("hook:seq"), 0, "run {i}");
    }
}

#[test]
fn two_runtimes_side_by_side_stop_independently() {
    let mut a = rt().build().unwrap();
    let mut b = rt().build().unwrap();
    // The same pool name in two runtimes is fine: names are per runtime.
    let sa = a
        .pool::<u32>("twin")
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    let sb = b
        .pool::<u32>("twin")
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    let (ta, tb) = (a.handle().token(), b.handle().token());
    a.handle().request("only a");
    assert!(ta.is_stopping());
    assert!(!tb.is_stopping(), "stopping a must not stop b");
    assert!(sa.submit(1).is_err());
    sb.submit(1).unwrap();
    let ra = a.run();
    assert_eq!(ra.reason, StopReason::Requested("only a".into()));
    assert!(!tb.is_stopping());
    assert_eq!(b.handle().phase(), Phase::Running);
    sb.submit(2).unwrap();
    drop(sb);
    let rb = b.run();
    assert_eq!(rb.reason, StopReason::Completed);
    assert_eq!(rb.pools[0].succeeded, 2);
}

#[test]
fn runtimes_asking_for_signals_at_once_from_many_threads_all_build() {
    const N: usize = 8;
    let barrier = Arc::new(Barrier::new(N));
    let builders: Vec<_> = (0..N)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut runtime = Runtime::builder().signals(true).build()?;
                let s = runtime.pool::<u32>("sig").workers(1).start(|_, _| Ok(()))?;
                s.submit(i as u32).unwrap();
                Ok::<_, BuildError>((runtime, s))
            })
        })
        .collect();
    let runtimes: Vec<_> = builders
        .into_iter()
        .map(|b| {
            b.join()
                .unwrap()
                .expect("every runtime builds with signals")
        })
        .collect();
    // Side by side, registered for signals: each still stops on its own.
    for (i, (runtime, submitter)) in runtimes.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(submitter);
        } else {
            runtime.handle().request("odd");
        }
        let report = runtime.run();
        assert_eq!(report.pools[0].succeeded, 1);
        assert_eq!(report.exit_code, 0);
    }
    // A later runtime registers with the handler already installed.
    let again = Runtime::builder().signals(true).build().unwrap();
    drop(again);
    // Off Unix winddown installed the process's one ctrlc handler: nobody
    // else can. (On Unix it hooks through signal-hook, which chains.)
    #[cfg(not(unix))]
    assert!(matches!(
        ctrlc::set_handler(|| {}),
        Err(ctrlc::Error::MultipleHandlers)
    ));
}

#[test]
fn background_threads_are_joined_in_the_drain_and_their_outcomes_recorded() {
    let mut runtime = rt().build().unwrap();
    runtime
        .spawn("bg-ok", |token| {
            token.wait();
            Ok(())
        })
        .unwrap();
    runtime
        .spawn("bg-err", |token| {
            token.wait();
            Err(anyhow!("flush failed"))
        })
        .unwrap();
    runtime
        .spawn("bg-panic", |token| {
            token.wait();
            panic!("metrics exploded");
        })
        .unwrap();
    runtime.handle().request("stop");
    let report = runtime.run();
    let outcome = |name: &str| {
        report
            .threads
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.outcome.clone())
            .unwrap()
    };
    assert_eq!(outcome("bg-ok"), ThreadOutcome::Returned);
    assert_eq!(
        outcome("bg-err"),
        ThreadOutcome::Failed("flush failed".into())
    );
    match outcome("bg-panic") {
        ThreadOutcome::Panicked(msg) => assert!(msg.contains("metrics exploded")),
        other => panic!("{other:?}"),
    }
    assert!(report.stuck.is_empty());
    assert!(report.timings.drain_latency.is_some());
    assert_eq!(report.exit_code, 1, "a failed background thread: 1");
}

#[test]
fn a_runtime_of_background_threads_completes_when_they_all_return() {
    let mut runtime = rt().build().unwrap();
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
    runtime
        .spawn("bg-short", move |_| {
            let _ = go_rx.recv();
            Ok(())
        })
        .unwrap();
    let handle = runtime.handle();
    let runner = thread::spawn(move || runtime.run());
    assert!(!handle.is_stopping());
    drop(go_tx);
    let report = runner.join().unwrap();
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(report.exit_code, 0);
}

#[test]
fn completion_of_the_pools_stops_the_background_threads_too() {
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<u32>("work")
        .workers(2)
        .start(|_, _| Ok(()))
        .unwrap();
    runtime
        .spawn("ticker", |token| {
            while !token.wait_timeout(Duration::from_secs(3600)) {}
            Ok(())
        })
        .unwrap();
    submitter.feed(0..50).unwrap();
    drop(submitter);
    let report = runtime.run();
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(report.threads[0].outcome, ThreadOutcome::Returned);
    assert!(report.timings.total < HANG);
}

#[test]
fn a_runtime_with_nothing_in_it_completes_at_once() {
    let report = rt().build().unwrap().run();
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(report.exit_code, 0);
    assert!(report.pools.is_empty() && report.threads.is_empty());
}

#[test]
fn exit_codes_follow_the_table() {
    // Completed, nothing failed: 0.
    let report = rt().build().unwrap().run();
    assert_eq!(
        (report.reason.clone(), report.exit_code),
        (StopReason::Completed, 0)
    );
    // Requested, nothing failed: 0.
    let runtime = rt().build().unwrap();
    runtime.handle().request("bye");
    assert_eq!(runtime.run().exit_code, 0);
    // A job failed, even on a clean request: 1.
    let mut runtime = rt().build().unwrap();
    let s = runtime
        .pool::<u32>("f")
        .workers(1)
        .start(|_, _| Err(anyhow!("x")))
        .unwrap();
    s.submit(1).unwrap();
    drop(s);
    let report = runtime.run();
    assert_eq!((report.pools[0].failed, report.exit_code), (1, 1));
    // A job panicked: 1.
    let mut runtime = rt().build().unwrap();
    let s = runtime
        .pool::<u32>("p")
        .workers(1)
        .start(|_, _| panic!("x"))
        .unwrap();
    s.submit(1).unwrap();
    drop(s);
    assert_eq!(runtime.run().exit_code, 1);
    // A hook failed: 1.
    let mut runtime = rt().build().unwrap();
    runtime.on_release("h", BUDGET, || Err(anyhow!("x")));
    assert_eq!(runtime.run().exit_code, 1);
    // (A stuck thread: 1, in tests/deadline.rs; a signal: 130, in
    // tests/signals.rs.)
}

#[test]
fn exit_codes_can_be_overridden() {
    let mut codes = ExitCodes::default();
    assert_eq!((codes.success, codes.signal, codes.failure), (0, 130, 1));
    codes.success = 7;
    codes.failure = 3;
    let runtime = rt().exit_codes(codes).build().unwrap();
    runtime.handle().request("bye");
    let report = runtime.run();
    assert_eq!(report.exit_code, 7);
    assert_eq!(
        format!("{:?}", report.process_exit_code()),
        format!("{:?}", std::process::ExitCode::from(7))
    );
    let mut runtime = rt().exit_codes(codes).build().unwrap();
    runtime.on_release("h", BUDGET, || Err(anyhow!("x")));
    assert_eq!(runtime.run().exit_code, 3);
    // A code a process cannot return becomes a plain failure.
    codes.success = 300;
    let report = rt().exit_codes(codes).build().unwrap().run();
    assert_eq!(report.exit_code, 300);
    assert_eq!(
        format!("{:?}", report.process_exit_code()),
        format!("{:?}", std::process::ExitCode::FAILURE)
    );
}

#[test]
fn the_report_display_mentions_the_key_facts() {
    let mut runtime = rt().build().unwrap();
    let s = runtime
        .pool::<u32>("disp")
        .workers(2)
        .key(|n: &u32| format!("n{n}"))
        .start(|n, _| match n {
            3 => Err(anyhow!("bad input")),
            _ => Ok(()),
        })
        .unwrap();
    s.feed(0..5).unwrap();
    runtime.on_release("flush", BUDGET, || Ok(()));
    runtime.on_release("close-db", BUDGET, || Err(anyhow!("db gone")));
    drop(s);
    let report = runtime.run();
    let short = report.to_string();
    assert!(!short.contains('\n'), "{short}");
    for fact in [
        "stopped (completed)",
        "drained in",
        "disp: 4 done, 1 failed, 0 panicked, 0 handed back, 0 abandoned",
        "1 hook failed",
        "exit code 1",
    ] {
        assert!(short.contains(fact), "{fact:?} missing from {short:?}");
    }
    let long = format!("{report:#}");
    assert!(long.starts_with(&short), "{long}");
    for fact in [
        "drain latency",
        "total",
        "pool disp (2 workers): 5 submitted = 4 succeeded + 1 failed + 0 panicked + 0 handed back + 0 abandoned",
        "job \"n3\" failed: bad input",
        "hook close-db (release): failed in ",
        ": db gone",
        "hook flush (release): ok in ",
    ] {
        assert!(long.contains(fact), "{fact:?} missing from\n{long}");
    }
    // Requested reasons carry their message.
    let runtime = rt().build().unwrap();
    runtime.handle().request("maintenance window");
    let report = runtime.run();
    assert!(report
        .to_string()
        .starts_with("stopped (requested: maintenance window); drained in"));
    assert_eq!(
        report
            .hooks
            .iter()
            .filter(|h| h.outcome != HookOutcome::Ok)
            .count(),
        0
    );
}

#[test]
fn a_handle_outlives_its_runtime() {
    let runtime = rt().build().unwrap();
    let handle = runtime.handle();
    assert_eq!(handle.phase(), Phase::Running);
    assert!(!handle.is_stopping());
    let report = runtime.run();
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(handle.phase(), Phase::Done);
    assert!(handle.is_stopping());
    assert!(!handle.request("too late"));
    assert!(handle.token().is_stopping());
}
