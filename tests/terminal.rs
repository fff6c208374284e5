//! The `batch` demo as people see it. Each test runs the example binary on
//! a real pseudo-terminal (util-linux `script -qfec …`), types a real
//! Ctrl-C into it (the terminal's line discipline turns `^C` into SIGINT for
//! the foreground process, as a keyboard does), and reads what the terminal
//! got as a screen: escape sequences stripped, lines split at carriage
//! returns and newlines.
//!
//! They check the draining line and its numbers, that no protocol line
//! (`ready`, `queue full`, `phase …`) reaches the terminal, that the summary
//! accounts for every item (never submitted = total − submitted, the six
//! outcomes add up to the total) and agrees with the JSON report and the
//! ledger, that the resume hint is true, and that a second Ctrl-C does what
//! the draining line says. One test checks that a piped stdout still gets
//! the protocol.
//!
//! Needs `script` from util-linux (Debian and Ubuntu: package `bsdutils`,
//! essential, so nearly always there). Without it each terminal test says
//! so loudly on stderr and returns.

#![cfg(unix)]

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::process::{example, Child, Ledger};

/// Generous: a debug build on two busy cores. Only "does not hang".
const HANG: Duration = Duration::from_secs(30);
/// Comfortably outside the signal router's 100 ms duplicate window.
const OUTSIDE_WINDOW: Duration = Duration::from_millis(300);
/// The pool's shape in every run here: fixed, so no bound depends on the
/// machine's core count.
const WORKERS: u64 = 2;
const CAPACITY: u64 = 8;

/// Whether util-linux `script` can run here; if not, says so loudly.
fn have_script(test: &str) -> bool {
    let ok = Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED {test}: util-linux `script` is not installed \
             (Debian/Ubuntu: apt-get install bsdutils); the terminal tests cannot run"
        );
    }
    ok
}

/// Quotes `s` for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Removes terminal escape sequences (CSI `ESC [ … final`, and two-byte
/// `ESC x`) and splits the rest into lines at `\r` and `\n`: what the
/// lines of the screen were, each as it was last written.
fn screen_lines(raw: &str) -> Vec<String> {
    let mut text = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            text.push(c);
            continue;
        }
        if chars.next_if_eq(&'[').is_some() {
            // Parameters and intermediates, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    text.split(['\r', '\n'])
        .map(|l| l.trim_end().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The `batch` example on a pseudo-terminal of 120 × 40, through `script`.
struct Terminal {
    /// The `script` process; the example is its child (`exec`).
    script: Pid,
    /// `script` forwards what is written here to the terminal, as typing.
    keys: Option<ChildStdin>,
    output: Receiver<Vec<u8>>,
    exit: Receiver<ExitStatus>,
    /// Everything the terminal received so far.
    raw: Vec<u8>,
    /// Where the ledger and the JSON report go.
    dir: PathBuf,
    status: Option<ExitStatus>,
}

impl Terminal {
    /// Starts `batch --workers 2 --capacity 8 --ledger <dir>/ledger
    /// --report <dir>/report.json args…` on a new terminal.
    fn start(dir: &Path, args: &[&str]) -> Terminal {
        let ledger = dir.join("ledger").display().to_string();
        let report = dir.join("report.json").display().to_string();
        let workers = WORKERS.to_string();
        let capacity = CAPACITY.to_string();
        let mut argv = vec![
            "--workers",
            &workers,
            "--capacity",
            &capacity,
            "--ledger",
            &ledger,
            "--report",
            &report,
        ];
        argv.extend_from_slice(args);
        let mut cmd = format!(
            "stty cols 120 rows 40 && exec {}",
            sh_quote(&example("batch").display().to_string())
        );
        for a in argv {
            cmd.push(' ');
            cmd.push_str(&sh_quote(a));
        }
        let mut child = Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .env("TERM", "xterm-256color")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn script");
        let script = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        let keys = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (chunk_tx, output) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if chunk_tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let (exit_tx, exit) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Terminal {
            script,
            keys,
            output,
            exit,
            raw: Vec::new(),
            dir: dir.to_owned(),
            status: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The screen's lines so far.
    fn lines(&self) -> Vec<String> {
        screen_lines(&String::from_utf8_lossy(&self.raw))
    }

    /// Reads the terminal until `done` holds for its lines; panics with the
    /// screen after `HANG` or if the terminal closes first.
    fn wait_for(&mut self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + HANG;
        while !done(&self.lines()) {
            match self.output.recv_deadline(deadline) {
                Ok(chunk) => self.raw.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {HANG:?}; screen:\n{}", self.screen())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the terminal closed before {what}; screen:\n{}",
                        self.screen()
                    )
                }
            }
        }
    }

    /// Waits for a line that starts with `prefix`.
    fn wait_line(&mut self, prefix: &str) {
        self.wait_for(&format!("line {prefix:?}"), |lines| {
            lines.iter().any(|l| l.starts_with(prefix))
        });
    }

    /// Waits until the progress bar shows at least `n` items done.
    fn wait_done(&mut self, n: u64) {
        self.wait_for(&format!("{n} items done"), |lines| {
            lines.iter().filter_map(|l| bar_position(l)).any(|p| p >= n)
        });
    }

    /// Types Ctrl-C.
    fn ctrl_c(&mut self) {
        let keys = self.keys.as_mut().expect("the terminal is open");
        keys.write_all(b"\x03").expect("type Ctrl-C");
        keys.flush().expect("type Ctrl-C");
    }

    /// Reads the terminal to its end and waits for the example's exit code
    /// (`script -e` passes it on); "does not hang" bound.
    fn finish(&mut self) -> i32 {
        let deadline = Instant::now() + HANG;
        loop {
            match self.output.recv_deadline(deadline) {
                Ok(chunk) => self.raw.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the terminal did not close within {HANG:?}:\n{}",
                        self.screen()
                    )
                }
            }
        }
        let status = self
            .exit
            .recv_deadline(deadline)
            .unwrap_or_else(|_| panic!("script did not exit:\n{}", self.screen()));
        self.status = Some(status);
        self.keys = None;
        status
            .code()
            .unwrap_or_else(|| panic!("script died of a signal: {status:?}"))
    }

    /// The screen, for failure messages.
    fn screen(&self) -> String {
        self.lines().join("\n")
    }

    fn report(&self) -> Value {
        let bytes = std::fs::read(self.path("report.json")).expect("the JSON report exists");
        serde_json::from_slice(&bytes).expect("the report is valid JSON")
    }

    fn ledger(&self) -> Ledger {
        Ledger::read(&self.path("ledger"))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // A failed test must not leave the example behind: it is `script`'s
        // child (the shell `exec`ed it).
        if self.status.is_none() {
            let children = format!("/proc/{0}/task/{0}/children", self.script);
            for pid in std::fs::read_to_string(children)
                .unwrap_or_default()
                .split_whitespace()
            {
                if let Ok(pid) = pid.parse() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            let _ = kill(self.script, Signal::SIGKILL);
        }
    }
}

/// The items done that a progress-bar line shows (`… 523/20000 items …`).
fn bar_position(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "items")?;
    let (done, _) = words.get(i.checked_sub(1)?)?.split_once('/')?;
    done.parse().ok()
}

/// Whether a screen line holds a line of the machine-readable protocol:
/// none may reach a terminal. A line printed while the progress bar is
/// drawn follows the bar's padding on the same screen line, so each part
/// between runs of spaces is checked, as is a `^C` echo before it.
fn is_protocol(line: &str) -> bool {
    line.split("  ").map(str::trim).any(|part| {
        let part = part.strip_prefix("^C").unwrap_or(part);
        matches!(
            part,
            "ready" | "queue full" | "checkpoint begin" | "checkpoint end"
        ) || part.starts_with("phase ")
            || part.starts_with("stuck ")
    })
}

fn assert_no_protocol(lines: &[String]) {
    let leaked: Vec<&String> = lines.iter().filter(|l| is_protocol(l)).collect();
    assert!(
        leaked.is_empty(),
        "protocol lines on the terminal: {leaked:?}\n{}",
        lines.join("\n")
    );
}

/// The draining line: `(in flight, queued, the rest of the line)`.
fn draining(lines: &[String]) -> (u64, u64, String) {
    let line = lines
        .iter()
        .find(|l| l.starts_with("draining "))
        .unwrap_or_else(|| panic!("no draining line:\n{}", lines.join("\n")));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |i: usize| -> u64 {
        words[i]
            .trim_end_matches(',')
            .parse()
            .unwrap_or_else(|_| panic!("no number at word {i} of {line:?}"))
    };
    assert_eq!(&words[2..4], ["in", "flight,"], "{line:?}");
    assert_eq!(words[5], "queued", "{line:?}");
    (number(1), number(4), line.clone())
}

/// The summary's rows, by label.
#[derive(Debug)]
struct Summary {
    items: u64,
    done: u64,
    failed: u64,
    panicked: u64,
    handed_back: u64,
    abandoned: u64,
    never_submitted: u64,
    /// The `(N items − S submitted)` note's S.
    submitted_note: u64,
    exit_code: i32,
}

impl Summary {
    fn parse(lines: &[String]) -> Summary {
        let row = |label: &str| -> String {
            lines
                .iter()
                .filter_map(|l| l.trim_start().strip_prefix(label))
                .find(|rest| rest.starts_with("  "))
                .map(|rest| rest.trim().to_owned())
                .unwrap_or_else(|| panic!("no summary row {label:?}:\n{}", lines.join("\n")))
        };
        let number = |label: &str| -> u64 {
            let text = row(label);
            let first = text.split_whitespace().next().unwrap_or_default();
            first
                .parse()
                .unwrap_or_else(|_| panic!("row {label:?} is {text:?}"))
        };
        let never = row("never submitted");
        let submitted_note = never
            .split_once('−')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no `− S submitted` note in {never:?}"));
        Summary {
            items: number("items"),
            done: number("done"),
            failed: number("failed"),
            panicked: number("panicked"),
            handed_back: number("handed back"),
            abandoned: number("abandoned"),
            never_submitted: number("never submitted"),
            submitted_note,
            exit_code: i32::try_from(number("exit code")).expect("small exit code"),
        }
    }

    /// The six outcomes; each item has exactly one.
    fn outcomes(&self) -> u64 {
        self.done
            + self.failed
            + self.panicked
            + self.handed_back
            + self.abandoned
            + self.never_submitted
    }
}

#[test]
fn ctrl_c_in_a_terminal_drains_and_the_summary_accounts_for_every_item() {
    if !have_script("ctrl_c_in_a_terminal_drains_and_the_summary_accounts_for_every_item") {
        return;
    }
    let items = 20_000;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut term = Terminal::start(dir.path(), &["--items", "20000", "--work", "1-3ms"]);
    term.wait_line("press Ctrl-C to stop");
    term.wait_done(50);
    term.ctrl_c();
    let code = term.finish();
    let lines = term.lines();
    let screen = lines.join("\n");
    assert_eq!(code, 130, "{screen}");
    assert_no_protocol(&lines);

    // The draining line, with the numbers a pool of 2 workers and a queue
    // of 8 can hold (a worker may hold an item it has not yet counted as
    // started: at most one each).
    let (in_flight, queued, line) = draining(&lines);
    assert!(in_flight <= WORKERS, "{line}");
    assert!(queued <= CAPACITY + WORKERS, "{line}");
    assert!(line.ends_with("— Ctrl-C again to exit now"), "{line}");
    let releasing = lines.iter().position(|l| l.starts_with("releasing…"));
    let drain_at = lines.iter().position(|l| l.starts_with("draining "));
    assert!(releasing > drain_at, "phases out of order:\n{screen}");

    // The summary adds up, and says what the report and the ledger say.
    let summary = Summary::parse(&lines);
    let report = term.report();
    let pool = &report["pools"][0];
    let submitted = pool["submitted"].as_u64().expect("submitted");
    assert_eq!(summary.items, items, "{screen}");
    assert_eq!(summary.never_submitted, items - submitted, "{screen}");
    assert_eq!(summary.submitted_note, submitted, "{screen}");
    assert_eq!(summary.outcomes(), items, "{summary:?}");
    assert!(
        summary.never_submitted > 0,
        "the run was cut short: {summary:?}"
    );
    for (shown, field) in [
        (summary.done, "succeeded"),
        (summary.failed, "failed"),
        (summary.panicked, "panicked"),
        (summary.handed_back, "handed_back"),
        (summary.abandoned, "abandoned"),
    ] {
        assert_eq!(Some(shown), pool[field].as_u64(), "{field}: {screen}");
    }
    assert_eq!(summary.exit_code, 130, "{screen}");
    // The queued count is real: every item handed back was queued when the
    // line was printed (the producer counts an accepted item just after its
    // submit returns, so one may be missing from the count).
    assert!(
        summary.handed_back <= queued + 1,
        "{} handed back, but the draining line said {queued} queued:\n{screen}",
        summary.handed_back
    );
    let ledger = term.ledger();
    assert_eq!(
        ledger.count("unsubmitted") as u64,
        summary.never_submitted,
        "{screen}"
    );
    ledger.assert_accounted(items);
    let drain = lines
        .iter()
        .find(|l| l.trim_start().starts_with("drain latency"))
        .unwrap_or_else(|| panic!("no drain latency row:\n{screen}"));
    assert!(drain.ends_with(" ms") || drain.ends_with(" s"), "{drain}");

    // The report's own one-line summary follows.
    assert!(
        lines.iter().any(|l| l.starts_with("stopped (signal); ")),
        "{screen}"
    );
}

#[test]
fn the_resume_hint_names_a_run_that_does_exactly_the_items_left() {
    if !have_script("the_resume_hint_names_a_run_that_does_exactly_the_items_left") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let ledger = dir.path().join("ledger");
    let mut first = Terminal::start(dir.path(), &["--items", "3000"]);
    first.wait_done(50);
    first.ctrl_c();
    assert_eq!(first.finish(), 130, "{}", first.screen());
    let lines = first.lines();
    let summary = Summary::parse(&lines);
    let left = summary.items - summary.done - summary.failed - summary.panicked;
    let hint = lines
        .iter()
        .find(|l| l.starts_with("to process the "))
        .unwrap_or_else(|| panic!("no resume hint:\n{}", first.screen()));
    assert!(
        hint.starts_with(&format!("to process the {left} items left, run again")),
        "{hint}"
    );
    let resume = format!("--resume {}", ledger.display());
    assert!(hint.ends_with(&resume), "{hint}");

    // Do what it says: the same options and `--resume <ledger>`; stop the
    // second run at once, only its count matters.
    let resume_from = ledger.display().to_string();
    let args = ["--items", "3000", "--resume", &resume_from];
    let mut second = Terminal::start(dir.path(), &args);
    second.wait_line("press Ctrl-C to stop");
    second.ctrl_c();
    second.finish();
    let lines = second.lines();
    let again = Summary::parse(&lines);
    assert_eq!(again.items, left, "{}", second.screen());
    let skipped = format!(
        "({} more already done per the --resume ledger)",
        3000 - left
    );
    assert!(
        lines.iter().any(|l| l.trim() == skipped),
        "no {skipped:?}:\n{}",
        second.screen()
    );
    assert_no_protocol(&lines);
}

#[test]
fn with_force_exit_off_the_draining_line_promises_no_forced_exit() {
    if !have_script("with_force_exit_off_the_draining_line_promises_no_forced_exit") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    // Two hooks of 1 s: the second Ctrl-C lands while they run.
    let args = [
        "--items",
        "20000",
        "--no-force-exit",
        "--hook-ms",
        "1000",
        "--hook-budget",
        "5000",
    ];
    let mut term = Terminal::start(dir.path(), &args);
    term.wait_done(50);
    let first = Instant::now();
    term.ctrl_c();
    term.wait_line("releasing…");
    // The moment is the test: a distinct delivery, during the hooks.
    std::thread::sleep(OUTSIDE_WINDOW.saturating_sub(first.elapsed()));
    term.ctrl_c();
    let code = term.finish();
    let lines = term.lines();
    assert_eq!(code, 130, "{}", term.screen());
    let (_, _, line) = draining(&lines);
    assert!(!line.contains("exit now"), "{line}");
    assert_no_protocol(&lines);
    assert!(
        line.ends_with("— Ctrl-C is ignored now (--no-force-exit)"),
        "{line}"
    );
    // The run ended with its summary, not cut short.
    assert_eq!(Summary::parse(&lines).exit_code, 130);
}

#[test]
fn a_second_ctrl_c_in_a_terminal_exits_at_once_as_the_draining_line_says() {
    if !have_script("a_second_ctrl_c_in_a_terminal_exits_at_once_as_the_draining_line_says") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let args = [
        "--items",
        "20000",
        "--hooks",
        "1",
        "--hook-ms",
        "20000",
        "--hook-budget",
        "30000",
    ];
    let mut term = Terminal::start(dir.path(), &args);
    term.wait_done(50);
    let first = Instant::now();
    term.ctrl_c();
    term.wait_line("releasing…");
    std::thread::sleep(OUTSIDE_WINDOW.saturating_sub(first.elapsed()));
    term.ctrl_c();
    let code = term.finish();
    let lines = term.lines();
    assert_eq!(code, 3, "{}", term.screen());
    let (_, _, line) = draining(&lines);
    assert!(line.ends_with("— Ctrl-C again to exit now"), "{line}");
    assert_no_protocol(&lines);
    // Cut short: no summary.
    assert!(
        !lines
            .iter()
            .any(|l| l.trim_start().starts_with("never submitted")),
        "{}",
        term.screen()
    );
}

#[test]
fn machine_flag_keeps_the_protocol_on_a_terminal() {
    if !have_script("machine_flag_keeps_the_protocol_on_a_terminal") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut term = Terminal::start(dir.path(), &["--items", "20", "--keep-open", "--machine"]);
    term.wait_line("ready");
    term.ctrl_c();
    assert_eq!(term.finish(), 130, "{}", term.screen());
    let lines = term.lines();
    // In this mode the bar (on stderr, also the terminal) is not suspended
    // around the protocol lines, so a line may follow a bar on its row.
    for want in [
        "ready",
        "phase stop_accepting",
        "phase releasing",
        "phase done",
    ] {
        assert!(
            lines.iter().any(|l| l.ends_with(want)),
            "no {want:?}:\n{}",
            term.screen()
        );
    }
    assert!(!lines.iter().any(|l| l.starts_with("draining ")));
}

#[test]
fn a_piped_stdout_gets_the_protocol_and_no_lines_for_people() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let args: Vec<String> = ["--items", "20", "--keep-open", "--workers", "2"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut child = Child::spawn(&example("batch"), &args, &dir.path().join("stderr"));
    child.expect_line("ready", HANG);
    child.signal(Signal::SIGINT);
    for want in [
        "phase stop_accepting",
        "phase draining",
        "phase releasing",
        "phase done",
    ] {
        child.expect_line(want, HANG);
    }
    let exit = child.wait_exit(HANG);
    assert_eq!(exit.code, Some(130), "{}", child.stderr_text());
    // The detailed report on stderr, as before; no summary for people.
    let stderr = child.stderr_text();
    assert!(stderr.contains("stopped (signal); "), "{stderr}");
    assert!(stderr.contains("\npool batch ("), "{stderr}");
    assert!(!stderr.contains("never submitted"), "{stderr}");
}
