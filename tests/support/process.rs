//! Running an example binary as a child process: build it once, read its
//! stdout line by line, send it real signals, wait for its exit under a
//! watchdog; and reading the `batch` example's ledger.
//!
//! Readiness is always a line the child prints, never a sleep.

// Each test file that includes `support` uses only a part of this.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Builds `examples/<name>.rs` (once per test binary and name), in the test's
/// own profile, and returns the executable's path, taken from cargo's JSON
/// messages so the target directory can be anywhere.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--example", name, "--message-format=json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build");
    assert!(out.status.success(), "cargo build --example {name} failed");
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == name && m["target"]["kind"][0] == "example")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the example's executable");
    built.insert(name.to_owned(), path.clone());
    path
}

/// A child process whose stdout lines arrive on a channel; its stderr goes to
/// a file (shown when a test fails).
pub struct Child {
    pid: Pid,
    lines: Receiver<String>,
    /// Lines that arrived while an `expect_line` waited for another one,
    /// oldest first: the child may print a line before the one the test
    /// waits for first (`queue full` before `ready`, say).
    skipped: RefCell<VecDeque<String>>,
    exit: Receiver<ExitStatus>,
    stderr: PathBuf,
    /// Set once `wait_exit` saw the exit.
    status: Option<ExitStatus>,
}

/// What `Child::wait_exit` saw.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// The exit code, or `None` if a signal ended the process.
    pub code: Option<i32>,
    /// From the call to `wait_exit` to the exit.
    pub waited: Duration,
}

impl Child {
    /// Spawns `program args…`; stderr goes to `stderr`.
    pub fn spawn(program: &Path, args: &[String], stderr: &Path) -> Child {
        let err = std::fs::File::create(stderr).expect("create stderr file");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawn the example");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (line_tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = match line {
                    Ok(line) => line,
                    Err(e) => {
                        eprintln!("reading the child's stdout: {e}");
                        break;
                    }
                };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The waiter owns the `std::process::Child`, so the exit is a
        // channel message and the watchdog is a `recv_timeout`.
        let (exit_tx, exit) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Child {
            pid,
            lines,
            skipped: RefCell::default(),
            exit,
            stderr: stderr.to_owned(),
            status: None,
        }
    }

    /// Waits up to `within` for a stdout line equal to `want`. Other lines
    /// are kept, and a later call finds its line among them first, so the
    /// order in which the child's threads print does not matter. Panics
    /// (with the child's stderr) on timeout or early exit.
    pub fn expect_line(&self, want: &str, within: Duration) {
        let mut skipped = self.skipped.borrow_mut();
        if let Some(i) = skipped.iter().position(|l| l == want) {
            skipped.remove(i);
            return;
        }
        let deadline = Instant::now() + within;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok(line) if line == want => return,
                Ok(line) => skipped.push_back(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line {want:?} within {within:?}\n{}\n{}",
                        self.threads(),
                        self.stderr_text()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Say how it ended: an exit code, a signal, or still
                    // running with stdout closed.
                    let end = self.exit.recv_timeout(Duration::from_secs(5));
                    panic!(
                        "the child closed stdout before {want:?} (exit: {end:?})\n{}",
                        self.stderr_text()
                    )
                }
            }
        }
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid, signal).expect("send the signal");
    }

    /// Sends `signal` to the child; an error (`ESRCH`: it has exited and
    /// been reaped) is returned, not a panic, for a signal that races the
    /// child's own exit.
    pub fn try_signal(&self, signal: Signal) -> nix::Result<()> {
        kill(self.pid, signal)
    }

    /// The child's process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The exit status `wait_exit` saw (to tell a death by signal), or
    /// `None` before it saw one.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Waits up to `within` for the child to exit. On timeout, kills it and
    /// panics: the "does not hang" bound.
    pub fn wait_exit(&mut self, within: Duration) -> Exit {
        let start = Instant::now();
        match self.exit.recv_timeout(within) {
            Ok(status) => {
                self.status = Some(status);
                Exit {
                    code: status.code(),
                    waited: start.elapsed(),
                }
            }
            Err(_) => {
                let threads = self.threads();
                let _ = kill(self.pid, Signal::SIGKILL);
                panic!(
                    "the child did not exit within {within:?}\n{threads}\n{}",
                    self.stderr_text()
                );
            }
        }
    }

    /// The child's threads with their state and where they sleep in the
    /// kernel, from `/proc`: what a hung child was doing.
    pub fn threads(&self) -> String {
        let dir = format!("/proc/{}/task", self.pid);
        let Ok(tasks) = std::fs::read_dir(&dir) else {
            return format!("(no {dir})");
        };
        let mut out = String::from("threads of the child:");
        for task in tasks.flatten() {
            let read = |f: &str| {
                std::fs::read_to_string(task.path().join(f))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            // The state is the word after the parenthesised name.
            let stat = read("stat");
            let state = stat.rsplit_once(") ").map_or("?", |(_, rest)| &rest[..1]);
            out += &format!("\n  {:<16} {state} {}", read("comm"), read("wchan"));
        }
        out
    }

    /// The child's stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A failed test must not leave a child behind.
        if self.status.is_none() && self.exit.try_recv().is_err() {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }
}

// ===== The batch example's ledger =====

/// The events of one or more `batch` runs, by item id.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Every event word per id, in file order (`start`, `done`, …).
    pub events: BTreeMap<u64, Vec<String>>,
    /// `hook <i> begin|end` lines, in order.
    pub hooks: Vec<String>,
}

/// The words that end an item's story; exactly one per id.
pub const OUTCOMES: [&str; 6] = [
    "done",
    "fail",
    "panic",
    "handback",
    "unsubmitted",
    "abandoned",
];

impl Ledger {
    /// Reads a ledger file; panics on a malformed line.
    pub fn read(path: &Path) -> Ledger {
        Ledger::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Parses a ledger's text, as `read` does; panics on a malformed line.
    pub fn parse(text: &str) -> Ledger {
        let mut ledger = Ledger::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["hook", i, edge] => ledger.hooks.push(format!("{i} {edge}")),
                [kind, id, ..] => {
                    let id: u64 = id.parse().unwrap_or_else(|_| panic!("bad line {line:?}"));
                    ledger
                        .events
                        .entry(id)
                        .or_default()
                        .push((*kind).to_owned());
                }
                _ => panic!("bad ledger line {line:?}"),
            }
        }
        ledger
    }

    /// How many ids have `kind` among their events.
    pub fn count(&self, kind: &str) -> usize {
        self.events
            .values()
            .map(|e| e.iter().filter(|k| *k == kind).count())
            .sum()
    }

    /// The ids with `kind` among their events.
    pub fn ids(&self, kind: &str) -> Vec<u64> {
        self.events
            .iter()
            .filter(|(_, e)| e.iter().any(|k| k == kind))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Asserts that no id has more than one start or more than one outcome:
    /// what still holds when the process was ended at once.
    pub fn assert_at_most_once(&self) {
        for (id, events) in &self.events {
            let outcomes = events
                .iter()
                .filter(|k| OUTCOMES.contains(&k.as_str()))
                .count();
            let starts = events.iter().filter(|k| *k == "start").count();
            assert!(outcomes <= 1 && starts <= 1, "{id}: {events:?}");
        }
    }

    /// Asserts that every id of `1..=items` has exactly one outcome, that
    /// no other id appears, and that an item started at most once and has
    /// an outcome that follows a start exactly when it ran.
    pub fn assert_accounted(&self, items: u64) {
        let mut problems = Vec::new();
        for id in 1..=items {
            let events = self.events.get(&id).map(Vec::as_slice).unwrap_or(&[]);
            let outcomes: Vec<&String> = events
                .iter()
                .filter(|k| OUTCOMES.contains(&k.as_str()))
                .collect();
            let starts = events.iter().filter(|k| *k == "start").count();
            let ran = matches!(
                outcomes.first().map(|s| s.as_str()),
                Some("done" | "fail" | "panic" | "abandoned")
            );
            if outcomes.len() != 1 || starts != usize::from(ran) {
                problems.push(format!("{id}: {events:?}"));
            }
        }
        for id in self.events.keys() {
            if *id == 0 || *id > items {
                problems.push(format!("unknown id {id}"));
            }
        }
        assert!(
            problems.is_empty(),
            "{} ids not accounted for exactly once, e.g. {:?}",
            problems.len(),
            &problems[..problems.len().min(10)]
        );
    }
}
