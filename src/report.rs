//! What happened: the [`Report`] a run returns, its parts, and the exit code.

use std::any::Any;
use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::token::StopReason;

/// A job that failed or panicked, as kept in the report (the first few per
/// pool).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobError {
    /// The pool's name.
    pub pool: String,
    /// The job's key, if the pool has a key function.
    pub key: Option<String>,
    /// The error (with its causes, `{:#}`) or the panic message.
    pub message: String,
    /// `true` if the job panicked rather than returned `Err`.
    pub panicked: bool,
}

/// A thread still running when the kill grace ended; it was detached.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StuckThread {
    /// The thread's name (`<pool>-<i>` or the name given to `spawn`).
    pub thread: String,
    /// The pool it belongs to, if it is a worker.
    pub pool: Option<String>,
    /// The key of the job it was running, if known.
    pub job_key: Option<String>,
    /// How long it had been in that job (workers), or running at all
    /// (background threads).
    pub in_job: Option<Duration>,
}

/// How a background thread spawned with [`Runtime::spawn`](crate::Runtime::spawn) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThreadOutcome {
    /// It returned `Ok(())`.
    Returned,
    /// It returned an error (the message, `{:#}`).
    Failed(String),
    /// It panicked (the message).
    Panicked(String),
    /// It was still running at the end of the kill grace and was detached.
    Stuck,
}

/// A background thread's entry in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadReport {
    /// The thread's name.
    pub name: String,
    /// How it ended.
    pub outcome: ThreadOutcome,
}

/// When a hook ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookKind {
    /// At the start of the stop, in registration order.
    StopAccepting,
    /// After the drain, last registered first.
    Release,
}

/// How a hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookOutcome {
    /// It returned `Ok(())` within its budget.
    Ok,
    /// It returned an error (the message, `{:#}`).
    Failed(String),
    /// It panicked (the message).
    Panicked(String),
    /// It overran its budget; it was left running and the next hook started.
    TimedOut,
}

/// A hook's entry in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookReport {
    /// The name given at registration.
    pub name: String,
    /// When it ran.
    pub kind: HookKind,
    /// How it ended.
    pub outcome: HookOutcome,
    /// How long it ran (at most about its budget when it timed out).
    pub elapsed: Duration,
}

impl HookOutcome {
    /// Returns `true` unless the hook returned `Ok(())` in time.
    pub fn is_failure(&self) -> bool {
        !matches!(self, HookOutcome::Ok)
    }
}

/// One pool's accounting. The identity
/// `submitted == succeeded + failed + panicked + handed_back + abandoned`
/// holds for every pool ([`is_balanced`](PoolReport::is_balanced)).
#[non_exhaustive]
pub struct PoolReport {
    /// The pool's name.
    pub name: String,
    /// How many workers it had.
    pub workers: usize,
    /// Jobs that entered the queue.
    pub submitted: u64,
    /// Jobs that returned `Ok(())`.
    pub succeeded: u64,
    /// Jobs that returned `Err`.
    pub failed: u64,
    /// Jobs that panicked.
    pub panicked: u64,
    /// Jobs never started, given back to the caller (see
    /// [`Report::take_handed_back`]).
    pub handed_back: u64,
    /// Jobs in flight on a thread still stuck at the end of the kill grace.
    pub abandoned: u64,
    /// Keys of the handed-back jobs, in queue order (empty without a key
    /// function).
    pub handed_back_keys: Vec<String>,
    /// Keys of the abandoned jobs (empty without a key function).
    pub abandoned_keys: Vec<String>,
    /// The first failures, at most eight.
    pub errors: Vec<JobError>,
    /// The handed-back jobs themselves, a `Vec<T>`, until taken.
    jobs: Mutex<Option<Box<dyn Any + Send>>>,
}

impl PoolReport {
    #[allow(clippy::too_many_arguments)] // one call site, in pool.rs
    pub(crate) fn new<T: Send + 'static>(
        name: String,
        workers: usize,
        submitted: u64,
        succeeded: u64,
        failed: u64,
        panicked: u64,
        abandoned: u64,
        abandoned_keys: Vec<String>,
        handed_back_keys: Vec<String>,
        errors: Vec<JobError>,
        jobs: Vec<T>,
    ) -> PoolReport {
        PoolReport {
            name,
            workers,
            submitted,
            succeeded,
            failed,
            panicked,
            handed_back: jobs.len() as u64,
            abandoned,
            handed_back_keys,
            abandoned_keys,
            errors,
            jobs: Mutex::new(Some(Box::new(jobs))),
        }
    }

    /// Returns `true` if every submitted job is accounted for exactly once.
    pub fn is_balanced(&self) -> bool {
        self.submitted
            == self.succeeded + self.failed + self.panicked + self.handed_back + self.abandoned
    }
}

impl fmt::Debug for PoolReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let PoolReport {
            name,
            workers,
            submitted,
            succeeded,
            failed,
            panicked,
            handed_back,
            abandoned,
            handed_back_keys,
            abandoned_keys,
            errors,
            jobs: _,
        } = self;
        f.debug_struct("PoolReport")
            .field("name", name)
            .field("workers", workers)
            .field("submitted", submitted)
            .field("succeeded", succeeded)
            .field("failed", failed)
            .field("panicked", panicked)
            .field("handed_back", handed_back)
            .field("abandoned", abandoned)
            .field("handed_back_keys", handed_back_keys)
            .field("abandoned_keys", abandoned_keys)
            .field("errors", errors)
            .finish_non_exhaustive()
    }
}

/// When each phase began and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timings {
    /// When the runtime was built.
    pub started: Instant,
    /// When the first trigger came.
    pub triggered: Instant,
    /// Trigger → every thread reported its exit: the *drain latency*.
    /// `None` if a thread was still stuck at the end of the kill grace.
    pub drain_latency: Option<Duration>,
    /// Trigger → every thread joined (or detached). Joining comes after the
    /// release hooks, which start as soon as every thread has left its loop,
    /// so the OS tears threads down while the hooks run.
    pub join: Duration,
    /// Trigger → the hard stop fired, if the deadline passed.
    pub hard_stop: Option<Duration>,
    /// Time spent in the release hooks.
    pub release: Duration,
    /// Trigger → the report was made.
    pub total: Duration,
}

/// What a run did, returned by [`Runtime::run`](crate::Runtime::run).
///
/// `{}` prints a one-paragraph summary, `{:#}` a detailed one.
#[derive(Debug)]
#[non_exhaustive]
pub struct Report {
    /// Why the stop began (the first trigger's reason).
    pub reason: StopReason,
    /// Phase timestamps and durations.
    pub timings: Timings,
    /// One entry per pool, in creation order.
    pub pools: Vec<PoolReport>,
    /// Background threads, in creation order.
    pub threads: Vec<ThreadReport>,
    /// Threads still running at the end of the kill grace (detached).
    pub stuck: Vec<StuckThread>,
    /// Hooks in the order they ran.
    pub hooks: Vec<HookReport>,
    /// One entry per [`Server`](crate::Server), in start order.
    #[cfg(feature = "http")]
    pub servers: Vec<crate::server::ServerReport>,
    /// The exit code the program should use (see the crate docs' table).
    pub exit_code: i32,
}

/// Exit codes for the outcomes of a run; [`Default`] is the documented table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitCodes {
    /// All work done and nothing failed. Default 0.
    pub success: i32,
    /// Stopped by a signal and drained cleanly. Default 130.
    pub signal: i32,
    /// A job failed or panicked, a hook failed or timed out, a background
    /// thread failed, or a thread was stuck. Default 1.
    pub failure: i32,
    /// The process was ended at once by a second signal. Default 3
    /// (distinct from 130 and from 2, a usage error). Never in a report:
    /// it is the code of that exit, and the default of
    /// [`Builder::forced_exit_code`](crate::Builder::forced_exit_code).
    pub forced: i32,
}

impl Default for ExitCodes {
    fn default() -> Self {
        ExitCodes {
            success: 0,
            signal: 130,
            failure: 1,
            // = signal::DEFAULT_FORCED_EXIT_CODE (a unit test there checks).
            forced: 3,
        }
    }
}

impl Report {
    /// Returns `true` if anything went wrong: a job failed or panicked, a
    /// hook failed or timed out, a background thread failed, a thread was
    /// stuck, or a server connection was forced closed at the deadline.
    pub fn has_failures(&self) -> bool {
        self.pools.iter().any(|p| p.failed + p.panicked > 0)
            || self.hooks.iter().any(|h| h.outcome.is_failure())
            || self
                .threads
                .iter()
                .any(|t| t.outcome != ThreadOutcome::Returned)
            || !self.stuck.is_empty()
            || self.has_forced_connections()
    }

    /// A connection still busy at the drain deadline had its response cut:
    /// a request that was read but not answered, as a stuck job is one
    /// taken but not finished.
    #[cfg(feature = "http")]
    fn has_forced_connections(&self) -> bool {
        self.servers.iter().any(|s| s.connections.forced > 0)
    }

    #[cfg(not(feature = "http"))]
    fn has_forced_connections(&self) -> bool {
        false
    }

    pub(crate) fn compute_exit_code(&self, codes: ExitCodes) -> i32 {
        if self.has_failures() || matches!(self.reason, StopReason::JobFailed { .. }) {
            codes.failure
        } else if self.reason.is_signal() {
            codes.signal
        } else {
            codes.success
        }
    }

    /// Returns [`exit_code`](Report::exit_code) as a
    /// [`std::process::ExitCode`], for `fn main() -> ExitCode`. Codes outside
    /// 0..=255 become 1.
    pub fn process_exit_code(&self) -> std::process::ExitCode {
        u8::try_from(self.exit_code).map_or(std::process::ExitCode::FAILURE, Into::into)
    }

    /// Returns the pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolReport> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Takes the handed-back jobs of pool `name`, in queue order, so the
    /// caller can checkpoint them. Returns `None` if there is no such pool,
    /// `T` is not its job type, or they were already taken.
    pub fn take_handed_back<T: 'static>(&self, name: &str) -> Option<Vec<T>> {
        let pool = self.pool(name)?;
        let mut slot = pool.jobs.lock();
        if !slot.as_ref()?.is::<Vec<T>>() {
            return None;
        }
        slot.take()?.downcast::<Vec<T>>().ok().map(|b| *b)
    }

    /// Returns the first job errors of every pool.
    pub fn errors(&self) -> impl Iterator<Item = &JobError> {
        self.pools.iter().flat_map(|p| p.errors.iter())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stopped ({}); ", self.reason)?;
        match self.timings.drain_latency {
            Some(d) => write!(f, "drained in {}", ms(d))?,
            None => write!(f, "drain timed out, {} thread(s) stuck", self.stuck.len())?,
        }
        for p in &self.pools {
            write!(
                f,
                "; {}: {} done, {} failed, {} panicked, {} handed back, {} abandoned",
                p.name, p.succeeded, p.failed, p.panicked, p.handed_back, p.abandoned
            )?;
        }
        #[cfg(feature = "http")]
        for s in &self.servers {
            write!(f, "; {s}")?;
        }
        let failed_hooks = self.hooks.iter().filter(|h| h.outcome.is_failure()).count();
        if failed_hooks > 0 {
            write!(f, "; {failed_hooks} hook(s) failed")?;
        }
        write!(f, "; exit code {}", self.exit_code)?;
        if !f.alternate() {
            return Ok(());
        }
        let t = &self.timings;
        writeln!(f)?;
        writeln!(f, "timings:")?;
        writeln!(f, "  ran for        {}", ms(t.triggered - t.started))?;
        if let Some(d) = t.drain_latency {
            writeln!(f, "  drain latency  {}", ms(d))?;
        }
        if let Some(d) = t.hard_stop {
            writeln!(f, "  hard stop at   {}", ms(d))?;
        }
        writeln!(f, "  joined at      {}", ms(t.join))?;
        writeln!(f, "  release hooks  {}", ms(t.release))?;
        writeln!(f, "  total          {}", ms(t.total))?;
        for p in &self.pools {
            writeln!(
                f,
                "pool {} ({} workers): {} submitted = {} succeeded + {} failed + {} panicked + {} handed back + {} abandoned",
                p.name, p.workers, p.submitted, p.succeeded, p.failed, p.panicked, p.handed_back, p.abandoned
            )?;
            for e in &p.errors {
                let key = e.key.as_deref().unwrap_or("?");
                writeln!(f, "  job {key}: {}", e.message)?;
            }
        }
        #[cfg(feature = "http")]
        for s in &self.servers {
            writeln!(f, "{s:#}")?;
        }
        for t in &self.threads {
            writeln!(f, "thread {}: {:?}", t.name, t.outcome)?;
        }
        for s in &self.stuck {
            write!(f, "stuck: {}", s.thread)?;
            if let Some(k) = &s.job_key {
                write!(f, " in job {k}")?;
            }
            if let Some(d) = s.in_job {
                write!(f, " for {}", ms(d))?;
            }
            writeln!(f)?;
        }
        for h in &self.hooks {
            writeln!(
                f,
                "hook {} ({:?}): {:?} in {}",
                h.name,
                h.kind,
                h.outcome,
                ms(h.elapsed)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(reason: StopReason, pool: PoolReport) -> Report {
        let now = Instant::now();
        let mut r = Report {
            reason,
            timings: Timings {
                started: now,
                triggered: now,
                drain_latency: Some(Duration::from_micros(1500)),
                join: Duration::from_millis(2),
                hard_stop: None,
                release: Duration::ZERO,
                total: Duration::from_millis(2),
            },
            pools: vec![pool],
            threads: vec![],
            stuck: vec![],
            hooks: vec![],
            #[cfg(feature = "http")]
            servers: vec![],
            exit_code: 0,
        };
        r.exit_code = r.compute_exit_code(ExitCodes::default());
        r
    }

    fn pool(failed: u64, jobs: Vec<u32>) -> PoolReport {
        PoolReport::new(
            "p".into(),
            2,
            10 + failed + jobs.len() as u64,
            10,
            failed,
            0,
            0,
            vec![],
            vec![],
            vec![],
            jobs,
        )
    }

    #[test]
    fn exit_code_follows_the_table() {
        assert_eq!(report(StopReason::Completed, pool(0, vec![])).exit_code, 0);
        assert_eq!(report(StopReason::Signal(crate::Signal::Interrupt), pool(0, vec![])).exit_code, 130);
        assert_eq!(report(StopReason::Signal(crate::Signal::Interrupt), pool(1, vec![])).exit_code, 1);
        assert_eq!(
            report(StopReason::Requested("x".into()), pool(0, vec![])).exit_code,
            0
        );
    }

    #[test]
    fn handed_back_jobs_are_taken_once_and_only_with_their_type() {
        let r = report(StopReason::Signal(crate::Signal::Interrupt), pool(0, vec![4, 5]));
        assert!(r.pools[0].is_balanced());
        assert_eq!(r.take_handed_back::<u64>("p"), None);
        assert_eq!(r.take_handed_back::<u32>("p"), Some(vec![4, 5]));
        assert_eq!(r.take_handed_back::<u32>("p"), None);
    }

    #[test]
    fn display_is_short_and_alternate_is_detailed() {
        let r = report(StopReason::Signal(crate::Signal::Interrupt), pool(1, vec![]));
        let short = r.to_string();
        assert!(
            short.starts_with("stopped (signal); drained in 1.5 ms; p: 10 done, 1 failed"),
            "{short}"
        );
        assert!(!short.contains('\n'));
        let long = format!("{r:#}");
        assert!(
            long.contains("11 submitted = 10 succeeded + 1 failed"),
            "{long}"
        );
    }
}
