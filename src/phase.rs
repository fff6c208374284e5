//! The lifecycle state word: one `AtomicU8` that only moves forward.
//!
//! | value | phase           | entered by                          | submit? | hooks running         |
//! |-------|-----------------|-------------------------------------|---------|-----------------------|
//! | 0     | `Running`       | start                               | yes     | none                  |
//! | 1     | `StopAccepting` | the first trigger (any thread)      | refused | stop-accepting hooks  |
//! | 2     | `Draining`      | the joiner, after the queues closed | refused | none                  |
//! | 3     | `HardStop`      | the joiner, at the drain deadline   | refused | none                  |
//! | 4     | `Releasing`     | the joiner, after the join          | refused | release hooks (LIFO)  |
//! | 5     | `Done`          | the joiner, after the last hook     | refused | none                  |
//!
//! "refused" is for the first stage. A later stage (`stage.rs`) still
//! accepts in `StopAccepting` and `Draining` until every stage before it
//! has drained; then it refuses too. All stages drain inside `Draining`
//! (and `HardStop`), one after another.
//!
//! Invariant: each transition happens once, forward only. `advance` is the
//! only writer and uses a compare-and-swap, so two threads racing to leave the
//! same phase cannot both succeed.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// Where a runtime is in its lifecycle.
///
/// ```text
/// Running ─trigger─► StopAccepting ─► Draining ─(all joined)──────────► Releasing ─► Done
///                                        └─(deadline)─► HardStop ─(kill grace)─┘
/// ```
///
/// Serialized (feature `serde`) as its [`name`](Phase::name),
/// `"stop_accepting"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Work is accepted and runs.
    Running,
    /// A stop was triggered: queues close, blocked submits get their jobs
    /// back, stop-accepting hooks run.
    StopAccepting,
    /// Threads finish what they hold; the runtime joins them against the
    /// deadline, one stage after another (see
    /// [`Runtime::stage`](crate::Runtime::stage)).
    Draining,
    /// The deadline passed: the hard token fired and the kill grace runs.
    HardStop,
    /// Release hooks run, last registered first.
    Releasing,
    /// Everything is over; the report is ready.
    Done,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Running,
        Phase::StopAccepting,
        Phase::Draining,
        Phase::HardStop,
        Phase::Releasing,
        Phase::Done,
    ];

    /// Returns `true` from the trigger on (every phase but `Running`).
    pub fn is_stopping(self) -> bool {
        self != Phase::Running
    }

    /// Returns the lower-case name used in logs (`"stop_accepting"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::StopAccepting => "stop_accepting",
            Phase::Draining => "draining",
            Phase::HardStop => "hard_stop",
            Phase::Releasing => "releasing",
            Phase::Done => "done",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The state word behind [`Phase`].
#[derive(Debug, Default)]
pub(crate) struct PhaseCell(AtomicU8);

impl PhaseCell {
    /// Reads the current phase. `Acquire` pairs with the `AcqRel` CAS in
    /// `advance`, so an observer that sees a phase also sees what the thread
    /// that entered it wrote before (the stop reason, the closed queues).
    pub(crate) fn get(&self) -> Phase {
        Phase::ALL[self.0.load(Ordering::Acquire) as usize]
    }

    /// Moves from `from` to `to`. Returns `false` if the phase was not `from`
    /// (someone else moved it), which keeps every transition single.
    pub(crate) fn advance(&self, from: Phase, to: Phase) -> bool {
        debug_assert!(from < to, "phases only move forward");
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transition_happens_once() {
        let cell = PhaseCell::default();
        assert_eq!(cell.get(), Phase::Running);
        assert!(cell.advance(Phase::Running, Phase::StopAccepting));
        assert!(!cell.advance(Phase::Running, Phase::StopAccepting));
        assert!(cell.advance(Phase::StopAccepting, Phase::Draining));
        assert_eq!(cell.get(), Phase::Draining);
    }

    #[test]
    fn phase_values_match_their_table_rows() {
        for (i, p) in Phase::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i);
        }
        assert!(!Phase::Running.is_stopping());
        assert!(Phase::Done.is_stopping());
    }
}
