//! Hooks and phases (issue 2, item 8): release hooks run last registered
//! first, each exactly once, each within its budget — an overrunning one is
//! timed out and the next starts; errors and panics are recorded and the rest
//! still run; they run after a timed-out drain too; stop-accepting hooks run
//! at the stop; a stop requested while releasing changes nothing.

mod common_api;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use common_api::{assert_balanced, rt, Gate, HANG};
use parking_lot::Mutex;
use winddown::{HookKind, HookOutcome, Phase, Runtime, StopReason};

const BUDGET: Duration = Duration::from_secs(5);

/// Registers release hooks `0..n` that append their index to the returned
/// log.
fn logged_release_hooks(runtime: &mut Runtime, n: usize) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    for i in 0..n {
        let log = log.clone();
        runtime.on_release(format!("r{i}"), BUDGET, move || {
            log.lock().push(format!("r{i}"));
            Ok(())
        });
    }
    log
}

#[test]
fn release_hooks_run_last_registered_first_each_exactly_once() {
    let mut runtime = rt().build().unwrap();
    let log = logged_release_hooks(&mut runtime, 5);
    let report = runtime.run(); // no pools, no threads: completes at once
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(*log.lock(), ["r4", "r3", "r2", "r1", "r0"]);
    let names: Vec<&str> = report.hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["r4", "r3", "r2", "r1", "r0"]);
    for h in &report.hooks {
        assert_eq!(h.kind, HookKind::Release);
        assert_eq!(h.outcome, HookOutcome::Ok);
        assert!(h.elapsed < BUDGET);
    }
    assert_eq!(report.exit_code, 0);
}

#[test]
fn release_hooks_run_once_when_the_runtime_is_dropped_without_run() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut runtime = rt().build().unwrap();
    for _ in 0..3 {
        let calls = calls.clone();
        runtime.on_release("count", BUDGET, move || {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
    drop(runtime);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn a_failing_or_panicking_hook_is_recorded_and_the_rest_still_run() {
    let mut runtime = rt().build().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    runtime.on_release("last", BUDGET, move || {
        l.lock().push("last");
        Ok(())
    });
    runtime.on_release("panics", BUDGET, || panic!("hook went bang"));
    runtime.on_release("fails", BUDGET, || {
        Err(anyhow!("cache unreachable").context("flushing the cache"))
    });
    let l = log.clone();
    runtime.on_release("first", BUDGET, move || {
        l.lock().push("first");
        Ok(())
    });
    let report = runtime.run();
    assert_eq!(*log.lock(), ["first", "last"]);
    let outcomes: Vec<(&str, &HookOutcome)> = report
        .hooks
        .iter()
        .map(|h| (h.name.as_str(), &h.outcome))
        .collect();
    assert_eq!(outcomes.len(), 4);
    assert_eq!(outcomes[0], ("first", &HookOutcome::Ok));
    match outcomes[1] {
        ("fails", HookOutcome::Failed(msg)) => {
            assert!(msg.contains("flushing the cache") && msg.contains("cache unreachable"));
        }
        other => panic!("{other:?}"),
    }
    match outcomes[2] {
        ("panics", HookOutcome::Panicked(msg)) => assert!(msg.contains("hook went bang")),
        other => panic!("{other:?}"),
    }
    assert_eq!(outcomes[3], ("last", &HookOutcome::Ok));
    assert!(report.hooks[1].outcome.is_failure() && report.hooks[2].outcome.is_failure());
    assert_eq!(report.exit_code, 1, "a failed hook makes the exit code 1");
    assert!(report.to_string().contains("2 hooks failed"), "{report}");
}

#[test]
fn an_overrunning_hook_is_timed_out_and_the_next_one_starts() {
    let mut runtime = rt().build().unwrap();
    let stuck = Gate::new(); // opened at the end, so the hook's thread ends
    let (next_tx, next_rx) = crossbeam_channel::bounded(1);
    runtime.on_release("next", BUDGET, move || {
        next_tx.send(Instant::now()).unwrap();
        Ok(())
    });
    let g = stuck.clone();
    let budget = Duration::from_millis(100);
    runtime.on_release("slow", budget, move || {
        g.wait();
        Ok(())
    });
    let start = Instant::now();
    let report = runtime.run();
    let elapsed = start.elapsed();
    stuck.open();
    assert!(elapsed < HANG, "run took {elapsed:?}");
    let slow = &report.hooks[0];
    assert_eq!(slow.name, "slow");
    assert_eq!(slow.outcome, HookOutcome::TimedOut);
    assert!(
        slow.elapsed >= budget,
        "timed out early: {:?}",
        slow.elapsed
    );
    assert_eq!(report.hooks[1].outcome, HookOutcome::Ok);
    let next_started = next_rx.try_recv().expect("the next hook ran");
    assert!(
        next_started >= start + budget,
        "the next hook began too early"
    );
    assert_eq!(
        report.exit_code, 1,
        "a timed-out hook makes the exit code 1"
    );
}

#[test]
fn a_zero_budget_hook_that_blocks_is_timed_out_and_a_huge_budget_does_not_overflow() {
    let mut runtime = rt().build().unwrap();
    let stuck = Gate::new();
    runtime.on_release("huge", Duration::MAX, || Ok(()));
    let g = stuck.clone();
    runtime.on_release("zero", Duration::ZERO, move || {
        g.wait();
        Ok(())
    });
    let report = runtime.run();
    stuck.open();
    assert_eq!(report.hooks[0].outcome, HookOutcome::TimedOut);
    assert_eq!(report.hooks[1].outcome, HookOutcome::Ok);
}

#[test]
fn release_hooks_run_after_a_timed_out_drain_too() {
    let mut runtime = rt()
        .grace(Duration::from_millis(50))
        .kill_grace(Duration::from_millis(50))
        .build()
        .unwrap();
    let stuck = Gate::new();
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let g = stuck.clone();
    let submitter = runtime
        .pool::<u32>("stuck")
        .workers(1)
        .start(move |_, _| {
            started_tx.send(()).unwrap();
            g.wait(); // ignores every token
            Ok(())
        })
        .unwrap();
    submitter.submit(1).unwrap();
    started_rx.recv_timeout(HANG).unwrap();
    let log = logged_release_hooks(&mut runtime, 2);
    runtime.handle().request("stop");
    let report = runtime.run();
    stuck.open();
    assert!(report.timings.hard_stop.is_some(), "{report:#}");
    assert_eq!(report.stuck.len(), 1);
    assert_eq!(*log.lock(), ["r1", "r0"]);
    assert!(report.hooks.iter().all(|h| h.outcome == HookOutcome::Ok));
    assert_balanced(&report);
    assert_eq!(report.pools[0].abandoned, 1);
    assert_eq!(report.exit_code, 1);
}

#[test]
fn stop_accepting_hooks_run_at_the_stop_in_order_before_the_release_hooks() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<u32>("p")
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    let handle = runtime.handle();
    for name in ["a", "b"] {
        let (log, handle, submitter) = (log.clone(), handle.clone(), submitter.clone());
        runtime.on_stop_accepting(name, BUDGET, move || {
            // By now the queues are closed and the phase says so.
            log.lock().push(format!(
                "{name}:{}:closed={}",
                handle.phase(),
                submitter.is_closed()
            ));
            Ok(())
        });
    }
    let (l, h) = (log.clone(), handle.clone());
    runtime.on_release("release", BUDGET, move || {
        l.lock().push(format!("release:{}", h.phase()));
        Ok(())
    });
    runtime.on_stop_accepting("fails", BUDGET, || Err(anyhow!("not ready")));
    assert!(log.lock().is_empty(), "no hook runs before the stop");
    runtime.handle().request("stop");
    let report = runtime.run();
    assert_eq!(
        *log.lock(),
        [
            "a:stop_accepting:closed=true",
            "b:stop_accepting:closed=true",
            "release:releasing",
        ]
    );
    let kinds: Vec<(&str, HookKind)> = report
        .hooks
        .iter()
        .map(|h| (h.name.as_str(), h.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("a", HookKind::StopAccepting),
            ("b", HookKind::StopAccepting),
            ("fails", HookKind::StopAccepting),
            ("release", HookKind::Release),
        ]
    );
    assert!(matches!(report.hooks[2].outcome, HookOutcome::Failed(_)));
    assert_eq!(report.exit_code, 1);
    assert_eq!(handle.phase(), Phase::Done);
}

#[test]
fn a_stop_requested_during_releasing_changes_nothing() {
    let phases = Arc::new(Mutex::new(Vec::new()));
    let p = phases.clone();
    let mut runtime = rt()
        .on_phase(move |phase| p.lock().push(phase))
        .build()
        .unwrap();
    let handle = runtime.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let (h, c) = (handle.clone(), calls.clone());
    runtime.on_release("requests", BUDGET, move || {
        c.fetch_add(1, Ordering::SeqCst);
        assert_eq!(h.phase(), Phase::Releasing);
        assert!(!h.request("late"), "the stop is already under way");
        assert_eq!(h.phase(), Phase::Releasing);
        Ok(())
    });
    runtime.handle().request("first");
    let report = runtime.run();
    assert_eq!(report.reason, StopReason::Requested("first".into()));
    assert_eq!(report.hooks.len(), 1);
    assert_eq!(report.hooks[0].outcome, HookOutcome::Ok, "{report:#}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        *phases.lock(),
        [
            Phase::StopAccepting,
            Phase::Draining,
            Phase::Releasing,
            Phase::Done
        ]
    );
    assert_eq!(handle.phase(), Phase::Done);
    assert!(!handle.request("after"), "still nothing after the run");
    assert_eq!(report.exit_code, 0);
}

#[test]
fn a_panicking_phase_observer_is_ignored() {
    let mut runtime = rt()
        .on_phase(|phase| assert!(phase != Phase::Draining, "observer bug"))
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    runtime.on_release("still runs", BUDGET, move || {
        r.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    runtime.handle().request("stop");
    let report = runtime.run();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(report.exit_code, 0);
}
