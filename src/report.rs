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
///
/// Serialized (feature `serde`) as `{"pool", "key", "message", "panicked"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
///
/// Serialized (feature `serde`) as `{"thread", "pool", "job_key",
/// "in_job_ms"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct StuckThread {
    /// The thread's name (`<pool>-<i>` or the name given to `spawn`).
    pub thread: String,
    /// The pool it belongs to, if it is a worker.
    pub pool: Option<String>,
    /// The key of the job it was running, if known.
    pub job_key: Option<String>,
    /// How long it had been in that job (workers), or running at all
    /// (background threads). Serialized as `in_job_ms`.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "in_job_ms", serialize_with = "ser::opt_ms")
    )]
    pub in_job: Option<Duration>,
}

/// How a background thread spawned with [`Runtime::spawn`](crate::Runtime::spawn) ended.
///
/// `Display` writes it in words: `returned`, `failed: <message>`,
/// `panicked: <message>`, `stuck`. Serialized (feature `serde`) as the
/// two fields it adds to its [`ThreadReport`]: `"outcome"` (`"returned"`,
/// `"failed"`, `"panicked"` or `"stuck"`) and `"error"` (the message, or
/// `null`).
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
///
/// Serialized (feature `serde`) as `{"name", "unit", "outcome", "error"}`
/// (see [`ThreadOutcome`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadReport {
    /// The thread's name.
    pub name: String,
    /// The unit it belongs to, which the report's `Display` groups by: the
    /// server's name for the threads of a `Server` (`http`
    /// for `http-0`, `http-accept`, …), the thread's own name for a thread
    /// of [`Runtime::spawn`](crate::Runtime::spawn) or
    /// [`Runtime::spawn_service`](crate::Runtime::spawn_service).
    pub unit: String,
    /// How it ended.
    pub outcome: ThreadOutcome,
}

/// When a hook ran.
///
/// `Display` writes `stop-accepting` or `release`; serialized (feature
/// `serde`) as `"stop_accepting"` or `"release"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum HookKind {
    /// At the start of the stop, in registration order.
    StopAccepting,
    /// After the drain, last registered first.
    Release,
}

/// How a hook ended.
///
/// `Display` writes it in words: `ok`, `failed: <message>`,
/// `panicked: <message>`, `timed out`. Serialized (feature `serde`) as the
/// two fields it adds to its [`HookReport`]: `"outcome"` (`"ok"`,
/// `"failed"`, `"panicked"` or `"timed_out"`) and `"error"` (the message,
/// or `null`).
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
///
/// Serialized (feature `serde`) as `{"name", "kind", "outcome", "error",
/// "elapsed_ms"}` (see [`HookKind`], [`HookOutcome`]).
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
    /// Serialized as `elapsed_ms`.
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
///
/// Serialized (feature `serde`) with one field per field below, under the
/// same names (`errors` as [`JobError`]s).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum WorkerStage {
    /// In the init, before the worker took any job.
    Init,
    /// When the worker's state was dropped, as the worker exited.
    Teardown,
}

impl fmt::Display for WorkerStage {
    /// `init` or `teardown`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerStage::Init => "init",
            WorkerStage::Teardown => "teardown",
        })
    }
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
///
/// Serialized (feature `serde`) with one field per field below, under the
/// same names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ConnectionCounts {
    /// Connections accepted.
    pub accepted: u64,
    /// Responses written in full (requests served), over all connections.
    pub served: u64,
    /// Connections that ended before the stop reached them: the client
    /// closed, a timeout, an error, a bad request, an idle keep-alive
    /// connection closed for a new one.
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
///
/// Serialized (feature `serde`) with one field per field below, under the
/// same names; `addr` as a string (`"127.0.0.1:8080"`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
            "server {}: {}, {} served, {} idle closed, {} drained, {} forced",
            self.name,
            Count(c.accepted, "connection", "connections"),
            c.served,
            c.idle_closed,
            c.drained,
            c.forced
        )?;
        if f.alternate() {
            write!(
                f,
                " ({} closed before the stop; {}, {}, {})",
                c.closed,
                Count(self.accept_errors, "accept error", "accept errors"),
                Count(self.handler_errors, "handler error", "handler errors"),
                Count(self.handler_panics, "handler panic", "handler panics"),
            )?;
        }
        Ok(())
    }
}

/// One stage of the stop in [`Report::stages`]: when it began, how long it
/// took to drain, and whether it needed the hard stop.
///
/// Serialized (feature `serde`) as `name`, `index`, `budget_ms` (or
/// `null`), `began_ms`, `drain_latency_ms` (or `null`) and `hard_stop_ms`
/// (or `null`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's name (`main` for [`Stage::FIRST`](crate::Stage::FIRST)).
    pub name: String,
    /// Its place in the order, as [`Stage::index`](crate::Stage::index).
    pub index: usize,
    /// Its budget, if it was given one
    /// ([`Runtime::stage_with_budget`](crate::Runtime::stage_with_budget),
    /// [`Runtime::first_stage_budget`](crate::Runtime::first_stage_budget)).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "budget_ms", serialize_with = "ser::opt_ms")
    )]
    pub budget: Option<Duration>,
    /// Trigger → the stage began (stopped accepting). Zero for the first
    /// stage; for a later one, when the stages before it had drained.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "began_ms", serialize_with = "ser::ms")
    )]
    pub began: Duration,
    /// The stage began → the last of its threads reported its exit: the
    /// stage's *drain latency*, as seen by the runtime's thread. `None` if a
    /// thread of the stage was still running when the stop moved on (its
    /// kill grace was over).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "drain_latency_ms", serialize_with = "ser::opt_ms")
    )]
    pub drain_latency: Option<Duration>,
    /// Trigger → the stage's hard token fired, if it did: at its budget, or
    /// at the drain deadline.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "hard_stop_ms", serialize_with = "ser::opt_ms")
    )]
    pub hard_stop: Option<Duration>,
}

impl fmt::Display for StageReport {
    /// `workers: began at 12.0 ms, drained in 3.1 ms`, with the hard stop if
    /// it fired.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: began at {}, ", self.name, Human(self.began))?;
        match self.drain_latency {
            Some(d) => write!(f, "drained in {}", Human(d))?,
            None => f.write_str("did not drain")?,
        }
        if let Some(d) = self.hard_stop {
            write!(f, ", hard stop at {}", Human(d))?;
        }
        Ok(())
    }
}

/// When each phase began and how long it took.
///
/// Serialized (feature `serde`) as milliseconds (`f64`), since an
/// [`Instant`] means nothing outside the process: `ran_for_ms` (started →
/// triggered), `drain_latency_ms` (or `null`), `join_ms`, `hard_stop_ms`
/// (or `null`), `release_ms`, `total_ms`.
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
/// # Display
///
/// `{}` prints a one-line summary for a log line: the reason, the drain,
/// each pool's counts, each server's, each stage's drain latency (when
/// there are several stages), what failed, the exit code —
///
/// ```text
/// stopped (signal); drained in 3.2 ms; batch: 812 done, 0 failed, 0 panicked, 56 handed back, 0 abandoned; exit code 130
/// ```
///
/// `{:#}` prints the same line, then the details: the timings in the order
/// they happened (ran for, stop-accepting hooks, hard stop, drain latency,
/// one line per stage when there are several, release hooks, joined,
/// total), each pool's accounting and first errors,
/// each server, the background threads grouped by unit (`http: 34 threads
/// returned`, with only the odd ones named), the stuck threads and the
/// hooks.
///
/// # Serialization
///
/// With the `serde` feature, `Report` implements `serde::Serialize` (its
/// parts too; nothing implements `Deserialize`, as the [`Instant`]s in
/// [`Timings`] cannot come back). **Durations are milliseconds as `f64`,
/// in fields whose names end in `_ms`**; a duration that may be absent is
/// `null`. The object has these fields (more may be added, none renamed):
///
/// | field | value |
/// | --- | --- |
/// | `reason` | the reason's `Display`: `"signal"`, `"completed"`, `"requested: <message>"`, `"job failed in pool <pool>: <error>"` |
/// | `signal` | `"SIGINT"`, `"SIGTERM"`, `"SIGHUP"`, `"SIGQUIT"`, or `null` if no signal began the stop |
/// | `stop_reason` | the [`StopReason`] as an object: `{"kind": "signal", "signal"}`, `{"kind": "requested", "message"}`, `{"kind": "job_failed", "pool", "error"}`, `{"kind": "completed"}` |
/// | `exit_code` | [`exit_code`](Report::exit_code) |
/// | `has_failures`, `hard_stopped`, `forced_connections` | [`has_failures`](Report::has_failures), [`hard_stopped`](Report::hard_stopped), [`forced_connections`](Report::forced_connections) |
/// | `ran_for_ms`, `drain_latency_ms`, `join_ms`, `hard_stop_ms`, `release_ms`, `total_ms` | the [`Timings`] |
/// | `pools` | [`PoolReport`]s, field for field |
/// | `threads` | [`ThreadReport`]s: `{"name", "unit", "outcome", "error"}` |
/// | `stuck` | [`StuckThread`]s: `{"thread", "pool", "job_key", "in_job_ms"}` |
/// | `hooks` | [`HookReport`]s: `{"name", "kind", "outcome", "error", "elapsed_ms"}` |
/// | `servers` | [`ServerReport`]s, field for field, `addr` as a string |
/// | `stages` | [`StageReport`]s: `{"name", "index", "budget_ms", "began_ms", "drain_latency_ms", "hard_stop_ms"}` |
///
/// The handed-back jobs themselves are not serialized (their keys are, in
/// `pools[].handed_back_keys`).
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use winddown::Runtime;
///
/// let mut rt = Runtime::builder().signals(false).build()?;
/// let pool = rt.pool::<u32>("squares").workers(2).start(|n, _| {
///     let _ = n * n;
///     Ok(())
/// })?;
/// for n in 0..10 {
///     pool.submit(n).expect("running");
/// }
/// drop(pool); // the run completes once the queue has drained
/// let report = rt.run();
///
/// let json = serde_json::to_value(&report).expect("a report always serializes");
/// assert_eq!(json["reason"], "completed");
/// assert_eq!(json["stop_reason"]["kind"], "completed");
/// assert_eq!(json["pools"][0]["succeeded"], 10);
/// assert!(json["total_ms"].as_f64().is_some());
/// # }
/// # Ok::<(), winddown::BuildError>(())
/// ```
///
/// # Examples
///
/// ```
/// use winddown::{Runtime, StopReason};
///
/// let mut rt = Runtime::builder().signals(false).build()?;
/// let pool = rt.pool::<u32>("parse").workers(2).start(|n, _token| {
///     winddown::anyhow::ensure!(n % 10 != 0, "{n} is round");
///     Ok(())
/// })?;
/// for n in 1..=20 {
///     pool.submit(n).expect("running");
/// }
/// drop(pool); // no more work: the run completes once the queue drains
/// let report = rt.run();
///
/// assert_eq!(report.reason, StopReason::Completed);
/// let parse = report.pool("parse").unwrap();
/// assert_eq!((parse.submitted, parse.succeeded, parse.failed), (20, 18, 2));
/// assert!(parse.is_balanced());
/// let mut failures: Vec<_> = report.errors().map(|e| e.message.as_str()).collect();
/// failures.sort();
/// assert_eq!(failures, ["10 is round", "20 is round"]);
/// assert!(report.has_failures());
/// assert_eq!(report.exit_code, 1); // a job failed
/// assert!(report.timings.drain_latency.is_some()); // nothing was stuck
/// eprintln!("{report}"); // the one-paragraph summary
/// # Ok::<(), winddown::BuildError>(())
/// ```
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
    /// One entry per stage of the stop, in the order they drained: the
    /// first stage (`main`), then those made with
    /// [`Runtime::stage`](crate::Runtime::stage).
    pub stages: Vec<StageReport>,
    /// The exit code the program should use (see the crate docs' table).
    pub exit_code: i32,
    /// The handed-back jobs, until taken.
    jobs: HandedBackJobs,
}

/// Exit codes for the outcomes of a run; [`Default`] is the documented table.
///
/// Serialized (feature `serde`) with one field per field below, under the
/// same names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
            stages: Vec::new(),
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
    /// running at the deadline, or a stage overran its budget, so a hard
    /// token fired (work that watches it was cut).
    pub fn hard_stopped(&self) -> bool {
        self.timings.hard_stop.is_some() || self.stages.iter().any(|s| s.hard_stop.is_some())
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

// ===== Display: words for people =====

impl fmt::Display for ThreadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThreadOutcome::Returned => f.write_str("returned"),
            ThreadOutcome::Failed(msg) => write!(f, "failed: {msg}"),
            ThreadOutcome::Panicked(msg) => write!(f, "panicked: {msg}"),
            ThreadOutcome::Stuck => f.write_str("stuck"),
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookKind::StopAccepting => "stop-accepting",
            HookKind::Release => "release",
        })
    }
}

impl fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookOutcome::Ok => f.write_str("ok"),
            HookOutcome::Failed(msg) => write!(f, "failed: {msg}"),
            HookOutcome::Panicked(msg) => write!(f, "panicked: {msg}"),
            HookOutcome::TimedOut => f.write_str("timed out"),
        }
    }
}

/// A duration for people: `1.5 ms` below a second, `2.35 s` from there on.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs_f64();
        if secs < 1.0 {
            write!(f, "{:.1} ms", secs * 1e3)
        } else {
            write!(f, "{secs:.2} s")
        }
    }
}

/// A count and its noun, singular for exactly one: `1 worker`, `2 workers`,
/// `0 workers`.
struct Count<'a>(u64, &'a str, &'a str);

impl fmt::Display for Count<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Count(n, one, many) = *self;
        write!(f, "{n} {}", if n == 1 { one } else { many })
    }
}

/// `n` as a count (`usize` always fits: the report's lists are in memory).
fn count<'a>(n: usize, one: &'a str, many: &'a str) -> Count<'a> {
    Count(n as u64, one, many)
}

impl Report {
    /// Background threads that failed or panicked.
    fn failed_threads(&self) -> usize {
        self.threads
            .iter()
            .filter(|t| {
                matches!(
                    t.outcome,
                    ThreadOutcome::Failed(_) | ThreadOutcome::Panicked(_)
                )
            })
            .count()
    }

    /// The one-line summary (`{}`), also the first line of `{:#}`.
    fn fmt_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stopped ({}); ", self.reason)?;
        match self.timings.drain_latency {
            Some(d) => write!(f, "drained in {}", Human(d))?,
            None => write!(
                f,
                "drain timed out, {} stuck",
                count(self.stuck.len(), "thread", "threads")
            )?,
        }
        if let Some(d) = self.timings.hard_stop {
            write!(
                f,
                "; hard stop at {} (the deadline cut work in flight)",
                Human(d)
            )?;
        }
        for p in &self.pools {
            write!(
                f,
                "; {}: {} done, {} failed, {} panicked, {} handed back, {} abandoned",
                p.name, p.succeeded, p.failed, p.panicked, p.handed_back, p.abandoned
            )?;
            if !p.worker_failures.is_empty() {
                write!(
                    f,
                    ", {} failed",
                    count(p.worker_failures.len(), "worker", "workers")
                )?;
            }
        }
        for s in &self.servers {
            write!(f, "; {s}")?;
        }
        if self.stages.len() > 1 {
            f.write_str("; stages")?;
            for (i, s) in self.stages.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                match s.drain_latency {
                    Some(d) => write!(f, "{sep}{} {}", s.name, Human(d))?,
                    None => write!(f, "{sep}{} did not drain", s.name)?,
                }
            }
        }
        let failed_threads = self.failed_threads();
        if failed_threads > 0 {
            write!(f, "; {} failed", count(failed_threads, "thread", "threads"))?;
        }
        let failed_hooks = self.hooks.iter().filter(|h| h.outcome.is_failure()).count();
        if failed_hooks > 0 {
            write!(f, "; {} failed", count(failed_hooks, "hook", "hooks"))?;
        }
        write!(f, "; exit code {}", self.exit_code)
    }

    /// The timings of `{:#}`, in the order they happened in
    /// `Runtime::shutdown`: the run, the stop-accepting hooks, the drain
    /// (with the hard stop inside it), the release hooks, the join, the
    /// report.
    fn fmt_timings(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.timings;
        let hooks = |kind: HookKind| {
            let mut ran = self.hooks.iter().filter(|h| h.kind == kind).peekable();
            ran.peek()
                .is_some()
                .then(|| ran.map(|h| h.elapsed).sum::<Duration>())
        };
        writeln!(f, "timings:")?;
        writeln!(
            f,
            "  ran for               {} until the trigger",
            Human(t.triggered.saturating_duration_since(t.started))
        )?;
        if let Some(d) = hooks(HookKind::StopAccepting) {
            writeln!(f, "  stop-accepting hooks  {}", Human(d))?;
        }
        if let Some(d) = t.hard_stop {
            writeln!(f, "  hard stop at          {} after the trigger", Human(d))?;
        }
        match t.drain_latency {
            Some(d) => writeln!(
                f,
                "  drain latency         {} (trigger to every thread out)",
                Human(d)
            )?,
            None => writeln!(
                f,
                "  drain latency         none: {} still running",
                count(self.stuck.len(), "thread", "threads")
            )?,
        }
        if self.stages.len() > 1 {
            for s in &self.stages {
                writeln!(f, "  stage {s}")?;
            }
        }
        if hooks(HookKind::Release).is_some() {
            writeln!(f, "  release hooks         {}", Human(t.release))?;
        }
        writeln!(
            f,
            "  joined at             {} after the trigger",
            Human(t.join)
        )?;
        writeln!(f, "  total                 {}", Human(t.total))
    }

    /// The background threads of `{:#}`, grouped by unit in the order the
    /// units first appear: a unit of one thread of its own name on one line
    /// (`producer: returned`); a bigger unit as counts (`http: 34 threads
    /// returned`), with the threads that failed or panicked named below it.
    fn fmt_threads(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.threads.is_empty() {
            return Ok(());
        }
        writeln!(f, "threads:")?;
        let mut units: Vec<&str> = Vec::new();
        for t in &self.threads {
            if !units.contains(&t.unit.as_str()) {
                units.push(&t.unit);
            }
        }
        for unit in units {
            let threads: Vec<&ThreadReport> =
                self.threads.iter().filter(|t| t.unit == unit).collect();
            if let [only] = threads[..] {
                if only.name == unit {
                    writeln!(f, "  {unit}: {}", only.outcome)?;
                    continue;
                }
            }
            let returned = threads
                .iter()
                .filter(|t| t.outcome == ThreadOutcome::Returned)
                .count();
            let stuck = threads
                .iter()
                .filter(|t| t.outcome == ThreadOutcome::Stuck)
                .count();
            let all = count(threads.len(), "thread", "threads");
            if returned == threads.len() {
                write!(f, "  {unit}: {all} returned")?;
            } else {
                write!(f, "  {unit}: {returned} of {all} returned")?;
            }
            if stuck > 0 {
                write!(f, ", {stuck} stuck")?;
            }
            writeln!(f)?;
            for t in threads {
                if matches!(
                    t.outcome,
                    ThreadOutcome::Failed(_) | ThreadOutcome::Panicked(_)
                ) {
                    writeln!(f, "    {}: {}", t.name, t.outcome)?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_summary(f)?;
        if !f.alternate() {
            return Ok(());
        }
        writeln!(f)?;
        self.fmt_timings(f)?;
        for p in &self.pools {
            writeln!(
                f,
                "pool {} ({}): {} submitted = {} succeeded + {} failed + {} panicked + {} handed back + {} abandoned",
                p.name,
                count(p.workers, "worker", "workers"),
                p.submitted,
                p.succeeded,
                p.failed,
                p.panicked,
                p.handed_back,
                p.abandoned
            )?;
            for e in &p.errors {
                let what = if e.panicked { "panicked" } else { "failed" };
                match &e.key {
                    Some(key) => writeln!(f, "  job {key} {what}: {}", e.message)?,
                    None => writeln!(f, "  a job {what}: {}", e.message)?,
                }
            }
            for w in &p.worker_failures {
                let what = if w.panicked { "panicked" } else { "failed" };
                writeln!(
                    f,
                    "  worker {} {what} in its {}: {}",
                    w.thread, w.stage, w.message
                )?;
            }
            let unlisted = (p.failed + p.panicked).saturating_sub(p.errors.len() as u64);
            if unlisted > 0 {
                writeln!(
                    f,
                    "  and {} not listed",
                    Count(unlisted, "failure", "failures")
                )?;
            }
        }
        for s in &self.servers {
            writeln!(f, "{s:#}")?;
        }
        self.fmt_threads(f)?;
        for s in &self.stuck {
            write!(f, "stuck: {}", s.thread)?;
            if let Some(k) = &s.job_key {
                write!(f, " in job {k}")?;
            }
            if let Some(d) = s.in_job {
                write!(f, " for {}", Human(d))?;
            }
            writeln!(f)?;
        }
        for h in &self.hooks {
            write!(f, "hook {} ({}): ", h.name, h.kind)?;
            let took = Human(h.elapsed);
            match &h.outcome {
                HookOutcome::Ok => writeln!(f, "ok in {took}")?,
                HookOutcome::Failed(msg) => writeln!(f, "failed in {took}: {msg}")?,
                HookOutcome::Panicked(msg) => writeln!(f, "panicked in {took}: {msg}")?,
                HookOutcome::TimedOut => writeln!(f, "timed out after {took}")?,
            }
        }
        Ok(())
    }
}

// ===== Serialization (the `serde` feature) =====

/// The hand-written parts of the `Serialize` impls: durations as
/// milliseconds, `Instant`s as what they mean, an outcome as two fields of
/// its entry, and the report's computed fields. The rest is derived, so a
/// field added to a `PoolReport`, a `ServerReport`, … is serialized without
/// a change here; the hand-written impls destructure what they write, so a
/// field added there does not compile until it is written too.
///
/// Every impl writes a struct of known length (no `flatten`), so formats
/// that are not self-describing (bincode, postcard) take the report too.
#[cfg(feature = "serde")]
mod ser {
    use std::time::Duration;

    use serde::ser::{Serialize, SerializeStruct, Serializer};

    use super::{
        HookOutcome, HookReport, PoolReport, Report, ServerReport, StageReport, StuckThread,
        ThreadOutcome, ThreadReport, Timings,
    };
    use crate::reason::{Signal, StopReason};

    fn as_ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    /// `serialize_with` for a `Duration`: milliseconds.
    pub(super) fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        as_ms(*d).serialize(s)
    }

    /// `serialize_with` for an `Option<Duration>`: milliseconds or `null`.
    pub(super) fn opt_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(as_ms).serialize(s)
    }

    /// A thread's outcome as its word and its message.
    fn thread_outcome(o: &ThreadOutcome) -> (&'static str, Option<&str>) {
        match o {
            ThreadOutcome::Returned => ("returned", None),
            ThreadOutcome::Failed(e) => ("failed", Some(e)),
            ThreadOutcome::Panicked(e) => ("panicked", Some(e)),
            ThreadOutcome::Stuck => ("stuck", None),
        }
    }

    /// A hook's outcome as its word and its message.
    fn hook_outcome(o: &HookOutcome) -> (&'static str, Option<&str>) {
        match o {
            HookOutcome::Ok => ("ok", None),
            HookOutcome::Failed(e) => ("failed", Some(e)),
            HookOutcome::Panicked(e) => ("panicked", Some(e)),
            HookOutcome::TimedOut => ("timed_out", None),
        }
    }

    /// An outcome on its own: `{"outcome": word, "error": message or null}`.
    fn outcome<S: Serializer>(
        s: S,
        name: &'static str,
        (word, error): (&str, Option<&str>),
    ) -> Result<S::Ok, S::Error> {
        let mut o = s.serialize_struct(name, 2)?;
        o.serialize_field("outcome", word)?;
        o.serialize_field("error", &error)?;
        o.end()
    }

    impl Serialize for ThreadOutcome {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            outcome(s, "ThreadOutcome", thread_outcome(self))
        }
    }

    impl Serialize for HookOutcome {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            outcome(s, "HookOutcome", hook_outcome(self))
        }
    }

    impl Serialize for ThreadReport {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let ThreadReport {
                name,
                unit,
                outcome,
            } = self;
            let (word, error) = thread_outcome(outcome);
            let mut t = s.serialize_struct("ThreadReport", 4)?;
            t.serialize_field("name", name)?;
            t.serialize_field("unit", unit)?;
            t.serialize_field("outcome", word)?;
            t.serialize_field("error", &error)?;
            t.end()
        }
    }

    impl Serialize for HookReport {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let HookReport {
                name,
                kind,
                outcome,
                elapsed,
            } = self;
            let (word, error) = hook_outcome(outcome);
            let mut h = s.serialize_struct("HookReport", 5)?;
            h.serialize_field("name", name)?;
            h.serialize_field("kind", kind)?;
            h.serialize_field("outcome", word)?;
            h.serialize_field("error", &error)?;
            h.serialize_field("elapsed_ms", &as_ms(*elapsed))?;
            h.end()
        }
    }

    /// The timings in milliseconds, as a `Timings` and inside the report.
    #[derive(serde::Serialize)]
    struct TimingsMs {
        ran_for_ms: f64,
        drain_latency_ms: Option<f64>,
        join_ms: f64,
        hard_stop_ms: Option<f64>,
        release_ms: f64,
        total_ms: f64,
    }

    impl TimingsMs {
        fn of(t: &Timings) -> TimingsMs {
            let Timings {
                started,
                triggered,
                drain_latency,
                join,
                hard_stop,
                release,
                total,
            } = *t;
            TimingsMs {
                ran_for_ms: as_ms(triggered.saturating_duration_since(started)),
                drain_latency_ms: drain_latency.map(as_ms),
                join_ms: as_ms(join),
                hard_stop_ms: hard_stop.map(as_ms),
                release_ms: as_ms(release),
                total_ms: as_ms(total),
            }
        }
    }

    impl Serialize for Timings {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            TimingsMs::of(self).serialize(s)
        }
    }

    /// The report as serialized: its fields, the timings at the top level,
    /// and the computed values a script would otherwise recompute (the
    /// table in the `Report` docs).
    #[derive(serde::Serialize)]
    struct ReportRepr<'a> {
        reason: String,
        signal: Option<Signal>,
        stop_reason: &'a StopReason,
        exit_code: i32,
        has_failures: bool,
        hard_stopped: bool,
        forced_connections: u64,
        ran_for_ms: f64,
        drain_latency_ms: Option<f64>,
        join_ms: f64,
        hard_stop_ms: Option<f64>,
        release_ms: f64,
        total_ms: f64,
        pools: &'a [PoolReport],
        threads: &'a [ThreadReport],
        stuck: &'a [StuckThread],
        hooks: &'a [HookReport],
        servers: &'a [ServerReport],
        stages: &'a [StageReport],
    }

    impl Serialize for Report {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let Report {
                reason,
                timings,
                pools,
                threads,
                stuck,
                hooks,
                servers,
                stages,
                exit_code,
                jobs: _,
            } = self;
            let TimingsMs {
                ran_for_ms,
                drain_latency_ms,
                join_ms,
                hard_stop_ms,
                release_ms,
                total_ms,
            } = TimingsMs::of(timings);
            ReportRepr {
                reason: reason.to_string(),
                signal: reason.signal(),
                stop_reason: reason,
                exit_code: *exit_code,
                has_failures: self.has_failures(),
                hard_stopped: self.hard_stopped(),
                forced_connections: self.forced_connections(),
                ran_for_ms,
                drain_latency_ms,
                join_ms,
                hard_stop_ms,
                release_ms,
                total_ms,
                pools,
                threads,
                stuck,
                hooks,
                servers,
                stages,
            }
            .serialize(s)
        }
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

    fn stage(name: &str, index: usize, latency: Option<u64>, hard: Option<u64>) -> StageReport {
        StageReport {
            name: name.into(),
            index,
            budget: hard.map(|_| Duration::from_millis(100)),
            began: Duration::from_millis(2 * index as u64),
            drain_latency: latency.map(Duration::from_millis),
            hard_stop: hard.map(Duration::from_millis),
        }
    }

    #[test]
    fn stages_show_in_both_displays_only_when_there_is_more_than_one() {
        let (mut r, _) = report(StopReason::Signal(Signal::Terminate), pool(0, 0), vec![]);
        r.stages = vec![stage("main", 0, Some(1), None)];
        assert!(!r.to_string().contains("stages"), "{r}");
        assert!(!format!("{r:#}").contains("stage main"), "{r:#}");
        r.stages.push(stage("workers", 1, None, Some(100)));
        r.exit_code = r.compute_exit_code(ExitCodes::default());
        let line = r.to_string();
        assert!(
            line.contains("; stages main 1.0 ms, workers did not drain;"),
            "{line}"
        );
        assert!(r.hard_stopped(), "a stage's hard stop counts");
        assert_eq!(r.exit_code, 1);
        let detailed = format!("{r:#}");
        assert!(
            detailed.contains("  stage main: began at 0.0 ms, drained in 1.0 ms\n"),
            "{detailed}"
        );
        assert!(
            detailed.contains(
                "  stage workers: began at 2.0 ms, did not drain, hard stop at 100.0 ms\n"
            ),
            "{detailed}"
        );
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

    // ===== Display =====

    fn thread(unit: &str, name: &str, outcome: ThreadOutcome) -> ThreadReport {
        ThreadReport {
            name: name.into(),
            unit: unit.into(),
            outcome,
        }
    }

    fn hook(name: &str, kind: HookKind, outcome: HookOutcome, ms: u64) -> HookReport {
        HookReport {
            name: name.into(),
            kind,
            outcome,
            elapsed: Duration::from_millis(ms),
        }
    }

    /// A stop that went through every step: stop-accepting and release
    /// hooks, a hard stop, a stuck worker, a server, background threads.
    fn eventful() -> Report {
        let (mut r, _) = report(StopReason::Signal(Signal::Terminate), pool(1, 0), vec![]);
        let started = r.timings.triggered;
        r.timings = Timings {
            started,
            triggered: started + Duration::from_millis(1200),
            drain_latency: None,
            join: Duration::from_millis(10_430),
            hard_stop: Some(Duration::from_millis(10_000)),
            release: Duration::from_millis(150),
            total: Duration::from_millis(10_440),
        };
        r.pools[0].workers = 1;
        r.pools[0].errors.push(JobError {
            pool: "p".into(),
            key: Some("7".into()),
            message: "disk full".into(),
            panicked: false,
        });
        r.stuck.push(StuckThread {
            thread: "p-0".into(),
            pool: Some("p".into()),
            job_key: Some("9".into()),
            in_job: Some(Duration::from_millis(10_400)),
        });
        r.servers.push(ServerReport {
            name: "http".into(),
            addr: "127.0.0.1:8080".parse().expect("an address"),
            connections: ConnectionCounts {
                accepted: 1,
                closed: 1,
                served: 1,
                ..ConnectionCounts::default()
            },
            accept_errors: 0,
            handler_errors: 1,
            handler_panics: 0,
        });
        r.threads
            .push(thread("producer", "producer", ThreadOutcome::Returned));
        for i in 0..34 {
            let outcome = if i == 7 {
                ThreadOutcome::Panicked("handler exploded".into())
            } else {
                ThreadOutcome::Returned
            };
            r.threads
                .push(thread("http", &format!("http-{i}"), outcome));
        }
        r.threads
            .push(thread("http", "http-accept", ThreadOutcome::Returned));
        r.threads.push(thread(
            "metrics",
            "metrics",
            ThreadOutcome::Failed("no route".into()),
        ));
        r.hooks = vec![
            hook("unready", HookKind::StopAccepting, HookOutcome::Ok, 3),
            hook("flush", HookKind::Release, HookOutcome::TimedOut, 100),
            hook(
                "db",
                HookKind::Release,
                HookOutcome::Failed("reset".into()),
                40,
            ),
            hook(
                "cache",
                HookKind::Release,
                HookOutcome::Panicked("bang".into()),
                5,
            ),
        ];
        r.exit_code = r.compute_exit_code(ExitCodes::default());
        r
    }

    #[test]
    fn alternate_display_starts_with_the_one_line_summary() {
        let r = eventful();
        let short = r.to_string();
        let long = format!("{r:#}");
        assert_eq!(long.lines().next(), Some(short.as_str()));
        assert!(
            short.starts_with(
                "stopped (signal); drain timed out, 1 thread stuck; hard stop at 10.00 s"
            ),
            "{short}"
        );
        assert!(
            short.contains("; 2 threads failed; 3 hooks failed; exit code 1"),
            "{short}"
        );
        assert!(short.ends_with("exit code 1"), "{short}");
    }

    #[test]
    fn display_counts_one_in_the_singular_and_others_in_the_plural() {
        let r = eventful();
        let long = format!("{r:#}");
        for phrase in [
            "drain timed out, 1 thread stuck",
            "pool p (1 worker): 11 submitted",
            "server http: 1 connection, 1 served",
            "0 accept errors, 1 handler error, 0 handler panics",
            "2 threads failed",
            "3 hooks failed",
            "http: 34 of 35 threads returned",
        ] {
            assert!(long.contains(phrase), "{phrase:?} missing from\n{long}");
        }
        let (mut r, _) = report(StopReason::Completed, pool(0, 0), vec![]);
        r.hooks
            .push(hook("a", HookKind::Release, HookOutcome::TimedOut, 1));
        r.hooks
            .push(hook("b", HookKind::Release, HookOutcome::TimedOut, 1));
        r.threads
            .push(thread("t", "t", ThreadOutcome::Failed("x".into())));
        let long = format!("{r:#}");
        assert!(long.contains("pool p (2 workers)"), "{long}");
        assert!(
            long.contains("; 1 thread failed; 2 hooks failed;"),
            "{long}"
        );
        assert!(!long.contains("(s)"), "{long}");
    }

    #[test]
    fn display_lists_the_timings_in_the_order_they_happened() {
        let long = format!("{:#}", eventful());
        let order = [
            "  ran for               1.20 s until the trigger",
            "  stop-accepting hooks  3.0 ms",
            "  hard stop at          10.00 s after the trigger",
            "  drain latency         none: 1 thread still running",
            "  release hooks         150.0 ms",
            "  joined at             10.43 s after the trigger",
            "  total                 10.44 s",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|line| {
                long.find(line)
                    .unwrap_or_else(|| panic!("{line:?} missing from\n{long}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order:\n{long}");
        // Without hooks or a hard stop, their lines are left out.
        let (r, _) = report(StopReason::Completed, pool(0, 0), vec![]);
        let long = format!("{r:#}");
        assert!(
            long.contains("  drain latency         1.5 ms (trigger to every thread out)"),
            "{long}"
        );
        assert!(
            !long.contains("hooks") && !long.contains("hard stop"),
            "{long}"
        );
    }

    #[test]
    fn display_groups_threads_by_unit_and_names_only_the_odd_ones() {
        let long = format!("{:#}", eventful());
        let threads: Vec<&str> = long
            .lines()
            .skip_while(|l| *l != "threads:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert_eq!(
            threads,
            [
                "  producer: returned",
                "  http: 34 of 35 threads returned",
                "    http-7: panicked: handler exploded",
                "  metrics: failed: no route",
            ],
            "{long}"
        );
        let (mut r, _) = report(StopReason::Completed, pool(0, 0), vec![]);
        for i in 0..34 {
            r.threads.push(thread(
                "http",
                &format!("http-{i}"),
                ThreadOutcome::Returned,
            ));
        }
        r.threads
            .push(thread("http", "http-stop", ThreadOutcome::Stuck));
        let long = format!("{r:#}");
        assert!(
            long.contains("\n  http: 34 of 35 threads returned, 1 stuck\n"),
            "{long}"
        );
        assert!(!long.contains("http-0"), "{long}");
        r.threads.pop();
        assert!(format!("{r:#}").contains("\n  http: 34 threads returned\n"));
    }

    #[test]
    fn display_writes_outcomes_in_words_and_no_debug_forms() {
        let long = format!("{:#}", eventful());
        for line in [
            "  job 7 failed: disk full",
            "stuck: p-0 in job 9 for 10.40 s",
            "hook unready (stop-accepting): ok in 3.0 ms",
            "hook flush (release): timed out after 100.0 ms",
            "hook db (release): failed in 40.0 ms: reset",
            "hook cache (release): panicked in 5.0 ms: bang",
        ] {
            assert!(long.contains(line), "{line:?} missing from\n{long}");
        }
        for debug in [
            "Returned",
            "Panicked",
            "Failed",
            "Stuck",
            "Ok",
            "TimedOut",
            "Release",
            "StopAccepting",
            "Some(",
            "None",
            "{",
            "}",
            "\"",
        ] {
            assert!(!long.contains(debug), "{debug:?} in\n{long}");
        }
    }

    #[test]
    fn failures_beyond_the_first_kept_are_counted() {
        let (r, _) = report(StopReason::Completed, pool(3, 0), vec![]);
        let long = format!("{r:#}");
        assert!(long.contains("  and 3 failures not listed"), "{long}");
    }

    // ===== Serialization =====

    #[cfg(feature = "serde")]
    mod json {
        use super::*;
        use serde_json::{json, Value};

        fn keys(v: &Value) -> Vec<&str> {
            v.as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .collect()
        }

        fn has_keys(v: &Value, want: &[&str]) {
            let have = keys(v);
            for k in want {
                assert!(have.contains(k), "no {k:?} in {v:#}");
            }
        }

        #[test]
        fn a_stage_serializes_with_its_documented_fields_in_milliseconds() {
            let v = serde_json::to_value(stage("workers", 1, None, Some(100))).unwrap();
            assert_eq!(
                v,
                serde_json::json!({
                    "name": "workers",
                    "index": 1,
                    "budget_ms": 100.0,
                    "began_ms": 2.0,
                    "drain_latency_ms": null,
                    "hard_stop_ms": 100.0,
                })
            );
        }

        #[test]
        fn a_report_serializes_with_the_documented_fields_and_milliseconds() {
            let v = serde_json::to_value(eventful()).expect("serializes");
            has_keys(
                &v,
                &[
                    "reason",
                    "signal",
                    "stop_reason",
                    "exit_code",
                    "has_failures",
                    "hard_stopped",
                    "forced_connections",
                    "ran_for_ms",
                    "drain_latency_ms",
                    "join_ms",
                    "hard_stop_ms",
                    "release_ms",
                    "total_ms",
                    "pools",
                    "stages",
                    "threads",
                    "stuck",
                    "hooks",
                    "servers",
                ],
            );
            assert_eq!(v["reason"], "signal");
            assert_eq!(v["signal"], "SIGTERM");
            assert_eq!(
                v["stop_reason"],
                json!({"kind": "signal", "signal": "SIGTERM"})
            );
            assert_eq!(v["exit_code"], 1);
            assert_eq!(v["has_failures"], true);
            assert_eq!(v["hard_stopped"], true);
            assert_eq!(v["forced_connections"], 0);
            assert_eq!(v["ran_for_ms"], 1200.0);
            assert_eq!(v["drain_latency_ms"], Value::Null);
            assert_eq!(v["join_ms"], 10_430.0);
            assert_eq!(v["hard_stop_ms"], 10_000.0);
            assert_eq!(v["release_ms"], 150.0);
            assert_eq!(v["total_ms"], 10_440.0);
            assert!(
                v.get("timings").is_none() && v.get("jobs").is_none(),
                "{v:#}"
            );
        }

        #[test]
        fn the_parts_serialize_with_their_documented_fields() {
            let v = serde_json::to_value(eventful()).expect("serializes");
            let pool = &v["pools"][0];
            has_keys(
                pool,
                &[
                    "name",
                    "workers",
                    "submitted",
                    "succeeded",
                    "failed",
                    "panicked",
                    "handed_back",
                    "abandoned",
                    "handed_back_keys",
                    "abandoned_keys",
                    "errors",
                ],
            );
            assert_eq!(pool["submitted"], 11);
            assert_eq!(
                pool["errors"][0],
                json!({"pool": "p", "key": "7", "message": "disk full", "panicked": false})
            );
            assert_eq!(
                v["stuck"][0],
                json!({"thread": "p-0", "pool": "p", "job_key": "9", "in_job_ms": 10_400.0})
            );
            assert_eq!(
                v["threads"][0],
                json!({"name": "producer", "unit": "producer", "outcome": "returned", "error": null})
            );
            assert_eq!(
                v["threads"][8],
                json!({"name": "http-7", "unit": "http", "outcome": "panicked", "error": "handler exploded"})
            );
            assert_eq!(v["threads"][36]["outcome"], "failed");
            assert_eq!(
                v["hooks"],
                json!([
                    {"name": "unready", "kind": "stop_accepting", "outcome": "ok", "error": null, "elapsed_ms": 3.0},
                    {"name": "flush", "kind": "release", "outcome": "timed_out", "error": null, "elapsed_ms": 100.0},
                    {"name": "db", "kind": "release", "outcome": "failed", "error": "reset", "elapsed_ms": 40.0},
                    {"name": "cache", "kind": "release", "outcome": "panicked", "error": "bang", "elapsed_ms": 5.0},
                ])
            );
            assert_eq!(
                v["servers"][0],
                json!({
                    "name": "http",
                    "addr": "127.0.0.1:8080",
                    "connections": {
                        "accepted": 1, "served": 1, "closed": 1,
                        "idle_closed": 0, "drained": 0, "forced": 0,
                    },
                    "accept_errors": 0,
                    "handler_errors": 1,
                    "handler_panics": 0,
                })
            );
            assert_eq!(
                serde_json::to_value(ExitCodes::default()).expect("serializes"),
                json!({"success": 0, "signal": 130, "failure": 1, "forced": 3})
            );
        }

        #[test]
        fn every_stop_reason_has_a_kind_and_its_details() {
            let cases = [
                (
                    StopReason::Signal(Signal::Hangup),
                    json!({"kind": "signal", "signal": "SIGHUP"}),
                ),
                (
                    StopReason::Requested("deploy".into()),
                    json!({"kind": "requested", "message": "deploy"}),
                ),
                (
                    StopReason::JobFailed {
                        pool: "p".into(),
                        error: "boom".into(),
                    },
                    json!({"kind": "job_failed", "pool": "p", "error": "boom"}),
                ),
                (StopReason::Completed, json!({"kind": "completed"})),
            ];
            for (reason, want) in cases {
                assert_eq!(serde_json::to_value(&reason).expect("serializes"), want);
                let (r, _) = report(reason.clone(), pool(0, 0), vec![]);
                let v = serde_json::to_value(&r).expect("serializes");
                assert_eq!(v["reason"], reason.to_string(), "the Display form");
                assert_eq!(v["stop_reason"], want);
                let signal = reason.signal().map(Signal::name);
                assert_eq!(v["signal"], json!(signal));
            }
        }

        #[test]
        fn signals_and_phases_serialize_as_their_names() {
            for s in Signal::ALL {
                assert_eq!(serde_json::to_value(s).expect("serializes"), s.name());
            }
            for p in [
                crate::Phase::StopAccepting,
                crate::Phase::HardStop,
                crate::Phase::Done,
            ] {
                assert_eq!(serde_json::to_value(p).expect("serializes"), p.name());
            }
        }
    }
}
