//! HTTP/1.1 on one connection: [`Request`] and [`Response`], reading a
//! request with httparse (head) and `Content-Length` or chunked framing
//! (body), and writing a response with a fixed length or chunked, with a
//! `Date` header formatted here (IMF-fixdate, RFC 9110 5.6.7).
//!
//! Nothing here knows about the stop, except that a streaming response checks
//! the hard token between chunks and gives up once it has fired.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use crate::token::Token;

/// The most headers a request may carry; more is answered with 431.
const MAX_HEADERS: usize = 64;
/// The most bytes a request head (request line and headers) may take; more
/// is answered with 431.
pub(super) const MAX_HEAD: usize = 16 * 1024;
/// How much a read asks for at once.
const READ_CHUNK: usize = 8 * 1024;
/// The longest chunk-size line (size, extensions, CRLF) of a chunked request
/// body; longer is answered with 400.
const MAX_CHUNK_LINE: usize = 1024;

// ===== Request =====

/// An HTTP request whose head and body have been read in full.
///
/// Handed to the handler by reference; the body is bounded by
/// [`ServerBuilder::max_body`](super::ServerBuilder::max_body).
pub struct Request {
    method: String,
    target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    peer: SocketAddr,
}

impl Request {
    /// Returns the method, e.g. `"GET"`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Returns the request target as sent, e.g. `"/sleep?ms=10"`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Returns the target up to the first `?`, e.g. `"/sleep"`.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Returns the target after the first `?`, undecoded, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Returns the minor HTTP version: `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Returns the value of the first header named `name` (compared without
    /// regard to case), or `None` if there is none or it is not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Returns every header, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Returns the body: `Content-Length` bytes, or a chunked body decoded
    /// (its chunk extensions and trailer fields are dropped; the
    /// `Transfer-Encoding` header stays in [`headers`](Request::headers)).
    /// Empty if the request had neither.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Returns the client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the client wants the connection kept open after the response
    /// (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`).
    pub(super) fn wants_keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .flat_map(|(_, v)| v.split(|&b| b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        };
        if self.version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    pub(super) fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Request {
            method,
            target,
            version,
            headers,
            body,
            peer,
        } = self;
        f.debug_struct("Request")
            .field("method", method)
            .field("target", target)
            .field("version", &format_args!("HTTP/1.{version}"))
            .field("headers", &headers.len())
            .field("body", &format_args!("{} bytes", body.len()))
            .field("peer", peer)
            .finish()
    }
}

// ===== Response =====

type Chunks = Box<dyn Iterator<Item = Vec<u8>> + Send>;

enum Body {
    Bytes(Vec<u8>),
    Stream(Chunks),
}

/// An HTTP response: a status, headers and a body that is either a byte
/// buffer (sent with `Content-Length`) or a stream of chunks (sent with
/// `Transfer-Encoding: chunked`).
///
/// The server writes `Content-Length`, `Transfer-Encoding` and `Connection`
/// itself; headers of those names set here are left out. It adds a `Date`
/// header (the current time, e.g. `Date: Sun, 06 Nov 1994 08:49:37 GMT`)
/// unless one is set here.
///
/// ```
/// use winddown::Response;
///
/// let ok = Response::text(200, "hello\n");
/// let json = Response::new(201)
///     .header("Content-Type", "application/json")
///     .body(r#"{"id":7}"#);
/// let countdown = Response::stream(200, (1..=3).rev().map(|n| format!("{n}\n").into_bytes()));
/// assert_eq!((ok.status(), json.status(), countdown.status()), (200, 201, 200));
/// ```
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Response {
    /// Returns a response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    /// Returns a `text/plain; charset=utf-8` response with `body`.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body.into())
    }

    /// Returns a response whose body is streamed, one chunk per item of
    /// `chunks` (empty items are skipped), with `Transfer-Encoding: chunked`
    /// (to an HTTP/1.0 client: as is, and the connection closes after it).
    ///
    /// The iterator runs on the handler thread after the handler returned; it
    /// may block between items. Between two items the server checks the hard
    /// token: once the drain deadline has passed the stream is cut (no final
    /// chunk) and the connection force-closed. A stream that should end
    /// cleanly at the stop watches the [`Token`] it was given and ends.
    pub fn stream<I>(status: u16, chunks: I) -> Response
    where
        I: IntoIterator<Item = Vec<u8>>,
        I::IntoIter: Send + 'static,
    {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Stream(Box::new(chunks.into_iter())),
        }
    }

    /// Adds a header.
    ///
    /// # Panics
    ///
    /// If `name` or `value` holds a CR or LF, or `name` is empty or holds a
    /// `:` (a header that would split the response). A panic in a handler is
    /// answered with 500.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        let (name, value) = (name.into(), value.into());
        assert!(
            !name.is_empty() && !name.contains([':', '\r', '\n']) && !value.contains(['\r', '\n']),
            "invalid response header {name:?}: {value:?}"
        );
        self.headers.push((name, value));
        self
    }

    /// Replaces the body with `body`, sent with `Content-Length`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = Body::Bytes(body.into());
        self
    }

    /// Returns the status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether this response can leave the connection open for a client of
    /// HTTP minor version `version` (a stream to HTTP/1.0 ends at the close).
    pub(super) fn allows_keep_alive(&self, version: u8) -> bool {
        version >= 1 || matches!(self.body, Body::Bytes(_))
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Response {
            status,
            headers,
            body,
        } = self;
        let body = match body {
            Body::Bytes(b) => format!("{} bytes", b.len()),
            Body::Stream(_) => "<stream>".to_owned(),
        };
        f.debug_struct("Response")
            .field("status", status)
            .field("headers", headers)
            .field("body", &body)
            .finish()
    }
}

// ===== Reading =====

/// Why no request could be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// End of stream, a timeout or an I/O error before a full request: the
    /// connection just ends.
    Closed,
    /// A request the server cannot take: answer with this status and close.
    Bad(u16),
}

/// Reads requests from one connection, keeping bytes read past the end of
/// one request (pipelining) for the next.
pub(super) struct Reader<'a> {
    stream: &'a TcpStream,
    buf: Vec<u8>,
    /// The read timeout currently set on the socket, to skip redundant
    /// `setsockopt`s.
    timeout: Option<Option<Duration>>,
    keep_alive: Option<Duration>,
    io_timeout: Option<Duration>,
    max_body: usize,
    peer: SocketAddr,
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        stream: &'a TcpStream,
        peer: SocketAddr,
        keep_alive: Option<Duration>,
        io_timeout: Option<Duration>,
        max_body: usize,
    ) -> Reader<'a> {
        Reader {
            stream,
            buf: Vec::new(),
            timeout: None,
            keep_alive,
            io_timeout,
            max_body,
            peer,
        }
    }

    /// Reads more bytes: waits up to the keep-alive timeout for the first
    /// byte of a request, up to the I/O timeout for the rest. Returns the
    /// number read, 0 at the end of the stream.
    fn fill(&mut self) -> io::Result<usize> {
        let want = if self.buf.is_empty() {
            self.keep_alive
        } else {
            self.io_timeout
        };
        if self.timeout != Some(want) {
            self.stream.set_read_timeout(want)?;
            self.timeout = Some(want);
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let n = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
        n
    }

    /// Returns `true` if bytes of the next request are already buffered
    /// (pipelined behind the last one).
    pub(super) fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Waits (up to the keep-alive timeout) until the first bytes of the
    /// next request are here. `Err(Closed)`: the stream ended, or the
    /// timeout passed, first.
    pub(super) fn wait_for_request(&mut self) -> Result<(), ReadError> {
        if self.buf.is_empty() && matches!(self.fill(), Ok(0) | Err(_)) {
            return Err(ReadError::Closed);
        }
        Ok(())
    }

    /// Reads more; an end of stream, a timeout or an error is `Closed`.
    fn fill_or_closed(&mut self) -> Result<(), ReadError> {
        match self.fill() {
            Ok(0) | Err(_) => Err(ReadError::Closed),
            Ok(_) => Ok(()),
        }
    }

    /// Reads the next request: its head (parsed by httparse) and its body
    /// (`Content-Length` or chunked). Blocks until it is complete, the
    /// stream ends, or a timeout passes.
    pub(super) fn read_request(&mut self) -> Result<Request, ReadError> {
        let (mut request, head_len, framing, expect_continue) = loop {
            if !self.buf.is_empty() {
                if let Some(parsed) = self.parse_head()? {
                    break parsed;
                }
                if self.buf.len() >= MAX_HEAD {
                    return Err(ReadError::Bad(431));
                }
            }
            self.fill_or_closed()?;
        };
        if self.buf.len() == head_len
            && framing != Framing::Length(0)
            && expect_continue
            && request.version >= 1
        {
            // The client waits for this before it sends the body.
            let _ = self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let end = match framing {
            Framing::Length(body_len) => {
                let end = head_len + body_len;
                while self.buf.len() < end {
                    self.fill_or_closed()?;
                }
                request.body = self.buf[head_len..end].to_vec();
                end
            }
            Framing::Chunked => self.read_chunked(head_len, &mut request.body)?,
        };
        self.buf.drain(..end);
        Ok(request)
    }

    /// Decodes a chunked body that starts at `pos` in the buffer into `body`
    /// (RFC 9112 7.1), reading more as needed; returns where the message
    /// ends (after the trailer section). Strict: CRLF line ends, a hex size
    /// of at most 16 digits, extensions of visible characters; the decoded
    /// body is bounded by `max_body` (413), the size line by
    /// `MAX_CHUNK_LINE` and the trailers by `MAX_HEAD` (431).
    fn read_chunked(&mut self, mut pos: usize, body: &mut Vec<u8>) -> Result<usize, ReadError> {
        loop {
            let (size, line_len) = loop {
                match parse_chunk_line(&self.buf[pos..])? {
                    Some(parsed) => break parsed,
                    None if self.buf.len() - pos > MAX_CHUNK_LINE => {
                        return Err(ReadError::Bad(400))
                    }
                    None => self.fill_or_closed()?,
                }
            };
            pos += line_len;
            if size == 0 {
                return self.read_trailers(pos);
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|&n| n <= self.max_body.saturating_sub(body.len()))
                .ok_or(ReadError::Bad(413))?;
            while self.buf.len() < pos + size + 2 {
                self.fill_or_closed()?;
            }
            if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                return Err(ReadError::Bad(400));
            }
            body.extend_from_slice(&self.buf[pos..pos + size]);
            pos += size + 2;
        }
    }

    /// Skips the trailer section that starts at `pos` (fields, then an
    /// empty line); returns where it ends.
    fn read_trailers(&mut self, pos: usize) -> Result<usize, ReadError> {
        loop {
            let rest = &self.buf[pos..];
            if rest.starts_with(b"\r\n") {
                return Ok(pos + 2);
            }
            if rest.len() >= 2 {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(rest, &mut fields) {
                    Ok(httparse::Status::Complete((n, _))) => return Ok(pos + n),
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => return Err(ReadError::Bad(431)),
                    Err(_) => return Err(ReadError::Bad(400)),
                }
            }
            if rest.len() >= MAX_HEAD {
                return Err(ReadError::Bad(431));
            }
            self.fill_or_closed()?;
        }
    }

    /// Parses the head in the buffer. `Ok(None)`: not complete yet.
    fn parse_head(&self) -> Result<Option<(Request, usize, Framing, bool)>, ReadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ReadError::Bad(431)),
            Err(_) => return Err(ReadError::Bad(400)),
        };
        let version = parsed.version.unwrap_or(1);
        let mut content_length: Option<u64> = None;
        let mut codings: Vec<&[u8]> = Vec::new();
        let mut expect_continue = false;
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                codings.extend(
                    h.value
                        .split(|&b| b == b',')
                        .map(<[u8]>::trim_ascii)
                        .filter(|c| !c.is_empty()),
                );
            } else if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(ReadError::Bad(400))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(ReadError::Bad(400));
                }
                content_length = Some(n);
            } else if h.name.eq_ignore_ascii_case("expect") {
                expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        let framing = if codings.is_empty() {
            match content_length {
                None => Framing::Length(0),
                Some(n) if n > self.max_body as u64 => return Err(ReadError::Bad(413)),
                Some(n) => Framing::Length(n as usize), // <= max_body, a usize
            }
        } else {
            chunked_framing(&codings, content_length.is_some(), version)?
        };
        let request = Request {
            method: parsed.method.unwrap_or_default().to_owned(),
            target: parsed.path.unwrap_or_default().to_owned(),
            version,
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            body: Vec::new(),
            peer: self.peer,
        };
        Ok(Some((request, head_len, framing, expect_continue)))
    }
}

/// How a request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` (0 without one).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Decides the framing of a request with `Transfer-Encoding` (the
/// `codings`, in order), following RFC 9112 6.1 and 6.3: with
/// `Content-Length` too, or from an HTTP/1.0 client, the framing cannot be
/// trusted (400, as a guard against request smuggling); `chunked` must be
/// the last coding, once (else 400); other codings before it are not
/// supported (501).
fn chunked_framing(
    codings: &[&[u8]],
    content_length: bool,
    version: u8,
) -> Result<Framing, ReadError> {
    let is_chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
    if content_length || version == 0 {
        return Err(ReadError::Bad(400));
    }
    match codings.split_last() {
        Some((last, rest)) if is_chunked(last) && !rest.iter().any(is_chunked) => {
            if rest.is_empty() {
                Ok(Framing::Chunked)
            } else {
                Err(ReadError::Bad(501))
            }
        }
        _ => Err(ReadError::Bad(400)),
    }
}

/// Parses a chunk-size line at the start of `buf`: `Ok(Some((size, length
/// of the line with its CRLF)))`, `Ok(None)` if the CRLF has not arrived, or
/// `Bad(400)`.
fn parse_chunk_line(buf: &[u8]) -> Result<Option<(u64, usize)>, ReadError> {
    let Some(cr) = buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Ok(None);
    };
    if buf[cr] != b'\r' {
        return Err(ReadError::Bad(400)); // a bare LF
    }
    match buf.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ReadError::Bad(400)),
    }
    let line = &buf[..cr];
    let (digits, ext) = match line.iter().position(|&b| b == b';') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, &line[line.len()..]),
    };
    // Whitespace before the `;` is allowed (RFC 9112 7.1.1, `BWS`).
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(ReadError::Bad(400));
    }
    if !ext
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(ReadError::Bad(400));
    }
    let size = digits.iter().fold(0u64, |n, &d| {
        // At most 16 hex digits: no overflow.
        (n << 4) | u64::from((d as char).to_digit(16).unwrap_or(0))
    });
    Ok(Some((size, cr + 2)))
}

// ===== Writing =====

/// Why a response was not written in full.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The drain deadline passed while a stream was being sent.
    HardStop,
    /// The write failed (client gone, connection shut down, timeout).
    Io,
}

/// What of the request decides the shape of the response.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// A HEAD request: headers only.
    pub(super) head_only: bool,
    /// The client's minor HTTP version.
    pub(super) version: u8,
}

impl Shape {
    pub(super) fn of(request: &Request) -> Shape {
        Shape {
            head_only: request.is_head(),
            version: request.version,
        }
    }
}

/// Writes `response` to `stream`, with `Connection: close` unless
/// `keep_alive`. A stream checks `token`'s hard side between chunks.
pub(super) fn write_response(
    mut stream: &TcpStream,
    shape: Shape,
    response: Response,
    keep_alive: bool,
    token: &Token,
) -> Result<(), WriteError> {
    let Response {
        status,
        headers,
        body,
    } = response;
    // 1xx, 204 and 304 have no body (RFC 9110, 6.4.1).
    let bodiless = status / 100 == 1 || status == 204 || status == 304;
    let mut out = Vec::with_capacity(256);
    // Writes to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    let mut has_date = false;
    for (name, value) in &headers {
        let reserved = ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r));
        has_date |= name.eq_ignore_ascii_case("date");
        if !reserved {
            let _ = write!(out, "{name}: {value}\r\n");
        }
    }
    if !has_date {
        // A clock before 1970 or after 9999 is not to be trusted: no Date
        // (RFC 9110 6.6.1).
        if let Some(date) = HttpDate::from_system_time(SystemTime::now()) {
            let _ = write!(out, "Date: {date}\r\n");
        }
    }
    let chunked = shape.version >= 1;
    match &body {
        Body::Bytes(b) if !bodiless => {
            let _ = write!(out, "Content-Length: {}\r\n", b.len());
        }
        Body::Stream(_) if !bodiless && chunked => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        _ => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if shape.version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let send_body = !bodiless && !shape.head_only;
    match body {
        Body::Bytes(b) => {
            if send_body {
                out.extend_from_slice(&b);
            }
            stream.write_all(&out).map_err(|_| WriteError::Io)
        }
        Body::Stream(chunks) => {
            stream.write_all(&out).map_err(|_| WriteError::Io)?;
            if !send_body {
                return Ok(());
            }
            for chunk in chunks.filter(|c| !c.is_empty()) {
                if token.is_hard_stopping() {
                    return Err(WriteError::HardStop);
                }
                out.clear();
                if chunked {
                    let _ = write!(out, "{:x}\r\n", chunk.len());
                    out.extend_from_slice(&chunk);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&chunk);
                }
                stream.write_all(&out).map_err(|_| WriteError::Io)?;
            }
            // An iterator that ended because the deadline passed is cut too:
            // no final chunk, so the client can tell.
            if token.is_hard_stopping() {
                return Err(WriteError::HardStop);
            }
            if chunked {
                stream.write_all(b"0\r\n\r\n").map_err(|_| WriteError::Io)?;
            }
            Ok(())
        }
    }
}

// ===== Date =====

/// A point in time as HTTP writes it: the IMF-fixdate of RFC 9110 5.6.7,
/// e.g. `Sun, 06 Nov 1994 08:49:37 GMT`, always in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HttpDate {
    /// Days since 1970-01-01.
    days: u64,
    /// Seconds since midnight.
    secs: u32,
}

impl HttpDate {
    /// Seconds in a day.
    const DAY: u64 = 86_400;
    /// 9999-12-31T23:59:59Z, the last instant with a four-digit year.
    const LAST: u64 = 253_402_300_799;

    /// Returns the date of `t` (to the second, rounded down), or `None`
    /// before 1970 or after the year 9999.
    pub(super) fn from_system_time(t: SystemTime) -> Option<HttpDate> {
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        HttpDate::from_unix(secs)
    }

    fn from_unix(secs: u64) -> Option<HttpDate> {
        (secs <= HttpDate::LAST).then_some(HttpDate {
            days: secs / HttpDate::DAY,
            secs: (secs % HttpDate::DAY) as u32, // < 86 400
        })
    }

    /// Returns (year, month 1–12, day 1–31) of the proleptic Gregorian
    /// calendar. The count is shifted to start on 0000-03-01, so that the
    /// leap day is the last day of its "year" and each 400-year era has the
    /// same 146 097 days; within an era the year and the day of the
    /// (March-based) year follow from the 4-, 100- and 400-year rules, and
    /// the month from the 153-day cycle of March–July and August–December
    /// (31, 30, 31, 30, 31).
    fn civil(self) -> (u64, u32, u32) {
        const ERA: u64 = 146_097;
        // 1970-01-01 is day 719 468 counted from 0000-03-01.
        let z = self.days + 719_468;
        let era = z / ERA;
        let doe = z % ERA; // day of the era, 0..146 096
                           // Year of the era, 0..399: take out one day per 4 years, add one
                           // back per 100, take one out again for the 400th (the era's last day).
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / (ERA - 1)) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..365, from March 1
        let mp = (5 * doy + 2) / 153; // 0 = March … 11 = February
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = era * 400 + yoe + u64::from(month <= 2);
        (year, month, day)
    }
}

impl fmt::Display for HttpDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (year, month, day) = self.civil();
        // 1970-01-01 was a Thursday.
        let weekday = WEEKDAYS[(self.days % 7) as usize];
        let month = MONTHS[month as usize - 1];
        let (h, m, s) = (self.secs / 3600, self.secs / 60 % 60, self.secs % 60);
        write!(
            f,
            "{weekday}, {day:02} {month} {year:04} {h:02}:{m:02}:{s:02} GMT"
        )
    }
}

/// The reason phrase of the common status codes (empty for the others,
/// which HTTP/1.1 allows).
pub(super) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: u8, connection: Option<&str>) -> Request {
        Request {
            method: "GET".into(),
            target: "/a/b?x=1&y=2".into(),
            version,
            headers: connection
                .map(|c| vec![("Connection".to_owned(), c.as_bytes().to_vec())])
                .unwrap_or_default(),
            body: Vec::new(),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    #[test]
    fn path_and_query_split_at_the_first_question_mark() {
        let r = request(1, None);
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query(), Some("x=1&y=2"));
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_tokens() {
        assert!(request(1, None).wants_keep_alive());
        assert!(!request(1, Some("close")).wants_keep_alive());
        assert!(!request(1, Some("Upgrade, Close")).wants_keep_alive());
        assert!(!request(0, None).wants_keep_alive());
        assert!(request(0, Some("Keep-Alive")).wants_keep_alive());
    }

    #[test]
    #[should_panic(expected = "invalid response header")]
    fn a_header_that_would_split_the_response_panics() {
        let _ = Response::new(200).header("X-Evil", "a\r\nSet-Cookie: b");
    }

    /// Days since 1970-01-01 → (year, month, day), by walking years and
    /// months one at a time: slow, plain, and independent of `civil`.
    fn naive_civil(mut days: u64) -> (u64, u32, u32) {
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut year = 1970;
        // 400 years have the same number of days, whatever the start.
        year += days / 146_097 * 400;
        days %= 146_097;
        loop {
            let len = if leap(year) { 366 } else { 365 };
            if days < len {
                break;
            }
            days -= len;
            year += 1;
        }
        let feb = if leap(year) { 29 } else { 28 };
        let lengths = [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let mut month = 0;
        while days >= lengths[month] {
            days -= lengths[month];
            month += 1;
        }
        (year, month as u32 + 1, days as u32 + 1)
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        let date = |secs| HttpDate::from_unix(secs).unwrap().to_string();
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT"); // RFC 9110's
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 GMT");
        assert_eq!(date(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(date(HttpDate::LAST), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(HttpDate::from_unix(HttpDate::LAST + 1), None);
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(HttpDate::from_system_time(before), None);
    }

    #[test]
    fn the_calendar_matches_a_day_by_day_count() {
        // Every day up to 2498 (leap years of every kind), then a sample up
        // to 9999.
        let last = HttpDate::LAST / HttpDate::DAY;
        let days = (0..193_000)
            .chain((193_000..=last).step_by(9_973))
            .chain([last]);
        for days in days {
            let ours = HttpDate { days, secs: 0 }.civil();
            assert_eq!(ours, naive_civil(days), "day {days}");
        }
    }

    #[test]
    fn chunk_size_lines_are_parsed_strictly() {
        let line = |b: &[u8]| parse_chunk_line(b).map_err(|e| format!("{e:?}"));
        assert_eq!(line(b"1a\r\nxyz"), Ok(Some((26, 4))));
        assert_eq!(line(b"0;name=value\r\n"), Ok(Some((0, 14))));
        assert_eq!(line(b"FF ;x\r\n"), Ok(Some((255, 7))));
        assert_eq!(line(b"ffffffffffffffff\r\n"), Ok(Some((u64::MAX, 18))));
        assert_eq!(line(b"1a"), Ok(None));
        assert_eq!(line(b"1a\r"), Ok(None));
        for bad in [
            &b"\r\n"[..],
            b"1a\n",
            b"1g\r\n",
            b"-1\r\n",
            b" 1\r\n",
            b"10000000000000000\r\n",
            b"1\rx",
            b"1;\x01\r\n",
        ] {
            assert_eq!(line(bad), Err("Bad(400)".into()), "{bad:?}");
        }
    }

    #[test]
    fn transfer_codings_other_than_a_final_chunked_are_refused() {
        let framing = |codings: &[&[u8]], cl, v| match chunked_framing(codings, cl, v) {
            Ok(f) => Ok(f),
            Err(ReadError::Bad(status)) => Err(status),
            Err(ReadError::Closed) => Err(0),
        };
        assert_eq!(framing(&[b"chunked"], false, 1), Ok(Framing::Chunked));
        assert_eq!(framing(&[b"Chunked"], false, 1), Ok(Framing::Chunked));
        assert_eq!(framing(&[b"gzip", b"chunked"], false, 1), Err(501));
        assert_eq!(framing(&[b"chunked", b"gzip"], false, 1), Err(400));
        assert_eq!(framing(&[b"chunked", b"chunked"], false, 1), Err(400));
        assert_eq!(framing(&[b"gzip"], false, 1), Err(400));
        assert_eq!(framing(&[b"chunked"], true, 1), Err(400));
        assert_eq!(framing(&[b"chunked"], false, 0), Err(400));
    }

    /// Sends `raw` from a client and reads one request from it.
    fn read_from(raw: &'static [u8], max_body: usize) -> Result<Request, u16> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(raw).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            c
        });
        let (server, peer) = listener.accept().unwrap();
        let timeout = Some(Duration::from_secs(10));
        let mut reader = Reader::new(&server, peer, timeout, timeout, max_body);
        let r = reader.read_request().map_err(|e| match e {
            ReadError::Bad(status) => status,
            ReadError::Closed => 0,
        });
        drop(client.join().unwrap());
        r
    }

    #[test]
    fn chunked_bodies_are_decoded_and_bounded() {
        let r = read_from(
            b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n1\r\n \r\nb\r\nworld, once\r\n0\r\nX-Sum: 1\r\n\r\n",
            1024,
        )
        .unwrap();
        assert_eq!(r.body(), b"hello world, once");
        let empty = read_from(
            b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            1024,
        );
        assert_eq!(empty.unwrap().body(), b"");
        let big =
            b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n0\r\n\r\n";
        assert_eq!(read_from(big, 8).unwrap().body(), b"12345678");
        assert_eq!(read_from(big, 7).unwrap_err(), 413);
        let no_crlf =
            b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n";
        assert_eq!(read_from(no_crlf, 64).unwrap_err(), 400);
        let cut = b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        assert_eq!(read_from(cut, 64).unwrap_err(), 0);
    }

    #[test]
    fn streams_to_http_1_0_close_the_connection() {
        assert!(Response::new(200).allows_keep_alive(0));
        assert!(!Response::stream(200, Vec::<Vec<u8>>::new()).allows_keep_alive(0));
        assert!(Response::stream(200, Vec::<Vec<u8>>::new()).allows_keep_alive(1));
    }
}
