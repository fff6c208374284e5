//! [`Runtime`] and its [`Builder`]: the top of the crate. It owns the
//! registry of units and threads, the hooks and the signal registration, and
//! drives the lifecycle from the trigger to the [`Report`].
//!
//! `Runtime::shutdown` reads as the list of the stop's steps; each step is a
//! call into a layer below (`unit`, `join`, `hooks`), none of which imports
//! this module.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::select;

use crate::error::BuildError;
use crate::hooks::{self, Hook};
use crate::join::{Hold, Joiner};
use crate::phase::Phase;
use crate::pool::PoolBuilder;
use crate::reason::{Signal, StopReason};
use crate::registry::Registry;
use crate::report::{ExitCodes, HookKind, HookReport, Report, StageReport, Timings};
use crate::shared::{Handle, Shared};
use crate::signal::{self, Registration, SignalConfig, SignalTarget};
use crate::stage::Stage;
use crate::systemd::{Notifier, StopBudget};
use crate::thread::catch;
use crate::token::Token;

/// The default drain deadline: trigger → hard stop.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// The default kill grace: hard stop → stuck threads are named and detached.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(1);

impl SignalTarget for Shared {
    fn signal_trigger(&self, sig: Signal) -> bool {
        self.trigger(StopReason::Signal(sig))
    }
}

// ===== Builder =====

type PhaseFn = Arc<dyn Fn(Phase) + Send + Sync>;

/// Configures a [`Runtime`].
///
/// ```
/// use std::time::Duration;
/// use winddown::{Runtime, Signal};
///
/// let _rt = Runtime::builder()
///     .grace(Duration::from_secs(30))
///     .kill_grace(Duration::from_secs(2))
///     .handle_signals([Signal::Terminate, Signal::Interrupt]) // leave SIGHUP alone
///     .signals(false) // tests and libraries: no process-wide handler
///     .build()?;
/// # Ok::<(), winddown::BuildError>(())
/// ```
#[must_use = "a runtime is made only when `build` is called"]
pub struct Builder {
    grace: Duration,
    kill_grace: Duration,
    signals: bool,
    signal_set: Vec<Signal>,
    honor_ignored: bool,
    force_exit: bool,
    exit_codes: ExitCodes,
    on_phase: Option<PhaseFn>,
    notify_systemd: bool,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("grace", &self.grace)
            .field("kill_grace", &self.kill_grace)
            .field("signals", &self.signals)
            .field("signal_set", &self.signal_set)
            .field("honor_ignored", &self.honor_ignored)
            .field("force_exit", &self.force_exit)
            .field("exit_codes", &self.exit_codes)
            .field("on_phase", &self.on_phase.as_ref().map(|_| "<closure>"))
            .field("notify_systemd", &self.notify_systemd)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            grace: DEFAULT_GRACE,
            kill_grace: DEFAULT_KILL_GRACE,
            signals: true,
            signal_set: Signal::DEFAULT_SET.to_vec(),
            honor_ignored: true,
            force_exit: true,
            exit_codes: ExitCodes::default(),
            on_phase: None,
            notify_systemd: true,
        }
    }
}

impl Builder {
    /// Sets the drain deadline, measured from the trigger on the monotonic
    /// clock. Default 10 s.
    ///
    /// Zero means "no drain": the hard token fires at once, in-flight jobs
    /// get the kill grace to notice, and queued jobs are handed back. A
    /// duration too large to add to the clock means "no deadline".
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets how long after the drain deadline the threads still running are
    /// named and detached. Default 1 s; zero names them at the deadline.
    /// The bound is `trigger + grace + kill_grace` on the monotonic clock,
    /// however late the runtime's thread got to fire the hard stop (a
    /// process stopped by SIGSTOP across the deadline does not wait a
    /// further kill grace after SIGCONT).
    pub fn kill_grace(mut self, kill_grace: Duration) -> Self {
        self.kill_grace = kill_grace;
        self
    }

    /// Whether to route signals to this runtime. Default `true`. The
    /// process-wide handler is installed once, by the first runtime that
    /// asks; see the crate docs' *Signals* section for the rules.
    pub fn signals(mut self, signals: bool) -> Self {
        self.signals = signals;
        self
    }

    /// Which signals stop this runtime. Default [`Signal::DEFAULT_SET`]
    /// (SIGINT, SIGTERM, SIGHUP). A signal left out keeps its disposition
    /// (unless an earlier runtime in the process hooked it). An empty set is
    /// the same as `signals(false)`.
    pub fn handle_signals(mut self, set: impl IntoIterator<Item = Signal>) -> Self {
        self.signal_set = set.into_iter().collect();
        self.signal_set.sort();
        self.signal_set.dedup();
        self
    }

    /// Whether a signal the process inherited as ignored (`nohup` ignores
    /// SIGHUP; `trap '' INT` in a shell) stays ignored. Default `true`, as
    /// Go does; `false` hooks it anyway.
    pub fn honor_ignored_signals(mut self, honor: bool) -> Self {
        self.honor_ignored = honor;
        self
    }

    /// Whether a second, distinct signal ends the process at once with
    /// [`ExitCodes::forced`] (default 3). Default `true`. The choice of the
    /// last runtime built holds for the process until the next one is built,
    /// also after `run` has returned.
    pub fn force_exit_on_second_signal(mut self, force_exit: bool) -> Self {
        self.force_exit = force_exit;
        self
    }

    /// Sets the exit code of a forced exit (the second signal). Same as
    /// setting [`ExitCodes::forced`] through [`exit_codes`](Builder::exit_codes).
    pub fn forced_exit_code(mut self, code: i32) -> Self {
        self.exit_codes.forced = code;
        self
    }

    /// Overrides the exit codes the report computes (e.g. 0 for a signal,
    /// for services whose supervisor treats 130 as a crash).
    pub fn exit_codes(mut self, codes: ExitCodes) -> Self {
        self.exit_codes = codes;
        self
    }

    /// Calls `f` with each phase as the runtime enters it, on the thread
    /// that runs [`Runtime::run`], in order. A panic in `f` is ignored.
    pub fn on_phase(mut self, f: impl Fn(Phase) + Send + Sync + 'static) -> Self {
        self.on_phase = Some(Arc::new(f));
        self
    }

    /// Whether to tell systemd about the run when the process was started
    /// with `NOTIFY_SOCKET` set (a `Type=notify` service). Default `true`;
    /// without `NOTIFY_SOCKET` nothing is sent and no thread is started, and
    /// without the `systemd` feature (on by default) or off Unix this does
    /// nothing.
    ///
    /// When on, a thread named `winddown-systemd` sends, to the socket
    /// `NOTIFY_SOCKET` names (a path, or on Linux an `@abstract` name):
    ///
    /// * `READY=1` with `MAINPID` and `STATUS=running` when [`Runtime::run`]
    ///   begins (a stop begun during start-up follows at once);
    /// * `STOPPING=1` and `STATUS=stopping (<reason>)` at the trigger, with
    ///   `EXTEND_TIMEOUT_USEC` set to the longest the rest of the stop can
    ///   take: the stop-accepting hooks' budgets + the grace left + the kill
    ///   grace + the release hooks' budgets + 1 s, so systemd's
    ///   `TimeoutStopSec=` does not cut a drain the program allows;
    /// * `STATUS=draining`, `hard_stop`, `releasing` at each of those
    ///   phases, each with `EXTEND_TIMEOUT_USEC` for what is left from then
    ///   (a stop with no bound is extended 60 s at a time, every 30 s);
    /// * `STATUS=<the report's one-line summary>` (`stopped (<reason>); …`) before `run` returns;
    /// * `WATCHDOG=1` every `WATCHDOG_USEC` / 2 from [`build`](Builder::build)
    ///   until the stop is over, if `WATCHDOG_USEC` is set and
    ///   `WATCHDOG_PID` is unset or this process's id.
    ///
    /// A value that does not parse (or a zero `WATCHDOG_USEC`) is ignored,
    /// and a message that cannot be sent is dropped: neither fails the
    /// build or the run. The variables are never unset (that is unsound in
    /// a threaded program), so child processes inherit them; remove them
    /// from a child's `Command` with `env_remove`. Turn this off on all but
    /// one runtime if a process builds several.
    ///
    /// ```
    /// // A helper runtime beside the program's main one: leave systemd to
    /// // the main runtime.
    /// let _helper = winddown::Runtime::builder()
    ///     .signals(false)
    ///     .notify_systemd(false)
    ///     .build()?;
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn notify_systemd(mut self, notify: bool) -> Self {
        self.notify_systemd = notify;
        self
    }

    /// Builds the runtime and, if asked, registers it for signals. From here
    /// on a signal stops the runtime, also while units are still being added
    /// (they then start stopped; `run` returns the report).
    ///
    /// # Errors
    ///
    /// [`BuildError::Signals`] if signal handling could not be installed;
    /// [`BuildError::Spawn`] if the systemd notifier's thread could not be
    /// spawned.
    pub fn build(self) -> Result<Runtime, BuildError> {
        let shared = Arc::new(Shared::new());
        let registration = if self.signals && !self.signal_set.is_empty() {
            let target: Weak<dyn SignalTarget> = Arc::downgrade(&shared) as _;
            let config = SignalConfig {
                set: self.signal_set.clone(),
                honor_ignored: self.honor_ignored,
                force_exit: self.force_exit,
                forced_exit_code: self.exit_codes.forced,
            };
            Some(signal::register(target, &config)?)
        } else {
            None
        };
        let systemd = Notifier::from_env(self.notify_systemd)?;
        Ok(Runtime {
            reg: Registry::new(shared),
            grace: self.grace,
            kill_grace: self.kill_grace,
            exit_codes: self.exit_codes,
            on_phase: self.on_phase,
            started: Instant::now(),
            stop_hooks: Vec::new(),
            release_hooks: Vec::new(),
            registration,
            systemd,
            stages: vec![StagePlan {
                name: crate::stage::FIRST_NAME.into(),
                budget: None,
            }],
            finished: false,
        })
    }
}

// ===== Runtime =====

/// One graceful-shutdown controller: pools, background threads, services,
/// hooks and (optionally) signal handling, driven from start to [`Report`]
/// by [`run`](Runtime::run).
///
/// ```
/// use std::time::Duration;
/// use winddown::Runtime;
///
/// let mut rt = Runtime::builder().signals(false).build()?;
/// let pool = rt.pool::<u64>("sum").workers(2).start(|n, _token| {
///     let _ = (0..n).sum::<u64>();
///     Ok(())
/// })?;
/// rt.spawn("metrics", |token| {
///     while !token.wait_timeout(Duration::from_secs(5)) { /* flush */ }
///     Ok(())
/// })?;
/// rt.on_release("close db", Duration::from_secs(1), || Ok(()));
/// for n in 0..100 {
///     pool.submit(n).expect("running");
/// }
/// drop(pool); // no more work: the run completes when the queue drains
/// let report = rt.run();
/// assert_eq!(report.reason, winddown::StopReason::Completed);
/// assert_eq!(report.pools[0].succeeded, 100);
/// assert_eq!(report.exit_code, 0);
/// # Ok::<(), winddown::BuildError>(())
/// ```
///
/// See the [crate docs](crate) for the lifecycle.
pub struct Runtime {
    reg: Registry,
    grace: Duration,
    kill_grace: Duration,
    exit_codes: ExitCodes,
    on_phase: Option<PhaseFn>,
    started: Instant,
    stop_hooks: Vec<Hook>,
    release_hooks: Vec<Hook>,
    registration: Option<Registration>,
    systemd: Notifier,
    /// The stages of the stop, in order; the first is `Stage::FIRST`.
    stages: Vec<StagePlan>,
    /// Set once `shutdown` has run; `Drop` then has nothing to do.
    finished: bool,
}

/// A stage as configured: its name and optional budget.
#[derive(Debug)]
struct StagePlan {
    name: String,
    budget: Option<Duration>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("phase", &self.reg.shared.phase.get())
            .field("units", &self.reg.shared.units().len())
            .field("threads", &self.reg.threads.next_id())
            .field("grace", &self.grace)
            .field("kill_grace", &self.kill_grace)
            .field("stages", &self.stages.len())
            .field(
                "signals",
                &self.registration.as_ref().map(Registration::hooked),
            )
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Returns a [`Builder`] with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Builds a runtime with the defaults (signals on).
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> Result<Runtime, BuildError> {
        Builder::default().build()
    }

    /// Starts configuring a pool of workers named `name` for jobs of type
    /// `T`; see [`PoolBuilder`].
    pub fn pool<T: Send + 'static>(&mut self, name: impl Into<String>) -> PoolBuilder<'_, T> {
        PoolBuilder::new(&mut self.reg, name.into())
    }

    /// Adds a stage of the stop named `name`, after the ones made so far,
    /// and returns it for [`PoolBuilder::stage`].
    ///
    /// The stop drains the stages in order. The first,
    /// [`Stage::FIRST`] (named `main`: every server, background thread and
    /// pool not given a stage), stops at the trigger. Each later stage goes
    /// on accepting and running work until every thread of the stages
    /// before it has exited — a request still in flight can queue a job in
    /// it — and then stops accepting and drains. The release hooks run
    /// after the last stage. Every stage shares the one drain deadline,
    /// `trigger + grace`; see [`stage_with_budget`](Runtime::stage_with_budget)
    /// for a bound of its own.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidName`] for an empty name or one with a NUL
    /// byte, [`BuildError::DuplicateName`] for a stage name taken (`main`
    /// is the first stage's).
    ///
    /// # Examples
    ///
    /// A job queued by code of the first stage after the trigger still
    /// runs:
    ///
    /// ```
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let later = rt.stage("workers")?;
    /// let jobs = rt.pool::<u32>("jobs").stage(later).workers(1).start(|_, _| Ok(()))?;
    /// rt.spawn("handler", move |token| {
    ///     token.wait(); // the stop began: the first stage drains...
    ///     jobs.submit(7).expect("...and the later stage still accepts");
    ///     Ok(())
    /// })?;
    /// rt.handle().request("deploy");
    /// let report = rt.run();
    /// assert_eq!(report.pool("jobs").unwrap().succeeded, 1);
    /// assert_eq!(report.stages.len(), 2);
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn stage(&mut self, name: impl Into<String>) -> Result<Stage, BuildError> {
        self.add_stage(name.into(), None)
    }

    /// Adds a stage as [`stage`](Runtime::stage) does, with a budget of its
    /// own: if its threads have not all exited `budget` after it began, its
    /// hard token fires — its own only, the other stages' work is not cut —
    /// and its threads get the kill grace before the stop moves on to the
    /// next stage. The drain deadline still bounds it, so the whole stop
    /// stays within `grace + kill_grace` + the hook budgets from the
    /// trigger. A zero budget hard-stops the stage as it begins.
    ///
    /// # Errors
    ///
    /// As [`stage`](Runtime::stage).
    pub fn stage_with_budget(
        &mut self,
        name: impl Into<String>,
        budget: Duration,
    ) -> Result<Stage, BuildError> {
        self.add_stage(name.into(), Some(budget))
    }

    /// Gives the first stage ([`Stage::FIRST`]) a budget, as
    /// [`stage_with_budget`](Runtime::stage_with_budget) does for a later
    /// one: past it, the first stage's hard token fires (that is the root
    /// token, which [`Handle::token`] hands out) and its threads get the
    /// kill grace; the later stages then drain within the drain deadline.
    /// The first stage begins at the trigger, so its budget counts from
    /// there.
    pub fn first_stage_budget(&mut self, budget: Duration) -> &mut Self {
        self.stages[0].budget = Some(budget);
        self
    }

    fn add_stage(&mut self, name: String, budget: Option<Duration>) -> Result<Stage, BuildError> {
        if name.is_empty() || name.contains('\0') {
            return Err(BuildError::InvalidName(name));
        }
        if self.stages.iter().any(|s| s.name == name) {
            return Err(BuildError::DuplicateName(name));
        }
        let index = self.reg.shared.add_stage();
        debug_assert_eq!(index, self.stages.len());
        self.stages.push(StagePlan { name, budget });
        Ok(Stage::new(index, self.reg.shared.id))
    }

    /// Spawns a background thread named `name` that runs `f(token)` — a
    /// helper loop such as "flush metrics every 5 s until told to stop". It
    /// does not hold the run open: the run completes when the pools (and
    /// services) are done, and the helper is then stopped through its token.
    /// (A runtime with nothing but helpers completes when they all return.)
    /// It is joined in the same drain as the pools; an `Err` or a panic is
    /// recorded in the report. Spawned after the stop began, it starts with
    /// a stopped token.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidName`], [`BuildError::DuplicateName`] (also
    /// when the name is a pool's worker's, such as `hash-0`),
    /// [`BuildError::Spawn`].
    pub fn spawn<F>(&mut self, name: impl Into<String>, f: F) -> Result<(), BuildError>
    where
        F: FnOnce(Token) -> anyhow::Result<()> + Send + 'static,
    {
        self.reg.spawn_background(name.into(), Hold::None, f)
    }

    /// Spawns a service thread: like [`spawn`](Runtime::spawn), but it holds
    /// the run open — the run does not complete by itself while a service is
    /// alive, however many pools finish (an accept loop, a queue consumer).
    /// It runs until a stop (or until it returns by itself).
    ///
    /// # Errors
    ///
    /// As [`spawn`](Runtime::spawn).
    pub fn spawn_service<F>(&mut self, name: impl Into<String>, f: F) -> Result<(), BuildError>
    where
        F: FnOnce(Token) -> anyhow::Result<()> + Send + 'static,
    {
        self.reg.spawn_background(name.into(), Hold::Service, f)
    }

    /// Registers a hook that runs when the stop begins (mark not-ready,
    /// close a listener), in registration order, each bounded by `budget`.
    pub fn on_stop_accepting<F>(
        &mut self,
        name: impl Into<String>,
        budget: Duration,
        f: F,
    ) -> &mut Self
    where
        F: FnOnce() -> anyhow::Result<()> + Send + 'static,
    {
        self.stop_hooks.push(Hook {
            name: name.into(),
            budget,
            f: Box::new(f),
        });
        self
    }

    /// Registers a release hook (close the database, flush the cache). Release
    /// hooks run after the drain — also after a timed-out one — last
    /// registered first, like `defer`, each exactly once.
    ///
    /// A hook that overruns `budget` is recorded as timed out and left
    /// running on its thread while the next one starts; an `Err` or a panic
    /// is recorded and the rest still run. A zero budget records as timed
    /// out any hook that has not finished by the time it is checked.
    pub fn on_release<F>(&mut self, name: impl Into<String>, budget: Duration, f: F) -> &mut Self
    where
        F: FnOnce() -> anyhow::Result<()> + Send + 'static,
    {
        self.release_hooks.push(Hook {
            name: name.into(),
            budget,
            f: Box::new(f),
        });
        self
    }

    /// Returns a handle for requesting the stop, watching the phase and
    /// getting tokens, from any thread.
    pub fn handle(&self) -> Handle {
        Handle::new(self.reg.shared.clone())
    }

    // For the feature-gated units (the server); dead without them.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn registry(&mut self) -> &mut Registry {
        &mut self.reg
    }

    /// Runs until a trigger (signal, request, fail-fast) or until the work
    /// completes by itself, then stops in order and returns the report.
    ///
    /// Blocks the calling thread throughout; every wait is on a channel or a
    /// deadline, never a sleep loop. Returns within grace + kill grace + the
    /// hook budgets after the trigger, whatever the jobs do. If the stop
    /// began before `run` (a signal during start-up), it goes straight to
    /// the stop.
    pub fn run(mut self) -> Report {
        self.systemd.ready();
        self.shutdown()
    }

    fn enter(&self, from: Phase, to: Phase) {
        if self.reg.shared.phase.advance(from, to) {
            self.notify(to);
        }
    }

    fn notify(&self, phase: Phase) {
        event!(info, phase = phase.name(), "phase");
        self.systemd.phase(phase);
        if let Some(f) = &self.on_phase {
            let _ = catch(|| f(phase));
        }
    }

    /// The whole stop, step by step. Called by `run`, or by `Drop` if `run`
    /// never was; the `finished` flag makes the second call a no-op.
    fn shutdown(&mut self) -> Report {
        debug_assert!(!self.finished);
        self.finished = true;
        let shared = self.reg.shared.clone();
        let mut joiner = std::mem::take(&mut self.reg.threads).into_joiner();

        // Running → the trigger.
        let (reason, triggered) = self.wait_for_trigger(&mut joiner);
        event!(
            info,
            reason = %reason,
            ran_for_ms = crate::event::ms(triggered.saturating_duration_since(self.started)),
            grace_ms = crate::event::ms(self.grace),
            "stop begun"
        );
        // The trigger stops the root before it moves the phase word; we may
        // have woken in between. Whoever moves it first wins (a CAS), so
        // every later transition starts from `StopAccepting`.
        shared.phase.advance(Phase::Running, Phase::StopAccepting);
        // systemd: STOPPING=1, and how long the whole stop may take.
        self.systemd.stopping(
            &reason,
            StopBudget {
                triggered,
                grace: self.grace,
                kill_grace: self.kill_grace,
                stop_hooks: StopBudget::sum(self.stop_hooks.iter().map(|h| h.budget)),
                release_hooks: StopBudget::sum(self.release_hooks.iter().map(|h| h.budget)),
            },
        );

        // StopAccepting: the first stage refuses new work, then the
        // stop-accepting hooks. The later stages go on accepting.
        self.notify(Phase::StopAccepting);
        let units = shared.units();
        for unit in &shared.units_in(0) {
            unit.stop_accepting();
        }
        let mut hook_reports = hooks::run_all(
            HookKind::StopAccepting,
            std::mem::take(&mut self.stop_hooks),
        );

        // Draining → (HardStop), stage by stage: every bound is from the
        // trigger.
        let (hard_stop, drain_latency, stages) = self.drain(&mut joiner, &reason, triggered);

        // Seal: give up on who is still running, before any user code runs
        // again, with the exits that came in taken first.
        joiner.drain();
        for unit in &units {
            unit.seal(&joiner);
        }

        // Releasing: last registered first, each exactly once.
        let from = if hard_stop.is_some() {
            Phase::HardStop
        } else {
            Phase::Draining
        };
        self.enter(from, Phase::Releasing);
        let (release_reports, release) = self.release();
        hook_reports.extend(release_reports);

        // Join: every thread that reported its exit is joined (the OS tore
        // them down while the hooks ran); the rest are detached and named.
        joiner.drain();
        joiner.join_and_detach();
        let join = triggered.elapsed();

        // Done: the report, from what each unit writes into it.
        self.enter(Phase::Releasing, Phase::Done);
        drop(self.registration.take());
        let mut report = Report::new(
            reason,
            Timings {
                started: self.started,
                triggered,
                drain_latency,
                join,
                hard_stop,
                release,
                total: Duration::ZERO,
            },
        );
        report.hooks = hook_reports;
        report.stages = stages;
        for unit in &units {
            unit.report(&joiner, &mut report);
        }
        shared.clear_units();
        report.timings.total = triggered.elapsed();
        report.exit_code = report.compute_exit_code(self.exit_codes);
        log_outcome(&report);
        self.systemd.finish(&report);
        report
    }

    /// Waits in `Running` for a trigger, or for the work to complete (the
    /// completion rule is the joiner's: every thread that holds the run open
    /// has exited). Returns the reason and the trigger's instant.
    fn wait_for_trigger(&self, joiner: &mut Joiner) -> (StopReason, Instant) {
        let shared = &self.reg.shared;
        let stop = shared.root.token();
        loop {
            // Not while a trigger is on its way: it woke the workers before
            // stopping the root, and their exits are its doing, not the
            // work's end; the root's stop follows and ends this wait.
            if joiner.is_complete() && !shared.is_triggering() {
                shared.trigger(StopReason::Completed);
            }
            if stop.is_stopping() {
                break;
            }
            select! {
                recv(stop.receiver()) -> _ => break,
                recv(joiner.done()) -> id => match id {
                    Ok(id) => joiner.exited(id),
                    Err(_) => joiner.all_exited(),
                },
            }
        }
        let reason = stop.reason().expect("the loop ends only once stopped");
        let triggered = stop.stopped_at().expect("stopped, so stamped");
        (reason, triggered)
    }

    /// Drains the stages in order (see `Runtime::stage`). Each stage waits
    /// for its own threads until its deadline: `trigger + grace`, or its
    /// budget from when it began if that comes first.
    ///
    /// * Past its budget, only the stage's hard token fires; its threads get
    ///   the kill grace (never past `trigger + grace + kill_grace`), then the
    ///   next stage begins.
    /// * At the drain deadline the hard stop fires for the whole runtime:
    ///   every stage not yet begun begins at once, hard, and all of them
    ///   wait until `trigger + grace + kill_grace`.
    ///
    /// Returns when the drain deadline's hard stop fired (from the trigger),
    /// the drain latency (`None` if a thread was still running at the end),
    /// and the stages' reports.
    fn drain(
        &self,
        joiner: &mut Joiner,
        reason: &StopReason,
        triggered: Instant,
    ) -> (Option<Duration>, Option<Duration>, Vec<StageReport>) {
        self.enter(Phase::StopAccepting, Phase::Draining);
        let shared = &self.reg.shared;
        let deadline = triggered.checked_add(self.grace);
        // From the deadline, not from when the hard stop fired: a runtime
        // thread that woke late (SIGSTOP, a loaded machine) does not add a
        // kill grace.
        let kill_deadline = deadline.and_then(|d| d.checked_add(self.kill_grace));
        let ids = self.stage_threads(joiner);
        let mut reports: Vec<StageReport> = self
            .stages
            .iter()
            .enumerate()
            .map(|(index, plan)| StageReport {
                name: plan.name.clone(),
                index,
                budget: plan.budget,
                began: Duration::ZERO,
                drain_latency: None,
                hard_stop: None,
            })
            .collect();
        let mut hard_stop = None;
        for i in 0..ids.len() {
            // The first stage began at the trigger; a later one now.
            let began = if i == 0 { triggered } else { Instant::now() };
            if i > 0 {
                self.begin_stage(i, reason);
                reports[i].began = began.saturating_duration_since(triggered);
            }
            let own = self.stages[i].budget.map(|b| began.checked_add(b));
            // The stage's budget counts only if it ends before the deadline.
            let budget_end = match (own, deadline) {
                (Some(Some(o)), Some(d)) if o < d => Some(o),
                (Some(Some(o)), None) => Some(o),
                _ => None,
            };
            joiner.wait_for(&ids[i], budget_end.or(deadline));
            if joiner.alive_among(&ids[i]) == 0 {
                reports[i].drain_latency = Some(began.elapsed());
                continue;
            }
            if let Some(end) = budget_end {
                // This stage overran its budget: its hard token only.
                event!(
                    warn,
                    stage = %self.stages[i].name,
                    still_running = joiner.alive_among(&ids[i]),
                    "stage budget passed: hard stop of the stage; its threads get the kill grace"
                );
                self.stage_source(i).stop_hard(reason.clone());
                reports[i].hard_stop = Some(triggered.elapsed());
                let kill = end.checked_add(self.kill_grace);
                let kill = match (kill, kill_deadline) {
                    (Some(k), Some(d)) => Some(k.min(d)),
                    (k, d) => k.or(d),
                };
                joiner.wait_for(&ids[i], kill);
                if joiner.alive_among(&ids[i]) == 0 {
                    reports[i].drain_latency = Some(began.elapsed());
                }
                continue;
            }
            // The drain deadline: the hard stop for the whole runtime, and
            // the stages not yet begun begin now, already hard.
            event!(
                warn,
                still_running = joiner.alive(),
                grace_ms = crate::event::ms(self.grace),
                "drain deadline passed: hard stop; threads still running get the kill grace"
            );
            self.enter(Phase::Draining, Phase::HardStop);
            shared.root.stop_hard(reason.clone());
            let at = triggered.elapsed();
            hard_stop = Some(at);
            let now = Instant::now();
            for (j, r) in reports.iter_mut().enumerate().skip(i) {
                if j > i {
                    self.begin_stage(j, reason);
                    r.began = now.saturating_duration_since(triggered);
                }
                self.stage_source(j).stop_hard(reason.clone());
                r.hard_stop = Some(at);
            }
            // One kill deadline for every thread still running; a stage's
            // latency is then when the runtime saw the last thread out.
            joiner.wait_until(kill_deadline);
            for (j, r) in reports.iter_mut().enumerate().skip(i) {
                if joiner.alive_among(&ids[j]) == 0 {
                    let from = if j == i { began } else { now };
                    r.drain_latency = Some(from.elapsed());
                }
            }
            break;
        }
        // Completion can be decided after the last exit: saturate to zero.
        let drain_latency = (joiner.alive() == 0).then(|| {
            joiner
                .last_exit()
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(triggered))
        });
        #[cfg(feature = "tracing")]
        match drain_latency {
            Some(d) => event!(info, drain_latency_ms = crate::event::ms(d), "drained"),
            None => event!(
                warn,
                stuck = joiner.alive(),
                "kill grace over: threads still running are detached"
            ),
        }
        (hard_stop, drain_latency, reports)
    }

    /// The thread ids of each stage: a later stage's are its units'; the
    /// first stage's are every other thread.
    fn stage_threads(&self, joiner: &Joiner) -> Vec<Vec<usize>> {
        let later = self.reg.shared.later_stage_threads();
        let in_later: std::collections::HashSet<usize> = later.iter().flatten().copied().collect();
        let first = (0..joiner.thread_count())
            .filter(|id| !in_later.contains(id))
            .collect();
        let mut ids = vec![first];
        ids.extend(later);
        ids
    }

    fn stage_source(&self, stage: usize) -> crate::token::StopSource {
        self.reg
            .shared
            .stage_source(stage)
            .expect("every stage of the plan has a source")
    }

    /// A later stage begins: its tokens stop with the trigger's reason, its
    /// units are woken and refuse new work.
    fn begin_stage(&self, stage: usize, reason: &StopReason) {
        event!(info, stage = %self.stages[stage].name, "stage begun");
        self.stage_source(stage).stop(reason.clone());
        for unit in &self.reg.shared.units_in(stage) {
            unit.on_trigger();
            unit.stop_accepting();
        }
    }

    fn release(&mut self) -> (Vec<HookReport>, Duration) {
        let start = Instant::now();
        let mut hooks = std::mem::take(&mut self.release_hooks);
        hooks.reverse();
        let reports = hooks::run_all(HookKind::Release, hooks);
        (reports, start.elapsed())
    }
}

/// The report's events: one per stuck thread, then the summary.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
fn log_outcome(report: &Report) {
    for s in &report.stuck {
        event!(
            warn,
            thread = %s.thread,
            pool = s.pool.as_deref().unwrap_or("-"),
            job_key = s.job_key.as_deref().unwrap_or("-"),
            in_job_ms = s.in_job.map(crate::event::ms),
            "thread stuck past the deadline: detached"
        );
    }
    event!(
        info,
        reason = %report.reason,
        exit_code = report.exit_code,
        total_ms = crate::event::ms(report.timings.total),
        summary = %report,
        "stopped"
    );
}

impl Drop for Runtime {
    /// A runtime dropped without [`run`](Runtime::run) still stops and
    /// joins every thread it started (within its deadline) and runs its
    /// release hooks: no thread is left behind.
    fn drop(&mut self) {
        if !self.finished {
            self.reg
                .shared
                .trigger(StopReason::Requested("runtime dropped without run".into()));
            let _ = self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The moment inside `Shared::trigger` between waking the workers and
    /// stopping the root, held open: the only worker has exited on its
    /// queue's disconnect, so the run has the shape of one that completed,
    /// yet the runtime's thread must not stop it as `Completed` — the
    /// trigger's own reason follows. (Run as a whole, the window is a few
    /// instructions wide; here it lasts `OBSERVE`.)
    #[test]
    fn workers_woken_by_a_trigger_in_progress_do_not_complete_the_run() {
        // How long nothing may happen. Not synchronisation: a wrong
        // completion would come within microseconds of the worker's exit.
        const OBSERVE: Duration = Duration::from_millis(200);
        let mut rt = Runtime::builder().signals(false).build().unwrap();
        let shared = rt.reg.shared.clone();
        let (exited_tx, exited) = crossbeam_channel::bounded::<()>(1);
        let pool = rt
            .pool::<u32>("idle")
            .start_with(
                move |_| Ok(Guard(Some(exited_tx.clone()))),
                |_: &mut Guard, _, _| Ok(()),
            )
            .unwrap();
        let runner = std::thread::spawn(move || rt.run());
        // The first half of `trigger`, by hand.
        shared.wake_first_stage();
        // The worker's state drops as it exits.
        exited
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker exits on the disconnect");
        std::thread::sleep(OBSERVE);
        assert!(
            !shared.root.is_stopping(),
            "the runtime's thread stopped the run as {:?}",
            shared.root.token().reason()
        );
        assert!(shared.trigger(StopReason::Requested("enough".into())));
        let report = runner.join().unwrap();
        assert_eq!(report.reason, StopReason::Requested("enough".into()));
        drop(pool);
    }

    /// Says on its channel when it is dropped (on the worker's thread, as
    /// the worker exits).
    struct Guard(Option<crossbeam_channel::Sender<()>>);

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.try_send(());
            }
        }
    }
}
