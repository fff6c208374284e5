//! systemd's notification protocol, on real processes: each test binds a
//! `UnixDatagram` that stands in for systemd (a socket file in a temporary
//! directory, or a Linux abstract name), runs the `batch` or `server`
//! example with `NOTIFY_SOCKET` pointing at it, waits for its `ready` line
//! (never a sleep), sends real signals, and checks the datagrams: which,
//! in what order, and that the `EXTEND_TIMEOUT_USEC` values cover the grace
//! the program was given. `notify_systemd(false)` and the environment cases
//! run an in-process runtime in a child copy of this test binary, so the
//! environment is set for the child only (never with `set_var` here).
//!
//! Every timeout below is a "does not hang" bound, never a synchronisation.

#![cfg(all(unix, feature = "systemd"))]

mod support;

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::Signal;
use support::process::{example, Child, Ledger};

/// Generous: a debug build on two busy cores. Only "does not hang".
const HANG: Duration = Duration::from_secs(30);
/// The runtime's documented margin on every extension.
const MARGIN: Duration = Duration::from_secs(1);
/// What the reader thread takes as "the test is done with this socket".
const SENTINEL: &str = "winddown-test: end";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ===== A stand-in for systemd =====

/// One datagram, stamped when the reader thread took it.
#[derive(Debug, Clone)]
struct Msg {
    at: Instant,
    text: String,
}

impl Msg {
    /// The value of `key` in this datagram, if it has the key.
    fn get(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    fn extend(&self) -> Option<Duration> {
        self.get("EXTEND_TIMEOUT_USEC")
            .map(|v| Duration::from_micros(v.parse().expect("EXTEND_TIMEOUT_USEC is a number")))
    }
}

/// A datagram socket standing in for systemd, read continuously by a
/// thread (so the child never finds the queue full), the datagrams kept in
/// order.
struct Manager {
    /// The value for `NOTIFY_SOCKET`.
    env: String,
    addr: SocketAddr,
    /// Keeps a socket file's directory (and the child's files) alive.
    dir: tempfile::TempDir,
    messages: Receiver<Msg>,
    reader: Option<JoinHandle<()>>,
    /// Every datagram taken so far, in order.
    log: Vec<Msg>,
}

impl Manager {
    /// Binds a socket file in a fresh temporary directory.
    fn bind_path() -> Manager {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the socket");
        let addr = SocketAddr::from_pathname(&path).expect("a socket address");
        Manager::start(path.display().to_string(), addr, socket, dir)
    }

    /// Binds a Linux abstract name (no file at all).
    #[cfg(target_os = "linux")]
    fn bind_abstract() -> Manager {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("winddown-test-{}-{}", std::process::id(), fastrand::u64(..));
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract address");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract name");
        let dir = tempfile::tempdir().expect("temporary directory");
        Manager::start(format!("@{name}"), addr, socket, dir)
    }

    fn start(
        env: String,
        addr: SocketAddr,
        socket: UnixDatagram,
        dir: tempfile::TempDir,
    ) -> Manager {
        let (tx, messages) = crossbeam_channel::unbounded();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text == SENTINEL {
                    break;
                }
                if tx
                    .send(Msg {
                        at: Instant::now(),
                        text,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        Manager {
            env,
            addr,
            dir,
            messages,
            reader: Some(reader),
            log: Vec::new(),
        }
    }

    /// Takes datagrams until one satisfies `want`, within `within`; returns
    /// it. Panics on timeout with what came.
    fn wait_for(&mut self, what: &str, within: Duration, want: impl Fn(&Msg) -> bool) -> Msg {
        if let Some(m) = self.log.iter().find(|m| want(m)) {
            return m.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            match self.messages.recv_deadline(deadline) {
                Ok(m) => {
                    self.log.push(m.clone());
                    if want(&m) {
                        return m;
                    }
                }
                Err(e) => panic!(
                    "no {what} within {within:?} ({e:?}); got {:#?}",
                    self.texts()
                ),
            }
        }
    }

    /// Stops the reader (after everything the child sent before the
    /// sentinel) and returns every datagram, in order.
    fn finish(&mut self) -> Vec<Msg> {
        self.stop_reader();
        let mut log = std::mem::take(&mut self.log);
        loop {
            match self.messages.recv_timeout(HANG) {
                Ok(m) => log.push(m),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the reader did not stop"),
            }
        }
        log
    }

    fn stop_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let me = UnixDatagram::unbound().expect("a socket");
            me.send_to_addr(SENTINEL.as_bytes(), &self.addr)
                .expect("send the sentinel");
            reader.join().expect("the reader thread");
        }
    }

    fn texts(&self) -> Vec<String> {
        self.log.iter().map(|m| m.text.clone()).collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop_reader();
    }
}

/// Index of the first datagram that `want` accepts; panics with the whole
/// sequence if none does.
fn index(log: &[Msg], what: &str, want: impl Fn(&Msg) -> bool) -> usize {
    log.iter()
        .position(want)
        .unwrap_or_else(|| panic!("no {what} in {:#?}", texts(log)))
}

fn texts(log: &[Msg]) -> Vec<&str> {
    log.iter().map(|m| m.text.as_str()).collect()
}

/// Prints the sequence, one datagram per line with `\n` shown as ` | `,
/// stamped from the first one (shown with `--nocapture`).
fn show(title: &str, log: &[Msg]) {
    let Some(first) = log.first() else {
        println!("{title}: no datagrams");
        return;
    };
    println!("{title}:");
    for m in log {
        println!(
            "  +{:>7.1} ms  {}",
            (m.at - first.at).as_secs_f64() * 1e3,
            m.text.replace('\n', " | ")
        );
    }
}

// ===== Children =====

/// Whether this test process inherited INT, TERM, HUP or QUIT as ignored
/// (the child would inherit it too, and the runtime honours it).
fn ignores_stop_signals() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    [1, 2, 3, 15].iter().any(|sig| mask & (1 << (sig - 1)) != 0)
}

/// Runs `program args…` with `vars` set, through `env` (which execs, so the
/// child's pid is the program's). `watchdog_pid_is_self` sets
/// `WATCHDOG_PID` to the program's own pid, through a shell that execs.
fn spawn_with_env(
    program: &Path,
    vars: &[(&str, String)],
    watchdog_pid_is_self: bool,
    args: &[&str],
    stderr: &Path,
) -> Child {
    let mut argv: Vec<String> = Vec::new();
    if watchdog_pid_is_self {
        argv.extend(
            ["sh", "-c", "export WATCHDOG_PID=$$; exec env \"$@\"", "sh"].map(String::from),
        );
    } else {
        argv.push("env".into());
    }
    if ignores_stop_signals() {
        argv.push("--default-signal=INT,TERM,HUP,QUIT".into());
    }
    argv.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
    argv.push(program.display().to_string());
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    Child::spawn(Path::new(&argv[0]), &argv[1..], stderr)
}

/// Starts `batch --quiet --ledger <dir>/ledger args…` against `manager`.
fn batch(manager: &Manager, vars: &[(&str, String)], pid_is_self: bool, args: &[&str]) -> Child {
    let ledger = manager.path("ledger").display().to_string();
    let mut all = vec!["--quiet", "--ledger", &ledger];
    all.extend_from_slice(args);
    let mut env = vec![("NOTIFY_SOCKET", manager.env.clone())];
    env.extend(vars.iter().cloned());
    spawn_with_env(
        &example("batch"),
        &env,
        pid_is_self,
        &all,
        &manager.path("stderr"),
    )
}

/// Splits a command line on whitespace.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn is_ready(m: &Msg) -> bool {
    m.has("READY=1")
}

// ===== batch, SIGTERM =====

#[test]
fn batch_says_ready_then_stopping_then_extends_past_its_grace_on_sigterm() {
    let (grace, kill_grace, hook_budget, hooks) = (4_000, 500, 700, 2);
    let mut sd = Manager::bind_path();
    let flags = format!(
        "--items 5000 --work 1ms --workers 2 --grace {grace} --kill-grace {kill_grace} \
         --hooks {hooks} --hook-ms 20 --hook-budget {hook_budget}"
    );
    let mut child = batch(&sd, &[], false, &words(&flags));
    child.expect_line("ready", HANG);
    let ready = sd.wait_for("READY=1", HANG, is_ready);
    let signalled = Instant::now();
    child.signal(Signal::SIGTERM);
    let exit = child.wait_exit(HANG);
    assert_eq!(exit.code, Some(130), "{}", child.stderr_text());
    let log = sd.finish();
    show("batch, SIGTERM", &log);

    // READY first, with our pid and a status.
    assert_eq!(
        log[0].text,
        format!("READY=1\nMAINPID={}\nSTATUS=running", child.pid()),
        "{:#?}",
        texts(&log)
    );
    assert_eq!(ready.text, log[0].text);
    // Then STOPPING with the reason, carrying the first extension.
    let stopping = index(&log, "STOPPING=1", |m| m.has("STOPPING=1"));
    assert!(stopping > 0);
    let stop = &log[stopping];
    assert!(stop.has("STATUS=stopping (signal SIGTERM)"), "{stop:?}");
    // The extension at the trigger covers the whole stop: the grace left
    // (all of it, less the time from our kill to its send) + kill grace +
    // the release hooks' budgets + the margin, and never more.
    let release = ms(hook_budget * hooks);
    let whole = ms(grace) + ms(kill_grace) + release + MARGIN;
    let cover = stop.extend().expect("EXTEND_TIMEOUT_USEC at the trigger");
    assert!(cover <= whole, "{cover:?} > {whole:?}");
    assert!(
        cover + (stop.at - signalled) >= whole,
        "{cover:?} + {:?} < {whole:?}",
        stop.at - signalled
    );
    // So systemd's stop timeout now runs past the runtime's own bound.
    assert!(stop.at + cover >= signalled + ms(grace) + ms(kill_grace) + release);

    // Each phase says so, with what is left from then: the drain the grace
    // (less what has passed), the release the hooks' budgets.
    let draining = index(&log, "STATUS=draining", |m| m.has("STATUS=draining"));
    let releasing = index(&log, "STATUS=releasing", |m| m.has("STATUS=releasing"));
    assert!(
        stopping < draining && draining < releasing,
        "{:#?}",
        texts(&log)
    );
    let d = log[draining].extend().expect("an extension at Draining");
    assert!(d <= whole && d >= release + MARGIN, "{d:?}");
    let r = log[releasing].extend().expect("an extension at Releasing");
    assert!(
        r <= release + MARGIN && r + (log[releasing].at - signalled) >= release,
        "{r:?}"
    );
    assert!(
        !log.iter().any(|m| m.has("STATUS=hard_stop")),
        "a clean drain"
    );

    // The last word: the report's summary, sent before the process exited
    // (the notifier is joined before `run` returns).
    let last = log.last().expect("datagrams");
    let summary = last.get("STATUS").expect("a final status");
    assert!(summary.starts_with("stopped ("), "{summary}");
    assert!(summary.ends_with("exit code 130"), "{summary}");
    assert!(!summary.contains('\n'));
    // No watchdog was asked for.
    assert!(!log.iter().any(|m| m.has("WATCHDOG=1")));
    // Every item still accounted for.
    Ledger::read(&sd.path("ledger")).assert_at_most_once();
}

#[test]
fn a_drain_that_hits_the_deadline_is_extended_at_the_hard_stop_for_the_kill_grace() {
    let (kill_grace, hook_budget) = (600, 500);
    let mut sd = Manager::bind_path();
    let flags = format!(
        "--items 1000 --work 1ms --workers 2 --coop-stuck 1 --grace 300 \
         --kill-grace {kill_grace} --hooks 1 --hook-ms 10 --hook-budget {hook_budget}"
    );
    let mut child = batch(&sd, &[], false, &words(&flags));
    child.expect_line("ready", HANG);
    child.expect_line("stuck 1", HANG);
    sd.wait_for("READY=1", HANG, is_ready);
    child.signal(Signal::SIGTERM);
    // The hard stop fired: a failure.
    assert_eq!(
        child.wait_exit(HANG).code,
        Some(1),
        "{}",
        child.stderr_text()
    );
    let log = sd.finish();
    show("batch, SIGTERM, a job until the hard stop", &log);

    let order: Vec<usize> = [
        "READY=1",
        "STOPPING=1",
        "STATUS=draining",
        "STATUS=hard_stop",
        "STATUS=releasing",
    ]
    .iter()
    .map(|line| index(&log, line, |m| m.has(line)))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{:#?}", texts(&log));
    // At the hard stop: what is left of the kill grace + the hook + margin.
    let hard = &log[order[3]];
    let cover = hard.extend().expect("an extension at HardStop");
    let release = ms(hook_budget);
    assert!(cover <= ms(kill_grace) + release + MARGIN, "{cover:?}");
    assert!(cover >= release + MARGIN, "{cover:?}");
    let summary = log.last().and_then(|m| m.get("STATUS")).expect("final");
    assert!(
        summary.starts_with("stopped (") && summary.ends_with("exit code 1"),
        "{summary}"
    );
}

// ===== The watchdog =====

#[test]
fn the_watchdog_beats_repeatedly_when_watchdog_pid_is_ours() {
    let mut sd = Manager::bind_path();
    let mut child = batch(
        &sd,
        &[("WATCHDOG_USEC", "200000".into())],
        true,
        &["--items", "1", "--work", "1ms", "--keep-open"],
    );
    child.expect_line("ready", HANG);
    sd.wait_for("READY=1", HANG, is_ready);
    // Two beats (every 100 ms), within a bound that only says "not hung".
    let first = sd
        .wait_for("a WATCHDOG=1", HANG, |m| m.has("WATCHDOG=1"))
        .at;
    sd.wait_for("a second WATCHDOG=1", HANG, |m| {
        m.has("WATCHDOG=1") && m.at > first
    });
    child.signal(Signal::SIGTERM);
    assert_eq!(
        child.wait_exit(HANG).code,
        Some(130),
        "{}",
        child.stderr_text()
    );
    let log = sd.finish();
    let beats = log.iter().filter(|m| m.text == "WATCHDOG=1").count();
    assert!(beats >= 2, "{:#?}", texts(&log));
    // The beat is a datagram of its own, and the run still ends in order.
    let stopping = index(&log, "STOPPING=1", |m| m.has("STOPPING=1"));
    assert!(index(&log, "READY=1", is_ready) < stopping);
    assert!(log.last().unwrap().text.starts_with("STATUS=stopped ("));
}

#[test]
fn no_watchdog_is_sent_when_watchdog_pid_is_another_process() {
    let mut sd = Manager::bind_path();
    // 200 items of 2 ms on one worker: the run lasts at least 400 ms of CPU,
    // eight of the 50 ms beats that WATCHDOG_USEC would ask for.
    let mut child = batch(
        &sd,
        &[
            ("WATCHDOG_USEC", "100000".into()),
            ("WATCHDOG_PID", "1".into()),
        ],
        false,
        &[
            "--items",
            "200",
            "--work",
            "2ms",
            "--workers",
            "1",
            "--capacity",
            "1",
        ],
    );
    child.expect_line("ready", HANG);
    sd.wait_for("READY=1", HANG, is_ready);
    assert_eq!(
        child.wait_exit(HANG).code,
        Some(0),
        "{}",
        child.stderr_text()
    );
    let log = sd.finish();
    assert!(
        !log.iter().any(|m| m.has("WATCHDOG=1")),
        "{:#?}",
        texts(&log)
    );
    let stop = index(&log, "STOPPING=1", |m| m.has("STOPPING=1"));
    assert!(log[stop].has("STATUS=stopping (completed)"));
    assert!(log.last().unwrap().text.ends_with("exit code 0"));
}

// ===== Sockets that are odd or gone =====

#[cfg(target_os = "linux")]
#[test]
fn an_abstract_socket_name_is_spoken_to() {
    let mut sd = Manager::bind_abstract();
    assert!(sd.env.starts_with('@'));
    let mut child = batch(&sd, &[], false, &["--items", "30", "--work", "1ms"]);
    child.expect_line("ready", HANG);
    sd.wait_for("READY=1", HANG, is_ready);
    assert_eq!(
        child.wait_exit(HANG).code,
        Some(0),
        "{}",
        child.stderr_text()
    );
    let log = sd.finish();
    show("batch over an abstract name, completing", &log);
    let order: Vec<usize> = [
        "READY=1",
        "STOPPING=1",
        "STATUS=draining",
        "STATUS=releasing",
    ]
    .iter()
    .map(|line| index(&log, line, |m| m.has(line)))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{:#?}", texts(&log));
    assert!(log[order[1]].has("STATUS=stopping (completed)"));
    assert!(log[order[1]].extend().is_some());
    let summary = log.last().and_then(|m| m.get("STATUS")).expect("final");
    assert!(
        summary.starts_with("stopped (") && summary.ends_with("exit code 0"),
        "{summary}"
    );
}

#[test]
fn a_socket_that_does_not_exist_does_not_break_the_run() {
    let mut sd = Manager::bind_path();
    let missing = sd.path("no-such-socket").display().to_string();
    let ledger = sd.path("ledger").display().to_string();
    let mut child = spawn_with_env(
        &example("batch"),
        &[
            ("NOTIFY_SOCKET", missing),
            ("WATCHDOG_USEC", "10000".into()),
        ],
        false,
        &[
            "--quiet", "--ledger", &ledger, "--items", "200", "--work", "1ms",
        ],
        &sd.path("stderr"),
    );
    child.expect_line("ready", HANG);
    assert_eq!(
        child.wait_exit(HANG).code,
        Some(0),
        "{}",
        child.stderr_text()
    );
    Ledger::read(&sd.path("ledger")).assert_accounted(200);
    assert!(sd.finish().is_empty(), "nothing reached the real socket");
}

#[test]
fn a_socket_that_goes_away_mid_run_does_not_break_the_stop() {
    let mut sd = Manager::bind_path();
    let mut child = batch(
        &sd,
        &[("WATCHDOG_USEC", "20000".into())],
        false,
        &["--items", "5000", "--work", "1ms", "--workers", "2"],
    );
    child.expect_line("ready", HANG);
    sd.wait_for("READY=1", HANG, is_ready);
    // systemd goes away: the socket closes and its file is removed.
    sd.stop_reader();
    std::fs::remove_file(sd.path("notify")).expect("remove the socket file");
    child.signal(Signal::SIGTERM);
    assert_eq!(
        child.wait_exit(HANG).code,
        Some(130),
        "{}",
        child.stderr_text()
    );
    Ledger::read(&sd.path("ledger")).assert_at_most_once();
}

// ===== The server example =====

#[cfg(feature = "http")]
#[test]
fn the_server_example_speaks_it_too() {
    let (grace, kill_grace) = (3_000, 500);
    let mut sd = Manager::bind_path();
    let flags = format!("--addr 127.0.0.1:0 --workers 2 --grace {grace} --kill-grace {kill_grace}");
    let mut child = spawn_with_env(
        &example("server"),
        &[("NOTIFY_SOCKET", sd.env.clone())],
        false,
        &words(&flags),
        &sd.path("stderr"),
    );
    child.expect_line("ready", HANG);
    let ready = sd.wait_for("READY=1", HANG, is_ready);
    assert_eq!(ready.get("MAINPID"), Some(child.pid().to_string().as_str()));
    let signalled = Instant::now();
    child.signal(Signal::SIGTERM);
    assert_eq!(
        child.wait_exit(HANG).code,
        Some(130),
        "{}",
        child.stderr_text()
    );
    let log = sd.finish();
    show("server, SIGTERM", &log);
    let stopping = index(&log, "STOPPING=1", |m| m.has("STOPPING=1"));
    let stop = &log[stopping];
    assert!(stop.has("STATUS=stopping (signal SIGTERM)"), "{stop:?}");
    let cover = stop.extend().expect("an extension at the trigger");
    assert!(
        cover + (stop.at - signalled) >= ms(grace) + ms(kill_grace) + MARGIN,
        "{cover:?}"
    );
    let releasing = index(&log, "STATUS=releasing", |m| m.has("STATUS=releasing"));
    assert!(index(&log, "READY=1", is_ready) < stopping && stopping < releasing);
    assert!(log.last().unwrap().text.starts_with("STATUS=stopped ("));
}

// ===== An in-process runtime, in a child copy of this binary =====

/// The child's side: builds a runtime (systemd notifications on or off by
/// `WINDDOWN_TEST_NOTIFY`), checks that building it started the notifier
/// thread or not as `WINDDOWN_TEST_EXPECT_THREAD` says, runs 10 jobs to
/// completion, and checks that no thread is left. Run only by
/// `run_child_runtime`, with the environment it sets.
#[test]
#[ignore = "run by the tests below, in a child process"]
fn child_runtime() {
    let notify = std::env::var("WINDDOWN_TEST_NOTIFY").expect("run by the parent test") == "on";
    let expect_thread = std::env::var("WINDDOWN_TEST_EXPECT_THREAD").as_deref() == Ok("1");
    let before = threads();
    let mut rt = winddown::Runtime::builder()
        .signals(false)
        .notify_systemd(notify)
        .build()
        .expect("build");
    // Signals off and no unit yet: the notifier is the only thread `build`
    // may start.
    assert_eq!(threads() - before, usize::from(expect_thread));
    let pool = rt
        .pool::<u32>("jobs")
        .workers(1)
        .start(|_, _| Ok(()))
        .expect("pool");
    for i in 0..10 {
        pool.submit(i).expect("running");
    }
    drop(pool);
    let report = rt.run();
    assert_eq!(report.pools[0].succeeded, 10);
    // Every thread the runtime started, the notifier included, is joined
    // by the time `run` returns. A joined thread can still be listed for a
    // moment (the kernel clears its tid, which `join` waits for, before it
    // reaps the task), and nothing notifies its removal: re-read for up to
    // a second (the linger is microseconds; a thread that was not joined
    // but is still exiting a second later fails), then judge.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while threads() > before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(threads(), before, "a thread was left behind");
}

/// How many threads this process has (a thread is listed from its clone
/// on, before it has run or named itself).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("/proc").count()
}

/// Runs `child_runtime` in a child process with `NOTIFY_SOCKET` set to
/// `socket` (or removed if `None`) and a fast watchdog; asserts it passed.
fn run_child_runtime(socket: Option<&str>, notify: bool, expect_thread: bool) {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--ignored", "--exact", "child_runtime", "--test-threads=1"])
        .env("WINDDOWN_TEST_NOTIFY", if notify { "on" } else { "off" })
        .env(
            "WINDDOWN_TEST_EXPECT_THREAD",
            if expect_thread { "1" } else { "0" },
        )
        .env("WATCHDOG_USEC", "20000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null());
    match socket {
        Some(s) => cmd.env("NOTIFY_SOCKET", s),
        None => cmd.env_remove("NOTIFY_SOCKET"),
    };
    let out = cmd.output().expect("run the child test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_in_process_runtime_speaks_and_leaves_no_thread_behind() {
    let mut sd = Manager::bind_path();
    run_child_runtime(Some(&sd.env), true, true);
    let log = sd.finish();
    let ready = index(&log, "READY=1", is_ready);
    let stopping = index(&log, "STOPPING=1", |m| m.has("STOPPING=1"));
    assert!(ready < stopping, "{:#?}", texts(&log));
    let summary = log.last().and_then(|m| m.get("STATUS")).expect("final");
    assert!(
        summary.starts_with("stopped (") && summary.contains("completed"),
        "{summary}"
    );
}

#[test]
fn nothing_is_sent_with_notify_systemd_false() {
    let mut sd = Manager::bind_path();
    run_child_runtime(Some(&sd.env), false, false);
    let log = sd.finish();
    assert!(log.is_empty(), "{:#?}", texts(&log));
}

#[test]
fn no_thread_starts_when_notify_socket_is_unset_or_unusable() {
    run_child_runtime(None, true, false);
    for bad in ["", "@", "relative/notify", "vsock:2:1234"] {
        run_child_runtime(Some(bad), true, false);
    }
}
