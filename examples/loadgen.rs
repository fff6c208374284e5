//! A small HTTP load generator with exact per-request accounting, for
//! `scripts/rolling_restart.sh`: keep-alive connections to one address, one
//! thread each, sending `GET <path>` back to back until SIGTERM or SIGINT;
//! every request is counted once, as ok (a complete 2xx response) or
//! failed (connect error, I/O error or short body, or another status).
//!
//! ```sh
//! cargo run --release --example loadgen -- --target 127.0.0.1:8080 --connections 8
//! ```
//!
//! Stdout: `running` once every connection thread has started, then, after
//! the stop, `summary sent=N ok=N failed=N p50_ms=X p99_ms=X max_ms=X`; with
//! `--summary PATH`, the same as JSON (`sent`, `ok`, `failed`, `errors`
//! {`connect`, `io`, `status`}, `statuses`, `p50_ms`, `p99_ms`, `max_ms`,
//! `seconds`). A thread finishes the request it is in before it stops.
//! Exit code: 0 if no request failed, 1 otherwise.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use parking_lot::Mutex;
use winddown::{Runtime, Token};

/// Keep-alive HTTP load with exact accounting, until SIGTERM.
#[derive(Parser, Debug)]
struct Args {
    /// Address to send to.
    #[arg(long)]
    target: String,
    /// Connections (one thread each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Request path.
    #[arg(long, default_value = "/sleep?ms=5")]
    path: String,
    /// Per-request timeout, ms (connect, and each read or write).
    #[arg(long, default_value_t = 10_000)]
    timeout: u64,
    /// Write the summary as JSON to this path.
    #[arg(long)]
    summary: Option<PathBuf>,
}

/// What one connection thread counted.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    connect_errors: u64,
    io_errors: u64,
    bad_status: u64,
    statuses: BTreeMap<u16, u64>,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let mut rt = Runtime::builder()
        .grace(Duration::from_millis(args.timeout + 1_000))
        .build()?;
    let tallies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let (up_tx, up_rx) = crossbeam_channel::unbounded::<()>();
    for i in 0..args.connections {
        let (target, path, tallies, up) = (
            args.target.clone(),
            args.path.clone(),
            tallies.clone(),
            up_tx.clone(),
        );
        let timeout = Duration::from_millis(args.timeout);
        rt.spawn_service(format!("load-{i}"), move |token| {
            drop(up);
            let tally = drive(&target, &path, timeout, &token);
            tallies.lock().push(tally);
            Ok(())
        })?;
    }
    drop(up_tx);
    // Every thread has started once the channel disconnects.
    let _ = up_rx.recv();
    println!("running");
    let _ = std::io::stdout().flush();
    let report = rt.run();
    let seconds = started.elapsed().as_secs_f64();

    let mut all = Tally::default();
    for t in tallies.lock().drain(..) {
        all.latencies_us.extend(t.latencies_us);
        all.connect_errors += t.connect_errors;
        all.io_errors += t.io_errors;
        all.bad_status += t.bad_status;
        for (status, n) in t.statuses {
            *all.statuses.entry(status).or_default() += n;
        }
    }
    let ok = all.latencies_us.len() as u64;
    let failed = all.connect_errors + all.io_errors + all.bad_status;
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        let v = &all.latencies_us;
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1e3
    };
    let (p50, p99) = (pct(0.50), pct(0.99));
    let max = all.latencies_us.last().map_or(0.0, |&us| us as f64 / 1e3);
    println!(
        "summary sent={} ok={ok} failed={failed} p50_ms={p50:.2} p99_ms={p99:.2} max_ms={max:.2}",
        ok + failed
    );
    if let Some(path) = &args.summary {
        let json = serde_json::json!({
            "sent": ok + failed,
            "ok": ok,
            "failed": failed,
            "errors": {
                "connect": all.connect_errors,
                "io": all.io_errors,
                "status": all.bad_status,
            },
            "statuses": all.statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
            "seconds": seconds,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.stuck.is_empty() {
        eprintln!("{report}");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sends requests on one keep-alive connection (reconnecting when the
/// server closes it) until the token stops.
fn drive(target: &str, path: &str, timeout: Duration, token: &Token) -> Tally {
    let mut tally = Tally::default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !token.is_stopping() {
        let begun = Instant::now();
        if conn.is_none() {
            match connect(target, timeout) {
                Ok(stream) => conn = Some(BufReader::new(stream)),
                Err(e) => {
                    eprintln!("loadgen: connect: {e}");
                    tally.connect_errors += 1;
                    // One failed request; pause so a dead target is not
                    // hammered (cut short by the stop).
                    token.wait_timeout(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let Some(reader) = conn.as_mut() else {
            continue;
        };
        match exchange(reader, request.as_bytes()) {
            Ok((status, keep)) => {
                *tally.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    tally.latencies_us.push(begun.elapsed().as_micros() as u64);
                } else {
                    tally.bad_status += 1;
                }
                if !keep {
                    conn = None;
                }
            }
            Err(e) => {
                eprintln!("loadgen: request: {e}");
                tally.io_errors += 1;
                conn = None;
            }
        }
    }
    tally
}

fn connect(target: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let addr = target
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Writes one request and reads its whole response (a `Content-Length`
/// body). Returns the status and whether the connection stays open.
fn exchange(reader: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<(u16, bool)> {
    use std::io::{Error, ErrorKind};
    reader.get_mut().write_all(request)?;
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(Error::new(
            ErrorKind::UnexpectedEof,
            "closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, format!("status line {line:?}")))?;
    let (mut length, mut keep) = (None, true);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(Error::new(ErrorKind::UnexpectedEof, "closed in the head"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<u64>().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                keep = !value.eq_ignore_ascii_case("close");
            }
        }
    }
    let length = length.ok_or_else(|| Error::new(ErrorKind::InvalidData, "no Content-Length"))?;
    let mut body = Vec::new();
    let read = reader.by_ref().take(length).read_to_end(&mut body)?;
    if read as u64 != length {
        return Err(Error::new(ErrorKind::UnexpectedEof, "short body"));
    }
    Ok((status, keep))
}
