//! Helpers for the in-process API tests (`token`, `submit`, `pool`, `hooks`,
//! `deadline`, `runtime`, `idle_cpu`); each file includes this module with
//! `mod common_api;` and uses the parts it needs.

// Each test binary uses only some of the helpers.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use winddown::{Builder, Report, Runtime};

/// Generous: a debug build on two busy cores. Only "does not hang".
pub const HANG: Duration = Duration::from_secs(10);

/// A runtime builder for in-process tests: no process-wide signal handler.
pub fn rt() -> Builder {
    Runtime::builder().signals(false)
}

/// Asserts the accounting identity on every pool of `report`.
#[track_caller]
pub fn assert_balanced(report: &Report) {
    for p in &report.pools {
        assert!(
            p.is_balanced(),
            "pool {} is not balanced: {p:?}\n{report:#}",
            p.name
        );
    }
}

/// A gate jobs block on until the test opens it (by dropping the only
/// sender: every waiter, present and future, is released).
#[derive(Debug)]
pub struct Gate {
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Arc::new(Gate {
            tx: Mutex::new(Some(tx)),
            rx,
        })
    }

    /// Blocks until the gate opens.
    pub fn wait(&self) {
        let _ = self.rx.recv();
    }

    pub fn open(&self) {
        self.tx.lock().take();
    }
}

/// Threads of this process whose name (`/proc/self/task/*/comm`, at most 15
/// bytes) starts with `prefix`. Linux only.
///
/// The largest of three listings: a listing of `/proc/self/task` can skip
/// a live thread when other threads exit while it is read (the directory
/// is walked by position, and other tests in this binary start and join
/// threads all the time), but it never invents one, so a skip in one
/// listing is corrected by the others.
pub fn threads_named(prefix: &str) -> usize {
    (0..3).map(|_| list_named(prefix)).max().unwrap_or(0)
}

fn list_named(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with(prefix))
        .count()
}

/// How many threads named `prefix…` remain once they have had up to `HANG`
/// to disappear. A joined thread can linger in `/proc` for a moment after
/// `pthread_join` returned (the kernel clears the tid before it reaps the
/// task), and nothing notifies its removal, so this re-reads `/proc` with a
/// short pause; it returns as soon as the count reaches zero.
pub fn threads_named_after_exit(prefix: &str) -> usize {
    let deadline = Instant::now() + HANG;
    loop {
        let n = threads_named(prefix);
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Total threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}
