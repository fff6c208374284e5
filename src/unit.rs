//! The one registry idea: everything the runtime stops — a pool, a
//! background thread, a server — is a [`Unit`]. Units are stored once, in
//! `Shared::units`, and the runtime drives every one through the same steps
//! of the stop:
//!
//! | step             | when                                             | on which thread              | may block?             |
//! |------------------|--------------------------------------------------|------------------------------|------------------------|
//! | `on_trigger`     | the first trigger, or at once for a unit added after it | whoever triggered (a signal's thread, a worker, code) | no; idempotent |
//! | `stop_accepting` | `StopAccepting`, before the stop-accepting hooks | the runtime's                | briefly (a submit in flight) |
//! | `seal`           | after the drain (and the kill grace)             | the runtime's                | no; runs no user code  |
//! | `report`         | after the release hooks and the join             | the runtime's                | may run user code (key functions) |
//!
//! Besides the steps, a pool unit answers `pool_stats` at any time, from any
//! thread, without blocking: the live counts of [`PoolStats`], which a
//! [`Handle`](crate::Handle) lists for metrics exporters.
//!
//! Whether a unit holds the run open is a property of its threads
//! (`join::Hold`), so the completion rule lives in one place, the joiner.

use crate::join::ThreadView;
use crate::report::Report;

/// Something the runtime stops and reports on. Its threads are started
/// through the thread registry, so they are joined in the same drain.
pub(crate) trait Unit: Send + Sync {
    /// The stop began: wake what waits (disconnect a queue) without
    /// blocking. May be called more than once and from any thread.
    fn on_trigger(&self) {}

    /// Refuse new work (close a queue), on the runtime's thread.
    fn stop_accepting(&self) {}

    /// The drain is over: give up on the threads still alive, so they
    /// record nothing from here on. Must not run user code.
    fn seal(&self, _threads: &dyn ThreadView) {}

    /// Write this unit's part of the report.
    fn report(&self, threads: &dyn ThreadView, report: &mut Report);

    /// A pool's name and live counts; `None` for units that are not pools.
    /// Never blocks and runs no user code.
    fn pool_stats(&self) -> Option<(&str, PoolStats)> {
        None
    }
}

/// A snapshot of one pool's counts, taken while it runs: for metrics
/// exporters and progress displays.
///
/// Get one from [`Submitter::stats`](crate::Submitter::stats) (so also from
/// a [`Pool`](crate::Pool), which derefs to its submitter),
/// [`Handle::pool_stats`](crate::Handle::pool_stats) or
/// [`Handle::pools`](crate::Handle::pools). Taking it costs one atomic load
/// per counter and per worker and reads the channel's length; it takes no
/// lock and the workers' job path takes none for it either: they keep
/// counting in per-worker atomics as they always do.
///
/// # Consistency
///
/// The fields are read one by one while jobs move, so a running snapshot is
/// not a single instant. What holds in every snapshot:
///
/// * `succeeded + failed + panicked + handed_back <= submitted` (a job is
///   counted submitted before any worker can count its outcome, and the
///   snapshot reads `submitted` last);
/// * `in_flight <= workers - init_failures`;
/// * `succeeded`, `failed`, `panicked`, `handed_back` and `init_failures`
///   never decrease from one snapshot to the next.
///
/// What holds only once the run's [`Report`](crate::Report) is made (after
/// [`Runtime::run`](crate::Runtime::run) returned), when the counts are
/// final and equal the pool's [`PoolReport`](crate::PoolReport):
///
/// * `submitted == succeeded + failed + panicked + handed_back + abandoned`;
/// * `queued == 0` and `in_flight == 0`.
///
/// While running, `queued + in_flight` plus the outcomes need not add up to
/// `submitted`: a job between the queue and a worker's slot is briefly in
/// neither, and `submitted` may for a moment count a submit that is then
/// refused. During the stop a job handed back from the queue leaves
/// `queued` just before it joins `handed_back`.
///
/// # Examples
///
/// ```
/// use winddown::Runtime;
///
/// let mut rt = Runtime::builder().signals(false).build()?;
/// let pool = rt.pool::<u32>("count").workers(2).start(|_, _| Ok(()))?;
/// let before = pool.stats();
/// assert_eq!((before.workers, before.submitted), (2, 0));
/// for n in 0..10 {
///     pool.submit(n).expect("running");
/// }
/// let during = pool.stats();
/// assert!(during.succeeded <= during.submitted);
/// pool.close(); // no more work: the run completes once the queue drains
/// rt.run();
/// // Final once the run returned.
/// let after = pool.stats();
/// assert_eq!((after.submitted, after.succeeded), (10, 10));
/// assert_eq!((after.queued, after.in_flight), (0, 0));
/// # Ok::<(), winddown::BuildError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PoolStats {
    /// Workers the pool was started with.
    pub workers: usize,
    /// Workers whose init failed (Err or panic) and that therefore take no
    /// job (see [`PoolBuilder::start_with`](crate::PoolBuilder::start_with)).
    pub init_failures: usize,
    /// Jobs accepted into the queue so far.
    pub submitted: u64,
    /// Jobs waiting in the queue. Always 0 for a zero-capacity pool.
    pub queued: usize,
    /// Jobs a worker holds right now: running, or taken and about to run
    /// (or to be handed back). At most one per worker.
    pub in_flight: usize,
    /// Jobs that returned `Ok(())`. For a batch
    /// ([`Submitter::submit_batch`](crate::Submitter::submit_batch)) in a
    /// pool without a key function, counted when the batch ends, one of
    /// its jobs fails, or the stop begins.
    pub succeeded: u64,
    /// Jobs that returned `Err`.
    pub failed: u64,
    /// Jobs that panicked.
    pub panicked: u64,
    /// Jobs given back to the caller: during the stop, the ones workers gave
    /// back; once the report is made, every handed-back job.
    pub handed_back: u64,
    /// Jobs abandoned on threads the runtime gave up on; 0 until the report
    /// is made.
    pub abandoned: u64,
}

impl PoolStats {
    /// Jobs that finished, whatever their outcome:
    /// `succeeded + failed + panicked`.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.panicked
    }
}
