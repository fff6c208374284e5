//! [`Runtime`] and its [`Builder`]: owns the pools, the background threads,
//! the hooks and the signal registration, and drives the lifecycle from the
//! trigger to the [`Report`].
//!
//! The drain join itself lives in `join.rs`; this file wires it in order:
//! wait for a trigger or completion → close every queue and run the
//! stop-accepting hooks → join against the deadline → release hooks →
//! report.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::Mutex;

use crate::error::BuildError;
use crate::hooks::{self, Hook};
use crate::join::{Joiner, ThreadEntry, ThreadKind};
use crate::phase::{Phase, PhaseCell};
use crate::pool::{PoolBuilder, PoolControl};
use crate::reason::Signal;
use crate::report::{ExitCodes, HookKind, Report, ThreadOutcome, ThreadReport, Timings};
use crate::signal::{self, Registration, SignalConfig, SignalTarget};
use crate::thread::{self, catch};
use crate::token::{StopReason, StopSource, Token};

/// Something the runtime stops and reports on besides pools and background
/// threads (the HTTP server). Its threads are spawned through the runtime, so
/// they are joined in the same drain.
pub(crate) trait Component: Send + Sync {
    /// Called in `StopAccepting`, right after the queues closed and before
    /// the stop-accepting hooks.
    fn stop_accepting(&self);
    /// Called once the report is built, before the exit code is computed.
    fn finish(&self, report: &mut Report);
}

/// The default drain deadline: trigger → hard stop.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// The default kill grace: hard stop → stuck threads are named and detached.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(1);
/// The default budget of a hook registered without one.
pub const DEFAULT_HOOK_BUDGET: Duration = Duration::from_secs(5);

// ===== Shared =====

/// What the runtime shares with its handles, workers and the signal router.
#[derive(Debug)]
pub(crate) struct Shared {
    phase: PhaseCell,
    /// The root of the token tree; every pool's queue and every token
    /// handed out hangs below it.
    root: StopSource,
    /// The pools, whose queues the trigger itself disconnects (see
    /// `trigger`).
    trigger_pools: TriggerPools,
}

/// The pools, held weakly (the runtime owns them), for the trigger.
#[derive(Default)]
struct TriggerPools(Mutex<Vec<Weak<dyn PoolControl>>>);

impl fmt::Debug for TriggerPools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TriggerPools({})", self.0.lock().len())
    }
}

impl Shared {
    /// The one trigger path (signal, request, fail-fast, completion, drop).
    /// Returns `true` if this call began the stop; the first reason wins.
    pub(crate) fn trigger(&self, reason: StopReason) -> bool {
        // Stopping the root first publishes the reason and the trigger time
        // (under the root's lock) before the phase word says so, so an
        // observer of `StopAccepting` always finds both.
        if !self.root.stop(reason) {
            return false;
        }
        let moved = self.phase.advance(Phase::Running, Phase::StopAccepting);
        debug_assert!(moved, "only the first trigger leaves Running");
        // Idle workers block in a plain `recv` (the cheapest wait per job);
        // disconnecting their channels here wakes them without waiting for
        // the runtime's thread to wake up and close the queues. Each try is
        // non-blocking and gives way to a submit in flight, after which the
        // runtime's `close` (always called) disconnects.
        for pool in self.trigger_pools.0.lock().iter().filter_map(Weak::upgrade) {
            pool.try_disconnect();
        }
        true
    }
}

impl SignalTarget for Shared {
    fn signal_trigger(&self, sig: Signal) -> bool {
        self.trigger(StopReason::Signal(sig))
    }
}

// ===== Handle =====

/// A cloneable, `Send + Sync` handle to a runtime: request the stop, watch
/// the phase, get tokens. Valid after the runtime is gone (it then reports
/// `Done`... or whatever phase the runtime last reached).
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Requests a graceful stop with `message` as the reason. Returns `true`
    /// if this call began the stop, `false` if one was already under way (a
    /// request during the stop changes nothing).
    pub fn request(&self, message: impl Into<String>) -> bool {
        self.trigger(StopReason::Requested(message.into()))
    }

    pub(crate) fn trigger(&self, reason: StopReason) -> bool {
        self.shared.trigger(reason)
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
}

// ===== Builder =====

type PhaseFn = Arc<dyn Fn(Phase) + Send + Sync>;

/// Configures a [`Runtime`].
///
/// ```
/// use std::time::Duration;
/// use winddown::Runtime;
///
/// let _rt = Runtime::builder()
///     .grace(Duration::from_secs(30))
///     .kill_grace(Duration::from_secs(2))
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
    forced_exit_code: Option<i32>,
    exit_codes: ExitCodes,
    on_phase: Option<PhaseFn>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Builder {
            grace,
            kill_grace,
            signals,
            signal_set,
            honor_ignored,
            force_exit,
            forced_exit_code,
            exit_codes,
            on_phase,
        } = self;
        f.debug_struct("Builder")
            .field("grace", grace)
            .field("kill_grace", kill_grace)
            .field("signals", signals)
            .field("signal_set", signal_set)
            .field("honor_ignored", honor_ignored)
            .field("force_exit", force_exit)
            .field("forced_exit_code", forced_exit_code)
            .field("exit_codes", exit_codes)
            .field("on_phase", &on_phase.as_ref().map(|_| "<closure>"))
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
            forced_exit_code: None,
            exit_codes: ExitCodes::default(),
            on_phase: None,
        }
    }
}

impl Builder {
    /// Sets the drain deadline, measured from the trigger. Default 10 s.
    ///
    /// Zero means "no drain": the hard token fires at once, in-flight jobs
    /// get the kill grace to notice, and queued jobs are handed back. A
    /// duration too large to add to the clock means "no deadline".
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets how long to wait after the hard token fired before naming and
    /// detaching the threads still running. Default 1 s; zero names them at
    /// once.
    pub fn kill_grace(mut self, kill_grace: Duration) -> Self {
        self.kill_grace = kill_grace;
        self
    }

    /// Whether to route signals (by default SIGINT, SIGTERM and SIGHUP;
    /// Ctrl-C on Windows) to this runtime. Default `true`. Each signal is
    /// hooked once per process, by the first runtime that asks for it, and
    /// stays hooked until the process ends.
    pub fn signals(mut self, signals: bool) -> Self {
        self.signals = signals;
        self
    }

    /// Sets the signals routed to this runtime. Default
    /// [`Signal::DEFAULT_SET`]; an empty set means no signals, as
    /// `signals(false)`. A signal outside the set keeps its disposition,
    /// unless an earlier runtime in the process hooked it (a hook cannot be
    /// undone; this runtime then does not receive it). Off Unix only
    /// [`Signal::Interrupt`] is delivered.
    pub fn handle_signals(mut self, signals: impl IntoIterator<Item = Signal>) -> Self {
        self.signal_set = signals.into_iter().collect();
        self
    }

    /// Whether a signal the process inherited as ignored (`nohup`,
    /// `trap '' HUP`) stays ignored. Default `true`: such a signal is
    /// neither hooked nor routed. `false` hooks it anyway. The inherited
    /// set is read once, before the first hook in the process (on Linux;
    /// elsewhere nothing counts as inherited ignored).
    pub fn honor_ignored_signals(mut self, honor: bool) -> Self {
        self.honor_ignored = honor;
        self
    }

    /// Whether a second distinct signal ends the process at once with the
    /// [forced exit code](Builder::forced_exit_code). Default `true`.
    ///
    /// Signals are counted per process from the moment this runtime is
    /// built: the first one begins the graceful stop, or does nothing if a
    /// stop begun by code, completion or fail-fast is under way; the second
    /// ends the process — also after `run` returned. With `false`, no
    /// signal ever ends the process, until a new runtime is built.
    pub fn force_exit_on_second_signal(mut self, force_exit: bool) -> Self {
        self.force_exit = force_exit;
        self
    }

    /// Sets the exit code of the forced exit on a second signal. Default
    /// [`ExitCodes::forced`] of the [exit codes](Builder::exit_codes), 3.
    pub fn forced_exit_code(mut self, code: i32) -> Self {
        self.forced_exit_code = Some(code);
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

    /// Builds the runtime and, if asked, registers it for signals.
    ///
    /// # Errors
    ///
    /// [`BuildError::Signals`] if signal handling could not be installed
    /// (the OS refused, or off Unix another `ctrlc` handler owns the
    /// process).
    pub fn build(self) -> Result<Runtime, BuildError> {
        let shared = Arc::new(Shared {
            phase: PhaseCell::default(),
            root: StopSource::new(),
            trigger_pools: TriggerPools::default(),
        });
        let registration = if self.signals && !self.signal_set.is_empty() {
            let config = SignalConfig {
                set: self.signal_set,
                honor_ignored: self.honor_ignored,
                force_exit: self.force_exit,
                forced_exit_code: self.forced_exit_code.unwrap_or(self.exit_codes.forced),
            };
            let target = Arc::downgrade(&shared) as Weak<dyn SignalTarget>;
            Some(signal::register(target, &config)?)
        } else {
            None
        };
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Ok(Runtime {
            shared,
            grace: self.grace,
            kill_grace: self.kill_grace,
            exit_codes: self.exit_codes,
            on_phase: self.on_phase,
            started: Instant::now(),
            pools: Vec::new(),
            threads: Vec::new(),
            names: HashSet::new(),
            done_tx: Some(done_tx),
            done_rx,
            stop_hooks: Vec::new(),
            release_hooks: Vec::new(),
            components: Vec::new(),
            registration,
            finished: false,
        })
    }
}

// ===== Runtime =====

/// One graceful-shutdown controller: pools, background threads, hooks and
/// (optionally) signal handling, driven from start to [`Report`] by
/// [`run`](Runtime::run).
///
/// See the [crate docs](crate) for the lifecycle and a full example.
pub struct Runtime {
    shared: Arc<Shared>,
    grace: Duration,
    kill_grace: Duration,
    exit_codes: ExitCodes,
    on_phase: Option<PhaseFn>,
    started: Instant,
    pools: Vec<Arc<dyn PoolControl>>,
    /// Indexed by thread id; ids are never reused.
    threads: Vec<ThreadEntry>,
    names: HashSet<String>,
    /// The runtime's own clone of the done sender, given to each spawned
    /// thread; dropped when the run begins, so disconnect means all exited.
    done_tx: Option<Sender<usize>>,
    done_rx: Receiver<usize>,
    stop_hooks: Vec<Hook>,
    release_hooks: Vec<Hook>,
    components: Vec<Arc<dyn Component>>,
    registration: Option<Registration>,
    /// Set once `shutdown` has run; `Drop` then has nothing to do.
    finished: bool,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("phase", &self.shared.phase.get())
            .field("pools", &self.pools.len())
            .field("threads", &self.threads.len())
            .field("grace", &self.grace)
            .field("kill_grace", &self.kill_grace)
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
        PoolBuilder::new(self, name.into())
    }

    /// Spawns a background thread named `name` that runs `f(token)` — a
    /// loop such as "flush metrics every 5 s until told to stop". It is
    /// joined in the same drain as the pools; an `Err` or a panic is
    /// recorded in the report.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidName`], [`BuildError::DuplicateName`],
    /// [`BuildError::Stopping`], [`BuildError::Spawn`].
    pub fn spawn<F>(&mut self, name: impl Into<String>, f: F) -> Result<(), BuildError>
    where
        F: FnOnce(Token) -> anyhow::Result<()> + Send + 'static,
    {
        let name = name.into();
        self.check_new_name(&name)?;
        let id = self.reserve_thread(name.clone(), ThreadKind::Background(Arc::default()));
        let token = self.token();
        let ThreadKind::Background(outcome) = &self.threads[id].kind else {
            unreachable!("reserved as background just above")
        };
        let outcome = outcome.clone();
        let body = move || {
            let result = match catch(|| f(token)) {
                Ok(Ok(())) => ThreadOutcome::Returned,
                Ok(Err(e)) => ThreadOutcome::Failed(format!("{e:#}")),
                Err(panic) => ThreadOutcome::Panicked(panic),
            };
            *outcome.lock() = Some(result);
        };
        let handle = self
            .spawn_thread(id, None, body)
            .map_err(BuildError::Spawn)?;
        self.threads[id].started(handle);
        Ok(())
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

    /// Returns a handle for requesting the stop and watching the phase from
    /// other threads.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Returns a token that stops when the runtime begins to stop.
    pub fn token(&self) -> Token {
        self.shared.root.token()
    }

    /// Requests a graceful stop; see [`Handle::request`].
    pub fn request(&self, message: impl Into<String>) -> bool {
        self.handle().request(message)
    }

    /// Returns the current phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase.get()
    }

    /// Runs until a trigger (signal, request, fail-fast) or until the work
    /// completes by itself, then stops in order and returns the report.
    ///
    /// Blocks the calling thread throughout; every wait is on a channel or a
    /// deadline, never a sleep loop. Returns within grace + kill grace + the
    /// hook budgets after the trigger, whatever the jobs do.
    pub fn run(mut self) -> Report {
        self.shutdown()
    }

    // ----- crate-internal plumbing for pools -----

    pub(crate) fn check_new_name(&mut self, name: &str) -> Result<(), BuildError> {
        if self.shared.root.is_stopping() {
            return Err(BuildError::Stopping);
        }
        if name.is_empty() || name.contains('\0') {
            return Err(BuildError::InvalidName(name.to_owned()));
        }
        if !self.names.insert(name.to_owned()) {
            return Err(BuildError::DuplicateName(name.to_owned()));
        }
        Ok(())
    }

    /// Adds a not-yet-started entry and returns its id.
    pub(crate) fn reserve_thread(&mut self, name: String, kind: ThreadKind) -> usize {
        self.threads.push(ThreadEntry::new(name, kind));
        self.threads.len() - 1
    }

    pub(crate) fn spawn_thread(
        &mut self,
        id: usize,
        stack_size: Option<usize>,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let done = self
            .done_tx
            .clone()
            .expect("threads are spawned before the run");
        thread::spawn(self.threads[id].name.clone(), id, stack_size, done, body)
    }

    pub(crate) fn thread_started(&mut self, id: usize, handle: JoinHandle<()>) {
        self.threads[id].started(handle);
    }

    pub(crate) fn add_pool(&mut self, pool: Arc<dyn PoolControl>) {
        self.shared
            .trigger_pools
            .0
            .lock()
            .push(Arc::downgrade(&pool));
        self.pools.push(pool);
    }

    #[allow(dead_code)] // used by the `http` feature's server
    pub(crate) fn add_component(&mut self, component: Arc<dyn Component>) {
        self.components.push(component);
    }

    fn enter(&self, from: Phase, to: Phase) {
        if self.shared.phase.advance(from, to) {
            self.notify(to);
        }
    }

    fn notify(&self, phase: Phase) {
        if let Some(f) = &self.on_phase {
            let _ = catch(|| f(phase));
        }
    }

    /// The whole stop. Called by `run`, or by `Drop` if `run` never was;
    /// the `finished` flag makes the second call a no-op.
    fn shutdown(&mut self) -> Report {
        debug_assert!(!self.finished);
        self.finished = true;
        drop(self.done_tx.take());
        let mut joiner = Joiner::new(std::mem::take(&mut self.threads), self.done_rx.clone());

        // Running: wait for a trigger, or for the work to complete.
        let stop = self.token();
        let has_pools = !self.pools.is_empty();
        loop {
            let complete = if has_pools {
                joiner.workers_alive() == 0
            } else {
                joiner.alive() == 0
            };
            if complete {
                self.shared.trigger(StopReason::Completed);
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

        // StopAccepting: close every queue. Blocked submits have already
        // been woken through the token tree; closing waits for them to
        // return their jobs and then disconnects the channels.
        self.notify(Phase::StopAccepting);
        for pool in &self.pools {
            pool.close();
        }
        for c in &self.components {
            c.stop_accepting();
        }
        let mut hook_reports = hooks::run_all(
            HookKind::StopAccepting,
            std::mem::take(&mut self.stop_hooks),
        );

        // Draining → (HardStop) → all exited or given up on.
        self.enter(Phase::StopAccepting, Phase::Draining);
        let deadline = triggered.checked_add(self.grace);
        joiner.wait_until(deadline);
        let mut hard_stop = None;
        if joiner.alive() > 0 {
            self.enter(Phase::Draining, Phase::HardStop);
            self.shared.root.stop_hard(reason.clone());
            let hard_at = Instant::now();
            hard_stop = Some(hard_at - triggered);
            joiner.wait_until(hard_at.checked_add(self.kill_grace));
        }
        // Completion can be decided after the last exit: saturate to zero.
        let drain_latency = (joiner.alive() == 0).then(|| {
            joiner
                .last_exit()
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(triggered))
        });

        // Seal the pools (stragglers' jobs become "abandoned") and hand back
        // what is left in the queues.
        let now = Instant::now();
        let mut stuck = Vec::new();
        let pools = self
            .pools
            .iter()
            .map(|p| {
                let (report, s) = p.finish(&|id| joiner.is_alive(id), now);
                stuck.extend(s);
                report
            })
            .collect();
        // Releasing: last registered first, each exactly once.
        let from = if hard_stop.is_some() {
            Phase::HardStop
        } else {
            Phase::Draining
        };
        self.enter(from, Phase::Releasing);
        let release_start = Instant::now();
        let mut release_hooks = std::mem::take(&mut self.release_hooks);
        release_hooks.reverse();
        hook_reports.extend(hooks::run_all(HookKind::Release, release_hooks));
        let release = release_start.elapsed();

        // Join last: every thread has already left its loop (it reported on
        // the done channel), so what remains is the OS tearing threads down,
        // which overlapped the release hooks. `run` still returns only with
        // every thread joined or detached.
        let (threads, bg_stuck) = joiner.join_and_detach(now);
        stuck.extend(bg_stuck);
        let join = Instant::now() - triggered;

        self.enter(Phase::Releasing, Phase::Done);
        drop(self.registration.take());
        let mut report = Report {
            reason,
            timings: Timings {
                started: self.started,
                triggered,
                drain_latency,
                join,
                hard_stop,
                release,
                total: Instant::now() - triggered,
            },
            pools,
            threads,
            stuck,
            hooks: hook_reports,
            #[cfg(feature = "http")]
            servers: Vec::new(),
            exit_code: 0,
        };
        for c in &self.components {
            c.finish(&mut report);
        }
        report.exit_code = report.compute_exit_code(self.exit_codes);
        report
    }
}

impl Drop for Runtime {
    /// A runtime dropped without [`run`](Runtime::run) still stops and
    /// joins every thread it started (within its deadline) and runs its
    /// release hooks: no thread is left behind.
    fn drop(&mut self) {
        if !self.finished {
            self.shared
                .trigger(StopReason::Requested("runtime dropped without run".into()));
            let _ = self.shutdown();
        }
    }
}

/// Background threads' outcomes, shared between the thread and the joiner.
pub(crate) type OutcomeSlot = Arc<Mutex<Option<ThreadOutcome>>>;

pub(crate) fn background_report(name: &str, slot: &OutcomeSlot, stuck: bool) -> ThreadReport {
    ThreadReport {
        name: name.to_owned(),
        outcome: if stuck {
            ThreadOutcome::Stuck
        } else {
            slot.lock().clone().unwrap_or(ThreadOutcome::Panicked(
                "thread ended without an outcome".into(),
            ))
        },
    }
}
