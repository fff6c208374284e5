//! What a runtime shares with its handles, its units' threads and the
//! signal router: the phase word, the root of the token tree and the unit
//! registry, with the one trigger path; and [`Handle`], the public view of
//! it.

use std::fmt;
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
    /// order they were added.
    units: Mutex<Vec<Arc<dyn Unit>>>,
}

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
        }
    }

    /// The one trigger path (signal, request, fail-fast, completion, drop).
    /// Returns `true` if this call began the stop; the first reason wins.
    pub(crate) fn trigger(&self, reason: StopReason) -> bool {
        // Stopping the root first publishes the reason and the trigger time
        // (under the root's lock) before the phase word says so, so an
        // observer of `StopAccepting` always finds both.
        if !self.root.stop(reason) {
            return false;
        }
        // Only the first trigger gets here; the runtime's thread may have
        // moved the word already if it woke on the root first (either CAS
        // wins, once).
        self.phase.advance(Phase::Running, Phase::StopAccepting);
        // Wake what waits (idle workers block in a plain `recv`) without
        // waiting for the runtime's thread. A unit added concurrently is
        // either in this list or sees the stop itself (`add_unit`).
        let units = self.units.lock().clone();
        for unit in &units {
            unit.on_trigger();
        }
        true
    }

    /// Adds a unit. One added after the trigger starts stopped: its
    /// `on_trigger` runs here.
    ///
    /// Either the trigger's snapshot of the list (taken under the lock after
    /// the root stopped) includes the unit, or this push came after that
    /// snapshot, so the root's stop happened before it and `is_stopping`
    /// below sees it. Both may call `on_trigger`; it is idempotent.
    pub(crate) fn add_unit(&self, unit: Arc<dyn Unit>) {
        self.units.lock().push(unit.clone());
        if self.root.is_stopping() {
            unit.on_trigger();
        }
    }

    /// A snapshot of the registry, in order.
    pub(crate) fn units(&self) -> Vec<Arc<dyn Unit>> {
        self.units.lock().clone()
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
