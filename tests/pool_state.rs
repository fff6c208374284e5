//! Per-worker state (`PoolBuilder::start_with`) and live counts
//! (`PoolStats`): init runs once per worker on its own thread, the state is
//! reused across that worker's jobs and dropped on its thread at exit, init
//! failures are reported and fail the run, a pool whose every init failed
//! closes and hands back its queue without hanging the run, and the live
//! counts follow jobs held on channels. No sleeps: every step waits on a
//! channel; the only timeouts are "does not hang" bounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver};
use winddown::{DrainPolicy, Report, Runtime, StopReason, SubmitError, WorkerStage};

/// Generous: only a hang reaches it.
const HANG: Duration = Duration::from_secs(30);

fn runtime() -> Runtime {
    Runtime::builder()
        .signals(false)
        .build()
        .expect("runtime builds")
}

fn thread_name() -> String {
    thread::current().name().unwrap_or("<unnamed>").to_owned()
}

/// Runs the runtime on its own thread and fails the test if it does not
/// return within [`HANG`].
fn run_bounded(rt: Runtime) -> Report {
    let (tx, rx) = bounded(1);
    thread::spawn(move || {
        let _ = tx.send(rt.run());
    });
    rx.recv_timeout(HANG)
        .expect("the run returns (does not hang)")
}

#[test]
fn init_runs_once_per_worker_on_that_workers_thread() {
    let mut rt = runtime();
    let inits = Arc::new(Mutex::new(Vec::new()));
    let seen = inits.clone();
    let pool = rt
        .pool::<u32>("conn")
        .workers(3)
        .start_with(
            move |worker| {
                seen.lock().unwrap().push((worker, thread_name()));
                Ok(worker)
            },
            |worker: &mut usize, _job, _token| {
                // The state a job gets is the one its own worker built.
                assert_eq!(thread_name(), format!("conn-{worker}"));
                Ok(())
            },
        )
        .expect("pool starts");
    pool.feed(0..300).expect("running");
    drop(pool);
    let report = run_bounded(rt);
    let mut inits = inits.lock().unwrap().clone();
    inits.sort();
    assert_eq!(
        inits,
        [
            (0, "conn-0".into()),
            (1, "conn-1".into()),
            (2, "conn-2".into())
        ],
        "one init per worker, on the worker's own thread"
    );
    let p = report.pool("conn").unwrap();
    assert_eq!((p.succeeded, p.failed, p.panicked), (300, 0, 0));
    assert_eq!(report.exit_code, 0, "{report:#}");
}

/// A per-worker state that counts its jobs and records where it is dropped.
struct Conn {
    thread: String,
    jobs: u64,
    drops: Arc<Mutex<Vec<(String, String, u64)>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.drops
            .lock()
            .unwrap()
            .push((self.thread.clone(), thread_name(), self.jobs));
    }
}

#[test]
fn state_is_reused_across_a_workers_jobs_and_dropped_on_its_thread_before_run_returns() {
    const JOBS: u64 = 1_000;
    let mut rt = runtime();
    let drops = Arc::new(Mutex::new(Vec::new()));
    let inits = Arc::new(AtomicUsize::new(0));
    let (d, i) = (drops.clone(), inits.clone());
    let pool = rt
        .pool::<u64>("reuse")
        .workers(2)
        .start_with(
            move |_| {
                i.fetch_add(1, Ordering::Relaxed);
                Ok(Conn {
                    thread: thread_name(),
                    jobs: 0,
                    drops: d.clone(),
                })
            },
            |conn: &mut Conn, _job, _token| {
                assert_eq!(conn.thread, thread_name());
                conn.jobs += 1;
                Ok(())
            },
        )
        .expect("pool starts");
    pool.feed(0..JOBS).expect("running");
    drop(pool);
    let report = run_bounded(rt);
    // `run` returned: every worker's teardown has already run.
    let drops = drops.lock().unwrap().clone();
    assert_eq!(inits.load(Ordering::Relaxed), 2, "no state built per job");
    assert_eq!(
        drops.len(),
        2,
        "each worker's state dropped once: {drops:?}"
    );
    for (built_on, dropped_on, _) in &drops {
        assert_eq!(built_on, dropped_on, "dropped on the thread that built it");
    }
    let total: u64 = drops.iter().map(|(_, _, jobs)| jobs).sum();
    assert_eq!(total, JOBS, "every job ran with one of the two states");
    assert_eq!(report.pool("reuse").unwrap().succeeded, JOBS);
}

#[test]
fn an_init_error_is_reported_and_the_other_workers_take_every_job() {
    let mut rt = runtime();
    let pool = rt
        .pool::<u32>("db")
        .workers(2)
        .start_with(
            |worker| {
                anyhow::ensure!(worker != 1, "replica {worker} is down");
                Ok(())
            },
            |_: &mut (), _job, _token| {
                assert_eq!(thread_name(), "db-0", "the failed worker takes no job");
                Ok(())
            },
        )
        .expect("an init failure is not a build error");
    pool.feed(0..50)
        .expect("one worker still runs, so it accepts");
    pool.close(); // no more work; `pool` stays, to read the final counts

    let report = run_bounded(rt);
    let p = report.pool("db").unwrap();
    assert_eq!((p.submitted, p.succeeded), (50, 50));
    assert!(p.is_balanced());
    assert_eq!(p.worker_failures.len(), 1, "{:?}", p.worker_failures);
    let f = &p.worker_failures[0];
    assert_eq!((f.worker, f.thread.as_str()), (1, "db-1"));
    assert_eq!(f.stage, WorkerStage::Init);
    assert_eq!(f.message, "replica 1 is down");
    assert!(!f.panicked);
    assert!(report.has_failures());
    assert_eq!(report.exit_code, 1, "an init failure fails the run");
    assert_eq!(pool.stats().init_failures, 1);
    // Both forms of the report say so, in words.
    let line = report.to_string();
    assert!(
        line.contains(
            "db: 50 done, 0 failed, 0 panicked, 0 handed back, 0 abandoned, 1 worker failed"
        ),
        "{line}"
    );
    let detail = format!("{report:#}");
    assert!(
        detail.contains("worker db-1 failed in its init: replica 1 is down"),
        "{detail}"
    );
}

#[test]
fn an_init_panic_is_reported_as_panicked() {
    let mut rt = runtime();
    let pool = rt
        .pool::<u32>("boom")
        .workers(2)
        .start_with(
            |worker| {
                if worker == 0 {
                    panic!("no config for worker {worker}");
                }
                Ok(())
            },
            |_: &mut (), _job, _token| Ok(()),
        )
        .expect("pool starts");
    pool.feed(0..10).expect("running");
    drop(pool);
    let report = run_bounded(rt);
    let p = report.pool("boom").unwrap();
    assert_eq!(p.succeeded, 10);
    let f = &p.worker_failures[..];
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].worker, f[0].panicked), (0, true));
    assert_eq!(f[0].message, "no config for worker 0");
    assert_eq!(report.exit_code, 1);
}

#[test]
fn when_every_init_fails_the_pool_closes_and_hands_back_its_queue() {
    const CAP: u32 = 8;
    let mut rt = runtime();
    // The inits wait for the gate, so jobs queue up before they fail.
    let (gate, gate_rx) = bounded::<()>(0);
    let pool = rt
        .pool::<u32>("dead")
        .workers(2)
        .capacity(CAP as usize)
        .start_with(
            move |worker| -> anyhow::Result<()> {
                let _ = gate_rx.recv(); // until the gate is dropped
                anyhow::bail!("worker {worker}: cannot connect")
            },
            |_: &mut (), _job, _token| -> anyhow::Result<()> { unreachable!("no worker started") },
        )
        .expect("pool starts");
    let id = pool.id();
    for n in 0..CAP {
        pool.submit(n).expect("queued while the inits wait");
    }
    assert_eq!(pool.stats().queued, CAP as usize);
    // The queue is full: the next submit blocks until the last failing init
    // closes the pool, then hands its job back.
    thread::spawn(move || drop(gate));
    let SubmitError(refused) = pool.submit(CAP).unwrap_err();
    assert_eq!(refused, CAP, "the blocked submit got its job back");
    assert!(pool.is_closed());
    let live = pool.stats();
    assert_eq!((live.init_failures, live.queued), (2, CAP as usize));
    let submitter = pool.submitter();
    drop(pool);
    let mut report = run_bounded(rt);
    assert_eq!(report.reason, StopReason::Completed, "{report:#}");
    let p = report.pool("dead").unwrap().clone();
    assert_eq!((p.submitted, p.handed_back, p.succeeded), (8, 8, 0));
    assert!(p.is_balanced());
    let mut workers: Vec<usize> = p.worker_failures.iter().map(|f| f.worker).collect();
    workers.sort_unstable();
    assert_eq!(workers, [0, 1]);
    assert_eq!(report.exit_code, 1);
    assert_eq!(report.take_handed_back(id), (0..CAP).collect::<Vec<_>>());
    let end = submitter.stats();
    assert_eq!((end.queued, end.handed_back, end.abandoned), (0, 8, 0));
}

#[test]
fn a_fail_fast_pool_stops_the_run_on_an_init_failure() {
    let mut rt = runtime();
    let token = rt.handle().token();
    let pool = rt
        .pool::<u32>("strict")
        .workers(2)
        .fail_fast(true)
        .start_with(
            move |worker| {
                if worker == 0 {
                    anyhow::bail!("bad credentials");
                }
                // Would hold the run open forever unless the stop comes.
                token.wait();
                Ok(())
            },
            |_: &mut (), _job, _token| Ok(()),
        )
        .expect("pool starts");
    let _keep = pool; // a submitter alive: only the trigger can end the run
    let report = run_bounded(rt);
    match &report.reason {
        StopReason::JobFailed { pool, error } => {
            assert_eq!(pool, "strict");
            assert!(
                error.contains("strict-0") && error.contains("bad credentials"),
                "{error}"
            );
        }
        other => panic!("expected the init failure to stop the run, got {other:?}"),
    }
    assert_eq!(report.exit_code, 1);
}

struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("flush failed");
    }
}

#[test]
fn a_panic_in_the_states_drop_is_reported_as_a_teardown_failure() {
    let mut rt = runtime();
    let pool = rt
        .pool::<u32>("flush")
        .workers(1)
        .start_with(|_| Ok(PanicsOnDrop), |_: &mut PanicsOnDrop, _, _| Ok(()))
        .expect("pool starts");
    pool.submit(1).expect("running");
    drop(pool);
    let report = run_bounded(rt);
    let p = report.pool("flush").unwrap();
    assert_eq!(p.succeeded, 1);
    let f = &p.worker_failures[..];
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].stage, WorkerStage::Teardown);
    assert!(f[0].panicked && f[0].message == "flush failed", "{f:?}");
    assert_eq!(report.exit_code, 1);
}

/// A job for the live-count tests: `Hold` waits for one release, the others
/// end at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    Hold(u32),
    Fail,
    Panic,
}

fn held_pool(
    rt: &mut Runtime,
    name: &str,
    drain: DrainPolicy,
) -> (
    winddown::Pool<Job>,
    Receiver<Job>,
    crossbeam_channel::Sender<()>,
) {
    let (started_tx, started) = unbounded();
    let (release, release_rx) = unbounded::<()>();
    let pool = rt
        .pool::<Job>(name)
        .workers(1)
        .capacity(4)
        .drain(drain)
        .start(move |job, _token| {
            started_tx.send(job).unwrap();
            match job {
                Job::Hold(_) => {
                    let _ = release_rx.recv();
                    Ok(())
                }
                Job::Fail => anyhow::bail!("failed on purpose"),
                Job::Panic => panic!("panicked on purpose"),
            }
        })
        .expect("pool starts");
    (pool, started, release)
}

#[test]
fn live_counts_follow_jobs_held_on_channels() {
    let mut rt = runtime();
    let handle = rt.handle();
    let (pool, started, release) = held_pool(&mut rt, "live", DrainPolicy::Finish);
    let jobs = [
        Job::Hold(0),
        Job::Hold(1),
        Job::Fail,
        Job::Panic,
        Job::Hold(4),
    ];
    for job in jobs {
        pool.submit(job).expect("running");
    }
    assert_eq!(started.recv_timeout(HANG), Ok(Job::Hold(0)));
    // The only worker is inside job 0; the other four wait in the queue.
    let s = pool.stats();
    assert_eq!((s.workers, s.submitted), (1, 5));
    assert_eq!((s.in_flight, s.queued, s.finished()), (1, 4, 0));
    assert_eq!(
        handle.pool_stats("live"),
        Some(s),
        "nothing moves while held"
    );
    assert_eq!(handle.pools(), [("live".to_owned(), s)]);

    release.send(()).unwrap();
    // The worker counted job 0 before it took job 1.
    assert_eq!(started.recv_timeout(HANG), Ok(Job::Hold(1)));
    let s = pool.stats();
    assert_eq!((s.in_flight, s.queued, s.succeeded), (1, 3, 1));

    release.send(()).unwrap();
    for want in [Job::Fail, Job::Panic, Job::Hold(4)] {
        assert_eq!(started.recv_timeout(HANG), Ok(want));
    }
    let s = pool.stats();
    assert_eq!((s.succeeded, s.failed, s.panicked), (2, 1, 1));
    assert_eq!((s.in_flight, s.queued), (1, 0));
    assert!(s.finished() + s.handed_back <= s.submitted);

    release.send(()).unwrap();
    pool.close(); // no more work; `pool` stays, to read the final counts
    let report = run_bounded(rt);
    // Final: the snapshot equals the report.
    let end = pool.stats();
    let p = report.pool("live").unwrap();
    assert_eq!(
        (end.submitted, end.succeeded, end.failed, end.panicked),
        (p.submitted, p.succeeded, p.failed, p.panicked)
    );
    assert_eq!((end.succeeded, end.in_flight, end.queued), (3, 0, 0));
    assert_eq!(
        end.submitted,
        end.finished() + end.handed_back + end.abandoned,
        "the identity holds once the report is made"
    );
    assert!(handle.pools().is_empty(), "the runtime let go of its pools");
}

#[test]
fn handed_back_jobs_show_in_the_final_counts() {
    let mut rt = runtime();
    let handle = rt.handle();
    let (pool, started, release) = held_pool(&mut rt, "back", DrainPolicy::HandBack);
    for n in 0..4 {
        pool.submit(Job::Hold(n)).expect("running");
    }
    assert_eq!(started.recv_timeout(HANG), Ok(Job::Hold(0)));
    assert_eq!(pool.stats().queued, 3);
    let submitter = pool.submitter();
    // Stop while job 0 runs; release it from another thread once the stop
    // has begun, so the worker takes nothing more.
    let stopper = {
        let handle = handle.clone();
        thread::spawn(move || {
            handle.request("test");
            release.send(()).unwrap();
        })
    };
    let report = run_bounded(rt);
    stopper.join().unwrap();
    let p = report.pool("back").unwrap();
    assert_eq!((p.succeeded, p.handed_back), (1, 3), "{report:#}");
    let end = submitter.stats();
    assert_eq!((end.succeeded, end.handed_back, end.queued), (1, 3, 0));
    drop(pool);
}
