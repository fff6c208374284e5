//! The rayon engine of the `batch` example (`--engine rayon`) under real
//! signals, on real processes: each test spawns the example, waits for a
//! line it prints (never a sleep to synchronise), sends SIGINT or SIGTERM
//! with `kill(2)`, and checks the exit code, the JSON report and the
//! ledger — every item accounted for exactly once as done, failed,
//! panicked or handed back — and that an interrupted run and its resume
//! process every id exactly once.
//!
//! The `Batch` harness (`tests/support/batch.rs`) is shared with
//! `tests/signals.rs`.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::batch::{Batch, HANG};
use support::process::Ledger;
use support::seed;

/// `batch --engine rayon`: `Batch::start` with the engine switch first.
fn start(items: u64, args: &[&str]) -> Batch {
    Batch::start(items, &[&["--engine", "rayon"], args].concat())
}

/// As [`start`], with the ledger named `ledger` in `dir`.
fn start_in(dir: tempfile::TempDir, ledger: &str, items: u64, args: &[&str]) -> Batch {
    Batch::start_in(dir, ledger, items, &[&["--engine", "rayon"], args].concat())
}

/// The report's counts against the ledger, the accounting identity, and
/// the ledger's exactly-once accounting (no `unsubmitted` with rayon:
/// every item is submitted at once).
fn assert_consistent(items: u64, ledger: &Ledger, report: &Value, context: &str) {
    ledger.assert_accounted(items);
    let p = &report["pools"][0];
    assert_eq!(p["name"], "batch", "{context}");
    let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("no {k} in {p}")) as usize;
    assert_eq!(
        n("succeeded"),
        ledger.count("done"),
        "{context}: {report:#}"
    );
    assert_eq!(n("failed"), ledger.count("fail"), "{context}: {report:#}");
    assert_eq!(
        n("panicked"),
        ledger.count("panic"),
        "{context}: {report:#}"
    );
    assert_eq!(
        n("handed_back"),
        ledger.count("handback"),
        "{context}: {report:#}"
    );
    assert_eq!(n("abandoned"), 0, "{context}: {report:#}");
    assert_eq!(ledger.count("unsubmitted"), 0, "{context}");
    assert_eq!(n("submitted"), items as usize, "{context}: {report:#}");
    assert_eq!(
        n("submitted"),
        n("succeeded") + n("failed") + n("panicked") + n("handed_back"),
        "{context}: the accounting identity: {report:#}"
    );
    let ids: Vec<u64> = report["handed_back_ids"]
        .as_array()
        .expect("handed_back_ids")
        .iter()
        .map(|v| v.as_u64().expect("an id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "{context}: handed back in input order: {ids:?}"
    );
    assert_eq!(ids, ledger.ids("handback"), "{context}");
}

#[test]
fn a_rayon_run_without_a_signal_completes_with_every_item_done() {
    let mut run = start(500, &["--work", "0-1ms", "--workers", "3", "--hooks", "2"]);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(0), "{}", run.child.stderr_text());
    assert_eq!(report["reason"], "completed");
    assert_consistent(run.items, &ledger, &report, "no signal");
    assert_eq!(ledger.count("done"), 500);
    assert_eq!(report["pools"][0]["workers"], 3);
    assert_eq!(ledger.hooks, ["1 begin", "1 end", "0 begin", "0 end"]);
    // The items ran on the runtime's named rayon threads.
    let threads: Vec<String> = std::fs::read_to_string(run.path("ledger"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("start "))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    assert!(
        threads
            .iter()
            .all(|t| ["batch-0", "batch-1", "batch-2"].contains(&t.as_str())),
        "{threads:?}"
    );
}

#[test]
fn a_signal_at_a_random_moment_of_a_rayon_run_accounts_for_every_item_exactly_once() {
    let mut rng = fastrand::Rng::with_seed(seed());
    for round in 0..16 {
        let signal = if round % 2 == 0 {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        let workers = rng.usize(1..=4).to_string();
        let delay = Duration::from_millis(rng.u64(0..500));
        let args = [
            "--work",
            "0-2ms",
            "--workers",
            &workers,
            "--panic-every",
            "101",
            "--hooks",
            "1",
            "--hook-ms",
            "1",
        ];
        let mut run = start(4000, &args);
        // The moment is the point of this test, not a synchronisation.
        std::thread::sleep(delay);
        run.child.signal(signal);
        let (exit, ledger, report) = run.finish();
        let context = format!("round {round}: {signal} after {delay:?}, {args:?}");
        let panicked = ledger.count("panic") > 0;
        assert_eq!(
            exit.code,
            Some(if panicked { 1 } else { 130 }),
            "{context}\n{}",
            run.child.stderr_text()
        );
        assert_eq!(report["reason"], "signal", "{context}");
        assert_consistent(run.items, &ledger, &report, &context);
        assert_eq!(ledger.hooks, ["0 begin", "0 end"], "{context}");
        assert!(report["drain_latency_ms"].as_f64().is_some(), "{context}");
        assert_eq!(report["stuck"], Value::Array(vec![]), "{context}");
    }
}

#[test]
fn an_interrupted_rayon_run_and_its_resume_process_every_id_exactly_once() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let items = 3000;
    for round in 0..4 {
        // At least 1 ms of CPU per item on at most two threads: the first
        // run needs 1.5 s or more, and its signal comes at most 0.4 s in.
        let mut first = start(
            items,
            &["--work", "1ms", "--workers", "2", "--fail-every", "97"],
        );
        let delay = Duration::from_millis(rng.u64(0..400));
        std::thread::sleep(delay);
        let signal = [Signal::SIGINT, Signal::SIGTERM][round % 2];
        first.child.signal(signal);
        let (exit, l1, report) = first.finish();
        let context = format!("round {round}: {signal} after {delay:?}");
        let expected = if l1.count("fail") > 0 { 1 } else { 130 };
        assert_eq!(
            exit.code,
            Some(expected),
            "{context}: {}",
            first.child.stderr_text()
        );
        assert_consistent(items, &l1, &report, &context);
        assert!(
            l1.count("handback") > 0,
            "{context}: interrupted before its end"
        );

        let ledger1 = first.path("ledger").display().to_string();
        let mut second = start_in(
            first.dir,
            "ledger2",
            items,
            &[
                "--work",
                "0-1ms",
                "--resume",
                &ledger1,
                "--fail-every",
                "97",
            ],
        );
        let exit = second.child.wait_exit(HANG);
        assert_eq!(
            exit.code,
            Some(1),
            "{context}: {}",
            second.child.stderr_text()
        );
        let l2 = Ledger::read(&second.path("ledger2"));
        let finished1: Vec<u64> = ["done", "fail", "panic"]
            .iter()
            .flat_map(|k| l1.ids(k))
            .collect();
        let started2 = l2.ids("start");
        assert!(
            finished1.iter().all(|id| !started2.contains(id)),
            "{context}: the resumed run redid finished items"
        );
        // What the first run handed back is exactly what the second ran.
        let mut handed = l1.ids("handback");
        handed.sort_unstable();
        let mut redone = started2.clone();
        redone.sort_unstable();
        assert_eq!(handed, redone, "{context}");
        let mut all: Vec<u64> = finished1;
        all.extend(["done", "fail", "panic"].iter().flat_map(|k| l2.ids(k)));
        all.sort_unstable();
        assert_eq!(
            all,
            (1..=items).collect::<Vec<_>>(),
            "{context}: every id exactly once"
        );
    }
}

#[test]
fn a_second_signal_during_a_rayon_drain_exits_at_once_with_the_forced_code() {
    // Item 1 holds its thread until the hard stop, 60 s away: only the
    // second signal can end this run quickly.
    let mut run = start(
        1000,
        &["--coop-stuck", "1", "--grace", "60000", "--work", "1ms"],
    );
    run.child.expect_line("stuck 1", HANG);
    run.child.signal(Signal::SIGINT);
    run.child.expect_line("phase draining", HANG);
    // Outside the 100 ms duplicate window: a distinct second delivery.
    std::thread::sleep(Duration::from_millis(300));
    run.child.signal(Signal::SIGTERM);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(3), "{}", run.child.stderr_text());
    assert!(exit.waited < Duration::from_secs(20), "{exit:?}");
    assert_eq!(report, Value::Null, "no report: the process ended at once");
    ledger.assert_at_most_once();
    assert!(!ledger.ids("done").contains(&1), "item 1 was still held");
}

#[test]
fn a_rayon_item_that_watches_the_hard_token_ends_the_drain_at_the_deadline() {
    let mut run = start(
        400,
        &[
            "--coop-stuck",
            "1",
            "--grace",
            "300",
            "--work",
            "1ms",
            "--workers",
            "2",
        ],
    );
    run.child.expect_line("stuck 1", HANG);
    run.child.signal(Signal::SIGTERM);
    let (exit, ledger, report) = run.finish();
    // The hard stop fired: that is a failure (exit code 1), not a hang.
    assert_eq!(exit.code, Some(1), "{}", run.child.stderr_text());
    assert_eq!(report["hard_stopped"], true);
    assert_consistent(run.items, &ledger, &report, "coop-stuck");
    assert!(
        ledger.ids("done").contains(&1),
        "item 1 returned at the deadline"
    );
}
