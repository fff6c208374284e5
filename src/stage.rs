//! [`Stage`]: a place in the order of the stop.
//!
//! A runtime's units drain in stages, one after another: the first stage
//! (every server, background thread and pool not given a stage) is stopped
//! at the trigger; each later stage keeps accepting work — from the
//! earlier stages' threads, say a request handler that queues a job —
//! until every thread of the stages before it has exited, and only then
//! stops accepting and drains itself. The release hooks run after the last
//! stage.
//!
//! This module holds only the value; the order is driven by the runtime
//! (`Runtime::shutdown`) and each stage's stop source lives in `Shared`.

use std::fmt;

/// A stage of the stop, made by [`Runtime::stage`](crate::Runtime::stage)
/// and given to pools with [`PoolBuilder::stage`](crate::PoolBuilder::stage).
///
/// Stages drain in the order they were made, after
/// [`Stage::FIRST`], the stage every unit is in unless told otherwise (the
/// servers and background threads always are). A stage value belongs to
/// the runtime that made it; a pool given another runtime's stage fails to
/// start with [`BuildError::UnknownStage`](crate::BuildError::UnknownStage).
///
/// # Examples
///
/// ```
/// use winddown::{Runtime, Stage};
///
/// let mut rt = Runtime::builder().signals(false).build()?;
/// let workers = rt.stage("workers")?;
/// assert_ne!(workers, Stage::FIRST);
/// assert_eq!(workers.index(), 1);
/// let mail = rt.pool::<String>("mail").stage(workers).workers(1).start(|_, _| Ok(()))?;
/// drop(mail);
/// let report = rt.run();
/// let names: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
/// assert_eq!(names, ["main", "workers"]);
/// # Ok::<(), winddown::BuildError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stage {
    /// Position in the runtime's order, 0 for the first stage.
    index: usize,
    /// The runtime that made it (a process-unique number; 0 for `FIRST`,
    /// which every runtime has).
    runtime: u64,
}

impl Stage {
    /// The first stage, named `main`: stopped at the trigger. Every unit is
    /// in it unless given a later stage.
    pub const FIRST: Stage = Stage {
        index: 0,
        runtime: 0,
    };

    pub(crate) fn new(index: usize, runtime: u64) -> Stage {
        Stage { index, runtime }
    }

    /// Where the stage comes in the order of the stop: 0 for
    /// [`Stage::FIRST`], then 1, 2, … in the order the stages were made.
    pub fn index(self) -> usize {
        self.index
    }

    /// Whether this stage value was made by the runtime numbered `runtime`
    /// (the first stage belongs to every runtime).
    pub(crate) fn belongs_to(self, runtime: u64) -> bool {
        self.index == 0 || self.runtime == runtime
    }
}

impl fmt::Debug for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Stage { index, runtime: _ } = *self;
        f.debug_tuple("Stage").field(&index).finish()
    }
}

/// The name of the first stage in the report.
pub(crate) const FIRST_NAME: &str = "main";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stage_belongs_to_every_runtime_and_a_later_one_to_its_own() {
        assert!(Stage::FIRST.belongs_to(7));
        let s = Stage::new(2, 7);
        assert!(s.belongs_to(7));
        assert!(!s.belongs_to(8));
        assert_eq!(format!("{s:?}"), "Stage(2)");
    }
}
