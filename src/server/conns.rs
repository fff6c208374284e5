//! The registry of open connections: what the stop needs to reach them
//! (a shared handle on each socket, to shut it down from another thread) and
//! the accounting of how each one ended.
//!
//! # States
//!
//! | state     | meaning                                          | at the close of the listener | at the deadline      |
//! |-----------|--------------------------------------------------|------------------------------|----------------------|
//! | `Idle`    | waiting for, or reading, a request (or queued)   | read side shut down          | shut down, not forced |
//! | `Busy`    | a full request was read; its response is pending | left alone                   | shut down, **forced** |
//! | `Closing` | the last response is out; FIN sent or about to be | left alone                   | shut down, not forced |
//!
//! # Accounting
//!
//! Every accepted connection is counted exactly once when it ends, by
//! [`Conns::finish`] (its handler thread) or, if it is still open when the
//! report is made, by [`Conns::counts`]; both run under the one lock that
//! also guards `accepted`, so every snapshot satisfies
//! `accepted = closed + idle_closed + drained + forced + open`, and the
//! report's (which counts the open ones) `accepted = closed + idle_closed +
//! drained + forced`.
//!
//! # Locking
//!
//! One `parking_lot::Mutex`; nothing blocks under it: the only system calls
//! made while it is held are `shutdown(2)`s, which do not wait.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::report::ConnectionCounts;

/// What a handler thread says about how a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// It ended while waiting for or reading a request: end of stream,
    /// timeout, or the read side shut down by the stop.
    Idle,
    /// Its last response was written in full, with `Connection: close`,
    /// after the stop had begun.
    Drained,
    /// Anything else: the client asked to close, an I/O error, a bad request
    /// before the stop.
    Closed,
    /// The drain deadline cut a streaming response.
    Forced,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Busy,
    Closing,
}

#[derive(Debug)]
struct Entry {
    stream: Arc<TcpStream>,
    state: State,
    /// The stop shut its read side down while it was idle.
    read_shut: bool,
    /// The deadline passed while it was busy.
    forced: bool,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// Set once the listener is closed: from then on a connection that goes
    /// idle is closed.
    closing: bool,
    counts: ConnectionCounts,
    accept_errors: u64,
    handler_errors: u64,
    handler_panics: u64,
}

/// The open connections of one server, and its counters.
#[derive(Debug)]
pub(super) struct Conns {
    inner: Mutex<Inner>,
    /// One-slot wake-up for the stop thread: a connection ended. `try_send`
    /// never blocks; a full slot already means "look again", so no wake-up
    /// is lost and nothing accumulates while nobody listens.
    done_tx: Sender<()>,
    done_rx: Receiver<()>,
}

impl Conns {
    pub(super) fn new() -> Conns {
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        Conns {
            inner: Mutex::default(),
            done_tx,
            done_rx,
        }
    }

    /// Counts a newly accepted connection and returns its id.
    pub(super) fn register(&self, stream: Arc<TcpStream>) -> u64 {
        let mut inner = self.inner.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.counts.accepted += 1;
        inner.open.insert(
            id,
            Entry {
                stream,
                state: State::Idle,
                read_shut: false,
                forced: false,
            },
        );
        id
    }

    /// A full request was read on `id`: the stop will let it finish.
    pub(super) fn begin(&self, id: u64) {
        if let Some(e) = self.inner.lock().open.get_mut(&id) {
            e.state = State::Busy;
        }
    }

    /// The response on `id` is done (`complete`: written in full). Returns
    /// whether the connection may wait for another request: only if
    /// `keep_alive` and the listener is not closed yet.
    pub(super) fn end_request(&self, id: u64, keep_alive: bool, complete: bool) -> bool {
        let mut inner = self.inner.lock();
        if complete {
            inner.counts.served += 1;
        }
        let open = keep_alive && !inner.closing;
        if let Some(e) = inner.open.get_mut(&id) {
            e.state = if open { State::Idle } else { State::Closing };
        }
        open
    }

    /// Closes every idle connection's read side, which wakes its handler
    /// thread (blocked in `read`) with an end of stream once it has read
    /// what was already received; and makes connections that go idle later
    /// close too. Called once the listener is closed.
    pub(super) fn close_idle(&self) {
        let mut inner = self.inner.lock();
        inner.closing = true;
        for e in inner.open.values_mut().filter(|e| e.state == State::Idle) {
            e.read_shut = true;
            let _ = e.stream.shutdown(READ_SIDE);
        }
    }

    /// Shuts every open connection down both ways; the busy ones count as
    /// forced. Called at the drain deadline.
    pub(super) fn force_all(&self) {
        let mut inner = self.inner.lock();
        for e in inner.open.values_mut() {
            e.forced |= e.state == State::Busy;
            let _ = e.stream.shutdown(Shutdown::Both);
        }
    }

    /// Forgets `id` (dropping the registry's handle on its socket) and counts
    /// how it ended.
    pub(super) fn finish(&self, id: u64, end: End) {
        let mut inner = self.inner.lock();
        let Some(e) = inner.open.remove(&id) else {
            return;
        };
        let closing = inner.closing;
        let c = &mut inner.counts;
        match end {
            _ if e.forced => c.forced += 1,
            End::Forced => c.forced += 1,
            End::Drained => c.drained += 1,
            End::Idle if e.read_shut || closing => c.idle_closed += 1,
            End::Idle | End::Closed => c.closed += 1,
        }
        drop(inner);
        let _ = self.done_tx.try_send(());
    }

    /// Returns `true` if no connection is open.
    pub(super) fn is_empty(&self) -> bool {
        self.inner.lock().open.is_empty()
    }

    /// Becomes ready after a connection ended (see `done_tx`).
    pub(super) fn ended(&self) -> &Receiver<()> {
        &self.done_rx
    }

    pub(super) fn count_accept_error(&self) {
        self.inner.lock().accept_errors += 1;
    }

    pub(super) fn count_handler_error(&self, panicked: bool) {
        let mut inner = self.inner.lock();
        if panicked {
            inner.handler_panics += 1;
        } else {
            inner.handler_errors += 1;
        }
    }

    /// Returns the counts, with the connections still open counted as they
    /// would end now (busy or forced: forced; otherwise: closed by the stop),
    /// and the accept, handler-error and handler-panic counts.
    pub(super) fn counts(&self) -> (ConnectionCounts, u64, u64, u64) {
        let inner = self.inner.lock();
        let mut c = inner.counts;
        for e in inner.open.values() {
            if e.forced || e.state == State::Busy {
                c.forced += 1;
            } else {
                c.idle_closed += 1;
            }
        }
        (
            c,
            inner.accept_errors,
            inner.handler_errors,
            inner.handler_panics,
        )
    }
}

/// The side the stop shuts down on an idle connection. On Unix, shutting
/// the read side wakes a thread blocked in `read` (which then returns what
/// was already received, then end of stream) and sends nothing, so the
/// handler thread can still answer a request that had fully arrived, and
/// sends the FIN itself. Elsewhere a blocked read is only reliably woken by
/// shutting both sides.
#[cfg(unix)]
const READ_SIDE: Shutdown = Shutdown::Read;
#[cfg(not(unix))]
const READ_SIDE: Shutdown = Shutdown::Both;
