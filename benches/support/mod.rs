//! Shared by the drain benches (`benches/drain.rs`, `signal.rs`,
//! `idle_cpu.rs`) and `examples/drain_bench.rs`: the pools under test —
//! winddown, the hand-written floor, and the idioms a user would otherwise
//! write — one trigger → drain → join cycle of each, and the statistics and
//! tables printed at the end of a run.
//!
//! Every pool names its threads `bw…` so that [`wait_quiescent`] can check,
//! from `/proc/self/task`, that every worker is parked before the trigger:
//! the timed region then holds the stop and nothing of the start.
//!
//! Not a bench target itself (cargo discovers only `benches/*.rs`); each
//! target includes it with `mod support;` or `#[path]`.

#![allow(dead_code)] // each target uses a different part

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use winddown::{Handle, Report, Runtime, StopReason, Submitter};

/// A job for every pool under test.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The prefix of every thread a bench pool starts (`comm` is cut at 15
/// bytes, so keep it short).
pub(crate) const PREFIX: &str = "bw";

/// The poll interval of the `AtomicBool` + `recv_timeout` idiom.
pub(crate) const POLL: Duration = Duration::from_millis(10);

// ===== The pools under test =====

/// One pool implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Impl {
    /// `winddown`: `Runtime` + `pool`, stopped by `Handle::request` (or a
    /// SIGTERM), `run()` on its own thread.
    Winddown,
    /// The floor: W threads on a crossbeam `Receiver`; drop the only
    /// `Sender`; join every `JoinHandle` in spawn order.
    Floor,
    /// The floor plus a done channel: each worker sends once it left its
    /// loop; drain = all W messages received, return = then joined.
    FloorDone,
    /// Workers poll an `AtomicBool` between `recv_timeout(10 ms)`s.
    Poll,
    /// `std::sync::mpsc::Receiver` behind a `Mutex` (the Rust book's pool).
    MpscMutex,
    /// The `threadpool` crate (itself an mpsc-behind-a-Mutex pool). It
    /// cannot join its threads: drain = every worker's thread-local
    /// destructor ran; no return figure.
    Threadpool,
    /// `rayon`: W tasks in a `scope` on a W-thread pool, a stop flag, then
    /// the pool dropped. It cannot join its threads: drain = every worker's
    /// `exit_handler` ran; no return figure.
    Rayon,
}

impl Impl {
    pub(crate) const ALL: [Impl; 7] = [
        Impl::Winddown,
        Impl::Floor,
        Impl::FloorDone,
        Impl::Poll,
        Impl::MpscMutex,
        Impl::Threadpool,
        Impl::Rayon,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Impl::Winddown => "winddown",
            Impl::Floor => "floor",
            Impl::FloorDone => "floor-done",
            Impl::Poll => "poll-10ms",
            Impl::MpscMutex => "mpsc-mutex",
            Impl::Threadpool => "threadpool",
            Impl::Rayon => "rayon",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.name() == s)
    }

    /// Whether the return figure is a real "every thread joined".
    pub(crate) fn joins(self) -> bool {
        !matches!(self, Impl::Threadpool | Impl::Rayon)
    }
}

/// How the stop is triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// In-process: `Handle::request`, dropping the `Sender`, setting a flag.
    Request,
    /// A real signal to the own process: SIGTERM for winddown (its ctrlc
    /// path), SIGUSR1 taken by a `sigwait` thread for the floor. Call
    /// [`block_sigusr1`] first, before any thread is spawned.
    Signal,
}

/// One scenario.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Case {
    pub(crate) workers: usize,
    /// `None`: idle pool. `Some(unit)`: every worker is inside a job that
    /// spins for `unit` at the trigger.
    pub(crate) busy: Option<Duration>,
    pub(crate) trigger: Trigger,
    /// Worker stack size; `None` keeps each pool's default (2 MiB).
    pub(crate) stack: Option<usize>,
}

impl Case {
    pub(crate) fn idle(workers: usize) -> Case {
        Case {
            workers,
            busy: None,
            trigger: Trigger::Request,
            stack: None,
        }
    }

    /// `idle`, `busy-1ms`, `signal`, … (+ `-stackNk`).
    pub(crate) fn scenario(&self) -> String {
        let mut s = match (self.busy, self.trigger) {
            (None, Trigger::Request) => "idle".to_owned(),
            (None, Trigger::Signal) => "signal".to_owned(),
            (Some(u), Trigger::Request) => format!("busy-{}ms", u.as_millis()),
            (Some(u), Trigger::Signal) => format!("signal-busy-{}ms", u.as_millis()),
        };
        if let Some(k) = self.stack {
            let _ = write!(s, "-stack{}k", k / 1024);
        }
        if REUSE.load(Ordering::Relaxed) {
            s.push_str("-reuse");
        }
        s
    }
}

/// One trigger → drain → return cycle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    /// From the reference point to "every job is finished and every thread
    /// has left its loop", as the pool itself learns it. The reference is
    /// the trigger (idle), or the end of the last job if that came later
    /// (busy: "latency beyond the end of the last job").
    pub(crate) drain: Duration,
    /// From the reference point to "every thread joined" (for winddown:
    /// `run` returned). `None` for pools that cannot join their threads.
    pub(crate) ret: Option<Duration>,
    /// Busy only: the trigger came after the last job had already ended
    /// (the bench thread was not scheduled in time); the sample then
    /// measures an idle drain.
    pub(crate) late: bool,
}

impl Sample {
    /// What criterion times: the return latency where there is one.
    pub(crate) fn timed(&self) -> Duration {
        self.ret.unwrap_or(self.drain)
    }
}

/// What `fire` observed, as instants; turned into a [`Sample`] by
/// [`run_once`].
struct Ends {
    t0: Instant,
    drain: Instant,
    ret: Option<Instant>,
}

/// A started pool, parked, waiting for its trigger.
trait Armed {
    /// Threads named `bw…` that must be parked before the trigger.
    fn expected_threads(&self) -> usize;
    /// Whether the workers wake up by themselves (the polling idiom): they
    /// are then never all asleep at once, and the parked check only waits
    /// for them to exist.
    fn polls(&self) -> bool {
        false
    }
    fn submit(&self, job: Job);
    /// Triggers the stop (stamping `t0` just before) and waits for the end.
    fn fire(self: Box<Self>) -> Ends;
}

/// A started pool, for measurements of the idle state (`idle_cpu`).
pub(crate) struct Started(Box<dyn Armed>);

impl Started {
    /// Starts `imp` and waits until every thread is parked.
    pub(crate) fn new(imp: Impl, case: &Case) -> Started {
        let armed = arm(imp, case);
        wait_quiescent(armed.expected_threads() + parked_extra(imp), armed.polls());
        Started(armed)
    }

    /// Stops it and joins it (as far as the pool can).
    pub(crate) fn stop(self) {
        let _ = self.0.fire();
    }
}

fn arm(imp: Impl, case: &Case) -> Box<dyn Armed> {
    match imp {
        Impl::Winddown => Box::new(WinddownArmed::new(case)),
        Impl::Floor => Box::new(FloorArmed::new(case, false)),
        Impl::FloorDone => Box::new(FloorArmed::new(case, true)),
        Impl::Poll => Box::new(PollArmed::new(case)),
        Impl::MpscMutex => Box::new(MpscArmed::new(case)),
        Impl::Threadpool => Box::new(ThreadpoolArmed::new(case)),
        Impl::Rayon => Box::new(RayonArmed::new(case)),
    }
}

/// Starts `imp`, waits until every thread is parked, makes every worker
/// busy if asked, triggers, waits for the stop and returns the sample.
pub(crate) fn run_once(imp: Impl, case: &Case) -> Sample {
    let armed = arm(imp, case);
    if case.trigger == Trigger::Signal {
        assert!(
            matches!(imp, Impl::Winddown | Impl::Floor | Impl::FloorDone),
            "the signal trigger is wired for winddown and the floor only"
        );
    }
    wait_quiescent(armed.expected_threads() + parked_extra(imp), armed.polls());
    let busy = case.busy.map(|unit| {
        // W + 1 parties: every worker is inside its job when the bench
        // thread passes the barrier.
        let barrier = Arc::new(Barrier::new(case.workers + 1));
        let last_end = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        for _ in 0..case.workers {
            armed.submit(busy_job(barrier.clone(), unit, last_end.clone(), epoch));
        }
        barrier.wait();
        (last_end, epoch)
    });
    let ends = armed.fire();
    // `fire` returned after every worker left its loop, and that
    // synchronised with each job's `fetch_max` (channel/join), so `last_end`
    // is final.
    let (reference, late) = match busy {
        None => (ends.t0, false),
        Some((last_end, epoch)) => {
            let last = epoch + Duration::from_nanos(last_end.load(Ordering::Relaxed));
            (last.max(ends.t0), last < ends.t0)
        }
    };
    Sample {
        drain: ends.drain.saturating_duration_since(reference),
        ret: ends.ret.map(|r| r.saturating_duration_since(reference)),
        late,
    }
}

// ----- thread reuse -----

/// Whether winddown's threads are reused (`winddown::reuse_threads`), and
/// how many parked `bw-<i>` threads that leaves between runs: the widest
/// winddown pool so far (`bw-0` … `bw-<max - 1>`, keyed by name).
static REUSE: AtomicBool = AtomicBool::new(false);
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// Turns winddown's thread reuse on or off for the following runs (off:
/// the parked threads exit; [`wait_quiescent`] waits until they are gone).
/// Only for cases with the default stack (the cache is keyed by it too).
pub(crate) fn reuse_threads(on: bool) {
    if on {
        winddown::reuse_threads(1 << 14, Duration::from_secs(600));
    } else {
        winddown::reuse_threads(0, Duration::ZERO);
    }
    REUSE.store(on, Ordering::Relaxed);
    PARKED.store(0, Ordering::Relaxed);
}

/// The parked winddown threads beside `imp`'s own while it is armed.
/// Winddown reuses `bw-0` … `bw-<W - 1>` and leaves the rest parked.
fn parked_extra(imp: Impl) -> usize {
    if !REUSE.load(Ordering::Relaxed) {
        return 0;
    }
    let parked = PARKED.load(Ordering::Relaxed);
    match imp {
        Impl::Winddown => 0, // adjusted in `WinddownArmed::expected_threads`
        _ => parked,
    }
}

fn busy_job(
    barrier: Arc<Barrier>,
    unit: Duration,
    last_end: Arc<AtomicU64>,
    epoch: Instant,
) -> Job {
    Box::new(move || {
        barrier.wait();
        let start = Instant::now();
        while start.elapsed() < unit {
            std::hint::spin_loop();
        }
        // Relaxed: read only after the pool's own exit synchronisation.
        last_end.fetch_max(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    })
}

fn spawn_named(
    name: String,
    stack: Option<usize>,
    f: impl FnOnce() + Send + 'static,
) -> JoinHandle<()> {
    let mut b = thread::Builder::new().name(name);
    if let Some(s) = stack {
        b = b.stack_size(s);
    }
    b.spawn(f).expect("spawn a bench thread")
}

// ----- winddown -----

struct WinddownArmed {
    submitter: Submitter<Job>,
    handle: Handle,
    trigger: Trigger,
    workers: usize,
    report: Receiver<(Report, Instant)>,
    runner: JoinHandle<()>,
}

impl WinddownArmed {
    fn new(case: &Case) -> WinddownArmed {
        let signals = case.trigger == Trigger::Signal;
        let mut rt = Runtime::builder()
            .signals(signals)
            .build()
            .expect("build the runtime");
        let mut pool = rt.pool::<Job>(PREFIX).workers(case.workers);
        if let Some(s) = case.stack {
            pool = pool.stack_size(s);
        }
        let submitter = pool
            .start(|job, _token| {
                job();
                Ok(())
            })
            .expect("start the pool")
            .into_submitter();
        let handle = rt.handle();
        let (tx, report) = bounded(1);
        // `run` must be driving the runtime when the trigger comes, as in a
        // program: a thread that is already blocked in it. It stamps the
        // return itself, so the hop back to the bench thread is not timed.
        let runner = spawn_named(format!("{PREFIX}-run"), None, move || {
            let report = rt.run();
            let returned = Instant::now();
            let _ = tx.send((report, returned));
        });
        WinddownArmed {
            submitter,
            handle,
            trigger: case.trigger,
            workers: case.workers,
            report,
            runner,
        }
    }
}

impl Armed for WinddownArmed {
    fn expected_threads(&self) -> usize {
        // With reuse, the threads parked beyond this pool's width stay.
        let parked = PARKED.load(Ordering::Relaxed);
        self.workers.max(parked) + 1
    }

    fn submit(&self, job: Job) {
        if self.submitter.submit(job).is_err() {
            panic!("winddown refused a job while running");
        }
    }

    fn fire(self: Box<Self>) -> Ends {
        let t0 = Instant::now();
        match self.trigger {
            Trigger::Request => {
                self.handle.request("bench");
            }
            Trigger::Signal => send_signal(nix::sys::signal::Signal::SIGTERM),
        }
        let (report, returned) = self.report.recv().expect("the runner reports");
        if REUSE.load(Ordering::Relaxed) {
            PARKED.fetch_max(self.workers, Ordering::Relaxed);
        }
        self.runner.join().expect("the runner returns");
        drop(self.submitter);
        let expected = match self.trigger {
            Trigger::Request => StopReason::Requested("bench".into()),
            Trigger::Signal => StopReason::Signal(winddown::Signal::Interrupt),
        };
        assert_eq!(report.reason, expected, "{report:#}");
        assert!(report.stuck.is_empty(), "{report:#}");
        let drain = report
            .timings
            .drain_latency
            .expect("drained within the grace");
        Ends {
            t0,
            drain: report.timings.triggered + drain,
            ret: Some(returned),
        }
    }
}

fn send_signal(sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::this(), sig).expect("kill(getpid())");
}

/// Blocks SIGUSR1 in the calling thread and so in every thread it spawns
/// later: the floor's `sigwait` thread is then the only taker. Call first
/// thing in `main` of a target that uses [`Trigger::Signal`].
pub(crate) fn block_sigusr1() {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGUSR1);
    set.thread_block().expect("block SIGUSR1");
}

// ----- the floor -----

struct FloorArmed {
    tx: Option<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
    done: Option<Receiver<()>>,
    workers: usize,
    /// Signal trigger: the `sigwait` thread owns the sender and the
    /// handles, and sends back (drain, return).
    signalled: Option<Receiver<(Option<Instant>, Instant)>>,
    sig_thread: Option<JoinHandle<()>>,
}

impl FloorArmed {
    fn new(case: &Case, with_done: bool) -> FloorArmed {
        let w = case.workers;
        // The same capacity as a winddown pool's default.
        let (tx, rx) = bounded::<Job>(2 * w);
        let (done_tx, done_rx) = unbounded::<()>();
        let handles: Vec<_> = (0..w)
            .map(|i| {
                let rx = rx.clone();
                let done = with_done.then(|| done_tx.clone());
                spawn_named(format!("{PREFIX}-{i}"), case.stack, move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                    if let Some(d) = done {
                        let _ = d.send(());
                    }
                })
            })
            .collect();
        let done = with_done.then_some(done_rx);
        if case.trigger == Trigger::Signal {
            let (back_tx, back_rx) = bounded(1);
            let sig_thread = spawn_named(format!("{PREFIX}-sig"), None, move || {
                let mut set = nix::sys::signal::SigSet::empty();
                set.add(nix::sys::signal::Signal::SIGUSR1);
                set.wait().expect("sigwait");
                drop(tx);
                let drained = wait_done(done.as_ref(), w);
                for h in handles {
                    h.join().expect("floor worker");
                }
                let _ = back_tx.send((drained, Instant::now()));
            });
            return FloorArmed {
                tx: None,
                handles: Vec::new(),
                done: None,
                workers: w,
                signalled: Some(back_rx),
                sig_thread: Some(sig_thread),
            };
        }
        FloorArmed {
            tx: Some(tx),
            handles,
            done,
            workers: w,
            signalled: None,
            sig_thread: None,
        }
    }
}

/// With a done channel: waits for every worker's message and returns when.
fn wait_done(done: Option<&Receiver<()>>, w: usize) -> Option<Instant> {
    let done = done?;
    for _ in 0..w {
        done.recv().expect("a worker reports");
    }
    Some(Instant::now())
}

impl Armed for FloorArmed {
    fn expected_threads(&self) -> usize {
        self.workers + usize::from(self.sig_thread.is_some())
    }

    fn submit(&self, job: Job) {
        match (&self.tx, &self.signalled) {
            (Some(tx), _) => tx.send(job).expect("floor running"),
            _ => panic!("busy + signal is not wired for the floor"),
        }
    }

    fn fire(mut self: Box<Self>) -> Ends {
        if let Some(back) = self.signalled.take() {
            let t0 = Instant::now();
            send_signal(nix::sys::signal::Signal::SIGUSR1);
            let (drain, ret) = back.recv().expect("the sigwait thread reports");
            self.sig_thread
                .take()
                .expect("signal floor")
                .join()
                .expect("sigwait thread");
            return Ends {
                t0,
                drain: drain.unwrap_or(ret),
                ret: Some(ret),
            };
        }
        let t0 = Instant::now();
        drop(self.tx.take());
        let drained = wait_done(self.done.as_ref(), self.workers);
        for h in self.handles.drain(..) {
            h.join().expect("floor worker");
        }
        let ret = Instant::now();
        Ends {
            t0,
            drain: drained.unwrap_or(ret),
            ret: Some(ret),
        }
    }
}

// ----- AtomicBool + recv_timeout polling -----

struct PollArmed {
    flag: Arc<AtomicBool>,
    tx: Sender<Job>,
    handles: Vec<JoinHandle<()>>,
}

impl PollArmed {
    fn new(case: &Case) -> PollArmed {
        let flag = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<Job>(2 * case.workers);
        let handles = (0..case.workers)
            .map(|i| {
                let (rx, flag) = (rx.clone(), flag.clone());
                spawn_named(format!("{PREFIX}-{i}"), case.stack, move || loop {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    match rx.recv_timeout(POLL) {
                        Ok(job) => job(),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                })
            })
            .collect();
        PollArmed { flag, tx, handles }
    }
}

impl Armed for PollArmed {
    fn expected_threads(&self) -> usize {
        self.handles.len()
    }

    fn polls(&self) -> bool {
        true
    }

    fn submit(&self, job: Job) {
        self.tx.send(job).expect("poll pool running");
    }

    fn fire(self: Box<Self>) -> Ends {
        let t0 = Instant::now();
        self.flag.store(true, Ordering::Release);
        for h in self.handles {
            h.join().expect("poll worker");
        }
        let ret = Instant::now();
        drop(self.tx);
        Ends {
            t0,
            drain: ret,
            ret: Some(ret),
        }
    }
}

// ----- std::sync::mpsc behind a Mutex -----

struct MpscArmed {
    tx: mpsc::Sender<Job>,
    handles: Vec<JoinHandle<()>>,
}

impl MpscArmed {
    fn new(case: &Case) -> MpscArmed {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..case.workers)
            .map(|i| {
                let rx = rx.clone();
                spawn_named(format!("{PREFIX}-{i}"), case.stack, move || loop {
                    // The guard is a temporary of this statement: the lock
                    // is released before the job runs.
                    let msg = rx.lock().expect("not poisoned").recv();
                    match msg {
                        Ok(job) => job(),
                        Err(_) => break,
                    }
                })
            })
            .collect();
        MpscArmed { tx, handles }
    }
}

impl Armed for MpscArmed {
    fn expected_threads(&self) -> usize {
        self.handles.len()
    }

    fn submit(&self, job: Job) {
        self.tx.send(job).expect("mpsc pool running");
    }

    fn fire(self: Box<Self>) -> Ends {
        let t0 = Instant::now();
        drop(self.tx);
        for h in self.handles {
            h.join().expect("mpsc worker");
        }
        let ret = Instant::now();
        Ends {
            t0,
            drain: ret,
            ret: Some(ret),
        }
    }
}

// ----- the threadpool crate -----

/// Sends the instant its thread ends (thread-local destructors run as the
/// thread exits, after its last job).
struct ExitNotify(Sender<Instant>);

impl Drop for ExitNotify {
    fn drop(&mut self) {
        let _ = self.0.send(Instant::now());
    }
}

thread_local! {
    static EXIT_NOTIFY: RefCell<Option<ExitNotify>> = const { RefCell::new(None) };
}

struct ThreadpoolArmed {
    pool: threadpool::ThreadPool,
    exits: Receiver<Instant>,
    workers: usize,
}

impl ThreadpoolArmed {
    fn new(case: &Case) -> ThreadpoolArmed {
        let w = case.workers;
        let mut b = threadpool::Builder::new()
            .num_threads(w)
            .thread_name(PREFIX.to_owned());
        if let Some(s) = case.stack {
            b = b.thread_stack_size(s);
        }
        let pool = b.build();
        let (exit_tx, exits) = unbounded();
        // One set-up job per worker: the barrier keeps each on its own
        // thread, so every thread gets an exit notifier.
        let barrier = Arc::new(Barrier::new(w + 1));
        for _ in 0..w {
            let (exit_tx, barrier) = (exit_tx.clone(), barrier.clone());
            pool.execute(move || {
                EXIT_NOTIFY.with(|e| *e.borrow_mut() = Some(ExitNotify(exit_tx)));
                barrier.wait();
            });
        }
        barrier.wait();
        ThreadpoolArmed {
            pool,
            exits,
            workers: w,
        }
    }
}

impl Armed for ThreadpoolArmed {
    fn expected_threads(&self) -> usize {
        self.workers
    }

    fn submit(&self, job: Job) {
        self.pool.execute(job);
    }

    fn fire(self: Box<Self>) -> Ends {
        let t0 = Instant::now();
        drop(self.pool);
        let last = last_of(&self.exits, self.workers);
        Ends {
            t0,
            drain: last,
            ret: None,
        }
    }
}

fn last_of(rx: &Receiver<Instant>, n: usize) -> Instant {
    (0..n)
        .map(|_| rx.recv().expect("every worker reports its exit"))
        .max()
        .expect("at least one worker")
}

// ----- rayon: scope + flag -----

struct RayonArmed {
    flag: Arc<AtomicBool>,
    tx: Sender<Job>,
    exits: Receiver<Instant>,
    driver: JoinHandle<()>,
    workers: usize,
}

impl RayonArmed {
    fn new(case: &Case) -> RayonArmed {
        let w = case.workers;
        let (exit_tx, exits) = unbounded();
        let mut b = rayon::ThreadPoolBuilder::new()
            .num_threads(w)
            .thread_name(|i| format!("{PREFIX}-{i}"))
            .exit_handler(move |_| {
                let _ = exit_tx.send(Instant::now());
            });
        if let Some(s) = case.stack {
            b = b.stack_size(s);
        }
        let pool = b.build().expect("build the rayon pool");
        let flag = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = bounded::<Job>(2 * w);
        let (flag2, started2) = (flag.clone(), started.clone());
        let driver = spawn_named(format!("{PREFIX}-drv"), None, move || {
            pool.scope(|s| {
                for _ in 0..w {
                    let (rx, flag, started) = (rx.clone(), flag2.clone(), started2.clone());
                    s.spawn(move |_| {
                        started.fetch_add(1, Ordering::Release);
                        while !flag.load(Ordering::Acquire) {
                            match rx.recv() {
                                Ok(job) => job(),
                                Err(_) => break,
                            }
                        }
                    });
                }
            });
            // Dropping the pool lets its threads leave (not joined).
            drop(pool);
        });
        // Every task on its own thread before the parked check.
        while started.load(Ordering::Acquire) < w {
            thread::sleep(Duration::from_micros(100));
        }
        RayonArmed {
            flag,
            tx,
            exits,
            driver,
            workers: w,
        }
    }
}

impl Armed for RayonArmed {
    fn expected_threads(&self) -> usize {
        self.workers + 1
    }

    fn submit(&self, job: Job) {
        self.tx.send(job).expect("rayon pool running");
    }

    fn fire(self: Box<Self>) -> Ends {
        let t0 = Instant::now();
        self.flag.store(true, Ordering::Release);
        drop(self.tx);
        let last = last_of(&self.exits, self.workers);
        self.driver.join().expect("rayon driver");
        Ends {
            t0,
            drain: last,
            ret: None,
        }
    }
}

// ===== Parked check =====

/// Waits until exactly `expected` threads named `bw…` exist and all are
/// sleeping (state `S`/`D` in `/proc/self/task/*/stat`), twice in a row.
/// With `polling`, the workers wake up every 10 ms by themselves (at 1024 of
/// them on 2 cores they are *never* all asleep), so it waits until they all
/// exist and then 20–30 ms more (a random phase). Outside the timed region; on a system without
/// `/proc` it waits 20 ms.
pub(crate) fn wait_quiescent(expected: usize, polling: bool) {
    if std::fs::metadata("/proc/self/task").is_err() {
        thread::sleep(Duration::from_millis(20));
        return;
    }
    if polling {
        let deadline = Instant::now() + Duration::from_secs(60);
        while scan_threads().0 != expected {
            assert!(Instant::now() < deadline, "polling threads never started");
            thread::sleep(Duration::from_micros(200));
        }
        // A random phase against their 10 ms period, or every trigger
        // would land at the same point of it.
        thread::sleep(Duration::from_micros(20_000 + fastrand::u64(0..10_000)));
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut good = 0;
    loop {
        let (n, parked) = scan_threads();
        if n == expected && parked == expected {
            good += 1;
            if good == 2 {
                return;
            }
        } else {
            good = 0;
        }
        assert!(
            Instant::now() < deadline,
            "threads never parked: {n} `{PREFIX}` threads, {parked} parked, {expected} expected"
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// (threads named `bw…`, those of them sleeping).
fn scan_threads() -> (usize, usize) {
    let (mut n, mut parked) = (0, 0);
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // exited meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(PREFIX) {
            continue;
        }
        n += 1;
        if matches!(
            stat[close + 1..].trim_start().chars().next(),
            Some('S' | 'D')
        ) {
            parked += 1;
        }
    }
    (n, parked)
}

// ===== Statistics and tables =====

/// Samples of one scenario × W × implementation.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) scenario: String,
    pub(crate) workers: usize,
    pub(crate) imp: Impl,
    pub(crate) samples: Vec<Sample>,
}

impl Record {
    pub(crate) fn drain(&self) -> Stats {
        Stats::of(self.samples.iter().map(|s| s.drain))
    }

    pub(crate) fn ret(&self) -> Option<Stats> {
        let v: Vec<_> = self.samples.iter().filter_map(|s| s.ret).collect();
        (!v.is_empty()).then(|| Stats::of(v))
    }

    pub(crate) fn late(&self) -> usize {
        self.samples.iter().filter(|s| s.late).count()
    }
}

/// Order statistics of a set of durations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stats {
    pub(crate) n: usize,
    pub(crate) min: Duration,
    pub(crate) median: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

impl Stats {
    pub(crate) fn of(it: impl IntoIterator<Item = Duration>) -> Stats {
        let mut v: Vec<Duration> = it.into_iter().collect();
        assert!(!v.is_empty(), "no samples");
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Stats {
            n: v.len(),
            min: v[0],
            median: at(0.5),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// `12.3µs`, `1.24ms`, `1.50s`: three significant digits.
pub(crate) fn fmt_d(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    let (v, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        "-".into()
    } else {
        format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
    }
}

/// The full table: one row per scenario × W × implementation, with each
/// figure's ratio to the floor's join-based figure of the same scenario
/// and W (the budget's denominator).
pub(crate) fn table(records: &[Record]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>5} {:<11} {:>4} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>5}",
        "scenario",
        "W",
        "impl",
        "n",
        "drain med",
        "drain p99",
        "ret med",
        "ret p99",
        "drain/flr",
        "ret/flr",
        "late"
    );
    for r in records {
        let floor = records
            .iter()
            .find(|f| f.scenario == r.scenario && f.workers == r.workers && f.imp == Impl::Floor)
            .and_then(Record::ret);
        let d = r.drain();
        let ret = r.ret();
        let dash = || "-".to_owned();
        let _ = writeln!(
            out,
            "{:<16} {:>5} {:<11} {:>4} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>5}",
            r.scenario,
            r.workers,
            r.imp.name(),
            d.n,
            fmt_d(d.median),
            fmt_d(d.p99),
            ret.map_or_else(dash, |s| fmt_d(s.median)),
            ret.map_or_else(dash, |s| fmt_d(s.p99)),
            floor.map_or_else(dash, |f| ratio(d.median, f.median)),
            match (ret, floor) {
                (Some(s), Some(f)) => ratio(s.median, f.median),
                _ => dash(),
            },
            r.late(),
        );
    }
    out
}

/// The budget view: winddown against the floor, per scenario and W.
pub(crate) fn ratio_table(records: &[Record]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>5} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "scenario", "W", "wd drain", "wd return", "floor join", "drain/flr", "ret/flr"
    );
    for r in records.iter().filter(|r| r.imp == Impl::Winddown) {
        let Some(floor) = records
            .iter()
            .find(|f| f.scenario == r.scenario && f.workers == r.workers && f.imp == Impl::Floor)
            .and_then(Record::ret)
        else {
            continue;
        };
        let (d, ret) = (r.drain(), r.ret().expect("winddown joins"));
        let _ = writeln!(
            out,
            "{:<16} {:>5} {:>12} {:>12} {:>12} {:>10} {:>10}",
            r.scenario,
            r.workers,
            fmt_d(d.median),
            fmt_d(ret.median),
            fmt_d(floor.median),
            ratio(d.median, floor.median),
            ratio(ret.median, floor.median),
        );
    }
    out
}

/// Long CSV, one line per record and metric:
/// `scenario,workers,impl,metric,n,min_us,median_us,p99_us,max_us`.
pub(crate) fn csv(records: &[Record]) -> String {
    let mut out = String::from("scenario,workers,impl,metric,n,min_us,median_us,p99_us,max_us\n");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for r in records {
        let mut row = |metric: &str, s: Stats| {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{:.3},{:.3},{:.3},{:.3}",
                r.scenario,
                r.workers,
                r.imp.name(),
                metric,
                s.n,
                us(s.min),
                us(s.median),
                us(s.p99),
                us(s.max)
            );
        };
        row("drain", r.drain());
        if let Some(s) = r.ret() {
            row("return", s);
        }
    }
    out
}

// ===== Bench plumbing =====

/// `WINDDOWN_BENCH_SMOKE=1`: tiny sizes, for CI smoke runs.
pub(crate) fn smoke() -> bool {
    std::env::var_os("WINDDOWN_BENCH_SMOKE").is_some_and(|v| v != "0" && !v.is_empty())
}

/// The positional filter given to the bench binary (`cargo bench -- FILTER`),
/// if any. Criterion treats it as a regex; [`selected`] treats a plain one
/// as a substring and lets anything with regex syntax through (criterion
/// then decides), so a pilot run is never skipped wrongly.
pub(crate) fn filter() -> Option<String> {
    // Options of criterion's CLI that take a value.
    const WITH_VALUE: &[&str] = &[
        "--save-baseline",
        "-s",
        "--baseline",
        "-b",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
        "--output-format",
        "--color",
        "-c",
        "--format",
        "--logfile",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Whether a bench id passes the command-line filter (see [`filter`]).
pub(crate) fn selected(id: &str) -> bool {
    match filter() {
        None => true,
        Some(f) if f.chars().any(|c| "^$.*+?()[]{}|\\".contains(c)) => true,
        Some(f) => id.contains(&f),
    }
}

/// `cargo bench -- --list` or `--test`: criterion lists or runs each once.
pub(crate) fn quick_mode() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test")
}

/// Registers one criterion benchmark `group/name` whose iterations are slow
/// to set up and quick to time (`iter_custom` over `once`, which returns the
/// timed part of one iteration).
///
/// Criterion sizes its samples from the *wall* time of each routine call
/// (set-up included), against a default 5 s target. So two pilot
/// iterations measure the wall time of one iteration first, and the
/// group's warm-up and measurement times are set from it: about two
/// iterations per sample, `samples` samples, whatever the set-up costs.
/// Returns `false` (and runs nothing) if the filter excludes the id.
pub(crate) fn adaptive(
    c: &mut Criterion,
    group: &str,
    name: &str,
    samples: usize,
    throughput: Option<u64>,
    mut once: impl FnMut() -> Duration,
) -> bool {
    let id = format!("{group}/{name}");
    if !selected(&id) {
        return false;
    }
    let mut g = c.benchmark_group(group);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(samples.max(10));
    if let Some(n) = throughput {
        g.throughput(Throughput::Elements(n));
    }
    if !quick_mode() {
        let pilot = (0..2)
            .map(|_| {
                let t = Instant::now();
                once();
                t.elapsed()
            })
            .max()
            .expect("two pilots")
            .max(Duration::from_micros(1));
        g.warm_up_time(pilot * 2)
            .measurement_time(pilot.mul_f64(1.5 * samples.max(10) as f64));
    }
    g.bench_function(name, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| once()).sum())
    });
    g.finish();
    true
}

/// Writes `text` to `$WINDDOWN_BENCH_OUT/<file>` (default
/// `target/winddown-bench/<file>`) and says where.
pub(crate) fn save(file: &str, text: &str) {
    let dir = std::env::var_os("WINDDOWN_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            // Benches run with the package root as the working directory.
            std::path::PathBuf::from("target").join("winddown-bench")
        });
    let path = dir.join(file);
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

/// `WINDDOWN_BENCH_SAMPLES`, else `default` (criterion's minimum is 10).
pub(crate) fn samples(default: usize) -> usize {
    std::env::var("WINDDOWN_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .max(10)
}

/// `WINDDOWN_BENCH_IMPLS=winddown,floor`, else all of them.
pub(crate) fn impls() -> Vec<Impl> {
    match std::env::var("WINDDOWN_BENCH_IMPLS") {
        Ok(list) => list
            .split(',')
            .map(|s| Impl::parse(s.trim()).unwrap_or_else(|| panic!("unknown impl {s:?}")))
            .collect(),
        Err(_) => Impl::ALL.to_vec(),
    }
}
