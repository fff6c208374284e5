//! The signal behaviour, on real processes: each test spawns the `batch`
//! example, waits for the line it prints when ready (never a sleep), sends
//! real signals with `kill(2)`, and checks the exit code, a "does not hang"
//! bound, the JSON report and the ledger — every item accounted for exactly
//! once as done, failed, panicked, handed back, unsubmitted or abandoned.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::batch::{sig_mask, Batch, HANG};
use support::process::{Child, Ledger};
use support::seed;

/// Comfortably outside the router's 100 ms duplicate window: a second
/// signal sent this long after the first is a distinct delivery.
const OUTSIDE_WINDOW: Duration = Duration::from_millis(300);

/// Whether the child's stderr says a second signal ended it.
fn said_second_signal(child: &Child) -> bool {
    child.stderr_text().contains("second signal")
}

/// The `batch` pool's entry in a JSON report.
fn pool(report: &Value) -> &Value {
    &report["pools"][0]
}

/// Checks the report's counts against the ledger and the accounting
/// identity, and the ledger's exactly-once accounting.
fn assert_consistent(items: u64, ledger: &Ledger, report: &Value) {
    ledger.assert_accounted(items);
    let p = pool(report);
    let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("no {k} in {p}")) as usize;
    assert_eq!(n("succeeded"), ledger.count("done"), "{report:#}");
    assert_eq!(n("failed"), ledger.count("fail"), "{report:#}");
    assert_eq!(n("panicked"), ledger.count("panic"), "{report:#}");
    assert_eq!(n("handed_back"), ledger.count("handback"), "{report:#}");
    assert_eq!(n("abandoned"), ledger.count("abandoned"), "{report:#}");
    assert_eq!(
        n("submitted"),
        n("succeeded") + n("failed") + n("panicked") + n("handed_back") + n("abandoned"),
        "the accounting identity: {report:#}"
    );
    assert_eq!(
        n("submitted") + ledger.count("unsubmitted"),
        items as usize,
        "every item was either submitted or refused: {report:#}"
    );
}

#[test]
fn a_run_without_a_signal_completes_with_exit_code_zero_and_hooks_in_reverse() {
    let mut run = Batch::start(300, &["--work", "0-1ms", "--hooks", "2", "--hook-ms", "5"]);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(0), "{}", run.child.stderr_text());
    assert_eq!(report["reason"], "completed");
    assert_consistent(run.items, &ledger, &report);
    assert_eq!(ledger.count("done"), 300);
    assert_eq!(ledger.hooks, ["1 begin", "1 end", "0 begin", "0 end"]);
}

#[test]
fn a_signal_at_a_random_moment_accounts_for_every_item_exactly_once() {
    let mut rng = fastrand::Rng::with_seed(seed());
    for round in 0..8 {
        let signal = if round % 2 == 0 {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        let policy = if rng.bool() { "finish" } else { "handback" };
        let capacity = ["0", "1", "8", "64"][rng.usize(0..4)];
        let delay = Duration::from_millis(rng.u64(0..400));
        let args = [
            "--work",
            "0-2ms",
            "--policy",
            policy,
            "--capacity",
            capacity,
            "--workers",
            "3",
            "--hooks",
            "1",
            "--hook-ms",
            "1",
        ];
        let mut run = Batch::start(4000, &args);
        // The moment is the point of this test, not a synchronisation.
        std::thread::sleep(delay);
        run.child.signal(signal);
        let (exit, ledger, report) = run.finish();
        let context = format!("round {round}: {signal} after {delay:?}, {args:?}");
        assert_eq!(
            exit.code,
            Some(130),
            "{context}\n{}",
            run.child.stderr_text()
        );
        assert_eq!(report["reason"], "signal", "{context}");
        assert_consistent(run.items, &ledger, &report);
        if policy == "finish" {
            assert_eq!(
                ledger.count("handback"),
                0,
                "{context}: finish runs the queue"
            );
        }
        assert_eq!(ledger.hooks, ["0 begin", "0 end"], "{context}");
        assert!(report["drain_latency_ms"].as_f64().is_some(), "{context}");
    }
}

#[test]
fn finish_runs_every_queued_item_and_handback_returns_them_in_queue_order() {
    for policy in ["finish", "handback"] {
        // Two workers in 500 ms items and a queue of 4: the signal comes
        // right after the queue is full.
        let args = [
            "--policy",
            policy,
            "--workers",
            "2",
            "--capacity",
            "4",
            "--work",
            "500ms",
        ];
        let mut run = Batch::start(50, &args);
        run.child.expect_line("queue full", HANG);
        run.child.signal(Signal::SIGTERM);
        let (exit, ledger, report) = run.finish();
        assert_eq!(
            exit.code,
            Some(130),
            "{policy}: {}",
            run.child.stderr_text()
        );
        assert_consistent(run.items, &ledger, &report);
        let submitted = pool(&report)["submitted"].as_u64().unwrap_or(0);
        assert!(submitted >= 4, "{policy}: the queue was full: {report:#}");
        if policy == "finish" {
            assert_eq!(
                ledger.count("done") as u64,
                submitted,
                "{policy}: {report:#}"
            );
            assert_eq!(ledger.count("handback"), 0, "{policy}");
        } else {
            let started = ledger.ids("start");
            let handed: Vec<u64> = report["handed_back_ids"]
                .as_array()
                .expect("handed_back_ids")
                .iter()
                .filter_map(Value::as_u64)
                .collect();
            assert!(!handed.is_empty(), "{policy}: {report:#}");
            // Items are submitted in id order, and workers take them in
            // queue order: what was not started comes back in that order.
            let mut expect: Vec<u64> = (1..=submitted).filter(|id| !started.contains(id)).collect();
            expect.sort_unstable();
            assert_eq!(handed, expect, "{policy}: handed back in queue order");
        }
    }
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once_with_the_forced_code() {
    // Item 1 holds its worker until the hard stop, 60 s away: only the
    // second signal can end this run quickly.
    let mut run = Batch::start(
        1000,
        &["--coop-stuck", "1", "--grace", "60000", "--work", "1ms"],
    );
    run.child.expect_line("stuck 1", HANG);
    run.child.signal(Signal::SIGINT);
    run.child.expect_line("phase draining", HANG);
    // The moment is the test: a repeat within 100 ms of the first is the
    // same delivery (duplicate window), so the second comes after it.
    std::thread::sleep(Duration::from_millis(300));
    run.child.signal(Signal::SIGINT);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(3), "{}", run.child.stderr_text());
    assert!(exit.waited < Duration::from_secs(20), "{exit:?}");
    assert_eq!(report, Value::Null, "no report: the process ended at once");
    ledger.assert_at_most_once();
    assert!(
        !ledger.ids("done").contains(&1),
        "item 1 was still held at the exit"
    );
}

#[test]
fn with_no_force_exit_a_second_signal_changes_nothing() {
    let args = [
        "--hooks",
        "1",
        "--hook-ms",
        "1500",
        "--hook-budget",
        "10000",
        "--no-force-exit",
        "--work",
        "0-1ms",
    ];
    let mut run = Batch::start(4000, &args);
    run.child.signal(Signal::SIGTERM);
    run.child.expect_line("phase releasing", HANG);
    run.child.signal(Signal::SIGTERM);
    run.child.expect_line("phase done", HANG);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(130), "{}", run.child.stderr_text());
    assert_eq!(
        ledger.hooks,
        ["0 begin", "0 end"],
        "the hook ran to its end"
    );
    assert_consistent(run.items, &ledger, &report);
}

#[test]
fn a_stuck_job_is_named_abandoned_and_the_exit_comes_by_the_deadline() {
    // Item 1 sleeps for an hour, deaf to every token.
    let args = [
        "--stuck",
        "1",
        "--grace",
        "300",
        "--kill-grace",
        "200",
        "--hooks",
        "2",
        "--hook-ms",
        "10",
        "--hook-budget",
        "500",
        "--work",
        "1ms",
    ];
    let mut run = Batch::start(500, &args);
    run.child.expect_line("stuck 1", HANG);
    run.child.signal(Signal::SIGTERM);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(1), "{}", run.child.stderr_text());
    // grace + kill grace + hooks is ~0.5 s; the bound only says "no hang".
    assert!(exit.waited < Duration::from_secs(10), "{exit:?}");
    assert_consistent(run.items, &ledger, &report);
    assert_eq!(ledger.ids("abandoned"), [1]);
    let stuck = &report["stuck"][0];
    assert!(
        stuck["thread"]
            .as_str()
            .is_some_and(|t| t.starts_with("batch-")),
        "{report:#}"
    );
    assert_eq!(stuck["job_key"], "1", "{report:#}");
    assert!(
        stuck["ms_in_job"].as_f64().is_some_and(|ms| ms >= 300.0),
        "{report:#}"
    );
    assert_eq!(pool(&report)["abandoned_keys"][0], "1");
    assert_eq!(ledger.hooks, ["1 begin", "1 end", "0 begin", "0 end"]);
}

#[test]
fn a_panic_storm_is_counted_and_exits_with_1() {
    let mut run = Batch::start(400, &["--panic-every", "1", "--work", "0-1ms"]);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(1), "{}", run.child.stderr_text());
    assert_consistent(run.items, &ledger, &report);
    assert_eq!(ledger.count("panic"), 400);
    assert_eq!(
        report["errors"].as_array().map(Vec::len),
        Some(8),
        "the first few"
    );

    // The same under a signal: failures decide the exit code. `finish`
    // runs the full queue, so items 2 (fails) and 3 (panics) run.
    let args = [
        "--policy",
        "finish",
        "--panic-every",
        "3",
        "--fail-every",
        "2",
    ];
    let mut run = Batch::start(4000, &args);
    run.child.expect_line("queue full", HANG);
    run.child.signal(Signal::SIGINT);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(1), "{}", run.child.stderr_text());
    assert_eq!(report["reason"], "signal");
    assert_consistent(run.items, &ledger, &report);
}

#[test]
fn fail_fast_stops_the_run_at_the_first_failure() {
    let mut run = Batch::start(
        4000,
        &["--fail-fast", "--fail-every", "50", "--work", "0-1ms"],
    );
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(1), "{}", run.child.stderr_text());
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("batch") && reason.contains("injected failure"),
        "{reason}"
    );
    assert_consistent(run.items, &ledger, &report);
    assert!(ledger.count("fail") >= 1);
    assert!(
        ledger.count("handback") + ledger.count("unsubmitted") > 0,
        "the stop came before the end: {report:#}"
    );
}

#[test]
fn a_resumed_run_processes_exactly_the_items_the_interrupted_one_did_not() {
    let mut rng = fastrand::Rng::with_seed(seed());
    let items = 3000;
    // Every item burns at least 1 ms of CPU and only two workers run them:
    // the first run needs at least 1.5 s whatever the number of cores, so
    // it cannot finish before its signal, at most 0.3 s in.
    let mut first = Batch::start(
        items,
        &["--work", "1ms", "--workers", "2", "--fail-every", "97"],
    );
    std::thread::sleep(Duration::from_millis(rng.u64(50..300)));
    first.child.signal(Signal::SIGTERM);
    let (exit, l1, _) = first.finish();
    let expected = if l1.count("fail") > 0 { 1 } else { 130 };
    assert_eq!(exit.code, Some(expected), "{}", first.child.stderr_text());
    l1.assert_accounted(items);
    assert!(
        l1.count("unsubmitted") + l1.count("handback") > 0,
        "the first run was interrupted before its end"
    );

    let ledger1 = first.path("ledger").display().to_string();
    let mut second = Batch::start_in(
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
    assert_eq!(exit.code, Some(1), "{}", second.child.stderr_text());
    let l2 = Ledger::read(&second.path("ledger2"));

    let finished1: Vec<u64> = ["done", "fail", "panic"]
        .iter()
        .flat_map(|k| l1.ids(k))
        .collect();
    let started2 = l2.ids("start");
    assert!(
        finished1.iter().all(|id| !started2.contains(id)),
        "the resumed run redid finished items"
    );
    let mut all: Vec<u64> = finished1;
    all.extend(["done", "fail", "panic"].iter().flat_map(|k| l2.ids(k)));
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=items).collect::<Vec<_>>(),
        "every id exactly once"
    );
}

// ===== The issue's regression tests, one per row =====

#[test]
fn a_signal_during_the_release_hooks_of_a_completed_run_changes_nothing() {
    let args = ["--work", "0-1ms", "--hooks", "3", "--hook-ms", "500"];
    let mut run = Batch::start(100, &args);
    run.child.expect_line("phase releasing", HANG);
    run.child.signal(Signal::SIGTERM);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(0), "{}", run.child.stderr_text());
    assert_ne!(report, Value::Null, "a report was written");
    assert_eq!(report["reason"], "completed", "{report:#}");
    assert_eq!(report["signal"], Value::Null, "{report:#}");
    assert_eq!(report["exit_code"], 0, "{report:#}");
    assert_consistent(run.items, &ledger, &report);
    assert_eq!(ledger.count("done"), 100);
    assert_eq!(
        ledger.hooks,
        ["2 begin", "2 end", "1 begin", "1 end", "0 begin", "0 end"],
        "every hook ran to its end, last registered first"
    );
    assert!(!said_second_signal(&run.child));
}

#[test]
fn a_signal_racing_completion_is_either_the_trigger_or_nothing_never_forced() {
    let mut rng = fastrand::Rng::with_seed(seed());
    // 200 items of 1 ms on two workers: about 0.1 s of work on any machine.
    let args = [
        "--work",
        "1ms",
        "--workers",
        "2",
        "--hooks",
        "1",
        "--hook-ms",
        "20",
    ];
    // How long a run takes from `ready` to its exit, here and now.
    let mut calibrate = Batch::start(200, &args);
    let whole = calibrate.child.wait_exit(HANG);
    assert_eq!(whole.code, Some(0), "{}", calibrate.child.stderr_text());
    println!("a whole run: {:?}", whole.waited);
    let mut seen = [0usize; 2];
    for round in 0..8 {
        // Around the end: from 0.6 of the run to a little after it.
        let delay = whole.waited.mul_f64(0.6 + rng.f64() * 0.8);
        let mut run = Batch::start(200, &args);
        // The moment is the point of this test.
        std::thread::sleep(delay);
        // The child may have exited already: then the signal is nothing.
        let _ = run.child.try_signal(Signal::SIGTERM);
        let (exit, ledger, report) = run.finish();
        let context = format!(
            "round {round}: SIGTERM {delay:?} after ready\n{}",
            run.child.stderr_text()
        );
        assert_ne!(report, Value::Null, "the report is written: {context}");
        assert_eq!(report["exit_code"], exit.code.unwrap_or(-1), "{context}");
        match exit.code {
            Some(0) => {
                seen[0] += 1;
                assert_eq!(report["reason"], "completed", "{context}");
                assert_eq!(ledger.count("done"), 200, "{context}");
            }
            Some(130) => {
                seen[1] += 1;
                assert_eq!(report["reason"], "signal", "{context}");
                assert_eq!(report["signal"], "SIGTERM", "{context}");
            }
            other => panic!("exit {other:?}: {context}"),
        }
        assert_consistent(run.items, &ledger, &report);
        assert_eq!(ledger.hooks, ["0 begin", "0 end"], "{context}");
        assert!(!said_second_signal(&run.child), "{context}");
    }
    println!("completed first: {}, signal first: {}", seen[0], seen[1]);
}

#[test]
fn with_no_force_exit_signals_during_the_checkpoint_after_run_do_not_cut_it() {
    let args = [
        "--keep-open",
        "--after-run-ms",
        "1000",
        "--no-force-exit",
        "--hooks",
        "0",
    ];
    let mut run = Batch::start(10, &args);
    run.child.signal(Signal::SIGTERM);
    run.child.expect_line("checkpoint begin", HANG);
    let first = Instant::now();
    run.child.signal(Signal::SIGINT);
    // The moment is the test: outside the duplicate window of the first.
    std::thread::sleep(OUTSIDE_WINDOW.saturating_sub(first.elapsed()));
    run.child.signal(Signal::SIGTERM);
    run.child.expect_line("checkpoint end", HANG);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(130), "{}", run.child.stderr_text());
    assert_eq!(report["exit_code"], 130, "the report's code: {report:#}");
    assert_eq!(report["signal"], "SIGTERM", "{report:#}");
    assert_eq!(run.checkpoints(), ["checkpoint begin", "checkpoint end"]);
    assert_consistent(run.items, &ledger, &report);
    assert!(!said_second_signal(&run.child));
}

#[test]
fn with_force_exit_on_one_signal_during_the_checkpoint_after_run_is_nothing() {
    // The run completes by itself; the signal comes after `run` returned.
    let args = ["--work", "0-1ms", "--after-run-ms", "1500", "--hooks", "0"];
    let mut run = Batch::start(50, &args);
    run.child.expect_line("checkpoint begin", HANG);
    run.child.signal(Signal::SIGTERM);
    run.child.expect_line("checkpoint end", HANG);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(0), "{}", run.child.stderr_text());
    assert_eq!(report["reason"], "completed", "{report:#}");
    assert_eq!(report["exit_code"], 0, "{report:#}");
    assert_eq!(run.checkpoints(), ["checkpoint begin", "checkpoint end"]);
    assert_consistent(run.items, &ledger, &report);
    assert!(!said_second_signal(&run.child));
}

#[test]
fn timeout_signalling_the_child_and_its_group_is_one_delivery() {
    // coreutils `timeout` sends SIGTERM to the child, then to its whole
    // process group: two deliveries microseconds apart. Item 50 is deaf to
    // every token, so the run ends at the deadline (300 ms after the
    // signal) — long enough for a second delivery to force the exit if it
    // were counted.
    for round in 0..10 {
        let dir = tempfile::tempdir().expect("temporary directory");
        let wrapper = ["timeout", "--preserve-status", "-s", "TERM", "0.3"];
        let args = [
            "--workers",
            "2",
            "--stuck",
            "50",
            "--grace",
            "200",
            "--kill-grace",
            "100",
            "--hooks",
            "0",
        ];
        let mut run = Batch::launch(dir, "ledger", &wrapper, true, 2000, &args);
        run.child.expect_line("ready", HANG);
        let (exit, ledger, report) = run.finish();
        let context = format!("round {round}: {exit:?}\n{}", run.child.stderr_text());
        assert_ne!(report, Value::Null, "the report is written: {context}");
        assert_ne!(exit.code, Some(3), "forced: {context}");
        assert!(!said_second_signal(&run.child), "{context}");
        // 1 if item 50 was reached (stuck, abandoned), else 130.
        assert!(matches!(exit.code, Some(1 | 130)), "{context}");
        assert_eq!(report["exit_code"], exit.code.unwrap_or(-1), "{context}");
        assert_eq!(report["reason"], "signal", "{context}");
        assert_eq!(report["signal"], "SIGTERM", "{context}");
        assert_consistent(run.items, &ledger, &report);
    }
}

#[test]
fn two_kills_of_the_same_signal_back_to_back_are_one_delivery() {
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGTERM] {
        // The pool stays open until the signal, and a 400 ms hook leaves
        // the second delivery time to force the exit if it were counted.
        let args = ["--keep-open", "--hooks", "1", "--hook-ms", "400"];
        let mut run = Batch::start(10, &args);
        run.child.signal(signal);
        run.child.signal(signal);
        let (exit, ledger, report) = run.finish();
        let context = format!("{signal}\n{}", run.child.stderr_text());
        assert_eq!(exit.code, Some(130), "{context}");
        assert!(!said_second_signal(&run.child), "{context}");
        assert_eq!(report["reason"], "signal", "{context}");
        assert_eq!(report["signal"], signal.as_str(), "{context}");
        assert_eq!(ledger.hooks, ["0 begin", "0 end"], "{context}");
        assert_consistent(run.items, &ledger, &report);
    }
}

/// Where the second signal lands.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// Item 1 holds its worker until a hard stop 60 s away.
    Draining,
    /// A 20 s release hook runs.
    Releasing,
}

#[test]
fn a_second_distinct_signal_during_the_drain_or_the_hooks_exits_at_once_with_the_forced_code() {
    let cases = [
        (Moment::Draining, Signal::SIGTERM, Signal::SIGINT, None),
        (Moment::Releasing, Signal::SIGTERM, Signal::SIGTERM, None),
        (Moment::Draining, Signal::SIGINT, Signal::SIGINT, Some("9")),
        (
            Moment::Releasing,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Some("9"),
        ),
    ];
    for (moment, first_sig, second_sig, forced) in cases {
        let mut args = match moment {
            Moment::Draining => vec!["--coop-stuck", "1", "--grace", "60000", "--work", "1ms"],
            Moment::Releasing => vec![
                "--keep-open",
                "--hooks",
                "1",
                "--hook-ms",
                "20000",
                "--hook-budget",
                "60000",
            ],
        };
        if let Some(code) = forced {
            args.extend(["--forced-exit-code", code]);
        }
        let want: i32 = forced.map_or(3, |c| c.parse().unwrap());
        let mut run = Batch::start(100, &args);
        if let Moment::Draining = moment {
            run.child.expect_line("stuck 1", HANG);
        }
        let first = Instant::now();
        run.child.signal(first_sig);
        run.child.expect_line(
            match moment {
                Moment::Draining => "phase draining",
                Moment::Releasing => "phase releasing",
            },
            HANG,
        );
        // The moment is the test: outside the duplicate window of the first.
        std::thread::sleep(OUTSIDE_WINDOW.saturating_sub(first.elapsed()));
        let sent = Instant::now();
        run.child.signal(second_sig);
        let (exit, ledger, report) = run.finish();
        let latency = sent.elapsed();
        let context = format!(
            "{moment:?}, {first_sig} then {second_sig}, {args:?}\n{}",
            run.child.stderr_text()
        );
        println!("{moment:?}: second signal -> exit {latency:?}");
        assert_eq!(exit.code, Some(want), "{context}");
        assert_eq!(report, Value::Null, "no report: {context}");
        assert!(
            run.child.stderr_text().contains(&format!(
                "winddown: second signal ({second_sig}), exiting now"
            )),
            "{context}"
        );
        // At once: the drain had 60 s left, the hook 20 s.
        assert!(latency < Duration::from_secs(5), "{latency:?}: {context}");
        ledger.assert_at_most_once();
        match moment {
            Moment::Draining => assert!(!ledger.ids("done").contains(&1), "{context}"),
            Moment::Releasing => assert_eq!(ledger.hooks, ["0 begin"], "{context}"),
        }
    }
}

#[test]
fn with_no_force_exit_second_signals_during_the_drain_change_nothing() {
    // Two workers on 300 ms items, a queue of 8, `finish`: the drain runs
    // the (at least 8) items held and queued, at least 1.2 s, and the two
    // later signals (0.3 s and 0.6 s after the first) land in it.
    let args = [
        "--policy",
        "finish",
        "--workers",
        "2",
        "--capacity",
        "8",
        "--work",
        "300ms",
        "--no-force-exit",
        "--hooks",
        "1",
        "--hook-ms",
        "10",
    ];
    let mut run = Batch::start(50, &args);
    run.child.expect_line("queue full", HANG);
    let first = Instant::now();
    run.child.signal(Signal::SIGTERM);
    run.child.expect_line("phase draining", HANG);
    // The moments are the test: each outside the duplicate window.
    std::thread::sleep(OUTSIDE_WINDOW.saturating_sub(first.elapsed()));
    run.child.signal(Signal::SIGINT);
    std::thread::sleep(OUTSIDE_WINDOW);
    run.child.signal(Signal::SIGTERM);
    let (exit, ledger, report) = run.finish();
    let context = run.child.stderr_text();
    assert_eq!(exit.code, Some(130), "{context}");
    assert!(!said_second_signal(&run.child), "{context}");
    assert_eq!(report["reason"], "signal", "{report:#}");
    assert_eq!(report["signal"], "SIGTERM", "the first signal: {report:#}");
    assert_eq!(report["hard_stopped"], false, "{report:#}");
    assert_consistent(run.items, &ledger, &report);
    let submitted = pool(&report)["submitted"].as_u64().unwrap_or(0);
    // The queue was full: at least its 8 items were submitted.
    assert!(submitted >= 8, "{report:#}");
    assert_eq!(
        ledger.count("done") as u64,
        submitted,
        "the drain ran to its end"
    );
    assert_eq!(ledger.hooks, ["0 begin", "0 end"]);
}

/// `nohup`: SIGHUP inherited as ignored.
const NOHUP: [&str; 1] = ["nohup"];
/// A shell that ignores SIGINT and SIGHUP, then execs batch.
const TRAP: [&str; 3] = ["sh", "-c", r#"trap "" INT HUP; exec "$0" "$@""#];

/// Starts batch under `wrapper`, holding its pool open until a signal;
/// waits for `ready` (which also shows stdout still reaches the test: nohup
/// redirects it only from a terminal).
fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Batch {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut all = vec!["--keep-open", "--hooks", "0"];
    all.extend_from_slice(args);
    let run = Batch::launch(dir, "ledger", wrapper, true, 10, &all);
    run.child.expect_line("ready", HANG);
    run
}

#[test]
fn signals_inherited_as_ignored_stay_ignored_and_sigterm_still_stops_the_run() {
    for (wrapper, ignored) in [
        (&NOHUP[..], &[Signal::SIGHUP][..]),
        (&TRAP[..], &[Signal::SIGHUP, Signal::SIGINT][..]),
    ] {
        let mut run = start_wrapped(wrapper, &[]);
        let pid = run.child.pid().to_string();
        let (ign, cgt) = (sig_mask(&pid, "SigIgn"), sig_mask(&pid, "SigCgt"));
        for sig in ignored {
            assert!(ign.contains(&sig.as_str()), "{wrapper:?}: {ign:?}");
            assert!(!cgt.contains(&sig.as_str()), "{wrapper:?}: {cgt:?}");
        }
        assert!(cgt.contains(&"SIGTERM"), "{wrapper:?}: {cgt:?}");
        for sig in ignored {
            run.child.signal(*sig);
        }
        // A standard signal pending with a lower number is delivered
        // first, so had one of them been hooked it would be the report's
        // signal (or the later SIGTERM a forced second signal).
        run.child.signal(Signal::SIGTERM);
        let (exit, ledger, report) = run.finish();
        let context = format!("{wrapper:?}\n{}", run.child.stderr_text());
        assert_eq!(exit.code, Some(130), "{context}");
        assert_eq!(report["reason"], "signal", "{context}");
        assert_eq!(report["signal"], "SIGTERM", "{context}");
        assert!(!said_second_signal(&run.child), "{context}");
        assert_consistent(run.items, &ledger, &report);
    }
}

#[test]
fn with_no_honor_ignored_sighup_under_nohup_stops_the_run() {
    let mut run = start_wrapped(&NOHUP, &["--no-honor-ignored"]);
    let pid = run.child.pid().to_string();
    assert!(sig_mask(&pid, "SigCgt").contains(&"SIGHUP"), "hooked");
    run.child.signal(Signal::SIGHUP);
    let (exit, ledger, report) = run.finish();
    assert_eq!(exit.code, Some(130), "{}", run.child.stderr_text());
    assert_eq!(report["reason"], "signal", "{report:#}");
    assert_eq!(report["signal"], "SIGHUP", "{report:#}");
    assert_consistent(run.items, &ledger, &report);
}

#[test]
fn a_signal_left_out_of_the_set_keeps_its_default_action() {
    let mut run = start_wrapped(&[], &["--signals", "INT,TERM"]);
    run.child.signal(Signal::SIGHUP);
    let (exit, _, report) = run.finish();
    let status = run.child.exit_status().expect("the exit was seen");
    assert_eq!(exit.code, None, "{status:?}");
    assert_eq!(status.signal(), Some(1), "killed by SIGHUP: {status:?}");
    assert_eq!(report, Value::Null, "no report");
}

#[test]
fn sigstop_across_the_deadline_does_not_wait_a_fresh_grace_after_sigcont() {
    // Item 1 holds its worker until the hard stop: grace 200 ms, kill
    // grace 100 ms, both from the trigger on the monotonic clock, which
    // runs on while the process is stopped.
    let args = [
        "--workers",
        "2",
        "--coop-stuck",
        "1",
        "--grace",
        "200",
        "--kill-grace",
        "100",
        "--hooks",
        "0",
        "--work",
        "1ms",
    ];
    let mut run = Batch::start(100, &args);
    run.child.expect_line("stuck 1", HANG);
    run.child.signal(Signal::SIGTERM);
    // The trigger has happened (else the pending SIGTERM would only be
    // taken after SIGCONT, and the deadline would start there).
    run.child.expect_line("phase stop_accepting", HANG);
    run.child.signal(Signal::SIGSTOP);
    // The moment is the test: stopped well past grace + kill grace.
    std::thread::sleep(Duration::from_secs(2));
    let cont = Instant::now();
    run.child.signal(Signal::SIGCONT);
    let (exit, mut ledger, report) = run.finish();
    let latency = cont.elapsed();
    println!("SIGCONT -> exit: {latency:?}");
    let context = format!("{latency:?}\n{}", run.child.stderr_text());
    assert_eq!(exit.code, Some(1), "the hard stop fired: {context}");
    assert_eq!(report["hard_stopped"], true, "{report:#}");
    let hard_stop_ms = report["hard_stop_ms"].as_f64().expect("hard_stop_ms");
    assert!(hard_stop_ms >= 200.0, "{report:#}");
    // Both deadlines passed while the process was stopped, so on SIGCONT
    // the runtime fires the hard token and names the threads still in a
    // job at once, with no kill grace left. Any job in flight then may not
    // have seen it yet — item 1's worker, and the other worker if it was
    // inside an item's 1 ms of work when the process stopped (its work
    // resumes with its time already spent). Such a job is reported
    // abandoned (and not succeeded) and finishes anyway, logging `done`
    // from inside the job before or after the program logs `abandoned`
    // (the two threads race). Each one must be named stuck; item 1 must be
    // one of them or have finished.
    let both =
        |x: &str, y: &str| (x == "done" && y == "abandoned") || (x == "abandoned" && y == "done");
    let named_stuck: Vec<String> = report["stuck"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|t| t["job_key"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut raced = Vec::new();
    for (id, events) in ledger.events.iter_mut() {
        if let [s, x, y] = events.as_slice() {
            if s == "start" && both(x, y) {
                assert!(
                    named_stuck.contains(&id.to_string()),
                    "item {id} finished after it was counted abandoned, but is not named stuck: {report:#}"
                );
                *events = vec!["start".into(), "abandoned".into()];
                raced.push(*id);
            }
        }
    }
    if !raced.is_empty() {
        println!("items {raced:?} were named stuck with no kill grace left, then finished");
    }
    let item1 = ledger.events.get(&1).cloned().unwrap_or_default();
    match item1.as_slice() {
        [s, d] if s == "start" && (d == "done" || d == "abandoned") => {}
        other => panic!("item 1: {other:?}\n{context}"),
    }
    assert!(
        raced.len() <= 2,
        "at most one job per worker (2): {raced:?}"
    );
    assert_consistent(run.items, &ledger, &report);
    // A fresh grace + kill grace from SIGCONT would be 300 ms.
    assert!(latency < BOUND_AFTER_SIGCONT, "{context}");
}

/// How soon after SIGCONT a process stopped across its deadline exits.
const BOUND_AFTER_SIGCONT: Duration = Duration::from_millis(150);

#[test]
fn every_outcome_exits_with_its_documented_code() {
    // Completed, nothing failed: 0.
    let mut run = Batch::start(200, &["--work", "0-1ms"]);
    let (exit, _, report) = run.finish();
    assert_eq!(exit.code, Some(0), "{}", run.child.stderr_text());
    assert_eq!(report["reason"], "completed");

    // A signal and a clean drain: 130.
    let mut run = Batch::start(10, &["--keep-open"]);
    run.child.signal(Signal::SIGINT);
    let (exit, _, report) = run.finish();
    assert_eq!(exit.code, Some(130), "{}", run.child.stderr_text());
    assert_eq!(report["hard_stopped"], false, "{report:#}");
    assert!(report["drain_latency_ms"].as_f64().is_some(), "{report:#}");

    // A signal and a hard stop: 1, and the summary on stderr says so.
    let dir = tempfile::tempdir().expect("temporary directory");
    let args = [
        "--coop-stuck",
        "1",
        "--grace",
        "200",
        "--kill-grace",
        "1000",
        "--work",
        "1ms",
    ];
    let mut run = Batch::launch(dir, "ledger", &[], false, 100, &args);
    run.child.expect_line("ready", HANG);
    run.child.expect_line("stuck 1", HANG);
    run.child.signal(Signal::SIGTERM);
    let (exit, ledger, report) = run.finish();
    let stderr = run.child.stderr_text();
    assert_eq!(exit.code, Some(1), "{stderr}");
    assert_eq!(report["hard_stopped"], true, "{report:#}");
    assert!(report["hard_stop_ms"].as_f64().is_some(), "{report:#}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("stopped ("))
        .unwrap_or_else(|| panic!("no summary line: {stderr}"));
    assert!(summary.contains("hard stop at"), "{summary}");
    assert!(summary.ends_with("exit code 1"), "{summary}");
    assert_consistent(run.items, &ledger, &report);

    // A second signal: 3.
    let args = ["--keep-open", "--hooks", "1", "--hook-ms", "20000"];
    let mut run = Batch::start(10, &args);
    let first = Instant::now();
    run.child.signal(Signal::SIGTERM);
    run.child.expect_line("phase releasing", HANG);
    // The moment is the test: outside the duplicate window of the first.
    std::thread::sleep(OUTSIDE_WINDOW.saturating_sub(first.elapsed()));
    run.child.signal(Signal::SIGINT);
    let (exit, _, report) = run.finish();
    assert_eq!(exit.code, Some(3), "{}", run.child.stderr_text());
    assert_eq!(report, Value::Null);
}
