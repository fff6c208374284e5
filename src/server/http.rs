//! HTTP/1.1 on one connection: [`Request`] and [`Response`], reading a
//! request with httparse (head) and `Content-Length` (body), and writing a
//! response with a fixed length or chunked.
//!
//! Nothing here knows about the stop, except that a streaming response checks
//! the hard token between chunks and gives up once it has fired.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::token::Token;

/// The most headers a request may carry; more is answered with 431.
const MAX_HEADERS: usize = 64;
/// The most bytes a request head (request line and headers) may take; more
/// is answered with 431.
pub(super) const MAX_HEAD: usize = 16 * 1024;
/// How much a read asks for at once.
const READ_CHUNK: usize = 8 * 1024;

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

    /// Returns the body (empty without `Content-Length`).
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
/// itself; headers of those names set here are left out.
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

    /// Reads the next request: its head (parsed by httparse) and its
    /// `Content-Length` body. Blocks until it is complete, the stream ends,
    /// or a timeout passes.
    pub(super) fn read_request(&mut self) -> Result<Request, ReadError> {
        let (mut request, head_len, body_len, expect_continue) = loop {
            if !self.buf.is_empty() {
                if let Some(parsed) = self.parse_head()? {
                    break parsed;
                }
                if self.buf.len() >= MAX_HEAD {
                    return Err(ReadError::Bad(431));
                }
            }
            if matches!(self.fill(), Ok(0) | Err(_)) {
                return Err(ReadError::Closed);
            }
        };
        let end = head_len + body_len;
        if self.buf.len() < end && expect_continue && request.version >= 1 {
            // The client waits for this before it sends the body.
            let _ = self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        while self.buf.len() < end {
            if matches!(self.fill(), Ok(0) | Err(_)) {
                return Err(ReadError::Closed);
            }
        }
        request.body = self.buf[head_len..end].to_vec();
        self.buf.drain(..end);
        Ok(request)
    }

    /// Parses the head in the buffer. `Ok(None)`: not complete yet.
    fn parse_head(&self) -> Result<Option<(Request, usize, usize, bool)>, ReadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ReadError::Bad(431)),
            Err(_) => return Err(ReadError::Bad(400)),
        };
        let mut content_length: Option<u64> = None;
        let mut expect_continue = false;
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked request bodies are not supported.
                return Err(ReadError::Bad(501));
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
        let body_len = match content_length {
            None => 0,
            Some(n) if n > self.max_body as u64 => return Err(ReadError::Bad(413)),
            Some(n) => n as usize, // <= max_body, a usize
        };
        let request = Request {
            method: parsed.method.unwrap_or_default().to_owned(),
            target: parsed.path.unwrap_or_default().to_owned(),
            version: parsed.version.unwrap_or(1),
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            body: Vec::new(),
            peer: self.peer,
        };
        Ok(Some((request, head_len, body_len, expect_continue)))
    }
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
    for (name, value) in &headers {
        let reserved = ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r));
        if !reserved {
            let _ = write!(out, "{name}: {value}\r\n");
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

    #[test]
    fn streams_to_http_1_0_close_the_connection() {
        assert!(Response::new(200).allows_keep_alive(0));
        assert!(!Response::stream(200, Vec::<Vec<u8>>::new()).allows_keep_alive(0));
        assert!(Response::stream(200, Vec::<Vec<u8>>::new()).allows_keep_alive(1));
    }
}
