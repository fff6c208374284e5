//! `Pool<T>`: named worker threads pulling jobs from one bounded crossbeam
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
//! (`Queue::try_disconnect`, from `Shared::trigger`), so idle workers
//! wake at once without waiting for the runtime's thread to wake up and
//! close the queue; if a submit did hold it, that submit refuses and
//! `close` disconnects right after.
//!
//! # The job slot
//!
//! Each worker has one `AtomicU64` slot saying whether it is in a job and
//! since when, so that the joiner can name a stuck job. Exactly one side
//! accounts for a job (invariant 1, nothing lost and nothing counted twice):
//! the worker clears the slot with a `swap` when the job returns, and the
//! joiner marks a straggler with a `fetch_or(ABANDONED)`; whichever comes
//! first in the slot's modification order decides whether the job is
//! "finished" (the worker records it) or "abandoned" (the joiner does, and
//! the worker records nothing and exits when it comes back).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use parking_lot::Mutex;

use crate::error::BuildError;
use crate::join::ThreadKind;
use crate::report::{JobError, PoolReport, StuckThread};
use crate::runtime::{Handle, Runtime};
use crate::submit::{Queue, Sequenced, Submitter};
use crate::thread::catch;
use crate::token::{StopReason, Token};

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
    /// queue order, in the [`Report`](crate::Report), so it can be
    /// checkpointed and resumed. (Queue order is submission order; jobs of
    /// producers that submitted at the same moment may come in either
    /// order.)
    HandBack,
}

type JobFn<T> = dyn Fn(T, &Token) -> anyhow::Result<()> + Send + Sync;
type KeyFn<T> = dyn Fn(&T) -> String + Send + Sync;

// ===== PoolBuilder =====

/// Configures a pool; made by [`Runtime::pool`], finished by
/// [`start`](PoolBuilder::start).
#[must_use = "a pool starts only when `start` is called"]
pub struct PoolBuilder<'rt, T> {
    rt: &'rt mut Runtime,
    name: String,
    workers: Option<usize>,
    capacity: Option<usize>,
    drain: DrainPolicy,
    fail_fast: bool,
    key: Option<Arc<KeyFn<T>>>,
    stack_size: Option<usize>,
}

impl<'rt, T: Send + 'static> PoolBuilder<'rt, T> {
    pub(crate) fn new(rt: &'rt mut Runtime, name: String) -> Self {
        PoolBuilder {
            rt,
            name,
            workers: None,
            capacity: None,
            drain: DrainPolicy::Finish,
            fail_fast: false,
            key: None,
            stack_size: None,
        }
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
    /// `Debug` form of `key(&job)`. Called once per job, before it runs.
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
    /// first [`Submitter`]. Each job runs as `job_fn(job, &token)`; an `Err`
    /// or a panic is caught, counted and recorded, and the worker goes on.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`], [`BuildError::InvalidName`],
    /// [`BuildError::DuplicateName`], [`BuildError::Stopping`] if the runtime
    /// is already stopping, [`BuildError::Spawn`] if the OS refused a thread
    /// (the workers already spawned are stopped and joined first).
    pub fn start<F>(self, job_fn: F) -> Result<Submitter<T>, BuildError>
    where
        F: Fn(T, &Token) -> anyhow::Result<()> + Send + Sync + 'static,
    {
        let PoolBuilder {
            rt,
            name,
            workers,
            capacity,
            drain,
            fail_fast,
            key,
            stack_size,
        } = self;
        let workers = workers.unwrap_or_else(default_workers);
        if workers == 0 {
            return Err(BuildError::ZeroWorkers { pool: name });
        }
        rt.check_new_name(&name)?;
        let capacity = capacity.unwrap_or(workers.saturating_mul(2));
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let handle = rt.handle();
        let token = handle.token();
        let name: Arc<str> = name.into();
        let queue = Arc::new(Queue::new(name.clone(), tx, token.child()));
        let ids: Vec<usize> = (0..workers)
            .map(|i| rt.reserve_thread(format!("{name}-{i}"), ThreadKind::Worker))
            .collect();
        let core = Arc::new(PoolCore {
            queue: queue.clone(),
            rx,
            policy: drain,
            fail_fast,
            key,
            job_fn: Arc::new(job_fn),
            handed_back: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            epoch: Instant::now(),
            workers: ids
                .iter()
                .enumerate()
                .map(|(i, &id)| WorkerState::new(id, format!("{name}-{i}")))
                .collect(),
        });
        // Hand out the first submitter before any worker runs, so a failed
        // start closes the pool by dropping it.
        let submitter = Submitter::new(queue);
        let mut spawned = Vec::with_capacity(workers);
        for w in &core.workers {
            let (core2, me, token2, handle2) =
                (core.clone(), w.clone(), token.clone(), handle.clone());
            let body = move || worker_loop(&core2, &me, &token2, &handle2);
            match rt.spawn_thread(w.id, stack_size, body) {
                Ok(h) => spawned.push((w.id, h)),
                Err(e) => {
                    // Undo the partial start: close the (empty) queue so the
                    // spawned workers see a disconnect, and join them. Their
                    // entries stay unstarted, so their exits are ignored.
                    drop(submitter);
                    core.queue.close();
                    for (_, h) in spawned {
                        let _ = h.join();
                    }
                    return Err(BuildError::Spawn(e));
                }
            }
        }
        for (id, h) in spawned {
            rt.thread_started(id, h);
        }
        rt.add_pool(core);
        Ok(submitter)
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
            .finish_non_exhaustive()
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ===== Worker state =====

/// The slot is busy: a job started at the nanosecond in the low bits.
const BUSY: u64 = 1 << 62;
/// The joiner gave up on this worker; its current job is "abandoned".
const ABANDONED: u64 = 1 << 63;
const TIME_MASK: u64 = BUSY - 1;

#[derive(Debug)]
pub(crate) struct WorkerState {
    /// The runtime-wide thread id (index into the joiner's table).
    pub(crate) id: usize,
    pub(crate) name: String,
    /// See "The job slot" in the module doc. Written by the worker (`swap`)
    /// and the joiner (`fetch_or`), both `AcqRel`, so whichever goes second
    /// sees the first's write and the key stored before it.
    slot: AtomicU64,
    /// The current job's key, if the pool has a key function.
    key: Mutex<Option<String>>,
    // Counters: written only by this worker, read by the joiner after the
    // worker's exit was reported (the done channel orders them) or after the
    // slot was sealed. `Relaxed` is therefore enough.
    succeeded: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
}

impl WorkerState {
    fn new(id: usize, name: String) -> Arc<WorkerState> {
        Arc::new(WorkerState {
            id,
            name,
            slot: AtomicU64::new(0),
            key: Mutex::new(None),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
        })
    }

    fn bump(counter: &AtomicU64) {
        // Single writer: a load and a store, no read-modify-write needed.
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

// ===== PoolCore =====

/// Everything a pool's workers and the joiner share.
pub(crate) struct PoolCore<T> {
    queue: Arc<Queue<T>>,
    /// The joiner's receiver, used to hand back what is left in the queue.
    rx: Receiver<Sequenced<T>>,
    policy: DrainPolicy,
    fail_fast: bool,
    key: Option<Arc<KeyFn<T>>>,
    job_fn: Arc<JobFn<T>>,
    /// Jobs workers took off the queue and gave back, with their sequence
    /// numbers: workers racing the stop push them in any order.
    handed_back: Mutex<Vec<Sequenced<T>>>,
    errors: Mutex<Vec<JobError>>,
    /// Zero of the job slots' clocks.
    epoch: Instant,
    workers: Vec<Arc<WorkerState>>,
}

impl<T> PoolCore<T> {
    fn hand_back(&self, job: Sequenced<T>) {
        self.handed_back.lock().push(job);
    }

    fn record_error(&self, key: Option<String>, message: String, panicked: bool) {
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

    fn now_ns(&self) -> u64 {
        // Truncation only after ~146 years of uptime.
        (self.epoch.elapsed().as_nanos() as u64) & TIME_MASK
    }
}

/// What the runtime needs of a pool, whatever its job type.
pub(crate) trait PoolControl: Send + Sync {
    fn close(&self);
    /// `Queue::try_disconnect`: the trigger's non-blocking early close.
    fn try_disconnect(&self);
    /// Seals the pool and builds its report. `alive(id)` says whether a
    /// worker has not reported its exit; those are named stuck.
    fn finish(&self, alive: &dyn Fn(usize) -> bool, now: Instant)
        -> (PoolReport, Vec<StuckThread>);
}

impl<T: Send + 'static> PoolControl for PoolCore<T> {
    fn close(&self) {
        self.queue.close();
    }

    fn try_disconnect(&self) {
        self.queue.try_disconnect();
    }

    fn finish(
        &self,
        alive: &dyn Fn(usize) -> bool,
        now: Instant,
    ) -> (PoolReport, Vec<StuckThread>) {
        let name = self.queue.name.to_string();
        let mut stuck = Vec::new();
        let mut abandoned_keys = Vec::new();
        let mut abandoned = 0;
        // 1. Seal the stragglers first, so none of them records anything
        //    from here on (see "The job slot").
        for w in self.workers.iter().filter(|w| alive(w.id)) {
            let prev = w.slot.fetch_or(ABANDONED, Ordering::AcqRel);
            let (job_key, in_job) = if prev & BUSY != 0 && prev & ABANDONED == 0 {
                abandoned += 1;
                let key = w.key.lock().clone();
                if let Some(k) = &key {
                    abandoned_keys.push(k.clone());
                }
                let started = self.epoch + Duration::from_nanos(prev & TIME_MASK);
                (key, Some(now.saturating_duration_since(started)))
            } else {
                (None, None)
            };
            stuck.push(StuckThread {
                thread: w.name.clone(),
                pool: Some(name.clone()),
                job_key,
                in_job,
            });
        }
        // 2. Everything still queued goes back too, and all of it in
        //    submission order: what the workers handed back came off the
        //    queue first but reached the list in whatever order they raced.
        //    The stable sort is near-linear here (the queue's part is sorted).
        let mut handed_back = std::mem::take(&mut *self.handed_back.lock());
        handed_back.extend(self.rx.try_iter());
        handed_back.sort_by_key(|&(seq, _)| seq);
        let jobs: Vec<T> = handed_back.into_iter().map(|(_, job)| job).collect();
        let handed_back_keys = match &self.key {
            Some(key) => jobs
                .iter()
                .map(|j| catch(|| key(j)).unwrap_or_else(|_| "<key panicked>".into()))
                .collect(),
            None => Vec::new(),
        };
        let sum = |f: fn(&WorkerState) -> &AtomicU64| -> u64 {
            self.workers
                .iter()
                .map(|w| f(w).load(Ordering::Relaxed))
                .sum()
        };
        let report = PoolReport::new(
            name,
            self.workers.len(),
            self.queue.submitted.load(Ordering::Relaxed),
            sum(|w| &w.succeeded),
            sum(|w| &w.failed),
            sum(|w| &w.panicked),
            abandoned,
            abandoned_keys,
            handed_back_keys,
            std::mem::take(&mut *self.errors.lock()),
            jobs,
        );
        (report, stuck)
    }
}

// ===== The worker loop =====

fn worker_loop<T: Send + 'static>(
    core: &PoolCore<T>,
    me: &WorkerState,
    token: &Token,
    handle: &Handle,
) {
    let rx = &core.rx;
    let hand_back_on_stop = core.policy == DrainPolicy::HandBack;
    loop {
        // Between two jobs: past the deadline, or stopping under HandBack,
        // take nothing more.
        if token.is_hard_stopping() || (hand_back_on_stop && token.is_stopping()) {
            break;
        }
        // An idle worker waits in a plain `recv`, not a `select!` over the
        // queue and the token: that is the cheapest wait per job, and the
        // stop still wakes it at once, because the trigger disconnects the
        // channel (`Shared::trigger`), or else the runtime's `close` does.
        let job = match rx.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => break, // nothing more will come
            Err(TryRecvError::Empty) => {
                if token.is_stopping() {
                    // The trigger's own try may have met a submit in
                    // flight; try again rather than wait for `close`.
                    core.queue.try_disconnect();
                }
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break, // closed and empty
                }
            }
        };
        // The stop may have begun while we waited.
        if token.is_hard_stopping() || (hand_back_on_stop && token.is_stopping()) {
            core.hand_back(job);
            break;
        }
        if !run_one(core, me, token, handle, job) {
            return; // sealed as stuck: record nothing more
        }
    }
}

/// Runs one job and records its outcome. Returns `false` if the joiner gave
/// up on this worker while the job ran.
fn run_one<T>(
    core: &PoolCore<T>,
    me: &WorkerState,
    token: &Token,
    handle: &Handle,
    (seq, job): Sequenced<T>,
) -> bool {
    // The key function is user code too: a panic in it counts as the job's.
    let key = match core.key.as_ref().map(|k| catch(|| k(&job))) {
        None => None,
        Some(Ok(k)) => {
            *me.key.lock() = Some(k.clone());
            Some(k)
        }
        Some(Err(panic)) => {
            drop(job);
            WorkerState::bump(&me.panicked);
            let msg = format!("key function panicked: {panic}");
            core.record_error(None, msg.clone(), true);
            fail_fast(core, handle, msg);
            return true;
        }
    };
    let prev = me.slot.swap(BUSY | core.now_ns(), Ordering::AcqRel);
    if prev & ABANDONED != 0 {
        // Sealed while between jobs (only if descheduled for the whole kill
        // grace): the report is already built, keep the job findable.
        me.slot.store(ABANDONED, Ordering::Release);
        core.hand_back((seq, job));
        return false;
    }
    let outcome = catch(|| (core.job_fn)(job, token));
    let prev = me.slot.swap(0, Ordering::AcqRel);
    if prev & ABANDONED != 0 {
        me.slot.store(ABANDONED, Ordering::Release);
        return false;
    }
    let msg = match outcome {
        Ok(Ok(())) => {
            WorkerState::bump(&me.succeeded);
            return true;
        }
        Ok(Err(e)) => {
            WorkerState::bump(&me.failed);
            let msg = format!("{e:#}");
            core.record_error(key, msg.clone(), false);
            msg
        }
        Err(panic) => {
            WorkerState::bump(&me.panicked);
            let msg = format!("panicked: {panic}");
            core.record_error(key, msg.clone(), true);
            msg
        }
    };
    fail_fast(core, handle, msg);
    true
}

fn fail_fast<T>(core: &PoolCore<T>, handle: &Handle, error: String) {
    if core.fail_fast {
        handle.trigger(StopReason::JobFailed {
            pool: core.queue.name.to_string(),
            error,
        });
    }
}
