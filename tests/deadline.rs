//! The drain deadline (issue 2, items 7 and 11): a job that ignores every
//! token is named as stuck — thread, key, time in job — and abandoned, and
//! `run` still returns within grace + kill grace; a job that watches the hard
//! token returns at the deadline; zero and `Duration::MAX` durations have
//! defined answers; drain latency is reported. Time bounds are "not early"
//! (the deadline is honoured) and "does not hang" (generous slack).

mod common_api;

use std::time::{Duration, Instant};

use common_api::{assert_balanced, rt, Gate, HANG};
use crossbeam_channel::select;
use winddown::{DrainPolicy, StopReason, ThreadOutcome};

/// Slack on top of the deadlines: two noisy cores, debug builds.
const SLACK: Duration = Duration::from_secs(3);

#[test]
fn a_job_ignoring_every_token_is_named_as_stuck_and_abandoned() {
    let grace = Duration::from_millis(200);
    let kill_grace = Duration::from_millis(100);
    let mut runtime = rt().grace(grace).kill_grace(kill_grace).build().unwrap();
    let stuck = Gate::new();
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let g = stuck.clone();
    let submitter = runtime
        .pool::<u32>("stuckp")
        .workers(1)
        .capacity(4)
        .key(|n: &u32| format!("item-{n}"))
        .start(move |n, _token| {
            started_tx.send(n).unwrap();
            g.wait(); // a blocking call that ignores every token
            Ok(())
        })
        .unwrap();
    submitter.feed([7, 8, 9]).unwrap();
    assert_eq!(started_rx.recv_timeout(HANG), Ok(7));
    let start = Instant::now();
    runtime.handle().request("stop");
    let mut report = runtime.run();
    let elapsed = start.elapsed();
    stuck.open(); // lets the detached thread end; it records nothing more
    assert!(elapsed >= grace + kill_grace, "returned early: {elapsed:?}");
    assert!(
        elapsed < grace + kill_grace + SLACK,
        "took {elapsed:?}\n{report:#}"
    );
    assert_eq!(report.stuck.len(), 1, "{report:#}");
    let s = &report.stuck[0];
    assert_eq!(s.thread, "stuckp-0");
    assert_eq!(s.pool.as_deref(), Some("stuckp"));
    assert_eq!(s.job_key.as_deref(), Some("\"item-7\""));
    let in_job = s.in_job.expect("it was in a job");
    assert!(in_job >= grace + kill_grace, "in job for {in_job:?}");
    let pool = report.pools[0].clone();
    assert_eq!(pool.abandoned, 1);
    assert_eq!(pool.abandoned_keys, ["\"item-7\""]);
    // The queued jobs never started: handed back, in order, even under
    // Finish, because the deadline passed.
    assert_eq!(
        report.take_handed_back_named::<u32>("stuckp").ok(),
        Some(vec![8, 9])
    );
    assert_balanced(&report);
    assert_eq!(pool.succeeded, 0);
    let hard_at = report.timings.hard_stop.expect("the hard stop fired");
    assert!(hard_at >= grace, "hard stop at {hard_at:?}");
    assert_eq!(report.timings.drain_latency, None, "the drain timed out");
    assert_eq!(report.exit_code, 1, "a stuck thread makes the exit code 1");
    let short = report.to_string();
    assert!(short.contains("drain timed out, 1 thread stuck"), "{short}");
    let long = format!("{report:#}");
    assert!(long.contains("stuck: stuckp-0 in job \"item-7\""), "{long}");
    assert_eq!(started_rx.try_iter().count(), 0, "nothing else started");
}

#[test]
fn a_stuck_background_thread_is_named_and_the_run_still_returns() {
    let grace = Duration::from_millis(100);
    let mut runtime = rt().grace(grace).kill_grace(grace).build().unwrap();
    let stuck = Gate::new();
    let g = stuck.clone();
    runtime
        .spawn("bg-stuck", move |_token| {
            g.wait();
            Ok(())
        })
        .unwrap();
    let start = Instant::now();
    runtime.handle().request("stop");
    let report = runtime.run();
    stuck.open();
    assert!(start.elapsed() < 2 * grace + SLACK);
    assert_eq!(report.stuck.len(), 1);
    assert_eq!(report.stuck[0].thread, "bg-stuck");
    assert_eq!(report.stuck[0].pool, None);
    assert_eq!(report.threads[0].outcome, ThreadOutcome::Stuck);
    assert_eq!(report.exit_code, 1);
}

#[test]
fn a_job_watching_the_hard_token_returns_at_the_deadline() {
    let grace = Duration::from_millis(150);
    // A kill grace the test would notice: the job must not need it.
    let kill_grace = Duration::from_secs(20);
    let mut runtime = rt().grace(grace).kill_grace(kill_grace).build().unwrap();
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let (aborted_tx, aborted_rx) = crossbeam_channel::unbounded();
    let submitter = runtime
        .pool::<u32>("coop")
        .workers(2)
        .start(move |n, token| {
            started_tx.send(n).unwrap();
            if n == 0 {
                token.wait_hard();
            } else {
                select! {
                    recv(crossbeam_channel::never::<()>()) -> _ => {}
                    recv(token.hard_receiver()) -> _ => {}
                }
            }
            aborted_tx.send(token.is_hard_stopping()).unwrap();
            Ok(())
        })
        .unwrap();
    submitter.feed([0, 1]).unwrap();
    for _ in 0..2 {
        started_rx.recv_timeout(HANG).unwrap();
    }
    let start = Instant::now();
    runtime.handle().request("stop");
    let report = runtime.run();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= grace,
        "returned before the deadline: {elapsed:?}"
    );
    assert!(elapsed < grace + SLACK, "took {elapsed:?}\n{report:#}");
    assert_eq!(aborted_rx.try_iter().collect::<Vec<_>>(), [true, true]);
    assert!(report.stuck.is_empty(), "{report:#}");
    let hard_at = report.timings.hard_stop.expect("the hard stop fired");
    assert!(hard_at >= grace);
    let drain = report.timings.drain_latency.expect("every thread exited");
    assert!(drain >= grace, "drain latency {drain:?}");
    assert_eq!(report.pools[0].succeeded, 2);
    assert_balanced(&report);
    assert_eq!(
        report.exit_code, 1,
        "nothing stuck, but the hard stop cut the jobs"
    );
    assert!(report.to_string().contains("hard stop at"), "{report}");
}

#[test]
fn a_background_thread_watching_the_hard_token_returns_at_the_deadline() {
    let grace = Duration::from_millis(100);
    let mut runtime = rt()
        .grace(grace)
        .kill_grace(Duration::from_secs(20))
        .build()
        .unwrap();
    runtime
        .spawn("bg-coop", |token| {
            token.wait(); // the graceful stop: "finishing up"
            token.wait_hard(); // ... which takes until the deadline
            Ok(())
        })
        .unwrap();
    runtime.handle().request("stop");
    let report = runtime.run();
    assert!(report.stuck.is_empty());
    assert!(report.timings.hard_stop.is_some());
    assert_eq!(report.threads[0].outcome, ThreadOutcome::Returned);
    assert!(report.timings.total < grace + SLACK);
}

#[test]
fn zero_grace_fires_the_hard_token_at_once_and_hands_back_the_queue() {
    let mut runtime = rt()
        .grace(Duration::ZERO)
        .kill_grace(Duration::from_secs(20))
        .build()
        .unwrap();
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let submitter = runtime
        .pool::<u32>("zero")
        .workers(1)
        .capacity(8)
        .drain(DrainPolicy::Finish)
        .start(move |n, token| {
            started_tx.send(n).unwrap();
            token.wait_hard();
            Ok(())
        })
        .unwrap();
    submitter.feed(0..5).unwrap();
    assert_eq!(started_rx.recv_timeout(HANG), Ok(0));
    let start = Instant::now();
    runtime.handle().request("now");
    let mut report = runtime.run();
    assert!(start.elapsed() < SLACK, "took {:?}", start.elapsed());
    assert!(report.timings.hard_stop.is_some());
    assert!(report.stuck.is_empty(), "{report:#}");
    assert_eq!(report.pools[0].succeeded, 1);
    assert_eq!(
        report.take_handed_back_named::<u32>("zero").ok(),
        Some(vec![1, 2, 3, 4])
    );
    assert_balanced(&report);
    assert_eq!(started_rx.try_iter().count(), 0);
}

#[test]
fn zero_grace_and_zero_kill_grace_name_a_stuck_job_at_once() {
    let mut runtime = rt()
        .grace(Duration::ZERO)
        .kill_grace(Duration::ZERO)
        .build()
        .unwrap();
    let stuck = Gate::new();
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let g = stuck.clone();
    let submitter = runtime
        .pool::<u32>("zz")
        .workers(1)
        .start(move |_, _| {
            started_tx.send(()).unwrap();
            g.wait();
            Ok(())
        })
        .unwrap();
    submitter.submit(1).unwrap();
    started_rx.recv_timeout(HANG).unwrap();
    runtime.handle().request("now");
    let report = runtime.run();
    stuck.open();
    assert!(report.timings.total < SLACK);
    assert_eq!(report.pools[0].abandoned, 1);
    assert_eq!(report.stuck[0].thread, "zz-0");
    assert_balanced(&report);
}

#[test]
fn a_huge_grace_does_not_overflow_and_a_clean_drain_is_not_held_up() {
    let mut runtime = rt()
        .grace(Duration::MAX)
        .kill_grace(Duration::MAX)
        .build()
        .unwrap();
    runtime.on_release("huge budget", Duration::MAX, || Ok(()));
    runtime.on_stop_accepting("huge budget too", Duration::MAX, || Ok(()));
    let submitter = runtime
        .pool::<u32>("huge")
        .workers(2)
        .start(|_, token| {
            token.wait_timeout(Duration::from_millis(5));
            Ok(())
        })
        .unwrap();
    runtime
        .spawn("huge-bg", |token| {
            assert!(token.wait_timeout(Duration::MAX));
            Ok(())
        })
        .unwrap();
    submitter.feed(0..10).unwrap();
    let start = Instant::now();
    runtime.handle().request("stop");
    let report = runtime.run();
    assert!(start.elapsed() < SLACK);
    assert!(report.timings.hard_stop.is_none());
    assert!(report.timings.drain_latency.is_some());
    assert_eq!(report.pools[0].succeeded, 10);
    assert_eq!(report.threads[0].outcome, ThreadOutcome::Returned);
    assert_eq!(report.exit_code, 0, "{report:#}");
}

#[test]
fn drain_latency_is_present_and_at_most_the_total() {
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<u32>("lat")
        .workers(2)
        .start(|_, _| Ok(()))
        .unwrap();
    runtime
        .spawn("lat-bg", |token| {
            token.wait();
            Ok(())
        })
        .unwrap();
    submitter.feed(0..100).unwrap();
    runtime.handle().request("stop");
    let report = runtime.run();
    let t = report.timings;
    let drain = t.drain_latency.expect("every thread exited in time");
    assert!(drain <= t.total, "{drain:?} > {:?}", t.total);
    assert!(t.join <= t.total);
    assert!(t.release <= t.total);
    assert!(t.triggered >= t.started);
    assert!(t.hard_stop.is_none());
    assert!(t.total < HANG);
    assert_eq!(report.reason, StopReason::Requested("stop".into()));
    assert!(format!("{report:#}").contains("drain latency"));
}

#[test]
fn the_hard_stop_path_goes_through_every_phase_in_order() {
    let phases = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let p = phases.clone();
    let mut runtime = rt()
        .grace(Duration::from_millis(20))
        .kill_grace(Duration::from_secs(20))
        .on_phase(move |phase| p.lock().push(phase))
        .build()
        .unwrap();
    runtime
        .spawn("hard-phases", |token| {
            token.wait_hard();
            Ok(())
        })
        .unwrap();
    runtime.handle().request("stop");
    let report = runtime.run();
    assert!(report.timings.hard_stop.is_some());
    use winddown::Phase::*;
    assert_eq!(
        *phases.lock(),
        [StopAccepting, Draining, HardStop, Releasing, Done]
    );
}

#[test]
fn a_runtime_dropped_with_a_stuck_job_returns_within_its_deadlines() {
    let grace = Duration::from_millis(100);
    let mut runtime = rt().grace(grace).kill_grace(grace).build().unwrap();
    let stuck = Gate::new();
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let g = stuck.clone();
    let submitter = runtime
        .pool::<u32>("drop-stuck")
        .workers(1)
        .start(move |_, _| {
            started_tx.send(()).unwrap();
            g.wait();
            Ok(())
        })
        .unwrap();
    submitter.submit(1).unwrap();
    started_rx.recv_timeout(HANG).unwrap();
    let start = Instant::now();
    drop(runtime);
    let elapsed = start.elapsed();
    stuck.open();
    assert!(elapsed >= 2 * grace, "dropped early: {elapsed:?}");
    assert!(elapsed < 2 * grace + SLACK, "took {elapsed:?}");
}
