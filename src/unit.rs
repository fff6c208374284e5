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
}
