//! The `tracing` events (feature `tracing`): which ones a stop emits, at
//! which level, with which fields. A collecting subscriber is installed for
//! the whole test binary; the tests take turns through a lock, because
//! events from the runtime's own threads (signals, hooks) reach the global
//! subscriber, not a per-thread one.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use winddown::{Runtime, StopReason};

/// One event as recorded: level, message and fields as text.
#[derive(Clone, Debug)]
struct Recorded {
    level: Level,
    target: String,
    message: String,
    fields: BTreeMap<String, String>,
}

impl Recorded {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Visitor {
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .insert(field.name().to_owned(), value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().to_owned(), text);
        }
    }
}

#[derive(Clone, Default)]
struct Collector(Arc<(Mutex<Vec<Recorded>>, Condvar)>);

impl<S: Subscriber> Layer<S> for Collector {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = Visitor::default();
        event.record(&mut v);
        let (events, arrived) = &*self.0;
        let mut events = events.lock();
        arrived.notify_all();
        events.push(Recorded {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message: v.message,
            fields: v.fields,
        });
    }
}

/// Installs the collector once; returns it with the turn lock held and the
/// record cleared.
fn collect() -> (MutexGuard<'static, ()>, Collector) {
    static TURN: Mutex<()> = Mutex::new(());
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    let guard = TURN.lock();
    let collector = COLLECTOR
        .get_or_init(|| {
            let c = Collector::default();
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(c.clone()))
                .expect("the only subscriber of this test binary");
            c
        })
        .clone();
    collector.0 .0.lock().clear();
    (guard, collector)
}

fn events(c: &Collector) -> Vec<Recorded> {
    c.0 .0.lock().clone()
}

/// Waits until an event whose message contains `message_part` has arrived:
/// events from the runtime's own threads (the signal listener) may come
/// after the stop they caused is visible to the test.
fn wait_for(c: &Collector, message_part: &str) {
    let (events, arrived) = &*c.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut events = events.lock();
    while !events.iter().any(|e| e.message.contains(message_part)) {
        assert!(
            !arrived.wait_until(&mut events, deadline).timed_out(),
            "does not hang: no event {message_part:?} in {:#?}",
            *events
        );
    }
}

fn find<'a>(events: &'a [Recorded], message_part: &str) -> Vec<&'a Recorded> {
    events
        .iter()
        .filter(|e| e.message.contains(message_part))
        .collect()
}

#[test]
fn a_stop_logs_its_reason_its_phases_in_order_and_its_summary() {
    let (_turn, c) = collect();
    let mut rt = Runtime::builder().signals(false).build().unwrap();
    let handle = rt.handle();
    rt.on_release("flush", Duration::from_secs(5), || Ok(()));
    handle.request("operator asked");
    let report = rt.run();
    assert_eq!(report.exit_code, 0);

    let ev = events(&c);
    assert!(ev.iter().all(|e| e.target == "winddown"), "{ev:#?}");
    let begun = find(&ev, "stop begun");
    assert_eq!(begun.len(), 1, "{ev:#?}");
    assert_eq!(begun[0].level, Level::INFO);
    assert_eq!(begun[0].field("reason"), Some("requested: operator asked"));
    assert!(begun[0].field("grace_ms").is_some());

    let phases: Vec<&str> = find(&ev, "phase")
        .iter()
        .filter_map(|e| e.field("phase"))
        .collect();
    assert_eq!(
        phases,
        ["stop_accepting", "draining", "releasing", "done"],
        "{ev:#?}"
    );
    let drained = find(&ev, "drained");
    assert_eq!(drained.len(), 1);
    assert!(drained[0].field("drain_latency_ms").is_some());

    let hook = find(&ev, "hook done");
    assert_eq!(hook.len(), 1);
    assert_eq!(hook[0].level, Level::DEBUG);
    assert_eq!(hook[0].field("hook"), Some("flush"));
    assert_eq!(hook[0].field("kind"), Some("release"));

    let stopped = find(&ev, "stopped");
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].field("exit_code"), Some("0"));
    assert_eq!(
        stopped[0].field("summary"),
        Some(report.to_string().as_str())
    );
    // The summary is the last event of the run.
    assert_eq!(ev.last().map(|e| e.message.as_str()), Some("stopped"));
}

#[test]
fn failures_timeouts_and_stuck_threads_are_warnings_with_names() {
    let (_turn, c) = collect();
    let mut rt = Runtime::builder()
        .signals(false)
        .grace(Duration::from_millis(20))
        .kill_grace(Duration::ZERO)
        .build()
        .unwrap();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    // Ignores its token: stuck past both deadlines until the test ends it.
    rt.spawn_service("stubborn", move |_token| {
        let _ = release_rx.recv();
        Ok(())
    })
    .unwrap();
    rt.spawn("reporter", |token| {
        token.wait();
        anyhow::bail!("upstream gone")
    })
    .unwrap();
    let (hook_tx, hook_rx) = crossbeam_channel::bounded::<()>(0);
    rt.on_release("slow", Duration::from_millis(10), move || {
        let _ = hook_rx.recv();
        Ok(())
    });
    rt.on_release("broken", Duration::from_secs(5), || {
        anyhow::bail!("disk full")
    });
    rt.on_release("panicky", Duration::from_secs(5), || panic!("oops"));
    rt.handle().request("test");
    let report = rt.run();
    drop(hook_tx);
    drop(release_tx);
    assert_eq!(report.stuck.len(), 1);

    let ev = events(&c);
    let hard = find(&ev, "hard stop");
    assert_eq!(hard.len(), 1, "{ev:#?}");
    assert_eq!(hard[0].level, Level::WARN);
    assert_eq!(hard[0].field("still_running"), Some("1"));

    let stuck = find(&ev, "stuck past the deadline");
    assert_eq!(stuck.len(), 1, "{ev:#?}");
    assert_eq!(stuck[0].level, Level::WARN);
    assert_eq!(stuck[0].field("thread"), Some("stubborn"));

    let failed = find(&ev, "background thread failed");
    assert_eq!(failed.len(), 1, "{ev:#?}");
    assert_eq!(failed[0].field("thread"), Some("reporter"));
    assert_eq!(failed[0].field("error"), Some("upstream gone"));

    // Release hooks run last registered first: panicky, broken, slow.
    let hooks: Vec<(&str, Level)> = ev
        .iter()
        .filter(|e| e.message.starts_with("hook "))
        .map(|e| (e.field("hook").unwrap_or("?"), e.level))
        .collect();
    assert_eq!(
        hooks,
        [
            ("panicky", Level::ERROR),
            ("broken", Level::WARN),
            ("slow", Level::WARN),
        ],
        "{ev:#?}"
    );
    assert_eq!(
        find(&ev, "hook failed")[0].field("error"),
        Some("disk full")
    );
    assert_eq!(find(&ev, "hook panicked")[0].field("panic"), Some("oops"));
    assert!(find(&ev, "overran its budget")[0]
        .field("budget_ms")
        .is_some());
    let phases: Vec<&str> = find(&ev, "phase")
        .iter()
        .filter_map(|e| e.field("phase"))
        .collect();
    assert_eq!(
        phases,
        [
            "stop_accepting",
            "draining",
            "hard_stop",
            "releasing",
            "done"
        ]
    );
}

#[cfg(unix)]
#[test]
fn a_signal_is_logged_with_its_name() {
    use nix::sys::signal::{raise, Signal as NixSignal};
    let (_turn, c) = collect();
    let rt = Runtime::builder()
        .handle_signals([winddown::Signal::Terminate])
        .build()
        .unwrap();
    // The runtime, built with signals on, is this binary's only one that
    // hooks SIGTERM; the delivery reaches it through the listener thread.
    let stop = rt.handle().token();
    raise(NixSignal::SIGTERM).unwrap();
    assert!(
        stop.wait_timeout(Duration::from_secs(10)),
        "does not hang: the signal stops the runtime"
    );
    let report = rt.run();
    assert_eq!(
        report.reason,
        StopReason::Signal(winddown::Signal::Terminate)
    );
    wait_for(&c, "signal received");
    let ev = events(&c);
    let got = find(&ev, "signal received: stopping");
    assert_eq!(got.len(), 1, "{ev:#?}");
    assert_eq!(got[0].level, Level::WARN);
    assert_eq!(got[0].field("signal"), Some("SIGTERM"));
    assert_eq!(got[0].field("number"), Some("15"));
    assert_eq!(find(&ev, "stop begun")[0].field("reason"), Some("signal"));
}

#[test]
fn job_and_worker_failures_name_the_pool_the_key_and_the_error() {
    let (_turn, c) = collect();
    let mut rt = Runtime::builder().signals(false).build().unwrap();
    let pool = rt
        .pool::<u32>("parse")
        .workers(2)
        .key(|n| *n)
        .fail_fast(true)
        .start_with(
            |worker| {
                anyhow::ensure!(worker == 0, "no connection for worker {worker}");
                Ok(())
            },
            |_: &mut (), n, _token| {
                anyhow::ensure!(n != 7, "seven is not allowed");
                Ok(())
            },
        )
        .unwrap();
    let _ = pool.submit(7);
    drop(pool);
    let report = rt.run();
    assert!(report.has_failures());

    let ev = events(&c);
    let worker = find(&ev, "pool worker failed outside a job");
    assert_eq!(worker.len(), 1, "{ev:#?}");
    assert_eq!(worker[0].level, Level::ERROR);
    assert_eq!(worker[0].field("pool"), Some("parse"));
    assert_eq!(worker[0].field("thread"), Some("parse-1"));
    assert_eq!(worker[0].field("stage"), Some("init"));
    assert_eq!(worker[0].field("error"), Some("no connection for worker 1"));
    // Fail-fast: the init failure stops the run, once.
    assert_eq!(find(&ev, "fail-fast pool").len(), 1, "{ev:#?}");
    // Job 7 either ran and failed (worker 0 took it before the stop) or was
    // handed back; if it ran, its failure is an event with its key.
    let p = report.pool("parse").unwrap();
    let failed = find(&ev, "job failed");
    assert_eq!(failed.len() as u64, p.failed, "{ev:#?}");
    for e in failed {
        assert_eq!(e.level, Level::WARN);
        assert_eq!(e.field("job_key"), Some("7"));
        assert_eq!(e.field("error"), Some("seven is not allowed"));
    }
}
