//! The registry of open connections: what the stop needs to reach them
//! (a shared handle on each socket, to shut it down from another thread),
//! the bookkeeping that lets a waiting connection reclaim an idle keep-alive
//! one, and the accounting of how each one ended.
//!
//! # States
//!
//! | state     | meaning                                                    | a connection waits, no handler free | at the close of the listener | at the end of the close window | at the deadline       |
//! |-----------|------------------------------------------------------------|-------------------------------------|------------------------------|--------------------------------|-----------------------|
//! | `Fresh`   | accepted (queued, or its handler waits for the first byte) | left alone                          | left alone                   | read side shut                 | shut, not forced      |
//! | `Reading` | part of a request has arrived                              | left alone                          | left alone                   | read side shut                 | shut, not forced      |
//! | `Idle`    | served a request, waiting for the next; nothing received   | reclaimed, oldest first: read side shut | read side shut           | —                              | shut, not forced      |
//! | `Busy`    | a full request was read; its response is pending           | left alone                          | left alone                   | left alone                     | shut, **forced**      |
//! | `Closing` | the last response is out; FIN sent or about to be          | left alone                          | left alone                   | left alone                     | shut, not forced      |
//!
//! Moves: `Fresh`/`Idle` → `Reading` ([`Conns::reading`]) → `Busy`
//! ([`Conns::begin`]) → `Idle` or `Closing` ([`Conns::end_request`]); any →
//! gone ([`Conns::finish`]). A read side shut down by the stop or a reclaim
//! still lets the handler thread read what had already arrived, so a request
//! that had fully arrived is still answered (with `Connection: close`).
//!
//! # Reclaiming idle keep-alive connections
//!
//! One handler thread serves one connection, so idle keep-alive
//! connections could hold every handler while new ones wait. The counters
//! below keep this invariant, after every operation under the lock:
//!
//! **(R)** `queued <= free + reclaiming`, or no connection is `Idle`
//! (unreclaimed).
//!
//! `queued` counts connections accepted and not yet taken by a handler
//! thread, `free` the handler threads not serving one (waiting, or not
//! started yet), `reclaiming` the
//! connections reclaimed whose handler thread has not finished them yet
//! (each will free its thread at once: its read returns end of stream). A
//! handler thread finishing a connection and becoming free is one step
//! ([`Conns::finish`] with `ready`), so (R) never dips and nothing is
//! reclaimed twice for one waiting connection.
//!
//! # Accounting
//!
//! Every accepted connection is counted exactly once when it ends, by
//! [`Conns::finish`] (its handler thread) or, if it is still open when the
//! report is made, by [`Conns::counts`]; both run under the one lock that
//! also guards `accepted`, so every snapshot satisfies
//! `accepted = closed + idle_closed + drained + forced + open`, and the
//! report's (which counts the open ones) `accepted = closed + idle_closed +
//! drained + forced`. A reclaimed connection counts as `closed` (it ended
//! before the stop reached it, like a keep-alive timeout); a request read
//! after the forced close counts its connection as `forced`.
//!
//! # Locking
//!
//! One `parking_lot::Mutex`; nothing blocks under it: the only system calls
//! made while it is held are `shutdown(2)`s, which do not wait.

use std::collections::{BTreeMap, HashMap};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::report::ConnectionCounts;

/// What a handler thread says about how a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// It ended while waiting for or reading a request: end of stream,
    /// timeout, or the read side shut down by the stop or a reclaim.
    Idle,
    /// Its last response was written in full, with `Connection: close`,
    /// after the stop had begun.
    Drained,
    /// Anything else: the client asked to close, an I/O error, a bad request
    /// before the stop.
    Closed,
    /// The drain deadline cut a streaming response, or came before the
    /// request could be answered.
    Forced,
}

/// What [`Conns::begin`] tells the handler thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Begin {
    /// Serve the request; `close`: the connection closes after the response
    /// (the listener is closed, or the connection was reclaimed).
    Serve { close: bool },
    /// The connection was shut down at the drain deadline: do not run the
    /// handler; the connection counts as forced.
    Forced,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    Reading,
    Idle,
    Busy,
    Closing,
}

#[derive(Debug)]
struct Entry {
    stream: Arc<TcpStream>,
    state: State,
    /// Its key in `Inner::idle` while it is `Idle` and not reclaimed.
    idle_seq: Option<u64>,
    /// The stop shut its read side down.
    read_shut: bool,
    /// Reclaimed for a waiting connection (read side shut down).
    reclaimed: bool,
    /// The deadline passed while it was busy, or a request was read after.
    forced: bool,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// The reclaimable (`Idle`, unreclaimed) connections, oldest idle first:
    /// sequence number → id.
    idle: BTreeMap<u64, u64>,
    next_idle_seq: u64,
    /// Accepted, not yet taken by a handler thread (see (R)).
    queued: usize,
    /// Handler threads not serving a connection (see (R)).
    free: usize,
    /// Reclaimed connections not finished yet (see (R)).
    reclaiming: usize,
    /// Set once the listener is closed: from then on a connection that goes
    /// idle is closed.
    closing: bool,
    /// Set at the drain deadline, when every connection was shut down.
    forced_close: bool,
    counts: ConnectionCounts,
    accept_errors: u64,
    handler_errors: u64,
    handler_panics: u64,
}

impl Inner {
    fn leave_idle(&mut self, id: u64) {
        if let Some(e) = self.open.get_mut(&id) {
            if let Some(seq) = e.idle_seq.take() {
                self.idle.remove(&seq);
            }
        }
    }

    /// Restores (R): reclaims the longest-idle keep-alive connections while
    /// more connections wait than handler threads will be free.
    fn rebalance(&mut self) {
        while self.queued > self.free + self.reclaiming {
            let Some((_, id)) = self.idle.pop_first() else {
                return;
            };
            let Some(e) = self.open.get_mut(&id) else {
                continue;
            };
            e.idle_seq = None;
            e.reclaimed = true;
            let _ = e.stream.shutdown(READ_SIDE);
            self.reclaiming += 1;
        }
    }
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
    /// Returns the registry of a server with `handlers` handler threads,
    /// all free (those not started yet will take from the queue too).
    pub(super) fn new(handlers: usize) -> Conns {
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        Conns {
            inner: Mutex::new(Inner {
                free: handlers,
                ..Inner::default()
            }),
            done_tx,
            done_rx,
        }
    }

    /// Counts a newly accepted connection, queued for a handler thread, and
    /// returns its id. If no handler thread will be free for it, reclaims an
    /// idle keep-alive connection (see (R)).
    pub(super) fn register(&self, stream: Arc<TcpStream>) -> u64 {
        let mut inner = self.inner.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.counts.accepted += 1;
        inner.open.insert(
            id,
            Entry {
                stream,
                state: State::Fresh,
                idle_seq: None,
                read_shut: false,
                reclaimed: false,
                forced: false,
            },
        );
        inner.queued += 1;
        inner.rebalance();
        id
    }

    /// A handler thread took a queued connection.
    pub(super) fn take(&self) {
        let mut inner = self.inner.lock();
        inner.queued = inner.queued.saturating_sub(1);
        inner.free = inner.free.saturating_sub(1);
    }

    /// A queued connection will never be taken (every handler thread is
    /// gone).
    pub(super) fn unqueue(&self) {
        let mut inner = self.inner.lock();
        inner.queued = inner.queued.saturating_sub(1);
    }

    /// The first bytes of a request arrived on `id`: it is no longer idle.
    pub(super) fn reading(&self, id: u64) {
        let mut inner = self.inner.lock();
        inner.leave_idle(id);
        if let Some(e) = inner.open.get_mut(&id) {
            e.state = State::Reading;
        }
    }

    /// A full request was read on `id`: the stop will let it finish, unless
    /// the deadline has already shut every connection down.
    pub(super) fn begin(&self, id: u64) -> Begin {
        let mut inner = self.inner.lock();
        inner.leave_idle(id);
        let (closing, forced_close) = (inner.closing, inner.forced_close);
        let Some(e) = inner.open.get_mut(&id) else {
            return Begin::Forced;
        };
        if forced_close {
            e.forced = true;
            return Begin::Forced;
        }
        e.state = State::Busy;
        Begin::Serve {
            close: closing || e.reclaimed,
        }
    }

    /// The response on `id` is done (`complete`: written in full). Returns
    /// whether the connection may wait for another request: only if
    /// `keep_alive`, the listener is not closed yet and it was not
    /// reclaimed. `pipelined`: the next request has begun to arrive already,
    /// so the connection is not idle.
    pub(super) fn end_request(
        &self,
        id: u64,
        keep_alive: bool,
        complete: bool,
        pipelined: bool,
    ) -> bool {
        let mut inner = self.inner.lock();
        if complete {
            inner.counts.served += 1;
        }
        let closing = inner.closing;
        let seq = inner.next_idle_seq;
        let Some(e) = inner.open.get_mut(&id) else {
            return false;
        };
        let open = keep_alive && !closing && !e.reclaimed;
        if keep_alive && closing && !e.reclaimed {
            // It would be idle now, but the listener closed meanwhile: close
            // it as `close_idle` closed the others, so that its handler
            // thread's linger does not wait for the client's end of stream.
            e.read_shut = true;
            let _ = e.stream.shutdown(READ_SIDE);
        }
        e.state = match (open, pipelined) {
            (false, _) => State::Closing,
            (true, true) => State::Reading,
            (true, false) => State::Idle,
        };
        if e.state == State::Idle {
            e.idle_seq = Some(seq);
            inner.next_idle_seq += 1;
            inner.idle.insert(seq, id);
            // A connection may be waiting for exactly this.
            inner.rebalance();
        }
        open
    }

    /// Closes every idle keep-alive connection's read side, which wakes its
    /// handler thread (blocked in `read`) with an end of stream once it has
    /// read what was already received; and makes connections that go idle
    /// later close too. Fresh and reading connections are left to the close
    /// window ([`Conns::end_window`]). Called once the listener is closed.
    pub(super) fn close_idle(&self) {
        let mut inner = self.inner.lock();
        inner.closing = true;
        inner.idle.clear();
        for e in inner.open.values_mut().filter(|e| e.state == State::Idle) {
            e.idle_seq = None;
            e.read_shut = true;
            let _ = e.stream.shutdown(READ_SIDE);
        }
    }

    /// Returns `true` if a connection is still fresh or reading a request,
    /// i.e. the close window has someone to wait for.
    pub(super) fn has_pending_requests(&self) -> bool {
        let inner = self.inner.lock();
        inner
            .open
            .values()
            .any(|e| matches!(e.state, State::Fresh | State::Reading) && !e.read_shut)
    }

    /// Ends the close window: shuts the read side of every connection that
    /// has not delivered a full request, so its handler thread answers what
    /// had arrived in full and otherwise closes it with a FIN.
    pub(super) fn end_window(&self) {
        let mut inner = self.inner.lock();
        for e in inner
            .open
            .values_mut()
            .filter(|e| matches!(e.state, State::Fresh | State::Reading | State::Idle))
        {
            e.read_shut = true;
            let _ = e.stream.shutdown(READ_SIDE);
        }
    }

    /// Shuts every open connection down both ways; the busy ones count as
    /// forced, and so does any whose request is read from here on. Called at
    /// the drain deadline.
    pub(super) fn force_all(&self) {
        let mut inner = self.inner.lock();
        inner.forced_close = true;
        for e in inner.open.values_mut() {
            e.forced |= e.state == State::Busy;
            let _ = e.stream.shutdown(Shutdown::Both);
        }
    }

    /// Forgets `id` (dropping the registry's handle on its socket) and counts
    /// how it ended. `ready`: the handler thread that served it now waits for
    /// the next connection (one step with the end, for (R)).
    pub(super) fn finish(&self, id: u64, end: End, ready: bool) {
        let mut inner = self.inner.lock();
        inner.leave_idle(id);
        if ready {
            inner.free += 1;
        }
        let Some(e) = inner.open.remove(&id) else {
            return;
        };
        if e.reclaimed {
            inner.reclaiming = inner.reclaiming.saturating_sub(1);
        }
        let closing = inner.closing;
        let c = &mut inner.counts;
        match end {
            _ if e.forced => c.forced += 1,
            End::Forced => c.forced += 1,
            End::Drained => c.drained += 1,
            End::Idle if e.reclaimed => c.closed += 1,
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
    /// would end now (busy or forced: forced; reclaimed: closed; otherwise:
    /// closed by the stop),
    /// and the accept, handler-error and handler-panic counts.
    pub(super) fn counts(&self) -> (ConnectionCounts, u64, u64, u64) {
        let inner = self.inner.lock();
        let mut c = inner.counts;
        for e in inner.open.values() {
            if e.forced || e.state == State::Busy {
                c.forced += 1;
            } else if e.reclaimed {
                c.closed += 1; // as `finish` would count it
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair: the server's end (registered) and the client's.
    fn pair(listener: &TcpListener) -> (Arc<TcpStream>, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Arc::new(server), client)
    }

    #[test]
    fn a_waiting_connection_reclaims_the_longest_idle_keep_alive_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Two handler threads, each serving a keep-alive connection.
        let conns = Conns::new(2);
        let mut ids = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..2 {
            let (s, c) = pair(&listener);
            let id = conns.register(s);
            conns.take();
            conns.reading(id);
            assert_eq!(conns.begin(id), Begin::Serve { close: false });
            assert!(conns.end_request(id, true, true, false));
            ids.push(id);
            clients.push(c);
        }
        // A third arrives: the first idle one (the oldest) is reclaimed.
        let (s, _c3) = pair(&listener);
        let third = conns.register(s);
        {
            let inner = conns.inner.lock();
            assert!(inner.open[&ids[0]].reclaimed);
            assert!(!inner.open[&ids[1]].reclaimed);
            assert_eq!((inner.queued, inner.free, inner.reclaiming), (1, 0, 1));
        }
        // Its handler finishes it and takes the third: nothing more is
        // reclaimed.
        conns.finish(ids[0], End::Idle, true);
        conns.take();
        assert!(!conns.inner.lock().open[&ids[1]].reclaimed);
        conns.finish(third, End::Closed, true);
        conns.finish(ids[1], End::Closed, true);
        let (c, ..) = conns.counts();
        assert_eq!((c.accepted, c.served, c.closed), (3, 2, 3));
        assert!(c.is_balanced(), "{c:?}");
    }

    #[test]
    fn a_request_read_after_the_forced_close_counts_forced() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let conns = Conns::new(1);
        let (s, _c) = pair(&listener);
        let id = conns.register(s);
        conns.take();
        conns.force_all();
        conns.reading(id);
        assert_eq!(conns.begin(id), Begin::Forced);
        conns.finish(id, End::Closed, true);
        let (c, ..) = conns.counts();
        assert_eq!((c.accepted, c.forced, c.closed), (1, 1, 0));
    }
}
