//! The job-ownership protocol (`src/slot.rs`, the worker loop in
//! `src/pool.rs`, `Unit::seal`/`report`) under stress and by model check:
//! every job a pool accepted ends in exactly one bucket of the report, is
//! dropped exactly once, and a handed-back job never ran — whatever the
//! interleaving of the workers and the joiner at the hard stop.
//!
//! * `stress_*`: real pools with a full queue of tens of thousands of
//!   trivial jobs stopped with zero or tiny grace and kill grace, so the
//!   seal lands while workers race through the queue; every job carries its
//!   id and a shared tally (ran, dropped) the report is checked against.
//! * `a_key_function_slower_than_the_grace_*`: the deterministic slow-key
//!   case.
//! * `model_*`: an exhaustive interleaving check of the protocol itself over
//!   a simulated queue and state word.

mod common_api;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use common_api::{assert_balanced, rt, Gate, HANG};
use crossbeam_channel::{Receiver, Sender};
use winddown::{DrainPolicy, PoolReport, Report, StopReason};

// ===== The stress test =====

/// What a job is planned to do when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Ok,
    Fail,
    Panic,
}

const PLANNED_PANIC: &str = "planned panic";
const PLANNED_FAILURE: &str = "planned failure";

/// Per-id state shared by every job of a round.
struct Tally {
    ran: Vec<AtomicU8>,
    dropped: Vec<AtomicU8>,
    plan: Vec<Plan>,
    /// Each drop sends its id: the test waits for the detached workers'
    /// drops on this channel instead of polling.
    drop_tx: Sender<u32>,
}

impl Tally {
    fn ran(&self, id: u32) -> u8 {
        self.ran[id as usize].load(Ordering::SeqCst)
    }
}

/// A job: an id and the tally it reports to when it runs and when it drops.
struct Job {
    id: u32,
    tally: Arc<Tally>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Job({})", self.id)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.tally.dropped[self.id as usize].fetch_add(1, Ordering::SeqCst);
        let _ = self.tally.drop_tx.send(self.id);
    }
}

/// The panics the stress test plans are expected: keep them off stderr
/// (there can be hundreds per run). Every other panic is printed as usual.
fn quiet_planned_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            if !msg.is_some_and(|m| m.starts_with(PLANNED_PANIC)) {
                default(info);
            }
        }));
    });
}

/// The base seed: `WINDDOWN_TEST_SEED` or the clock. Round `i` uses
/// `base + i`, so setting the variable to a failing round's seed replays
/// that round first.
fn base_seed() -> u64 {
    let seed = std::env::var("WINDDOWN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (replay with WINDDOWN_TEST_SEED={seed})");
    seed
}

/// Prints the round's seed and parameters if the round fails.
struct OnFailure(String);

impl Drop for OnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("FAILED {} (replay with WINDDOWN_TEST_SEED)", self.0);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    None,
    Fast,
    /// Sleeps `ms` milliseconds for every id divisible by `every`: longer
    /// than grace + kill grace, so the seal finds workers inside it.
    Slow {
        every: u32,
        ms: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GateMode {
    /// The first jobs are released just before the stop: every worker races
    /// through the full queue while the runtime stops.
    RaceTheStop,
    /// The first jobs block until after `run`: every worker is stuck in a
    /// job, nothing else is taken.
    StuckInJobs,
}

#[derive(Clone, Debug)]
struct Params {
    seed: u64,
    workers: usize,
    capacity: usize,
    grace: Duration,
    kill_grace: Duration,
    policy: DrainPolicy,
    key: Key,
    gate: GateMode,
    /// Spins between opening the gate and the request (jitter, not
    /// synchronisation).
    spin: u32,
}

impl Params {
    fn draw(seed: u64, small: bool) -> Params {
        let mut rng = fastrand::Rng::with_seed(seed);
        let ms = |on: bool| Duration::from_millis(u64::from(on));
        let key = match rng.u32(0..10) {
            0..=3 => Key::None,
            4..=7 => Key::Fast,
            _ => Key::Slow {
                every: [1, 7, 64][rng.usize(0..3)],
                ms: rng.u64(3..=5),
            },
        };
        Params {
            seed,
            workers: rng.usize(2..=8),
            capacity: if small {
                rng.usize(20_000..=30_000)
            } else {
                rng.usize(20_000..=65_536)
            },
            grace: ms(rng.bool()),
            kill_grace: ms(rng.bool()),
            policy: if rng.bool() {
                DrainPolicy::Finish
            } else {
                DrainPolicy::HandBack
            },
            key,
            gate: if rng.u32(0..8) == 0 {
                GateMode::StuckInJobs
            } else {
                GateMode::RaceTheStop
            },
            spin: if rng.bool() { 0 } else { rng.u32(0..20_000) },
        }
    }
}

fn plans(seed: u64, n: usize) -> Vec<Plan> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| match rng.u32(0..1000) {
            0..=2 => Plan::Panic,
            3..=40 => Plan::Fail,
            _ => Plan::Ok,
        })
        .collect()
}

/// One round: `workers` gated jobs (one per worker) plus a full queue of
/// `capacity` trivial ones, then the stop. Checks everything the report
/// says against the tally.
fn stress_round(p: &Params) {
    let _guard = OnFailure(format!("{p:?}"));
    let w = p.workers as u32;
    let n = p.capacity + p.workers;
    let (drop_tx, drop_rx) = crossbeam_channel::unbounded();
    let tally = Arc::new(Tally {
        ran: (0..n).map(|_| AtomicU8::new(0)).collect(),
        dropped: (0..n).map(|_| AtomicU8::new(0)).collect(),
        plan: plans(p.seed, n),
        drop_tx,
    });
    let gate = Gate::new();
    let mut runtime = rt()
        .grace(p.grace)
        .kill_grace(p.kill_grace)
        .build()
        .unwrap();
    let builder = runtime
        .pool::<Job>("stress")
        .workers(p.workers)
        .capacity(p.capacity)
        .drain(p.policy);
    let builder = match p.key {
        Key::None => builder,
        Key::Fast => builder.key(|j: &Job| j.id),
        Key::Slow { every, ms } => builder.key(move |j: &Job| {
            // Slow on the workers only: the report also calls the key, for
            // every handed-back job, on the runtime's thread.
            let on_worker = std::thread::current()
                .name()
                .is_some_and(|t| t.starts_with("stress-"));
            if on_worker && j.id % every == 0 {
                // Slow user code, not synchronisation.
                std::thread::sleep(Duration::from_millis(ms));
            }
            j.id
        }),
    };
    let job_gate = gate.clone();
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let pool = builder
        .start(move |job: Job, _token| {
            job.tally.ran[job.id as usize].fetch_add(1, Ordering::SeqCst);
            if job.id < w {
                let _ = started_tx.send(job.id);
                job_gate.wait();
            }
            match job.tally.plan[job.id as usize] {
                Plan::Ok => Ok(()),
                Plan::Fail => Err(anyhow!("{PLANNED_FAILURE} {}", job.id)),
                Plan::Panic => panic!("{PLANNED_PANIC} {}", job.id),
            }
        })
        .unwrap();
    let id = pool.id();
    // FIFO and one blocked job per worker: `feed` returns only once every
    // worker has taken one gated job and the queue is full ...
    let jobs = (0..n as u32).map(|id| Job {
        id,
        tally: tally.clone(),
    });
    assert_eq!(pool.feed(jobs).unwrap(), n as u64);
    // ... and is inside it (past the key function and the slot's CASes).
    for _ in 0..w {
        started_rx
            .recv_timeout(HANG)
            .expect("every worker took a gated job");
    }
    if p.gate == GateMode::RaceTheStop {
        gate.open();
        for _ in 0..p.spin {
            std::hint::spin_loop();
        }
    }
    let handle = runtime.handle();
    assert!(handle.request("stress"));
    let mut report = runtime.run();
    drop(pool); // refused anyway: the runtime is done
    let pr = report.pools[0].clone();
    let back = report.take_handed_back(id);
    let ctx = format!("{p:?}\n{report:#}");
    assert_eq!(report.reason, StopReason::Requested("stress".into()));
    assert_balanced(&report);
    assert_eq!(pr.submitted, n as u64, "{ctx}");
    check_stuck(&report, p, &ctx);

    if p.gate == GateMode::StuckInJobs {
        check_stuck_in_jobs(&report, &pr, p, &back, &ctx);
        gate.open();
    }

    // Handed back: never ran, in queue (= id) order, hence distinct, keys
    // in the same order.
    assert_eq!(back.len() as u64, pr.handed_back, "{ctx}");
    let back_ids: Vec<u32> = back.iter().map(|j| j.id).collect();
    assert!(
        back_ids.windows(2).all(|w| w[0] < w[1]),
        "handed back out of order or twice: {ctx}"
    );
    for &i in &back_ids {
        assert_eq!(tally.ran(i), 0, "handed-back job {i} ran: {ctx}");
    }
    if p.key == Key::None {
        assert!(pr.handed_back_keys.is_empty() && pr.abandoned_keys.is_empty());
    } else {
        let want: Vec<String> = back_ids.iter().map(|i| format!("{i:?}")).collect();
        assert_eq!(pr.handed_back_keys, want, "{ctx}");
    }
    assert!(pr.abandoned_keys.len() as u64 <= pr.abandoned, "{ctx}");
    drop(back);

    // Every job is dropped exactly once, also those the detached workers
    // still hold: wait for n drops (each job function has returned by then,
    // so `ran` is final).
    let deadline = Instant::now() + HANG;
    let mut seen = vec![0u8; n];
    for _ in 0..n {
        match drop_rx.recv_deadline(deadline) {
            Ok(i) => seen[i as usize] += 1,
            Err(_) => panic!(
                "only {} of {n} jobs dropped (leaked): {ctx}",
                seen.iter().filter(|s| **s > 0).count()
            ),
        }
    }
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(*s, 1, "job {i} dropped {s} times: {ctx}");
        assert_eq!(tally.dropped[i].load(Ordering::SeqCst), 1, "{ctx}");
    }
    check_outcomes(&tally, &pr, &back_ids, &ctx);
    drop_rx_after_check(drop_rx, &ctx);
    if std::env::var_os("WINDDOWN_TEST_VERBOSE").is_some() {
        println!(
            "{p:?}: ran {} back {} abandoned {} (keys {}) stuck {}",
            pr.succeeded + pr.failed + pr.panicked,
            pr.handed_back,
            pr.abandoned,
            pr.abandoned_keys.len(),
            report.stuck.len()
        );
    }
}

/// Nothing beyond the n drops came (a second drop of a job would be
/// memory unsafety in the crate; cheap to look for).
fn drop_rx_after_check(drop_rx: Receiver<u32>, ctx: &str) {
    assert!(drop_rx.try_recv().is_err(), "a job dropped twice: {ctx}");
}

/// Ran / succeeded / failed / panicked against the tally, with the
/// abandoned jobs as the only slack (their outcome is unknown to the report).
fn check_outcomes(tally: &Tally, pr: &PoolReport, back_ids: &[u32], ctx: &str) {
    let n = tally.ran.len();
    let mut ran = [0u64; 3];
    for i in 0..n {
        let r = tally.ran(i as u32);
        assert!(r <= 1, "job {i} ran {r} times: {ctx}");
        if r == 1 {
            ran[tally.plan[i] as usize] += 1;
        }
    }
    for &i in back_ids {
        assert_eq!(tally.ran(i), 0, "handed-back job {i} ran later: {ctx}");
    }
    let ran_total: u64 = ran.iter().sum();
    let counted = pr.succeeded + pr.failed + pr.panicked;
    assert!(
        counted <= ran_total && ran_total <= counted + pr.abandoned,
        "{counted} counted, {ran_total} ran, {} abandoned: {ctx}",
        pr.abandoned
    );
    for (what, reported, actual) in [
        ("succeeded", pr.succeeded, ran[Plan::Ok as usize]),
        ("failed", pr.failed, ran[Plan::Fail as usize]),
        ("panicked", pr.panicked, ran[Plan::Panic as usize]),
    ] {
        assert!(
            reported <= actual && actual <= reported + pr.abandoned,
            "{what}: reported {reported}, tally {actual}: {ctx}"
        );
    }
    // Never ran: handed back, or abandoned between `recv` and the run.
    let never = n as u64 - ran_total;
    assert!(
        pr.handed_back <= never && never <= pr.handed_back + pr.abandoned,
        "{ctx}"
    );
    // Every recorded error is one a job that ran was planned to make.
    assert!(pr.errors.len() <= 8, "{ctx}");
    for e in &pr.errors {
        let prefix = if e.panicked {
            PLANNED_PANIC
        } else {
            PLANNED_FAILURE
        };
        let id: u32 = e
            .message
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("error {e:?}: {ctx}"));
        assert!(e.message.contains(prefix), "{e:?}: {ctx}");
        assert_eq!(tally.ran(id), 1, "{e:?}: {ctx}");
        let want = if e.panicked { Plan::Panic } else { Plan::Fail };
        assert_eq!(tally.plan[id as usize], want, "{e:?}: {ctx}");
    }
}

/// The stuck threads are distinct workers of the pool, no one else.
fn check_stuck(report: &Report, p: &Params, ctx: &str) {
    let mut names = BTreeSet::new();
    for s in &report.stuck {
        assert_eq!(s.pool.as_deref(), Some("stress"), "{ctx}");
        let index: usize = s
            .thread
            .strip_prefix("stress-")
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("stuck thread {:?}: {ctx}", s.thread));
        assert!(index < p.workers, "{ctx}");
        assert!(names.insert(index), "stuck twice: {ctx}");
        if p.key == Key::None {
            assert_eq!(s.job_key, None, "{ctx}");
        }
    }
    assert!(
        report.pools[0].abandoned_keys.len() <= report.stuck.len(),
        "{ctx}"
    );
}

/// With every worker blocked in its first job until after `run`, the
/// report is fully determined.
fn check_stuck_in_jobs(report: &Report, pr: &PoolReport, p: &Params, back: &[Job], ctx: &str) {
    let w = p.workers as u64;
    assert_eq!(pr.abandoned, w, "{ctx}");
    assert_eq!(pr.handed_back, pr.submitted - w, "{ctx}");
    assert_eq!((pr.succeeded, pr.failed, pr.panicked), (0, 0, 0), "{ctx}");
    assert_eq!(report.stuck.len(), p.workers, "{ctx}");
    assert!(report.stuck.iter().all(|s| s.in_job.is_some()), "{ctx}");
    assert!(
        back.first().is_some_and(|j| j.id == p.workers as u32),
        "{ctx}"
    );
    if p.key != Key::None {
        let mut keys = pr.abandoned_keys.clone();
        keys.sort_by_key(|k| k.parse::<u32>().ok());
        let want: Vec<String> = (0..p.workers).map(|i| i.to_string()).collect();
        assert_eq!(keys, want, "{ctx}");
    }
}

fn stress(rounds_release: u64, rounds_debug: u64) {
    quiet_planned_panics();
    let debug = cfg!(debug_assertions);
    let rounds = if debug { rounds_debug } else { rounds_release };
    let base = base_seed();
    for round in 0..rounds {
        stress_round(&Params::draw(base.wrapping_add(round), debug));
    }
}

#[test]
fn stress_every_job_ends_in_exactly_one_bucket_and_is_dropped_once() {
    stress(1000, 300);
}

/// The old code lost this job every time: a key function still running at
/// the end of the kill grace. The seal now finds the worker in `HELD`: the
/// job is abandoned (it never runs), the worker is named stuck without a
/// key (none exists yet), and the queued job is handed back.
#[test]
fn a_key_function_slower_than_the_grace_and_kill_grace_abandons_its_job() {
    let mut runtime = rt()
        .grace(Duration::ZERO)
        .kill_grace(Duration::from_millis(1))
        .build()
        .unwrap();
    // The key of job 0 is slower than grace + kill grace by construction: it
    // returns only when the test opens the gate, after `run`. (A 5 ms sleep
    // reproduces it too, but only on an unloaded machine.)
    let gate = Gate::new();
    let (keying_tx, keying_rx) = crossbeam_channel::unbounded();
    let (ran_tx, ran_rx) = crossbeam_channel::unbounded::<u32>();
    let (drop_tx, drop_rx) = crossbeam_channel::unbounded();
    let tally = Arc::new(Tally {
        ran: (0..2).map(|_| AtomicU8::new(0)).collect(),
        dropped: (0..2).map(|_| AtomicU8::new(0)).collect(),
        plan: vec![Plan::Ok; 2],
        drop_tx,
    });
    let key_gate = gate.clone();
    let pool = runtime
        .pool::<Job>("slowkey")
        .workers(1)
        .capacity(1)
        .key(move |j: &Job| {
            if j.id == 0 {
                let _ = keying_tx.send(());
                key_gate.wait();
            }
            j.id
        })
        .start(move |job: Job, _token| {
            job.tally.ran[job.id as usize].fetch_add(1, Ordering::SeqCst);
            let _ = ran_tx.send(job.id);
            Ok(())
        })
        .unwrap();
    let id = pool.id();
    let jobs = (0..2).map(|id| Job {
        id,
        tally: tally.clone(),
    });
    assert_eq!(pool.feed(jobs).unwrap(), 2);
    keying_rx.recv_timeout(HANG).expect("the worker keys job 0");
    runtime.handle().request("stop");
    let mut report = runtime.run();
    gate.open();
    let pr = report.pools[0].clone();
    let back = report.take_handed_back(id);
    let ctx = format!("{report:#}");
    assert_balanced(&report);
    assert_eq!(pr.submitted, 2, "{ctx}");
    assert_eq!((pr.succeeded, pr.failed, pr.panicked), (0, 0, 0), "{ctx}");
    assert_eq!((pr.handed_back, pr.abandoned), (1, 1), "{ctx}");
    assert!(pr.abandoned_keys.is_empty(), "{ctx}");
    assert_eq!(pr.handed_back_keys, ["1"], "{ctx}");
    assert_eq!(back.iter().map(|j| j.id).collect::<Vec<_>>(), [1], "{ctx}");
    assert_eq!(report.stuck.len(), 1, "{ctx}");
    let s = &report.stuck[0];
    assert_eq!(s.thread, "slowkey-0");
    assert_eq!(s.pool.as_deref(), Some("slowkey"));
    assert_eq!(s.job_key, None, "no key yet: {ctx}");
    assert!(s.in_job.is_some(), "it held a job: {ctx}");
    drop(back);
    // The detached worker's key returns, its `run` fails (sealed), and it
    // drops job 0 without running it.
    let mut dropped: Vec<u32> = (0..2)
        .map(|_| drop_rx.recv_timeout(HANG).expect("both jobs dropped"))
        .collect();
    dropped.sort_unstable();
    assert_eq!(dropped, [0, 1]);
    assert_eq!(tally.ran(0), 0, "the abandoned job never ran");
    assert!(ran_rx.try_recv().is_err());
}

// ===== The model check =====
//
// The protocol of `src/slot.rs` and the worker loop of `src/pool.rs`,
// re-implemented as small state machines over a simulated queue, a simulated
// state word per worker, the hand-back list and its lock, and the joiner
// (`PoolCore::seal`). Every interleaving of the steps is explored (a DFS
// over the schedule, memoised on the state: two schedules that reach the
// same state have the same futures, and the state carries every bit of
// history the checks read). Each step is one atomic action of the real
// code; the checks are on the buckets, not on memory orderings.
//
// The word's rules (`slot.rs`):
// * `take`         — CAS IDLE → HELD, fails once sealed;
// * `take_and_run` — CAS IDLE → RUNNING, fails once sealed;
// * `run`          — CAS HELD → RUNNING, fails once sealed;
// * `release`      — CAS HELD → IDLE, fails once sealed;
// * `finish`       — CAS RUNNING → IDLE, fails once sealed;
// * `seal`         — fetch_or of the sealed bit, returns the state it found
//                    (`Sealed::Held` / `Running` / `Idle` / `Again`).

mod model {
    use std::collections::HashMap;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub(super) enum St {
        Idle,
        Held,
        Running,
    }

    /// A worker's state word: `SEALED` bit plus the state.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub(super) struct Word {
        pub(super) sealed: bool,
        pub(super) st: St,
    }

    impl Word {
        /// Every worker transition of `slot.rs`: a CAS from the state it
        /// expects, which a seal (only ever adding the top bit) makes fail.
        fn cas(&mut self, from: St, to: St) -> bool {
            if self.sealed || self.st != from {
                return false;
            }
            self.st = to;
            true
        }

        /// `Slot::seal`: what it found, `None` for `Sealed::Again`.
        fn seal(&mut self) -> Option<St> {
            let again = self.sealed;
            self.sealed = true;
            (!again).then_some(self.st)
        }
    }

    /// Deliberately broken variants, to show the checker catches each.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Variant {
        /// The protocol as implemented.
        Faithful,
        /// The joiner takes the hand-back list before sealing.
        ListBeforeSeal,
        /// The worker hands back without the list lock.
        HandBackWithoutLock,
        /// The worker counts the outcome before its `finish` CAS.
        BumpBeforeFinish,
        /// The joiner never seals (the old code's "read and hope").
        NoSeal,
    }

    #[derive(Clone, Copy, Debug)]
    pub(super) struct Config {
        pub(super) workers: usize,
        pub(super) jobs: u8,
        /// The pool has a key function; `key_panics`: it may panic.
        pub(super) key: bool,
        pub(super) key_panics: bool,
        pub(super) hand_back: bool,
        pub(super) variant: Variant,
        /// Also require an abandoned job to have been in a worker's hands
        /// at its seal (the documented meaning of abandoned).
        pub(super) strict: bool,
    }

    /// The worker loop's program counter (`pool.rs::worker_loop`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Pc {
        /// Loop top: `must_stop()` → return.
        Top,
        /// `try_recv` / `recv`: a job, or closed and empty → return.
        Recv,
        /// `core.key.is_none() && !must_stop()`.
        AfterRecv,
        TakeAndRun,
        Take,
        /// `if must_stop()` after `take`: the hand-back branch.
        AfterTake,
        /// The key function (and the store into `me.key`).
        Key,
        Run,
        /// Inside the job function.
        RunJob,
        Finish,
        /// `record`: the counter bump.
        Bump,
        /// The key function panicked: `drop(job)`, then `release`.
        KeyPanicRelease,
        /// `core.handed_back.lock()`.
        HbLock,
        HbRelease,
        HbPush,
        HbUnlock,
        /// Returned (the done message is sent).
        Done,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct Worker {
        pc: Pc,
        word: Word,
        /// The job this worker is responsible for (from `recv` until it is
        /// counted, pushed, or the worker exits).
        cur: Option<u8>,
        /// Whether the job value itself is still in the worker's hands.
        has_job: bool,
        /// `me.key`.
        key: Option<u8>,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Jpc {
        Trigger,
        Hard,
        Seal(usize),
        List,
        Drain,
        Read,
        Done,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Lock {
        Free,
        Worker(usize),
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct State {
        workers: Vec<Worker>,
        jpc: Jpc,
        soft: bool,
        hard: bool,
        queue: Vec<u8>,
        list: Vec<u8>,
        lock: Lock,
        // History the checks read, per job.
        ran: Vec<u8>,
        dropped: Vec<u8>,
        counted: Vec<u8>,
        /// The counters as the joiner's read saw them.
        snapshot: Option<Vec<u8>>,
        /// The job was in a worker's hands when the joiner sealed it.
        held_at_seal: Vec<bool>,
        /// A worker took the job off the queue after it was sealed.
        taken_after_seal: Vec<bool>,
        handed_back: Vec<u8>,
        explicit: Vec<u8>,
    }

    fn must_stop(s: &State, c: &Config) -> bool {
        s.hard || (c.hand_back && s.soft)
    }

    /// Ends worker `i` (`return`): a job still in hand is dropped.
    fn exit(s: &mut State, i: usize) {
        let w = &mut s.workers[i];
        if w.has_job {
            s.dropped[w.cur.expect("a job in hand") as usize] += 1;
        }
        w.has_job = false;
        w.cur = None;
        w.pc = Pc::Done;
    }

    /// The successors of worker `i`'s next step (empty: blocked or done).
    fn worker_step(s: &State, c: &Config, i: usize) -> Result<Vec<State>, String> {
        let mut n = s.clone();
        let pc = s.workers[i].pc;
        let job = s.workers[i].cur;
        match pc {
            Pc::Done => return Ok(vec![]),
            Pc::Top => {
                if must_stop(s, c) {
                    exit(&mut n, i);
                } else {
                    n.workers[i].pc = Pc::Recv;
                }
            }
            Pc::Recv => {
                // The queue is closed (the joiner seals only after
                // `stop_accepting`; `submitted` is final): empty → return.
                if n.queue.is_empty() {
                    exit(&mut n, i);
                } else {
                    let j = n.queue.remove(0);
                    if n.workers[i].word.sealed {
                        n.taken_after_seal[j as usize] = true;
                    }
                    let w = &mut n.workers[i];
                    (w.cur, w.has_job, w.pc) = (Some(j), true, Pc::AfterRecv);
                }
            }
            Pc::AfterRecv => {
                n.workers[i].pc = if !c.key && !must_stop(s, c) {
                    Pc::TakeAndRun
                } else {
                    Pc::Take
                };
            }
            Pc::TakeAndRun => {
                if n.workers[i].word.cas(St::Idle, St::Running) {
                    n.workers[i].pc = Pc::RunJob;
                } else {
                    exit(&mut n, i);
                }
            }
            Pc::Take => {
                if n.workers[i].word.cas(St::Idle, St::Held) {
                    n.workers[i].pc = Pc::AfterTake;
                } else {
                    exit(&mut n, i);
                }
            }
            Pc::AfterTake => {
                n.workers[i].pc = if must_stop(s, c) {
                    if c.variant == Variant::HandBackWithoutLock {
                        Pc::HbRelease
                    } else {
                        Pc::HbLock
                    }
                } else if c.key {
                    Pc::Key
                } else {
                    Pc::Run
                };
            }
            Pc::Key => {
                let mut ok = n.clone();
                ok.workers[i].key = job;
                ok.workers[i].pc = Pc::Run;
                if !c.key_panics {
                    return Ok(vec![ok]);
                }
                let w = &mut n.workers[i];
                w.has_job = false;
                w.pc = Pc::KeyPanicRelease;
                n.dropped[job.unwrap() as usize] += 1;
                return Ok(vec![ok, n]);
            }
            Pc::Run => {
                if n.workers[i].word.cas(St::Held, St::Running) {
                    n.workers[i].pc = Pc::RunJob;
                } else {
                    exit(&mut n, i);
                }
            }
            Pc::RunJob => {
                let j = job.unwrap() as usize;
                n.ran[j] += 1;
                n.dropped[j] += 1; // the job function consumed it
                n.workers[i].has_job = false;
                n.workers[i].pc = if c.variant == Variant::BumpBeforeFinish {
                    Pc::Bump
                } else {
                    Pc::Finish
                };
            }
            Pc::Finish => {
                if !n.workers[i].word.cas(St::Running, St::Idle) {
                    exit(&mut n, i);
                } else if c.variant == Variant::BumpBeforeFinish {
                    n.workers[i].cur = None;
                    n.workers[i].pc = Pc::Top;
                } else {
                    n.workers[i].pc = Pc::Bump;
                }
            }
            Pc::Bump => {
                n.counted[job.unwrap() as usize] += 1;
                if c.variant == Variant::BumpBeforeFinish {
                    n.workers[i].pc = Pc::Finish;
                } else {
                    n.workers[i].cur = None;
                    n.workers[i].pc = Pc::Top;
                }
            }
            Pc::KeyPanicRelease => {
                if n.workers[i].word.cas(St::Held, St::Idle) {
                    n.workers[i].pc = Pc::Bump;
                } else {
                    exit(&mut n, i);
                }
            }
            Pc::HbLock => {
                if s.lock != Lock::Free {
                    return Ok(vec![]);
                }
                n.lock = Lock::Worker(i);
                n.workers[i].pc = Pc::HbRelease;
            }
            Pc::HbRelease => {
                n.workers[i].pc = if n.workers[i].word.cas(St::Held, St::Idle) {
                    Pc::HbPush
                } else {
                    Pc::HbUnlock
                };
            }
            Pc::HbPush => {
                n.list.push(job.unwrap());
                let w = &mut n.workers[i];
                (w.has_job, w.cur, w.pc) = (false, None, Pc::HbUnlock);
            }
            Pc::HbUnlock => {
                if n.lock == Lock::Worker(i) {
                    n.lock = Lock::Free;
                }
                exit(&mut n, i);
            }
        }
        Ok(vec![n])
    }

    /// The successors of the joiner's next step: the trigger, the hard
    /// stop, then `PoolCore::seal`'s three steps.
    fn joiner_step(s: &State, c: &Config) -> Result<Vec<State>, String> {
        let mut n = s.clone();
        let list_first = c.variant == Variant::ListBeforeSeal;
        match s.jpc {
            Jpc::Done => return Ok(vec![]),
            Jpc::Trigger => {
                n.soft = true;
                n.jpc = Jpc::Hard;
            }
            Jpc::Hard => {
                n.hard = true;
                n.jpc = if list_first { Jpc::List } else { Jpc::Seal(0) };
            }
            Jpc::Seal(i) if i == c.workers => {
                n.jpc = if list_first { Jpc::Drain } else { Jpc::List };
            }
            Jpc::Seal(i) => {
                n.jpc = Jpc::Seal(i + 1);
                if c.variant == Variant::NoSeal {
                    return Ok(vec![n]);
                }
                let seal = |mut n: State| -> Result<State, String> {
                    if let Some(j) = n.workers[i].cur {
                        n.held_at_seal[j as usize] = true;
                    }
                    let w = &mut n.workers[i];
                    match w.word.seal() {
                        Some(St::Held) | Some(St::Running) => {
                            let Some(j) = w.cur else {
                                return Err(format!(
                                    "worker {i} sealed in {:?} with no job",
                                    w.word
                                ));
                            };
                            // A seal that finds RUNNING reports `me.key`.
                            if c.key && w.word.st == St::Running && w.key != Some(j) {
                                return Err(format!("worker {i}: key {:?} for job {j}", w.key));
                            }
                            n.explicit.push(j);
                        }
                        Some(St::Idle) | None => {}
                    }
                    Ok(n)
                };
                if s.workers[i].pc == Pc::Done {
                    // Exited: the joiner skips it if it took the done
                    // message, and seals it harmlessly if not yet.
                    let skipped = n.clone();
                    return Ok(vec![skipped, seal(n)?]);
                }
                return Ok(vec![seal(n)?]);
            }
            Jpc::List => {
                if s.lock != Lock::Free {
                    return Ok(vec![]); // waits for the worker's lock
                }
                n.handed_back.append(&mut n.list);
                n.jpc = if list_first { Jpc::Seal(0) } else { Jpc::Drain };
            }
            Jpc::Drain => {
                if n.queue.is_empty() {
                    n.jpc = Jpc::Read;
                } else {
                    let j = n.queue.remove(0);
                    n.handed_back.push(j);
                }
            }
            Jpc::Read => {
                n.snapshot = Some(n.counted.clone());
                n.jpc = Jpc::Done;
            }
        }
        Ok(vec![n])
    }

    /// Exactly one bucket per job, at the end of a schedule.
    fn check_final(s: &State, c: &Config) -> Result<(), String> {
        if s.workers.iter().any(|w| w.pc != Pc::Done) || s.jpc != Jpc::Done {
            return Err("deadlock: nothing can step".into());
        }
        let snapshot = s.snapshot.as_ref().expect("read");
        let jobs = c.jobs as usize;
        let mut back = vec![0u8; jobs];
        for &j in &s.handed_back {
            back[j as usize] += 1;
        }
        let mut counted_total = 0;
        for j in 0..jobs {
            let (counted, hb, ran) = (snapshot[j], back[j], s.ran[j]);
            if counted > 1 || hb > 1 || counted + hb > 1 {
                return Err(format!("job {j}: counted {counted}, handed back {hb}"));
            }
            if ran > 1 {
                return Err(format!("job {j} ran {ran} times"));
            }
            if hb == 1 && (ran > 0 || s.counted[j] > 0) {
                return Err(format!("job {j} handed back and ran or counted"));
            }
            // Handed back ones are dropped by the caller.
            if s.dropped[j] + hb != 1 {
                return Err(format!("job {j} dropped {} times", s.dropped[j] + hb));
            }
            counted_total += counted + hb;
            let abandoned = counted + hb == 0;
            // Abandoned: it went down with a worker the joiner gave up on.
            // (`strict`: held at the seal, as `PoolReport::abandoned` and
            // `slot.rs` say; see the ignored test below.)
            let with_sealed = s.held_at_seal[j] || (!c.strict && s.taken_after_seal[j]);
            if abandoned && !with_sealed {
                return Err(format!(
                    "job {j} abandoned by difference, but it was not in a sealed worker's hands \
                     (taken off the queue after the seal: {})",
                    s.taken_after_seal[j]
                ));
            }
            if s.explicit.contains(&(j as u8)) && !abandoned {
                return Err(format!("job {j} abandoned by the seal and also counted"));
            }
        }
        if counted_total as usize > jobs {
            return Err("submitted < counted".into());
        }
        if !s.list.is_empty() {
            return Err(format!("jobs {:?} left in the hand-back list", s.list));
        }
        Ok(())
    }

    fn dfs(
        s: &State,
        c: &Config,
        memo: &mut HashMap<State, u64>,
        trace: &mut Vec<String>,
    ) -> Result<u64, String> {
        if let Some(&n) = memo.get(s) {
            return Ok(n);
        }
        let mut next = Vec::new();
        for i in 0..c.workers {
            let pc = s.workers[i].pc;
            next.extend(
                worker_step(s, c, i)?
                    .into_iter()
                    .map(|n| (format!("w{i}:{pc:?}"), n)),
            );
        }
        let jpc = s.jpc;
        next.extend(
            joiner_step(s, c)?
                .into_iter()
                .map(|n| (format!("j:{jpc:?}"), n)),
        );
        let mut paths = 0u64;
        if next.is_empty() {
            check_final(s, c).map_err(|e| format!("{e}\n  schedule: {}", trace.join(" ")))?;
            paths = 1;
        }
        for (label, n) in next {
            trace.push(label);
            paths += dfs(&n, c, memo, trace)?;
            trace.pop();
        }
        memo.insert(s.clone(), paths);
        Ok(paths)
    }

    /// Explores every schedule of `c`; returns how many there are, or the
    /// first violation with its schedule.
    pub(super) fn check(c: &Config) -> Result<u64, String> {
        let jobs = c.jobs as usize;
        let worker = Worker {
            pc: Pc::Top,
            word: Word {
                sealed: false,
                st: St::Idle,
            },
            cur: None,
            has_job: false,
            key: None,
        };
        let s = State {
            workers: vec![worker; c.workers],
            jpc: Jpc::Trigger,
            soft: false,
            hard: false,
            queue: (0..c.jobs).collect(),
            list: Vec::new(),
            lock: Lock::Free,
            ran: vec![0; jobs],
            dropped: vec![0; jobs],
            counted: vec![0; jobs],
            snapshot: None,
            held_at_seal: vec![false; jobs],
            taken_after_seal: vec![false; jobs],
            handed_back: Vec::new(),
            explicit: Vec::new(),
        };
        dfs(&s, c, &mut HashMap::new(), &mut Vec::new())
    }

    /// Every configuration: 1–2 workers, 1–3 jobs, no key / a key / a key
    /// that may panic, Finish / HandBack.
    pub(super) fn configs(variant: Variant) -> Vec<Config> {
        let mut out = Vec::new();
        for workers in 1..=2 {
            for jobs in 1..=3 {
                for (key, key_panics) in [(false, false), (true, false), (true, true)] {
                    for hand_back in [false, true] {
                        out.push(Config {
                            workers,
                            jobs,
                            key,
                            key_panics,
                            hand_back,
                            variant,
                            strict: false,
                        });
                    }
                }
            }
        }
        out
    }
}

#[test]
fn model_every_interleaving_puts_every_job_in_exactly_one_bucket() {
    let mut total = 0u64;
    for c in model::configs(model::Variant::Faithful) {
        match model::check(&c) {
            Ok(n) => total += n,
            Err(e) => panic!("{c:?}: {e}"),
        }
    }
    println!("{total} schedules checked");
    assert!(total > 10_000, "the model explores too little: {total}");
}

#[test]
fn model_catches_each_broken_variant_of_the_protocol() {
    use model::Variant::*;
    for variant in [
        ListBeforeSeal,
        HandBackWithoutLock,
        BumpBeforeFinish,
        NoSeal,
    ] {
        let caught = model::configs(variant)
            .iter()
            .find_map(|c| model::check(c).err().map(|e| format!("{c:?}: {e}")));
        match caught {
            Some(e) => println!("{variant:?} caught: {e}"),
            None => panic!("{variant:?}: no violation found"),
        }
    }
}

/// `PoolReport::abandoned` says "jobs a worker held when the runtime gave
/// up on it", and `slot.rs` that a job counted by difference "really was
/// on a thread that had not finished with it when the runtime gave up".
/// Not so for a job a sealed worker takes off the queue *after* its seal:
/// see the report's bug note. The strict check finds the schedule.
#[test]
#[ignore = "known window, checked at the seal only: a worker sealed while IDLE can still take a queued job after the seal (its last stop check, then try_recv); at the seal it counts as abandoned, and the report moves it to handed back if the worker gave it to the late list before the report was made (slot.rs, Counting by difference). This model stops at the seal"]
fn model_an_abandoned_job_was_in_a_worker_s_hands_at_its_seal() {
    for mut c in model::configs(model::Variant::Faithful) {
        c.strict = true;
        if let Err(e) = model::check(&c) {
            panic!("{c:?}: {e}");
        }
    }
}
