//! Where units and their threads are added before the run: names, the
//! thread registry, the unit registry, in one place, so that a pool, a
//! background thread and a server all start the same way.
//!
//! Adding is allowed at any time before `run`, also after a trigger (a
//! signal during start-up): the unit then starts stopped, as a Go goroutine
//! started under a context that is already done — its threads start, see
//! the token, and return; its submitters refuse and hand the job back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use crate::error::BuildError;
use crate::join::{Hold, OutcomeSlot, Spec, ThreadView, Threads};
use crate::report::{Report, StuckThread, ThreadOutcome, ThreadReport};
use crate::shared::Shared;
use crate::stage::Stage;
use crate::thread::catch;
use crate::token::{StopSource, Token};
use crate::unit::Unit;

/// The building side of a runtime.
#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) shared: Arc<Shared>,
    pub(crate) threads: Threads,
    /// Names of units and of threads share one namespace: a thread named
    /// `hash-0` cannot collide with pool `hash`'s first worker.
    names: HashSet<String>,
}

impl Registry {
    pub(crate) fn new(shared: Arc<Shared>) -> Registry {
        Registry {
            shared,
            threads: Threads::default(),
            names: HashSet::new(),
        }
    }

    pub(crate) fn token(&self) -> Token {
        self.shared.root.token()
    }

    /// Reserves `names` (a unit's and its threads'), all or none.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidName`] for an empty name or one with a NUL byte,
    /// [`BuildError::DuplicateName`] for a name already taken.
    pub(crate) fn reserve(&mut self, names: &[String]) -> Result<(), BuildError> {
        let mut seen = HashSet::new();
        for name in names {
            if name.is_empty() || name.contains('\0') {
                return Err(BuildError::InvalidName(name.clone()));
            }
            if self.names.contains(name) || !seen.insert(name.as_str()) {
                return Err(BuildError::DuplicateName(name.clone()));
            }
        }
        self.names.extend(names.iter().cloned());
        Ok(())
    }

    /// Gives back names reserved for a start that failed.
    pub(crate) fn unreserve(&mut self, names: &[String]) {
        for name in names {
            self.names.remove(name);
        }
    }

    /// Starts a group of threads whose names were reserved.
    ///
    /// # Errors
    ///
    /// [`BuildError::Spawn`]; nothing of the group runs, and the names are
    /// given back.
    pub(crate) fn start_threads(
        &mut self,
        reserved: &[String],
        specs: Vec<Spec>,
    ) -> Result<Vec<usize>, BuildError> {
        self.threads.start(specs).map_err(|e| {
            self.unreserve(reserved);
            BuildError::Spawn(e)
        })
    }

    /// Adds a unit of the first stage whose threads have started (see
    /// `Shared::add_unit`).
    pub(crate) fn add_unit(&mut self, unit: Arc<dyn Unit>) {
        self.shared.add_unit(0, Vec::new(), unit);
    }

    /// Adds a unit of stage `stage` whose threads (ids `threads`) have
    /// started.
    pub(crate) fn add_unit_in(&mut self, stage: usize, threads: Vec<usize>, unit: Arc<dyn Unit>) {
        self.shared.add_unit(stage, threads, unit);
    }

    /// Checks that `stage` is one of this runtime's stages and returns its
    /// stop source, whose tokens the stage's units watch.
    ///
    /// # Errors
    ///
    /// [`BuildError::UnknownStage`] for another runtime's stage.
    pub(crate) fn stage_source(&self, stage: Stage, unit: &str) -> Result<StopSource, BuildError> {
        stage
            .belongs_to(self.shared.id)
            .then(|| self.shared.stage_source(stage.index()))
            .flatten()
            .ok_or_else(|| BuildError::UnknownStage {
                unit: unit.to_owned(),
            })
    }

    /// Starts one background thread running `f(token)` as a unit of its own,
    /// reported under its own name.
    pub(crate) fn spawn_background<F>(
        &mut self,
        name: String,
        hold: Hold,
        f: F,
    ) -> Result<(), BuildError>
    where
        F: FnOnce(Token) -> anyhow::Result<()> + Send + 'static,
    {
        let unit = name.clone();
        self.spawn_background_of(unit, name, hold, f)
    }

    /// Starts one background thread running `f(token)`, reported as one of
    /// the threads of `unit` (a server's name), which the report groups by.
    pub(crate) fn spawn_background_of<F>(
        &mut self,
        unit: String,
        name: String,
        hold: Hold,
        f: F,
    ) -> Result<(), BuildError>
    where
        F: FnOnce(Token) -> anyhow::Result<()> + Send + 'static,
    {
        let names = [name];
        self.reserve(&names)?;
        let [name] = names;
        let outcome = OutcomeSlot::default();
        let token = self.token();
        let slot = outcome.clone();
        #[cfg(feature = "tracing")]
        let thread = name.clone();
        let body = move || {
            let result = match catch(|| f(token)) {
                Ok(Ok(())) => ThreadOutcome::Returned,
                Ok(Err(e)) => {
                    let message = format!("{e:#}");
                    event!(warn, thread = %thread, error = %message, "background thread failed");
                    ThreadOutcome::Failed(message)
                }
                Err(panic) => {
                    event!(error, thread = %thread, panic = %panic, "background thread panicked");
                    ThreadOutcome::Panicked(panic)
                }
            };
            *slot.lock() = Some(result);
        };
        let spec = Spec {
            name: name.clone(),
            hold,
            stack_size: None,
            body: Box::new(body),
        };
        let ids = self.start_threads(std::slice::from_ref(&name), vec![spec])?;
        self.add_unit(Arc::new(Background {
            id: ids[0],
            unit,
            outcome,
        }));
        Ok(())
    }
}

/// A background thread as a unit: nothing to stop (it watches the token),
/// one line in the report.
struct Background {
    id: usize,
    /// The unit the report files it under (`ThreadReport::unit`).
    unit: String,
    outcome: OutcomeSlot,
}

impl Unit for Background {
    fn report(&self, threads: &dyn ThreadView, report: &mut Report) {
        let name = threads.name(self.id).to_owned();
        // Decided after the release hooks and a last drain of the exits: a
        // thread that returned during the hooks is not stuck.
        let outcome = if threads.is_alive(self.id) {
            report.stuck.push(StuckThread {
                thread: name.clone(),
                pool: None,
                job_key: None,
                in_job: threads
                    .started(self.id)
                    .map(|s| Instant::now().saturating_duration_since(s)),
            });
            ThreadOutcome::Stuck
        } else {
            self.outcome
                .lock()
                .clone()
                .unwrap_or(ThreadOutcome::Panicked(
                    "thread ended without an outcome".into(),
                ))
        };
        report.threads.push(ThreadReport {
            name,
            unit: self.unit.clone(),
            outcome,
        });
    }
}
