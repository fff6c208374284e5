//! A blocking HTTP service in a winddown runtime — the full pattern: a
//! server, a background worker pool and a release hook, stopped in order.
//!
//! ```sh
//! cargo run --release --example server -- --addr 127.0.0.1:8080
//! curl -s 127.0.0.1:8080/sleep?ms=3000 &   # in flight...
//! kill -TERM <pid>                          # ...still answered, with Connection: close
//! ```
//!
//! Routes:
//!
//! * `GET /sleep?ms=N` waits N ms (cut only by the drain deadline) and
//!   answers `N`;
//! * `GET /stream?chunks=N&every=MS` streams N chunks (chunked), one every
//!   MS ms; `chunks=0` streams until the drain deadline cuts it;
//! * `GET /health` answers 200, then 503 once the stop has begun;
//! * `POST /echo` answers the request body, and counts its bytes in the
//!   `audit` pool, whose total the `audit-log` release hook prints;
//! * `GET /enqueue?ms=N&job_ms=M` waits N ms like `/sleep`, then queues a
//!   job of M ms in the `jobs` pool and answers `queued` (503 `refused` if
//!   the pool refused it); the job prints `job done ms=M` when it ends.
//!
//! The pools are in the stage `workers`, which drains after the server's:
//! a request still in flight at SIGTERM can queue a job, and the job runs
//! before the pools stop.
//!
//! Stdout (for tests and scripts): `listening <addr>`, `listener <source>
//! pid=<pid>` (`bound`, `systemd` or `handover`: where the socket came
//! from), `ready`, one
//! `inflight N` line when a `/sleep` or `/enqueue` request starts (N
//! requests now sleeping), `stopping inflight=N` when the stop begins,
//! `job done ms=M` when a queued job ends, and `audit bytes=N` from the
//! release hook. The report goes to stderr, and as
//! JSON to `--report PATH` if asked (written to `PATH.json.tmp`, then
//! renamed): `reason`, `exit_code`, `drain_latency_ms` (null if the drain
//! timed out), `hard_stop_ms`, `total_ms`, `connections` {`accepted`,
//! `served`, `closed`, `idle_closed`, `drained`, `forced`}, `servers`,
//! `pools`, `stuck` and `hooks` [{`name`, `outcome`: `ok` | `failed` |
//! `panicked` | `timed_out`, `error`}], `signal` (`"SIGTERM"`, … or null),
//! `hard_stopped` (the deadline fired the hard token),
//! `forced_connections`, `stages` [{`name`, `index`, `budget_ms`,
//! `began_ms`, `drain_latency_ms`, `hard_stop_ms`}], and `report`: the
//! whole report as the library serializes it (see `winddown::Report`).
//!
//! The listening socket comes from a handover, else from systemd socket
//! activation, else `--addr` is bound (`winddown::Listener::from_env_or_bind`).
//! With `--handover-signal USR2`, that signal starts a new copy of this
//! program with the same arguments, hands it the socket, and this one stops
//! accepting and drains (exit code 0); the new copy prints its own lines to
//! the same stdout.
//!
//! Exit code: 130 after a signal and a clean drain; 1 if a connection was
//! still busy at the drain deadline (`forced`), the hard stop fired, a
//! thread was stuck or a hook failed; 3 if a second signal ended the process
//! at once; the server otherwise runs until it is stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use winddown::{
    Listener, ListenerSource, Phase, Report, Request, Response, Runtime, Server, Submitter, Token,
};

/// A blocking HTTP service that drains on SIGTERM.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Handler threads (connections served at once).
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Drain deadline, ms from the signal.
    #[arg(long, default_value_t = 10_000)]
    grace: u64,
    /// After the deadline, ms before stuck threads are named and detached.
    #[arg(long, default_value_t = 1_000)]
    kill_grace: u64,
    /// Ms to go on serving (health answering 503) before the listener closes.
    #[arg(long, default_value_t = 0)]
    pre_close_delay: u64,
    /// Ms after the listener's close for connections still without a whole
    /// request to send one (`ServerBuilder::close_window`).
    #[arg(long, default_value_t = 200)]
    close_window: u64,
    /// Write the report as JSON to this path (through a temporary file).
    #[arg(long)]
    report: Option<PathBuf>,
    /// On this signal (`USR2`, `HUP`, …), start a new copy of this program
    /// with the same arguments, hand it the listening socket, and drain
    /// (see `winddown::Handover`). The new copy prints its own lines.
    #[arg(long, value_name = "SIGNAL")]
    handover_signal: Option<String>,
}

/// The number of a signal named `USR2`, `SIGUSR2`, `HUP`, …
fn signal_number(name: &str) -> anyhow::Result<i32> {
    let name = name.trim_start_matches("SIG");
    Ok(match name {
        "HUP" => nix::sys::signal::Signal::SIGHUP,
        "USR1" => nix::sys::signal::Signal::SIGUSR1,
        "USR2" => nix::sys::signal::Signal::SIGUSR2,
        "WINCH" => nix::sys::signal::Signal::SIGWINCH,
        _ => anyhow::bail!("--handover-signal: HUP, USR1, USR2 or WINCH, not {name:?}"),
    } as i32)
}

/// Counts the `/sleep` requests in progress, for the `inflight` lines.
static SLEEPING: AtomicU64 = AtomicU64::new(0);

/// With the `tracing` feature and `RUST_LOG` set (e.g. `RUST_LOG=winddown=debug`),
/// winddown's events are printed to stderr; otherwise nothing is installed.
#[cfg(feature = "tracing")]
fn init_events() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

#[cfg(not(feature = "tracing"))]
fn init_events() {}

fn main() -> anyhow::Result<ExitCode> {
    init_events();
    let args = Args::parse();
    // A handover's socket, else systemd's (socket activation), else bound;
    // first, before any thread runs (systemd's variables are removed).
    let mut listener = Listener::from_env_or_bind(args.addr.as_str())
        .with_context(|| format!("listening on {}", args.addr))?;
    let mut rt = Runtime::builder()
        .grace(Duration::from_millis(args.grace))
        .kill_grace(Duration::from_millis(args.kill_grace))
        .on_phase(|phase| {
            if phase == Phase::StopAccepting {
                say(&format!(
                    "stopping inflight={}",
                    SLEEPING.load(Ordering::SeqCst)
                ));
            }
        })
        .build()?;

    // The background pools drain after the server: the stage `workers`
    // takes work from request handlers until every one of them is done.
    let workers = rt.stage("workers")?;
    // An audit log of echoed bytes.
    let audited = Arc::new(AtomicU64::new(0));
    let total = audited.clone();
    let audit = rt
        .pool::<u64>("audit")
        .stage(workers)
        .workers(1)
        .start(move |bytes, _| {
            total.fetch_add(bytes, Ordering::Relaxed);
            Ok(())
        })?;
    // Jobs queued by `/enqueue`: each waits its ms (cut only by the hard
    // stop of its stage).
    let jobs = rt
        .pool::<u64>("jobs")
        .stage(workers)
        .workers(2)
        .capacity(64)
        .start(|ms, token| {
            let cut = token.wait_hard_timeout(Duration::from_millis(ms));
            anyhow::ensure!(!cut, "job cut at the deadline");
            say(&format!("job done ms={ms}"));
            Ok(())
        })?;
    rt.on_release("audit-log", Duration::from_secs(1), move || {
        say(&format!("audit bytes={}", audited.load(Ordering::Relaxed)));
        Ok(())
    });

    let source = listener.source();
    let handover = match &args.handover_signal {
        Some(signal) => Some((signal_number(signal)?, listener.handover(rt.handle())?)),
        None => None,
    };
    let server = Server::builder()
        .workers(args.workers)
        .health_path("/health")
        .pre_close_delay(Duration::from_millis(args.pre_close_delay))
        .close_window(Duration::from_millis(args.close_window))
        .listener(listener);
    say(&format!("listening {}", server.local_addr()));
    say(&format!(
        "listener {} pid={}",
        match source {
            ListenerSource::Systemd => "systemd",
            ListenerSource::Handover => "handover",
            _ => "bound",
        },
        std::process::id()
    ));
    if let Some((signal, handover)) = handover {
        handover.on_signal(&mut rt, signal)?;
    }
    server.start(&mut rt, move |req, token| route(req, token, &audit, &jobs))?;
    say("ready");

    let report = rt.run();
    eprintln!("{report:#}");
    if let Some(path) = &args.report {
        write_report(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.process_exit_code())
}

fn route(
    req: &Request,
    token: &Token,
    audit: &Submitter<u64>,
    jobs: &Submitter<u64>,
) -> anyhow::Result<Response> {
    let param = |name: &str| -> Option<u64> {
        req.query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Ok(match (req.method(), req.path()) {
        ("GET", "/sleep") => {
            let ms = param("ms").unwrap_or(0);
            let n = SLEEPING.fetch_add(1, Ordering::SeqCst) + 1;
            say(&format!("inflight {n}"));
            // A request in flight runs to completion within the grace; only
            // the drain deadline cuts it.
            let cut = token.wait_hard_timeout(Duration::from_millis(ms));
            SLEEPING.fetch_sub(1, Ordering::SeqCst);
            anyhow::ensure!(!cut, "sleep cut at the drain deadline");
            Response::text(200, ms.to_string())
        }
        ("GET", "/stream") => {
            let chunks = param("chunks").unwrap_or(0);
            let every = Duration::from_millis(param("every").unwrap_or(100));
            let token = token.clone();
            let mut sent = 0u64;
            Response::stream(
                200,
                std::iter::from_fn(move || {
                    if chunks != 0 && sent == chunks {
                        return None;
                    }
                    if sent > 0 && token.wait_hard_timeout(every) {
                        return None; // the deadline: the server cuts the stream
                    }
                    sent += 1;
                    Some(format!("chunk {sent}\n").into_bytes())
                }),
            )
            .header("Content-Type", "text/plain; charset=utf-8")
        }
        ("GET", "/enqueue") => {
            let (ms, job_ms) = (param("ms").unwrap_or(0), param("job_ms").unwrap_or(0));
            let n = SLEEPING.fetch_add(1, Ordering::SeqCst) + 1;
            say(&format!("inflight {n}"));
            let cut = token.wait_hard_timeout(Duration::from_millis(ms));
            SLEEPING.fetch_sub(1, Ordering::SeqCst);
            anyhow::ensure!(!cut, "enqueue cut at the drain deadline");
            // The `workers` stage accepts until every handler is done, so
            // this succeeds also during the drain.
            match jobs.submit(job_ms) {
                Ok(()) => Response::text(200, "queued"),
                Err(_) => Response::text(503, "refused"),
            }
        }
        ("POST", "/echo") => {
            // The audit pool is in the later stage: it still takes the
            // count while the server drains. (A full queue drops it.)
            let _ = audit.try_submit(req.body().len() as u64);
            let kind = req
                .header("Content-Type")
                .unwrap_or("application/octet-stream");
            Response::new(200)
                .header("Content-Type", kind)
                .body(req.body())
        }
        (_, "/sleep" | "/stream" | "/echo" | "/enqueue") => {
            Response::text(405, "method not allowed\n")
        }
        _ => Response::text(404, "not found\n"),
    })
}

/// Prints a line to stdout and flushes it at once (stdout is a pipe in tests).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Writes the report as JSON to `path`, through a temporary file and a
/// rename so a reader never sees half of it.
///
/// The whole report, as the library serializes it, is under `"report"`.
/// The top-level keys are this example's own format, which scripts and the
/// tests read; they are taken from the serialized report, and stay as they
/// were where the library's shape differs (`stuck`, a list of thread names)
/// or the library has no such field (`connections`, the one server's).
fn write_report(path: &Path, report: &Report) -> anyhow::Result<()> {
    use serde_json::{Map, Value};

    let full = serde_json::to_value(report)?;
    let mut out = Map::new();
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
        "stages",
    ] {
        out.insert(key.into(), full[key].clone());
    }
    // The example runs one server: its counts at the top level too.
    out.insert(
        "connections".into(),
        full["servers"][0]["connections"].clone(),
    );
    out.insert(
        "stuck".into(),
        report.stuck.iter().map(|s| s.thread.as_str()).collect(),
    );
    out.insert("report".into(), full);
    let json = Value::Object(out);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
