//! One run of the `batch` example under test, with its ledger and JSON
//! report in a temporary directory: shared by `tests/signals.rs` (the pool
//! engine) and `tests/rayon_signals.rs` (`--engine rayon`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::process::{example, Child, Exit, Ledger};

/// Generous: a debug build on two busy cores. Only "does not hang".
pub const HANG: Duration = Duration::from_secs(30);

/// One run of the `batch` example with a ledger and a JSON report in a
/// temporary directory.
pub struct Batch {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub items: u64,
}

impl Batch {
    /// Starts `batch --items N --ledger … --report … args…` and waits for
    /// `ready`.
    pub fn start(items: u64, args: &[&str]) -> Batch {
        let dir = tempfile::tempdir().expect("temporary directory");
        Batch::start_in(dir, "ledger", items, args)
    }

    pub fn start_in(dir: tempfile::TempDir, ledger: &str, items: u64, args: &[&str]) -> Batch {
        let run = Batch::launch(dir, ledger, &[], true, items, args);
        run.child.expect_line("ready", HANG);
        run
    }

    /// Starts `wrapper… batch [--quiet] --items N --ledger … --report …
    /// [--workers 2] args…` without waiting for `ready` (the wrapper may
    /// be `nohup`, a shell, `timeout`). If this test process inherited one
    /// of the batch signals as ignored, `env --default-signal` comes first,
    /// so the child starts from the default dispositions (plus what the
    /// wrapper sets).
    pub fn launch(
        dir: tempfile::TempDir,
        ledger: &str,
        wrapper: &[&str],
        quiet: bool,
        items: u64,
        args: &[&str],
    ) -> Batch {
        let mut argv: Vec<String> = Vec::new();
        if !ignored_here().is_empty() {
            argv.push("env".to_owned());
            argv.push("--default-signal=INT,TERM,HUP,QUIT".to_owned());
        }
        argv.extend(wrapper.iter().map(|a| (*a).to_owned()));
        argv.push(example("batch").display().to_string());
        if quiet {
            argv.push("--quiet".to_owned());
        }
        argv.extend([
            "--items".to_owned(),
            items.to_string(),
            "--ledger".to_owned(),
            dir.path().join(ledger).display().to_string(),
            "--report".to_owned(),
            dir.path().join("report.json").display().to_string(),
        ]);
        // The example's default is one worker per core; a test that does
        // not choose gets 2, whatever machine it runs on.
        if !args.contains(&"--workers") {
            argv.extend(["--workers".to_owned(), "2".to_owned()]);
        }
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let child = Child::spawn(Path::new(&argv[0]), &argv[1..], &dir.path().join("stderr"));
        Batch { child, dir, items }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Waits for the exit; returns it with the ledger and the report.
    pub fn finish(&mut self) -> (Exit, Ledger, Value) {
        let exit = self.child.wait_exit(HANG);
        let ledger = Ledger::parse(&self.ledger_text(|l| !l.starts_with("checkpoint ")));
        let report = std::fs::read(self.path("report.json"))
            .map(|b| serde_json::from_slice(&b).expect("the report is valid JSON"))
            .unwrap_or(Value::Null);
        (exit, ledger, report)
    }

    /// The ledger's lines that `keep` keeps, each ending in a newline.
    pub fn ledger_text(&self, keep: impl Fn(&str) -> bool) -> String {
        let text = std::fs::read_to_string(self.path("ledger")).unwrap_or_default();
        text.lines()
            .filter(|l| keep(l))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The ledger's `checkpoint begin|end` lines (`--after-run-ms`).
    pub fn checkpoints(&self) -> Vec<String> {
        self.ledger_text(|l| l.starts_with("checkpoint "))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The signals among INT, TERM, HUP and QUIT that `pid`'s `/proc` status
/// lists in `field` (`SigIgn`, `SigCgt`), as names.
pub fn sig_mask(pid: &str, field: &str) -> Vec<&'static str> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    [
        ("SIGHUP", 1),
        ("SIGINT", 2),
        ("SIGQUIT", 3),
        ("SIGTERM", 15),
    ]
    .into_iter()
    .filter(|(_, n)| mask & (1 << (n - 1)) != 0)
    .map(|(name, _)| name)
    .collect()
}

/// The batch signals this test process inherited as ignored (a background
/// job of a non-interactive shell ignores SIGINT and SIGQUIT, `nohup`
/// SIGHUP): its children would inherit them too.
pub fn ignored_here() -> Vec<&'static str> {
    sig_mask("self", "SigIgn")
}
