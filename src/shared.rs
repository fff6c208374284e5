//! What a runtime shares with its handles, its units' threads and the
//! signal router: the phase word, the root of the token tree and the unit
//! registry, with the one trigger path; the stop sources of the later
//! stages; and [`Handle`], the public view of it.
//!
//! # Stages
//!
//! Stage 0 (the first) hangs on the root: the trigger stops it and calls
//! `on_trigger` on its units. Each later stage has a stop source of its
//! own, *not* below the root, so the trigger leaves it running; the
//! runtime stops it (with the trigger's reason) when the stages before it
//! have drained, and hard-stops it at its own budget or at the drain
//! deadline. A unit records its stage and its threads when it is added.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::phase::{Phase, PhaseCell};
use crate::reason::StopReason;
use crate::token::{StopSource, Token};
use crate::unit::{PoolStats, Unit};

/// The runtime's shared core.
pub(crate) struct Shared {
    pub(crate) phase: PhaseCell,
    /// The root of the token tree; every queue and every token handed out
    /// hangs below it.
    pub(crate) root: StopSource,
    /// The unit registry: every pool, background thread and server, in the
    /// order they were added, each with its stage and its threads.
    units: Mutex<Vec<Entry>>,
    /// The stop sources of stages 1, 2, … (stage 0's is `root`). Only
    /// pushed to while the runtime is built.
    stages: Mutex<Vec<StopSource>>,
    /// Set by `trigger` before it wakes anything; never cleared. While it
    /// is set and the root is not yet stopped, a stop is on its way, so
    /// the runtime's thread must not read workers that exited in the
    /// meantime as the work having completed (`Runtime::wait_for_trigger`).
    triggering: AtomicBool,
    /// A process-unique number, so a [`Stage`](crate::Stage) made by
    /// another runtime is recognised.
    pub(crate) id: u64,
}

/// One unit in the registry.
struct Entry {
    stage: usize,
    /// The ids of the unit's threads in the thread registry (only needed
    /// for the later stages: stage 0 is every thread not in one).
    threads: Vec<usize>,
    unit: Arc<dyn Unit>,
}

/// Numbers runtimes (see `Shared::id`); 0 is never used.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("phase", &self.phase.get())
            .field("units", &self.units.lock().len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            phase: PhaseCell::default(),
            root: StopSource::new(),
            units: Mutex::new(Vec::new()),
            stages: Mutex::new(Vec::new()),
            triggering: AtomicBool::new(false),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Adds a stage after the existing ones; returns its index (1, 2, …).
    pub(crate) fn add_stage(&self) -> usize {
        let mut stages = self.stages.lock();
        stages.push(StopSource::new());
        stages.len()
    }

    /// How many stages there are, the first included.
    pub(crate) fn stage_count(&self) -> usize {
        self.stages.lock().len() + 1
    }

    /// The stop source of stage `stage` (the root for 0). `None` for a stage
    /// that does not exist.
    pub(crate) fn stage_source(&self, stage: usize) -> Option<StopSource> {
        match stage {
            0 => Some(self.root.clone()),
            n => self.stages.lock().get(n - 1).cloned(),
        }
    }

    /// The one trigger path (signal, request, fail-fast, completion, drop).
    /// Returns `true` if this call began the stop; the first reason wins.
    ///
    /// The order is the drain's critical path. The idle workers are woken
    /// first (`on_trigger`: their queue disconnects), then the root is
    /// stopped, which also wakes the runtime's thread: woken the other way
    /// round, on two CPUs the runtime's thread took one of them for its
    /// stop steps while the workers still waited to run (idle drain at two
    /// workers 1.41× the floor; 1.12–1.16× in this order). Waking a queue
    /// before the root is stopped is safe: a submit that finds the sender
    /// gone refuses (the stop is decided), and a worker that exits on the
    /// disconnect does not make the run look complete, because
    /// `triggering` is set first (`Runtime::wait_for_trigger`).
    pub(crate) fn trigger(&self, reason: StopReason) -> bool {
        if self.root.is_stopping() {
            return false; // the first reason wins; nothing to wake
        }
        self.wake_first_stage();
        // Stopping the root publishes the reason and the trigger time
        // (under the root's lock) before the phase word says so, so an
        // observer of `StopAccepting` always finds both.
        if !self.root.stop(reason) {
            return false;
        }
        // Only the first trigger gets here; the runtime's thread may have
        // moved the word already if it woke on the root first (either CAS
        // wins, once).
        self.phase.advance(Phase::Running, Phase::StopAccepting);
        // Again, now that the root is stopped: a unit added since the
        // first snapshot is either in this one or sees the stop itself
        // (`add_unit`). `on_trigger` is idempotent.
        for unit in &self.units_in(0) {
            unit.on_trigger();
        }
        true
    }

    /// The first half of `trigger`: says a trigger is on its way, then
    /// wakes the first stage's units.
    pub(crate) fn wake_first_stage(&self) {
        // `SeqCst`, and before any wake: a worker woken below exits and
        // tells the runtime's thread over the done channel, which orders
        // this store before that thread's load.
        self.triggering.store(true, Ordering::SeqCst);
        // Only the first stage's units: a later stage keeps accepting work
        // until the runtime begins it.
        for unit in &self.units_in(0) {
            unit.on_trigger();
        }
    }

    /// A trigger has begun (see `triggering`).
    pub(crate) fn is_triggering(&self) -> bool {
        self.triggering.load(Ordering::SeqCst)
    }

    /// Adds a unit to stage `stage` (which exists: the builders check),
    /// with the ids of its threads. One added after its stage was stopped
    /// (for stage 0, after the trigger: a signal during start-up) starts
    /// stopped: its `on_trigger` runs here.
    ///
    /// Either the trigger's snapshot of the list (taken under the lock after
    /// the root stopped) includes the unit, or this push came after that
    /// snapshot, so the root's stop happened before it and `is_stopping`
    /// below sees it. Both may call `on_trigger`; it is idempotent. A later
    /// stage is only stopped by the runtime's thread, which adds no unit.
    pub(crate) fn add_unit(&self, stage: usize, threads: Vec<usize>, unit: Arc<dyn Unit>) {
        let source = self.stage_source(stage);
        debug_assert!(source.is_some(), "stage {stage} checked by the builder");
        self.units.lock().push(Entry {
            stage,
            threads,
            unit: unit.clone(),
        });
        if source.is_some_and(|s| s.is_stopping()) {
            unit.on_trigger();
        }
    }

    /// A snapshot of the registry, in order.
    pub(crate) fn units(&self) -> Vec<Arc<dyn Unit>> {
        self.units.lock().iter().map(|e| e.unit.clone()).collect()
    }

    /// The units of stage `stage`, in order.
    pub(crate) fn units_in(&self, stage: usize) -> Vec<Arc<dyn Unit>> {
        self.units
            .lock()
            .iter()
            .filter(|e| e.stage == stage)
            .map(|e| e.unit.clone())
            .collect()
    }

    /// The thread ids of the units of the later stages, by stage: element
    /// `i` holds stage `i + 1`'s.
    pub(crate) fn later_stage_threads(&self) -> Vec<Vec<usize>> {
        let mut by_stage = vec![Vec::new(); self.stage_count() - 1];
        for e in self.units.lock().iter().filter(|e| e.stage > 0) {
            by_stage[e.stage - 1].extend_from_slice(&e.threads);
        }
        by_stage
    }

    /// Empties the registry once the report is made, so a [`Handle`] that
    /// outlives the runtime does not keep the pools' queues alive.
    pub(crate) fn clear_units(&self) {
        self.units.lock().clear();
    }
}

/// A cloneable, `Send + Sync` handle to a runtime: request the stop, watch
/// the phase, get tokens. It stays valid after the runtime is gone (it then
/// reports the last phase the runtime reached, `Done` after `run`).
///
/// ```
/// use winddown::{Phase, Runtime};
/// # let _ = Phase::Running;
///
/// let rt = Runtime::builder().signals(false).build()?;
/// let handle = rt.handle();
/// let token = handle.token();
/// std::thread::spawn(move || handle.request("maintenance window"));
/// token.wait(); // woken by the request
/// let report = rt.run();
/// assert_eq!(report.reason.to_string(), "requested: maintenance window");
/// # Ok::<(), winddown::BuildError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Handle {
        Handle { shared }
    }

    /// Requests a graceful stop with `message` as the reason. Returns `true`
    /// if this call began the stop, `false` if one was already under way (a
    /// request during the stop changes nothing). A request is not a signal:
    /// it does not count towards the second-signal rule.
    pub fn request(&self, message: impl Into<String>) -> bool {
        self.shared.trigger(StopReason::Requested(message.into()))
    }

    /// Returns a token that stops when the runtime begins to stop, and goes
    /// hard at the drain deadline.
    pub fn token(&self) -> Token {
        self.shared.root.token()
    }

    /// Returns the current phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase.get()
    }

    /// Returns `true` once the stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.shared.root.is_stopping()
    }

    /// Returns every pool's name and live counts, in the order the pools
    /// were started: for a metrics exporter that scrapes them all. Never
    /// blocks on the pools (it copies the unit list under the registry's
    /// lock, then reads each pool's atomics; see [`PoolStats`] for what a
    /// snapshot promises).
    ///
    /// The list is empty once the run's report is made (the runtime lets go
    /// of its pools then); a [`Submitter`](crate::Submitter) kept past the
    /// run still reads its pool's final counts with
    /// [`Submitter::stats`](crate::Submitter::stats).
    ///
    /// ```
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let resize = rt.pool::<u32>("resize").workers(1).start(|_, _| Ok(()))?;
    /// let upload = rt.pool::<String>("upload").workers(2).start(|_, _| Ok(()))?;
    /// let handle = rt.handle();
    /// for (name, stats) in handle.pools() {
    ///     // e.g. a gauge per pool: winddown_queued{pool="resize"} 0
    ///     println!("winddown_queued{{pool={name:?}}} {}", stats.queued);
    /// }
    /// let names: Vec<String> = handle.pools().into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(names, ["resize", "upload"]);
    /// assert_eq!(handle.pool_stats("upload").map(|s| s.workers), Some(2));
    /// drop((resize, upload));
    /// rt.run();
    /// assert!(handle.pools().is_empty(), "the runtime let go of its pools");
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn pools(&self) -> Vec<(String, PoolStats)> {
        self.shared
            .units()
            .iter()
            .filter_map(|u| u.pool_stats().map(|(name, s)| (name.to_owned(), s)))
            .collect()
    }

    /// Returns the live counts of the pool named `name`, or `None` if the
    /// runtime has no such pool (or has made its report). As
    /// [`pools`](Handle::pools), for one pool.
    pub fn pool_stats(&self, name: &str) -> Option<PoolStats> {
        self.shared
            .units()
            .iter()
            .find_map(|u| u.pool_stats().filter(|(n, _)| *n == name).map(|(_, s)| s))
    }
}
