//! The in-process measurement API (issue 12, point 2): `Measure` rebuilds
//! and stops a runtime N times and summarises drain latency, return latency
//! and hook time; the trigger waits for readiness; a run that stops by
//! itself is an error unless the trial says so; a stuck run counts as
//! undrained; setup errors carry the run's index. No assertion here bounds a
//! time from above.

mod common_api;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common_api::rt;
use winddown::{
    Measure, MeasureError, Measurement, Percentiles, Runtime, StopReason, Trial, MEASURE_REQUEST,
};

/// A runtime with an idle two-worker pool whose submitter the trial keeps,
/// so the run does not complete by itself.
fn idle_pool() -> anyhow::Result<Trial> {
    let mut rt = rt().build()?;
    let jobs = rt.pool::<u32>("m").workers(2).start(|_, _| Ok(()))?;
    Ok(Trial::new(rt).keep(jobs))
}

#[track_caller]
fn assert_ordered(p: Percentiles) {
    assert!(
        p.min <= p.p50 && p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.max,
        "{p:?}"
    );
}

#[test]
fn every_run_is_rebuilt_stopped_by_the_request_and_summarised() {
    let built = AtomicUsize::new(0);
    let m: Measurement = Measure::new(12)
        .warmup(3)
        .run(|run| {
            assert_eq!(run, built.fetch_add(1, Ordering::Relaxed), "runs in order");
            idle_pool()
        })
        .unwrap();
    assert_eq!(
        built.load(Ordering::Relaxed),
        15,
        "3 warm-up + 12 runs built"
    );
    assert_eq!(m.runs(), 12, "warm-up runs are left out");
    assert_eq!(m.undrained(), 0);
    for s in m.samples() {
        assert_eq!(s.reason, StopReason::Requested(MEASURE_REQUEST.into()));
        assert_eq!(s.exit_code, 0);
        let drain = s.drain_latency.expect("an idle pool drains");
        assert!(
            drain <= s.return_latency,
            "{s:?}: run returns after the drain"
        );
    }
    let drain = m.drain_latency().expect("every run drained");
    assert_eq!(drain.count, 12);
    assert_ordered(drain);
    assert_ordered(m.return_latency());
    assert_eq!(
        m.total_return_latency(),
        m.samples()
            .iter()
            .map(|s| s.return_latency)
            .sum::<Duration>()
    );
    let shown = m.to_string();
    assert!(shown.starts_with("drain latency   min "), "{shown}");
    assert!(shown.contains("\nreturn latency  min "), "{shown}");
    assert!(shown.contains("\nhook time       min "), "{shown}");
    assert!(shown.contains("(n = 12)"), "{shown}");
    assert!(!shown.contains("undrained"), "{shown}");
}

#[test]
fn a_bare_runtime_is_a_trial_triggered_at_once() {
    // A runtime with nothing in it is a trial too; with no thread at all
    // it would complete by itself, so give it a service that waits for the
    // stop.
    let m = Measure::new(3)
        .run(|_| {
            let mut rt = rt().build()?;
            rt.spawn_service("svc", |token| {
                token.wait();
                Ok(())
            })?;
            Ok::<Runtime, anyhow::Error>(rt)
        })
        .unwrap();
    assert_eq!(m.runs(), 3);
    assert!(m
        .samples()
        .iter()
        .all(|s| s.reason == StopReason::Requested(MEASURE_REQUEST.into())));
}

#[test]
fn hook_time_is_the_sum_of_every_hook() {
    const NAP: Duration = Duration::from_millis(3);
    let m = Measure::new(4)
        .run(|_| {
            let mut rt = rt().build()?;
            let jobs = rt.pool::<u32>("h").workers(1).start(|_, _| Ok(()))?;
            // The naps are the work being measured, not synchronisation.
            rt.on_stop_accepting("mark", Duration::from_secs(5), || {
                std::thread::sleep(NAP);
                Ok(())
            });
            rt.on_release("close", Duration::from_secs(5), || {
                std::thread::sleep(NAP);
                Ok(())
            });
            Ok::<_, anyhow::Error>(Trial::new(rt).keep(jobs))
        })
        .unwrap();
    // Both hooks ran in every run: at least two naps each (a sleep never
    // returns early); the return comes after them.
    assert!(m.hook_time().min >= 2 * NAP, "{m}");
    for s in m.samples() {
        assert!(s.return_latency >= s.hook_time, "{s:?}");
    }
}

#[test]
fn the_trigger_waits_until_the_trial_is_ready() {
    // The background thread says ready only after it has waited 20 ms for a
    // stop that must not come yet: if the trigger did not wait for the
    // message, the wait would see the stop and the run would record it.
    let early = Arc::new(AtomicUsize::new(0));
    let m = Measure::new(3)
        .run(|_| {
            let mut rt = rt().build()?;
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let early = early.clone();
            rt.spawn_service("ready", move |token| {
                if token.wait_timeout(Duration::from_millis(20)) {
                    early.fetch_add(1, Ordering::Relaxed);
                }
                let _ = ready_tx.send(());
                token.wait();
                Ok(())
            })?;
            Ok::<_, anyhow::Error>(Trial::new(rt).ready_on(ready_rx))
        })
        .unwrap();
    assert_eq!(early.load(Ordering::Relaxed), 0, "stopped before ready");
    assert_eq!(m.runs(), 3);
}

#[test]
fn the_trigger_comes_after_the_delay() {
    const DELAY: Duration = Duration::from_millis(15);
    // (setup returned, the service saw the stop), per run.
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let m = Measure::new(2)
        .run(|_| {
            let mut rt = rt().build()?;
            let (stopped_tx, stopped_rx) = crossbeam_channel::bounded(1);
            rt.spawn_service("svc", move |token| {
                token.wait();
                let _ = stopped_tx.send(Instant::now());
                Ok(())
            })?;
            let seen = seen.clone();
            // Stamped before the trial goes to the helper, which starts its
            // timer only once it has the trial.
            let armed = Instant::now();
            Ok::<_, anyhow::Error>(Trial::new(rt).trigger_after(DELAY).keep(Record {
                armed,
                stopped: stopped_rx,
                seen,
            }))
        })
        .unwrap();
    assert_eq!(m.runs(), 2);
    let seen = seen.lock();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|(armed, stopped)| *stopped - *armed >= DELAY),
        "{seen:?}"
    );
}

/// Dropped after `run` returned: moves the service's stamp into `seen`.
struct Record {
    armed: Instant,
    stopped: crossbeam_channel::Receiver<Instant>,
    seen: Arc<parking_lot::Mutex<Vec<(Instant, Instant)>>>,
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Ok(stopped) = self.stopped.try_recv() {
            self.seen.lock().push((self.armed, stopped));
        }
    }
}

#[test]
fn a_run_that_completes_by_itself_is_an_error_unless_the_trial_says_so() {
    let completing = |by_itself: bool| {
        move |_| {
            let mut rt = rt().build()?;
            let jobs = rt.pool::<u32>("c").workers(1).start(|_, _| Ok(()))?;
            jobs.submit(1).map_err(|_| anyhow::anyhow!("refused"))?;
            drop(jobs); // no submitter left: the run completes
                        // Never ready: only the run's own stop can end the wait.
            let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(1);
            let trial = Trial::new(rt).ready_on(ready_rx).keep(ready_tx);
            Ok::<_, anyhow::Error>(if by_itself {
                trial.stopped_by_itself()
            } else {
                trial
            })
        }
    };
    match Measure::new(2).run(completing(false)) {
        Err(MeasureError::StoppedEarly { run, reason }) => {
            assert_eq!(run, 0);
            assert_eq!(reason, StopReason::Completed);
        }
        other => panic!("expected StoppedEarly, got {other:?}"),
    }
    let m = Measure::new(2).run(completing(true)).unwrap();
    assert!(m
        .samples()
        .iter()
        .all(|s| s.reason == StopReason::Completed));
    assert_eq!(m.undrained(), 0);
}

#[test]
fn a_run_stuck_past_the_kill_grace_counts_as_undrained() {
    let m = Measure::new(2)
        .run(|_| {
            let mut rt = rt()
                .grace(Duration::from_millis(10))
                .kill_grace(Duration::from_millis(10))
                .build()?;
            // The job waits for a sender the trial keeps: it is released only
            // after `run` returned, and its thread is then detached.
            let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
            let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
            let jobs = rt.pool::<()>("s").workers(1).start(move |(), _| {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })?;
            jobs.submit(()).map_err(|_| anyhow::anyhow!("refused"))?;
            Ok::<_, anyhow::Error>(
                Trial::new(rt)
                    .ready_on(started_rx)
                    .keep(jobs)
                    .keep(release_tx),
            )
        })
        .unwrap();
    assert_eq!(m.undrained(), 2);
    assert!(m.drain_latency().is_none());
    assert!(m.samples().iter().all(|s| s.exit_code == 1));
    assert!(m.to_string().contains("undrained: 2 of 2 runs"), "{m}");
    assert!(m.to_string().contains("no run drained"), "{m}");
}

#[test]
fn a_setup_error_carries_the_run_index() {
    let err = Measure::new(3)
        .warmup(1)
        .run(|run| {
            if run == 2 {
                anyhow::bail!("no database");
            }
            idle_pool()
        })
        .unwrap_err();
    match &err {
        MeasureError::Setup { run, source } => {
            assert_eq!(*run, 2);
            assert_eq!(source.to_string(), "no database");
        }
        other => panic!("expected Setup, got {other:?}"),
    }
    assert_eq!(err.to_string(), "run 2: the setup failed: no database");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn zero_runs_is_refused_without_building_anything() {
    let built = AtomicUsize::new(0);
    let err = Measure::new(0)
        .warmup(2)
        .run(|_| {
            built.fetch_add(1, Ordering::Relaxed);
            idle_pool()
        })
        .unwrap_err();
    assert!(matches!(err, MeasureError::NoRuns), "{err:?}");
    assert_eq!(built.load(Ordering::Relaxed), 0);
}
