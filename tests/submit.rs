//! Submitting (issue 2, item 4, and the misuse cases of item 11): every
//! refusal hands the job back — also a submit that was already blocked when
//! the stop began — `feed` returns what it did not submit, in order, and
//! closing every submitter completes the run. No job is lost: each test
//! accounts for every job it made.

mod common_api;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common_api::{assert_balanced, rt, Gate, HANG};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;
use winddown::{DrainPolicy, Runtime, StopReason, SubmitError, SubmitTimeoutError, Submitter};

/// A one-worker pool whose jobs block on `gate` and report their id on the
/// returned channel when they start.
fn gated_pool(
    rt: &mut Runtime,
    name: &str,
    capacity: usize,
    gate: &Arc<Gate>,
) -> (Submitter<u32>, Receiver<u32>) {
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let gate = gate.clone();
    let submitter = rt
        .pool::<u32>(name)
        .workers(1)
        .capacity(capacity)
        .start(move |n, _token| {
            started_tx.send(n).unwrap();
            gate.wait();
            Ok(())
        })
        .unwrap()
        .into_submitter();
    (submitter, started_rx)
}

/// Submits `job` on a new thread; the result arrives on the returned channel.
fn submit_in_thread(
    submitter: &Submitter<u32>,
    job: u32,
) -> Receiver<Result<(), SubmitError<u32>>> {
    let s = submitter.clone();
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || tx.send(s.submit(job)).unwrap());
    rx
}

/// Asserts that the submit on `rx` is still blocked (a "not early" check:
/// it must not return while the queue stays full).
#[track_caller]
fn assert_still_blocked<T: std::fmt::Debug>(rx: &Receiver<T>) {
    match rx.recv_timeout(Duration::from_millis(50)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("the submit returned while the queue was full: {other:?}"),
    }
}

#[test]
fn submitters_and_their_errors_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Submitter<String>>();
    assert_send_sync::<SubmitError<String>>();
    assert_send_sync::<SubmitTimeoutError<String>>();
    assert_send_sync::<winddown::TrySubmitError<String>>();
}

#[test]
fn a_blocked_submit_gets_its_job_back_when_the_stop_begins() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "cap1", 1, &gate);
    submitter.submit(1).unwrap();
    assert_eq!(started.recv_timeout(HANG), Ok(1), "job 1 is on the worker");
    submitter.submit(2).unwrap(); // fills the queue
    let blocked = submit_in_thread(&submitter, 3);
    assert_still_blocked(&blocked);
    assert!(runtime.handle().request("stop"));
    match blocked.recv_timeout(HANG).expect("the blocked submit hung") {
        Err(SubmitError(job)) => assert_eq!(job, 3),
        Ok(()) => panic!("job 3 was accepted after the stop"),
    }
    gate.open();
    let report = runtime.run();
    assert_balanced(&report);
    let pool = &report.pools[0];
    assert_eq!((pool.submitted, pool.succeeded), (2, 2), "{report:#}");
    assert_eq!(started.try_iter().collect::<Vec<_>>(), [2]);
}

#[test]
fn a_blocked_submit_to_a_zero_capacity_pool_gets_its_job_back_when_the_stop_begins() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "cap0", 0, &gate);
    submitter.submit(1).unwrap();
    assert_eq!(started.recv_timeout(HANG), Ok(1));
    let blocked = submit_in_thread(&submitter, 2);
    assert_still_blocked(&blocked);
    runtime.handle().request("stop");
    assert_eq!(
        blocked
            .recv_timeout(HANG)
            .expect("hung")
            .unwrap_err()
            .into_inner(),
        2
    );
    gate.open();
    let report = runtime.run();
    assert_balanced(&report);
    assert_eq!(
        (report.pools[0].submitted, report.pools[0].succeeded),
        (1, 1)
    );
}

#[test]
fn many_blocked_submits_all_get_their_jobs_back_and_no_job_is_lost() {
    for policy in [DrainPolicy::Finish, DrainPolicy::HandBack] {
        const PRODUCERS: u32 = 6;
        const PER: u32 = 200;
        let mut runtime = rt().build().unwrap();
        let (ran_tx, ran_rx) = crossbeam_channel::unbounded();
        let submitter = runtime
            .pool::<u32>("many")
            .workers(2)
            .capacity(2)
            .drain(policy)
            .start(move |n, _| {
                ran_tx.send(n).unwrap();
                Ok(())
            })
            .unwrap();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let s = submitter.clone();
                thread::spawn(move || match s.feed(p * PER..(p + 1) * PER) {
                    Ok(_) => Vec::new(),
                    Err(e) => e.into_unsubmitted().collect(),
                })
            })
            .collect();
        drop(submitter);
        // Stop in the middle of the run: after 100 jobs ran.
        let mut ran = BTreeSet::new();
        for _ in 0..100 {
            ran.insert(ran_rx.recv_timeout(HANG).expect("jobs run"));
        }
        runtime.handle().request("midway");
        let refused: Vec<u32> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        let mut report = runtime.run();
        ran.extend(ran_rx.try_iter());
        let handed_back = report.take_handed_back_named::<u32>("many").ok().unwrap();
        assert_balanced(&report);
        let pool = &report.pools[0];
        assert_eq!(pool.succeeded, ran.len() as u64, "{policy:?}");
        assert_eq!(pool.handed_back, handed_back.len() as u64);
        if policy == DrainPolicy::Finish {
            assert!(handed_back.is_empty(), "Finish runs what was queued");
        }
        // Every job exactly once: ran, handed back or refused.
        let mut all: Vec<u32> = ran.iter().copied().collect();
        all.extend(&handed_back);
        all.extend(&refused);
        all.sort_unstable();
        let want: Vec<u32> = (0..PRODUCERS * PER).collect();
        assert_eq!(all, want, "{policy:?}: a job was lost or counted twice");
        assert_eq!(
            pool.submitted,
            u64::from(PRODUCERS * PER) - refused.len() as u64
        );
    }
}

#[test]
fn try_submit_reports_full_and_stopped_and_holds_the_job() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "try", 1, &gate);
    assert_eq!(submitter.try_submit(1).ok(), Some(()));
    assert_eq!(started.recv_timeout(HANG), Ok(1));
    submitter.try_submit(2).unwrap();
    let full = submitter.try_submit(3).unwrap_err();
    assert!(full.is_full() && !full.is_stopped(), "{full:?}");
    assert_eq!(full.to_string(), "submitting to a full pool");
    assert_eq!(full.into_inner(), 3);
    runtime.handle().request("stop");
    let stopped = submitter.try_submit(4).unwrap_err();
    assert!(stopped.is_stopped() && !stopped.is_full(), "{stopped:?}");
    assert_eq!(stopped.to_string(), "submitting to a stopped pool");
    assert_eq!(stopped.into_inner(), 4);
    gate.open();
    let report = runtime.run();
    assert_balanced(&report);
    assert_eq!(report.pools[0].submitted, 2);
}

#[test]
fn try_submit_to_a_zero_capacity_pool_with_its_worker_busy_is_full() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "try0", 0, &gate);
    submitter.submit(1).unwrap();
    assert_eq!(started.recv_timeout(HANG), Ok(1));
    assert!(submitter.try_submit(2).unwrap_err().is_full());
    gate.open();
    drop(submitter);
    let report = runtime.run();
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(report.pools[0].submitted, 1);
}

#[test]
fn submit_timeout_times_out_with_the_job_when_the_queue_stays_full() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "timeout", 1, &gate);
    submitter.submit(1).unwrap();
    assert_eq!(started.recv_timeout(HANG), Ok(1));
    submitter.submit(2).unwrap();
    let start = Instant::now();
    let err = submitter
        .submit_timeout(3, Duration::from_millis(40))
        .unwrap_err();
    assert!(
        start.elapsed() >= Duration::from_millis(40),
        "returned early"
    );
    assert!(err.is_timeout() && !err.is_stopped());
    assert_eq!(err.to_string(), "timed out submitting to a full pool");
    assert_eq!(err.into_inner(), 3);
    let start = Instant::now();
    let err = submitter
        .submit_deadline(4, start + Duration::from_millis(20))
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(err, SubmitTimeoutError::Timeout(4));
    assert!(submitter
        .submit_timeout(5, Duration::ZERO)
        .unwrap_err()
        .is_timeout());
    gate.open();
    drop(submitter);
    let report = runtime.run();
    assert_balanced(&report);
    assert_eq!(report.pools[0].submitted, 2);
}

#[test]
fn submit_timeout_returns_stopped_with_the_job_when_the_stop_begins_while_it_waits() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "tstop", 1, &gate);
    submitter.submit(1).unwrap();
    assert_eq!(started.recv_timeout(HANG), Ok(1));
    submitter.submit(2).unwrap();
    let waiters: Vec<_> = [Duration::from_secs(3600), Duration::MAX]
        .into_iter()
        .enumerate()
        .map(|(i, timeout)| {
            let s = submitter.clone();
            let (tx, rx) = crossbeam_channel::bounded(1);
            thread::spawn(move || tx.send(s.submit_timeout(10 + i as u32, timeout)).unwrap());
            rx
        })
        .collect();
    let deadline_waiter = {
        let s = submitter.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            let far = Instant::now() + Duration::from_secs(3600);
            tx.send(s.submit_deadline(20, far)).unwrap()
        });
        rx
    };
    for w in &waiters {
        assert_still_blocked(w);
    }
    runtime.handle().request("stop");
    for (i, w) in waiters.iter().enumerate() {
        let err = w.recv_timeout(HANG).expect("hung").unwrap_err();
        assert_eq!(err, SubmitTimeoutError::Stopped(10 + i as u32));
        assert_eq!(err.to_string(), "submitting to a stopped pool");
    }
    assert_eq!(
        deadline_waiter.recv_timeout(HANG).expect("hung"),
        Err(SubmitTimeoutError::Stopped(20))
    );
    gate.open();
    let report = runtime.run();
    assert_balanced(&report);
    assert_eq!(report.pools[0].submitted, 2);
}

#[test]
fn feed_returns_the_unsubmitted_rest_in_order() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "feed", 1, &gate);
    let (taken_tx, taken_rx) = crossbeam_channel::unbounded();
    let feeder = {
        let s = submitter.clone();
        thread::spawn(move || s.feed((0..10).inspect(move |n| taken_tx.send(*n).unwrap())))
    };
    // Job 0 on the worker, job 1 in the queue (`feed` takes 2 from the
    // iterator only once 1 went in), the feed blocked on 2.
    assert_eq!(started.recv_timeout(HANG), Ok(0));
    for want in 0..=2 {
        assert_eq!(taken_rx.recv_timeout(HANG), Ok(want));
    }
    runtime.handle().request("stop");
    let err = feeder.join().unwrap().unwrap_err();
    assert_eq!(err.submitted, 2);
    assert_eq!(err.to_string(), "pool stopped after 2 submitted jobs");
    assert_eq!(err.job, 2);
    assert_eq!(
        err.into_unsubmitted().collect::<Vec<_>>(),
        (2..10).collect::<Vec<_>>()
    );
    gate.open();
    let report = runtime.run();
    assert_balanced(&report);
    assert_eq!(
        (report.pools[0].submitted, report.pools[0].succeeded),
        (2, 2)
    );
}

#[test]
fn feed_submits_everything_while_running_and_returns_the_count() {
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<u32>("feedall")
        .workers(2)
        .capacity(1)
        .start(|_, _| Ok(()))
        .unwrap();
    assert_eq!(submitter.feed(0..500).unwrap(), 500);
    assert_eq!(submitter.feed(Vec::new()).unwrap(), 0);
    drop(submitter);
    let report = runtime.run();
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(report.pools[0].succeeded, 500);
}

#[test]
fn submit_after_stop_returns_the_job() {
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<Box<String>>("after")
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    runtime.handle().request("stop");
    assert!(submitter.is_closed());
    let job = Box::new("precious".to_owned());
    let err = submitter.submit(job).unwrap_err();
    assert_eq!(err.to_string(), "submitting to a stopped pool");
    assert_eq!(*err.into_inner(), "precious");
    let err = submitter.feed(vec![Box::new("a".into()), Box::new("b".into())]);
    let rest: Vec<String> = err.unwrap_err().into_unsubmitted().map(|b| *b).collect();
    assert_eq!(rest, ["a", "b"]);
    let report = runtime.run();
    assert_balanced(&report);
    assert_eq!(report.pools[0].submitted, 0);
    // A submitter that outlives its runtime still hands jobs back.
    assert_eq!(
        *submitter.submit(Box::new("late".into())).unwrap_err().0,
        "late"
    );
    assert!(submitter
        .try_submit(Box::new("late".into()))
        .unwrap_err()
        .is_stopped());
}

#[test]
fn dropping_every_submitter_completes_the_run_with_reason_completed() {
    let mut runtime = rt().build().unwrap();
    let submitter = runtime
        .pool::<u32>("drop")
        .workers(3)
        .capacity(4)
        .start(|_, _| Ok(()))
        .unwrap();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let s = submitter.clone();
            thread::spawn(move || {
                for n in 0..250 {
                    s.submit(p * 1000 + n).unwrap();
                }
                // `s` drops here.
            })
        })
        .collect();
    drop(submitter);
    let start = Instant::now();
    let report = runtime.run(); // no request: completes by itself
    assert!(start.elapsed() < HANG);
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(report.exit_code, 0);
    assert_balanced(&report);
    assert_eq!(report.pools[0].succeeded, 1000);
    assert!(report.timings.hard_stop.is_none());
}

#[test]
fn the_run_completes_only_once_every_pool_is_closed() {
    let mut runtime = rt().build().unwrap();
    let a = runtime
        .pool::<u32>("a")
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    let b = runtime
        .pool::<u32>("b")
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    let handle = runtime.handle();
    a.submit(1).unwrap();
    drop(a);
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || tx.send(runtime.run()).unwrap());
    match rx.recv_timeout(Duration::from_millis(100)) {
        Err(RecvTimeoutError::Timeout) => {}
        Ok(report) => panic!("completed with pool b still open: {report:#}"),
        Err(e) => panic!("{e}"),
    }
    assert!(!handle.is_stopping());
    b.submit(2).unwrap();
    b.close();
    let report = rx.recv_timeout(HANG).expect("the run did not complete");
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(report.pool("a").unwrap().succeeded, 1);
    assert_eq!(report.pool("b").unwrap().succeeded, 1);
    assert!(b.submit(3).is_err());
}

#[test]
fn close_refuses_new_work_but_queued_jobs_still_run() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "close", 8, &gate);
    let other = submitter.clone();
    for n in 0..5 {
        submitter.submit(n).unwrap();
    }
    assert_eq!(started.recv_timeout(HANG), Ok(0));
    let blocked = {
        // Fill the queue so a submit blocks, then close: it returns its job.
        for n in 5..9 {
            submitter.submit(n).unwrap();
        }
        submit_in_thread(&submitter, 99)
    };
    assert_still_blocked(&blocked);
    submitter.close();
    submitter.close(); // idempotent
    assert!(submitter.is_closed() && other.is_closed());
    assert_eq!(blocked.recv_timeout(HANG).expect("hung").unwrap_err().0, 99);
    assert_eq!(other.submit(100).unwrap_err().0, 100);
    assert_eq!(submitter.pool_name(), "close");
    assert!(format!("{submitter:?}").contains("close"));
    gate.open();
    let report = runtime.run(); // closed and drained: completes by itself
    assert_eq!(report.reason, StopReason::Completed);
    assert_balanced(&report);
    assert_eq!(report.pools[0].succeeded, 9);
    assert_eq!(
        started.try_iter().collect::<Vec<_>>(),
        (1..9).collect::<Vec<_>>()
    );
}

#[test]
fn a_job_that_submits_to_its_own_full_pool_does_not_deadlock_the_stop() {
    let mut runtime = rt()
        .grace(Duration::from_secs(30))
        .kill_grace(Duration::from_secs(30))
        .build()
        .unwrap();
    let own: Arc<OnceLock<Submitter<u32>>> = Arc::new(OnceLock::new());
    let refused = Arc::new(Mutex::new(Vec::new()));
    let (blocking_tx, blocking_rx) = crossbeam_channel::unbounded();
    let submitter = {
        let (own, refused) = (own.clone(), refused.clone());
        runtime
            .pool::<u32>("self")
            .workers(1)
            .capacity(1)
            .start(move |n, _token| {
                let s = own.get().expect("set before the first job");
                // Fan out: two children per job, so the one worker soon
                // blocks on its own full queue.
                for child in [2 * n + 1, 2 * n + 2] {
                    blocking_tx.send(child).unwrap();
                    if let Err(SubmitError(job)) = s.submit(child) {
                        refused.lock().push(job);
                    }
                }
                Ok(())
            })
            .unwrap()
    };
    own.set(submitter.clone()).unwrap();
    submitter.submit(0).unwrap();
    drop(submitter);
    // The worker now blocks on a submit to its own full queue: the child it
    // announced last stays unsubmitted.
    let mut announced = 0;
    let mut last = None;
    loop {
        match blocking_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(child) => {
                announced += 1;
                last = Some(child);
            }
            Err(RecvTimeoutError::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let last = last.expect("the job ran");
    let start = Instant::now();
    runtime.handle().request("stop");
    let report = runtime.run();
    assert!(
        start.elapsed() < HANG,
        "the stop took {:?}",
        start.elapsed()
    );
    assert!(report.stuck.is_empty(), "{report:#}");
    assert!(report.timings.hard_stop.is_none(), "{report:#}");
    assert_balanced(&report);
    let refused = refused.lock().clone();
    // Every child announced (also by the queued jobs that ran during the
    // drain) was submitted or refused; job 0 came from the test. The last
    // one was refused: had it gone in, it would have run and announced more.
    let mut last = last;
    for child in blocking_rx.try_iter() {
        announced += 1;
        last = child;
    }
    assert!(refused.contains(&last), "{refused:?} lacks {last}");
    let pool = &report.pools[0];
    assert_eq!(
        pool.submitted - 1 + refused.len() as u64,
        announced,
        "{report:#}"
    );
}

#[test]
fn dropping_the_runtime_releases_a_blocked_submit_with_its_job() {
    let mut runtime = rt().build().unwrap();
    let gate = Gate::new();
    let (submitter, started) = gated_pool(&mut runtime, "dropped", 0, &gate);
    submitter.submit(1).unwrap();
    assert_eq!(started.recv_timeout(HANG), Ok(1));
    let blocked = submit_in_thread(&submitter, 2);
    assert_still_blocked(&blocked);
    // Drop on another thread: it joins the worker, which waits on the gate.
    let dropper = thread::spawn(move || drop(runtime));
    assert_eq!(blocked.recv_timeout(HANG).expect("hung").unwrap_err().0, 2);
    gate.open();
    dropper.join().unwrap();
    assert!(submitter.is_closed());
}
