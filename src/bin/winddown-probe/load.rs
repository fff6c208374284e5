//! The optional load: an HTTP URL requested at a fixed total rate by a few
//! client threads while a run lasts, each request counted in exactly one
//! bucket.
//!
//! Each request is a fresh `TcpStream` carrying one HTTP/1.1 `GET` with
//! `Connection: close`. Its outcome is one of: `ok` (a complete 2xx
//! response), `connect_errors` (the connection could not be made),
//! `non_2xx` (a complete status line and headers with another status) or
//! `incomplete` (the connection was made but no whole response came back:
//! a write or read error, a timeout, or an end of stream before the headers
//! or the body — per `Content-Length` or the chunked encoding — were
//! complete). A request belongs to `before` or `after` by when it *began*,
//! relative to the signal.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// Connect, read and write timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, Clone)]
pub(crate) struct Url {
    /// `host[:port]`, as sent in the `Host` header.
    host: String,
    /// The address connected to (the first the host resolves to).
    addr: SocketAddr,
    /// The path and query, starting with `/`.
    path: String,
}

/// A URL the load cannot use.
#[derive(Debug)]
pub(crate) enum UrlError {
    /// Not `http://…` (https is not supported).
    Scheme,
    /// The host does not resolve.
    Resolve(String, std::io::Error),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme => f.write_str("the load URL must start with http://"),
            UrlError::Resolve(host, _) => write!(f, "cannot resolve {host}"),
        }
    }
}

impl std::error::Error for UrlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UrlError::Scheme => None,
            UrlError::Resolve(_, e) => Some(e),
        }
    }
}

impl Url {
    /// Parses and resolves `url` (resolved once, here, not per request).
    ///
    /// # Errors
    ///
    /// [`UrlError`] if it is not `http://` or the host does not resolve.
    pub(crate) fn parse(url: &str) -> Result<Url, UrlError> {
        let rest = url.strip_prefix("http://").ok_or(UrlError::Scheme)?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| UrlError::Resolve(host.to_owned(), e))?
            .next()
            .ok_or_else(|| {
                UrlError::Resolve(host.to_owned(), std::io::ErrorKind::NotFound.into())
            })?;
        Ok(Url {
            host: host.to_owned(),
            addr,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host, self.path)
    }
}

/// What to apply during each run.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) url: Url,
    /// Requests per second, over all threads together (> 0).
    pub(crate) rate: f64,
    /// Client threads (≥ 1).
    pub(crate) threads: usize,
}

/// The outcomes of the requests that began on one side of the signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) ok: u64,
    pub(crate) connect_errors: u64,
    pub(crate) non_2xx: u64,
    pub(crate) incomplete: u64,
}

impl Bucket {
    /// Every request counted.
    pub(crate) fn total(&self) -> u64 {
        self.ok + self.failed()
    }

    /// The requests that did not get a complete 2xx response.
    pub(crate) fn failed(&self) -> u64 {
        self.connect_errors + self.non_2xx + self.incomplete
    }

    fn add(&mut self, other: &Bucket) {
        self.ok += other.ok;
        self.connect_errors += other.connect_errors;
        self.non_2xx += other.non_2xx;
        self.incomplete += other.incomplete;
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Connect => self.connect_errors += 1,
            Outcome::Non2xx => self.non_2xx += 1,
            Outcome::Incomplete => self.incomplete += 1,
        }
    }
}

/// The requests of one run (or of several, added up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Requests that began before the signal was sent.
    pub(crate) before: Bucket,
    /// Requests that began at or after the signal.
    pub(crate) after: Bucket,
}

impl Counts {
    /// Adds `other` into `self`.
    pub(crate) fn add(&mut self, other: &Counts) {
        self.before.add(&other.before);
        self.after.add(&other.after);
    }
}

/// A load running: its threads stop when [`Load::finish`] is called.
#[derive(Debug)]
pub(crate) struct Load {
    /// Dropped to stop the threads: each waits on its receiver until its
    /// next slot, so the disconnect wakes it at once.
    stop: Sender<()>,
    threads: Vec<JoinHandle<Counts>>,
}

impl Load {
    /// Starts `spec.threads` client threads; `signal_at` is set by the run
    /// when it sends the signal.
    ///
    /// The total rate is kept by a schedule: request *i* is due at
    /// `start + i / rate`, and thread *t* takes the requests *i* ≡ *t* (mod
    /// threads). A thread that falls behind (a slow response) sends its
    /// next request at once, without a burst to catch up.
    ///
    /// # Errors
    ///
    /// The error from spawning a thread (those already started are stopped).
    pub(crate) fn start(spec: &Spec, signal_at: Arc<OnceLock<Instant>>) -> std::io::Result<Load> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let start = Instant::now();
        let period = Duration::from_secs_f64(spec.threads as f64 / spec.rate);
        let offset = Duration::from_secs_f64(1.0 / spec.rate);
        let mut load = Load {
            stop,
            threads: Vec::with_capacity(spec.threads),
        };
        for t in 0..spec.threads {
            let url = spec.url.clone();
            let stopped = stopped.clone();
            let signal_at = Arc::clone(&signal_at);
            let first = start + offset * t as u32;
            let spawned = std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || client(&url, first, period, &stopped, &signal_at));
            match spawned {
                Ok(h) => load.threads.push(h),
                Err(e) => {
                    load.finish();
                    return Err(e);
                }
            }
        }
        Ok(load)
    }

    /// Stops the threads, lets each finish the request it is in, and adds up
    /// their counts.
    pub(crate) fn finish(self) -> Counts {
        drop(self.stop);
        let mut total = Counts::default();
        for t in self.threads {
            // A client thread does not panic (no unwrap on I/O); if one
            // did, its counts are lost and the others still add up.
            if let Ok(c) = t.join() {
                total.add(&c);
            }
        }
        total
    }
}

/// One client thread: a request at each of its slots until stopped.
fn client(
    url: &Url,
    first: Instant,
    period: Duration,
    stopped: &Receiver<()>,
    signal_at: &OnceLock<Instant>,
) -> Counts {
    let mut counts = Counts::default();
    let mut due = first;
    loop {
        match stopped.recv_deadline(due) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return counts,
        }
        let began = Instant::now();
        let outcome = request(url);
        let after = signal_at.get().is_some_and(|&s| began >= s);
        if after {
            counts.after.count(outcome);
        } else {
            counts.before.count(outcome);
        }
        due = (due + period).max(Instant::now());
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Connect,
    Non2xx,
    Incomplete,
}

/// Sends one `GET` and classifies what comes back.
fn request(url: &Url) -> Outcome {
    let Ok(mut stream) = TcpStream::connect_timeout(&url.addr, REQUEST_TIMEOUT) else {
        return Outcome::Connect;
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: winddown-probe\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    let io = stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .and_then(|()| stream.write_all(req.as_bytes()));
    if io.is_err() {
        return Outcome::Incomplete;
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        match parse_response(&buf) {
            Parsed::Complete(status) if (200..300).contains(&status) => return Outcome::Ok,
            Parsed::Complete(_) => return Outcome::Non2xx,
            Parsed::Partial => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) => return at_eof(&buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Outcome::Incomplete,
        }
    }
}

/// The outcome of a response cut by the end of the stream: complete only if
/// its length is "until the connection closes".
fn at_eof(buf: &[u8]) -> Outcome {
    match head(buf) {
        Some(h) if h.framing == Framing::UntilClose => {
            if (200..300).contains(&h.status) {
                Outcome::Ok
            } else {
                Outcome::Non2xx
            }
        }
        _ => Outcome::Incomplete,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A whole response with this status.
    Complete(u16),
    /// More bytes are needed.
    Partial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
struct Head {
    status: u16,
    framing: Framing,
    /// Where the body begins.
    body: usize,
}

/// The status line and headers, once all of them are in `buf`.
fn head(buf: &[u8]) -> Option<Head> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            framing = Framing::Length(value.parse().ok()?);
        }
    }
    Some(Head {
        status,
        framing,
        body: end + 4,
    })
}

/// Whether `buf` holds a whole response.
fn parse_response(buf: &[u8]) -> Parsed {
    let Some(h) = head(buf) else {
        return Parsed::Partial;
    };
    let body = &buf[h.body..];
    let complete = match h.framing {
        Framing::Length(n) => body.len() >= n,
        Framing::Chunked => chunked_complete(body),
        Framing::UntilClose => false,
    };
    if complete {
        Parsed::Complete(h.status)
    } else {
        Parsed::Partial
    }
}

/// Whether a chunked body has reached its last chunk and the blank line
/// after the trailers.
fn chunked_complete(mut body: &[u8]) -> bool {
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return false;
        };
        body = &body[eol + 2..];
        if size == 0 {
            // Trailers (usually none), then an empty line.
            return body.starts_with(b"\r\n") || body.windows(4).any(|w| w == b"\r\n\r\n");
        }
        if body.len() < size + 2 {
            return false;
        }
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_with_a_length_is_complete_once_the_body_is_in() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(parse_response(head), Parsed::Partial);
        assert_eq!(
            parse_response(&[&head[..], b"hel"].concat()),
            Parsed::Partial
        );
        assert_eq!(
            parse_response(&[&head[..], b"hello"].concat()),
            Parsed::Complete(200)
        );
        assert_eq!(at_eof(&[&head[..], b"hel"].concat()), Outcome::Incomplete);
    }

    #[test]
    fn a_chunked_response_is_complete_at_its_last_chunk() {
        let head = &b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n"[..];
        let partial = [head, b"5\r\nhello\r\n"].concat();
        assert_eq!(parse_response(&partial), Parsed::Partial);
        let whole = [head, b"5\r\nhello\r\n0\r\n\r\n"].concat();
        assert_eq!(parse_response(&whole), Parsed::Complete(503));
    }

    #[test]
    fn a_response_without_a_length_ends_at_the_close() {
        let r = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody";
        assert_eq!(parse_response(r), Parsed::Partial);
        assert_eq!(at_eof(r), Outcome::Ok);
        assert_eq!(at_eof(b"HTTP/1.1 200 OK\r\n"), Outcome::Incomplete);
        assert_eq!(at_eof(b""), Outcome::Incomplete);
    }

    #[test]
    fn urls_need_http_and_default_to_port_80_and_root() {
        assert!(matches!(Url::parse("https://x/"), Err(UrlError::Scheme)));
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.addr.port(), u.path.as_str()), (8080, "/"));
        let u = Url::parse("http://127.0.0.1/health?x=1").unwrap();
        assert_eq!((u.addr.port(), u.path.as_str()), (80, "/health?x=1"));
    }
}
