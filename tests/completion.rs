//! The completion rule (`src/join.rs`, `Hold`): the run completes by itself
//! once every thread that holds it open has exited — pool workers (work)
//! and services hold it, helpers (`spawn`) do not, unless they are all there
//! is — and a stop during start-up: units added after the trigger start
//! stopped, without an error.

mod common_api;

use std::time::{Duration, Instant};

use common_api::{assert_balanced, rt, threads_named_after_exit, HANG};
use winddown::{Phase, StopReason, ThreadOutcome, TrySubmitError};

/// How long a thread watches its token after the pool drained, as the
/// observation that nothing stopped the run. Not synchronisation: the
/// runtime's thread had every chance to notice by then; a wrong completion
/// would fail the check either way it lands.
const OBSERVE: Duration = Duration::from_millis(200);

fn outcome<'r>(report: &'r winddown::Report, name: &str) -> &'r ThreadOutcome {
    &report
        .threads
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no thread {name}: {report:#}"))
        .outcome
}

#[test]
fn a_service_holds_the_run_open_after_a_pool_drains() {
    let mut runtime = rt().build().unwrap();
    let handle = runtime.handle();
    let (ran_tx, ran_rx) = crossbeam_channel::unbounded();
    let pool = runtime
        .pool::<u32>("svcpool")
        .workers(2)
        .start(move |n, _| {
            ran_tx.send(n).unwrap();
            Ok(())
        })
        .unwrap();
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded();
    runtime
        .spawn_service("svc", move |token| {
            // Every job ran, and both workers exited: the pool is done.
            for _ in 0..5 {
                ran_rx.recv_timeout(HANG)?;
            }
            anyhow::ensure!(threads_named_after_exit("svcpool-") == 0, "workers left");
            let stopped = token.wait_timeout(OBSERVE);
            seen_tx.send((stopped, handle.phase()))?;
            handle.request("done");
            token.wait();
            Ok(())
        })
        .unwrap();
    assert_eq!(pool.feed(0..5).unwrap(), 5);
    drop(pool); // its only submitter: the pool closes and drains
    let start = Instant::now();
    let report = runtime.run();
    assert!(start.elapsed() < HANG, "{report:#}");
    assert_eq!(
        seen_rx.try_recv().ok(),
        Some((false, Phase::Running)),
        "the run went on after the pool drained: {report:#}"
    );
    assert_eq!(report.reason, StopReason::Requested("done".into()));
    assert_balanced(&report);
    assert_eq!(report.pools[0].succeeded, 5);
    assert_eq!(outcome(&report, "svc"), &ThreadOutcome::Returned);
    assert!(report.stuck.is_empty(), "{report:#}");
}

#[cfg(feature = "http")]
#[test]
fn a_server_keeps_serving_after_a_warm_up_pool_completes() {
    use std::io::{Read, Write};
    use winddown::{Response, Server};

    let mut runtime = rt().build().unwrap();
    let handle = runtime.handle();
    let server = Server::builder()
        .name("web")
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    server
        .start(&mut runtime, |_req, _token| Ok(Response::text(200, "up\n")))
        .unwrap();
    let (ran_tx, ran_rx) = crossbeam_channel::unbounded();
    let warm = runtime
        .pool::<u32>("warmup")
        .workers(2)
        .start(move |n, _| {
            ran_tx.send(n).unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(warm.feed(0..3).unwrap(), 3);
    drop(warm);
    let token = handle.token();
    let client = std::thread::spawn(move || -> anyhow::Result<(bool, Phase, String)> {
        for _ in 0..3 {
            ran_rx.recv_timeout(HANG)?;
        }
        anyhow::ensure!(threads_named_after_exit("warmup-") == 0, "workers left");
        let stopped = token.wait_timeout(OBSERVE);
        let phase = handle.phase();
        let mut conn = std::net::TcpStream::connect(addr)?;
        conn.set_read_timeout(Some(HANG))?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        conn.read_to_string(&mut response)?;
        handle.request("done");
        Ok((stopped, phase, response))
    });
    let report = runtime.run();
    let (stopped, phase, response) = client.join().unwrap().unwrap();
    assert!(!stopped, "the warm-up pool's completion stopped the run");
    assert_eq!(phase, Phase::Running);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\nup\n"), "{response}");
    assert_eq!(report.reason, StopReason::Requested("done".into()));
    assert_balanced(&report);
    assert_eq!(report.pools[0].succeeded, 3);
    let web = &report.servers[0];
    assert_eq!(
        (web.connections.accepted, web.connections.served),
        (1, 1),
        "{report:#}"
    );
    assert!(report.stuck.is_empty(), "{report:#}");
}

#[test]
fn helpers_alone_complete_the_run_when_they_return() {
    let mut runtime = rt().build().unwrap();
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    // The first returns only after the second told it to; each returns with
    // its token still running: nothing stopped them before they returned.
    runtime
        .spawn("helper-a", move |token| {
            rx.recv_timeout(HANG)?;
            anyhow::ensure!(!token.is_stopping(), "stopped before it returned");
            Ok(())
        })
        .unwrap();
    runtime
        .spawn("helper-b", move |token| {
            tx.send_timeout((), HANG)?;
            anyhow::ensure!(!token.is_stopping(), "stopped before it returned");
            Ok(())
        })
        .unwrap();
    let start = Instant::now();
    let report = runtime.run();
    assert!(start.elapsed() < HANG);
    assert_eq!(report.reason, StopReason::Completed, "{report:#}");
    assert_eq!(outcome(&report, "helper-a"), &ThreadOutcome::Returned);
    assert_eq!(outcome(&report, "helper-b"), &ThreadOutcome::Returned);
    assert!(report.stuck.is_empty());
    assert_eq!(report.exit_code, 0);
}

#[test]
fn a_pool_completes_the_run_and_a_looping_helper_is_stopped() {
    let mut runtime = rt().build().unwrap();
    let pool = runtime
        .pool::<u32>("done")
        .workers(2)
        .start(|_, _| Ok(()))
        .unwrap();
    let (looped_tx, looped_rx) = crossbeam_channel::unbounded();
    runtime
        .spawn("looper", move |token| {
            let mut rounds = 0u32;
            while !token.wait_timeout(Duration::from_millis(1)) {
                rounds += 1;
            }
            looped_tx.send(rounds)?;
            Ok(())
        })
        .unwrap();
    assert_eq!(pool.feed(0..10).unwrap(), 10);
    drop(pool);
    let start = Instant::now();
    let report = runtime.run();
    assert!(start.elapsed() < HANG);
    assert_eq!(report.reason, StopReason::Completed, "{report:#}");
    assert_balanced(&report);
    assert_eq!(report.pools[0].succeeded, 10);
    assert_eq!(outcome(&report, "looper"), &ThreadOutcome::Returned);
    assert!(
        looped_rx.try_recv().is_ok(),
        "the helper saw its token stop"
    );
    assert!(report.stuck.is_empty());
}

#[test]
fn a_stop_during_start_up_starts_units_stopped_and_run_returns_at_once() {
    let mut runtime = rt().build().unwrap();
    let handle = runtime.handle();
    assert!(handle.request("early"));
    let pool = runtime
        .pool::<String>("late")
        .workers(2)
        .start(|_, _| Ok(()))
        .expect("a pool started after the stop is not an error");
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded();
    runtime
        .spawn("late-helper", move |token| {
            seen_tx.send(token.is_stopping())?;
            Ok(())
        })
        .expect("a thread spawned after the stop is not an error");
    let refused = pool.submit("a".to_owned()).unwrap_err();
    assert_eq!(refused.into_inner(), "a");
    match pool.try_submit("b".to_owned()) {
        Err(TrySubmitError::Stopped(job)) => assert_eq!(job, "b"),
        other => panic!("try_submit after the stop: {other:?}"),
    }
    let err = pool.feed(["c".to_owned(), "d".to_owned()]).unwrap_err();
    assert_eq!(err.submitted, 0);
    assert_eq!(err.into_unsubmitted().collect::<Vec<_>>(), ["c", "d"]);
    let id = pool.id();
    drop(pool);
    let start = Instant::now();
    let mut report = runtime.run();
    assert!(start.elapsed() < HANG, "{report:#}");
    assert_eq!(report.reason, StopReason::Requested("early".into()));
    assert_balanced(&report);
    let late = report.pool("late").unwrap().clone();
    assert_eq!(late.submitted, 0, "{report:#}");
    assert_eq!(late.workers, 2);
    assert!(report.take_handed_back(id).is_empty());
    assert_eq!(
        seen_rx.try_recv().ok(),
        Some(true),
        "the helper started stopped"
    );
    assert_eq!(outcome(&report, "late-helper"), &ThreadOutcome::Returned);
    assert!(report.stuck.is_empty());
    assert_eq!(report.timings.hard_stop, None, "nothing to wait for");
}
