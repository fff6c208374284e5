//! [`Listener`]: where a [`Server`](super::Server)'s listening socket comes
//! from — bound here, passed in by systemd (socket activation), or handed
//! over by the process this one replaces — and [`Handover`], which passes it
//! on to a new copy of the program for a restart that refuses no connection.
//!
//! # The handover protocol
//!
//! The old process (`O`) and the new one (`N`) speak over a Unix stream
//! socket whose path `O` puts in `N`'s environment as `WINDDOWN_HANDOVER`
//! (with `O`'s pid, which `N` checks is its parent's):
//!
//! 1. `O` binds the Unix socket and spawns `N` (its own executable, its own
//!    arguments, stdin/stdout/stderr inherited).
//! 2. `N` starts up and, when it is ready to serve, calls
//!    [`Listener::from_handover`]: it connects and sends one byte.
//! 3. `O` requests its runtime's stop and closes its listener at once (no
//!    pre-close delay: the socket stays open in the kernel, so the load
//!    balancer sees no change), taking every connection the kernel has
//!    already completed. Connections that arrive from here on wait in the
//!    listen backlog.
//! 4. Once `O`'s acceptor has let go of the listener, `O` sends its own
//!    duplicate of the listening socket to `N` (`SCM_RIGHTS`), and drains.
//! 5. `N` receives it and serves, starting with what waited in the backlog.
//!
//! Only one process ever accepts at a time, so `O`'s wake-up of its own
//! blocked `accept` (a connection to itself, see the server's docs) cannot
//! land in `N`. If `N` exits before step 2, `O` learns it from a thread
//! waiting for `N`, [`Handover::upgrade`] returns an error and `O` goes on
//! serving as if nothing had happened.

use std::ffi::OsString;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
#[cfg(unix)]
use std::time::Duration;

#[cfg(unix)]
use crossbeam_channel::Receiver;
use crossbeam_channel::Sender;
use socket2::Socket;

#[cfg(unix)]
use crate::shared::Handle;
#[cfg(unix)]
use crate::token::StopSource;
use crate::token::Token;

/// The environment variable through which a handover's old process tells
/// the new one where to fetch the listening socket: `<pid>:<path>`, the old
/// process's id and the path of a Unix socket.
pub const HANDOVER_ENV: &str = "WINDDOWN_HANDOVER";

/// How long the new process waits for the old one to hand the socket over
/// once it asked for it (the old one's acceptor lets go within milliseconds).
#[cfg(unix)]
const TAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a [`Listener`]'s socket came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerSource {
    /// Bound by this process ([`Listener::bind`]).
    Bound,
    /// Passed in by systemd socket activation ([`Listener::from_systemd`]).
    Systemd,
    /// Handed over by the process this one replaces
    /// ([`Listener::from_handover`]).
    Handover,
}

/// A listening TCP socket for a [`Server`](super::Server), given to
/// [`ServerBuilder::listener`](super::ServerBuilder::listener).
///
/// [`Listener::from_env_or_bind`] is what a service usually wants: the
/// socket of a handover if this process was started by one, else systemd's,
/// else a new one bound to the address.
///
/// # Examples
///
/// ```no_run
/// use winddown::{Listener, Response, Runtime, Server};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // First, before any thread is started (see `from_systemd`).
/// let listener = Listener::from_env_or_bind("0.0.0.0:8080")?;
/// let mut rt = Runtime::new()?;
/// eprintln!("serving {} ({:?})", listener.local_addr(), listener.source());
/// let server = Server::builder().health_path("/health").listener(listener);
/// server.start(&mut rt, |_req, _token| Ok(Response::text(200, "hi\n")))?;
/// rt.run();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Listener {
    pub(super) socket: Socket,
    pub(super) local: SocketAddr,
    source: ListenerSource,
    pub(super) link: Link,
}

/// What ties a server's listener to its [`Handover`], if it has one.
#[derive(Debug, Default)]
pub(super) struct Link {
    /// Stopped by the handover: the server closes its listener without the
    /// pre-close delay.
    pub(super) close_now: Option<Token>,
    /// Dropped by the server's acceptor right after it dropped the listener;
    /// the handover waits for the disconnect.
    pub(super) closed: Option<Sender<()>>,
}

impl Listener {
    fn new(socket: Socket, source: ListenerSource) -> io::Result<Listener> {
        // Systemd passes blocking sockets unless told otherwise; the server
        // blocks in `accept`.
        socket.set_nonblocking(false)?;
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
        Ok(Listener {
            socket,
            local,
            source,
            link: Link::default(),
        })
    }

    /// Binds a new listening socket, as [`ServerBuilder::bind`] does.
    ///
    /// # Errors
    ///
    /// The error of the last address tried, or `InvalidInput` if `addr`
    /// resolved to none.
    ///
    /// [`ServerBuilder::bind`]: super::ServerBuilder::bind
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Listener> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match super::listen(addr) {
                Ok((socket, _)) => return Listener::new(socket, ListenerSource::Bound),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
        }))
    }

    /// Takes the first socket systemd passed to this process (socket
    /// activation: `LISTEN_FDS`, and `LISTEN_PID` naming this process, or
    /// unset), through the [`listenfd`](https://docs.rs/listenfd) crate.
    /// Returns `Ok(None)` if there is none. `listenfd` removes the
    /// variables, so a second call, and a child process, find none; as
    /// changing the environment races with threads that read it (C code
    /// calling `getenv`), call this first thing in `main`, before
    /// [`Runtime::build`](crate::Builder::build) or anything else starts a
    /// thread.
    ///
    /// Always `Ok(None)` outside Unix.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the first descriptor is not a TCP stream socket.
    pub fn from_systemd() -> io::Result<Option<Listener>> {
        #[cfg(unix)]
        {
            use rustix::net::{AddressFamily, SocketType};

            let mut fds = listenfd::ListenFd::from_env();
            let stream = SocketType::STREAM.as_raw() as std::ffi::c_int;
            let mut last = None;
            for family in [AddressFamily::INET, AddressFamily::INET6] {
                let family = std::ffi::c_int::from(family.as_raw());
                match fds.take_custom::<Socket>(0, family, stream, "TCP stream socket") {
                    Ok(Some(socket)) => {
                        return Listener::new(socket, ListenerSource::Systemd).map(Some)
                    }
                    Ok(None) => return Ok(None),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("no socket")))
        }
        #[cfg(not(unix))]
        Ok(None)
    }

    /// Takes the listening socket from the process this one replaces, if
    /// this process was started by a [`Handover`]: `WINDDOWN_HANDOVER`
    /// names our parent process and the Unix socket to fetch it from, and
    /// this is the first call in the process. Returns `Ok(None)` otherwise
    /// (the variable is left in place, as changing the environment is
    /// unsound in a threaded program; our own children see a parent that is
    /// not theirs, and ignore it).
    ///
    /// Call it when the program is ready to serve, after its slow start-up
    /// (opening databases, warming caches): the old process goes on serving
    /// until this call asks for the socket. The call then blocks until the
    /// old process has stopped accepting — a few milliseconds; connections
    /// arriving meanwhile wait in the listen backlog and are served by this
    /// process.
    ///
    /// Always `Ok(None)` outside Unix.
    ///
    /// # Errors
    ///
    /// The old process ended, or did not hand the socket over within 30 s,
    /// or sent something else than a TCP listener; or the connection to it
    /// failed.
    pub fn from_handover() -> io::Result<Option<Listener>> {
        use std::sync::atomic::{AtomicBool, Ordering};
        /// Set by the first call: one process takes one handover.
        static TAKEN: AtomicBool = AtomicBool::new(false);

        let Some(value) = std::env::var_os(HANDOVER_ENV) else {
            return Ok(None);
        };
        let value = value.to_string_lossy().into_owned();
        let Some((pid, path)) = value.split_once(':') else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{HANDOVER_ENV}={value:?}: not <pid>:<path>"),
            ));
        };
        if parent_pid() != pid.parse().ok() || TAKEN.swap(true, Ordering::Relaxed) {
            return Ok(None);
        }
        take_handed_over(path.into()).map(Some)
    }

    /// Returns the socket of a handover ([`from_handover`]), else systemd's
    /// ([`from_systemd`]), else a new one bound to `addr` ([`bind`]).
    ///
    /// # Errors
    ///
    /// Those of the source tried: a failed handover or a wrong systemd
    /// socket is an error, not a reason to bind.
    ///
    /// [`from_handover`]: Listener::from_handover
    /// [`from_systemd`]: Listener::from_systemd
    /// [`bind`]: Listener::bind
    pub fn from_env_or_bind(addr: impl ToSocketAddrs) -> io::Result<Listener> {
        if let Some(listener) = Listener::from_handover()? {
            return Ok(listener);
        }
        if let Some(listener) = Listener::from_systemd()? {
            return Ok(listener);
        }
        Listener::bind(addr)
    }

    /// Returns the address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Returns where the socket came from.
    pub fn source(&self) -> ListenerSource {
        self.source
    }

    /// Prepares this listener to be handed over to a new process later:
    /// returns the [`Handover`] that does it, for the runtime `handle` will
    /// stop. One handover per listener; a second call replaces the first
    /// one's link (the first [`Handover`] then waits for nothing).
    ///
    /// Unix only.
    ///
    /// # Errors
    ///
    /// Duplicating the socket failed (out of descriptors).
    #[cfg(unix)]
    pub fn handover(&mut self, handle: Handle) -> io::Result<Handover> {
        let socket = self.socket.try_clone()?;
        let close_now = StopSource::new();
        let (closed_tx, closed) = crossbeam_channel::bounded(0);
        self.link = Link {
            close_now: Some(close_now.token()),
            closed: Some(closed_tx),
        };
        Ok(Handover {
            socket,
            close_now,
            closed,
            handle,
            busy: parking_lot::Mutex::new(false),
        })
    }
}

/// Hands a server's listening socket to a new copy of the program, which
/// starts serving, while this one stops accepting and drains: a restart (a
/// new binary, a new configuration) that refuses no connection. Made by
/// [`Listener::handover`]; triggered by [`upgrade`](Handover::upgrade) or by
/// a signal ([`on_signal`](Handover::on_signal)). The new process takes the
/// socket with [`Listener::from_handover`] (or
/// [`Listener::from_env_or_bind`]).
///
/// The steps: this process spawns the new one with `WINDDOWN_HANDOVER` in
/// its environment, naming a Unix socket; the new one starts up, connects
/// and asks for the listener; this one then stops its runtime, closes its
/// listener at once (no pre-close delay: the socket stays open, so a load
/// balancer sees no change) and, once its acceptor has let go, sends its
/// duplicate of the socket (`SCM_RIGHTS`) and drains. Only one process
/// accepts at any time; connections arriving in between wait in the listen
/// backlog. If the new process exits before asking, the upgrade fails and
/// this one goes on serving.
///
/// Unix only. Under systemd, prefer socket activation: systemd then holds
/// the socket across a plain restart and no handover is needed.
///
/// # Examples
///
/// ```no_run
/// use winddown::{Listener, Response, Runtime, Server};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut listener = Listener::from_env_or_bind("127.0.0.1:8080")?;
/// let mut rt = Runtime::new()?;
/// let handover = listener.handover(rt.handle())?;
/// Server::builder()
///     .listener(listener)
///     .start(&mut rt, |_req, _token| Ok(Response::text(200, "hi\n")))?;
/// // `kill -USR2 <pid>` starts a new copy, hands it the socket and drains.
/// handover.on_signal(&mut rt, 12 /* SIGUSR2 on Linux */)?;
/// let report = rt.run();
/// std::process::exit(report.exit_code);
/// # }
/// ```
#[cfg(unix)]
#[derive(Debug)]
pub struct Handover {
    /// A duplicate of the server's socket: the same socket in the kernel.
    socket: Socket,
    close_now: StopSource,
    closed: Receiver<()>,
    handle: Handle,
    /// Whether the socket was handed over; the lock makes upgrades one at
    /// a time.
    busy: parking_lot::Mutex<bool>,
}

#[cfg(unix)]
impl Handover {
    /// Starts a new copy of this program (the same executable and
    /// arguments, `WINDDOWN_HANDOVER` added to the environment), waits until
    /// it asks for the socket, then stops this process's runtime (reason
    /// `requested: handover to pid N`), closes the server's listener at once
    /// and, once its acceptor has let go of it, sends the socket to the new
    /// process. Returns the new process's id; this process goes on
    /// draining.
    ///
    /// Blocks for as long as the new process takes to start up: until it
    /// asks for the socket or exits. A new process that hangs in its
    /// start-up holds the call (and, with [`on_signal`](Handover::on_signal),
    /// the `handover` thread, which the runtime then names as stuck at a
    /// later stop's deadline). The rendezvous socket lives in a directory
    /// only this user can enter, removed when the call returns.
    ///
    /// # Errors
    ///
    /// The socket was already handed over, or another upgrade is under way
    /// (`AlreadyExists`); the new process could not be started, or exited
    /// before asking for the socket (`Other`, with its exit status). The
    /// runtime is then not stopped and the server goes on serving.
    pub fn upgrade(&self) -> io::Result<u32> {
        self.upgrade_with(
            std::process::Command::new(std::env::current_exe()?)
                .args(std::env::args_os().skip(1).collect::<Vec<OsString>>()),
        )
    }

    /// Like [`upgrade`](Handover::upgrade), with the command to start
    /// instead of this program's own (e.g. to pass other arguments).
    /// `WINDDOWN_HANDOVER` is added to its environment.
    ///
    /// # Errors
    ///
    /// As [`upgrade`](Handover::upgrade).
    pub fn upgrade_with(&self, command: &mut std::process::Command) -> io::Result<u32> {
        use std::io::{IoSlice, Read};
        use std::os::fd::AsFd;
        use std::os::unix::net::{UnixListener, UnixStream};

        use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

        let mut done = self
            .busy
            .try_lock()
            .ok_or_else(|| io::Error::new(io::ErrorKind::AlreadyExists, "upgrade under way"))?;
        if *done {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the socket was already handed over",
            ));
        }
        let dir = tempdir()?;
        let path = dir.0.join("handover.sock");
        let rendezvous = UnixListener::bind(&path)?;
        let mut value = OsString::from(format!("{}:", std::process::id()));
        value.push(&path);
        let mut child = command.env(HANDOVER_ENV, value).spawn()?;
        let pid = child.id();
        // If the child dies before it connects, wake our `accept` with a
        // connection that sends nothing.
        let (status_tx, status_rx) = crossbeam_channel::bounded(1);
        let wake = path.clone();
        std::thread::Builder::new()
            .name("handover-wait".into())
            .spawn(move || {
                let status = child.wait();
                let _ = status_tx.send(status);
                let _ = UnixStream::connect(&wake);
            })?;
        let mut peer = loop {
            let (mut stream, _) = rendezvous.accept()?;
            stream.set_read_timeout(Some(TAKE_TIMEOUT))?;
            let mut hello = [0u8; 1];
            match stream.read(&mut hello) {
                Ok(1) => break stream,
                _ if status_rx.is_empty() => {} // not our child: ignore it
                _ => {
                    let status = status_rx.recv().ok().and_then(Result::ok);
                    let status = status.map_or_else(|| "unknown".into(), |s| s.to_string());
                    event!(warn, pid, %status, "handover: the new process exited first");
                    return Err(io::Error::other(format!(
                        "the new process (pid {pid}) exited before taking the socket: {status}"
                    )));
                }
            }
        };
        drop(rendezvous);
        event!(
            info,
            pid,
            "handover: closing the listener for the new process"
        );
        self.handle.request(format!("handover to pid {pid}"));
        self.close_now
            .stop(crate::reason::StopReason::Requested("handover".into()));
        // The acceptor drops its sender right after the listener; the hard
        // deadline bounds the wait (a server that never started).
        let hard = self.handle.token();
        crossbeam_channel::select! {
            recv(self.closed) -> _ => {}
            recv(hard.hard_receiver()) -> _ => {}
        }
        let fds = [self.socket.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("control buffer too small"));
        }
        sendmsg(
            peer.as_fd(),
            &[IoSlice::new(b"L")],
            &mut control,
            SendFlags::empty(),
        )?;
        *done = true;
        let _ = std::io::Write::flush(&mut peer);
        event!(info, pid, "handover: the socket is the new process's");
        Ok(pid)
    }

    /// Calls [`upgrade`](Handover::upgrade) whenever `signal` arrives
    /// (`SIGUSR2` is the usual choice; `SIGHUP` if nothing else uses it),
    /// from a thread `handover` of `rt`, until the stop begins. A failed
    /// upgrade is reported as an event and leaves the server serving.
    ///
    /// # Errors
    ///
    /// The signal cannot be caught (`SIGKILL`, `SIGSTOP`, …), or the thread
    /// could not be spawned (the name `handover` is taken).
    pub fn on_signal(self, rt: &mut crate::runtime::Runtime, signal: i32) -> io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([signal])?;
        let closer = signals.handle();
        rt.spawn("handover", move |_token| {
            for _ in signals.forever() {
                match self.upgrade() {
                    Ok(_pid) => event!(info, pid = _pid, "handover: done"),
                    Err(_e) => event!(warn, error = %_e, "handover failed; still serving"),
                }
            }
            Ok(())
        })
        .map_err(io::Error::other)?;
        rt.on_stop_accepting("handover-signal", Duration::from_secs(1), move || {
            closer.close();
            Ok(())
        });
        Ok(())
    }
}

#[cfg(unix)]
fn parent_pid() -> Option<u32> {
    Some(std::os::unix::process::parent_id())
}

#[cfg(not(unix))]
fn parent_pid() -> Option<u32> {
    None
}

/// A private directory for the rendezvous socket, removed on drop.
#[cfg(unix)]
struct TempDir(std::path::PathBuf);

#[cfg(unix)]
fn tempdir() -> io::Result<TempDir> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("winddown-{}-{n}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&path)?;
    Ok(TempDir(path))
}

#[cfg(unix)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn take_handed_over(path: OsString) -> io::Result<Listener> {
    use std::io::{IoSliceMut, Write};
    use std::os::unix::net::UnixStream;

    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

    let mut stream = UnixStream::connect(&path)?;
    stream.set_read_timeout(Some(TAKE_TIMEOUT))?;
    stream.write_all(b"R")?;
    let mut byte = [0u8; 1];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut socket = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                socket.get_or_insert(Socket::from(fd)); // extra ones close here
            }
        }
    }
    match socket {
        Some(socket) if msg.bytes == 1 => Listener::new(socket, ListenerSource::Handover),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the old process ended without handing the socket over",
        )),
    }
}

#[cfg(not(unix))]
fn take_handed_over(_path: OsString) -> io::Result<Listener> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "a handover needs Unix",
    ))
}
