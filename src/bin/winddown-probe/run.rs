//! One run of one command: spawn it in a process group of its own, wait
//! until it is ready, wait the delay, send the signal, and time the exit.
//!
//! Every wait is on one channel of [`Event`]s, fed by threads that block:
//! a waiter owns the `Child` and sends its exit the moment `wait` returns
//! (the exit instant is taken there, not when the main thread wakes), a
//! reader follows the child's stdout for the readiness line, and a reader of
//! the notify socket reports `READY=1` and `STOPPING=1`. The main thread
//! waits with `recv_deadline` on that channel, so nothing spins; the only
//! retry loop is the TCP readiness check, which backs off from 1 ms to
//! 50 ms between connection attempts and sleeps on the same channel (an
//! exit still ends it at once).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use regex::Regex;

use crate::load;

/// How long to wait for the exit of a process that was sent `SIGKILL`.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How the probe knows a command is ready for the signal.
#[derive(Debug, Clone)]
pub(crate) enum Ready {
    /// As soon as it is spawned.
    Spawned,
    /// When a line of its stdout matches.
    Line(Regex),
    /// When a TCP connection to this address succeeds.
    Port(SocketAddr),
    /// When it sends `READY=1` to the `NOTIFY_SOCKET` the probe binds.
    Notify,
}

/// What one run does.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// The program and its arguments.
    pub(crate) argv: &'a [String],
    pub(crate) ready: &'a Ready,
    /// From the spawn; past it the run is `NotReady` and the group killed.
    pub(crate) ready_timeout: Duration,
    /// From readiness to the signal.
    pub(crate) delay: Duration,
    pub(crate) signal: Signal,
    /// Send the signal to the whole process group, not only the process.
    pub(crate) group: bool,
    /// From the signal; past it the run is `TimedOut` and the group killed.
    pub(crate) exit_timeout: Duration,
    /// The child's stdout and stderr go to the probe's stderr (else nowhere).
    pub(crate) show_output: bool,
    pub(crate) load: Option<&'a load::Spec>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it (its number).
    Killed(i32),
}

impl Status {
    fn of(status: ExitStatus) -> Status {
        match (status.code(), status.signal()) {
            (Some(code), _) => Status::Exited(code),
            (None, Some(sig)) => Status::Killed(sig),
            // Neither (a stopped process is not reported by `wait`).
            (None, None) => Status::Exited(-1),
        }
    }

    /// `exit 130`, `killed by signal SIGTERM`.
    pub(crate) fn describe(&self) -> String {
        match *self {
            Status::Exited(code) => format!("exit {code}"),
            Status::Killed(sig) => format!("killed by signal {}", signal_name(sig)),
        }
    }
}

/// `SIGTERM` for 15; the number for a signal nix does not know.
pub(crate) fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.as_str().to_owned())
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The signal was sent and the process exited within the timeout.
    Measured { latency: Duration, status: Status },
    /// The process had not exited `exit_timeout` after the signal; its group
    /// was killed (`status` is what `wait` then saw, if it came).
    TimedOut { status: Option<Status> },
    /// The process exited before the signal could be sent.
    ExitedEarly { status: Status, before_ready: bool },
    /// The process was not ready within `ready_timeout`; its group was killed.
    NotReady,
    /// The command could not be started, or the signal not sent.
    Failed(String),
}

impl Outcome {
    /// The short name used in the JSON and the table.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Outcome::Measured { .. } => "measured",
            Outcome::TimedOut { .. } => "timed_out",
            Outcome::ExitedEarly { .. } => "exited_early",
            Outcome::NotReady => "not_ready",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// Spawn → ready, if it became ready.
    pub(crate) ready_after: Option<Duration>,
    /// Ready → signal, as planned.
    pub(crate) delay: Duration,
    pub(crate) outcome: Outcome,
    /// Signal → `STOPPING=1` on the notify socket (only with `Ready::Notify`).
    pub(crate) stopping_after: Option<Duration>,
    /// The load's requests during this run, if there was a load.
    pub(crate) load: Option<load::Counts>,
}

/// What the helper threads report.
#[derive(Debug)]
enum Event {
    Ready(Instant),
    Stopping(Instant),
    /// The exit and when `wait` returned; `None` if `wait` failed.
    Exit(Instant, Option<ExitStatus>),
}

/// Runs `plan` once.
pub(crate) fn run(plan: &Plan<'_>) -> Run {
    let mut result = Run {
        ready_after: None,
        delay: plan.delay,
        outcome: Outcome::NotReady,
        stopping_after: None,
        load: None,
    };
    let (tx, events) = crossbeam_channel::unbounded();
    let notify = match plan.ready {
        Ready::Notify => match NotifySocket::bind(tx.clone()) {
            Ok(n) => Some(n),
            Err(e) => {
                result.outcome = Outcome::Failed(format!("binding the notify socket: {e}"));
                return result;
            }
        },
        _ => None,
    };
    let mut cmd = Command::new(&plan.argv[0]);
    cmd.args(&plan.argv[1..])
        .stdin(Stdio::null())
        // Its own group: the timeout kills whatever it started, and a
        // Ctrl-C at the probe's terminal does not reach it.
        .process_group(0);
    let output = || {
        if plan.show_output {
            Stdio::from(std::io::stderr())
        } else {
            Stdio::null()
        }
    };
    cmd.stdout(if matches!(plan.ready, Ready::Line(_)) {
        Stdio::piped()
    } else {
        output()
    })
    .stderr(output());
    if let Some(n) = &notify {
        cmd.env("NOTIFY_SOCKET", &n.path);
    }
    let spawned_at = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            result.outcome = Outcome::Failed(format!("starting {}: {e}", plan.argv[0]));
            return result;
        }
    };
    // A pid always fits: the kernel's pid_max is below 2^22.
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _leftovers = KillGroupOnDrop(pid);
    if let (Ready::Line(re), Some(stdout)) = (plan.ready, child.stdout.take()) {
        let (re, tx, show) = (re.clone(), tx.clone(), plan.show_output);
        // Detached: it ends at the end of the stream, which a grandchild
        // holding the pipe may delay past the run.
        std::thread::spawn(move || follow_stdout(stdout, &re, &tx, show));
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let status = child.wait().ok();
            let _ = tx.send(Event::Exit(Instant::now(), status));
        });
    }
    drop(tx);

    let ready_deadline = spawned_at + plan.ready_timeout;
    let ready_at = match wait_ready(plan.ready, &events, ready_deadline) {
        Waited::Ready(at) => at,
        Waited::Exited(status) => {
            result.outcome = Outcome::ExitedEarly {
                status,
                before_ready: true,
            };
            return result;
        }
        Waited::Deadline => {
            kill_group(pid);
            let _ = wait_exit(&events, Instant::now() + KILL_WAIT, &mut None);
            result.outcome = Outcome::NotReady;
            return result;
        }
    };
    result.ready_after = Some(ready_at.saturating_duration_since(spawned_at));

    let signal_at = Arc::new(OnceLock::new());
    let running_load = match plan.load {
        Some(spec) => match load::Load::start(spec, Arc::clone(&signal_at)) {
            Ok(l) => Some(l),
            Err(e) => {
                kill_group(pid);
                let _ = wait_exit(&events, Instant::now() + KILL_WAIT, &mut None);
                result.outcome = Outcome::Failed(format!("starting the load: {e}"));
                return result;
            }
        },
        None => None,
    };
    let mut stopping = None;
    result.outcome = signal_and_time(
        plan,
        pid,
        &events,
        ready_at + plan.delay,
        &signal_at,
        &mut stopping,
    );
    if let Some(l) = running_load {
        result.load = Some(l.finish());
    }
    // The reader handles the datagrams in order, so once it has read its
    // wake-up every `STOPPING=1` the process sent is on the channel.
    drop(notify);
    for event in events.try_iter() {
        if let Event::Stopping(at) = event {
            stopping.get_or_insert(at);
        }
    }
    if let (Some(at), Some(sent)) = (stopping, signal_at.get()) {
        result.stopping_after = Some(at.saturating_duration_since(*sent));
    }
    result
}

/// What waiting for readiness ended with.
enum Waited {
    Ready(Instant),
    Exited(Status),
    Deadline,
}

fn wait_ready(ready: &Ready, events: &Receiver<Event>, deadline: Instant) -> Waited {
    let mut backoff = Duration::from_millis(1);
    loop {
        let wake = match ready {
            Ready::Spawned => return Waited::Ready(Instant::now()),
            Ready::Port(addr) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt = left
                    .min(Duration::from_millis(200))
                    .max(Duration::from_millis(1));
                if TcpStream::connect_timeout(addr, attempt).is_ok() {
                    return Waited::Ready(Instant::now());
                }
                let wake = (Instant::now() + backoff).min(deadline);
                backoff = (backoff * 2).min(Duration::from_millis(50));
                wake
            }
            Ready::Line(_) | Ready::Notify => deadline,
        };
        match events.recv_deadline(wake) {
            Ok(Event::Ready(at)) => return Waited::Ready(at),
            Ok(Event::Stopping(_)) => {}
            Ok(Event::Exit(_, status)) => {
                return Waited::Exited(status.map_or(Status::Exited(-1), Status::of))
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                return Waited::Deadline
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The waiter always sends before it hangs up.
            Err(RecvTimeoutError::Disconnected) => return Waited::Exited(Status::Exited(-1)),
        }
    }
}

/// Waits until `at`, sends the signal, and times the exit.
fn signal_and_time(
    plan: &Plan<'_>,
    pid: Pid,
    events: &Receiver<Event>,
    at: Instant,
    signal_at: &OnceLock<Instant>,
    stopping: &mut Option<Instant>,
) -> Outcome {
    loop {
        match events.recv_deadline(at) {
            Ok(Event::Exit(_, status)) => {
                return Outcome::ExitedEarly {
                    status: status.map_or(Status::Exited(-1), Status::of),
                    before_ready: false,
                }
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                return Outcome::Failed("lost the process's waiter".into())
            }
        }
    }
    let sent_at = Instant::now();
    let _ = signal_at.set(sent_at);
    let sent = if plan.group {
        killpg(pid, plan.signal)
    } else {
        kill(pid, plan.signal)
    };
    if let Err(e) = sent {
        kill_group(pid);
        let _ = wait_exit(events, Instant::now() + KILL_WAIT, &mut None);
        return Outcome::Failed(format!("sending {}: {e}", plan.signal));
    }
    match wait_exit(events, sent_at + plan.exit_timeout, stopping) {
        Some((exited_at, status)) => Outcome::Measured {
            latency: exited_at.saturating_duration_since(sent_at),
            status,
        },
        None => {
            kill_group(pid);
            let status = wait_exit(events, Instant::now() + KILL_WAIT, stopping).map(|(_, s)| s);
            Outcome::TimedOut { status }
        }
    }
}

/// Waits for the exit until `deadline`; the first `STOPPING=1` seen on the
/// way goes to `stopping`.
fn wait_exit(
    events: &Receiver<Event>,
    deadline: Instant,
    stopping: &mut Option<Instant>,
) -> Option<(Instant, Status)> {
    loop {
        match events.recv_deadline(deadline) {
            Ok(Event::Exit(at, status)) => {
                return Some((at, status.map_or(Status::Exited(-1), Status::of)))
            }
            Ok(Event::Stopping(at)) => {
                stopping.get_or_insert(at);
            }
            Ok(Event::Ready(_)) => {}
            Err(_) => return None,
        }
    }
}

/// Kills what is left of the process group when a run ends, on every path:
/// whatever the process left behind (a shell's children, say) would skew the
/// next run, or hold its port. Every path has seen the leader's exit (or
/// killed it) by then, so this only reaches the rest of the group; with no
/// one left, `killpg` fails with `ESRCH`, which is fine.
#[derive(Debug)]
struct KillGroupOnDrop(Pid);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

/// Kills the process and everything in its group.
fn kill_group(pid: Pid) {
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = kill(pid, Signal::SIGKILL);
}

/// Reads the child's stdout to its end; the first line matching `re` sends
/// `Ready`.
fn follow_stdout(stdout: std::process::ChildStdout, re: &Regex, tx: &Sender<Event>, show: bool) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let mut ready = false;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let now = Instant::now();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if show {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
        if !ready && re.is_match(text) {
            ready = true;
            let _ = tx.send(Event::Ready(now));
        }
    }
}

/// A datagram socket bound for `NOTIFY_SOCKET`; a reader thread reports
/// `READY=1` and `STOPPING=1`. Dropping it wakes the reader with a datagram
/// of its own and removes the path.
#[derive(Debug)]
struct NotifySocket {
    path: PathBuf,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// What the probe sends its own reader to end it.
const WAKE: &[u8] = b"WINDDOWN_PROBE_DONE=1";

impl NotifySocket {
    fn bind(tx: Sender<Event>) -> std::io::Result<NotifySocket> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "winddown-probe-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)?;
        let reader = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = socket.recv(&mut buf) {
                    let now = Instant::now();
                    let msg = &buf[..n];
                    if msg == WAKE {
                        return;
                    }
                    for line in String::from_utf8_lossy(msg).lines() {
                        let event = match line {
                            "READY=1" => Event::Ready(now),
                            "STOPPING=1" => Event::Stopping(now),
                            _ => continue,
                        };
                        let _ = tx.send(event);
                    }
                }
            });
        match reader {
            Ok(r) => Ok(NotifySocket {
                path,
                reader: Some(r),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let woke = UnixDatagram::unbound().and_then(|s| s.send_to(WAKE, &self.path));
        if let (Ok(_), Some(r)) = (woke, self.reader.take()) {
            let _ = r.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
