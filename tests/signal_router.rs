//! The process-wide signal router on real processes with real signals: the
//! first signal, the second, signals during a stop begun by code, duplicate
//! deliveries, signals after `run` returned, inherited ignores, a
//! configurable set, nothing installed without a runtime, and a program that
//! owns a handler of its own.
//!
//! Each test re-executes this test binary as a child (`child_program`,
//! configured through `WR_*` variables), so the child's signal state is its
//! own. The child prints protocol lines (`ready`, `phase <name>`, `hook
//! begin <name>` / `hook end <name>`, `after run begin` / `after run end`,
//! `report …`) and exits with the report's exit code; the parent
//! synchronises on those lines, never on sleeps. Sleeps appear only where the
//! moment is the test (a second signal outside the duplicate window, a hook
//! or checkpoint long enough to be cut) and bounds are "does not hang" only.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::{kill, Signal as Sig};
use nix::unistd::Pid;
use winddown::{Phase, Runtime, Signal};

/// Generous: a debug build on two busy cores. Only "does not hang".
const HANG: Duration = Duration::from_secs(30);
/// Comfortably outside the router's 100 ms duplicate window.
const OUTSIDE_WINDOW: Duration = Duration::from_millis(300);
/// Comfortably inside it (for a repeat sent after the first was read).
const INSIDE_WINDOW: Duration = Duration::from_millis(20);

// ===== The child program =====

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn millis(name: &str) -> Option<Duration> {
    var(name).map(|v| Duration::from_millis(v.parse().expect("a number of ms")))
}

/// Our signals in this process's `SigIgn:` mask, as `SIGHUP,SIGINT`.
fn sig_ign() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    let names: Vec<&str> = Signal::ALL
        .into_iter()
        .filter(|s| mask & (1 << (s.number() - 1)) != 0)
        .map(Signal::name)
        .collect();
    names.join(",")
}

#[expect(
    clippy::disallowed_methods,
    reason = "the child program's exit code is what the parent tests"
)]
fn exit(code: i32) -> ! {
    std::process::exit(code)
}

/// The child: does nothing unless spawned by a test below.
///
/// * `WR_MODE`: `runtime` (build one) or `bare` (never build one).
/// * `WR_SET`: `TERM,INT`… for `handle_signals`; `WR_HONOR=0`,
///   `WR_FORCE=0` for the builder switches.
/// * `WR_STOP=request`: the runtime is stopped by code before `ready`.
/// * `WR_HOOK_MS`: a release hook `slow` of that length, which runs before
///   the hook `last`.
/// * `WR_AFTER_MS`: a checkpoint of that length after `run` returned.
/// * `WR_CTRLC=1`: the program sets its own ctrlc handler first.
#[test]
#[ignore = "run in a child process by the tests of this file"]
fn child_program() {
    let Some(mode) = var("WR_MODE") else {
        return;
    };
    // A line of its own: libtest has printed `test child_program ... `.
    println!();
    println!("sigign before={}", sig_ign());
    if mode == "bare" {
        println!("ready");
        thread::sleep(HANG);
        println!("still alive");
        exit(0);
    }
    let (heard_tx, heard) = crossbeam_channel::bounded(1);
    if var("WR_CTRLC").is_some() {
        ctrlc::set_handler(move || {
            let _ = heard_tx.try_send(());
        })
        .expect("the first ctrlc handler in this process");
    }
    let mut builder = Runtime::builder()
        .grace(HANG)
        .on_phase(|p: Phase| println!("phase {}", p.name()));
    if let Some(set) = var("WR_SET") {
        builder = builder.handle_signals(
            set.split(',')
                .map(|n| Signal::from_name(n).expect("a signal name")),
        );
    }
    if var("WR_HONOR").as_deref() == Some("0") {
        builder = builder.honor_ignored_signals(false);
    }
    if var("WR_FORCE").as_deref() == Some("0") {
        builder = builder.force_exit_on_second_signal(false);
    }
    let mut rt = builder.build().expect("the runtime builds");
    println!("runtime {rt:?}");
    println!("sigign after={}", sig_ign());
    // Holds the run open until the stop.
    rt.spawn("hold", |token| {
        token.wait();
        Ok(())
    })
    .unwrap();
    rt.on_release("last", HANG, || {
        println!("hook begin last");
        println!("hook end last");
        Ok(())
    });
    if let Some(d) = millis("WR_HOOK_MS") {
        rt.on_release("slow", HANG, move || {
            println!("hook begin slow");
            thread::sleep(d);
            println!("hook end slow");
            Ok(())
        });
    }
    if var("WR_STOP").as_deref() == Some("request") {
        rt.handle().request("by code");
    }
    println!("ready");
    let report = rt.run();
    println!("reason {:?}", report.reason);
    println!("report exit_code={}", report.exit_code);
    if var("WR_CTRLC").is_some() && heard.recv_timeout(HANG).is_ok() {
        println!("program handler saw SIGINT");
    }
    if let Some(d) = millis("WR_AFTER_MS") {
        println!("after run begin");
        thread::sleep(d);
        println!("after run end");
    }
    exit(report.exit_code);
}

// ===== The parent's side =====

/// How the child is started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// Directly.
    Plain,
    /// Directly, in a process group of its own.
    OwnGroup,
    /// Under `nohup` (SIGHUP inherited as ignored).
    Nohup,
    /// Under `sh -c 'trap "" INT HUP; exec …'`.
    Trap,
}

/// A running child: its stdout lines on a channel, its exit on another.
struct Kid {
    pid: Pid,
    lines: Receiver<String>,
    seen: Vec<String>,
    exit: Receiver<(ExitStatus, Instant)>,
    stderr: Arc<Mutex<String>>,
}

/// Whether this (parent) process has one of our signals ignored (the suite
/// runs under `nohup`, or as a background job of a non-interactive shell,
/// which ignores SIGINT and SIGQUIT): then every child is started through `env
/// --default-signal`, so it begins at the default dispositions.
fn parent_ignores_some() -> bool {
    !sig_ign().is_empty()
}

impl Kid {
    fn spawn(launch: Launch, env: &[(&str, &str)]) -> Kid {
        let exe = std::env::current_exe().unwrap();
        let args = [
            "--exact",
            "child_program",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ];
        // argv of the child, wrappers first.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if parent_ignores_some() {
            argv.extend(["env".into(), "--default-signal=INT,TERM,HUP,QUIT".into()]);
        }
        match launch {
            Launch::Plain | Launch::OwnGroup => {}
            Launch::Nohup => argv.push("nohup".into()),
            Launch::Trap => argv.extend([
                "sh".into(),
                "-c".into(),
                r#"trap "" INT HUP; exec "$0" "$@""#.into(),
            ]),
        }
        argv.push(exe.into());
        argv.extend(args.iter().map(Into::into));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        if launch == Launch::OwnGroup {
            cmd.process_group(0);
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let pid = Pid::from_raw(child.id() as i32);
        let (tx, lines) = crossbeam_channel::unbounded();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (exit_tx, exit) = crossbeam_channel::bounded(1);
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send((status, Instant::now()));
            }
        });
        Kid {
            pid,
            lines,
            seen: Vec::new(),
            exit,
            stderr,
        }
    }

    fn context(&self) -> String {
        format!(
            "stdout so far:\n{}\nstderr:\n{}",
            self.seen.join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits for a line starting with `prefix`; returns it.
    fn expect(&mut self, prefix: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let deadline = Instant::now() + HANG;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line {prefix:?} within {HANG:?}\n{}", self.context())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let end = self.exit.recv_timeout(Duration::from_secs(5));
                    panic!(
                        "stdout closed before {prefix:?} (exit {:?})\n{}",
                        end.map(|e| e.0),
                        self.context()
                    )
                }
            }
        }
    }

    fn signal(&self, sig: Sig) {
        kill(self.pid, sig).expect("kill the child");
    }

    /// Signals the child's process group (the child leads it).
    fn signal_group(&self, sig: Sig) {
        kill(Pid::from_raw(-self.pid.as_raw()), sig).expect("kill the group");
    }

    /// `true` if the child is still running after `d` (the wait is the
    /// test: "this did not end the process").
    fn alive_after(&self, d: Duration) -> bool {
        self.exit.recv_timeout(d).is_err()
    }

    /// Waits for the exit; collects every remaining line.
    fn wait_exit(&mut self) -> (ExitStatus, Instant) {
        let exit = match self.exit.recv_timeout(HANG) {
            Ok(exit) => exit,
            Err(_) => {
                let _ = kill(self.pid, Sig::SIGKILL);
                panic!("the child did not exit within {HANG:?}\n{}", self.context());
            }
        };
        while let Ok(line) = self.lines.recv_timeout(HANG) {
            self.seen.push(line);
        }
        exit
    }

    fn saw(&self, line: &str) -> bool {
        self.seen.iter().any(|l| l == line)
    }

    /// The `report` line, if the run got as far as returning one.
    fn report(&self) -> Option<&str> {
        self.seen.iter().find_map(|l| l.strip_prefix("report "))
    }

    /// The report's reason, in `Debug` form.
    fn reason(&self) -> String {
        self.seen
            .iter()
            .find_map(|l| l.strip_prefix("reason "))
            .unwrap_or_else(|| panic!("no report\n{}", self.context()))
            .to_owned()
    }
}

fn code(status: ExitStatus) -> Option<i32> {
    status.code()
}

// ===== The rows =====

#[test]
fn a_first_signal_while_running_stops_gracefully_with_that_signal_and_130() {
    let mut kid = Kid::spawn(Launch::Plain, &[("WR_MODE", "runtime")]);
    kid.expect("ready");
    kid.signal(Sig::SIGTERM);
    let (status, _) = kid.wait_exit();
    assert_eq!(code(status), Some(130), "{}", kid.context());
    assert_eq!(kid.reason(), "Signal(Terminate)");
    // Only the phases `run` itself announces: the later `on_phase` calls
    // race with the trigger's phase move in today's runtime (the run can
    // wake on the token before the signal thread moved the phase word).
    for line in ["phase stop_accepting", "hook end last"] {
        assert!(kid.saw(line), "{line}\n{}", kid.context());
    }
}

#[test]
fn a_second_distinct_signal_during_the_release_hooks_exits_at_once_with_the_forced_code() {
    let env = [("WR_MODE", "runtime"), ("WR_HOOK_MS", "20000")];
    let mut kid = Kid::spawn(Launch::Plain, &env);
    kid.expect("ready");
    let first = Instant::now();
    kid.signal(Sig::SIGTERM);
    kid.expect("hook begin slow");
    // The moment is the test: outside the duplicate window of the first.
    thread::sleep(OUTSIDE_WINDOW.saturating_sub(first.elapsed()));
    let sent = Instant::now();
    kid.signal(Sig::SIGTERM);
    let (status, exited) = kid.wait_exit();
    let latency = exited - sent;
    println!("second signal -> exit: {latency:?}");
    assert_eq!(code(status), Some(3), "{}", kid.context());
    assert!(!kid.saw("hook end slow"), "{}", kid.context());
    assert!(kid.report().is_none(), "no report: ended at once");
    assert!(
        kid.stderr
            .lock()
            .unwrap()
            .contains("winddown: second signal (SIGTERM), exiting now"),
        "{}",
        kid.context()
    );
    assert!(latency < Duration::from_secs(10), "{latency:?}");
}

#[test]
fn a_signal_during_the_release_hooks_of_a_run_stopped_by_code_changes_nothing() {
    let env = [
        ("WR_MODE", "runtime"),
        ("WR_STOP", "request"),
        ("WR_HOOK_MS", "1500"),
    ];
    let mut kid = Kid::spawn(Launch::Plain, &env);
    kid.expect("hook begin slow");
    kid.signal(Sig::SIGINT);
    let (status, _) = kid.wait_exit();
    assert_eq!(code(status), Some(0), "{}", kid.context());
    assert_eq!(kid.reason(), r#"Requested("by code")"#);
    for line in ["hook end slow", "hook begin last", "hook end last"] {
        assert!(kid.saw(line), "{line}\n{}", kid.context());
    }
}

#[test]
fn the_same_signal_twice_within_the_window_is_one_delivery() {
    type Send2 = fn(&Kid);
    let ways: [(&str, Launch, Send2); 3] = [
        ("two kills back to back", Launch::Plain, |k| {
            k.signal(Sig::SIGTERM);
            k.signal(Sig::SIGTERM);
        }),
        ("the child and its group", Launch::OwnGroup, |k| {
            k.signal(Sig::SIGTERM);
            k.signal_group(Sig::SIGTERM);
        }),
        ("a repeat after the first was read", Launch::Plain, |k| {
            k.signal(Sig::SIGINT);
            thread::sleep(INSIDE_WINDOW);
            k.signal(Sig::SIGINT);
        }),
    ];
    let outs: Vec<_> = ways
        .into_iter()
        .map(|(what, launch, send)| {
            thread::spawn(move || {
                let env = [("WR_MODE", "runtime"), ("WR_HOOK_MS", "500")];
                let mut kid = Kid::spawn(launch, &env);
                kid.expect("ready");
                send(&kid);
                let (status, _) = kid.wait_exit();
                assert_eq!(code(status), Some(130), "{what}: {}", kid.context());
                assert!(kid.saw("hook end slow"), "{what}: {}", kid.context());
                assert!(kid.saw("hook end last"), "{what}: {}", kid.context());
                assert!(kid.reason().starts_with("Signal("), "{what}");
            })
        })
        .collect();
    for out in outs {
        out.join().unwrap();
    }
}

#[test]
fn with_force_exit_off_signals_after_run_do_not_cut_the_checkpoint() {
    let env = [
        ("WR_MODE", "runtime"),
        ("WR_FORCE", "0"),
        ("WR_AFTER_MS", "1000"),
    ];
    let mut kid = Kid::spawn(Launch::Plain, &env);
    kid.expect("ready");
    kid.signal(Sig::SIGTERM);
    kid.expect("after run begin");
    // Two distinct signals (different ones are never duplicates).
    kid.signal(Sig::SIGINT);
    kid.signal(Sig::SIGTERM);
    let (status, _) = kid.wait_exit();
    assert_eq!(code(status), Some(130), "{}", kid.context());
    assert!(kid.saw("after run end"), "{}", kid.context());
}

#[test]
fn with_force_exit_on_a_first_signal_after_run_is_nothing_and_a_second_exits() {
    let env = [
        ("WR_MODE", "runtime"),
        ("WR_STOP", "request"),
        ("WR_AFTER_MS", "20000"),
    ];
    let mut kid = Kid::spawn(Launch::Plain, &env);
    kid.expect("after run begin");
    kid.signal(Sig::SIGINT);
    assert!(
        kid.alive_after(OUTSIDE_WINDOW),
        "a first signal after a run stopped by code ended the process\n{}",
        kid.context()
    );
    kid.signal(Sig::SIGINT);
    let (status, _) = kid.wait_exit();
    assert_eq!(code(status), Some(3), "{}", kid.context());
    assert!(!kid.saw("after run end"), "{}", kid.context());
}

#[test]
fn a_signal_inherited_as_ignored_under_nohup_stays_ignored() {
    let mut kid = Kid::spawn(Launch::Nohup, &[("WR_MODE", "runtime")]);
    let before = kid.expect("sigign before=");
    assert!(before.contains("SIGHUP"), "{before}");
    let runtime = kid.expect("runtime ");
    assert!(
        runtime.contains("signals: Some([Interrupt, Terminate])"),
        "SIGHUP is not hooked: {runtime}"
    );
    let after = kid.expect("sigign after=");
    assert!(after.contains("SIGHUP"), "still SIG_IGN: {after}");
    kid.expect("ready");
    kid.signal(Sig::SIGHUP);
    kid.signal(Sig::SIGTERM);
    let (status, _) = kid.wait_exit();
    assert_eq!(code(status), Some(130), "{}", kid.context());
    assert_eq!(kid.reason(), "Signal(Terminate)");
}

#[test]
fn signals_inherited_as_ignored_through_a_shell_trap_stay_ignored() {
    let mut kid = Kid::spawn(Launch::Trap, &[("WR_MODE", "runtime")]);
    let before = kid.expect("sigign before=");
    assert_eq!(before, "sigign before=SIGINT,SIGHUP");
    let runtime = kid.expect("runtime ");
    assert!(runtime.contains("signals: Some([Terminate])"), "{runtime}");
    assert_eq!(kid.expect("sigign after="), "sigign after=SIGINT,SIGHUP");
    kid.expect("ready");
    kid.signal(Sig::SIGHUP);
    kid.signal(Sig::SIGINT);
    kid.signal(Sig::SIGTERM);
    let (status, _) = kid.wait_exit();
    assert_eq!(code(status), Some(130), "{}", kid.context());
    assert_eq!(kid.reason(), "Signal(Terminate)");
}

#[test]
fn with_honor_ignored_off_an_inherited_ignore_is_hooked_anyway() {
    let env = [("WR_MODE", "runtime"), ("WR_HONOR", "0")];
    let mut kid = Kid::spawn(Launch::Nohup, &env);
    assert!(kid.expect("sigign before=").contains("SIGHUP"));
    let after = kid.expect("sigign after=");
    assert!(!after.contains("SIGHUP"), "hooked: {after}");
    kid.expect("ready");
    kid.signal(Sig::SIGHUP);
    let (status, _) = kid.wait_exit();
    assert_eq!(code(status), Some(130), "{}", kid.context());
    assert_eq!(kid.reason(), "Signal(Hangup)");
}

#[test]
fn a_signal_outside_the_configured_set_keeps_its_default_action() {
    let env = [("WR_MODE", "runtime"), ("WR_SET", "TERM,INT")];
    let mut kid = Kid::spawn(Launch::Plain, &env);
    kid.expect("ready");
    kid.signal(Sig::SIGHUP);
    let (status, _) = kid.wait_exit();
    assert_eq!(status.signal(), Some(1), "killed by SIGHUP: {status:?}");
    assert!(kid.report().is_none(), "{}", kid.context());
}

#[test]
fn with_no_runtime_nothing_is_installed() {
    let mut kid = Kid::spawn(Launch::Plain, &[("WR_MODE", "bare")]);
    kid.expect("ready");
    kid.signal(Sig::SIGTERM);
    let (status, _) = kid.wait_exit();
    assert_eq!(status.signal(), Some(15), "killed by SIGTERM: {status:?}");
    assert!(!kid.saw("still alive"));
}

#[test]
fn a_program_with_its_own_handler_still_gets_a_runtime_and_both_hear_the_signal() {
    // signal-hook chains the handler installed before it (here ctrlc's), so
    // there is no "handler taken" on Unix.
    let env = [("WR_MODE", "runtime"), ("WR_CTRLC", "1")];
    let mut kid = Kid::spawn(Launch::Plain, &env);
    kid.expect("ready");
    kid.signal(Sig::SIGINT);
    kid.expect("program handler saw SIGINT");
    let (status, _) = kid.wait_exit();
    assert_eq!(code(status), Some(130), "{}", kid.context());
    assert_eq!(kid.reason(), "Signal(Interrupt)");
}
