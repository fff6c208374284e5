//! [`Pool`]: named worker threads pulling jobs from one bounded crossbeam
//! channel, with per-job panic capture and the drain policies.
//!
//! # The worker loop
//!
//! Between two jobs a worker checks the tokens, never in the middle of one
//! (design invariant 4):
//!
//! * past the drain deadline (hard token) it takes no new job, whatever the
//!   policy; what is still queued is handed back by the joiner;
//! * under [`DrainPolicy::HandBack`] it takes no new job once stopping has
//!   begun; a job it had just received is handed back;
//! * under [`DrainPolicy::Finish`] it keeps taking jobs until the channel is
//!   empty and disconnected (the only sender was dropped).
//!
//! An idle worker blocks in a plain `recv` on the channel — the cheapest
//! wait, paid on every job a worker waits for. The stop reaches it through
//! the channel: the trigger itself drops the sender if no submit holds it
//! (`Unit::on_trigger` → `Queue::try_disconnect`), so idle workers wake at
//! once without waiting for the runtime's thread; if a submit did hold it,
//! that submit refuses and `stop_accepting` disconnects right after.
//!
//! # Per-worker state
//!
//! A worker first runs the pool's init on its own thread
//! ([`PoolBuilder::start_with`]; `start` is `start_with` with `()` as the
//! state), then passes `&mut state` to every job, and drops the state on its
//! thread as it exits. The worker loop is generic over the state and the
//! job function, so a pool without state pays nothing for the feature (no
//! boxed call per job).
//!
//! # Who owns a job
//!
//! Each worker has one state word (`slot::Slot`); its table and the proof
//! that every job ends in exactly one bucket are in `slot.rs`. Per job, a
//! pool without a key function pays two uncontended compare-and-swaps on it
//! (`take_and_run`, `finish`), with a key function three; inside a batch
//! ([`Submitter::submit_batch`]) of a pool without a key function none for
//! a job that returns `Ok` before the stop (`run_on`, one plain store) and
//! one otherwise (`next_after`), and no clock read either way until the
//! stop began. The outcome counters beside the slots
//! (`slot::Tally`) feed the report and the live counts
//! ([`PoolStats`](crate::PoolStats)).
//!
//! # Batches
//!
//! A channel entry is one job or a batch (`submit::Item`). A worker that
//! receives a batch keeps it and runs its jobs in order, checking the
//! tokens between two of them as between two entries; the jobs it has not
//! started are its own to account for: handed back (in order, under the
//! hand-back lock) when the stop calls for it, given to the late list if it
//! finds itself sealed, and counted abandoned by difference until then
//! (`slot.rs`, the second table).

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};
use parking_lot::Mutex;

use crate::error::BuildError;
use crate::join::{Hold, Spec, ThreadView};
use crate::reason::StopReason;
use crate::registry::Registry;
use crate::report::{
    JobError, PoolId, PoolReport, Report, StuckThread, WorkerFailure, WorkerStage,
};
use crate::shared::Shared;
use crate::slot::{Counter, Idle, Sealed, Tally, WorkerTally};
use crate::stage::Stage;
use crate::submit::{Item, Queue, Sequenced, Submitter};
use crate::thread::catch;
use crate::token::Token;
use crate::unit::{PoolStats, Unit};

/// How many job error messages a pool keeps for the report.
pub(crate) const MAX_ERRORS: usize = 8;

/// What happens to queued jobs when a stop begins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainPolicy {
    /// Everything already queued still runs, within the drain deadline. The
    /// batch-tool default.
    #[default]
    Finish,
    /// Only the jobs in flight finish; every queued job is handed back, in
    /// queue order, in the [`Report`], so it can be checkpointed and
    /// resumed. (Queue order is submission order; jobs of producers that
    /// submitted at the same moment may come in either order.)
    HandBack,
}

type KeyFn<T> = dyn Fn(&T) -> String + Send + Sync;

// ===== PoolBuilder =====

/// Configures a pool; made by [`Runtime::pool`](crate::Runtime::pool),
/// finished by [`start`](PoolBuilder::start), or by
/// [`start_with`](PoolBuilder::start_with) for workers that keep a state of
/// their own (a database connection each).
///
/// ```
/// use winddown::{DrainPolicy, Runtime};
///
/// let mut rt = Runtime::builder().signals(false).build()?;
/// let pool = rt
///     .pool::<u32>("resize")
///     .workers(2)
///     .capacity(16)
///     .drain(DrainPolicy::HandBack)
///     .key(|n| *n)
///     .start(|n, _token| {
///         anyhow::ensure!(n != 13, "unlucky");
///         Ok(())
///     })?;
/// pool.submit(12).expect("running");
/// pool.submit(13).expect("running");
/// let id = pool.id();
/// drop(pool); // the last submitter: the run completes once the queue drains
/// let mut report = rt.run();
/// let resize = report.pool("resize").unwrap();
/// assert_eq!((resize.succeeded, resize.failed), (1, 1));
/// assert!(report.take_handed_back(id).is_empty());
/// # Ok::<(), winddown::BuildError>(())
/// ```
#[must_use = "a pool starts only when `start` is called"]
pub struct PoolBuilder<'rt, T> {
    reg: &'rt mut Registry,
    name: String,
    workers: Option<usize>,
    capacity: Option<usize>,
    drain: DrainPolicy,
    fail_fast: bool,
    key: Option<Arc<KeyFn<T>>>,
    stack_size: Option<usize>,
    stage: Stage,
}

impl<'rt, T: Send + 'static> PoolBuilder<'rt, T> {
    pub(crate) fn new(reg: &'rt mut Registry, name: String) -> Self {
        PoolBuilder {
            reg,
            name,
            workers: None,
            capacity: None,
            drain: DrainPolicy::Finish,
            fail_fast: false,
            key: None,
            stack_size: None,
            stage: Stage::FIRST,
        }
    }

    /// Puts the pool in `stage` (made by
    /// [`Runtime::stage`](crate::Runtime::stage)). Default:
    /// [`Stage::FIRST`], stopped at the trigger.
    ///
    /// A pool of a later stage goes on accepting and running jobs after the
    /// trigger, until every thread of the earlier stages has exited — so a
    /// request handler still in flight can hand it work. Then it stops
    /// accepting and drains under its [`DrainPolicy`]; its workers' tokens
    /// stop at that moment, not at the trigger, and go hard at the stage's
    /// budget or the drain deadline, whichever comes first.
    ///
    /// # Examples
    ///
    /// ```
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let later = rt.stage("workers")?;
    /// let jobs = rt.pool::<u32>("jobs").stage(later).workers(1).start(|_, _| Ok(()))?;
    /// let handle = rt.handle();
    /// handle.request("deploy"); // the first stage stops...
    /// jobs.submit(1).expect("...the later one still accepts");
    /// let report = rt.run();
    /// assert_eq!(report.pool("jobs").unwrap().succeeded, 1);
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stage = stage;
        self
    }

    /// Sets the number of worker threads. Default: the machine's available
    /// parallelism. Zero is refused by `start` with
    /// [`BuildError::ZeroWorkers`].
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Sets the queue capacity. Default: twice the workers. Zero makes a
    /// rendezvous channel: `submit` waits until a worker takes the job.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Sets the drain policy. Default: [`DrainPolicy::Finish`].
    pub fn drain(mut self, policy: DrainPolicy) -> Self {
        self.drain = policy;
        self
    }

    /// When `true`, the first job that fails or panics triggers the stop,
    /// with a reason naming the pool and the error. Default: `false`.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// Names jobs in the report (handed back, abandoned, failed) by the
    /// `Debug` form of `key(&job)`. Called once per job, before it runs,
    /// and for each handed-back job when the report is made.
    pub fn key<K, F>(mut self, key: F) -> Self
    where
        K: fmt::Debug,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.key = Some(Arc::new(move |job: &T| format!("{:?}", key(job))));
        self
    }

    /// Sets each worker's stack size in bytes. Default: the platform's
    /// default for spawned threads (2 MiB on Linux, overridable with
    /// `RUST_MIN_STACK`).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the workers (`<name>-0` … `<name>-{W-1}`) and returns the
    /// [`Pool`], which is also the first submitter. Each job runs as
    /// `job_fn(job, &token)`; an `Err` or a panic is caught, counted and
    /// recorded, and the worker goes on. (This is
    /// [`start_with`](PoolBuilder::start_with) with no per-worker state.)
    ///
    /// A pool started after the stop began (a signal during start-up) starts
    /// stopped: its workers exit at once and every submit hands its job
    /// back. That is not an error.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`], [`BuildError::InvalidName`],
    /// [`BuildError::DuplicateName`] (the pool's name or one of its
    /// workers' names is taken), [`BuildError::Spawn`] if the OS refused a
    /// thread (none of the pool's workers then runs, and the names are free
    /// again).
    pub fn start<F>(self, job_fn: F) -> Result<Pool<T>, BuildError>
    where
        F: Fn(T, &Token) -> anyhow::Result<()> + Send + Sync + 'static,
    {
        self.start_with(
            |_worker| Ok(()),
            move |_: &mut (), job, token: &Token| job_fn(job, token),
        )
    }

    /// Spawns the workers as [`start`](PoolBuilder::start) does, each of
    /// which first runs `init(worker)` once, on its own thread, before it
    /// takes any job (`worker` is its index, `0..W`, as in its thread name
    /// `<name>-<worker>`), and then runs every job it takes as
    /// `job_fn(&mut state, job, &token)` with the state its init returned:
    /// one database connection per worker, a scratch buffer, a client.
    ///
    /// The state never leaves its worker's thread, so it need not be
    /// `Send`. It is dropped on that thread when the worker exits — after
    /// its last job, before the thread reports its exit, so inside the
    /// drain: that drop is the per-worker teardown (close the connection in
    /// the state's `Drop`). A job that panicked leaves the state as the
    /// panic left it, and the worker's next job gets it so.
    ///
    /// Init is user code run inside the drain's accounting: a slow init
    /// delays that worker's first job, and one still running at the drain
    /// deadline is named stuck like a job. A worker that would take no job
    /// because the stop came first (past the drain deadline, or stopping
    /// under [`DrainPolicy::HandBack`]) skips its init.
    ///
    /// # Init failures
    ///
    /// An init that returns `Err` or panics is caught. The worker takes no
    /// job and its thread exits; the failure is recorded in
    /// [`PoolReport::worker_failures`](crate::PoolReport::worker_failures)
    /// (worker index, thread, message, whether it panicked), counted in
    /// [`PoolStats::init_failures`], and makes the run a failure (exit code
    /// 1, [`Report::has_failures`]). Every job stays accounted for:
    ///
    /// | init failed in      | the pool                                         | its jobs |
    /// |---------------------|--------------------------------------------------|----------|
    /// | no worker           | runs as with `start`                             | run |
    /// | some workers        | runs on the others (fewer workers)               | run on the others |
    /// | every worker        | closes when the last init fails: every submit, also one already blocked, hands its job back ([`SubmitError`](crate::SubmitError)); its threads have exited, so it does not hold the run open | already queued: stay queued, then handed back in the [`Report`] ([`Report::take_handed_back`]) |
    ///
    /// With [`fail_fast`](PoolBuilder::fail_fast), the first init failure
    /// also triggers the stop ([`StopReason::JobFailed`], naming the worker).
    /// A panic in the state's `Drop` is caught and recorded the same way,
    /// as [`WorkerStage::Teardown`](crate::WorkerStage::Teardown).
    ///
    /// # Errors
    ///
    /// As [`start`](PoolBuilder::start); an init failure is not a build
    /// error (the workers run their inits after `start_with` returned).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use winddown::Runtime;
    ///
    /// /// Stands in for a database connection: one per worker.
    /// struct Conn {
    ///     worker: usize,
    ///     cache: HashMap<u32, u64>,
    /// }
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let pool = rt.pool::<u32>("db").workers(2).start_with(
    ///     |worker| {
    ///         // Runs once on thread `db-{worker}`, before its first job.
    ///         anyhow::ensure!(worker < 2, "no such replica");
    ///         Ok(Conn { worker, cache: HashMap::new() })
    ///     },
    ///     |conn: &mut Conn, n, _token| {
    ///         let square = u64::from(n) * u64::from(n);
    ///         conn.cache.insert(n, square);
    ///         assert!(conn.worker < 2);
    ///         Ok(())
    ///     },
    /// )?;
    /// pool.feed(0..100).expect("running");
    /// drop(pool); // the connections are dropped on their workers' threads
    /// let report = rt.run();
    /// let db = report.pool("db").unwrap();
    /// assert_eq!(db.succeeded, 100);
    /// assert!(db.worker_failures.is_empty());
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn start_with<S, I, F>(self, init: I, job_fn: F) -> Result<Pool<T>, BuildError>
    where
        S: 'static,
        I: Fn(usize) -> anyhow::Result<S> + Send + Sync + 'static,
        F: Fn(&mut S, T, &Token) -> anyhow::Result<()> + Send + Sync + 'static,
    {
        let PoolBuilder {
            reg,
            name,
            workers,
            capacity,
            drain,
            fail_fast,
            key,
            stack_size,
            stage,
        } = self;
        let workers = workers.unwrap_or_else(default_workers);
        if workers == 0 {
            return Err(BuildError::ZeroWorkers { pool: name });
        }
        // The stage's source: the root for the first stage, else the
        // stage's own, which the trigger does not stop.
        let source = reg.stage_source(stage, &name)?;
        let mut names = vec![name.clone()];
        names.extend((0..workers).map(|i| format!("{name}-{i}")));
        reg.reserve(&names)?;
        let capacity = capacity.unwrap_or(workers.saturating_mul(2));
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let token = source.token();
        let name: Arc<str> = name.into();
        let id = PoolId::fresh();
        let tally = Arc::new(Tally::new(workers, Instant::now()));
        let queue = Arc::new(Queue::new(
            name.clone(),
            id.raw(),
            tx,
            rx.clone(),
            token.child(),
            tally.clone(),
        ));
        let first = reg.threads.next_id();
        let core = Arc::new(PoolCore {
            id,
            queue: queue.clone(),
            tally,
            rx,
            policy: drain,
            fail_fast,
            key,
            shared: reg.shared.clone(),
            handed_back: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            worker_failures: Mutex::new(Vec::new()),
            workers: names[1..]
                .iter()
                .enumerate()
                .map(|(i, n)| WorkerState::new(first + i, n.clone()))
                .collect(),
            sealed: Mutex::new(None),
            late: Mutex::new(Vec::new()),
        });
        // The first submitter exists before any worker runs, so a failed
        // start closes the (empty) pool by dropping it.
        let submitter = Submitter::new(queue);
        let (init, job_fn) = (Arc::new(init), Arc::new(job_fn));
        let specs = (0..workers)
            .map(|i| {
                let (core, token) = (core.clone(), token.clone());
                let (init, job_fn) = (init.clone(), job_fn.clone());
                Spec {
                    name: names[i + 1].clone(),
                    hold: Hold::Work,
                    stack_size,
                    body: Box::new(move || run_worker(&core, i, &token, &*init, &*job_fn)),
                }
            })
            .collect();
        let ids = reg.start_threads(&names, specs)?;
        debug_assert_eq!(ids, (first..first + workers).collect::<Vec<_>>());
        reg.add_unit_in(stage.index(), ids, core);
        Ok(Pool { submitter, id })
    }
}

impl<T> fmt::Debug for PoolBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .field("capacity", &self.capacity)
            .field("drain", &self.drain)
            .field("fail_fast", &self.fail_fast)
            .field("key", &self.key.as_ref().map(|_| "<closure>"))
            .field("stack_size", &self.stack_size)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ===== Pool =====

/// A running pool: the typed handle [`PoolBuilder::start`] returns.
///
/// It is the pool's first [`Submitter`] (it derefs to one, so
/// `pool.submit(job)` works, and dropping it is dropping a submitter) and
/// carries the pool's typed [`PoolId`], with which
/// [`Report::take_handed_back`] returns the handed-back jobs as a `Vec<T>`
/// that cannot be mistaken for another pool's or another type's. The id is
/// `Copy` and keeps nothing alive: take it before the last submitter goes.
///
/// `pool.stats()` (through the submitter, [`Submitter::stats`]) reads the
/// pool's live counts while it runs, and its final counts after the run.
///
/// # Examples
///
/// A second producer gets its own submitter; under
/// [`DrainPolicy::HandBack`] the jobs still queued at the stop come back,
/// typed, in queue order:
///
/// ```
/// use winddown::{DrainPolicy, Runtime};
///
/// let mut rt = Runtime::builder().signals(false).build()?;
/// let (started, job_started) = crossbeam_channel::bounded(1);
/// let pool = rt
///     .pool::<u32>("upload")
///     .workers(1)
///     .capacity(8)
///     .drain(DrainPolicy::HandBack)
///     .start(move |_n, token| {
///         let _ = started.try_send(());
///         token.wait(); // the first job runs until the stop
///         Ok(())
///     })?;
/// let id = pool.id();
/// let other = pool.submitter(); // for another producer thread
/// pool.submit(1).expect("running");
/// other.submit(2).expect("running");
/// other.submit(3).expect("running");
/// job_started.recv()?; // job 1 is in flight, 2 and 3 are queued
/// rt.handle().request("deploy");
/// let mut report = rt.run();
/// assert_eq!(report.take_handed_back(id), vec![2, 3]);
/// let upload = report.pool("upload").unwrap();
/// assert_eq!((upload.succeeded, upload.handed_back), (1, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool<T> {
    submitter: Submitter<T>,
    id: PoolId<T>,
}

impl<T> Pool<T> {
    /// The pool's typed id, for [`Report::take_handed_back`].
    pub fn id(&self) -> PoolId<T> {
        self.id
    }

    /// Another submitter for this pool (for another producer thread).
    pub fn submitter(&self) -> Submitter<T> {
        self.submitter.clone()
    }

    /// This handle as a plain submitter.
    pub fn into_submitter(self) -> Submitter<T> {
        self.submitter
    }
}

impl<T> Deref for Pool<T> {
    type Target = Submitter<T>;

    fn deref(&self) -> &Submitter<T> {
        &self.submitter
    }
}

impl<T> From<&Pool<T>> for PoolId<T> {
    fn from(pool: &Pool<T>) -> PoolId<T> {
        pool.id
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.submitter.pool_name())
            .field("closed", &self.submitter.is_closed())
            .finish()
    }
}

// ===== Worker state =====

/// What the pool knows of one worker besides its slot and counters (those
/// are in the pool's `slot::Tally`, at the same index).
#[derive(Debug)]
struct WorkerState {
    /// The runtime-wide thread id (index into the thread registry).
    id: usize,
    name: String,
    /// The current job's key, if the pool has a key function. Written
    /// before the `HELD → RUNNING` CAS, whose `Release` publishes it to a
    /// seal that finds `RUNNING`.
    key: Mutex<Option<String>>,
}

impl WorkerState {
    fn new(id: usize, name: String) -> WorkerState {
        WorkerState {
            id,
            name,
            key: Mutex::new(None),
        }
    }
}

// ===== PoolCore =====

/// What the seal found, kept for the report.
struct SealState<T> {
    submitted: u64,
    succeeded: u64,
    failed: u64,
    panicked: u64,
    /// Handed back by workers and left in the queue, in submission order,
    /// and their sequence numbers.
    jobs: Vec<T>,
    seqs: Vec<u64>,
    stuck: Vec<StuckThread>,
    abandoned_keys: Vec<String>,
}

/// Everything a pool's workers and the joiner share.
struct PoolCore<T> {
    id: PoolId<T>,
    queue: Arc<Queue<T>>,
    /// The same tally as `queue.tally`, read through a pointer of our own:
    /// the queue's fields are written on every submit (its lock word and
    /// `submitted`), and a worker reading `queue.tally` on every job would
    /// share their cache line with the producer.
    tally: Arc<Tally>,
    /// The workers' and the joiner's receiver (the joiner hands back what
    /// is left in the queue).
    rx: Receiver<Item<T>>,
    policy: DrainPolicy,
    fail_fast: bool,
    key: Option<Arc<KeyFn<T>>>,
    shared: Arc<Shared>,
    /// Jobs workers took off the queue and gave back, with their sequence
    /// numbers: workers racing the stop push them in any order. The lock is
    /// held across a worker's `Slot::release` and its push, and the joiner
    /// takes the list under it after sealing (see `Slot::release`).
    handed_back: Mutex<Vec<Sequenced<T>>>,
    errors: Mutex<Vec<JobError>>,
    /// Inits that failed and states whose drop panicked, in order (at most
    /// two per worker, so not capped).
    worker_failures: Mutex<Vec<WorkerFailure>>,
    workers: Vec<WorkerState>,
    sealed: Mutex<Option<SealState<T>>>,
    /// Jobs a sealed worker still had in its hands and never started: taken
    /// off the queue after (or just before) the seal, or held while its key
    /// function ran. They were counted abandoned by difference at the seal;
    /// the report, made after the release hooks, moves the ones that came
    /// back by then to handed back. A job pushed later stays abandoned.
    late: Mutex<Vec<Sequenced<T>>>,
}

impl<T> PoolCore<T> {
    fn record_error(&self, key: Option<String>, message: String, panicked: bool) {
        #[cfg(feature = "tracing")]
        if panicked {
            event!(error, pool = %self.queue.name, job_key = key.as_deref().unwrap_or("-"), panic = %message, "job panicked");
        } else {
            event!(warn, pool = %self.queue.name, job_key = key.as_deref().unwrap_or("-"), error = %message, "job failed");
        }
        let mut errors = self.errors.lock();
        if errors.len() < MAX_ERRORS {
            errors.push(JobError {
                pool: self.queue.name.to_string(),
                key,
                message,
                panicked,
            });
        }
    }

    fn fail_fast(&self, error: String) {
        if self.fail_fast {
            let _began = self.shared.trigger(StopReason::JobFailed {
                pool: self.queue.name.to_string(),
                error,
            });
            if _began {
                event!(warn, pool = %self.queue.name, "fail-fast pool: a failure stops the run");
            }
        }
    }

    fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Past the drain deadline, or stopping under `HandBack`: take no more
    /// jobs.
    fn must_stop(&self, token: &Token) -> bool {
        token.is_hard_stopping() || (self.policy == DrainPolicy::HandBack && token.is_stopping())
    }

    /// Records a worker's own failure; for an init, applies the table of
    /// `PoolBuilder::start_with`: fail-fast triggers the stop, and the last
    /// worker to fail closes the pool, so that nothing waits for a queue no
    /// worker will drain. The jobs already queued stay in the channel,
    /// where the seal finds them and hands them back.
    fn worker_failed(&self, worker: usize, stage: WorkerStage, message: String, panicked: bool) {
        let thread = self.workers[worker].name.clone();
        let error = format!("worker {thread}: init failed: {message}");
        event!(
            error,
            pool = %self.queue.name,
            thread = %thread,
            stage = %stage,
            panicked,
            error = %message,
            "pool worker failed outside a job"
        );
        self.worker_failures.lock().push(WorkerFailure {
            worker,
            thread,
            stage,
            message,
            panicked,
        });
        if stage != WorkerStage::Init {
            return;
        }
        let none_left = self.tally().init_failed();
        self.fail_fast(error);
        if none_left {
            // From a worker thread: `close` waits only for a submit that
            // is in the middle of a send, and wakes blocked ones first.
            self.queue.close();
        }
    }
}

impl<T: Send + 'static> Unit for PoolCore<T> {
    fn pool_stats(&self) -> Option<(&str, PoolStats)> {
        Some((&self.queue.name, self.queue.stats()))
    }

    fn on_trigger(&self) {
        self.queue.try_disconnect();
    }

    fn stop_accepting(&self) {
        self.queue.close();
    }

    fn seal(&self, threads: &dyn ThreadView) {
        let name = self.queue.name.to_string();
        let now = Instant::now();
        // The trigger's time: a stuck job taken before the stop is counted
        // from it (`slot.rs`, "How long a stuck job has run").
        let stop_began = self.shared.root.token().stopped_at().unwrap_or(now);
        let mut stuck = Vec::new();
        let mut abandoned_keys = Vec::new();
        let mut ran_on = 0;
        // 1. Seal the stragglers, so none of them records anything from here
        //    on.
        let tally = self.tally();
        for (w, t) in self
            .workers
            .iter()
            .zip(tally.workers.iter())
            .filter(|(w, _)| threads.is_alive(w.id))
        {
            let (job_key, since) = match t.slot.seal(stop_began) {
                Sealed::Running(at) => {
                    // Jobs of a batch it ran on past before the stop, all
                    // `Ok`, that no CAS of its counted yet.
                    ran_on += t.slot.ran_on();
                    let key = w.key.lock().clone();
                    abandoned_keys.extend(key.clone());
                    (key, Some(at))
                }
                Sealed::Held(at) => (None, Some(at)),
                Sealed::Idle | Sealed::Again => (None, None),
            };
            stuck.push(StuckThread {
                thread: w.name.clone(),
                pool: Some(name.clone()),
                job_key,
                in_job: since.map(|at| now.saturating_duration_since(at)),
            });
        }
        tally.add_ran_on(ran_on);
        // 2. What workers handed back, and what is still queued, in
        //    submission order. The stable sort is near-linear (the queue's
        //    part is already sorted).
        let mut back = std::mem::take(&mut *self.handed_back.lock());
        for item in self.rx.try_iter() {
            if let Item::Batch(_, jobs) = &item {
                self.queue.took_batch(jobs.len());
            }
            back.extend(item.into_jobs());
        }
        back.sort_by_key(|&(seq, _)| seq);
        let (seqs, jobs): (Vec<u64>, Vec<T>) = back.into_iter().unzip();
        tally.set_handed_back(jobs.len() as u64);
        // 3. The counters, read once, after the seal.
        *self.sealed.lock() = Some(SealState {
            submitted: self.queue.submitted.load(Ordering::Relaxed),
            succeeded: tally.sum(Counter::Succeeded),
            failed: tally.sum(Counter::Failed),
            panicked: tally.sum(Counter::Panicked),
            jobs,
            seqs,
            stuck,
            abandoned_keys,
        });
    }

    fn report(&self, _threads: &dyn ThreadView, report: &mut Report) {
        let Some(mut s) = self.sealed.lock().take() else {
            debug_assert!(false, "report before seal");
            return;
        };
        // Jobs sealed workers gave back since the seal never ran: they go
        // back to the caller rather than count as abandoned (they were in
        // none of the seal's buckets, so the difference below shrinks by as
        // many). Merged by sequence number into queue order.
        let late = std::mem::take(&mut *self.late.lock());
        if !late.is_empty() {
            let mut all: Vec<Sequenced<T>> = s.seqs.drain(..).zip(s.jobs.drain(..)).collect();
            all.extend(late);
            all.sort_by_key(|&(seq, _)| seq);
            (s.seqs, s.jobs) = all.into_iter().unzip();
        }
        // Key functions are user code: they run here, after every unit was
        // sealed and the release hooks ran, so a slow one delays only the
        // report, not anyone's stuck verdict.
        let handed_back_keys = match &self.key {
            Some(key) => s
                .jobs
                .iter()
                .map(|j| catch(|| key(j)).unwrap_or_else(|_| "<key panicked>".into()))
                .collect(),
            None => Vec::new(),
        };
        let handed_back = s.jobs.len() as u64;
        let ran = s.succeeded + s.failed + s.panicked;
        // Counting by difference (`slot.rs`): every job not in another
        // bucket was on a worker that was given up on.
        let abandoned = s.submitted.saturating_sub(ran + handed_back);
        debug_assert!(
            s.submitted >= ran + handed_back,
            "a job counted twice in pool {}",
            self.queue.name
        );
        debug_assert!(abandoned >= s.abandoned_keys.len() as u64);
        // The live counts become the final ones.
        self.tally().set_handed_back(handed_back);
        self.tally().set_abandoned(abandoned);
        report.pools.push(PoolReport {
            name: self.queue.name.to_string(),
            workers: self.workers.len(),
            submitted: s.submitted,
            succeeded: s.succeeded,
            failed: s.failed,
            panicked: s.panicked,
            handed_back,
            abandoned,
            handed_back_keys,
            abandoned_keys: s.abandoned_keys,
            errors: std::mem::take(&mut *self.errors.lock()),
            worker_failures: self.worker_failures.lock().clone(),
        });
        report.stuck.extend(s.stuck);
        report.put_handed_back(self.id, &self.queue.name, s.jobs);
    }
}

// ===== The worker loop =====

/// A worker's whole life: init, the loop, teardown.
fn run_worker<T, S, I, F>(core: &PoolCore<T>, index: usize, token: &Token, init: &I, job_fn: &F)
where
    T: Send + 'static,
    I: Fn(usize) -> anyhow::Result<S>,
    F: Fn(&mut S, T, &Token) -> anyhow::Result<()>,
{
    if core.must_stop(token) {
        return; // the stop came first: this worker would take no job
    }
    let mut state = match catch(|| init(index)) {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => {
            let msg =
                catch(|| format!("{e:#}")).unwrap_or_else(|p| format!("<Display panicked: {p}>"));
            core.worker_failed(index, WorkerStage::Init, msg, false);
            return;
        }
        Err(panic) => {
            core.worker_failed(index, WorkerStage::Init, panic, true);
            return;
        }
    };
    worker_loop(core, index, token, |job, token| {
        job_fn(&mut state, job, token)
    });
    // The per-worker teardown, on this thread and before it reports its
    // exit (thread.rs: nothing shared is touched after the done guard).
    if let Err(panic) = catch(move || drop(state)) {
        core.worker_failed(index, WorkerStage::Teardown, panic, true);
    }
}

fn worker_loop<T, R>(core: &PoolCore<T>, index: usize, token: &Token, mut run: R)
where
    T: Send + 'static,
    R: FnMut(T, &Token) -> anyhow::Result<()>,
{
    let rx = &core.rx;
    let tally = &core.tally().workers[index];
    let mut idle = tally.slot.start();
    loop {
        // Between two jobs: past the deadline, or stopping under HandBack,
        // take nothing more.
        if core.must_stop(token) {
            return;
        }
        // An idle worker waits in a plain `recv`, not a `select!` over the
        // queue and the token: that is the cheapest wait per job, and the
        // stop still wakes it at once, because the trigger disconnects the
        // channel, or else the runtime's `stop_accepting` does.
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(TryRecvError::Disconnected) => return, // nothing more will come
            Err(TryRecvError::Empty) => {
                if token.is_stopping() {
                    // The trigger's own try may have met a submit in
                    // flight; try again rather than wait for the close.
                    core.queue.try_disconnect();
                }
                match rx.recv() {
                    Ok(item) => item,
                    Err(_) => return, // closed and empty
                }
            }
        };
        // From `recv` to the slot's first CAS the job is counted by
        // difference if the joiner seals us now (`slot.rs`).
        let next = match item {
            Item::One(seq, job) => one_job(core, index, token, idle, seq, job, &mut run),
            Item::Batch(seq, jobs) => {
                core.queue.took_batch(jobs.len());
                if core.key.is_none() {
                    batch_fast(core, index, token, idle, seq, jobs, &mut run)
                } else {
                    batch_keyed(core, index, token, idle, seq, jobs, &mut run)
                }
            }
        };
        match next {
            Ok(i) => idle = i,
            Err(_) => return,
        }
    }
}

/// Why a worker leaves its loop after a job: stopping (with the slot back
/// in `IDLE`, the proof given) or sealed.
type Exit = Option<Idle>;

/// One job, by the path its pool takes (with or without a key function).
fn one_job<T, R>(
    core: &PoolCore<T>,
    index: usize,
    token: &Token,
    idle: Idle,
    seq: u64,
    job: T,
    run: &mut R,
) -> Result<Idle, Exit>
where
    T: Send + 'static,
    R: FnMut(T, &Token) -> anyhow::Result<()>,
{
    let me = &core.workers[index];
    let tally = &core.tally().workers[index];
    let stopping = token.is_stopping();
    if core.key.is_none() && !core.must_stop(token) {
        // The common path: one CAS into RUNNING.
        let Some(running) = tally.slot.take_and_run(idle, stopping) else {
            core.late.lock().push((seq, job)); // sealed: never started
            return Err(None);
        };
        let outcome = Outcome::of(catch(|| run(job, token)));
        let Some(idle) = tally.slot.finish(running) else {
            return Err(None); // sealed while it ran: abandoned, record nothing
        };
        record(core, tally, None, outcome);
        return Ok(idle);
    }
    let Some(held) = tally.slot.take(idle, stopping) else {
        core.late.lock().push((seq, job)); // sealed: never started
        return Err(None);
    };
    if core.must_stop(token) {
        // The stop began while we waited: give the job back. Under the
        // lock, so the joiner either finds it in the list or finds us
        // sealed in HELD (abandoned), never neither.
        let mut list = core.handed_back.lock();
        if let Some(idle) = tally.slot.release(held) {
            list.push((seq, job));
            core.tally().handed_back_one();
            return Err(Some(idle));
        }
        drop(list);
        core.late.lock().push((seq, job)); // sealed in HELD
        return Err(None);
    }
    let key = match core.key.as_ref().map(|k| catch(|| k(&job))) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(panic)) => {
            // The key function is user code too: its panic counts as the
            // job's, which then never runs.
            drop(job);
            let Some(idle) = tally.slot.release(held) else {
                return Err(None);
            };
            let msg = format!("key function panicked: {panic}");
            record(core, tally, None, Outcome::Panicked(msg));
            return Ok(idle);
        }
    };
    *me.key.lock() = key.clone();
    let Some(running) = tally.slot.run(held) else {
        // Sealed while the key function ran: the job never started.
        core.late.lock().push((seq, job));
        return Err(None);
    };
    let outcome = Outcome::of(catch(|| run(job, token)));
    let Some(idle) = tally.slot.finish(running) else {
        return Err(None);
    };
    record(core, tally, key, outcome);
    Ok(idle)
}

/// A batch in a pool without a key function: `take_and_run` for the first
/// job; before the stop, a job that returned `Ok` lets the worker run on
/// into the next with one plain store (`run_on`), and otherwise `next_after`
/// (one CAS) counts the jobs so far and takes the next; `finish_after`
/// after the last (`slot.rs`, the state table and "Batches before the
/// stop"). The jobs not yet started stay in this
/// worker's hands, numbered: handed back if the stop calls for it between
/// two jobs, given to the late list if the worker finds itself sealed.
fn batch_fast<T, R>(
    core: &PoolCore<T>,
    index: usize,
    token: &Token,
    idle: Idle,
    seq: u64,
    jobs: Vec<T>,
    run: &mut R,
) -> Result<Idle, Exit>
where
    T: Send + 'static,
    R: FnMut(T, &Token) -> anyhow::Result<()>,
{
    let tally = &core.tally().workers[index];
    let mut rest = jobs.into_iter().zip(seq..);
    let Some((mut job, seq)) = rest.next() else {
        return Ok(idle); // never sent empty
    };
    if core.must_stop(token) {
        let all = std::iter::once((seq, job)).chain(rest.map(|(j, s)| (s, j)));
        return Err(hand_back(core, tally, idle, all.collect()));
    }
    let Some(mut running) = tally.slot.take_and_run(idle, token.is_stopping()) else {
        let all = std::iter::once((seq, job)).chain(rest.map(|(j, s)| (s, j)));
        core.late.lock().extend(all); // sealed: none started
        return Err(None);
    };
    // Jobs since `running` was published that returned `Ok` before the stop
    // and are not in the word yet: the worker ran on past them with no CAS
    // (`Slot::run_on`; slot.rs, "Batches before the stop"). Every CAS below
    // counts them too.
    let mut ran = 0;
    loop {
        let outcome = Outcome::of(catch(|| run(job, token)));
        let Some((next, next_seq)) = rest.next() else {
            let Some(idle) = tally.slot.finish_after(running, ran) else {
                return Err(None);
            };
            tally.bump_by(Counter::Succeeded, ran);
            record(core, tally, None, outcome);
            return Ok(idle);
        };
        // Before the stop a success runs on: one plain store, no CAS. (Not
        // stopping implies not past the deadline, so `must_stop` is false.)
        if matches!(outcome, Outcome::Ok) && !token.is_stopping() {
            ran += 1;
            tally.slot.run_on(&running, ran);
            job = next;
            continue;
        }
        if core.must_stop(token) {
            let Some(idle) = tally.slot.finish_after(running, ran) else {
                let left = std::iter::once((next_seq, next)).chain(rest.map(|(j, s)| (s, j)));
                core.late.lock().extend(left);
                return Err(None);
            };
            tally.bump_by(Counter::Succeeded, ran);
            record(core, tally, None, outcome);
            let left = std::iter::once((next_seq, next)).chain(rest.map(|(j, s)| (s, j)));
            return Err(hand_back(core, tally, idle, left.collect()));
        }
        let Some(r) = tally.slot.next_after(running, ran, token.is_stopping()) else {
            // Sealed while `job` ran: it is abandoned, and so are the jobs
            // run on before it unless the seal counted them (`ran_on`); the
            // rest never started.
            let left = std::iter::once((next_seq, next)).chain(rest.map(|(j, s)| (s, j)));
            core.late.lock().extend(left);
            return Err(None);
        };
        tally.bump_by(Counter::Succeeded, ran);
        record(core, tally, None, outcome);
        ran = 0;
        (running, job) = (r, next);
    }
}

/// A batch in a pool with a key function: job by job through the keyed
/// path (`one_job`), the rest in this worker's hands as in `batch_fast`.
fn batch_keyed<T, R>(
    core: &PoolCore<T>,
    index: usize,
    token: &Token,
    mut idle: Idle,
    seq: u64,
    jobs: Vec<T>,
    run: &mut R,
) -> Result<Idle, Exit>
where
    T: Send + 'static,
    R: FnMut(T, &Token) -> anyhow::Result<()>,
{
    let tally = &core.tally().workers[index];
    let mut rest = jobs.into_iter().zip(seq..).map(|(j, s)| (s, j));
    while let Some((seq, job)) = rest.next() {
        if core.must_stop(token) {
            let left = std::iter::once((seq, job)).chain(rest);
            return Err(hand_back(core, tally, idle, left.collect()));
        }
        match one_job(core, index, token, idle, seq, job, run) {
            Ok(i) => idle = i,
            Err(Some(i)) => return Err(hand_back(core, tally, i, rest.collect())),
            Err(None) => {
                core.late.lock().extend(rest);
                return Err(None);
            }
        }
    }
    Ok(idle)
}

/// Hands back jobs this worker holds and never started (the rest of a
/// batch): `take` then `release` under the hand-back lock, as for a single
/// job; sealed on the way, they go to the late list instead. Returns the
/// exit for the worker loop.
fn hand_back<T>(
    core: &PoolCore<T>,
    tally: &WorkerTally,
    idle: Idle,
    jobs: Vec<Sequenced<T>>,
) -> Exit {
    if jobs.is_empty() {
        return Some(idle);
    }
    let Some(held) = tally.slot.take(idle, true) else {
        core.late.lock().extend(jobs);
        return None;
    };
    let mut list = core.handed_back.lock();
    if let Some(idle) = tally.slot.release(held) {
        core.tally().handed_back_n(jobs.len() as u64);
        list.extend(jobs);
        return Some(idle);
    }
    drop(list);
    core.late.lock().extend(jobs);
    None
}

/// A job's outcome, with its message formatted before the slot's `finish`
/// (a `Display` impl is user code; none runs while the outcome is counted).
enum Outcome {
    Ok,
    Failed(String),
    Panicked(String),
}

impl Outcome {
    /// Inlined for the common case, a job that returned `Ok(())`; the
    /// rest (formatting an error) is out of the job loop.
    #[inline]
    fn of(result: Result<anyhow::Result<()>, String>) -> Outcome {
        match result {
            Ok(Ok(())) => Outcome::Ok,
            other => Outcome::of_failure(other),
        }
    }

    #[cold]
    #[inline(never)]
    fn of_failure(result: Result<anyhow::Result<()>, String>) -> Outcome {
        match result {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(e)) => Outcome::Failed(
                catch(|| format!("{e:#}")).unwrap_or_else(|p| format!("<Display panicked: {p}>")),
            ),
            Err(panic) => Outcome::Panicked(format!("panicked: {panic}")),
        }
    }
}

/// Counts an outcome after a successful `finish`/`release`.
///
/// Inlined for a success (one counter bump); a failure goes through the
/// cold `record_failure`.
#[inline]
fn record<T>(core: &PoolCore<T>, me: &WorkerTally, key: Option<String>, outcome: Outcome) {
    match outcome {
        Outcome::Ok => me.bump(Counter::Succeeded),
        failure => record_failure(core, me, key, failure),
    }
}

#[cold]
#[inline(never)]
fn record_failure<T>(core: &PoolCore<T>, me: &WorkerTally, key: Option<String>, outcome: Outcome) {
    let (msg, panicked) = match outcome {
        Outcome::Ok => {
            me.bump(Counter::Succeeded);
            return;
        }
        Outcome::Failed(msg) => {
            me.bump(Counter::Failed);
            (msg, false)
        }
        Outcome::Panicked(msg) => {
            me.bump(Counter::Panicked);
            (msg, true)
        }
    };
    core.record_error(key, msg.clone(), panicked);
    core.fail_fast(msg);
}
