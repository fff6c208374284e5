//! systemd's notification protocol (`sd_notify(3)`), spoken by a runtime
//! whose process was started with `NOTIFY_SOCKET` set (a `Type=notify`
//! service), so that systemd knows when the program is ready, when it stops,
//! how long the stop may take, and that it is alive.
//!
//! # What is sent
//!
//! Each message is one datagram of `KEY=value` lines, sent from one thread
//! per runtime, `winddown-systemd`, to the socket named by `NOTIFY_SOCKET`:
//!
//! | when | message |
//! | --- | --- |
//! | [`Runtime::run`](crate::Runtime::run) begins (also when the stop began during start-up; `STOPPING` then follows at once) | `READY=1`, `MAINPID=<pid>`, `STATUS=running` |
//! | the trigger | `STOPPING=1`, `STATUS=stopping (<reason>)`, `EXTEND_TIMEOUT_USEC=<bound>` |
//! | entering `Draining`, `HardStop`, `Releasing` | `STATUS=<phase>`, `EXTEND_TIMEOUT_USEC=<bound>` |
//! | a stop with no bound, every [`UNBOUNDED_WINDOW`] / 2 | `EXTEND_TIMEOUT_USEC=<window>` |
//! | `run` is about to return | `STATUS=<the report's one-line summary>` (`stopped (<reason>); …`) |
//! | every `WATCHDOG_USEC` / 2 while the runtime lives, if asked | `WATCHDOG=1` |
//!
//! `<bound>` is how long, from the moment of sending, the rest of the stop
//! can take by the runtime's own guarantee (invariant 2, "no hang"), plus
//! [`EXTEND_MARGIN`] for what is not budgeted (joining, building the report,
//! spawning the hooks' threads):
//!
//! | from | bound |
//! | --- | --- |
//! | the trigger | the stop-accepting hooks' budgets + the grace left + kill grace + the release hooks' budgets |
//! | `Draining` | the grace left + kill grace + the release hooks' budgets |
//! | `HardStop` | what is left of the kill grace + the release hooks' budgets |
//! | `Releasing` | the release hooks' budgets |
//!
//! systemd only ever lengthens its stop timeout on `EXTEND_TIMEOUT_USEC`
//! (it never shortens `TimeoutStopSec=`), so a message that covers less than
//! the configured timeout is harmless. A stop without a bound (a grace or a
//! budget too large for the clock) is covered in windows of
//! [`UNBOUNDED_WINDOW`], re-sent at half the window for as long as the stop
//! runs: the notifier thread waits on its command channel with a deadline,
//! never in a sleep loop. Once a bounded stop has outlived its bound nothing
//! more is sent, and systemd's own timeout applies again.
//!
//! # The environment
//!
//! * `NOTIFY_SOCKET`: an absolute path (`/run/systemd/notify`), or on Linux
//!   an abstract name (`@name`). Anything else (empty, relative, `vsock:…`,
//!   an abstract name elsewhere than Linux, a path too long for a socket
//!   address) is ignored: nothing is sent and no thread is started.
//! * `WATCHDOG_USEC`: the watchdog interval in microseconds; `WATCHDOG=1`
//!   is sent every half of it. Unset, zero or not a number: no watchdog.
//! * `WATCHDOG_PID`: if set, the watchdog is ours only if it is our process
//!   id; another number or one that does not parse turns the watchdog off,
//!   as `sd_watchdog_enabled(3)` does.
//!
//! The variables are read once, when the runtime is built, and never unset:
//! changing the environment of a threaded program is unsound. So child
//! processes inherit them; a program that starts children should remove
//! them from each `Command` (`env_remove("NOTIFY_SOCKET")`), or rely on
//! `NotifyAccess=main` (systemd's default), which ignores messages from
//! other processes.
//!
//! # Failures
//!
//! A message that cannot be sent (no socket there, a full queue for
//! [`SEND_TIMEOUT`], the manager gone) is dropped; it never fails the run.
//! The socket is unbound and sends to the address each time, so a manager
//! that re-creates its socket keeps receiving.
//!
//! # Threads
//!
//! The notifier thread starts when the runtime is built (the watchdog runs
//! from then on), takes commands from the runtime's thread on a crossbeam
//! channel, and is joined when the stop is over, after the last message:
//! no thread is left behind. The runtime's thread never touches the socket,
//! so a slow manager never delays the stop by more than the messages queued
//! for it.
//!
//! Without the `systemd` feature, or off Unix, [`Notifier`] is a no-op.

// Without the feature (or off Unix) the protocol is still compiled, and
// unit-tested, but nothing calls it.
#![cfg_attr(not(all(unix, feature = "systemd")), allow(dead_code))]

use std::fmt;
use std::time::{Duration, Instant};

use crate::error::BuildError;
use crate::phase::Phase;
use crate::reason::StopReason;

/// Added to every `EXTEND_TIMEOUT_USEC` bound: the unbudgeted time between
/// the last hook and the end of `run` (joining, the report).
pub(crate) const EXTEND_MARGIN: Duration = Duration::from_secs(1);

/// How much one `EXTEND_TIMEOUT_USEC` covers when the stop has no bound; it
/// is re-sent at half of it.
pub(crate) const UNBOUNDED_WINDOW: Duration = Duration::from_secs(60);

/// How long one send may wait for room in the manager's queue before the
/// message is dropped.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_millis(100);

// ===== StopBudget =====

/// What the stop may take by the runtime's guarantee, fixed at the trigger.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StopBudget {
    /// When the stop was triggered.
    pub(crate) triggered: Instant,
    /// The runtime's grace (trigger → hard stop).
    pub(crate) grace: Duration,
    /// The runtime's kill grace (hard stop → stuck threads detached).
    pub(crate) kill_grace: Duration,
    /// The stop-accepting hooks' budgets, added up (saturating).
    pub(crate) stop_hooks: Duration,
    /// The release hooks' budgets, added up (saturating).
    pub(crate) release_hooks: Duration,
}

impl StopBudget {
    /// Adds up hook budgets without overflowing: a sum too large for a
    /// `Duration` is as good as no bound.
    pub(crate) fn sum(budgets: impl IntoIterator<Item = Duration>) -> Duration {
        budgets
            .into_iter()
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    /// The latest instant by which the stop is over, as seen at `now` when
    /// `phase` begins (`StopAccepting` is the trigger); `None` if there is no
    /// bound. Each step is an upper bound of the runtime's own waits: the
    /// drain ends at `max(deadline, now)` (a wait on a deadline already past
    /// returns at once) and every hook returns or is left behind at its
    /// budget.
    pub(crate) fn end(&self, phase: Phase, now: Instant) -> Option<Instant> {
        let deadline = self.triggered.checked_add(self.grace)?;
        let kill_deadline = deadline.checked_add(self.kill_grace)?;
        let drained = match phase {
            Phase::Running | Phase::StopAccepting => {
                // The stop-accepting hooks run first; the grace left after
                // them is at most the grace left now.
                let left = deadline.saturating_duration_since(now);
                now.checked_add(self.stop_hooks)?
                    .checked_add(left)?
                    .checked_add(self.kill_grace)?
            }
            Phase::Draining => deadline.max(now).checked_add(self.kill_grace)?,
            Phase::HardStop => kill_deadline.max(now),
            Phase::Releasing | Phase::Done => now,
        };
        drained
            .checked_add(self.release_hooks)?
            .checked_add(EXTEND_MARGIN)
    }
}

// ===== Messages =====

/// Makes `text` safe as one `STATUS=` value: a newline would start a new
/// assignment, so control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `STATUS=stopping (<reason>)`'s reason: the report's words, with the
/// signal's name (the report's `Display` says only "signal").
fn reason_text(reason: &StopReason) -> String {
    match reason.signal() {
        Some(sig) => format!("signal {}", sig.name()),
        None => reason.to_string(),
    }
}

fn ready_message(pid: u32) -> String {
    format!("READY=1\nMAINPID={pid}\nSTATUS=running")
}

fn stopping_message(reason: &StopReason) -> String {
    format!(
        "STOPPING=1\nSTATUS=stopping ({})",
        one_line(&reason_text(reason))
    )
}

fn status_message(status: &str) -> String {
    format!("STATUS={}", one_line(status))
}

/// `EXTEND_TIMEOUT_USEC=<µs>`, saturating at `u64::MAX` µs.
fn extend_line(cover: Duration) -> String {
    let usec = u64::try_from(cover.as_micros()).unwrap_or(u64::MAX);
    format!("EXTEND_TIMEOUT_USEC={usec}")
}

/// What to extend by at `now` for a stop that ends at `end` (`None`: no
/// bound), and when to extend again (`None`: this covers the rest). `None`
/// overall once a bounded stop is past its end: nothing more is sent.
fn extension(
    now: Instant,
    end: Option<Instant>,
    window: Duration,
) -> Option<(Duration, Option<Instant>)> {
    match end {
        Some(end) => {
            let left = end.saturating_duration_since(now);
            (!left.is_zero()).then_some((left, None))
        }
        // A window too large for the clock is re-sent never; it covers
        // longer than the clock can say anyway.
        None => Some((window, now.checked_add(window / 2))),
    }
}

// ===== Environment =====

/// Where `NOTIFY_SOCKET` points.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// A socket file.
    Path(std::path::PathBuf),
    /// A Linux abstract name, without the leading `@`.
    Abstract(Vec<u8>),
}

/// Reads `NOTIFY_SOCKET`'s value: an absolute path or `@name`; anything
/// else is not for us.
fn parse_socket(value: &std::ffi::OsStr) -> Option<Target> {
    let bytes = value.as_encoded_bytes();
    match bytes.first()? {
        b'/' => Some(Target::Path(value.into())),
        b'@' if bytes.len() > 1 => Some(Target::Abstract(bytes[1..].to_vec())),
        _ => None,
    }
}

/// Reads `WATCHDOG_USEC` and `WATCHDOG_PID` into the interval at which to
/// send `WATCHDOG=1` (half the timeout), or `None` for no watchdog.
fn parse_watchdog(
    usec: Option<&std::ffi::OsStr>,
    pid: Option<&std::ffi::OsStr>,
    our_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

/// What the runtime's thread tells the notifier thread.
#[derive(Debug)]
enum Cmd {
    Ready,
    Stopping {
        reason: StopReason,
        budget: StopBudget,
    },
    Phase {
        phase: Phase,
        at: Instant,
    },
    Done {
        status: String,
    },
}

// ===== Notifier =====

/// A runtime's link to systemd: a no-op unless `NOTIFY_SOCKET` was set (and
/// usable) when the runtime was built with notifications on. Every method
/// returns at once; the messages go out from the notifier thread.
pub(crate) struct Notifier {
    inner: Option<imp::Running>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("active", &self.is_active())
            .finish()
    }
}

impl Notifier {
    /// Reads the environment and, if `enabled` and `NOTIFY_SOCKET` names a
    /// usable socket, starts the notifier thread.
    ///
    /// # Errors
    ///
    /// [`BuildError::Spawn`] if the thread could not be spawned.
    pub(crate) fn from_env(enabled: bool) -> Result<Notifier, BuildError> {
        let inner = if enabled { imp::from_env()? } else { None };
        Ok(Notifier { inner })
    }

    /// Whether messages are sent.
    pub(crate) fn is_active(&self) -> bool {
        self.inner.is_some()
    }

    fn send(&self, cmd: Cmd) {
        if let Some(inner) = &self.inner {
            inner.send(cmd);
        }
    }

    /// `READY=1`: `run` begins.
    pub(crate) fn ready(&self) {
        self.send(Cmd::Ready);
    }

    /// `STOPPING=1` and the first extension: the trigger.
    pub(crate) fn stopping(&self, reason: &StopReason, budget: StopBudget) {
        if self.is_active() {
            self.send(Cmd::Stopping {
                reason: reason.clone(),
                budget,
            });
        }
    }

    /// `STATUS=<phase>` and an extension from now, for `Draining`,
    /// `HardStop` and `Releasing`; other phases send nothing.
    pub(crate) fn phase(&self, phase: Phase) {
        if matches!(phase, Phase::Draining | Phase::HardStop | Phase::Releasing) {
            self.send(Cmd::Phase {
                phase,
                at: Instant::now(),
            });
        }
    }

    /// Sends `STATUS=<summary>` (the report's one-line form, which begins
    /// `stopped (<reason>)`) and joins the notifier thread; later calls send
    /// nothing.
    pub(crate) fn finish(&mut self, summary: &dyn fmt::Display) {
        if let Some(inner) = self.inner.take() {
            inner.send(Cmd::Done {
                status: summary.to_string(),
            });
            inner.join();
        }
    }
}

#[cfg(not(all(unix, feature = "systemd")))]
mod imp {
    //! No systemd here (the feature is off, or not Unix): nothing is ever
    //! started, and `Running` cannot exist.

    use super::Cmd;
    use crate::error::BuildError;

    pub(super) enum Running {}

    impl Running {
        pub(super) fn send(&self, _: Cmd) {
            match *self {}
        }

        pub(super) fn join(self) {
            match self {}
        }
    }

    pub(super) fn from_env() -> Result<Option<Running>, BuildError> {
        Ok(None)
    }
}

#[cfg(all(unix, feature = "systemd"))]
mod imp {
    //! The Unix side: the socket, the address and the notifier thread.

    use std::io;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

    use super::{
        extend_line, extension, parse_socket, parse_watchdog, ready_message, status_message,
        stopping_message, Cmd, StopBudget, Target, SEND_TIMEOUT, UNBOUNDED_WINDOW,
    };
    use crate::error::BuildError;
    use crate::phase::Phase;

    /// The notifier thread and the way to it. Dropping it (a runtime that
    /// never finished) closes the channel and joins the thread.
    pub(super) struct Running {
        cmds: Option<Sender<Cmd>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Running {
        pub(super) fn send(&self, cmd: Cmd) {
            if let Some(cmds) = &self.cmds {
                // The thread ends only when the channel closes or after
                // `Done`, so the receiver outlives every send but the last.
                let _ = cmds.send(cmd);
            }
        }

        pub(super) fn join(mut self) {
            self.close();
        }

        fn close(&mut self) {
            drop(self.cmds.take());
            if let Some(thread) = self.thread.take() {
                // The thread catches nothing but sends nothing that could
                // panic; a panic there is a bug, and must not become ours.
                let _ = thread.join();
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.close();
        }
    }

    pub(super) fn address(target: &Target) -> io::Result<SocketAddr> {
        match target {
            Target::Path(path) => SocketAddr::from_pathname(path),
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)
            }
            #[cfg(not(target_os = "linux"))]
            Target::Abstract(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract socket names exist only on Linux",
            )),
        }
    }

    pub(super) fn from_env() -> Result<Option<Running>, BuildError> {
        let Some(target) = std::env::var_os("NOTIFY_SOCKET")
            .as_deref()
            .and_then(parse_socket)
        else {
            return Ok(None);
        };
        let Ok(addr) = address(&target) else {
            return Ok(None);
        };
        let watchdog = parse_watchdog(
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        start(addr, watchdog, UNBOUNDED_WINDOW)
    }

    /// Starts the notifier thread for `addr`. `Ok(None)` if no socket could
    /// be made (nothing would ever be sent).
    pub(super) fn start(
        addr: SocketAddr,
        watchdog: Option<Duration>,
        window: Duration,
    ) -> Result<Option<Running>, BuildError> {
        let Ok(socket) = UnixDatagram::unbound() else {
            return Ok(None);
        };
        // A manager that does not read must not block us for long.
        let _ = socket.set_write_timeout(Some(SEND_TIMEOUT));
        let (tx, rx) = crossbeam_channel::unbounded();
        let now = Instant::now();
        let worker = Worker {
            socket,
            addr,
            window,
            watchdog: watchdog.and_then(|every| Some((every, now.checked_add(every)?))),
            budget: None,
            resend: None,
        };
        let thread = std::thread::Builder::new()
            .name("winddown-systemd".into())
            .spawn(move || worker.run(&rx))
            .map_err(BuildError::Spawn)?;
        Ok(Some(Running {
            cmds: Some(tx),
            thread: Some(thread),
        }))
    }

    /// The notifier thread's state.
    struct Worker {
        socket: UnixDatagram,
        addr: SocketAddr,
        /// What one extension covers in a stop with no bound.
        window: Duration,
        /// The watchdog's interval and its next beat.
        watchdog: Option<(Duration, Instant)>,
        /// The stop's budget, from the trigger on.
        budget: Option<StopBudget>,
        /// When to extend again in a stop with no bound.
        resend: Option<Instant>,
    }

    impl Worker {
        /// Waits for a command or the next timer (watchdog or extension),
        /// whichever comes first; ends on `Done` or when the runtime drops
        /// its sender.
        fn run(mut self, cmds: &Receiver<Cmd>) {
            loop {
                let wake = match (self.watchdog.map(|(_, at)| at), self.resend) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let cmd = match wake {
                    Some(at) => match cmds.recv_deadline(at) {
                        Ok(cmd) => Some(cmd),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    },
                    None => match cmds.recv() {
                        Ok(cmd) => Some(cmd),
                        Err(_) => return,
                    },
                };
                let now = Instant::now();
                if let Some(cmd) = cmd {
                    if !self.handle(cmd, now) {
                        return;
                    }
                }
                self.timers(now);
            }
        }

        /// Sends what `cmd` asks for; `false` after the last message.
        fn handle(&mut self, cmd: Cmd, now: Instant) -> bool {
            match cmd {
                Cmd::Ready => self.send(&ready_message(std::process::id())),
                Cmd::Stopping { reason, budget } => {
                    self.budget = Some(budget);
                    let mut msg = stopping_message(&reason);
                    self.extend_into(&mut msg, budget.end(Phase::StopAccepting, now), now);
                    self.send(&msg);
                }
                Cmd::Phase { phase, at } => {
                    let mut msg = status_message(phase.name());
                    if let Some(budget) = self.budget {
                        self.extend_into(&mut msg, budget.end(phase, at), now);
                    }
                    self.send(&msg);
                }
                Cmd::Done { status } => {
                    self.send(&status_message(&status));
                    return false;
                }
            }
            true
        }

        /// Appends the extension for a stop ending at `end` to `msg`, and
        /// schedules the next one if this does not cover the rest.
        fn extend_into(&mut self, msg: &mut String, end: Option<Instant>, now: Instant) {
            self.resend = None;
            if let Some((cover, again)) = extension(now, end, self.window) {
                msg.push('\n');
                msg.push_str(&extend_line(cover));
                self.resend = again;
            }
        }

        /// Sends the watchdog beat and the extension that are due at `now`.
        fn timers(&mut self, now: Instant) {
            if let Some((every, at)) = self.watchdog {
                if at <= now {
                    self.send("WATCHDOG=1");
                    // Fixed rate; after a stall (SIGSTOP), one beat, not a
                    // burst of the ones missed.
                    let next = at.checked_add(every).filter(|n| *n > now);
                    self.watchdog = next.or_else(|| now.checked_add(every)).map(|n| (every, n));
                }
            }
            if self.resend.is_some_and(|at| at <= now) {
                // Only a stop with no bound is re-sent.
                self.resend = None;
                if let Some((cover, again)) = extension(now, None, self.window) {
                    self.send(&extend_line(cover));
                    self.resend = again;
                }
            }
        }

        fn send(&self, msg: &str) {
            // Invariant: a send error (the manager gone, its queue full
            // for SEND_TIMEOUT) never fails the run.
            let _ = self.socket.send_to_addr(msg.as_bytes(), &self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Signal;
    use std::ffi::OsStr;

    fn budget(triggered: Instant) -> StopBudget {
        StopBudget {
            triggered,
            grace: Duration::from_secs(10),
            kill_grace: Duration::from_secs(1),
            stop_hooks: Duration::from_millis(300),
            release_hooks: Duration::from_secs(2),
        }
    }

    #[test]
    fn socket_paths_and_abstract_names_parse_and_the_rest_is_ignored() {
        assert_eq!(
            parse_socket(OsStr::new("/run/systemd/notify")),
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_socket(OsStr::new("@sd-notify")),
            Some(Target::Abstract(b"sd-notify".to_vec()))
        );
        for bad in ["", "@", "relative/notify", "vsock:2:1234", " /x"] {
            assert_eq!(parse_socket(OsStr::new(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn watchdog_is_half_the_timeout_for_our_pid_only() {
        let w = |usec: Option<&str>, pid: Option<&str>| {
            parse_watchdog(usec.map(OsStr::new), pid.map(OsStr::new), 42)
        };
        assert_eq!(w(Some("200000"), None), Some(Duration::from_millis(100)));
        assert_eq!(
            w(Some("200000"), Some("42")),
            Some(Duration::from_millis(100))
        );
        assert_eq!(w(Some("1"), None), Some(Duration::from_nanos(500)));
        // Another process's watchdog, or one we cannot tell: not ours.
        assert_eq!(w(Some("200000"), Some("43")), None);
        assert_eq!(w(Some("200000"), Some("self")), None);
        // Unset, zero, junk, negative, too large: no watchdog, no panic.
        for usec in [
            None,
            Some("0"),
            Some("abc"),
            Some("-5"),
            Some(""),
            Some("1e6"),
        ] {
            assert_eq!(w(usec, None), None, "{usec:?}");
        }
        assert_eq!(w(Some("99999999999999999999999"), None), None);
        assert_eq!(
            w(Some(&u64::MAX.to_string()), None),
            Some(Duration::from_micros(u64::MAX) / 2)
        );
    }

    #[test]
    fn messages_are_key_value_lines() {
        assert_eq!(ready_message(7), "READY=1\nMAINPID=7\nSTATUS=running");
        assert_eq!(
            stopping_message(&StopReason::Signal(Signal::Terminate)),
            "STOPPING=1\nSTATUS=stopping (signal SIGTERM)"
        );
        assert_eq!(
            stopping_message(&StopReason::Completed),
            "STOPPING=1\nSTATUS=stopping (completed)"
        );
        assert_eq!(
            extend_line(Duration::from_millis(1500)),
            "EXTEND_TIMEOUT_USEC=1500000"
        );
        assert_eq!(
            extend_line(Duration::MAX),
            format!("EXTEND_TIMEOUT_USEC={}", u64::MAX)
        );
    }

    #[test]
    fn a_reason_cannot_smuggle_in_an_assignment() {
        let msg = stopping_message(&StopReason::Requested("deploy\nREADY=1\r".into()));
        assert_eq!(
            msg,
            "STOPPING=1\nSTATUS=stopping (requested: deploy READY=1 )"
        );
        assert_eq!(status_message("a\nb"), "STATUS=a b");
    }

    #[test]
    fn the_bound_shrinks_phase_by_phase_and_covers_every_budget() {
        let t = Instant::now();
        let b = budget(t);
        let ms = Duration::from_millis;
        // At the trigger: hooks 0.3 + grace 10 + kill 1 + release 2 + margin.
        assert_eq!(
            b.end(Phase::StopAccepting, t),
            Some(t + ms(300) + ms(10_000) + ms(1_000) + ms(2_000) + EXTEND_MARGIN)
        );
        // Entering the drain 0.3 s later: the deadline is still trigger + 10 s.
        assert_eq!(
            b.end(Phase::Draining, t + ms(300)),
            Some(t + ms(10_000) + ms(1_000) + ms(2_000) + EXTEND_MARGIN)
        );
        // Hooks that overran the grace: the drain returns at once, from now.
        assert_eq!(
            b.end(Phase::Draining, t + ms(12_000)),
            Some(t + ms(12_000) + ms(1_000) + ms(2_000) + EXTEND_MARGIN)
        );
        assert_eq!(
            b.end(Phase::HardStop, t + ms(10_000)),
            Some(t + ms(11_000) + ms(2_000) + EXTEND_MARGIN)
        );
        assert_eq!(
            b.end(Phase::Releasing, t + ms(500)),
            Some(t + ms(500) + ms(2_000) + EXTEND_MARGIN)
        );
    }

    #[test]
    fn a_bound_too_large_for_the_clock_is_no_bound() {
        let t = Instant::now();
        let mut b = budget(t);
        b.grace = Duration::MAX;
        assert_eq!(b.end(Phase::StopAccepting, t), None);
        assert_eq!(b.end(Phase::Releasing, t), None);
        let mut b = budget(t);
        b.release_hooks = StopBudget::sum([Duration::MAX, Duration::from_secs(1)]);
        assert_eq!(b.release_hooks, Duration::MAX);
        assert_eq!(b.end(Phase::Releasing, t), None);
    }

    #[test]
    fn a_bounded_stop_is_covered_once_and_an_unbounded_one_in_windows() {
        let t = Instant::now();
        let w = Duration::from_secs(60);
        let end = t + Duration::from_secs(5);
        assert_eq!(
            extension(t, Some(end), w),
            Some((Duration::from_secs(5), None))
        );
        assert_eq!(extension(end, Some(end), w), None);
        assert_eq!(extension(end + w, Some(end), w), None);
        assert_eq!(extension(t, None, w), Some((w, Some(t + w / 2))));
    }

    #[test]
    fn one_line_keeps_text_and_drops_controls() {
        assert_eq!(
            one_line("drained in 1.2 ms; exit code 0"),
            "drained in 1.2 ms; exit code 0"
        );
        assert_eq!(one_line("a\tb\u{0}c"), "a b c");
    }

    #[test]
    fn a_notifier_that_is_off_does_nothing() {
        let mut n = Notifier::from_env(false).expect("no thread to spawn");
        assert!(!n.is_active());
        n.ready();
        n.stopping(&StopReason::Completed, budget(Instant::now()));
        n.phase(Phase::Draining);
        n.finish(&"done");
    }

    #[cfg(all(unix, feature = "systemd"))]
    mod socket {
        use super::*;
        use std::os::unix::net::{SocketAddr, UnixDatagram};

        /// A datagram socket standing in for systemd, and the notifier
        /// pointed at it.
        fn manager() -> (tempfile::TempDir, UnixDatagram, SocketAddr) {
            let dir = tempfile::tempdir().expect("temporary directory");
            let path = dir.path().join("notify");
            let sock = UnixDatagram::bind(&path).expect("bind");
            // Only a "does not hang" bound.
            sock.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let addr = SocketAddr::from_pathname(&path).expect("address");
            (dir, sock, addr)
        }

        fn recv(sock: &UnixDatagram) -> String {
            let mut buf = [0u8; 4096];
            let n = sock.recv(&mut buf).expect("a message within the bound");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }

        #[test]
        fn an_unbounded_stop_is_extended_again_before_its_window_runs_out() {
            let (_dir, sock, addr) = manager();
            let window = Duration::from_millis(200);
            let inner = imp::start(addr, None, window)
                .expect("spawn")
                .expect("socket");
            let mut n = Notifier { inner: Some(inner) };
            n.ready();
            assert!(recv(&sock).starts_with("READY=1\n"));
            let mut b = budget(Instant::now());
            b.grace = Duration::MAX;
            let before = Instant::now();
            n.stopping(&StopReason::Completed, b);
            assert_eq!(
                recv(&sock),
                "STOPPING=1\nSTATUS=stopping (completed)\nEXTEND_TIMEOUT_USEC=200000"
            );
            // Re-sent at half the window, again and again, while it lasts.
            for _ in 0..3 {
                assert_eq!(recv(&sock), "EXTEND_TIMEOUT_USEC=200000");
            }
            // Not early: three re-sends take at least three half-windows.
            assert!(before.elapsed() >= window / 2 * 3);
            n.phase(Phase::Releasing);
            let mut msg = recv(&sock);
            while msg == "EXTEND_TIMEOUT_USEC=200000" {
                msg = recv(&sock);
            }
            assert_eq!(msg, "STATUS=releasing\nEXTEND_TIMEOUT_USEC=200000");
            n.finish(&"stopped (fine)");
            let mut msg = recv(&sock);
            while msg == "EXTEND_TIMEOUT_USEC=200000" {
                msg = recv(&sock);
            }
            assert_eq!(msg, "STATUS=stopped (fine)");
            assert!(!n.is_active());
        }

        #[test]
        fn the_watchdog_beats_until_the_notifier_is_finished_and_joined() {
            let (_dir, sock, addr) = manager();
            let inner = imp::start(addr, Some(Duration::from_millis(20)), UNBOUNDED_WINDOW)
                .expect("spawn")
                .expect("socket");
            let mut n = Notifier { inner: Some(inner) };
            for _ in 0..3 {
                assert_eq!(recv(&sock), "WATCHDOG=1");
            }
            n.finish(&"stopped (bye)");
            let mut last = recv(&sock);
            while last == "WATCHDOG=1" {
                last = recv(&sock);
            }
            assert_eq!(last, "STATUS=stopped (bye)");
            // Joined: nothing more comes.
            sock.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 64];
            assert!(sock.recv(&mut buf).is_err());
        }

        #[test]
        fn a_socket_that_is_gone_does_not_fail_or_block() {
            let (dir, sock, addr) = manager();
            drop(sock);
            drop(dir);
            let inner = imp::start(addr, Some(Duration::from_millis(5)), UNBOUNDED_WINDOW)
                .expect("spawn")
                .expect("socket");
            let mut n = Notifier { inner: Some(inner) };
            n.ready();
            n.stopping(&StopReason::Completed, budget(Instant::now()));
            n.phase(Phase::Draining);
            n.finish(&"nobody listens");
            assert!(!n.is_active());
        }
    }
}
