//! What happened: the [`Report`] a run returns, its parts, and the exit code.

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::reason::StopReason;

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
///
/// Plain data: the handed-back jobs themselves are taken from the
/// [`Report`] with the pool's typed id ([`Report::take_handed_back`]).
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Jobs a worker held when the runtime gave up on it at the end of the
    /// kill grace: running, or taken and not yet started. Their outcome is
    /// unknown; they may still finish on the detached thread. (A job such a
    /// worker took but had not started and gave back before the report was
    /// made is handed back instead.)
    pub abandoned: u64,
    /// Keys of the handed-back jobs, in queue order (empty without a key
    /// function).
    pub handed_back_keys: Vec<String>,
    /// Keys of the abandoned jobs that were running (empty without a key
    /// function; a job taken but not started has no key yet).
    pub abandoned_keys: Vec<String>,
    /// The first failures, at most eight.
    pub errors: Vec<JobError>,
    /// Workers whose per-worker init failed or whose state panicked when
    /// dropped (see [`PoolBuilder::start_with`](crate::PoolBuilder::start_with)),
    /// in the order they happened. Each one makes the run a failure.
    pub worker_failures: Vec<WorkerFailure>,
}

/// A pool worker's own failure, outside any job: its init returned `Err`
/// or panicked (it then took no job), or its state panicked when dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerFailure {
    /// The worker's index in its pool (`<pool>-<worker>` is its thread).
    pub worker: usize,
    /// The worker's thread name.
    pub thread: String,
    /// When it failed.
    pub stage: WorkerStage,
    /// The error (with its causes, `{:#}`) or the panic message.
    pub message: String,
    /// `true` if it panicked rather than returned `Err`.
    pub panicked: bool,
}

/// When a [`WorkerFailure`] happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerStage {
    /// In the init, before the worker took any job.
    Init,
    /// When the worker's state was dropped, as the worker exited.
    Teardown,
}

impl PoolReport {
    /// Returns `true` if every submitted job is accounted for exactly once.
    pub fn is_balanced(&self) -> bool {
        self.submitted
            == self.succeeded + self.failed + self.panicked + self.handed_back + self.abandoned
    }
}

/// A pool's typed id: which pool, and the type of its jobs, so that
/// [`Report::take_handed_back`] returns a `Vec<T>` that cannot be another
/// pool's or another type's. `Copy`, and keeps nothing alive. Get it from
/// [`Pool::id`](crate::Pool::id) or
/// [`Submitter::pool_id`](crate::Submitter::pool_id).
pub struct PoolId<T> {
    id: u64,
    _jobs: PhantomData<fn() -> T>,
}

impl<T> PoolId<T> {
    /// A process-unique id (a pool of another runtime never shares it).
    pub(crate) fn fresh() -> PoolId<T> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Relaxed: only uniqueness matters, which the RMW gives.
        PoolId::from_raw(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn from_raw(id: u64) -> PoolId<T> {
        PoolId {
            id,
            _jobs: PhantomData,
        }
    }

    pub(crate) fn raw(self) -> u64 {
        self.id
    }
}

impl<T> Clone for PoolId<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for PoolId<T> {}

impl<T> PartialEq for PoolId<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T> Eq for PoolId<T> {}

impl<T> Hash for PoolId<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl<T> fmt::Debug for PoolId<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolId({})", self.id)
    }
}

/// Why [`Report::take_handed_back_named`] returned no jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TakeError {
    /// The report has no pool of that name.
    NoSuchPool(String),
    /// The pool's jobs are not of the type asked for (the name of the type
    /// asked for is given).
    WrongType {
        /// The pool's name.
        pool: String,
        /// The type that was asked for.
        asked: &'static str,
    },
    /// The jobs were already taken.
    AlreadyTaken(String),
}

impl fmt::Display for TakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TakeError::NoSuchPool(name) => write!(f, "no pool named {name:?} in the report"),
            TakeError::WrongType { pool, asked } => {
                write!(f, "the jobs of pool {pool:?} are not of type {asked}")
            }
            TakeError::AlreadyTaken(name) => {
                write!(
                    f,
                    "the handed-back jobs of pool {name:?} were already taken"
                )
            }
        }
    }
}

impl Error for TakeError {}

/// The handed-back jobs of every pool, by pool id, until taken. The mutex
/// only makes the report `Sync` for jobs that are merely `Send`; it is only
/// ever reached through `&mut`, so it is never locked.
#[derive(Default)]
struct HandedBackJobs(Vec<(u64, String, JobsSlot)>);

type JobsSlot = Mutex<Option<Box<dyn Any + Send>>>;

impl fmt::Debug for HandedBackJobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|(_, name, jobs)| (name, jobs.lock().is_some())),
            )
            .finish()
    }
}

// ===== Servers =====

/// How the connections of one server ended, in [`ServerReport`].
///
/// Every accepted connection is counted once in `closed`, `idle_closed`,
/// `drained` or `forced` ([`is_balanced`](ConnectionCounts::is_balanced)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionCounts {
    /// Connections accepted.
    pub accepted: u64,
    /// Responses written in full (requests served), over all connections.
    pub served: u64,
    /// Connections that ended before the stop reached them: the client
    /// closed, a timeout, an error, a bad request.
    pub closed: u64,
    /// Connections closed by the stop while idle or before a full request
    /// had arrived.
    pub idle_closed: u64,
    /// Connections whose last response was written in full, with
    /// `Connection: close`, after the stop began.
    pub drained: u64,
    /// Connections still busy at the drain deadline, shut down by force
    /// (their response cut, if it had begun).
    pub forced: u64,
}

impl ConnectionCounts {
    /// Returns `true` if every accepted connection is counted exactly once.
    pub fn is_balanced(&self) -> bool {
        self.accepted == self.closed + self.idle_closed + self.drained + self.forced
    }
}

/// One server's entry in [`Report::servers`] (the `http` feature's
/// `Server`). Plain data: the report knows a server only through what it
/// writes here.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerReport {
    /// The server's name.
    pub name: String,
    /// The address it listened on.
    pub addr: SocketAddr,
    /// How its connections ended.
    pub connections: ConnectionCounts,
    /// Failed `accept` calls (e.g. too many open files), each followed by a
    /// pause.
    pub accept_errors: u64,
    /// Requests whose handler returned `Err` (answered with 500).
    pub handler_errors: u64,
    /// Requests whose handler panicked (answered with 500).
    pub handler_panics: u64,
}

impl fmt::Display for ServerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.connections;
        write!(
            f,
            "server {}: {} connections, {} served, {} idle closed, {} drained, {} forced",
            self.name, c.accepted, c.served, c.idle_closed, c.drained, c.forced
        )?;
        if f.alternate() {
            write!(
                f,
                " ({} closed before the stop; {} accept errors, {} handler errors, {} handler panics)",
                c.closed, self.accept_errors, self.handler_errors, self.handler_panics
            )?;
        }
        Ok(())
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
    /// One entry per HTTP server, in start order (empty without the
    /// `http` feature).
    pub servers: Vec<ServerReport>,
    /// The exit code the program should use (see the crate docs' table).
    pub exit_code: i32,
    /// The handed-back jobs, until taken.
    jobs: HandedBackJobs,
}

/// Exit codes for the outcomes of a run; [`Default`] is the documented table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExitCodes {
    /// All work done and nothing failed. Default 0.
    pub success: i32,
    /// Stopped by a signal and drained cleanly. Default 130.
    pub signal: i32,
    /// Something failed or was cut: a job failed or panicked, a hook failed
    /// or timed out, a background thread failed, a thread was stuck, the
    /// hard stop fired, or a server connection was forced. Default 1.
    pub failure: i32,
    /// The second signal ended the process at once (no report is made: the
    /// process exits with this code from the signal handler). Default 3,
    /// distinct from `signal` so a supervisor can tell a forced exit from a
    /// clean drain, and from 2, the usage error of most argument parsers.
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
    pub(crate) fn new(reason: StopReason, timings: Timings) -> Report {
        Report {
            reason,
            timings,
            pools: Vec::new(),
            threads: Vec::new(),
            stuck: Vec::new(),
            hooks: Vec::new(),
            servers: Vec::new(),
            exit_code: 0,
            jobs: HandedBackJobs::default(),
        }
    }

    /// Stores a pool's handed-back jobs for [`take_handed_back`](Report::take_handed_back).
    pub(crate) fn put_handed_back<T: Send + 'static>(
        &mut self,
        pool: PoolId<T>,
        name: &str,
        jobs: Vec<T>,
    ) {
        self.jobs.0.push((
            pool.raw(),
            name.to_owned(),
            Mutex::new(Some(Box::new(jobs))),
        ));
    }

    /// Returns `true` if the drain needed the hard stop: a thread was still
    /// running at the deadline, so the hard token fired (work that watches
    /// it was cut).
    pub fn hard_stopped(&self) -> bool {
        self.timings.hard_stop.is_some()
    }

    /// Returns `true` if anything went wrong: a job failed or panicked, a
    /// pool worker's init or teardown failed, a hook failed or timed out, a background thread failed, a thread was
    /// stuck, the hard stop fired, or a server connection was forced closed
    /// at the deadline.
    pub fn has_failures(&self) -> bool {
        self.pools
            .iter()
            .any(|p| p.failed + p.panicked > 0 || !p.worker_failures.is_empty())
            || self.hooks.iter().any(|h| h.outcome.is_failure())
            || self
                .threads
                .iter()
                .any(|t| t.outcome != ThreadOutcome::Returned)
            || !self.stuck.is_empty()
            || self.hard_stopped()
            || self.forced_connections() > 0
    }

    /// Connections still busy at the drain deadline, whose response was
    /// cut: a request that was read but not answered, as a stuck job is one
    /// taken but not finished.
    pub fn forced_connections(&self) -> u64 {
        self.servers.iter().map(|s| s.connections.forced).sum()
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

    /// Takes the handed-back jobs of `pool`, in queue order, so the caller
    /// can checkpoint them. The type comes from the pool's id, so it cannot
    /// be mistaken; a second call, or the id of a pool of another runtime,
    /// returns an empty `Vec` ([`take_handed_back_named`](Report::take_handed_back_named)
    /// says which).
    ///
    /// ```
    /// use winddown::{DrainPolicy, Runtime};
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let pool = rt.pool::<u32>("p").workers(1).drain(DrainPolicy::HandBack)
    ///     .start(|_, _| Ok(()))?;
    /// let id = pool.id();
    /// rt.handle().request("stop before any job"); // queued jobs come back
    /// let _ = pool.submit(1); // refused, handed back to us in the Err
    /// drop(pool);
    /// let mut report = rt.run();
    /// assert!(report.take_handed_back(id).is_empty());
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn take_handed_back<T: 'static>(&mut self, pool: impl Into<PoolId<T>>) -> Vec<T> {
        let id = pool.into().raw();
        self.jobs
            .0
            .iter_mut()
            .find(|(i, _, _)| *i == id)
            .and_then(|(_, _, jobs)| jobs.get_mut().take())
            .and_then(|b| b.downcast::<Vec<T>>().ok())
            .map_or_else(Vec::new, |b| *b)
    }

    /// Takes the handed-back jobs of the pool named `name`, for a program
    /// that no longer has the pool's id.
    ///
    /// # Errors
    ///
    /// [`TakeError::NoSuchPool`], [`TakeError::WrongType`] (the jobs stay
    /// for a call with the right type), [`TakeError::AlreadyTaken`].
    pub fn take_handed_back_named<T: 'static>(&mut self, name: &str) -> Result<Vec<T>, TakeError> {
        let Some((_, _, slot)) = self.jobs.0.iter_mut().find(|(_, n, _)| n == name) else {
            return Err(TakeError::NoSuchPool(name.to_owned()));
        };
        let slot = slot.get_mut();
        match slot.take() {
            None => Err(TakeError::AlreadyTaken(name.to_owned())),
            Some(b) => match b.downcast::<Vec<T>>() {
                Ok(jobs) => Ok(*jobs),
                Err(b) => {
                    *slot = Some(b);
                    Err(TakeError::WrongType {
                        pool: name.to_owned(),
                        asked: std::any::type_name::<Vec<T>>(),
                    })
                }
            },
        }
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
        if let Some(d) = self.timings.hard_stop {
            write!(
                f,
                "; hard stop at {} (the deadline cut work in flight)",
                ms(d)
            )?;
        }
        for p in &self.pools {
            write!(
                f,
                "; {}: {} done, {} failed, {} panicked, {} handed back, {} abandoned",
                p.name, p.succeeded, p.failed, p.panicked, p.handed_back, p.abandoned
            )?;
        }
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
    use crate::reason::Signal;

    fn report(reason: StopReason, pool: PoolReport, jobs: Vec<u32>) -> (Report, PoolId<u32>) {
        let now = Instant::now();
        let mut r = Report::new(
            reason,
            Timings {
                started: now,
                triggered: now,
                drain_latency: Some(Duration::from_micros(1500)),
                join: Duration::from_millis(2),
                hard_stop: None,
                release: Duration::ZERO,
                total: Duration::from_millis(2),
            },
        );
        r.pools.push(pool);
        let id = PoolId::fresh();
        r.put_handed_back(id, "p", jobs);
        r.exit_code = r.compute_exit_code(ExitCodes::default());
        (r, id)
    }

    fn pool(failed: u64, handed_back: u64) -> PoolReport {
        PoolReport {
            name: "p".into(),
            workers: 2,
            submitted: 10 + failed + handed_back,
            succeeded: 10,
            failed,
            panicked: 0,
            handed_back,
            abandoned: 0,
            handed_back_keys: vec![],
            abandoned_keys: vec![],
            errors: vec![],
            worker_failures: vec![],
        }
    }

    fn code(reason: StopReason, failed: u64) -> i32 {
        report(reason, pool(failed, 0), vec![]).0.exit_code
    }

    #[test]
    fn exit_code_follows_the_table() {
        let sig = || StopReason::Signal(Signal::Interrupt);
        assert_eq!(code(StopReason::Completed, 0), 0);
        assert_eq!(code(sig(), 0), 130);
        assert_eq!(code(sig(), 1), 1);
        assert_eq!(code(StopReason::Requested("x".into()), 0), 0);
        let (mut r, _) = report(sig(), pool(0, 0), vec![]);
        r.timings.hard_stop = Some(Duration::from_millis(5));
        assert_eq!(r.compute_exit_code(ExitCodes::default()), 1, "hard stop");
        assert_ne!(ExitCodes::default().forced, ExitCodes::default().signal);
    }

    #[test]
    fn handed_back_jobs_are_taken_once_and_only_with_their_type() {
        let (mut r, id) = report(StopReason::Completed, pool(0, 2), vec![4, 5]);
        assert!(r.pools[0].is_balanced());
        assert!(matches!(
            r.take_handed_back_named::<u64>("p"),
            Err(TakeError::WrongType { .. })
        ));
        assert_eq!(
            r.take_handed_back_named::<u32>("nope"),
            Err(TakeError::NoSuchPool("nope".into()))
        );
        assert_eq!(r.take_handed_back(id), vec![4, 5]);
        assert_eq!(r.take_handed_back(id), Vec::<u32>::new());
        assert_eq!(
            r.take_handed_back_named::<u32>("p"),
            Err(TakeError::AlreadyTaken("p".into()))
        );
        let other: PoolId<u32> = PoolId::fresh();
        assert!(r.take_handed_back(other).is_empty());
    }

    #[test]
    fn display_is_short_and_alternate_is_detailed() {
        let (r, _) = report(StopReason::Signal(Signal::Terminate), pool(1, 0), vec![]);
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
