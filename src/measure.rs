//! [`Measure`]: stop a runtime of your own program many times and summarise
//! its drain latency, return latency and hook time as percentiles.
//!
//! Each run builds a fresh [`Runtime`] and its work through a closure,
//! calls [`Runtime::run`] on the calling thread, triggers the stop from a
//! helper thread (started once per measurement, parked between runs), and
//! reads the figures from the [`Report`] and the instant `run` returned:
//!
//! * **drain latency** — [`Timings::drain_latency`]: trigger → every thread
//!   reported its exit;
//! * **return latency** — trigger → `run` returned, stamped on the calling
//!   thread as soon as it has the report (every exited thread joined, the
//!   release hooks done);
//! * **hook time** — the sum of every hook's [`HookReport::elapsed`], the
//!   stop-accepting hooks and the release hooks alike.
//!
//! All three count from [`Timings::triggered`], the instant the trigger
//! itself stamped, so the helper thread's own wake-up is not in them.
//!
//! [`Timings::drain_latency`]: crate::Timings::drain_latency
//! [`Timings::triggered`]: crate::Timings::triggered
//! [`HookReport::elapsed`]: crate::HookReport::elapsed

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::io;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::reason::StopReason;
use crate::report::Report;
use crate::runtime::Runtime;
use crate::shared::Handle;

/// The message of the stop [`Measure`] requests
/// ([`StopReason::Requested`]); a run that reports another reason stopped
/// before the trigger (see [`MeasureError::StoppedEarly`]).
pub const MEASURE_REQUEST: &str = "winddown::Measure";

// ===== Measure =====

/// Stops a runtime N times, rebuilding it each time, and returns the
/// percentiles of its drain latency, return latency and hook time: for
/// criterion benches and CI gates on a program's own shutdown.
///
/// [`run`](Measure::run) calls the setup closure once per run (warm-up runs
/// first), runs the [`Runtime`] it returns with [`Runtime::run`] on the
/// calling thread, and triggers the stop with [`Handle::request`] from a
/// helper thread named `winddown-measure` — at once, or once the work says
/// it is ready ([`Trial::ready_on`]), or a delay after that
/// ([`Trial::trigger_after`]). The helper is started once per call and
/// waits on a channel between runs, so no thread start or exit of its own
/// falls in a measured stop.
///
/// Build the runtimes with `signals(false)` (a measurement is not a place
/// for the process-wide handler) unless the signal path is what you
/// measure. The runs start and stop threads again and again; with
/// [`reuse_threads`](crate::reuse_threads) on, each run's threads are the
/// last run's, and the figures leave out the kernel's thread teardown (a
/// program that stops once and exits pays it, so measure both ways if that
/// is the case you care about).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use winddown::{Measure, Runtime};
///
/// let m = Measure::new(20).warmup(2).run(|_run| {
///     let mut rt = Runtime::builder().signals(false).build()?;
///     let jobs = rt.pool::<u64>("sum").workers(2).start(|n, _token| {
///         let _ = (0..n).sum::<u64>();
///         Ok(())
///     })?;
///     for n in 0..100 {
///         let _ = jobs.submit(n);
///     }
///     rt.on_release("flush", Duration::from_secs(1), || Ok(()));
///     // The submitter stays alive until `run` returned, so the run does
///     // not complete by itself before the measured stop.
///     Ok::<_, anyhow::Error>(winddown::Trial::new(rt).keep(jobs))
/// })?;
/// println!("{m}");
/// assert_eq!(m.runs(), 20);
/// let ret = m.return_latency();
/// assert!(ret.min <= ret.p50 && ret.p50 <= ret.p99 && ret.p99 <= ret.max);
/// // A CI gate would compare, e.g., `ret.p99` with its budget here.
/// # Ok::<(), winddown::MeasureError>(())
/// ```
///
/// In a criterion bench, time the return latency with `iter_custom`:
///
/// ```no_run
/// use criterion::Criterion;
/// use winddown::{Measure, Runtime, Trial};
///
/// fn program(_run: usize) -> anyhow::Result<Trial> {
///     let mut rt = Runtime::builder().signals(false).build()?;
///     let jobs = rt.pool::<u64>("work").workers(8).start(|_, _| Ok(()))?;
///     Ok(Trial::new(rt).keep(jobs))
/// }
///
/// fn shutdown(c: &mut Criterion) {
///     c.bench_function("shutdown/return", |b| {
///         b.iter_custom(|iters| {
///             Measure::new(iters as usize)
///                 .run(program)
///                 .expect("measured")
///                 .total_return_latency()
///         })
///     });
/// }
/// # shutdown(&mut Criterion::default());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a measurement is taken only when `run` is called"]
pub struct Measure {
    runs: usize,
    warmup: usize,
}

impl Measure {
    /// A measurement of `runs` stops, without warm-up. Zero runs is refused
    /// by [`run`](Measure::run) ([`MeasureError::NoRuns`]).
    pub fn new(runs: usize) -> Measure {
        Measure { runs, warmup: 0 }
    }

    /// Sets how many runs come first and are left out of the figures (the
    /// first thread starts, page faults and caches of a process). Default 0.
    pub fn warmup(mut self, runs: usize) -> Self {
        self.warmup = runs;
        self
    }

    /// Builds, runs and stops a runtime `warmup + runs` times, one after the
    /// other, and summarises the last `runs`.
    ///
    /// `setup` gets the run's index (warm-up runs first, from 0) and returns
    /// a [`Trial`] — or a bare [`Runtime`], which is a trial that is
    /// triggered at once. Blocks until the last run returned; each run takes
    /// what its runtime's stop takes (bounded by its grace, kill grace and
    /// hook budgets), plus the setup.
    ///
    /// A run whose threads were still running at the end of the kill grace
    /// has no drain latency; it still counts, with its return latency and
    /// hook time, and is counted in [`Measurement::undrained`].
    ///
    /// # Errors
    ///
    /// * [`MeasureError::NoRuns`] if `runs` is zero;
    /// * [`MeasureError::Setup`] with the run's index if `setup` failed
    ///   (runs already made are dropped);
    /// * [`MeasureError::StoppedEarly`] if a run stopped for a reason other
    ///   than the measurement's trigger (its work completed, a fail-fast
    ///   pool failed, a signal came) and the trial did not say it stops by
    ///   itself ([`Trial::stopped_by_itself`]);
    /// * [`MeasureError::Spawn`] if the helper thread could not be started.
    ///
    /// # Panics
    ///
    /// A panic in `setup` propagates to the caller (the helper thread then
    /// exits by itself).
    pub fn run<F, T, E>(&self, mut setup: F) -> Result<Measurement, MeasureError>
    where
        F: FnMut(usize) -> Result<T, E>,
        T: Into<Trial>,
        E: Into<anyhow::Error>,
    {
        if self.runs == 0 {
            return Err(MeasureError::NoRuns);
        }
        let trigger = Trigger::start().map_err(MeasureError::Spawn)?;
        let mut samples = Vec::with_capacity(self.runs);
        for run in 0..self.warmup.saturating_add(self.runs) {
            let trial: Trial = setup(run)
                .map_err(|e| MeasureError::Setup {
                    run,
                    source: e.into(),
                })?
                .into();
            let sample = trial.stop(&trigger, run)?;
            if run >= self.warmup {
                samples.push(sample);
            }
        }
        trigger.finish();
        Measurement::new(samples).ok_or(MeasureError::NoRuns)
    }
}

// ===== Trial =====

/// One run of a [`Measure`]: the runtime to stop, and when to stop it.
///
/// Made from a [`Runtime`] with [`Trial::new`] (or `.into()`); by default
/// the stop is requested at once. (The request may then come just before
/// [`Runtime::run`] begins to wait; every figure counts from the trigger's
/// own instant either way, and a stop that comes during start-up is no
/// error.)
#[must_use = "a trial does nothing until a `Measure` runs it"]
pub struct Trial {
    runtime: Runtime,
    ready: Option<Receiver<()>>,
    delay: Duration,
    keep: Vec<Box<dyn Any + Send>>,
    by_itself: bool,
}

impl fmt::Debug for Trial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trial")
            .field("runtime", &self.runtime)
            .field("ready", &self.ready.is_some())
            .field("delay", &self.delay)
            .field("keep", &self.keep.len())
            .field("by_itself", &self.by_itself)
            .finish()
    }
}

impl From<Runtime> for Trial {
    fn from(runtime: Runtime) -> Trial {
        Trial::new(runtime)
    }
}

impl Trial {
    /// A trial of `runtime`, triggered at once.
    pub fn new(runtime: Runtime) -> Trial {
        Trial {
            runtime,
            ready: None,
            delay: Duration::ZERO,
            keep: Vec::new(),
            by_itself: false,
        }
    }

    /// Triggers the stop only once `ready` has a message or is disconnected
    /// (all its senders dropped): hand the sender to the work, and send when
    /// it is in the state to measure (every worker inside a job, a
    /// connection open, a cache warm).
    ///
    /// If the runtime stops by itself first, the trigger is not sent (and the
    /// run is a [`MeasureError::StoppedEarly`] unless
    /// [`stopped_by_itself`](Trial::stopped_by_itself)).
    pub fn ready_on(mut self, ready: Receiver<()>) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Triggers the stop `delay` after the trial is ready (when the run
    /// begins, or after [`ready_on`](Trial::ready_on)'s message). The wait
    /// is a channel deadline on the helper thread, cut short if the runtime
    /// stops by itself. Default zero.
    pub fn trigger_after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Keeps `value` alive until `run` returned, then drops it on the
    /// calling thread, outside the measured stop: a [`Submitter`] that would
    /// otherwise let the run complete by itself, a listener, a sender the
    /// work waits on.
    ///
    /// [`Submitter`]: crate::Submitter
    pub fn keep(mut self, value: impl Send + 'static) -> Self {
        self.keep.push(Box::new(value));
        self
    }

    /// Sends no trigger: the work stops the runtime itself (completion, a
    /// fail-fast failure, its own [`Handle::request`], a signal it sends),
    /// and every reason is accepted. The figures then count from that
    /// trigger.
    pub fn stopped_by_itself(mut self) -> Self {
        self.by_itself = true;
        self
    }

    /// Runs the trial on this thread; `trigger` stops it.
    fn stop(self, trigger: &Trigger, run: usize) -> Result<MeasuredRun, MeasureError> {
        let Trial {
            runtime,
            ready,
            delay,
            keep,
            by_itself,
        } = self;
        if !by_itself {
            trigger.arm(Arm {
                handle: runtime.handle(),
                ready,
                delay,
            });
        }
        let report = runtime.run();
        let returned = Instant::now();
        drop(keep);
        if !by_itself && report.reason != StopReason::Requested(MEASURE_REQUEST.into()) {
            return Err(MeasureError::StoppedEarly {
                run,
                reason: report.reason,
            });
        }
        Ok(MeasuredRun::from_report(&report, returned))
    }
}

// ===== The helper thread =====

/// What the helper thread needs for one run.
struct Arm {
    handle: Handle,
    ready: Option<Receiver<()>>,
    delay: Duration,
}

/// The helper thread that triggers each run's stop.
struct Trigger {
    arms: Option<Sender<Arm>>,
    thread: Option<JoinHandle<()>>,
}

impl Trigger {
    fn start() -> io::Result<Trigger> {
        let (tx, rx) = crossbeam_channel::unbounded::<Arm>();
        let thread = thread::Builder::new()
            .name("winddown-measure".into())
            .spawn(move || {
                // Ends when the measurement drops its sender.
                for arm in rx {
                    arm.fire();
                }
            })?;
        Ok(Trigger {
            arms: Some(tx),
            thread: Some(thread),
        })
    }

    fn arm(&self, arm: Arm) {
        if let Some(tx) = &self.arms {
            // The helper only exits once the sender is dropped: never here.
            let _ = tx.send(arm);
        }
    }

    /// Stops the helper and joins it.
    fn finish(mut self) {
        drop(self.arms.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        // An early return (an error) or a panic in the setup: disconnect the
        // helper so it exits; it is not joined (it never blocks for long).
        drop(self.arms.take());
    }
}

impl Arm {
    /// Waits for readiness and the delay, each cut short by the runtime's
    /// own stop, then requests the stop.
    fn fire(self) {
        let token = self.handle.token();
        let stopped = token.receiver();
        if let Some(ready) = &self.ready {
            select! {
                recv(ready) -> _ => {}
                recv(stopped) -> _ => return,
            }
        }
        if !self.delay.is_zero() {
            let timer = crossbeam_channel::after(self.delay);
            select! {
                recv(timer) -> _ => {}
                recv(stopped) -> _ => return,
            }
        }
        self.handle.request(MEASURE_REQUEST);
    }
}

// ===== Results =====

/// One measured run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasuredRun {
    /// Trigger → every thread reported its exit
    /// ([`Timings::drain_latency`](crate::Timings::drain_latency)); `None` if
    /// a thread was still running at the end of the kill grace.
    pub drain_latency: Option<Duration>,
    /// Trigger → [`Runtime::run`] returned.
    pub return_latency: Duration,
    /// The sum of every hook's elapsed time (stop-accepting and release).
    pub hook_time: Duration,
    /// Why the run stopped: the measurement's request, or the work's own
    /// reason for a trial [stopped by itself](Trial::stopped_by_itself).
    pub reason: StopReason,
    /// The run's [`Report::exit_code`].
    pub exit_code: i32,
}

impl MeasuredRun {
    /// The figures of one run, from its report and the instant `run`
    /// returned.
    fn from_report(report: &Report, returned: Instant) -> MeasuredRun {
        MeasuredRun {
            drain_latency: report.timings.drain_latency,
            return_latency: returned.saturating_duration_since(report.timings.triggered),
            hook_time: report.hooks.iter().map(|h| h.elapsed).sum(),
            reason: report.reason.clone(),
            exit_code: report.exit_code,
        }
    }
}

/// The minimum, median, 90th and 99th percentiles and maximum of a set of
/// durations, by the nearest-rank method: the p-th percentile of n sorted
/// values is the value at rank ⌈p · n / 100⌉ (so every figure is one of the
/// values, and with fewer than 100 values the p99 is the maximum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    /// How many values.
    pub count: usize,
    /// The smallest.
    pub min: Duration,
    /// The median (nearest rank).
    pub p50: Duration,
    /// The 90th percentile (nearest rank).
    pub p90: Duration,
    /// The 99th percentile (nearest rank).
    pub p99: Duration,
    /// The largest.
    pub max: Duration,
}

impl Percentiles {
    /// The percentiles of `values`, in any order; `None` if there are none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use winddown::Percentiles;
    ///
    /// let ms = |n| Duration::from_millis(n);
    /// let p = Percentiles::of((1..=10).rev().map(ms)).unwrap();
    /// assert_eq!((p.min, p.p50, p.p90, p.p99, p.max), (ms(1), ms(5), ms(9), ms(10), ms(10)));
    /// assert_eq!(p.count, 10);
    /// assert!(Percentiles::of([]).is_none());
    /// ```
    pub fn of(values: impl IntoIterator<Item = Duration>) -> Option<Percentiles> {
        let mut v: Vec<Duration> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let n = v.len();
        // Rank ⌈p·n/100⌉, 1-based, at least 1.
        let at = |p: usize| v[(p * n).div_ceil(100).max(1) - 1];
        Some(Percentiles {
            count: n,
            min: v[0],
            p50: at(50),
            p90: at(90),
            p99: at(99),
            max: v[n - 1],
        })
    }
}

impl fmt::Display for Percentiles {
    /// `min 41 µs · p50 52 µs · p90 60 µs · p99 88 µs · max 91 µs (n = 100)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "min {} · p50 {} · p90 {} · p99 {} · max {} (n = {})",
            Short(self.min),
            Short(self.p50),
            Short(self.p90),
            Short(self.p99),
            Short(self.max),
            self.count
        )
    }
}

/// A duration in three significant digits: `850 ns`, `41.2 µs`, `3.05 ms`,
/// `1.20 s`.
struct Short(Duration);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos() as f64;
        let (value, unit) = if ns < 1e3 {
            (ns, "ns")
        } else if ns < 1e6 {
            (ns / 1e3, "µs")
        } else if ns < 1e9 {
            (ns / 1e6, "ms")
        } else {
            (ns / 1e9, "s")
        };
        let digits = if value >= 100.0 || unit == "ns" {
            0
        } else if value >= 10.0 {
            1
        } else {
            2
        };
        write!(f, "{value:.digits$} {unit}")
    }
}

/// What a [`Measure`] found: every run's [`MeasuredRun`] and their percentiles.
///
/// `{}` prints one line per figure:
///
/// ```text
/// drain latency   min 41.0 µs · p50 52.3 µs · p90 60.1 µs · p99 88.0 µs · max 91.2 µs (n = 100)
/// return latency  min 58.7 µs · p50 70.0 µs · p90 81.4 µs · p99 120 µs · max 131 µs (n = 100)
/// hook time       min 1.10 µs · p50 1.31 µs · p90 1.52 µs · p99 2.01 µs · max 2.20 µs (n = 100)
/// ```
///
/// and a last line `undrained: k of n runs` when some run did not drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurement {
    samples: Vec<MeasuredRun>,
    drain: Option<Percentiles>,
    ret: Percentiles,
    hooks: Percentiles,
}

impl Measurement {
    /// Summarises `samples`; `None` if there are none.
    fn new(samples: Vec<MeasuredRun>) -> Option<Measurement> {
        let ret = Percentiles::of(samples.iter().map(|s| s.return_latency))?;
        let hooks = Percentiles::of(samples.iter().map(|s| s.hook_time))?;
        let drain = Percentiles::of(samples.iter().filter_map(|s| s.drain_latency));
        Some(Measurement {
            samples,
            drain,
            ret,
            hooks,
        })
    }

    /// How many runs were measured (warm-up runs not counted).
    pub fn runs(&self) -> usize {
        self.samples.len()
    }

    /// Every measured run, in the order they ran.
    pub fn samples(&self) -> &[MeasuredRun] {
        &self.samples
    }

    /// The drain latency of the runs that drained; `None` if none did (see
    /// [`undrained`](Measurement::undrained)).
    pub fn drain_latency(&self) -> Option<Percentiles> {
        self.drain
    }

    /// The return latency: trigger → [`Runtime::run`] returned.
    pub fn return_latency(&self) -> Percentiles {
        self.ret
    }

    /// The time spent in hooks, per run.
    pub fn hook_time(&self) -> Percentiles {
        self.hooks
    }

    /// How many runs had a thread still running at the end of the kill
    /// grace (no drain latency).
    pub fn undrained(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| s.drain_latency.is_none())
            .count()
    }

    /// The sum of every run's return latency: what criterion's
    /// `iter_custom` wants for `iters` runs.
    pub fn total_return_latency(&self) -> Duration {
        self.samples.iter().map(|s| s.return_latency).sum()
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.drain {
            Some(d) => writeln!(f, "drain latency   {d}")?,
            None => writeln!(f, "drain latency   none: no run drained")?,
        }
        writeln!(f, "return latency  {}", self.ret)?;
        write!(f, "hook time       {}", self.hooks)?;
        let undrained = self.undrained();
        if undrained > 0 {
            write!(f, "\nundrained: {undrained} of {} runs", self.runs())?;
        }
        Ok(())
    }
}

// ===== Errors =====

/// Why a [`Measure`] gave no measurement.
#[derive(Debug)]
#[non_exhaustive]
pub enum MeasureError {
    /// `Measure::new(0)`: nothing to measure.
    NoRuns,
    /// The setup closure failed in run `run` (0-based, warm-up runs
    /// included).
    Setup {
        /// The run's index.
        run: usize,
        /// The closure's error.
        source: anyhow::Error,
    },
    /// Run `run` stopped for `reason` before (or instead of) the
    /// measurement's trigger, so its figures would not be a measured stop.
    /// Keep the work from completing by itself (e.g. [`Trial::keep`] its
    /// submitter), or mark the trial [`Trial::stopped_by_itself`].
    StoppedEarly {
        /// The run's index.
        run: usize,
        /// The reason in its report.
        reason: StopReason,
    },
    /// The helper thread that sends the triggers could not be started.
    Spawn(io::Error),
}

impl fmt::Display for MeasureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeasureError::NoRuns => f.write_str("nothing to measure: zero runs"),
            MeasureError::Setup { run, source } => {
                write!(f, "run {run}: the setup failed: {source:#}")
            }
            MeasureError::StoppedEarly { run, reason } => {
                write!(
                    f,
                    "run {run} stopped by itself ({reason}) before the trigger"
                )
            }
            MeasureError::Spawn(e) => write!(f, "could not start the trigger thread: {e}"),
        }
    }
}

impl Error for MeasureError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            MeasureError::Setup { source, .. } => Some(source.as_ref()),
            MeasureError::Spawn(e) => Some(e),
            MeasureError::NoRuns | MeasureError::StoppedEarly { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let p = Percentiles::of((1..=200).map(us)).unwrap();
        assert_eq!(p.count, 200);
        assert_eq!(p.min, us(1));
        assert_eq!(p.p50, us(100));
        assert_eq!(p.p90, us(180));
        assert_eq!(p.p99, us(198));
        assert_eq!(p.max, us(200));
        let one = Percentiles::of([us(7)]).unwrap();
        assert_eq!(
            (one.min, one.p50, one.p99, one.max),
            (us(7), us(7), us(7), us(7))
        );
    }

    #[test]
    fn short_durations_keep_three_digits() {
        let s = |d| Short(d).to_string();
        assert_eq!(s(Duration::from_nanos(850)), "850 ns");
        assert_eq!(s(Duration::from_nanos(41_234)), "41.2 µs");
        assert_eq!(s(Duration::from_nanos(3_054_000)), "3.05 ms");
        assert_eq!(s(Duration::from_millis(1200)), "1.20 s");
        assert_eq!(s(us(120)), "120 µs");
    }
}
