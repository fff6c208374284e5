//! The process-wide signal router: which signals are hooked, how deliveries
//! are counted, and when a delivery ends the process.
//!
//! # What is installed
//!
//! On Unix each signal a runtime asks for is hooked once per process with
//! `signal-hook`'s safe iterator API, and every delivery is read on one
//! thread, `winddown-signals`, spawned by the first registration that hooks
//! anything. Signals nobody asked for keep their disposition: with no
//! runtime ever registered, nothing is installed at all. Elsewhere (Windows)
//! only [`Signal::Interrupt`] exists, through `ctrlc` (Ctrl-C, Ctrl-Break).
//!
//! * **Hooking cannot be undone.** `signal-hook` cannot give back the old
//!   disposition, so a signal hooked for one runtime stays hooked until the
//!   process ends. A later runtime whose set does not hold that signal
//!   simply does not receive it (the delivery is still counted, below).
//! * **Inherited ignores are honoured.** At the first registration in the
//!   process, before anything is installed, the router reads which signals
//!   the process inherited as ignored (`nohup`, `trap '' HUP`) and caches
//!   that set for the life of the process: once a handler is installed the
//!   information is gone. A registration with `honor_ignored` neither hooks
//!   nor receives such a signal. The set is read from `/proc/self/status`
//!   (`SigIgn:`) on Linux and Android; other platforms have no way to read
//!   it without `unsafe`, and there every signal counts as not ignored.
//! * **The handler cannot die.** The routing runs under `catch_unwind`: a
//!   panic is printed and the thread goes on listening.
//!
//! # The rule
//!
//! Deliveries are counted per process. A repeat of the same signal within
//! [`DUPLICATE_WINDOW`] of the previous *distinct* delivery of that signal
//! is a duplicate (supervisors such as coreutils `timeout`, init systems and
//! shells signal the child and its process group: the same signal twice,
//! microseconds apart): it is counted apart, for diagnostics, and otherwise
//! ignored. On a distinct delivery of `sig`, every live target whose set
//! holds `sig` is asked to begin its graceful stop:
//!
//! | the delivery | outcome |
//! | --- | --- |
//! | a signal nobody asks for (below) | nothing, not counted |
//! | a duplicate (same signal within the window) | nothing, counted apart |
//! | a target was running: this call began its stop | graceful stop, `StopReason::Signal(sig)` |
//! | no target began a stop, 1st distinct delivery since the last `register` | nothing (the program decides) |
//! | no target began a stop, 2nd or later, force-exit on | `exit(forced_exit_code)` at once |
//! | no target began a stop, 2nd or later, force-exit off | nothing |
//!
//! "No target began a stop" covers every target already stopping or done,
//! and no target registered (after the last runtime's `run` returned). A
//! signal hooked for an earlier runtime that neither a live target nor the
//! last registration asked for (say SIGHUP, hooked by a runtime built with
//! `honor_ignored` off, then a runtime that honours `nohup`) is left alone:
//! not routed, not counted.
//!
//! [`register`] resets the count to zero and sets the process's force-exit
//! policy and forced exit code from its config: the opt-out holds until the
//! process ends or a new runtime starts. So a stop begun by code, by
//! completion or by fail-fast does not count as a signal: the first signal
//! during it is nothing, the second ends the process. After the last runtime
//! deregistered the same rule goes on: signals are still counted; with
//! force-exit on the second distinct one exits, with it off nothing ever
//! does.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::InstallError;
use crate::reason::Signal;
use crate::thread::catch;

/// How close a repeat of the same signal must follow its previous distinct
/// delivery to count as the same delivery. 100 ms: far above the
/// microseconds between `kill(pid)` and `kill(-pgid)` from a supervisor,
/// far below a human pressing Ctrl-C twice.
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_millis(100);

/// The exit code of the forced exit on a second signal: distinct from 130
/// (a clean signal stop) and from 2 (clap's usage error).
pub(crate) const DEFAULT_FORCED_EXIT_CODE: i32 = 3;

/// What a signal is routed to: a runtime, without the router knowing it.
pub(crate) trait SignalTarget: Send + Sync {
    /// Begins the graceful stop with `StopReason::Signal(sig)` if still
    /// running; `true` if this call began it.
    fn signal_trigger(&self, sig: Signal) -> bool;
}

/// One registration's wishes.
#[derive(Clone, Debug)]
pub(crate) struct SignalConfig {
    /// The signals to receive (order and repeats do not matter).
    pub(crate) set: Vec<Signal>,
    /// Leave alone the signals the process inherited as ignored.
    pub(crate) honor_ignored: bool,
    /// Whether a second signal ends the process (process-wide from
    /// `register` on).
    pub(crate) force_exit: bool,
    /// The exit code of that forced exit.
    pub(crate) forced_exit_code: i32,
}

// ===== Router =====

/// A registered target and the signals it receives.
struct Entry {
    /// The registration's id, for `Drop`.
    id: u64,
    /// The runtime, held weakly: the router never keeps one alive.
    target: Weak<dyn SignalTarget>,
    /// Its set after honouring ignores.
    receives: Vec<Signal>,
}

/// The router's state, one per process behind `ROUTER`.
struct Router {
    /// The next registration's id.
    next_id: u64,
    /// The live registrations.
    entries: Vec<Entry>,
    /// Force-exit policy, from the last `register`.
    force_exit: bool,
    /// Forced exit code, from the last `register`.
    forced_exit_code: i32,
    /// What the last `register` receives: with no live target asking for
    /// a signal outside it, that signal is left alone (not counted).
    policy_set: Vec<Signal>,
    /// Distinct deliveries since the last `register`.
    deliveries: u64,
    /// Duplicates ignored over the life of the process.
    duplicates: u64,
    /// The time of each signal's last distinct delivery (by `slot`).
    last: [Option<Instant>; Signal::ALL.len()],
    /// The signals hooked in this process (never unhooked).
    hooked: Vec<Signal>,
    /// The listener thread's control handle, once spawned.
    #[cfg(unix)]
    listener: Option<signal_hook::iterator::Handle>,
}

/// What a delivery came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The same signal within the window: ignored.
    Duplicate,
    /// A hooked signal that neither a live target nor the last
    /// registration asked for: left alone, not counted.
    Unwanted,
    /// A target began its graceful stop.
    Triggered,
    /// Counted; nothing else (first signal, or force-exit off).
    Counted,
    /// A second signal with force-exit on: exit with this code.
    Exit(i32),
}

impl Router {
    const fn new() -> Router {
        Router {
            next_id: 0,
            entries: Vec::new(),
            force_exit: true,
            forced_exit_code: DEFAULT_FORCED_EXIT_CODE,
            policy_set: Vec::new(),
            deliveries: 0,
            duplicates: 0,
            last: [None; Signal::ALL.len()],
            hooked: Vec::new(),
            #[cfg(unix)]
            listener: None,
        }
    }

    /// Adds a target, resets the count and takes the config's policy.
    fn add(
        &mut self,
        target: Weak<dyn SignalTarget>,
        config: &SignalConfig,
        receives: Vec<Signal>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.policy_set.clone_from(&receives);
        self.entries.push(Entry {
            id,
            target,
            receives,
        });
        self.deliveries = 0;
        self.force_exit = config.force_exit;
        self.forced_exit_code = config.forced_exit_code;
        id
    }

    fn remove(&mut self, id: u64) {
        self.entries.retain(|e| e.id != id);
    }
}

/// The index of `sig` in `Router::last`.
fn slot(sig: Signal) -> usize {
    Signal::ALL
        .iter()
        .position(|s| *s == sig)
        .expect("Signal::ALL holds every signal")
}

/// Applies the rule (module docs) to a delivery of `sig` at `now`. The
/// targets are called outside the lock.
fn route(router: &Mutex<Router>, sig: Signal, now: Instant) -> Outcome {
    let (targets, nth, force_exit, code) = {
        let mut r = router.lock();
        let wanted =
            r.policy_set.contains(&sig) || r.entries.iter().any(|e| e.receives.contains(&sig));
        if !wanted {
            return Outcome::Unwanted;
        }
        let last = &mut r.last[slot(sig)];
        if last.is_some_and(|prev| now.saturating_duration_since(prev) < DUPLICATE_WINDOW) {
            r.duplicates += 1;
            return Outcome::Duplicate;
        }
        *last = Some(now);
        r.deliveries += 1;
        let targets: Vec<Arc<dyn SignalTarget>> = r
            .entries
            .iter()
            .filter(|e| e.receives.contains(&sig))
            .filter_map(|e| e.target.upgrade())
            .collect();
        (targets, r.deliveries, r.force_exit, r.forced_exit_code)
    };
    // Every target hears it, even after one began its stop.
    let began = targets
        .iter()
        .fold(false, |began, t| t.signal_trigger(sig) | began);
    if began {
        Outcome::Triggered
    } else if nth >= 2 && force_exit {
        Outcome::Exit(code)
    } else {
        Outcome::Counted
    }
}

static ROUTER: Mutex<Router> = Mutex::new(Router::new());

/// The listener's body for one delivery: route it, exit if the rule says
/// so; a panic is reported and the listener goes on.
fn deliver(sig: Signal) {
    match catch(|| route(&ROUTER, sig, Instant::now())) {
        Ok(Outcome::Exit(code)) => {
            event!(
                error,
                signal = sig.name(),
                code,
                "second signal: exiting now, without the report"
            );
            force_exit(sig, code)
        }
        Ok(Outcome::Triggered) => {
            event!(
                warn,
                signal = sig.name(),
                number = sig.number(),
                "signal received: stopping gracefully"
            );
        }
        Ok(Outcome::Counted) => {
            event!(
                info,
                signal = sig.name(),
                number = sig.number(),
                "signal received while a stop is under way: nothing more to do"
            );
        }
        Ok(Outcome::Duplicate) => {
            event!(
                debug,
                signal = sig.name(),
                "the same signal again within 100 ms: counted once"
            );
        }
        Ok(Outcome::Unwanted) => {
            event!(
                debug,
                signal = sig.name(),
                "signal no runtime asks for: left alone"
            );
        }
        Err(panic) => {
            event!(error, signal = sig.name(), panic = %panic, "the signal handler panicked; still listening");
            eprintln!("winddown: the signal handler panicked ({panic}); still listening");
        }
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the second signal ends the process: design invariant 5"
)]
fn force_exit(sig: Signal, code: i32) -> ! {
    eprintln!("winddown: second signal ({sig}), exiting now");
    std::process::exit(code)
}

// ===== Installing =====

/// Hooks `sig` for the process, spawning the listener on first use; a no-op
/// if it is hooked already.
#[cfg(unix)]
fn hook(router: &mut Router, sig: Signal) -> Result<(), InstallError> {
    if router.hooked.contains(&sig) {
        return Ok(());
    }
    let handle = match &router.listener {
        Some(handle) => handle.clone(),
        None => {
            let mut signals = signal_hook::iterator::Signals::new(std::iter::empty::<i32>())
                .map_err(InstallError::Platform)?;
            let handle = signals.handle();
            std::thread::Builder::new()
                .name("winddown-signals".into())
                .spawn(move || {
                    for number in signals.forever() {
                        if let Some(sig) = Signal::from_number(number) {
                            deliver(sig);
                        }
                    }
                })
                .map_err(InstallError::Platform)?;
            router.listener = Some(handle.clone());
            handle
        }
    };
    handle
        .add_signal(sig.number())
        .map_err(InstallError::Platform)?;
    router.hooked.push(sig);
    Ok(())
}

/// Installs the process's one `ctrlc` handler on first use (Ctrl-C and
/// Ctrl-Break are [`Signal::Interrupt`]).
#[cfg(not(unix))]
fn hook(router: &mut Router, sig: Signal) -> Result<(), InstallError> {
    if router.hooked.contains(&sig) {
        return Ok(());
    }
    ctrlc::set_handler(|| deliver(Signal::Interrupt)).map_err(|e| match e {
        ctrlc::Error::MultipleHandlers => InstallError::HandlerTaken,
        ctrlc::Error::System(e) => InstallError::Platform(e),
        e => InstallError::Platform(std::io::Error::other(e.to_string())),
    })?;
    router.hooked.push(sig);
    Ok(())
}

/// The signals a registration with `config` receives: its set without
/// repeats, without what the platform cannot deliver and, if it honours
/// them, without the inherited ignores.
fn receivable(config: &SignalConfig, inherited: &[Signal]) -> Vec<Signal> {
    let mut out: Vec<Signal> = Vec::new();
    for &sig in &config.set {
        let deliverable = cfg!(unix) || sig == Signal::Interrupt;
        let ignored = config.honor_ignored && inherited.contains(&sig);
        if deliverable && !ignored && !out.contains(&sig) {
            out.push(sig);
        }
    }
    out
}

/// Registers `target` for the signals of `config` (hooking those not hooked
/// yet), resets the delivery count and sets the process's force-exit policy.
///
/// # Errors
///
/// [`InstallError::Platform`] if a signal could not be hooked or the
/// listener not spawned (signals hooked before the failure stay hooked);
/// [`InstallError::HandlerTaken`] off Unix if `ctrlc`'s handler is taken.
/// On an error nothing is registered and the count is not reset.
pub(crate) fn register(
    target: Weak<dyn SignalTarget>,
    config: &SignalConfig,
) -> Result<Registration, InstallError> {
    // Read (and cache) the inherited ignores before anything is installed.
    let inherited = inherited_ignored();
    let receives = receivable(config, &inherited);
    let mut router = ROUTER.lock();
    for &sig in &receives {
        hook(&mut router, sig)?;
    }
    let id = router.add(target, config, receives.clone());
    event!(
        debug,
        signals = ?receives.iter().map(|s| s.name()).collect::<Vec<_>>(),
        force_exit = config.force_exit,
        "signal handling registered"
    );
    for sig in &config.set {
        if config.honor_ignored && inherited.contains(sig) {
            event!(
                info,
                signal = sig.name(),
                "signal inherited as ignored (nohup, trap ''): left ignored"
            );
        }
    }
    Ok(Registration {
        id,
        hooked: receives,
    })
}

/// Keeps a target registered; dropping it deregisters the target (the
/// signals stay hooked, and the count and policy stay as they are).
#[derive(Debug)]
pub(crate) struct Registration {
    /// The entry's id in the router.
    id: u64,
    /// What this registration receives.
    hooked: Vec<Signal>,
}

impl Registration {
    /// The signals this registration actually receives, after honouring
    /// the inherited ignores.
    pub(crate) fn hooked(&self) -> Vec<Signal> {
        self.hooked.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        ROUTER.lock().remove(self.id);
    }
}

/// Distinct deliveries since the last [`register`].
#[allow(
    dead_code,
    reason = "diagnostics: the unit tests now, the report later"
)]
pub(crate) fn deliveries() -> u64 {
    ROUTER.lock().deliveries
}

/// Duplicate deliveries ignored over the life of the process.
#[allow(
    dead_code,
    reason = "diagnostics: the unit tests now, the report later"
)]
pub(crate) fn duplicates() -> u64 {
    ROUTER.lock().duplicates
}

// ===== Inherited ignores =====

/// The signals the process had as ignored when it was first asked (which
/// [`register`] does before installing anything), cached for the life of
/// the process. Empty where it cannot be read (see the module docs).
pub(crate) fn inherited_ignored() -> Vec<Signal> {
    static INHERITED: OnceLock<Vec<Signal>> = OnceLock::new();
    INHERITED.get_or_init(read_ignored).clone()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_ignored() -> Vec<Signal> {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| parse_sig_ign(&status))
        .unwrap_or_default()
}

/// No safe way to read a disposition here: nothing counts as ignored.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_ignored() -> Vec<Signal> {
    Vec::new()
}

/// The known signals in the `SigIgn:` line of a `/proc/<pid>/status` text:
/// a hex mask where bit `n - 1` is signal `n`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn parse_sig_ign(status: &str) -> Vec<Signal> {
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    Signal::ALL
        .into_iter()
        .filter(|s| mask & (1u64 << (s.number() - 1)) != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A target that is running until its first trigger.
    #[derive(Default)]
    struct Fake {
        stopped: AtomicBool,
        calls: AtomicUsize,
    }

    impl SignalTarget for Fake {
        fn signal_trigger(&self, _sig: Signal) -> bool {
            self.calls.fetch_add(1, Ordering::SeqCst);
            !self.stopped.swap(true, Ordering::SeqCst)
        }
    }

    fn config(force_exit: bool) -> SignalConfig {
        SignalConfig {
            set: Signal::DEFAULT_SET.to_vec(),
            honor_ignored: true,
            force_exit,
            forced_exit_code: 7,
        }
    }

    fn add(router: &Mutex<Router>, fake: &Arc<Fake>, config: &SignalConfig) -> u64 {
        let weak = Arc::downgrade(fake) as Weak<dyn SignalTarget>;
        router.lock().add(weak, config, config.set.clone())
    }

    const LATER: Duration = Duration::from_millis(300);

    #[test]
    fn first_signal_stops_gracefully_and_the_second_exits() {
        let router = Mutex::new(Router::new());
        let fake = Arc::new(Fake::default());
        add(&router, &fake, &config(true));
        let t0 = Instant::now();
        assert_eq!(route(&router, Signal::Terminate, t0), Outcome::Triggered);
        assert_eq!(
            route(&router, Signal::Terminate, t0 + LATER),
            Outcome::Exit(7)
        );
    }

    #[test]
    fn a_repeat_within_the_window_is_one_delivery() {
        let router = Mutex::new(Router::new());
        let fake = Arc::new(Fake::default());
        add(&router, &fake, &config(true));
        let t0 = Instant::now();
        assert_eq!(route(&router, Signal::Interrupt, t0), Outcome::Triggered);
        let dup = t0 + DUPLICATE_WINDOW - Duration::from_millis(1);
        assert_eq!(route(&router, Signal::Interrupt, dup), Outcome::Duplicate);
        assert_eq!(router.lock().deliveries, 1);
        assert_eq!(router.lock().duplicates, 1);
        // Another signal is not a repeat; nor is the same one after the window.
        assert_eq!(route(&router, Signal::Hangup, dup), Outcome::Exit(7));
        let r2 = Mutex::new(Router::new());
        add(&r2, &fake, &config(false));
        assert_eq!(route(&r2, Signal::Interrupt, t0), Outcome::Counted);
        assert_eq!(
            route(&r2, Signal::Interrupt, t0 + DUPLICATE_WINDOW),
            Outcome::Counted
        );
        assert_eq!(r2.lock().deliveries, 2);
    }

    #[test]
    fn a_stop_not_begun_by_a_signal_makes_the_first_signal_nothing() {
        let router = Mutex::new(Router::new());
        let fake = Arc::new(Fake::default());
        add(&router, &fake, &config(true));
        fake.stopped.store(true, Ordering::SeqCst); // stopped by code
        let t0 = Instant::now();
        assert_eq!(route(&router, Signal::Terminate, t0), Outcome::Counted);
        assert_eq!(
            route(&router, Signal::Terminate, t0 + LATER),
            Outcome::Exit(7)
        );
    }

    #[test]
    fn with_force_exit_off_nothing_ever_exits_also_after_deregistering() {
        let router = Mutex::new(Router::new());
        let fake = Arc::new(Fake::default());
        let id = add(&router, &fake, &config(false));
        let t0 = Instant::now();
        assert_eq!(route(&router, Signal::Terminate, t0), Outcome::Triggered);
        router.lock().remove(id);
        for i in 1..5 {
            assert_eq!(
                route(&router, Signal::Terminate, t0 + LATER * i),
                Outcome::Counted
            );
        }
    }

    #[test]
    fn after_the_last_runtime_the_count_goes_on() {
        let router = Mutex::new(Router::new());
        let fake = Arc::new(Fake::default());
        let id = add(&router, &fake, &config(true));
        fake.stopped.store(true, Ordering::SeqCst); // completed
        router.lock().remove(id);
        drop(fake);
        let t0 = Instant::now();
        assert_eq!(route(&router, Signal::Interrupt, t0), Outcome::Counted);
        assert_eq!(
            route(&router, Signal::Interrupt, t0 + LATER),
            Outcome::Exit(7)
        );
    }

    #[test]
    fn a_new_registration_resets_the_count_and_takes_its_policy() {
        let router = Mutex::new(Router::new());
        let first = Arc::new(Fake::default());
        add(&router, &first, &config(true));
        let t0 = Instant::now();
        assert_eq!(route(&router, Signal::Terminate, t0), Outcome::Triggered);
        let second = Arc::new(Fake::default());
        add(&router, &second, &config(false));
        // The first is stopping, the second is running: a graceful trigger.
        assert_eq!(
            route(&router, Signal::Terminate, t0 + LATER),
            Outcome::Triggered
        );
        assert_eq!(first.calls.load(Ordering::SeqCst), 2, "both heard it");
        assert_eq!(
            route(&router, Signal::Terminate, t0 + LATER * 2),
            Outcome::Counted,
            "the second runtime opted out"
        );
    }

    #[test]
    fn a_target_receives_only_its_own_set() {
        let router = Mutex::new(Router::new());
        let fake = Arc::new(Fake::default());
        let only_term = SignalConfig {
            set: vec![Signal::Terminate],
            ..config(true)
        };
        add(&router, &fake, &only_term);
        let t0 = Instant::now();
        assert_eq!(route(&router, Signal::Hangup, t0), Outcome::Unwanted);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
        assert_eq!(route(&router, Signal::Terminate, t0), Outcome::Triggered);
    }

    #[test]
    fn a_hooked_signal_nobody_asks_for_any_more_is_not_counted() {
        let router = Mutex::new(Router::new());
        let old = Arc::new(Fake::default());
        let id = add(&router, &old, &config(true)); // INT, TERM, HUP
        router.lock().remove(id);
        let fake = Arc::new(Fake::default());
        let only_term = SignalConfig {
            set: vec![Signal::Terminate],
            ..config(true)
        };
        add(&router, &fake, &only_term);
        fake.stopped.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        assert_eq!(route(&router, Signal::Hangup, t0), Outcome::Unwanted);
        assert_eq!(
            route(&router, Signal::Hangup, t0 + LATER),
            Outcome::Unwanted
        );
        assert_eq!(route(&router, Signal::Terminate, t0), Outcome::Counted);
        assert_eq!(router.lock().deliveries, 1);
    }

    #[test]
    fn the_default_forced_code_is_the_exit_codes_default() {
        let codes = crate::report::ExitCodes::default();
        assert_eq!(codes.forced, DEFAULT_FORCED_EXIT_CODE);
        assert_ne!(codes.forced, codes.signal);
    }

    #[test]
    fn receivable_drops_repeats_and_honoured_ignores() {
        let mut c = config(true);
        c.set = vec![Signal::Hangup, Signal::Terminate, Signal::Hangup];
        let hup_ignored = [Signal::Hangup];
        assert_eq!(receivable(&c, &hup_ignored), [Signal::Terminate]);
        c.honor_ignored = false;
        if cfg!(unix) {
            assert_eq!(
                receivable(&c, &hup_ignored),
                [Signal::Hangup, Signal::Terminate]
            );
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_sig_ign_mask_is_parsed_bit_n_minus_one_for_signal_n() {
        let status = "Name:\tx\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000003\n";
        assert_eq!(parse_sig_ign(status), [Signal::Interrupt, Signal::Hangup]);
        assert_eq!(
            parse_sig_ign("SigIgn:\t0000000000000008\n"),
            [],
            "SIGILL: not ours"
        );
        assert_eq!(
            parse_sig_ign("SigIgn:\t0000000000004004\n"),
            [Signal::Terminate, Signal::Quit]
        );
        assert_eq!(parse_sig_ign("no such line"), []);
    }
}
