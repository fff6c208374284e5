//! Restarts with no failed request, on real processes, real sockets and
//! real signals: the rolling restart behind HAProxy
//! (`scripts/rolling_restart.sh`, with a small bounded load), the socket
//! handover on its own (SIGUSR2 to the `server` example), a handover whose
//! new process dies first, and systemd socket activation (a Python stand-in
//! for systemd that binds the socket, puts it at descriptor 3 and execs the
//! example, as systemd does).
//!
//! Every timeout below is a "does not hang" bound, never a synchronisation:
//! readiness is a line the process prints.

#![cfg(all(unix, feature = "http"))]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::http::{get, Client};
use support::process::example;

/// Generous: a debug build on two busy cores.
const HANG: Duration = Duration::from_secs(60);

/// A process started here (or by one started here): its stdout lines, and
/// a kill by id on drop if the test failed before it exited.
struct Proc {
    pids: Vec<i32>,
    lines: Receiver<String>,
    exit: Receiver<ExitStatus>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (exit_tx, exit) = crossbeam_channel::bounded(1);
        let pid = child.id() as i32;
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Proc {
            pids: vec![pid],
            lines,
            exit,
        }
    }

    /// Waits for a line starting with `prefix`; returns the rest of it.
    fn expect(&self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(HANG) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(e) => panic!("no line {prefix:?}: {e}"),
            }
        }
    }

    fn wait_exit(&self) -> i32 {
        let status = self.exit.recv_timeout(HANG).expect("the process exits");
        status.code().expect("an exit code, not a signal")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        for &pid in &self.pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn signal(pid: i32, signal: Signal) {
    kill(Pid::from_raw(pid), signal).expect("send the signal");
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("the report")).expect("JSON")
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("winddown-rolling-{}-{name}", std::process::id()))
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn every_request_through_haproxy_gets_a_complete_2xx_across_a_rolling_restart() {
    if !has("haproxy") {
        // CI installs it (.ci/run); elsewhere say why nothing ran.
        assert!(std::env::var_os("CI").is_none(), "haproxy is missing in CI");
        eprintln!("skipped: haproxy not installed (apt-get install -y haproxy)");
        return;
    }
    let server = example("server");
    example("loadgen");
    let out = temp("haproxy");
    let _ = std::fs::remove_dir_all(&out);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rolling_restart.sh");
    let mut run = Proc::spawn(
        Command::new("bash")
            .arg(&script)
            .args(["-n", "3", "-c", "6", "-m", "5", "-p", "500", "-o"])
            .arg(&out)
            .env("BIN_DIR", server.parent().expect("the examples' directory")),
    );
    let mut lines = Vec::new();
    while let Ok(line) = run.lines.recv_timeout(HANG) {
        println!("{line}");
        lines.push(line);
    }
    let code = run.wait_exit();
    run.pids.clear(); // exited; its own trap ended what it started
    assert_eq!(code, 0, "the script's checks failed:\n{}", lines.join("\n"));
    let restarts = lines.iter().filter(|l| l.starts_with("restart r")).count();
    assert_eq!(restarts, 3, "each replica restarted once with SIGTERM");
    assert!(lines.iter().any(|l| l.starts_with("handover r0 ")));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary"))
            .expect("JSON");
    let (sent, ok, failed) = (
        summary["sent"].as_u64().unwrap(),
        summary["ok"].as_u64().unwrap(),
        summary["failed"].as_u64().unwrap(),
    );
    assert_eq!(failed, 0, "{summary:#}");
    assert_eq!(ok, sent);
    // The load ran across all four replacements (a few seconds of it).
    assert!(
        sent >= 100,
        "too little load to prove anything: {summary:#}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_handover_refuses_no_connection_and_the_old_process_drains_its_request() {
    let report_path = temp("handover.json");
    let mut old = Proc::spawn(
        Command::new(example("server"))
            .args(["--addr", "127.0.0.1:0", "--handover-signal", "USR2"])
            .args(["--pre-close-delay", "5000", "--report"])
            .arg(&report_path),
    );
    let addr: SocketAddr = old.expect("listening ").parse().unwrap();
    assert_eq!(
        old.expect("listener "),
        format!("bound pid={}", old.pids[0])
    );
    old.expect("ready");

    // A request in flight in the old process across the handover.
    let mut slow = Client::connect(addr).unwrap();
    slow.get("/sleep?ms=800").unwrap();
    old.expect("inflight 1");

    // New connections, one request each, all through the handover.
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut served = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Not /health: the old process answers that 503 once
                // stopping, for the connections it still accepted.
                let r = get(addr, "/sleep?ms=0").expect("no refused or broken connection");
                assert_eq!(
                    r.status, 200,
                    "a complete 2xx from one process or the other"
                );
                served += 1;
            }
            served
        })
    };

    signal(old.pids[0], Signal::SIGUSR2);
    let new_pid: i32 = old
        .expect("listener handover pid=")
        .parse()
        .expect("the new process's id");
    old.pids.push(new_pid);
    assert_ne!(new_pid, old.pids[0]);
    old.expect("ready");

    // The old process finishes the request it had, without waiting out its
    // 5 s pre-close delay, and exits 0: a requested stop, nothing forced.
    let r = slow.read_response().unwrap();
    assert_eq!((r.status, r.text()), (200, "800".to_owned()));
    assert!(r.closes(), "the drained request says Connection: close");
    assert_eq!(old.wait_exit(), 0);
    let rep = report(&report_path);
    assert_eq!(rep["connections"]["forced"], 0, "{rep:#}");
    let reason = rep["reason"].to_string();
    assert!(
        reason.contains(&format!("handover to pid {new_pid}")),
        "{reason}"
    );
    assert!(
        rep["total_ms"].as_f64().unwrap() < 4_000.0,
        "no pre-close delay"
    );

    // The old one is gone; the port is served by the new one.
    let r = get(addr, "/health").unwrap();
    assert_eq!(r.status, 200);
    stop.store(true, Ordering::Relaxed);
    let served = hammer.join().expect("no failed request");
    assert!(served > 0);

    // The new process stops on SIGTERM like any other.
    signal(new_pid, Signal::SIGTERM);
    for _ in 0..600 {
        if kill(Pid::from_raw(new_pid), None).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50)); // a "does not hang" poll
    }
    assert!(
        kill(Pid::from_raw(new_pid), None).is_err(),
        "the new one exited"
    );
    let rep = report(&report_path); // written by the new process
    assert_eq!(rep["signal"], "SIGTERM", "{rep:#}");
    old.pids.clear();
    let _ = std::fs::remove_file(&report_path);
}

#[test]
fn a_handover_whose_new_process_exits_first_fails_and_the_server_goes_on_serving() {
    use winddown::{Listener, Response, Runtime, Server};

    let mut rt = Runtime::builder().signals(false).build().unwrap();
    let mut listener = Listener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr();
    let handover = listener.handover(rt.handle()).unwrap();
    Server::builder()
        .workers(2)
        .health_path("/health")
        .listener(listener)
        .start(&mut rt, |_req, _token| Ok(Response::text(200, "hi\n")))
        .unwrap();
    let handle = rt.handle();
    let client = std::thread::spawn(move || {
        let err = handover
            .upgrade_with(&mut Command::new("false"))
            .expect_err("the new process never asked for the socket");
        assert!(
            err.to_string().contains("exited before taking the socket"),
            "{err}"
        );
        assert!(!handle.is_stopping(), "a failed upgrade stops nothing");
        let r = get(addr, "/health").unwrap();
        assert_eq!(r.status, 200);
        handle.request("done");
    });
    let report = rt.run();
    client.join().unwrap();
    assert_eq!(report.exit_code, 0);
    assert_eq!(report.servers[0].connections.served, 1);
}

#[test]
fn a_socket_activated_server_serves_connections_made_before_it_started() {
    if !has("python3") {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing in CI");
        eprintln!("skipped: python3 not installed");
        return;
    }
    // What systemd does for a `.socket` unit: bind and listen, put the
    // socket at descriptor 3, set LISTEN_FDS and LISTEN_PID, exec.
    const ACTIVATE: &str = "import os, socket, sys
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(64)
print('port', s.getsockname()[1], flush=True)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ['LISTEN_FDS'] = '1'
os.environ['LISTEN_PID'] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])";
    let report_path = temp("activated.json");
    let server = Proc::spawn(
        Command::new("python3")
            .args(["-c", ACTIVATE])
            .arg(example("server"))
            // An address this machine does not have: binding it would fail.
            .args(["--addr", "192.0.2.1:80", "--report"])
            .arg(&report_path),
    );
    let port: u16 = server.expect("port ").parse().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Connect and send at once: the socket exists before the server runs.
    let mut early = Client::connect(addr).unwrap();
    early.get("/health").unwrap();
    assert_eq!(server.expect("listening "), addr.to_string());
    assert_eq!(
        server.expect("listener "),
        format!("systemd pid={}", server.pids[0])
    );
    server.expect("ready");
    let r = early.read_response().unwrap();
    assert_eq!(r.status, 200);
    signal(server.pids[0], Signal::SIGTERM);
    assert_eq!(server.wait_exit(), 130);
    let rep = report(&report_path);
    assert_eq!(rep["connections"]["accepted"], 1, "{rep:#}");
    let _ = std::fs::remove_file(&report_path);
}
