//! The way into a pool: [`Submitter`], and the errors that hand a refused job
//! back to its caller.
//!
//! The runtime owns the only `Sender` of each pool's channel, inside `Queue`;
//! submitters borrow it under a read lock for the length of one call. Closing
//! takes the write lock and drops the sender, so the channel really
//! disconnects (crossbeam disconnects only when *every* sender is gone), and
//! once `close` returns no submit is still in flight: the `submitted` count is
//! final.

use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, TrySendError};
use parking_lot::RwLock;

use crate::reason::StopReason;
use crate::report::PoolId;
use crate::slot::{Counter, Tally};
use crate::token::StopSource;
use crate::unit::PoolStats;

// ===== Queue =====

/// The submit side of one pool.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    pub(crate) name: Arc<str>,
    /// The pool's process-unique id (`PoolId`).
    pub(crate) pool_id: u64,
    /// `Some` while the pool accepts work. Written (taken) once, by `close`.
    /// Each job travels with its sequence number (see `submitted`).
    sender: RwLock<Option<Sender<Item<T>>>>,
    /// Stopped by `close`, and by the runtime's root through the token tree.
    /// Blocked submits wait on its receiver alongside the channel.
    closed: StopSource,
    /// `closed`'s receiver, kept so a blocked submit need not build a token.
    closed_rx: Receiver<()>,
    /// Live `Submitter`s; the last one to drop closes the pool.
    submitters: AtomicUsize,
    /// Jobs that entered the channel. Incremented under the read lock just
    /// before each send, whose job carries the old value as its sequence
    /// number, and decremented again if the send fails; so once `close` has
    /// taken the write lock (which orders every earlier change before the
    /// report's read; `Relaxed` is therefore enough) it counts exactly the
    /// jobs sent. The numbers put handed-back jobs back in submission
    /// order: one producer's jobs are numbered in the order it sent them.
    /// (A failed send can let two concurrent producers share a number;
    /// their relative order was not defined anyway.)
    pub(crate) submitted: AtomicU64,
    /// The pool's workers' slots and counters, for live counts.
    pub(crate) tally: Arc<Tally>,
    /// A receiver of the channel kept only to read its length for live
    /// counts (the workers and the joiner hold their own). Holding it
    /// changes nothing about disconnection: that follows the senders.
    pending: Receiver<Item<T>>,
    /// Jobs in the channel's batches beyond the first of each, so that
    /// `pending.len() + batched` counts queued jobs. Added before a batch
    /// is sent (and taken back if the send fails), subtracted by whoever
    /// receives it (a worker, or the joiner draining the queue). `Relaxed`:
    /// a live count, read alone.
    pub(crate) batched: AtomicU64,
}

/// A job and its sequence number, as the pool keeps it for the report.
pub(crate) type Sequenced<T> = (u64, T);

/// What travels through a pool's channel: one job, or a batch of them
/// ([`Submitter::submit_batch`]), with the sequence number of its (first)
/// job; a batch's jobs are numbered on from there. A batch is one entry of
/// the channel, so it takes one place of the pool's capacity.
#[derive(Debug)]
pub(crate) enum Item<T> {
    One(u64, T),
    /// Never empty.
    Batch(u64, Vec<T>),
}

impl<T> Item<T> {
    /// The jobs, each with its sequence number.
    pub(crate) fn into_jobs(self) -> impl Iterator<Item = Sequenced<T>> {
        let (first, jobs) = match self {
            Item::One(seq, job) => (Some((seq, job)), Vec::new()),
            Item::Batch(seq, jobs) => (
                None,
                jobs.into_iter().zip(seq..).map(|(j, s)| (s, j)).collect(),
            ),
        };
        first.into_iter().chain(jobs)
    }
}

/// What one send moves: a job or a batch (a private trait, so that
/// `send` is written once for both).
trait Payload<T>: Sized {
    /// How many jobs.
    fn jobs(&self) -> u64;
    fn into_item(self, seq: u64) -> Item<T>;
    /// Undoes `into_item` for a refused send.
    fn from_item(item: Item<T>) -> Self;
}

struct One<T>(T);

impl<T> Payload<T> for One<T> {
    fn jobs(&self) -> u64 {
        1
    }
    fn into_item(self, seq: u64) -> Item<T> {
        Item::One(seq, self.0)
    }
    fn from_item(item: Item<T>) -> Self {
        match item {
            Item::One(_, job) => One(job),
            Item::Batch(..) => unreachable!("a job was sent, not a batch"),
        }
    }
}

impl<T> Payload<T> for Vec<T> {
    fn jobs(&self) -> u64 {
        self.len() as u64
    }
    fn into_item(self, seq: u64) -> Item<T> {
        Item::Batch(seq, self)
    }
    fn from_item(item: Item<T>) -> Self {
        match item {
            Item::Batch(_, jobs) => jobs,
            Item::One(..) => unreachable!("a batch was sent, not a job"),
        }
    }
}

enum Refused<T> {
    Full(T),
    Timeout(T),
    Stopped(T),
}

impl<T> Queue<T> {
    pub(crate) fn new(
        name: Arc<str>,
        pool_id: u64,
        sender: Sender<Item<T>>,
        pending: Receiver<Item<T>>,
        closed: StopSource,
        tally: Arc<Tally>,
    ) -> Queue<T> {
        Queue {
            name,
            pool_id,
            sender: RwLock::new(Some(sender)),
            closed_rx: closed.token().receiver().clone(),
            closed,
            submitters: AtomicUsize::new(0),
            submitted: AtomicU64::new(0),
            tally,
            pending,
            batched: AtomicU64::new(0),
        }
    }

    /// Counts a batch of `len` jobs that left the channel (`batched`).
    pub(crate) fn took_batch(&self, len: usize) {
        self.batched
            .fetch_sub(len.saturating_sub(1) as u64, Ordering::Relaxed);
    }

    /// The pool's live counts (`PoolStats` says what holds). Every load is
    /// `Acquire` except `submitted`'s, which comes last: a counted outcome
    /// was published by a worker that received the job after its submit's
    /// increment, so the increment is visible here too (slot.rs, "The
    /// tally"). Takes no lock.
    pub(crate) fn stats(&self) -> PoolStats {
        let t = &self.tally;
        let init_failures = t.init_failures();
        let succeeded = t.sum(Counter::Succeeded);
        let failed = t.sum(Counter::Failed);
        let panicked = t.sum(Counter::Panicked);
        let abandoned = t.abandoned();
        let handed_back = t.handed_back();
        let in_flight = t.in_flight();
        let queued = self
            .pending
            .len()
            .saturating_add(self.batched.load(Ordering::Relaxed) as usize);
        // Relaxed: only its value is wanted; the `Acquire` loads above
        // already order it after every increment they imply.
        let submitted = self.submitted.load(Ordering::Relaxed);
        PoolStats {
            workers: t.workers.len(),
            init_failures,
            submitted,
            queued,
            in_flight,
            succeeded,
            failed,
            panicked,
            handed_back,
            abandoned,
        }
    }

    /// Refuses new work: wakes blocked submits (they return their jobs), then
    /// drops the only sender once no submit is in flight. Idempotent.
    pub(crate) fn close(&self) {
        self.closed
            .stop(StopReason::Requested(format!("pool {} closed", self.name)));
        let sender = self.sender.write().take();
        drop(sender);
    }

    /// Drops the sender if no submit holds the lock right now, and otherwise
    /// does nothing: `close` (which the runtime always calls) finishes the
    /// job. Never blocks, so neither the trigger nor a herd of workers that
    /// saw the stop at once queues up on the lock. Only called once stopping
    /// has begun, so a submit that takes the lock after it refuses.
    pub(crate) fn try_disconnect(&self) {
        if let Some(mut sender) = self.sender.try_write() {
            drop(sender.take());
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_stopping()
    }

    /// Sends `payload` (a job or a non-empty batch), blocking until
    /// `deadline` (`None`: forever) if `block`. A batch goes in whole or not
    /// at all.
    fn send<P: Payload<T>>(
        &self,
        payload: P,
        block: bool,
        deadline: Option<Instant>,
    ) -> Result<(), Refused<P>> {
        let guard = self.sender.read();
        let Some(tx) = guard.as_ref() else {
            return Err(Refused::Stopped(payload));
        };
        let n = payload.jobs();
        let mut payload = payload;
        loop {
            // Checked first on every round, so a submit that is woken by the
            // stop refuses even if the queue has room at the same moment.
            if self.closed.is_stopping() {
                return Err(Refused::Stopped(payload));
            }
            let seq = self.submitted.fetch_add(n, Ordering::Relaxed);
            if n > 1 {
                self.batched.fetch_add(n - 1, Ordering::Relaxed);
            }
            match tx.try_send(payload.into_item(seq)) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.submitted.fetch_sub(n, Ordering::Relaxed);
                    if n > 1 {
                        self.batched.fetch_sub(n - 1, Ordering::Relaxed);
                    }
                    match e {
                        TrySendError::Disconnected(i) => {
                            return Err(Refused::Stopped(P::from_item(i)))
                        }
                        TrySendError::Full(i) if !block => {
                            return Err(Refused::Full(P::from_item(i)))
                        }
                        TrySendError::Full(i) => payload = P::from_item(i),
                    }
                }
            }
            // Block until the channel has room or the pool closes. `ready`
            // does not perform the send, so the job stays in our hands either
            // way (a `select!` send arm would drop it if the other arm won).
            let mut sel = Select::new();
            sel.send(tx);
            sel.recv(&self.closed_rx);
            let ready = match deadline {
                None => Ok(sel.ready()),
                Some(d) => sel.ready_deadline(d),
            };
            if ready.is_err() {
                return Err(Refused::Timeout(payload));
            }
        }
    }

    /// Sends a batch as `send` does; an empty one is accepted (nothing to
    /// send) unless the pool is closed.
    fn send_batch(
        &self,
        jobs: Vec<T>,
        block: bool,
        deadline: Option<Instant>,
    ) -> Result<(), Refused<Vec<T>>> {
        if jobs.is_empty() {
            return if self.is_closed() || self.sender.read().is_none() {
                Err(Refused::Stopped(jobs))
            } else {
                Ok(())
            };
        }
        self.send(jobs, block, deadline)
    }
}

// ===== Submitter =====

/// A cloneable handle through which producers hand jobs to a pool.
///
/// Producers never hold the channel's `Sender`: the runtime keeps the only
/// one, so that stopping can disconnect the channel. Every refusal returns
/// the job inside the error, so nothing is lost.
///
/// The pool is *closed* — "no more work" — when every `Submitter` has been
/// dropped or [`close`](Submitter::close) is called. When every pool is closed
/// and drained, the run completes by itself.
///
/// # Examples
///
/// ```
/// use winddown::Runtime;
///
/// let mut rt = Runtime::builder().signals(false).build()?;
/// let submitter = rt.pool::<u32>("square").workers(2).start(|n, _token| {
///     let _ = n * n;
///     Ok(())
/// })?;
/// for n in 0..100 {
///     submitter.submit(n).expect("running, so accepted");
/// }
/// drop(submitter); // no more work: the run completes when the queue drains
/// let report = rt.run();
/// assert_eq!(report.pools[0].succeeded, 100);
/// # Ok::<(), winddown::BuildError>(())
/// ```
pub struct Submitter<T> {
    queue: Arc<Queue<T>>,
}

impl<T> Submitter<T> {
    pub(crate) fn new(queue: Arc<Queue<T>>) -> Submitter<T> {
        queue.submitters.fetch_add(1, Ordering::Relaxed);
        Submitter { queue }
    }

    /// Submits `job`, blocking while the queue is full.
    ///
    /// # Errors
    ///
    /// Returns the job inside [`SubmitError`] once the pool is closed or the
    /// runtime is stopping — also when this call was already blocked when
    /// the stop began.
    pub fn submit(&self, job: T) -> Result<(), SubmitError<T>> {
        self.queue.send(One(job), true, None).map_err(|r| match r {
            Refused::Full(One(j)) | Refused::Timeout(One(j)) | Refused::Stopped(One(j)) => {
                SubmitError(j)
            }
        })
    }

    /// Submits `job` if the queue has room now; never blocks.
    ///
    /// # Errors
    ///
    /// [`TrySubmitError::Full`] if the queue is full (a zero-capacity pool is
    /// "full" unless a worker is waiting right now), [`TrySubmitError::Stopped`]
    /// once the pool is closed or stopping. Both hold the job.
    pub fn try_submit(&self, job: T) -> Result<(), TrySubmitError<T>> {
        self.queue.send(One(job), false, None).map_err(|r| match r {
            Refused::Full(One(j)) | Refused::Timeout(One(j)) => TrySubmitError::Full(j),
            Refused::Stopped(One(j)) => TrySubmitError::Stopped(j),
        })
    }

    /// Submits `job`, blocking at most `timeout` while the queue is full. A
    /// timeout too large to add to now blocks without limit.
    ///
    /// # Errors
    ///
    /// [`SubmitTimeoutError::Timeout`] if the queue stayed full,
    /// [`SubmitTimeoutError::Stopped`] once the pool is closed or stopping.
    /// Both hold the job.
    pub fn submit_timeout(&self, job: T, timeout: Duration) -> Result<(), SubmitTimeoutError<T>> {
        self.submit_until(job, Instant::now().checked_add(timeout))
    }

    /// Submits `job`, blocking until `deadline` at most while the queue is
    /// full.
    ///
    /// # Errors
    ///
    /// As [`submit_timeout`](Submitter::submit_timeout).
    pub fn submit_deadline(&self, job: T, deadline: Instant) -> Result<(), SubmitTimeoutError<T>> {
        self.submit_until(job, Some(deadline))
    }

    fn submit_until(&self, job: T, deadline: Option<Instant>) -> Result<(), SubmitTimeoutError<T>> {
        self.queue
            .send(One(job), true, deadline)
            .map_err(|r| match r {
                Refused::Full(One(j)) | Refused::Timeout(One(j)) => SubmitTimeoutError::Timeout(j),
                Refused::Stopped(One(j)) => SubmitTimeoutError::Stopped(j),
            })
    }

    /// Submits every job of `jobs` in order, blocking while the queue is
    /// full, and returns how many were submitted.
    ///
    /// # Errors
    ///
    /// When the pool closes or stops, returns a [`FeedError`] holding the
    /// refused job and the rest of the iterator, untouched, so the caller can
    /// account for every job that did not go in.
    ///
    /// ```
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let submitter = rt.pool::<u32>("p").start(|_, _| Ok(()))?;
    /// submitter.close();
    /// let err = submitter.feed(0..5).unwrap_err();
    /// assert_eq!(err.submitted, 0);
    /// assert_eq!(err.into_unsubmitted().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn feed<I>(&self, jobs: I) -> Result<u64, FeedError<T, I::IntoIter>>
    where
        I: IntoIterator<Item = T>,
    {
        let mut rest = jobs.into_iter();
        let mut submitted = 0;
        while let Some(job) = rest.next() {
            if let Err(SubmitError(job)) = self.submit(job) {
                return Err(FeedError {
                    job,
                    rest,
                    submitted,
                });
            }
            submitted += 1;
        }
        Ok(submitted)
    }

    /// Submits every job of `jobs` as one batch, in one channel operation,
    /// blocking while the queue is full: the way to move many small jobs
    /// at a fraction of the per-job cost of [`submit`](Submitter::submit).
    ///
    /// The batch goes in whole or not at all, and takes one place of the
    /// pool's capacity (the capacity bounds the channel's entries; a batch
    /// is one). A worker takes the whole batch and runs its jobs in order,
    /// one after another; other workers take other entries meanwhile, so
    /// cut work into several batches to spread it over the workers (or use
    /// [`feed_batched`](Submitter::feed_batched)). Each job is still one job
    /// everywhere else: numbered, counted in [`PoolStats`] and the report
    /// one by one, its error or panic caught on its own, and at the stop:
    ///
    /// * under [`DrainPolicy::HandBack`](crate::DrainPolicy::HandBack), a
    ///   worker finishes the job it is in and hands back the rest of its
    ///   batch, in order, with the queued jobs;
    /// * past the drain deadline, the rest of the batch of a worker still
    ///   in a job is counted abandoned with that job, and handed back
    ///   instead if the worker's job returns before the report is made
    ///   (only the job in flight is named by its key). No job is lost
    ///   either way.
    ///
    /// An empty batch is accepted and does nothing (unless the pool is
    /// closed). In [`PoolStats`] the jobs of a batch a worker holds count as
    /// neither queued nor in flight, except the one it runs; in a pool
    /// without a key function, the batch's jobs that returned `Ok` count as
    /// succeeded once the batch ends, a job of it fails, or the stop begins
    /// (until then the worker counts them in one word of its own, with no
    /// atomic read-modify-write per job; the report is exact either way).
    ///
    /// # Errors
    ///
    /// Returns the whole batch inside [`SubmitError`] once the pool is
    /// closed or the runtime is stopping, also when this call was already
    /// blocked when the stop began; none of its jobs went in.
    ///
    /// # Examples
    ///
    /// ```
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let pool = rt.pool::<u64>("sum").workers(2).start(|_, _| Ok(()))?;
    /// pool.submit_batch((0..1000).collect()).expect("running");
    /// pool.close();
    /// let refused = pool.submit_batch(vec![1, 2, 3]).unwrap_err();
    /// assert_eq!(refused.into_inner(), [1, 2, 3]);
    /// drop(pool);
    /// let report = rt.run();
    /// assert_eq!(report.pools[0].succeeded, 1000);
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn submit_batch(&self, jobs: Vec<T>) -> Result<(), SubmitError<Vec<T>>> {
        self.queue
            .send_batch(jobs, true, None)
            .map_err(|r| match r {
                Refused::Full(j) | Refused::Timeout(j) | Refused::Stopped(j) => SubmitError(j),
            })
    }

    /// Submits `jobs` as one batch if the queue has room now; never blocks.
    /// As [`submit_batch`](Submitter::submit_batch) otherwise.
    ///
    /// # Errors
    ///
    /// [`TrySubmitError::Full`] if the queue is full,
    /// [`TrySubmitError::Stopped`] once the pool is closed or stopping. Both
    /// hold the whole batch.
    pub fn try_submit_batch(&self, jobs: Vec<T>) -> Result<(), TrySubmitError<Vec<T>>> {
        self.queue
            .send_batch(jobs, false, None)
            .map_err(|r| match r {
                Refused::Full(j) | Refused::Timeout(j) => TrySubmitError::Full(j),
                Refused::Stopped(j) => TrySubmitError::Stopped(j),
            })
    }

    /// Submits `jobs` as one batch, blocking at most `timeout` while the
    /// queue is full. As [`submit_batch`](Submitter::submit_batch)
    /// otherwise; a timeout too large to add to now blocks without limit.
    ///
    /// # Errors
    ///
    /// [`SubmitTimeoutError::Timeout`] if the queue stayed full,
    /// [`SubmitTimeoutError::Stopped`] once the pool is closed or stopping.
    /// Both hold the whole batch.
    pub fn submit_batch_timeout(
        &self,
        jobs: Vec<T>,
        timeout: Duration,
    ) -> Result<(), SubmitTimeoutError<Vec<T>>> {
        self.submit_batch_until(jobs, Instant::now().checked_add(timeout))
    }

    /// Submits `jobs` as one batch, blocking until `deadline` at most while
    /// the queue is full.
    ///
    /// # Errors
    ///
    /// As [`submit_batch_timeout`](Submitter::submit_batch_timeout).
    pub fn submit_batch_deadline(
        &self,
        jobs: Vec<T>,
        deadline: Instant,
    ) -> Result<(), SubmitTimeoutError<Vec<T>>> {
        self.submit_batch_until(jobs, Some(deadline))
    }

    fn submit_batch_until(
        &self,
        jobs: Vec<T>,
        deadline: Option<Instant>,
    ) -> Result<(), SubmitTimeoutError<Vec<T>>> {
        self.queue
            .send_batch(jobs, true, deadline)
            .map_err(|r| match r {
                Refused::Full(j) | Refused::Timeout(j) => SubmitTimeoutError::Timeout(j),
                Refused::Stopped(j) => SubmitTimeoutError::Stopped(j),
            })
    }

    /// Submits every job of `jobs` in order, in batches of `batch_len`
    /// jobs ([`submit_batch`](Submitter::submit_batch); the last batch may
    /// be shorter), blocking while the queue is full, and returns how many
    /// jobs were submitted. A `batch_len` of 0 counts as 1.
    ///
    /// Jobs wait in the batch being filled until it is full, so a slow
    /// iterator delays its first jobs; and up to `capacity × batch_len`
    /// jobs can be queued. A few hundred jobs per batch already makes the
    /// channel's cost per job small (`BENCHMARKS.md`).
    ///
    /// # Errors
    ///
    /// When the pool closes or stops, returns a [`FeedError`] holding the
    /// refused batch (`job`) and the rest of the iterator, untouched;
    /// [`FeedError::into_unsubmitted_jobs`] chains them.
    ///
    /// ```
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let pool = rt.pool::<u32>("p").workers(2).start(|_, _| Ok(()))?;
    /// assert_eq!(pool.feed_batched(0..10_000, 256).expect("running"), 10_000);
    /// pool.close();
    /// let err = pool.feed_batched(0..5, 2).unwrap_err();
    /// assert_eq!(err.job, [0, 1]); // the refused batch
    /// assert_eq!(err.into_unsubmitted_jobs().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    /// drop(pool);
    /// assert_eq!(rt.run().pools[0].succeeded, 10_000);
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn feed_batched<I>(
        &self,
        jobs: I,
        batch_len: usize,
    ) -> Result<u64, FeedError<Vec<T>, I::IntoIter>>
    where
        I: IntoIterator<Item = T>,
    {
        let batch_len = batch_len.max(1);
        let mut rest = jobs.into_iter();
        let mut submitted = 0;
        loop {
            let batch: Vec<T> = rest.by_ref().take(batch_len).collect();
            if batch.is_empty() {
                return Ok(submitted);
            }
            let n = batch.len() as u64;
            if let Err(SubmitError(job)) = self.submit_batch(batch) {
                return Err(FeedError {
                    job,
                    rest,
                    submitted,
                });
            }
            submitted += n;
        }
    }

    /// Closes the pool for every submitter: "no more work". Jobs already
    /// queued still run; blocked submits return their jobs. Idempotent.
    pub fn close(&self) {
        self.queue.close();
    }

    /// Returns `true` once the pool is closed or the runtime is stopping.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Returns the pool's typed id, for
    /// [`Report::take_handed_back`](crate::Report::take_handed_back).
    pub fn pool_id(&self) -> PoolId<T> {
        PoolId::from_raw(self.queue.pool_id)
    }

    /// Returns a snapshot of the pool's live counts: queued, in flight,
    /// succeeded, failed, panicked, handed back. Never blocks and takes no
    /// lock; see [`PoolStats`] for what a snapshot taken while jobs run
    /// promises. After the run's report is made the counts are final, so a
    /// submitter kept past [`Runtime::run`](crate::Runtime::run) reads the
    /// pool's totals.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let (started_tx, started) = mpsc::channel();
    /// let (release, release_rx) = crossbeam_channel::bounded::<()>(0);
    /// let pool = rt
    ///     .pool::<u32>("held")
    ///     .workers(1)
    ///     .capacity(4)
    ///     .start(move |_, _| {
    ///         started_tx.send(()).unwrap();
    ///         release_rx.recv().ok(); // held until the test lets go
    ///         Ok(())
    ///     })?;
    /// for n in 0..3 {
    ///     pool.submit(n).expect("running");
    /// }
    /// started.recv().unwrap(); // the only worker is inside job 0
    /// let now = pool.stats();
    /// assert_eq!((now.in_flight, now.queued, now.succeeded), (1, 2, 0));
    /// drop(release); // every held job returns at once
    /// drop(pool);
    /// let report = rt.run();
    /// assert_eq!(report.pools[0].succeeded, 3);
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn stats(&self) -> PoolStats {
        self.queue.stats()
    }

    /// Returns the name of the pool this submitter feeds.
    pub fn pool_name(&self) -> &str {
        &self.queue.name
    }
}

impl<T> Clone for Submitter<T> {
    fn clone(&self) -> Self {
        Submitter::new(self.queue.clone())
    }
}

impl<T> Drop for Submitter<T> {
    fn drop(&mut self) {
        // AcqRel: the last submitter to leave must see every other's
        // departure before it closes the pool.
        if self.queue.submitters.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.queue.close();
        }
    }
}

impl<T> fmt::Debug for Submitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submitter")
            .field("pool", &&*self.queue.name)
            .field("is_closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

// ===== Errors =====

/// The pool is closed or the runtime is stopping; the job is returned.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SubmitError<T>(pub T);

impl<T> SubmitError<T> {
    /// Returns the refused job.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubmitError(..)")
    }
}

impl<T> fmt::Display for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("submitting to a stopped pool")
    }
}

impl<T: Send> Error for SubmitError<T> {}

/// Why [`Submitter::try_submit`] refused a job; the job is inside.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySubmitError<T> {
    /// The queue is full.
    Full(T),
    /// The pool is closed or the runtime is stopping.
    Stopped(T),
}

impl<T> TrySubmitError<T> {
    /// Returns the refused job.
    pub fn into_inner(self) -> T {
        match self {
            TrySubmitError::Full(j) | TrySubmitError::Stopped(j) => j,
        }
    }

    /// Returns `true` if the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySubmitError::Full(_))
    }

    /// Returns `true` if the pool was closed or stopping.
    pub fn is_stopped(&self) -> bool {
        matches!(self, TrySubmitError::Stopped(_))
    }
}

impl<T> From<SubmitError<T>> for TrySubmitError<T> {
    fn from(e: SubmitError<T>) -> Self {
        TrySubmitError::Stopped(e.0)
    }
}

impl<T> fmt::Debug for TrySubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str("Full(..)"),
            TrySubmitError::Stopped(_) => f.write_str("Stopped(..)"),
        }
    }
}

impl<T> fmt::Display for TrySubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str("submitting to a full pool"),
            TrySubmitError::Stopped(_) => f.write_str("submitting to a stopped pool"),
        }
    }
}

impl<T: Send> Error for TrySubmitError<T> {}

/// Why [`Submitter::submit_timeout`] refused a job; the job is inside.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SubmitTimeoutError<T> {
    /// The queue stayed full until the timeout.
    Timeout(T),
    /// The pool is closed or the runtime is stopping.
    Stopped(T),
}

impl<T> SubmitTimeoutError<T> {
    /// Returns the refused job.
    pub fn into_inner(self) -> T {
        match self {
            SubmitTimeoutError::Timeout(j) | SubmitTimeoutError::Stopped(j) => j,
        }
    }

    /// Returns `true` if the queue stayed full until the timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SubmitTimeoutError::Timeout(_))
    }

    /// Returns `true` if the pool was closed or stopping.
    pub fn is_stopped(&self) -> bool {
        matches!(self, SubmitTimeoutError::Stopped(_))
    }
}

impl<T> From<SubmitError<T>> for SubmitTimeoutError<T> {
    fn from(e: SubmitError<T>) -> Self {
        SubmitTimeoutError::Stopped(e.0)
    }
}

impl<T> fmt::Debug for SubmitTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitTimeoutError::Timeout(_) => f.write_str("Timeout(..)"),
            SubmitTimeoutError::Stopped(_) => f.write_str("Stopped(..)"),
        }
    }
}

impl<T> fmt::Display for SubmitTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitTimeoutError::Timeout(_) => f.write_str("timed out submitting to a full pool"),
            SubmitTimeoutError::Stopped(_) => f.write_str("submitting to a stopped pool"),
        }
    }
}

impl<T: Send> Error for SubmitTimeoutError<T> {}

/// [`Submitter::feed`] or [`Submitter::feed_batched`] stopped early: the
/// pool closed or is stopping.
///
/// Holds the refused job (for `feed_batched`, `T` is `Vec<Job>`: the
/// refused batch) and the rest of the iterator, so the caller can account
/// for everything that did not go in.
#[non_exhaustive]
pub struct FeedError<T, I> {
    /// The job that was refused (the batch, for `feed_batched`).
    pub job: T,
    /// The jobs not yet taken from the iterator.
    pub rest: I,
    /// How many jobs were submitted before the refusal.
    pub submitted: u64,
}

impl<T, I: Iterator<Item = T>> FeedError<T, I> {
    /// Returns every job that was not submitted: the refused one, then the
    /// rest of the iterator.
    pub fn into_unsubmitted(self) -> std::iter::Chain<std::iter::Once<T>, I> {
        std::iter::once(self.job).chain(self.rest)
    }
}

impl<T, I: Iterator<Item = T>> FeedError<Vec<T>, I> {
    /// For [`Submitter::feed_batched`]: returns every job that was not
    /// submitted, the refused batch's then the rest of the iterator.
    pub fn into_unsubmitted_jobs(self) -> std::iter::Chain<std::vec::IntoIter<T>, I> {
        self.job.into_iter().chain(self.rest)
    }
}

impl<T, I> fmt::Debug for FeedError<T, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedError")
            .field("submitted", &self.submitted)
            .finish_non_exhaustive()
    }
}

impl<T, I> fmt::Display for FeedError<T, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool stopped after {} submitted jobs", self.submitted)
    }
}

impl<T: Send, I: Send> Error for FeedError<T, I> {}
