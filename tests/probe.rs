//! `winddown-probe` on real programs: the crate's own examples (`batch` on
//! its `ready` line, `server` on its port and on `NOTIFY_SOCKET`, under a
//! load), `sleep` (ended by the signal itself) and Python scripts that trap
//! or ignore SIGTERM; its JSON, its SVG, its A/B mode and its errors.
//!
//! Nothing here asserts a latency: only outcomes, counts and "does not hang"
//! bounds (every probe runs under a watchdog).
#![cfg(unix)]

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Every probe invocation here is over well before this.
const WATCHDOG: Duration = Duration::from_secs(120);

/// Runs the probe with `args` under the watchdog.
fn probe(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_winddown-probe"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn winddown-probe");
    let pid = child.id();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(out) => out.expect("wait for winddown-probe"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("winddown-probe {args:?} did not finish within {WATCHDOG:?}");
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn explain(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh path in the temporary directory.
fn temp(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "winddown-probe-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the probe wrote its JSON");
    serde_json::from_str(&text).expect("the probe's JSON parses")
}

/// A port nothing listens on right now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn example(name: &str) -> String {
    support::process::example(name).display().to_string()
}

/// A Python script in a file; `{ready}` lines and traps are the caller's.
fn python(name: &str, body: &str) -> String {
    let path = temp(name);
    std::fs::write(&path, body).expect("write the script");
    format!("python3 -u {}", path.display())
}

/// Prints `ready`, and on SIGTERM "cleans up" and exits 42.
const TRAPS_SIGTERM: &str = r#"
import signal, sys, threading
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
print("ready", flush=True)
done.wait()
sys.exit(42)
"#;

/// Prints `ready` and ignores SIGTERM.
const IGNORES_SIGTERM: &str = r#"
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

fn commands(json: &Value) -> &Vec<Value> {
    json["commands"].as_array().expect("commands is an array")
}

fn runs(command: &Value) -> &Vec<Value> {
    command["runs"].as_array().expect("runs is an array")
}

/// The summary is ordered and every measured run has a latency.
fn assert_summary_consistent(command: &Value, measured: u64) {
    assert_eq!(command["measured"], measured, "{command:#}");
    let l = &command["latency"];
    assert_eq!(l["count"], measured, "{command:#}");
    let get = |k: &str| {
        l[k].as_f64()
            .unwrap_or_else(|| panic!("latency.{k} in {l}"))
    };
    let (min, p50, p99, max) = (get("min_ms"), get("p50_ms"), get("p99_ms"), get("max_ms"));
    assert!(0.0 <= min && min <= p50 && p50 <= p99 && p99 <= max, "{l}");
    for r in runs(command) {
        if r["outcome"] == "measured" {
            let v = r["latency_ms"]
                .as_f64()
                .expect("a measured run has a latency");
            assert!(min <= v && v <= max, "{r}");
        }
    }
}

#[test]
fn batch_kept_open_is_measured_from_its_ready_line() {
    let batch = example("batch");
    let json = temp("batch.json");
    let out = probe(&[
        "--runs",
        "3",
        "--ready-line",
        "^ready$",
        "--json",
        json.to_str().unwrap(),
        &format!("{batch} --keep-open --items 20 --work 1ms --hooks 1 --hook-ms 5"),
    ]);
    assert!(out.status.success(), "{}", explain(&out));
    let json = read_json(&json);
    assert_eq!(json["signal"], "SIGTERM");
    assert_eq!(json["ready"], "line /^ready$/");
    let [batch] = &commands(&json)[..] else {
        panic!("one command: {json:#}")
    };
    assert_summary_consistent(batch, 3);
    assert_eq!(batch["statuses"]["exit 130"], 3, "{batch:#}");
    for r in runs(batch) {
        assert_eq!(r["exit_code"], 130, "{r}");
        assert!(r["killed_by"].is_null(), "{r}");
        assert!(r["ready_ms"].as_f64().is_some(), "{r}");
    }
    let table = stdout(&out);
    assert!(
        table.contains("p50 ms") && table.contains("exit 130 ×3"),
        "{table}"
    );
}

#[test]
fn server_on_its_port_under_a_load_counts_each_request_once() {
    let server = example("server");
    let port = free_port();
    let report = temp("server-report.json");
    let json = temp("server.json");
    let addr = format!("127.0.0.1:{port}");
    // One run, so the server's own report (rewritten per run) is this run's.
    let out = probe(&[
        "--runs",
        "1",
        "--ready-port",
        &addr,
        "--delay",
        "300-400",
        "--load-url",
        &format!("http://{addr}/health"),
        "--load-rate",
        "200",
        "--load-threads",
        "3",
        "--json",
        json.to_str().unwrap(),
        &format!("{server} --addr {addr} --report {}", report.display()),
    ]);
    assert!(out.status.success(), "{}", explain(&out));
    let json = read_json(&json);
    let [server] = &commands(&json)[..] else {
        panic!("one command: {json:#}")
    };
    assert_summary_consistent(server, 1);
    assert_eq!(runs(server)[0]["exit_code"], 130, "{server:#}");
    assert_eq!(json["load"]["threads"], 3);
    let load = &server["load"];
    let n = |side: &str, k: &str| {
        load[side][k]
            .as_u64()
            .unwrap_or_else(|| panic!("load.{side}.{k} in {load}"))
    };
    for side in ["before_signal", "after_signal"] {
        assert_eq!(
            n(side, "requests"),
            n(side, "ok") + n(side, "connect_errors") + n(side, "non_2xx") + n(side, "incomplete"),
            "{load}"
        );
        assert_eq!(
            n(side, "failed"),
            n(side, "requests") - n(side, "ok"),
            "{load}"
        );
    }
    // 300 ms at 200/s before the signal: the load did reach the server.
    assert!(n("before_signal", "ok") > 0, "{load}");
    // Every complete response the probe counted is one the server counted
    // as written in full, and the other way round.
    let served = read_json(&report)["connections"]["served"]
        .as_u64()
        .expect("connections.served in the server's report");
    let complete: u64 = ["before_signal", "after_signal"]
        .iter()
        .map(|s| n(s, "ok") + n(s, "non_2xx"))
        .sum();
    assert_eq!(complete, served, "{load}");
    let table = stdout(&out);
    assert!(table.contains("load before the signal:"), "{table}");
}

#[test]
fn server_ready_by_notify_socket_reports_the_stopping_notification() {
    let server = example("server");
    let json = temp("notify.json");
    let out = probe(&[
        "--runs",
        "2",
        "--ready-notify",
        "--json",
        json.to_str().unwrap(),
        &format!("{server} --addr 127.0.0.1:0"),
    ]);
    assert!(out.status.success(), "{}", explain(&out));
    let json = read_json(&json);
    assert_eq!(json["ready"], "notify READY=1");
    let [server] = &commands(&json)[..] else {
        panic!("one command: {json:#}")
    };
    assert_summary_consistent(server, 2);
    for r in runs(server) {
        assert!(
            r["stopping_ms"].as_f64().is_some(),
            "STOPPING=1 was seen: {r}"
        );
    }
}

#[test]
fn sleep_ended_by_the_signal_is_reported_as_killed_by_sigterm() {
    let json = temp("sleep.json");
    let out = probe(&["-n", "2", "--json", json.to_str().unwrap(), "sleep 30"]);
    assert!(out.status.success(), "{}", explain(&out));
    let json = read_json(&json);
    let [sleep] = &commands(&json)[..] else {
        panic!("one command: {json:#}")
    };
    assert_summary_consistent(sleep, 2);
    assert_eq!(
        sleep["statuses"]["killed by signal SIGTERM"], 2,
        "{sleep:#}"
    );
    for r in runs(sleep) {
        assert_eq!(r["killed_by"], "SIGTERM", "{r}");
        assert!(r["exit_code"].is_null(), "{r}");
    }
    assert!(
        stdout(&out).contains("killed by signal SIGTERM ×2"),
        "{}",
        explain(&out)
    );
}

#[test]
fn python_trapping_sigterm_exits_with_its_own_code() {
    let script = python("trap.py", TRAPS_SIGTERM);
    let json = temp("trap.json");
    let out = probe(&[
        "-n",
        "2",
        "--ready-line",
        "ready",
        "--delay",
        "0-50",
        "--seed",
        "7",
        "--json",
        json.to_str().unwrap(),
        &script,
    ]);
    assert!(out.status.success(), "{}", explain(&out));
    let json = read_json(&json);
    assert_eq!(json["seed"], 7);
    let [trap] = &commands(&json)[..] else {
        panic!("one command: {json:#}")
    };
    assert_summary_consistent(trap, 2);
    for r in runs(trap) {
        assert_eq!(r["exit_code"], 42, "{r}");
        let delay = r["delay_ms"].as_f64().expect("delay_ms");
        assert!((0.0..=50.0).contains(&delay), "{r}");
    }
}

#[test]
fn a_program_ignoring_the_signal_times_out_and_is_killed() {
    let script = python("ignore.py", IGNORES_SIGTERM);
    let json = temp("ignore.json");
    let out = probe(&[
        "-n",
        "1",
        "--ready-line",
        "^ready$",
        "--timeout",
        "300",
        "--json",
        json.to_str().unwrap(),
        &script,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let json = read_json(&json);
    let c = &commands(&json)[0];
    assert_eq!(c["timeouts"], 1, "{c:#}");
    assert_eq!(c["measured"], 0, "{c:#}");
    assert!(c["latency"].is_null(), "{c:#}");
    let r = &runs(c)[0];
    assert_eq!(r["outcome"], "timed_out", "{r}");
    assert_eq!(r["killed_by"], "SIGKILL", "{r}");
    assert!(r["latency_ms"].is_null(), "{r}");
}

#[test]
fn a_program_never_ready_is_killed_at_the_ready_timeout() {
    let out = probe(&[
        "-n",
        "1",
        "--ready-line",
        "never printed",
        "--ready-timeout",
        "200",
        "sleep 30",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(stdout(&out).contains("not ready ×1"), "{}", explain(&out));
}

#[test]
fn ab_runs_interleave_and_compare_the_medians() {
    let log = temp("ab.log");
    let log = log.display();
    let json = temp("ab.json");
    let svg = temp("ab.svg");
    let out = probe(&[
        "-n",
        "3",
        "--shell",
        "--ready-line",
        "^ready$",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        &format!("echo A >> {log}; echo ready; exec sleep 30"),
        &format!("echo B >> {log}; echo ready; exec sleep 30"),
    ]);
    assert!(out.status.success(), "{}", explain(&out));
    // Each shell wrote its letter before its `ready` line, so all six are in.
    let order = std::fs::read_to_string(log.to_string()).expect("the commands wrote the log");
    assert_eq!(order.split_whitespace().collect::<String>(), "ABABAB");
    let json = read_json(&json);
    let cs = commands(&json);
    assert_eq!(cs.len(), 2);
    assert_eq!(
        (&cs[0]["label"], &cs[1]["label"]),
        (&"A".into(), &"B".into())
    );
    for c in cs {
        assert_summary_consistent(c, 3);
    }
    let cmp = &json["comparison"][0];
    let (a, b) = (
        cs[0]["latency"]["p50_ms"].as_f64().unwrap(),
        cs[1]["latency"]["p50_ms"].as_f64().unwrap(),
    );
    assert_eq!(
        (&cmp["label"], &cmp["baseline"]),
        (&"B".into(), &"A".into())
    );
    let ratio = cmp["ratio_of_medians"].as_f64().expect("ratio_of_medians");
    assert!(
        (ratio - b / a).abs() <= 1e-9 * ratio.abs().max(1.0),
        "{cmp}"
    );
    let table = stdout(&out);
    assert!(
        table.lines().any(|l| l.starts_with("A "))
            && table.lines().any(|l| l.starts_with("B "))
            && table.contains("B vs A: median"),
        "{table}"
    );
    let svg = std::fs::read_to_string(&svg).expect("the probe wrote its SVG");
    assert_svg_well_formed(&svg);
    assert_eq!(svg.matches("<circle").count(), 6, "a dot per measured run");
    assert!(
        svg.contains("A: echo A") && svg.contains("B: echo B"),
        "{svg}"
    );
}

/// Starts with `<svg`, ends with `</svg>`, and every element opened is
/// closed in order (a small stack check; no XML parser needed).
fn assert_svg_well_formed(svg: &str) {
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("every tag is closed") + open;
        let tag = &rest[open + 1..close];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name), "closing </{name}> in {svg}");
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().expect("a tag name");
            stack.push(name);
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
    assert!(svg.contains("<line") && svg.contains("<text"), "{svg}");
}

#[test]
fn bad_input_is_a_usage_error_not_a_panic() {
    for args in [
        &["--delay", "50-10", "sleep 1"][..],
        &["--signal", "NOPE", "sleep 1"],
        &["'unclosed"],
        &["--load-url", "https://x/", "sleep 1"],
        &["--ready-line", "(", "sleep 1"],
        &["--timeout", "18446744073709551615", "sleep 1"],
        &[
            "--load-url",
            "http://127.0.0.1:9/",
            "--load-rate",
            "0",
            "sleep 1",
        ],
        &[
            "--load-url",
            "http://127.0.0.1:9/",
            "--load-rate",
            "NaN",
            "sleep 1",
        ],
    ] {
        let out = probe(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", explain(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
