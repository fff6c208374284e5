//! Staged shutdown: a later stage takes work from the earlier ones until
//! they have drained, then drains itself; a stage past its budget is
//! hard-stopped alone; the drain deadline hard-stops every stage; every job
//! is accounted for; and, on real processes with real signals, a request in
//! flight at SIGTERM queues a job that runs, a signal during start-up leaves
//! a later stage accepting, and a second signal still ends the process.
//!
//! Nothing here sleeps to synchronise: threads hand each other messages on
//! channels, processes print protocol lines. Time is only measured against
//! "does not hang" bounds, and against a budget that must have passed.

#![cfg(unix)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use nix::sys::signal::{kill, Signal as Sig};
use nix::unistd::Pid;
use winddown::{BuildError, DrainPolicy, Phase, Runtime, Stage, StopReason};

/// Generous: a debug build on two busy cores. Only "does not hang".
const HANG: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn runtime() -> Runtime {
    Runtime::builder()
        .signals(false)
        .grace(HANG)
        .build()
        .expect("a runtime")
}

/// What a job of a later stage saw of its own token and of the root's.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    stopping: bool,
    hard: bool,
    root_hard: bool,
}

// ===== In one process, stopped by a request =====

#[test]
fn a_later_stage_accepts_and_runs_work_from_the_first_until_the_first_has_drained() {
    let mut rt = runtime();
    let later = rt.stage("workers").unwrap();
    let root = rt.handle().token();
    let jobs = rt
        .pool::<Sender<Seen>>("jobs")
        .stage(later)
        .workers(1)
        .start(move |reply, token| {
            let _ = reply.send(Seen {
                stopping: token.is_stopping(),
                hard: token.is_hard_stopping(),
                root_hard: root.is_hard_stopping(),
            });
            Ok(())
        })
        .unwrap();
    let (seen_tx, seen_rx) = unbounded();
    // A stand-in for a request handler: in flight at the trigger, it queues
    // three jobs and waits for each one's answer before it is done.
    rt.spawn_service("handler", move |token| {
        token.wait();
        for _ in 0..3 {
            let (tx, rx) = bounded(1);
            jobs.submit(tx)
                .map_err(|_| anyhow::anyhow!("the later stage refused"))?;
            seen_tx.send(rx.recv()?)?;
        }
        Ok(())
    })
    .unwrap();
    assert!(rt.handle().request("deploy"));
    let report = rt.run();
    let seen: Vec<Seen> = seen_rx.try_iter().collect();
    let running = Seen {
        stopping: false,
        hard: false,
        root_hard: false,
    };
    assert_eq!(
        seen,
        [running.clone(), running.clone(), running],
        "{report:#}"
    );
    let pool = report.pool("jobs").unwrap();
    assert_eq!((pool.submitted, pool.succeeded), (3, 3), "{report:#}");
    assert!(pool.is_balanced());
    assert_eq!(report.exit_code, 0, "{report:#}");
    assert!(!report.hard_stopped());
    let [first, workers] = &report.stages[..] else {
        panic!("two stages: {:?}", report.stages)
    };
    assert_eq!((first.name.as_str(), first.index), ("main", 0));
    assert_eq!((workers.name.as_str(), workers.index), ("workers", 1));
    assert!(
        workers.began >= first.drain_latency.expect("the first stage drained"),
        "{report:#}"
    );
    assert!(workers.drain_latency.is_some());
    assert!(report.to_string().contains("; stages main "), "{report}");
}

#[test]
fn a_later_stage_stops_accepting_once_the_earlier_ones_have_drained() {
    let mut rt = runtime();
    let later = rt.stage("workers").unwrap();
    let jobs = rt
        .pool::<u32>("jobs")
        .stage(later)
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    let after = jobs.submitter();
    let handle = rt.handle();
    let (phase_tx, phase_rx) = unbounded();
    // A helper of the first stage: exits at the trigger.
    rt.spawn("helper", |token| {
        token.wait();
        Ok(())
    })
    .unwrap();
    // The program's own thread, outside every stage: submits until refused.
    let producer = thread::spawn(move || {
        handle.token().wait();
        let mut accepted = 0u64;
        let refused_at = loop {
            // Blocks while the queue is full; refused once the stage began.
            match after.submit(1) {
                Ok(()) => accepted += 1,
                Err(e) => break (e.into_inner(), handle.phase()),
            }
        };
        let _ = phase_tx.send(refused_at);
        accepted
    });
    drop(jobs);
    rt.handle().request("deploy");
    let report = rt.run();
    let accepted = producer.join().unwrap();
    let (job, phase) = phase_rx.recv().unwrap();
    assert_eq!(job, 1, "the refused job came back");
    assert!(phase.is_stopping(), "refused at {phase:?}");
    let pool = report.pool("jobs").unwrap();
    assert_eq!(pool.submitted, accepted);
    assert_eq!(pool.succeeded + pool.handed_back, accepted, "{report:#}");
    assert!(pool.is_balanced());
}

#[test]
fn a_stage_that_overruns_its_budget_hard_stops_only_itself() {
    let mut rt = Runtime::builder()
        .signals(false)
        .grace(HANG)
        .kill_grace(Duration::from_secs(5))
        .build()
        .unwrap();
    const BUDGET: Duration = Duration::from_millis(100);
    let slow = rt.stage_with_budget("slow", BUDGET).unwrap();
    let last = rt.stage("last").unwrap();
    let root = rt.handle().token();
    let last_pool = rt
        .pool::<Sender<Seen>>("last")
        .stage(last)
        .workers(1)
        .start(move |reply, token| {
            let _ = reply.send(Seen {
                stopping: token.is_stopping(),
                hard: token.is_hard_stopping(),
                root_hard: root.is_hard_stopping(),
            });
            Ok(())
        })
        .unwrap();
    let (started_tx, started_rx) = bounded(1);
    let (seen_tx, seen_rx) = unbounded();
    let slow_pool = rt
        .pool::<()>("slow")
        .stage(slow)
        .workers(1)
        .start(move |(), token| {
            let _ = started_tx.send(());
            // Overruns its stage's budget; cut only by its hard token.
            token.wait_hard();
            let (tx, rx) = bounded(1);
            last_pool
                .submit(tx)
                .map_err(|_| anyhow::anyhow!("the last stage refused"))?;
            seen_tx.send(rx.recv()?)?;
            Ok(())
        })
        .unwrap();
    slow_pool.submit(()).unwrap();
    started_rx.recv().unwrap();
    drop(slow_pool);
    let triggered = Instant::now();
    rt.handle().request("deploy");
    let report = rt.run();
    assert!(triggered.elapsed() < Duration::from_secs(10), "{report:#}");
    // The job of the later stage ran after the slow stage's hard stop, and
    // neither its own hard token nor the root's had fired.
    let seen: Vec<Seen> = seen_rx.try_iter().collect();
    assert_eq!(
        seen,
        [Seen {
            stopping: false,
            hard: false,
            root_hard: false
        }],
        "{report:#}"
    );
    let [main, slow, last] = &report.stages[..] else {
        panic!("three stages: {:?}", report.stages)
    };
    assert_eq!(main.hard_stop, None);
    assert_eq!(slow.budget, Some(BUDGET));
    let cut = slow.hard_stop.expect("the slow stage was hard-stopped");
    assert!(cut >= BUDGET, "hard stop at {cut:?}, before the budget");
    assert!(slow.drain_latency.unwrap() >= BUDGET);
    assert_eq!(last.hard_stop, None, "{report:#}");
    assert!(last.began >= cut);
    assert_eq!(
        report.timings.hard_stop, None,
        "the drain deadline did not pass"
    );
    assert!(report.hard_stopped());
    assert_eq!(report.exit_code, 1, "a hard stop is a failure: {report:#}");
    for name in ["slow", "last"] {
        let p = report.pool(name).unwrap();
        assert_eq!((p.submitted, p.succeeded), (1, 1), "{report:#}");
        assert!(p.is_balanced());
    }
    assert!(report.stuck.is_empty());
    let detailed = format!("{report:#}");
    assert!(detailed.contains("stage slow: began at"), "{detailed}");
    assert!(detailed.contains(", hard stop at "), "{detailed}");
}

#[test]
fn a_first_stage_past_its_budget_is_hard_stopped_and_the_later_stage_is_not() {
    let mut rt = runtime();
    const BUDGET: Duration = Duration::from_millis(100);
    rt.first_stage_budget(BUDGET);
    let later = rt.stage("later").unwrap();
    let jobs = rt
        .pool::<Sender<Seen>>("jobs")
        .stage(later)
        .workers(1)
        .start(|reply, token| {
            let _ = reply.send(Seen {
                stopping: token.is_stopping(),
                hard: token.is_hard_stopping(),
                root_hard: false,
            });
            Ok(())
        })
        .unwrap();
    let (seen_tx, seen_rx) = unbounded();
    // Overruns the first stage's budget; then queues a job in the later one.
    rt.spawn_service("slow", move |token| {
        token.wait_hard();
        let (tx, rx) = bounded(1);
        jobs.submit(tx).map_err(|_| anyhow::anyhow!("refused"))?;
        seen_tx.send(rx.recv()?)?;
        Ok(())
    })
    .unwrap();
    let triggered = Instant::now();
    rt.handle().request("deploy");
    let report = rt.run();
    assert!(triggered.elapsed() < Duration::from_secs(10), "{report:#}");
    let seen: Vec<Seen> = seen_rx.try_iter().collect();
    assert_eq!(
        seen,
        [Seen {
            stopping: false,
            hard: false,
            root_hard: false
        }],
        "{report:#}"
    );
    let cut = report.stages[0].hard_stop.expect("the first stage was cut");
    assert!(cut >= BUDGET, "{cut:?}");
    assert_eq!(report.stages[0].budget, Some(BUDGET));
    assert_eq!(report.stages[1].hard_stop, None);
    assert_eq!(report.timings.hard_stop, None);
    assert_eq!(report.pool("jobs").unwrap().succeeded, 1);
    assert_eq!(report.exit_code, 1);
}

#[test]
fn the_drain_deadline_hard_stops_every_stage_and_begins_the_ones_not_yet_begun() {
    let mut rt = Runtime::builder()
        .signals(false)
        .grace(ms(200))
        .kill_grace(Duration::from_secs(10))
        .build()
        .unwrap();
    let later = rt.stage("later").unwrap();
    let (started_tx, started_rx) = bounded(1);
    let pool = rt
        .pool::<u32>("later")
        .stage(later)
        .workers(1)
        .capacity(8)
        .key(|n| *n)
        .start(move |n, token| {
            if n == 0 {
                let _ = started_tx.send(());
                token.wait_hard(); // in flight until the deadline
            }
            Ok(())
        })
        .unwrap();
    let id = pool.id();
    for n in 0..6 {
        pool.submit(n).unwrap();
    }
    started_rx.recv().unwrap();
    // The first stage outlives the grace: it returns at the hard stop.
    rt.spawn_service("stubborn", |token| {
        token.wait_hard();
        Ok(())
    })
    .unwrap();
    let triggered = Instant::now();
    rt.handle().request("deploy");
    let mut report = rt.run();
    assert!(triggered.elapsed() < Duration::from_secs(10), "{report:#}");
    let at = report.timings.hard_stop.expect("the deadline passed");
    assert!(at >= ms(200));
    for s in &report.stages {
        assert_eq!(s.hard_stop, Some(at), "{report:#}");
        assert!(s.drain_latency.is_some(), "{report:#}");
    }
    assert!(report.stages[1].began >= ms(200));
    // Job 0 ran to its end; the five queued behind it come back in order.
    let p = report.pool("later").unwrap();
    assert_eq!((p.submitted, p.succeeded, p.handed_back), (6, 1, 5));
    assert!(p.is_balanced());
    assert_eq!(report.take_handed_back(id), vec![1, 2, 3, 4, 5]);
    assert_eq!(report.exit_code, 1);
}

#[test]
fn accounting_holds_in_every_stage_under_both_drain_policies() {
    const JOBS: u32 = 200;
    let mut rt = runtime();
    let second = rt.stage("second").unwrap();
    let third = rt.stage("third").unwrap();
    let mut ids = Vec::new();
    let mut pools = Vec::new();
    for (name, stage, policy) in [
        ("a", Stage::FIRST, DrainPolicy::HandBack),
        ("b", second, DrainPolicy::HandBack),
        ("c", third, DrainPolicy::Finish),
    ] {
        let pool = rt
            .pool::<u32>(name)
            .stage(stage)
            .workers(2)
            .capacity(JOBS as usize)
            .drain(policy)
            .start(|n, _| {
                anyhow::ensure!(n % 7 != 0, "multiple of seven");
                assert!(n % 50 != 49, "49 mod 50");
                Ok(())
            })
            .unwrap();
        ids.push(pool.id());
        pool.feed(0..JOBS).unwrap();
        pools.push(pool);
    }
    rt.handle().request("deploy");
    let mut report = rt.run();
    for (name, id) in ["a", "b", "c"].into_iter().zip(ids) {
        let p = report.pool(name).unwrap().clone();
        assert!(p.is_balanced(), "{name}: {report:#}");
        assert_eq!(p.submitted, u64::from(JOBS));
        assert_eq!(p.abandoned, 0);
        let back = report.take_handed_back(id);
        assert_eq!(back.len() as u64, p.handed_back);
        assert!(back.windows(2).all(|w| w[0] < w[1]), "queue order");
        if name == "c" {
            assert_eq!(p.handed_back, 0, "Finish runs everything");
            let sevens = (0..JOBS).filter(|n| n % 7 == 0).count();
            assert_eq!(p.failed, sevens as u64);
        }
    }
    drop(pools);
}

#[test]
fn a_run_that_completes_by_itself_drains_every_stage_in_order() {
    let mut rt = runtime();
    let later = rt.stage("later").unwrap();
    let a = rt.pool::<u32>("a").workers(1).start(|_, _| Ok(())).unwrap();
    let b = rt
        .pool::<u32>("b")
        .stage(later)
        .workers(1)
        .start(|_, _| Ok(()))
        .unwrap();
    a.feed(0..10).unwrap();
    b.feed(0..10).unwrap();
    drop((a, b));
    let report = rt.run();
    assert_eq!(report.reason, StopReason::Completed);
    assert_eq!(report.pool("a").unwrap().succeeded, 10);
    assert_eq!(report.pool("b").unwrap().succeeded, 10);
    assert_eq!(report.stages.len(), 2);
    assert_eq!(report.exit_code, 0);
}

#[test]
fn stage_names_and_stages_of_another_runtime_are_refused_with_typed_errors() {
    let mut rt = runtime();
    let mut other = runtime();
    let theirs = other.stage("theirs").unwrap();
    assert!(matches!(rt.stage("main"), Err(BuildError::DuplicateName(n)) if n == "main"));
    assert!(matches!(rt.stage(""), Err(BuildError::InvalidName(_))));
    let ours = rt.stage("ours").unwrap();
    assert!(matches!(
        rt.stage("ours"),
        Err(BuildError::DuplicateName(_))
    ));
    assert_eq!(ours.index(), theirs.index());
    let refused = rt
        .pool::<u32>("p")
        .stage(theirs)
        .workers(1)
        .start(|_, _| Ok(()));
    assert!(matches!(refused, Err(BuildError::UnknownStage { unit }) if unit == "p"));
    // The name was not taken by the refused start.
    let pool = rt
        .pool::<u32>("p")
        .stage(ours)
        .workers(1)
        .start(|_, _| Ok(()));
    assert!(pool.is_ok());
    drop(pool);
    // The first stage is every runtime's.
    let first = other
        .pool::<u32>("q")
        .stage(Stage::FIRST)
        .workers(1)
        .start(|_, _| Ok(()));
    assert!(first.is_ok());
}

// ===== Real processes, real signals =====

/// The child program: does nothing unless spawned by a test below, with
/// `WS_MODE` set.
///
/// * `startup`: prints `built`, waits for the stop (the parent's SIGTERM),
///   then starts a first-stage and a later-stage pool, submits to both,
///   prints `early refused=<bool>` and `late accepted=<bool>`, runs, and
///   prints `report late=<succeeded> early=<submitted> stages=<names>`.
/// * `second`: a later-stage job that never returns is queued by a
///   first-stage service at the trigger; prints `ready`, then `job
///   running` once the job runs (after the parent's SIGTERM).
///
/// Exits with the report's exit code.
#[test]
#[ignore = "the child program of the tests below"]
fn child_program() {
    let Ok(mode) = std::env::var("WS_MODE") else {
        return;
    };
    let mut rt = Runtime::builder()
        .grace(HANG)
        .build()
        .expect("a runtime with signals");
    let report = match mode.as_str() {
        "startup" => {
            say("built");
            rt.handle().token().wait();
            let later = rt.stage("workers").unwrap();
            let early = rt
                .pool::<u32>("early")
                .workers(1)
                .start(|_, _| Ok(()))
                .unwrap();
            let late = rt
                .pool::<u32>("late")
                .stage(later)
                .workers(1)
                .start(|_, _| Ok(()))
                .unwrap();
            say(&format!("early refused={}", early.submit(1).is_err()));
            say(&format!("late accepted={}", late.submit(1).is_ok()));
            drop((early, late));
            let report = rt.run();
            let names: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
            say(&format!(
                "report late={} early={} stages={}",
                report.pool("late").unwrap().succeeded,
                report.pool("early").unwrap().submitted,
                names.join(",")
            ));
            report
        }
        "second" => {
            let later = rt.stage("workers").unwrap();
            let (_never_tx, never) = bounded::<()>(0);
            let stuck = rt
                .pool::<()>("stuck")
                .stage(later)
                .workers(1)
                .start(move |(), _| {
                    say("job running");
                    let _ = never.recv(); // ignores every token
                    Ok(())
                })
                .unwrap();
            rt.spawn_service("handler", move |token| {
                token.wait();
                stuck
                    .submit(())
                    .map_err(|_| anyhow::anyhow!("the later stage refused"))
            })
            .unwrap();
            say("ready");
            rt.run()
        }
        other => panic!("unknown WS_MODE {other}"),
    };
    exit(report.exit_code)
}

#[expect(
    clippy::disallowed_methods,
    reason = "the child program's exit code is what the parent tests"
)]
fn exit(code: i32) -> ! {
    std::process::exit(code)
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The child program as a process, its stdout lines on a channel.
struct Kid {
    child: std::process::Child,
    lines: Receiver<String>,
}

impl Kid {
    fn spawn(mode: &str) -> Kid {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "child_program",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WS_MODE", mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let (tx, lines) = unbounded();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Kid { child, lines }
    }

    /// Waits for a line holding `prefix` and returns it from there (the
    /// harness's `test child_program ... ` has no newline of its own).
    fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + HANG;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok(line) => {
                    if let Some(at) = line.find(prefix) {
                        return line[at..].to_owned();
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("no {prefix:?} line within {HANG:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("the child exited before {prefix:?}"),
            }
        }
    }

    fn signal(&self, sig: Sig) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("send the signal");
    }

    /// Waits for the exit (stdout closes first) and returns the exit code.
    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + HANG;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the child did not exit within {HANG:?}"),
            }
        }
        let status = self.child.wait().expect("wait for the child");
        status.code().expect("exited, not killed")
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        // A failed test: end the child we started, by its id.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_signal_during_start_up_stops_the_first_stage_and_a_later_stage_still_takes_work() {
    let mut kid = Kid::spawn("startup");
    kid.expect("built");
    kid.signal(Sig::SIGTERM);
    assert_eq!(kid.expect("early refused="), "early refused=true");
    assert_eq!(kid.expect("late accepted="), "late accepted=true");
    assert_eq!(
        kid.expect("report "),
        "report late=1 early=0 stages=main,workers"
    );
    assert_eq!(kid.exit_code(), 130, "a signal and a clean drain");
}

#[test]
fn a_second_signal_during_a_later_stage_still_ends_the_process_at_once() {
    let mut kid = Kid::spawn("second");
    kid.expect("ready");
    kid.signal(Sig::SIGTERM);
    // The first stage has drained (its handler queued the job and
    // returned); the later stage waits for a job that never ends, within a
    // 30 s grace.
    kid.expect("job running");
    let sent = Instant::now();
    kid.signal(Sig::SIGINT);
    assert_eq!(kid.exit_code(), 3, "the forced exit code");
    assert!(sent.elapsed() < Duration::from_secs(10), "not at once");
}

// ===== The server example: a real socket, a real client, SIGTERM =====

#[cfg(feature = "http")]
#[test]
fn a_request_in_flight_at_sigterm_queues_a_job_that_runs_before_the_pools_stop() {
    use support::http::{secs, Client, ServerProcess};

    let mut server = ServerProcess::start(&["--workers", "4"]);
    let addr = server.addr;
    let client = thread::spawn(move || {
        let mut c = Client::connect(addr)?;
        // In flight for a second: the signal comes well inside it.
        c.get("/enqueue?ms=1000&job_ms=200")?;
        c.read_response()
    });
    server.expect_line(|l| l == "inflight 1", secs(20));
    server.sigterm();
    let r = client.join().unwrap().expect("a complete response");
    assert_eq!((r.status, r.text().as_str()), (200, "queued"), "{r:?}");
    let (status, rest) = server.wait_exit(secs(20));
    assert_eq!(status.code(), Some(130), "{}", server.stderr());
    // The job was queued after the stop began, and ran before the exit.
    let stopping = rest.iter().position(|l| l == "stopping inflight=1");
    let done = rest.iter().position(|l| l == "job done ms=200");
    assert!(
        matches!((stopping, done), (Some(s), Some(d)) if s < d),
        "{rest:?}"
    );
    let report = server.report();
    let jobs = report["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "jobs")
        .expect("the jobs pool");
    for (field, want) in [
        ("submitted", 1),
        ("succeeded", 1),
        ("handed_back", 0),
        ("abandoned", 0),
    ] {
        assert_eq!(jobs[field], want, "jobs.{field} in {report}");
    }
    let stages = report["stages"].as_array().expect("stages");
    let names: Vec<&str> = stages.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["main", "workers"]);
    let first_drained = stages[0]["drain_latency_ms"].as_f64().unwrap();
    let workers_began = stages[1]["began_ms"].as_f64().unwrap();
    assert!(workers_began >= first_drained, "{report}");
    assert!(stages[1]["drain_latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(report["hard_stopped"], false);
}

// The phase the stages drain in is `Draining`, reported through `Handle`.
#[test]
fn the_phase_is_draining_while_a_later_stage_still_runs() {
    let mut rt = runtime();
    let later = rt.stage("later").unwrap();
    let handle = rt.handle();
    let (phase_tx, phase_rx) = bounded(1);
    let pool = rt
        .pool::<()>("later")
        .stage(later)
        .workers(1)
        .start(move |(), _| {
            let _ = phase_tx.send(handle.phase());
            Ok(())
        })
        .unwrap();
    let queue = pool.submitter();
    rt.spawn_service("handler", move |token| {
        token.wait();
        queue.submit(()).map_err(|_| anyhow::anyhow!("refused"))
    })
    .unwrap();
    drop(pool);
    rt.handle().request("deploy");
    let report = rt.run();
    let phase = phase_rx.try_recv().expect("the job ran");
    assert!(
        matches!(phase, Phase::StopAccepting | Phase::Draining),
        "{phase:?}"
    );
    assert_eq!(report.pool("later").unwrap().succeeded, 1);
}
