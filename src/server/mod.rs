//! [`Server`]: a blocking HTTP/1.1 server that runs in a [`Runtime`] and
//! stops the way Go's `http.Server.Shutdown` does, in threads.
//!
//! Files: `mod.rs` — the builder, the three kinds of thread and the report;
//! `http.rs` — [`Request`], [`Response`], reading and writing HTTP;
//! `conns.rs` — the registry of open connections and their accounting;
//! `listen.rs` — [`Listener`] (socket activation, handover) and [`Handover`].
//!
//! # Threads
//!
//! All spawned with [`Runtime::spawn`], so they are joined in the drain:
//!
//! * `<name>-accept` blocks in `accept` and hands each connection to the
//!   handler threads over an unbounded crossbeam channel;
//! * `<name>-0` … `<name>-{W-1}` each serve one connection at a time, from
//!   its first request to its close (keep-alive included). A connection
//!   that finds no handler thread free reclaims the longest-idle keep-alive
//!   connection at once (see `conns.rs`, invariant (R)), so idle
//!   keep-alive clients never starve new ones;
//! * `<name>-stop` waits for the stop and drives it (below).
//!
//! The pool API is not used for the handler threads: a pool's queue closes at
//! the trigger, and the server must go on accepting connections during the
//! pre-close delay.
//!
//! # The stop
//!
//! 1. **Trigger.** The runtime's token stops. From here every response
//!    carries `Connection: close` and the health path answers 503. The stop
//!    thread waits the pre-close delay (cut short by the hard token), while
//!    the server goes on accepting and serving.
//! 2. **Close.** The stop thread flips `closing` and wakes the acceptor's
//!    blocked `accept` by connecting to the listener itself (if that fails,
//!    by shutting the listening socket down). The acceptor takes every
//!    connection the kernel had already completed (non-blocking), so they
//!    get a FIN rather than the reset a closed listener would send them,
//!    then drops the listener: new connects are refused from here. Then it
//!    shuts down the read side of every idle keep-alive connection (see
//!    `conns::READ_SIDE`): a handler thread blocked reading wakes, answers a
//!    request that had fully arrived, and otherwise closes with a FIN.
//!    Connections that have not sent a whole request yet (fresh ones, and
//!    ones half-way through a request) get the close window
//!    ([`ServerBuilder::close_window`]) to send it; at its end the stop
//!    thread shuts their read side down the same way.
//!    Nothing here polls: the waits are a blocked `accept` woken by a
//!    connection, a blocked `read` woken by `shutdown`, and channel waits.
//! 3. **Drain.** Busy connections finish their request and close after the
//!    response (`Connection: close`). Each handler thread closes with
//!    `shutdown(Write)` and then reads what the client still sends until its
//!    end of stream (at most `LINGER`), so that closing never discards
//!    unread data, which would make the kernel send a reset.
//! 4. **Deadline.** If connections are still open when the hard token
//!    fires, the stop thread shuts them all down; busy ones count as forced,
//!    and so does a connection whose request is read after that (its
//!    handler is not run).
//!    A handler that ignores the token is then the runtime's to name as
//!    stuck.
//!
//! The stop thread exits as soon as every connection has ended, so an idle
//! server does not hold the drain up.

mod conns;
mod http;
mod listen;

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::Mutex;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use self::conns::{Begin, Conns, End};
use self::http::{ReadError, Reader, Shape, WriteError};
pub use self::http::{Request, Response};
#[cfg(unix)]
pub use self::listen::Handover;
use self::listen::Link;
pub use self::listen::{Listener, ListenerSource, HANDOVER_ENV};
use crate::error::BuildError;
use crate::join::{Hold, ThreadView};
use crate::reason::StopReason;
use crate::report::{Report, ServerReport};
use crate::runtime::Runtime;
use crate::thread::catch;
use crate::token::{StopSource, Token};
use crate::unit::Unit;

/// The default number of handler threads.
const DEFAULT_WORKERS: usize = 32;
/// The default keep-alive timeout.
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The default I/O timeout.
const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The default largest request body.
const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// The default close window.
const DEFAULT_CLOSE_WINDOW: Duration = Duration::from_millis(200);
/// The listen backlog.
const BACKLOG: i32 = 1024;
/// How long a closing connection waits for the client's end of stream.
const LINGER: Duration = Duration::from_millis(500);
/// The most bytes a closing connection reads and discards.
const LINGER_BYTES: usize = 256 * 1024;
/// How long the stop thread's wake-up connect may take before it falls back
/// to shutting the listening socket down.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// The first and the longest pause after a failed `accept`.
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

type HandlerFn = dyn Fn(&Request, &Token) -> anyhow::Result<Response> + Send + Sync;

// ===== Builder =====

/// Configures a [`Server`]; made by [`Server::builder`], finished by
/// [`bind`](ServerBuilder::bind).
///
/// # Examples
///
/// A server behind a load balancer: it keeps serving for 5 s after the
/// stop while `/health` answers 503, and the runtime's grace covers that
/// delay plus the longest request.
///
/// ```no_run
/// use std::time::Duration;
/// use winddown::{Response, Runtime, Server};
///
/// # fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
/// let mut rt = Runtime::builder().grace(Duration::from_secs(35)).build()?;
/// let server = Server::builder()
///     .name("api")                                 // threads api-accept, api-0 …
///     .workers(64)                                 // connections served at once
///     .health_path("/health")                      // 200, then 503 once stopping
///     .pre_close_delay(Duration::from_secs(5))     // for the load balancer
///     .keep_alive(Duration::from_secs(10))
///     .io_timeout(Duration::from_secs(30))
///     .max_body(64 * 1024)                         // larger bodies get 413
///     .bind("0.0.0.0:8080")?;
/// server.start(&mut rt, |req, _token| Ok(Response::text(200, req.path().to_owned())))?;
/// let report = rt.run();
/// eprintln!("{report}");
/// Ok(report.process_exit_code())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a server is made only when `bind` is called"]
pub struct ServerBuilder {
    name: String,
    workers: usize,
    pre_close_delay: Duration,
    health_path: Option<String>,
    keep_alive: Duration,
    io_timeout: Duration,
    max_body: usize,
    close_window: Duration,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            name: "http".to_owned(),
            workers: DEFAULT_WORKERS,
            pre_close_delay: Duration::ZERO,
            health_path: None,
            keep_alive: DEFAULT_KEEP_ALIVE,
            io_timeout: DEFAULT_IO_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            close_window: DEFAULT_CLOSE_WINDOW,
        }
    }
}

impl ServerBuilder {
    /// Names the server in the report and its threads (`<name>-accept`,
    /// `<name>-stop`, `<name>-0` …). Default `"http"`; two servers in one
    /// runtime need two names.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the number of handler threads, which is the number of
    /// connections served at once: each thread serves one connection from
    /// its first request to its close, and further connections wait in a
    /// queue. Default 32. Zero is refused by [`Server::start`].
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Sets how long, from the start of the stop, the server goes on
    /// accepting and serving while the health path answers 503, so that load
    /// balancers take it out of rotation before the listener closes. Default
    /// zero: the listener closes at once.
    ///
    /// The delay counts against the runtime's grace: the hard token cuts it
    /// short, so set the grace to at least the delay plus the longest
    /// request.
    pub fn pre_close_delay(mut self, delay: Duration) -> Self {
        self.pre_close_delay = delay;
        self
    }

    /// Answers `GET` and `HEAD` requests for `path` itself: 200 `ok` while
    /// running, 503 `stopping` from the moment the stop begins. Default: no
    /// health path.
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = Some(path.into());
        self
    }

    /// Sets how long a connection may wait for the next request (or its
    /// first) before it is closed. Default 5 s. Zero means no limit.
    ///
    /// An idle keep-alive connection holds its handler thread while it
    /// waits, but gives it up at once to a new connection that would
    /// otherwise wait for a free handler thread: the connection idle the
    /// longest is closed with a FIN (counted in
    /// [`ConnectionCounts::closed`](crate::ConnectionCounts::closed)), as
    /// HTTP allows for an idle keep-alive connection at any time.
    pub fn keep_alive(mut self, timeout: Duration) -> Self {
        self.keep_alive = timeout;
        self
    }

    /// Sets how long one read of a request under way, or one write of a
    /// response, may block. Default 30 s. Zero means no limit.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// Sets the largest request body accepted; a larger `Content-Length`,
    /// or a chunked body that grows larger, is answered with 413. Default
    /// 1 MiB.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets how long, once the listener has closed, a connection that has
    /// not yet sent a whole request may still send it: a connection accepted
    /// just before the close whose request is a few milliseconds behind,
    /// or a request half-received at the close. Such a request is served
    /// (with `Connection: close`); a connection still without a whole
    /// request when the window ends is closed with a FIN (counted in
    /// [`ConnectionCounts::idle_closed`](crate::ConnectionCounts::idle_closed)).
    /// Idle keep-alive connections are closed at the close itself.
    ///
    /// Default 200 ms. The drain deadline cuts the window short (the
    /// connections still silent are then closed with the others, and the
    /// hard stop has fired: keep the window well below the runtime's grace);
    /// zero closes those connections with the listener. The window holds the
    /// drain up only while such a connection is open: an idle server stops
    /// at once.
    pub fn close_window(mut self, window: Duration) -> Self {
        self.close_window = window;
        self
    }

    /// Binds the listening socket (with `SO_REUSEADDR` on Unix, as std does,
    /// so a restarted server can bind the port at once) to the first of
    /// `addr`'s addresses that works. Port 0 picks a free port; see
    /// [`Server::local_addr`].
    ///
    /// # Errors
    ///
    /// The error of the last address tried, or `InvalidInput` if `addr`
    /// resolved to none.
    pub fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match listen(addr) {
                Ok((socket, local)) => {
                    return Ok(Server {
                        config: self,
                        socket,
                        local,
                        link: Link::default(),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
        }))
    }

    /// Makes the server on a listener that already exists: one passed in by
    /// systemd, handed over by the process this one replaces, or bound
    /// earlier (see [`Listener::from_env_or_bind`]). With a
    /// [`Handover`] prepared on it, the handover closes the listener at
    /// once, without the pre-close delay.
    pub fn listener(self, listener: Listener) -> Server {
        Server {
            config: self,
            socket: listener.socket,
            local: listener.local,
            link: listener.link,
        }
    }
}

fn listen(addr: SocketAddr) -> io::Result<(Socket, SocketAddr)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // What std's `TcpListener::bind` does on Unix; on Windows the option
    // would let another socket steal the port.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no IP address"))?;
    Ok((socket, local))
}

// ===== Server =====

/// A bound HTTP/1.1 server, ready to [`start`](Server::start) in a
/// [`Runtime`].
///
/// The handler is `Fn(&Request, &Token) -> anyhow::Result<Response>`: it runs
/// on a handler thread, may block, and gets the runtime's [`Token`] to cut
/// long work short at the drain deadline
/// ([`Token::is_hard_stopping`]). An `Err` or a panic is answered with 500
/// and counted in the [`ServerReport`]; neither fails the run.
///
/// On stop (see the [crate docs](crate#servers)): the listener closes (after
/// the [pre-close delay](ServerBuilder::pre_close_delay)), requests already
/// read run to completion and are answered with `Connection: close`, idle
/// keep-alive connections are closed with a FIN, connections that have not
/// sent a whole request yet get the [close
/// window](ServerBuilder::close_window) to send it, and what is still busy
/// at the deadline is shut down and counted as forced.
///
/// HTTP/1.1 as served: `Content-Length` and chunked request bodies (up to
/// [`max_body`](ServerBuilder::max_body)), `Expect: 100-continue`,
/// pipelining, keep-alive (an idle keep-alive connection gives its handler
/// thread up to a new connection that would wait, see
/// [`keep_alive`](ServerBuilder::keep_alive)); every response carries a
/// `Date` header unless the handler set one.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use winddown::{Response, Runtime, Server};
///
/// let mut rt = Runtime::builder().signals(false).build()?;
/// let server = Server::builder()
///     .workers(4)
///     .health_path("/health")
///     .bind("127.0.0.1:0")?;
/// let addr = server.local_addr();
/// server.start(&mut rt, |req, _token| match req.path() {
///     "/hello" => Ok(Response::text(200, "hello\n")),
///     _ => Ok(Response::text(404, "not found\n")),
/// })?;
///
/// let handle = rt.handle();
/// let client = std::thread::spawn(move || -> std::io::Result<String> {
///     let mut conn = std::net::TcpStream::connect(addr)?;
///     conn.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
///     let mut response = String::new();
///     conn.read_to_string(&mut response)?;
///     handle.request("done"); // stop the server once served
///     Ok(response)
/// });
/// let report = rt.run();
/// assert!(client.join().unwrap()?.ends_with("\r\n\r\nhello\n"));
/// let server = &report.servers[0];
/// assert_eq!((server.connections.accepted, server.connections.served), (1, 1));
/// assert_eq!(report.exit_code, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server {
    config: ServerBuilder,
    socket: Socket,
    local: SocketAddr,
    link: Link,
}

impl Server {
    /// Returns a [`ServerBuilder`] with the defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Returns the address the listener is bound to (with the port picked,
    /// if port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts serving in `rt`: spawns the acceptor, the handler threads and
    /// the stop thread, and adds the server to the report. Requests are
    /// served from here on, before [`Runtime::run`] is called.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`] (named after the server),
    /// [`BuildError::InvalidName`], [`BuildError::DuplicateName`],
    /// [`BuildError::Spawn`]. Threads already
    /// spawned then exit at once and the listener is closed.
    pub fn start<H>(self, rt: &mut Runtime, handler: H) -> Result<(), BuildError>
    where
        H: Fn(&Request, &Token) -> anyhow::Result<Response> + Send + Sync + 'static,
    {
        let Server {
            config,
            socket,
            local,
            link: Link { close_now, closed },
        } = self;
        if config.workers == 0 {
            return Err(BuildError::ZeroWorkers { pool: config.name });
        }
        if config.name.is_empty() {
            return Err(BuildError::InvalidName(config.name));
        }
        let name = config.name.clone();
        let closing = StopSource::new();
        let shared = Arc::new(Shared {
            addr: local,
            handler: Box::new(handler),
            token: rt.handle().token(),
            closing_token: closing.token(),
            closing,
            conns: Conns::new(config.workers),
            waker: Mutex::new(None),
            config,
        });
        // Undo a partial start: every thread spawned so far exits once the
        // senders below are dropped (workers) or the listener is shut down
        // (acceptor); `?` drops what it owns on the way out.
        let (tx, rx) = crossbeam_channel::unbounded::<Conn>();
        for i in 0..shared.config.workers {
            let (shared, rx) = (shared.clone(), rx.clone());
            rt.registry().spawn_background_of(
                name.clone(),
                format!("{name}-{i}"),
                Hold::Service,
                move |_token| {
                    handler_loop(&shared, &rx);
                    Ok(())
                },
            )?;
        }
        drop(rx);
        let listener = Arc::new(socket);
        let (accepted_all, acceptor_done) = crossbeam_channel::bounded::<()>(0);
        {
            let (shared, listener) = (shared.clone(), listener.clone());
            rt.registry().spawn_background_of(
                name.clone(),
                format!("{name}-accept"),
                Hold::Service,
                move |_token| {
                    accept_loop(&shared, &listener, &tx);
                    drop(listener); // the listener closes here (see "The stop")
                    drop(closed); // a handover may send its copy on now
                    shared.conns.close_idle();
                    drop(tx); // handler threads exit once the queue is empty
                    drop(accepted_all);
                    Ok(())
                },
            )?;
        }
        let stopper = {
            // Weak: the acceptor's handle is the only strong one once `start`
            // returns, so the listener closes exactly when the acceptor drops
            // it, before it closes the idle connections.
            let (shared, listener) = (shared.clone(), Arc::downgrade(&listener));
            rt.registry().spawn_background_of(
                name.clone(),
                format!("{name}-stop"),
                Hold::Service,
                move |_token| {
                    stop_loop(&shared, &listener, &acceptor_done, close_now.as_ref());
                    Ok(())
                },
            )
        };
        if let Err(e) = stopper {
            shared
                .closing
                .stop(StopReason::Requested("server start failed".into()));
            let _ = listener.shutdown(Shutdown::Both);
            return Err(e);
        }
        rt.registry().add_unit(shared);
        Ok(())
    }
}

// ===== Shared state =====

/// What the server's threads and the runtime share.
struct Shared {
    config: ServerBuilder,
    addr: SocketAddr,
    handler: Box<HandlerFn>,
    /// The runtime's token: the stop and the deadline.
    token: Token,
    /// The server's own switch: flipped when the listener is to close (at
    /// the trigger, or after the pre-close delay). Wakes the acceptor's
    /// back-off wait.
    closing: StopSource,
    closing_token: Token,
    conns: Conns,
    /// The local address of the stop thread's wake-up connection, so the
    /// acceptor can drop it uncounted. Written before the connect, read after
    /// the accept that returns it.
    waker: Mutex<Option<SocketAddr>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.config.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn report(&self) -> ServerReport {
        let (connections, accept_errors, handler_errors, handler_panics) = self.conns.counts();
        ServerReport {
            name: self.config.name.clone(),
            addr: self.addr,
            connections,
            accept_errors,
            handler_errors,
            handler_panics,
        }
    }

    /// Wakes the acceptor by connecting to the listener. Returns `false` if
    /// the connect failed (e.g. out of file descriptors, or a full backlog
    /// for `WAKE_TIMEOUT`).
    fn wake_acceptor(&self) -> bool {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let target = SocketAddr::new(ip, self.addr.port());
        let connect = || -> io::Result<Socket> {
            let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
            socket.bind(&SocketAddr::new(ip, 0).into())?;
            *self.waker.lock() = socket.local_addr()?.as_socket();
            socket.connect_timeout(&target.into(), WAKE_TIMEOUT)?;
            Ok(socket)
        };
        connect().is_ok()
    }

    fn is_waker(&self, peer: Option<SocketAddr>) -> bool {
        self.closing.is_stopping() && peer.is_some() && *self.waker.lock() == peer
    }
}

/// The server as a unit: its threads watch the token themselves (the stop
/// thread runs the pre-close delay and closes the listener), so it has no
/// trigger or stop-accepting step of its own, and the pre-close delay never
/// holds up the runtime's stop; it writes its counts into the report.
impl Unit for Shared {
    fn report(&self, _threads: &dyn ThreadView, report: &mut Report) {
        report.servers.push(self.report());
    }
}

/// An accepted connection on its way to a handler thread. The registry holds
/// a second handle on the socket; the descriptor closes when both are gone.
struct Conn {
    id: u64,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
}

// ===== The acceptor =====

/// Accepts until `closing`, then takes what the kernel has already
/// completed. Accept errors neither end the loop nor spin it: each is
/// followed by a pause (doubling from `MIN_BACKOFF` to `MAX_BACKOFF`) that
/// the close cuts short.
fn accept_loop(shared: &Shared, listener: &Socket, tx: &Sender<Conn>) {
    let mut backoff = MIN_BACKOFF;
    while !shared.closing.is_stopping() {
        match listener.accept() {
            Ok((socket, peer)) => {
                backoff = MIN_BACKOFF;
                admit(shared, socket, &peer, tx);
            }
            Err(_) if shared.closing.is_stopping() => break,
            Err(e) if is_transient(&e) => {}
            Err(_e) => {
                event!(
                    warn,
                    addr = %shared.addr,
                    error = %_e,
                    backoff_ms = crate::event::ms(backoff),
                    "accept failed; retrying after a pause"
                );
                shared.conns.count_accept_error();
                shared.closing_token.wait_timeout(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    // Connections the kernel completed before we close would be reset by
    // the close; take them so they are closed cleanly (or served, if their
    // request has arrived).
    if listener.set_nonblocking(true).is_ok() {
        loop {
            match listener.accept() {
                Ok((socket, peer)) => admit(shared, socket, &peer, tx),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // WouldBlock: none left; or out of descriptors
            }
        }
    }
}

/// Errors about one connection, not the listener: try the next at once.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn admit(shared: &Shared, socket: Socket, peer: &SockAddr, tx: &Sender<Conn>) {
    let peer = peer.as_socket();
    if shared.is_waker(peer) {
        return; // the stop thread's wake-up call, not a client
    }
    let stream = TcpStream::from(socket);
    // Accepted sockets do not inherit O_NONBLOCK on Linux, but do elsewhere.
    let _ = stream.set_nonblocking(false);
    let stream = Arc::new(stream);
    let id = shared.conns.register(stream.clone());
    let conn = Conn {
        id,
        stream,
        peer: peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
    };
    if let Err(crossbeam_channel::SendError(conn)) = tx.send(conn) {
        // Every handler thread is gone (only if they all panicked).
        shared.conns.unqueue();
        finish(shared, conn, End::Closed, false);
    }
}

// ===== The stop thread =====

fn stop_loop(
    shared: &Shared,
    listener: &Weak<Socket>,
    acceptor_done: &Receiver<()>,
    close_now: Option<&Token>,
) {
    let token = &shared.token;
    token.wait();
    let delay = shared.config.pre_close_delay;
    match close_now {
        // A handover: the socket stays open in the new process, so no delay.
        Some(now) if !delay.is_zero() => select! {
            recv(now.receiver()) -> _ => {}
            recv(token.hard_receiver()) -> _ => {}
            default(delay) => {}
        },
        _ if !delay.is_zero() => {
            token.wait_hard_timeout(delay);
        }
        _ => {}
    }
    event!(info, addr = %shared.addr, "closing the listener");
    shared
        .closing
        .stop(StopReason::Requested("listener closing".into()));
    // Not in a handover: the socket is the new process's too, and shutting
    // it down would close it there.
    let handing_over = close_now.is_some_and(Token::is_stopping);
    if !shared.wake_acceptor() && !handing_over {
        // Wakes `accept` with an error; connections in the backlog are reset.
        // (Gone already: the acceptor saw `closing` after another accept.)
        if let Some(listener) = listener.upgrade() {
            let _ = listener.shutdown(Shutdown::Both);
        }
    }
    // The acceptor has closed the listener and the idle connections once it
    // is done; from then on no connection is added.
    select! {
        recv(acceptor_done) -> _ => {}
        recv(token.hard_receiver()) -> _ => {}
    }
    // The close window: connections without a whole request yet may still
    // send one until then (the deadline cuts it short, below).
    // (`None` past the end of time: the window then lasts to the deadline.)
    let window_end = Instant::now().checked_add(shared.config.close_window);
    let mut window_open = true;
    loop {
        if token.is_hard_stopping() {
            event!(
                warn,
                addr = %shared.addr,
                "drain deadline: closing the connections still open, busy ones counted forced"
            );
            shared.conns.force_all();
            return;
        }
        if shared.conns.is_empty() {
            return;
        }
        if window_open
            && (window_end.is_some_and(|end| Instant::now() >= end)
                || !shared.conns.has_pending_requests())
        {
            // Also when nobody is left to wait for: a connection cannot
            // become fresh again once the listener is closed.
            shared.conns.end_window();
            window_open = false;
            continue;
        }
        let window_ends = match window_end {
            Some(end) if window_open => crossbeam_channel::at(end),
            _ => crossbeam_channel::never(),
        };
        select! {
            recv(shared.conns.ended()) -> _ => {}
            recv(token.hard_receiver()) -> _ => {}
            recv(window_ends) -> _ => {}
        }
    }
}

// ===== The handler threads =====

fn handler_loop(shared: &Shared, rx: &Receiver<Conn>) {
    while let Ok(conn) = rx.recv() {
        shared.conns.take();
        let end = serve(shared, &conn);
        finish(shared, conn, end, true);
    }
}

/// Closes `conn` (cleanly unless forced) and counts it; `ready`: the calling
/// handler thread goes back to wait for the next connection.
fn finish(shared: &Shared, conn: Conn, end: End, ready: bool) {
    let Conn { id, stream, .. } = conn;
    if end != End::Forced {
        linger(&stream);
    }
    drop(stream);
    shared.conns.finish(id, end, ready); // drops the last handle: the socket closes
}

/// Sends our FIN, then reads and discards what the client still sends until
/// its own FIN (bounded by `LINGER` and `LINGER_BYTES`), so the close finds
/// the receive buffer empty and does not turn into a reset that could
/// destroy the response before the client read it.
fn linger(mut stream: &TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => discarded += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Serves requests on one connection until it is to close; returns how it
/// ended.
fn serve(shared: &Shared, conn: &Conn) -> End {
    let config = &shared.config;
    let stream = &*conn.stream;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(nonzero(config.io_timeout));
    let mut reader = Reader::new(
        stream,
        conn.peer,
        nonzero(config.keep_alive),
        nonzero(config.io_timeout),
        config.max_body,
    );
    loop {
        // Idle (or fresh) until the first bytes of a request arrive.
        if let Err(ReadError::Closed) = reader.wait_for_request() {
            return End::Idle;
        }
        shared.conns.reading(conn.id);
        let (shape, response, wants_keep_alive) = match reader.read_request() {
            Ok(request) => {
                let Begin::Serve { close } = shared.conns.begin(conn.id) else {
                    return End::Forced; // read after the deadline shut it down
                };
                let response = respond(shared, &request);
                let keep = !close
                    && request.wants_keep_alive()
                    && response.allows_keep_alive(request.version());
                (Shape::of(&request), response, keep)
            }
            Err(ReadError::Closed) => return End::Idle,
            Err(ReadError::Bad(status)) => {
                // Answer what we cannot take, then close: the rest of the
                // stream cannot be trusted to start a request.
                if shared.conns.begin(conn.id) == Begin::Forced {
                    return End::Forced;
                }
                let shape = Shape {
                    head_only: false,
                    version: 1,
                };
                let reason = http::reason(status);
                (shape, Response::text(status, format!("{reason}\n")), false)
            }
        };
        // Decided after the handler ran: a stop that began meanwhile closes
        // the connection after this response.
        let stopping = shared.token.is_stopping();
        let keep_alive = wants_keep_alive && !stopping;
        let written = http::write_response(stream, shape, response, keep_alive, &shared.token);
        let open =
            shared
                .conns
                .end_request(conn.id, keep_alive, written.is_ok(), reader.has_buffered());
        match written {
            Ok(()) if open => {}
            // A keep-alive response, but the listener closed meanwhile: an
            // idle connection, closed by the stop.
            Ok(()) if keep_alive => return End::Idle,
            Ok(()) if stopping => return End::Drained,
            Ok(()) => return End::Closed,
            Err(WriteError::HardStop) => return End::Forced,
            Err(WriteError::Io) => return End::Closed,
        }
    }
}

/// Answers the health path, or calls the handler (an `Err` or a panic
/// becomes a 500).
fn respond(shared: &Shared, request: &Request) -> Response {
    let health = shared.config.health_path.as_deref();
    if health == Some(request.path()) && matches!(request.method(), "GET" | "HEAD") {
        return if shared.token.is_stopping() {
            Response::text(503, "stopping\n")
        } else {
            Response::text(200, "ok\n")
        };
    }
    match catch(|| (shared.handler)(request, &shared.token)) {
        Ok(Ok(response)) => response,
        Ok(Err(_e)) => {
            event!(
                warn,
                addr = %shared.addr,
                path = request.path(),
                error = %format!("{_e:#}"),
                "handler failed: answered 500"
            );
            shared.conns.count_handler_error(false);
            Response::text(500, "internal server error\n")
        }
        Err(_panic) => {
            event!(
                error,
                addr = %shared.addr,
                path = request.path(),
                panic = %_panic,
                "handler panicked: answered 500"
            );
            shared.conns.count_handler_error(true);
            Response::text(500, "internal server error\n")
        }
    }
}

/// Zero means "no timeout" (std refuses a zero timeout).
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}
