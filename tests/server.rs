//! The HTTP server's drain, seen from outside: the `server` example as a real
//! process stopped by a real SIGTERM and driven by real TCP clients; and a
//! few in-process checks of `Server` in a `Runtime` (signals off, stopped by
//! `Handle::request`).
//!
//! Nothing here sleeps to synchronise: a request is known to be in flight
//! from the example's `inflight N` line, the stop from its `stopping` line,
//! the listener's close from an idle connection's end of stream (the server
//! closes idle connections only after the listener). Time is only measured,
//! against bounds that the behaviour under test must beat and the fallback
//! (the keep-alive timeout, the end of the process) would not.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::http::{get, ms, secs, Client, HttpResponse, ServerProcess};
use winddown::{BuildError, ConnectionCounts, Response, Runtime, Server, ServerReport};

/// The exit code of a clean drain after SIGTERM (the runtime's default).
const SIGNAL_EXIT: i32 = 130;

fn exit_code(server: &mut ServerProcess, within: Duration) -> (i32, Vec<String>) {
    let (status, rest) = server.wait_exit(within);
    (status.code().expect("exited, not killed"), rest)
}

fn connections(report: &serde_json::Value) -> [u64; 5] {
    let c = &report["connections"];
    ["accepted", "served", "idle_closed", "drained", "forced"].map(|k| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("connections.{k} in {report}"))
    })
}

fn assert_ok_closing(r: &HttpResponse, body: &str) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), body, "{r:?}");
    assert!(r.closes(), "no Connection: close on {r:?}");
}

// ===== Real processes, real SIGTERM =====

#[test]
fn in_flight_requests_at_sigterm_all_complete_with_connection_close() {
    const N: usize = 50;
    let mut server = ServerProcess::start(&["--workers", "64"]);
    let addr = server.addr;
    let clients: Vec<_> = (0..N)
        .map(|_| {
            std::thread::spawn(move || -> io::Result<HttpResponse> {
                let mut c = Client::connect(addr)?;
                c.get("/sleep?ms=500")?; // keep-alive: the close is the server's
                let r = c.read_response()?;
                c.read_eof()?;
                Ok(r)
            })
        })
        .collect();
    server.expect_line(|l| l == format!("inflight {N}"), secs(20));
    let signalled = Instant::now();
    server.sigterm();
    for c in clients {
        let r = c
            .join()
            .unwrap()
            .expect("a complete response, then a clean end");
        assert_ok_closing(&r, "500");
    }
    let (code, rest) = exit_code(&mut server, secs(10));
    assert!(
        signalled.elapsed() < secs(5),
        "exit {:?} after the signal",
        signalled.elapsed()
    );
    assert_eq!(code, SIGNAL_EXIT);
    assert!(rest.contains(&format!("stopping inflight={N}")), "{rest:?}");
    let report = server.report();
    assert_eq!(connections(&report), [N as u64, N as u64, 0, N as u64, 0]);
}

#[test]
fn idle_keep_alive_connections_read_a_clean_end_of_stream_promptly() {
    let mut server = ServerProcess::start(&[]);
    let mut idle: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::connect(server.addr).unwrap();
            c.get("/health").unwrap();
            let r = c.read_response().unwrap();
            assert!(!r.closes(), "keep-alive before the stop: {r:?}");
            c
        })
        .collect();
    // A request still running keeps the process alive: the ends of stream
    // below are the server's doing, not the process's exit.
    let mut busy = Client::connect(server.addr).unwrap();
    busy.get("/sleep?ms=3000").unwrap();
    server.expect_line(|l| l == "inflight 1", secs(10));
    let signalled = Instant::now();
    server.sigterm();
    for c in &mut idle {
        c.read_eof().expect("a clean end of stream (FIN, no reset)");
    }
    let closed_after = signalled.elapsed();
    assert!(
        closed_after < ms(1500),
        "idle connections closed {closed_after:?} after the signal"
    );
    assert_ok_closing(&busy.read_response().unwrap(), "3000");
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    assert_eq!(connections(&server.report()), [4, 4, 3, 1, 0]);
}

#[test]
fn connects_after_the_listener_closed_are_refused() {
    let mut server = ServerProcess::start(&[]);
    let mut idle = Client::connect(server.addr).unwrap();
    idle.get("/health").unwrap();
    idle.read_response().unwrap();
    let mut busy = Client::connect(server.addr).unwrap();
    busy.get("/sleep?ms=2000").unwrap();
    server.expect_line(|l| l == "inflight 1", secs(10));
    server.sigterm();
    // The server closes idle connections only once the listener is closed.
    idle.read_eof().expect("a clean end of stream");
    for _ in 0..10 {
        let err = TcpStream::connect(server.addr).expect_err("the listener is closed");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }
    // The server is still draining meanwhile.
    assert_ok_closing(&busy.read_response().unwrap(), "2000");
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    let [accepted, ..] = connections(&server.report());
    assert_eq!(accepted, 2, "no refused connect was counted");
}

#[test]
fn a_busy_keep_alive_connections_last_response_is_complete_and_says_connection_close() {
    let mut server = ServerProcess::start(&[]);
    let mut c = Client::connect(server.addr).unwrap();
    c.get("/sleep?ms=1").unwrap();
    let first = c.read_response().unwrap();
    assert!(!first.closes(), "keep-alive before the stop: {first:?}");
    server.expect_line(|l| l == "inflight 1", secs(10)); // the first request's
    c.get("/sleep?ms=1000").unwrap();
    server.expect_line(|l| l == "inflight 1", secs(10)); // the second's
    server.sigterm();
    let last = c.read_response().expect("the whole last response");
    assert_ok_closing(&last, "1000");
    assert_eq!(last.header("content-length"), Some("4"));
    c.read_eof().expect("then a clean end of stream");
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    assert_eq!(connections(&server.report()), [1, 2, 0, 1, 0]);
}

#[test]
fn silent_and_half_sent_connections_are_closed_promptly_with_a_fin() {
    let mut server = ServerProcess::start(&[]);
    let silent = Client::connect(server.addr).unwrap();
    let mut half = Client::connect(server.addr).unwrap();
    half.send(b"GET /sleep?ms=1 HTTP/1.1\r\nHost: te").unwrap();
    let mut busy = Client::connect(server.addr).unwrap();
    busy.get("/sleep?ms=3000").unwrap();
    server.expect_line(|l| l == "inflight 1", secs(10));
    let signalled = Instant::now();
    server.sigterm();
    for mut c in [silent, half] {
        c.read_eof().expect("no response, a clean end of stream");
    }
    // Far below the keep-alive timeout (5 s) and the busy request (3 s).
    let closed_after = signalled.elapsed();
    assert!(
        closed_after < ms(1500),
        "closed {closed_after:?} after the signal"
    );
    assert_ok_closing(&busy.read_response().unwrap(), "3000");
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    assert_eq!(connections(&server.report()), [3, 1, 2, 1, 0]);
}

#[test]
fn an_endless_stream_is_cut_at_the_deadline_and_counted_as_forced() {
    let mut server = ServerProcess::start(&["--grace", "1000", "--kill-grace", "500"]);
    let mut c = Client::connect(server.addr).unwrap();
    c.get("/stream?chunks=0&every=20").unwrap();
    let head = c.read_head().unwrap();
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(c.read_chunk().unwrap().as_deref(), Some(&b"chunk 1\n"[..]));
    let signalled = Instant::now();
    server.sigterm();
    let mut chunks = 1;
    let err = loop {
        match c.read_chunk() {
            Ok(Some(_)) => chunks += 1,
            Ok(None) => panic!("an endless stream ended with a final chunk"),
            Err(e) => break e,
        }
    };
    let cut_after = signalled.elapsed();
    // Cut by the server's close (FIN) without the final chunk.
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert!(
        cut_after >= ms(900) && cut_after < secs(3),
        "cut {cut_after:?} after the signal (grace 1 s)"
    );
    assert!(
        chunks > 10,
        "the stream went on until the deadline: {chunks}"
    );
    let (code, _) = exit_code(&mut server, secs(10));
    assert_eq!(code, 1, "a forced connection fails the run");
    let report = server.report();
    assert_eq!(connections(&report), [1, 0, 0, 0, 1]);
    assert_eq!(report["exit_code"], 1);
}

#[test]
fn health_answers_503_during_the_pre_close_delay_while_requests_are_still_served() {
    let mut server = ServerProcess::start(&["--pre-close-delay", "1500"]);
    let before = get(server.addr, "/health").unwrap();
    assert_eq!((before.status, before.text().as_str()), (200, "ok\n"));
    let signalled = Instant::now();
    server.sigterm();
    server.expect_line(|l| l.starts_with("stopping"), secs(10));
    // New connections are still accepted and served during the delay.
    let during = get(server.addr, "/health").unwrap();
    assert_eq!((during.status, during.text().as_str()), (503, "stopping\n"));
    let mut c = Client::connect(server.addr).unwrap();
    c.get("/sleep?ms=5").unwrap();
    assert_ok_closing(&c.read_response().unwrap(), "5");
    c.read_eof().unwrap();
    assert!(
        signalled.elapsed() < ms(1500),
        "the checks ran in the delay"
    );
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    let exited_after = signalled.elapsed();
    assert!(
        exited_after >= ms(1500) && exited_after < secs(5),
        "exit {exited_after:?} after the signal (delay 1.5 s)"
    );
    // The first closed before the stop; both answered during the delay drained.
    assert_eq!(connections(&server.report()), [3, 3, 0, 2, 0]);
}

#[test]
fn the_exit_code_and_the_json_report_are_as_documented() {
    let mut server = ServerProcess::start(&[]);
    let mut c = Client::connect(server.addr).unwrap();
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
          Content-Length: 14\r\nConnection: close\r\n\r\nhello winddown",
    )
    .unwrap();
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello winddown"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    c.read_eof().unwrap();
    // Closing our side lets the server's close finish at once; a client
    // that kept it open would hold the connection up to the server's linger
    // (500 ms).
    drop(c);
    server.sigterm();
    let (code, rest) = exit_code(&mut server, secs(10));
    assert_eq!(code, SIGNAL_EXIT);
    assert!(rest.contains(&"audit bytes=14".to_owned()), "{rest:?}");
    let report = server.report();
    assert_eq!(report["reason"], "signal");
    assert_eq!(report["exit_code"], SIGNAL_EXIT);
    let drain = report["drain_latency_ms"]
        .as_f64()
        .expect("a drain latency");
    assert!(
        (0.0..400.0).contains(&drain),
        "an idle server drains at once: {drain} ms"
    );
    assert_eq!(connections(&report), [1, 1, 0, 0, 0]);
    assert_eq!(report["connections"]["closed"], 1);
    assert_eq!(report["servers"][0]["name"], "http");
    assert_eq!(report["servers"][0]["handler_errors"], 0);
    assert_eq!(report["pools"][0]["name"], "audit");
    assert_eq!(report["pools"][0]["succeeded"], 1);
    let hooks = report["hooks"].as_array().expect("hooks");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["name"], "audit-log");
    assert_eq!(hooks[0]["outcome"], "ok");
    assert!(server.stderr().contains("server http: 1 connection,"));
}

#[test]
fn the_port_can_be_bound_again_right_after_exit() {
    let mut server = ServerProcess::start(&[]);
    // Connections the server closes itself leave its side in TIME_WAIT.
    let mut idle = Client::connect(server.addr).unwrap();
    idle.get("/health").unwrap();
    idle.read_response().unwrap();
    get(server.addr, "/sleep?ms=1").unwrap();
    server.sigterm();
    idle.read_eof().unwrap();
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    let again = TcpListener::bind(server.addr).expect("bind the same port at once");
    drop(again);
}

#[test]
fn out_of_file_descriptors_the_acceptor_backs_off_without_spinning_and_recovers() {
    // Room for about 20 connections: more clients than that wait in the
    // backlog while `accept` fails with EMFILE.
    const CLIENTS: usize = 40;
    let mut server = ServerProcess::start_under(&["prlimit", "--nofile=24"], &["--workers", "64"]);
    let addr = server.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || -> io::Result<HttpResponse> {
                let mut c = Client::connect(addr)?;
                c.send(b"GET /sleep?ms=1500 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
                c.read_response()
            })
        })
        .collect();
    for c in clients {
        let r = c
            .join()
            .unwrap()
            .expect("every client is served in the end");
        assert_eq!((r.status, r.text().as_str()), (200, "1500"));
    }
    // A spinning acceptor would have burnt about a second of CPU while the
    // first clients slept.
    let cpu = server.cpu_time();
    assert!(cpu < ms(500), "the server used {cpu:?} of CPU");
    server.sigterm();
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    let report = server.report();
    let errors = report["servers"][0]["accept_errors"].as_u64().unwrap();
    assert!(errors >= 1, "accept never failed: {report}");
    assert_eq!(connections(&report)[..2], [CLIENTS as u64, CLIENTS as u64]);
}

#[test]
fn a_new_client_is_served_at_once_while_every_handler_holds_an_idle_keep_alive_connection() {
    const WORKERS: usize = 2;
    let mut server = ServerProcess::start(&["--workers", "2"]);
    let mut idle: Vec<Client> = (0..WORKERS)
        .map(|_| {
            let mut c = Client::connect(server.addr).unwrap();
            c.get("/health").unwrap();
            assert!(!c.read_response().unwrap().closes(), "keep-alive");
            c
        })
        .collect();
    // Every handler thread now waits on an idle keep-alive connection (for
    // up to the keep-alive timeout, 5 s).
    let asked = Instant::now();
    let r = get(server.addr, "/health").expect("the new client is served");
    let took = asked.elapsed();
    eprintln!("new client served in {took:?} with {WORKERS} workers, {WORKERS} idle keep-alive");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert!(
        took < secs(2),
        "served after {took:?} (keep-alive timeout 5 s)"
    );
    // One idle connection gave way, with a clean FIN (the one idle the
    // longest: which that is depends on when the server thread marked each
    // idle, which a client cannot see), and only one: the other still
    // answers.
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let writers: Vec<TcpStream> = idle.iter().map(Client::writer).collect();
    for (i, mut c) in idle.drain(..).enumerate() {
        let ended_tx = ended_tx.clone();
        std::thread::spawn(move || {
            let r = c.read_eof();
            ended_tx.send((i, r, c)).unwrap();
        });
    }
    let (gone, r, _gone) = ended
        .recv_timeout(secs(10))
        .expect("an idle connection closed");
    r.expect("a clean end of stream");
    let kept = 1 - gone;
    (&writers[kept])
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (i, r, kept_client) = ended.recv_timeout(secs(10)).expect("an answer");
    assert_eq!(i, kept);
    let answer = r
        .expect_err("the other connection is still open")
        .to_string();
    assert!(answer.contains("HTTP/1.1 200 OK"), "{answer}");
    server.sigterm();
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    drop(kept_client);
    let report = server.report();
    // Reclaimed and `Connection: close`: closed; the other idle one: by the stop.
    assert_eq!(connections(&report), [3, 4, 1, 0, 0]);
    assert_eq!(report["connections"]["closed"], 2);
}

#[test]
fn a_connection_accepted_just_before_the_close_is_served_when_its_request_comes_late() {
    let mut server = ServerProcess::start(&["--close-window", "2000"]);
    // Idle keep-alive: its end of stream says the listener has closed.
    let mut idle = Client::connect(server.addr).unwrap();
    idle.get("/health").unwrap();
    idle.read_response().unwrap();
    let mut late = Client::connect(server.addr).unwrap();
    server.sigterm();
    idle.read_eof().expect("the listener closed");
    let closed = Instant::now();
    late.get("/sleep?ms=1").unwrap();
    let r = late.read_response().expect("the late request is answered");
    eprintln!(
        "late request answered {:?} after the close was seen",
        closed.elapsed()
    );
    assert_ok_closing(&r, "1");
    late.read_eof().expect("then a clean end of stream");
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    assert_eq!(connections(&server.report()), [2, 2, 1, 1, 0]);
}

#[test]
fn a_silent_fresh_connection_is_closed_when_the_close_window_ends() {
    const WINDOW: Duration = Duration::from_millis(200); // the default
    let mut server = ServerProcess::start(&[]);
    let mut idle = Client::connect(server.addr).unwrap();
    idle.get("/health").unwrap();
    idle.read_response().unwrap();
    let mut silent = Client::connect(server.addr).unwrap();
    let signalled = Instant::now();
    server.sigterm();
    idle.read_eof()
        .expect("idle keep-alive: closed with the listener");
    let idle_closed = signalled.elapsed();
    silent
        .read_eof()
        .expect("no response, a clean end of stream");
    let silent_closed = signalled.elapsed();
    eprintln!("idle closed after {idle_closed:?}, silent after {silent_closed:?}");
    assert!(
        silent_closed >= WINDOW && silent_closed < WINDOW + secs(2),
        "the silent connection closed {silent_closed:?} after the signal (window {WINDOW:?})"
    );
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    assert_eq!(connections(&server.report()), [2, 1, 2, 0, 0]);
}

#[test]
fn chunked_request_bodies_are_echoed_and_bad_ones_refused() {
    let mut server = ServerProcess::start(&[]);
    // Two chunked requests on one connection: the framing is consumed exactly.
    let mut c = Client::connect(server.addr).unwrap();
    for _ in 0..2 {
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
              6;note=x\r\nhello \r\n8\r\nwinddown\r\n0\r\nX-Trailer: 1\r\n\r\n",
        )
        .unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "hello winddown"),
            "{r:?}"
        );
        assert!(!r.closes(), "{r:?}");
    }
    drop(c);
    let bad: [(&[u8], u16); 4] = [
        (b"5\r\nhello\r\n", 400), // no final chunk: cut below
        (b"zz\r\nhello\r\n0\r\n\r\n", 400),
        (b"5\r\nhello!!\r\n0\r\n\r\n", 400),
        (b"100001\r\n", 413), // 1 MiB + 1, over the default max_body
    ];
    for (i, (body, status)) in bad.into_iter().enumerate() {
        let mut c = Client::connect(server.addr).unwrap();
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        c.send(body).unwrap();
        if i == 0 {
            // The body ends without its last chunk: the server sees the end
            // of stream and closes without an answer.
            c.shutdown_write();
            c.read_eof().expect("a truncated body gets no answer");
            continue;
        }
        let r = c.read_response().unwrap();
        assert_eq!(
            r.status,
            status,
            "{:?}: {r:?}",
            String::from_utf8_lossy(body)
        );
        assert!(r.closes(), "{r:?}");
        c.read_eof().unwrap();
    }
    // Chunked after another coding: not implemented; with Content-Length: 400.
    for (head, status) in [
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
    ] {
        let mut c = Client::connect(server.addr).unwrap();
        c.send(format!("POST /echo HTTP/1.1\r\nHost: t\r\n{head}\r\n0\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(c.read_response().unwrap().status, status, "{head:?}");
    }
    server.sigterm();
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
    let report = server.report();
    let [accepted, served, ..] = connections(&report);
    // Every answer counts, the 400s too; the truncated body got none.
    assert_eq!((accepted, served), (7, 2 + 3 + 2));
}

/// Seconds since 1970 of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// checking its shape and its weekday; `None` if it is not one.
fn parse_http_date(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if s.len() != 29 || &s[3..5] != ", " || &s[25..] != " GMT" || b[7] != b' ' || b[11] != b' ' {
        return None;
    }
    if b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    let (day, year) = (digits(5..7)?, digits(12..16)?);
    let month = MONTHS.iter().position(|m| *m == &s[8..11])? as u64;
    let (h, m, sec) = (digits(17..19)?, digits(20..22)?, digits(23..25)?);
    let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days: u64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += lengths[..month as usize].iter().sum::<u64>();
    if day == 0 || day > lengths[month as usize] || h > 23 || m > 59 || sec > 59 {
        return None;
    }
    days += day - 1;
    (WEEKDAYS[(days % 7) as usize] == &s[..3]).then_some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[test]
fn every_response_carries_a_well_formed_current_date() {
    let mut server = ServerProcess::start(&[]);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    for path in ["/health", "/sleep?ms=1", "/nowhere"] {
        let before = now();
        let r = get(server.addr, path).unwrap();
        let after = now();
        let date = r
            .header("date")
            .unwrap_or_else(|| panic!("no Date on {r:?}"));
        let t = parse_http_date(date).unwrap_or_else(|| panic!("not an IMF-fixdate: {date:?}"));
        assert!(
            (before..=after).contains(&t),
            "{date:?} is not now ({before}..={after})"
        );
    }
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert_eq!(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"), None);
    server.sigterm();
    assert_eq!(exit_code(&mut server, secs(10)).0, SIGNAL_EXIT);
}

// ===== In process =====

/// Runs a server with `handler` in a runtime without signal handling, lets
/// `client` drive it (it gets the address and stops the runtime when done),
/// and returns the server's report and the exit code.
fn run_in_process<H, C>(workers: usize, handler: H, client: C) -> (ServerReport, i32)
where
    H: Fn(&winddown::Request, &winddown::Token) -> anyhow::Result<Response> + Send + Sync + 'static,
    C: FnOnce(std::net::SocketAddr, winddown::Handle) + Send + 'static,
{
    let mut rt = Runtime::builder()
        .signals(false)
        .grace(secs(10))
        .build()
        .unwrap();
    let server = Server::builder()
        .workers(workers)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    server.start(&mut rt, handler).unwrap();
    let handle = rt.handle();
    let client = std::thread::spawn(move || client(addr, handle));
    let report = rt.run();
    client.join().expect("the client's checks passed");
    TcpListener::bind(addr).expect("the listener is closed once `run` returns");
    assert_eq!(report.servers.len(), 1);
    (report.servers[0].clone(), report.exit_code)
}

#[test]
fn zero_workers_is_refused_and_the_port_is_released() {
    let mut rt = Runtime::builder().signals(false).build().unwrap();
    let server = Server::builder()
        .name("api")
        .workers(0)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let err = server
        .start(&mut rt, |_, _| Ok(Response::new(204)))
        .expect_err("zero workers");
    assert!(
        matches!(&err, BuildError::ZeroWorkers { pool } if pool == "api"),
        "{err:?}"
    );
    TcpListener::bind(addr).expect("the listener was closed");
    assert!(rt.run().servers.is_empty());
}

#[test]
fn every_accepted_connection_is_counted_once_by_how_it_ended() {
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let handler = move |req: &winddown::Request, token: &winddown::Token| {
        if req.path() == "/wait-for-stop" {
            started_tx.send(()).unwrap();
            token.wait();
        }
        Ok(Response::text(200, req.path().to_owned()))
    };
    let (server, code) = run_in_process(4, handler, move |addr, handle| {
        // Closed by the client's own `Connection: close`.
        assert_eq!(get(addr, "/a").unwrap().text(), "/a");
        // Idle at the stop.
        let mut idle = Client::connect(addr).unwrap();
        idle.get("/b").unwrap();
        assert!(!idle.read_response().unwrap().closes());
        // Busy at the stop: drained.
        let mut busy = Client::connect(addr).unwrap();
        busy.get("/wait-for-stop").unwrap();
        started_rx.recv().unwrap();
        // Half a request at the stop.
        let mut half = TcpStream::connect(addr).unwrap();
        half.write_all(b"GET / HT").unwrap();
        assert!(handle.request("test over"));
        assert_ok_closing(&busy.read_response().unwrap(), "/wait-for-stop");
        busy.read_eof().unwrap();
        idle.read_eof().unwrap();
        half.set_read_timeout(Some(secs(10))).unwrap();
        assert_eq!(half.read(&mut [0; 64]).unwrap(), 0);
        half.shutdown(Shutdown::Both).unwrap();
    });
    let c = server.connections;
    assert!(c.is_balanced(), "{c:?}");
    let ConnectionCounts {
        accepted,
        served,
        closed,
        idle_closed,
        drained,
        forced,
        ..
    } = c;
    assert_eq!(
        [accepted, served, closed, idle_closed, drained, forced],
        [4, 3, 1, 2, 1, 0]
    );
    assert_eq!(code, 0);
}

#[test]
fn handler_errors_and_panics_are_answered_with_500_and_counted() {
    let handler = |req: &winddown::Request, _: &winddown::Token| match req.path() {
        "/err" => Err(anyhow::anyhow!("no such thing")),
        "/panic" => panic!("handler panicked on purpose"),
        _ => Ok(Response::text(200, "fine")),
    };
    let (server, code) = run_in_process(2, handler, |addr, handle| {
        let mut c = Client::connect(addr).unwrap();
        for (path, status) in [("/err", 500), ("/panic", 500), ("/ok", 200)] {
            c.get(path).unwrap();
            let r = c.read_response().unwrap();
            assert_eq!(r.status, status, "{path}: {r:?}");
            assert!(!r.closes(), "the connection stays usable after a 500");
        }
        handle.request("test over");
        c.read_eof().unwrap();
    });
    assert_eq!((server.handler_errors, server.handler_panics), (1, 1));
    assert_eq!(server.connections.served, 3);
    assert!(server.connections.is_balanced());
    assert_eq!(code, 0, "handler failures do not fail the run");
}

#[test]
fn a_request_read_after_the_forced_close_counts_forced_and_its_handler_does_not_run() {
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let (ran_tx, ran_rx) = crossbeam_channel::unbounded::<String>();
    let mut rt = Runtime::builder()
        .signals(false)
        .grace(ms(500))
        .kill_grace(secs(10))
        .build()
        .unwrap();
    let server = Server::builder().workers(1).bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    server
        .start(&mut rt, move |req, token| {
            ran_tx.send(req.path().to_owned()).unwrap();
            if req.path() == "/block" {
                started_tx.send(()).unwrap();
                token.wait_hard(); // the deadline...
                release_rx.recv().unwrap(); // ...and then until the test says
            }
            Ok(Response::text(200, "done"))
        })
        .unwrap();
    let handle = rt.handle();
    let client = std::thread::spawn(move || {
        let mut busy = Client::connect(addr).unwrap();
        busy.get("/block").unwrap();
        started_rx.recv().unwrap();
        // The only handler thread is busy: this whole request waits in the
        // queue, unread, past the deadline.
        let mut queued = Client::connect(addr).unwrap();
        queued.get("/queued").unwrap();
        handle.request("test over");
        // The deadline shuts every connection down.
        busy.read_eof().expect("the busy connection is shut down");
        release_tx.send(()).unwrap();
        queued.read_eof().expect("no answer after the deadline");
    });
    let report = rt.run();
    client.join().expect("the client's checks passed");
    let paths: Vec<String> = ran_rx.try_iter().collect();
    assert_eq!(
        paths,
        ["/block"],
        "the handler ran only for the first request"
    );
    let c = report.servers[0].connections;
    assert!(c.is_balanced(), "{c:?}");
    assert_eq!(
        [c.accepted, c.served, c.closed, c.forced],
        [2, 0, 0, 2],
        "{c:?}"
    );
    assert_eq!(report.exit_code, 1);
}

#[test]
fn the_close_window_is_cut_short_by_the_drain_deadline() {
    let mut rt = Runtime::builder()
        .signals(false)
        .grace(ms(300))
        .kill_grace(secs(2))
        .build()
        .unwrap();
    let server = Server::builder()
        .close_window(Duration::MAX) // no overflow: "until the deadline"
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    server
        .start(&mut rt, |_, _| Ok(Response::new(204)))
        .unwrap();
    let handle = rt.handle();
    let client = std::thread::spawn(move || {
        let mut silent = Client::connect(addr).unwrap();
        let stopped = Instant::now();
        handle.request("test over");
        silent
            .read_eof()
            .expect("closed with a FIN at the deadline");
        stopped.elapsed()
    });
    let report = rt.run();
    let closed_after = client.join().unwrap();
    assert!(
        closed_after >= ms(300) && closed_after < secs(5),
        "closed {closed_after:?} after the stop (grace 300 ms)"
    );
    let c = report.servers[0].connections;
    assert_eq!([c.accepted, c.idle_closed, c.forced], [1, 1, 0], "{c:?}");
}
