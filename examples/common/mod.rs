//! What the `batch` and `queue` examples share: the `--work` flag's
//! parser, the append-only ledger and the flushed stdout line. Each example
//! includes this file with `#[path = "common/mod.rs"] mod common;` (cargo
//! takes only `examples/*.rs` and `examples/*/main.rs` as examples, so this
//! folder is not one).

// Each example uses only some of these.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;

/// Work time per item or job: uniform in `min..=max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Work {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

/// Parses `N<unit>` or `N-M<unit>`, the unit being `us`, `ms` or `s`.
pub(crate) fn parse_work(s: &str) -> Result<Work, String> {
    let unit_at = s
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("`{s}`: no unit (us, ms or s)"))?;
    let (nums, unit) = s.split_at(unit_at);
    let scale: fn(u64) -> Duration = match unit {
        "us" => Duration::from_micros,
        "ms" => Duration::from_millis,
        "s" => Duration::from_secs,
        _ => return Err(format!("`{unit}`: unknown unit (us, ms or s)")),
    };
    let num = |n: &str| n.trim().parse::<u64>().map_err(|e| format!("`{n}`: {e}"));
    let (min, max) = match nums.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(nums)?, num(nums)?),
    };
    if min > max {
        return Err(format!("`{s}`: the range is empty"));
    }
    Ok(Work {
        min: scale(min),
        max: scale(max),
    })
}

/// The event log: every line is one `write` on a file opened for appending,
/// so lines are whole and in the page cache as soon as they are written,
/// and a SIGKILL right after loses nothing.
#[derive(Clone)]
pub(crate) struct Ledger(Option<Arc<Mutex<File>>>);

impl Ledger {
    /// Opens (creating, appending to) the ledger at `path`; `None` logs
    /// nothing.
    pub(crate) fn open(path: Option<&Path>) -> anyhow::Result<Ledger> {
        let Some(path) = path else {
            return Ok(Ledger(None));
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open ledger {}", path.display()))?;
        Ok(Ledger(Some(Arc::new(Mutex::new(file)))))
    }

    /// Appends one line.
    pub(crate) fn log(&self, line: std::fmt::Arguments<'_>) {
        if let Some(file) = &self.0 {
            let line = format!("{line}\n");
            // A lost ledger line would make the accounting lie: say so.
            if let Err(e) = file.lock().write_all(line.as_bytes()) {
                eprintln!("ledger write failed: {e}");
            }
        }
    }
}

/// Prints a line on stdout and flushes it at once (the tests wait for it).
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
