//! The serialized report (the `serde` feature), from real runs: the field
//! names, the units (every duration in milliseconds, in a field ending in
//! `_ms`, equal to the `Duration` in the report), the tagged shapes; and the
//! `batch` and `server` examples' JSON, which keeps its own top-level keys
//! and carries the whole serialized report under `report`.
//!
//! Nothing here sleeps to synchronise: the runs are stopped by
//! `Handle::request` or by a signal after the example's `ready` line.

#![cfg(feature = "serde")]

#[cfg(unix)]
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use winddown::{Report, Runtime};

/// A bound that only a hang would pass ("does not hang").
const HANG: Duration = Duration::from_secs(30);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Every object in `v`, depth first.
fn objects(v: &Value) -> Vec<&serde_json::Map<String, Value>> {
    let mut out = Vec::new();
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        match v {
            Value::Object(o) => {
                out.push(o);
                todo.extend(o.values());
            }
            Value::Array(a) => todo.extend(a),
            _ => {}
        }
    }
    out
}

/// No duration slipped through in serde's own `{"secs", "nanos"}` form, and
/// every `_ms` field is a number or `null`.
fn assert_durations_are_milliseconds(v: &Value) {
    for o in objects(v) {
        assert!(
            !(o.contains_key("secs") && o.contains_key("nanos")),
            "a raw Duration: {o:?}"
        );
        for (k, val) in o {
            if k.ends_with("_ms") {
                assert!(val.is_number() || val.is_null(), "{k}: {val}");
            }
        }
    }
}

/// A run with a pool (one failure, one panic), a background thread, a
/// stop-accepting hook and a failing release hook, stopped by code.
fn eventful_run() -> Report {
    let mut rt = Runtime::builder()
        .signals(false)
        .build()
        .expect("a runtime");
    let pool = rt
        .pool::<u32>("jobs")
        .workers(2)
        .key(|n: &u32| *n)
        .start(|n, _| match n {
            2 => anyhow::bail!("job {n} refused"),
            3 => panic!("job {n} exploded"),
            _ => Ok(()),
        })
        .expect("a pool");
    rt.spawn("ticker", |token| {
        token.wait();
        Ok(())
    })
    .expect("a thread");
    rt.on_stop_accepting("unready", Duration::from_secs(5), || Ok(()));
    rt.on_release("flush", Duration::from_secs(5), || {
        anyhow::bail!("cache unreachable")
    });
    for n in 1..=5 {
        pool.submit(n).expect("running");
    }
    rt.handle().request("deploy");
    drop(pool);
    rt.run()
}

#[test]
fn a_real_report_serializes_with_the_documented_fields_in_milliseconds() {
    let report = eventful_run();
    let v = serde_json::to_value(&report).expect("a report always serializes");
    assert_durations_are_milliseconds(&v);

    assert_eq!(v["reason"], "requested: deploy");
    assert_eq!(
        v["stop_reason"],
        json!({"kind": "requested", "message": "deploy"})
    );
    assert_eq!(v["signal"], Value::Null);
    assert_eq!(v["exit_code"], report.exit_code);
    assert_eq!(v["exit_code"], 1, "a job failed");
    assert_eq!(v["has_failures"], true);
    assert_eq!(v["hard_stopped"], false);
    assert_eq!(v["forced_connections"], 0);

    // The unit is the millisecond: each field equals its Duration in ms.
    let t = report.timings;
    assert_eq!(v["ran_for_ms"], ms(t.triggered - t.started));
    let drain = t.drain_latency.expect("nothing was stuck");
    assert_eq!(v["drain_latency_ms"], ms(drain));
    assert_eq!(v["join_ms"], ms(t.join));
    assert_eq!(v["hard_stop_ms"], Value::Null);
    assert_eq!(v["release_ms"], ms(t.release));
    assert_eq!(v["total_ms"], ms(t.total));
    assert!(v["total_ms"].as_f64() < Some(ms(HANG)));

    let pool = &v["pools"][0];
    assert_eq!(pool["name"], "jobs");
    assert_eq!(pool["workers"], 2);
    assert_eq!(
        [
            "submitted",
            "succeeded",
            "failed",
            "panicked",
            "handed_back",
            "abandoned"
        ]
        .map(|k| pool[k].as_u64()),
        [5, 3, 1, 1, 0, 0].map(Some),
        "{pool:#}"
    );
    let errors = pool["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{pool:#}");
    for e in errors {
        assert_eq!(e["pool"], "jobs");
        let panicked = e["panicked"].as_bool().expect("a bool");
        let (key, words) = if panicked {
            ("3", "exploded")
        } else {
            ("2", "refused")
        };
        assert_eq!(e["key"], key, "{e}");
        assert!(
            e["message"].as_str().is_some_and(|m| m.contains(words)),
            "{e}"
        );
    }

    assert_eq!(
        v["threads"],
        json!([{"name": "ticker", "unit": "ticker", "outcome": "returned", "error": null}])
    );
    assert_eq!(v["stuck"], json!([]));
    assert_eq!(v["servers"], json!([]));

    let hooks = v["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert_eq!(hooks[0]["name"], "unready");
    assert_eq!(hooks[0]["kind"], "stop_accepting");
    assert_eq!(hooks[0]["outcome"], "ok");
    assert_eq!(hooks[0]["error"], Value::Null);
    assert_eq!(hooks[1]["kind"], "release");
    assert_eq!(hooks[1]["outcome"], "failed");
    assert_eq!(hooks[1]["error"], "cache unreachable");
    for (h, json) in report.hooks.iter().zip(hooks) {
        assert_eq!(json["elapsed_ms"], ms(h.elapsed));
    }
}

#[cfg(feature = "http")]
#[test]
fn a_servers_threads_are_reported_under_its_name_and_its_address_as_a_string() {
    let mut rt = Runtime::builder()
        .signals(false)
        .build()
        .expect("a runtime");
    let server = winddown::Server::builder()
        .workers(3)
        .bind("127.0.0.1:0")
        .expect("a listener");
    let addr = server.local_addr();
    server
        .start(&mut rt, |_, _| Ok(winddown::Response::text(200, "ok")))
        .expect("a server");
    rt.spawn("metrics", |token| {
        token.wait();
        Ok(())
    })
    .expect("a thread");
    rt.handle().request("test over");
    let report = rt.run();

    let v = serde_json::to_value(&report).expect("serializes");
    assert_eq!(v["servers"][0]["name"], "http");
    assert_eq!(v["servers"][0]["addr"], addr.to_string());
    assert_eq!(v["servers"][0]["connections"]["accepted"], 0);
    let threads = v["threads"].as_array().expect("threads");
    let (server_threads, others): (Vec<&Value>, Vec<&Value>) = threads
        .iter()
        .partition(|t| t["name"].as_str().is_some_and(|n| n.starts_with("http-")));
    assert!(
        server_threads.len() >= 3,
        "the workers at least: {threads:?}"
    );
    for t in &server_threads {
        assert_eq!(t["unit"], "http", "{t}");
        assert_eq!(t["outcome"], "returned", "{t}");
    }
    assert_eq!(
        others,
        [&json!({"name": "metrics", "unit": "metrics", "outcome": "returned", "error": null})]
    );

    // The Display groups them the same way.
    let long = format!("{report:#}");
    let grouped = format!("\n  http: {} threads returned\n", server_threads.len());
    assert!(long.contains(&grouped), "{long}");
    assert!(long.contains("\n  metrics: returned\n"), "{long}");
    assert!(!long.contains("http-0"), "{long}");
}

#[cfg(unix)]
mod examples {
    use std::path::Path;

    use nix::sys::signal::Signal;
    use serde_json::Value;

    use super::support::process::{example, Child};
    use super::{assert_durations_are_milliseconds, HANG};

    /// The example's own key must equal the serialized report's.
    fn same(v: &Value, key: &str) {
        assert_eq!(v[key], v["report"][key], "{key}");
    }

    #[test]
    fn the_batch_examples_json_keeps_its_keys_and_adds_the_whole_report() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("report.json");
        let args: Vec<String> = [
            "--quiet",
            "--items",
            "40",
            "--workers",
            "2",
            "--work",
            "0-1ms",
            "--fail-every",
            "10",
            "--hooks",
            "1",
            "--hook-ms",
            "1",
            "--report",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([path.display().to_string()])
        .collect();
        let mut child = Child::spawn(&example("batch"), &args, &dir.path().join("stderr"));
        let exit = child.wait_exit(HANG);
        assert_eq!(
            exit.code,
            Some(1),
            "4 items failed: {}",
            child.stderr_text()
        );
        let v: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("the report")).expect("JSON");
        assert_durations_are_milliseconds(&v);

        for key in [
            "reason",
            "signal",
            "exit_code",
            "hard_stopped",
            "drain_latency_ms",
            "join_ms",
            "release_ms",
            "total_ms",
            "hard_stop_ms",
            "pools",
        ] {
            same(&v, key);
        }
        assert_eq!(v["reason"], "completed");
        let pool = &v["pools"][0];
        for key in [
            "name",
            "workers",
            "submitted",
            "succeeded",
            "failed",
            "panicked",
            "handed_back",
            "abandoned",
            "abandoned_keys",
        ] {
            assert!(pool.get(key).is_some(), "pools[0].{key}: {pool:#}");
        }
        assert_eq!(pool["failed"], 4);
        assert_eq!(v["handed_back_ids"], serde_json::json!([]));
        assert_eq!(v["stuck"], serde_json::json!([]));
        // The example's hook shape: status and ms.
        let hook = &v["hooks"][0];
        assert_eq!(hook["name"], "hook-0");
        assert_eq!(hook["status"], "ok");
        assert_eq!(hook["ms"], v["report"]["hooks"][0]["elapsed_ms"]);
        // The example's flat error list: key, message, panicked.
        let errors = v["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 4, "{errors:?}");
        for e in errors {
            assert!(e["key"].is_string() && e["message"].is_string(), "{e}");
            assert_eq!(e["panicked"], false);
        }
        // And the whole report, in the library's shape.
        assert_eq!(v["report"]["stop_reason"]["kind"], "completed");
        assert_eq!(v["report"]["threads"][0]["name"], "producer");
        assert_eq!(v["report"]["threads"][0]["unit"], "producer");
    }

    #[test]
    fn the_server_examples_json_keeps_its_keys_and_adds_the_whole_report() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("report.json");
        let args = [
            "--addr".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--workers".to_owned(),
            "2".to_owned(),
            "--report".to_owned(),
            path.display().to_string(),
        ];
        let stderr = dir.path().join("stderr");
        let mut child = Child::spawn(&example("server"), &args, Path::new(&stderr));
        child.expect_line("ready", HANG);
        child.signal(Signal::SIGTERM);
        let exit = child.wait_exit(HANG);
        assert_eq!(exit.code, Some(130), "{}", child.stderr_text());
        let v: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("the report")).expect("JSON");
        assert_durations_are_milliseconds(&v);

        for key in [
            "reason",
            "signal",
            "exit_code",
            "hard_stopped",
            "forced_connections",
            "drain_latency_ms",
            "hard_stop_ms",
            "total_ms",
            "servers",
            "pools",
            "hooks",
        ] {
            same(&v, key);
        }
        assert_eq!(v["signal"], "SIGTERM");
        assert_eq!(v["connections"], v["report"]["servers"][0]["connections"]);
        assert_eq!(v["stuck"], serde_json::json!([]), "a list of names");
        let hook = &v["hooks"][0];
        assert_eq!(
            (&hook["name"], &hook["outcome"], &hook["error"]),
            (&"audit-log".into(), &"ok".into(), &Value::Null)
        );
        let long = child.stderr_text();
        assert!(long.contains("\n  http: 4 threads returned\n"), "{long}");
    }
}
