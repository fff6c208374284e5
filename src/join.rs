//! The thread registry and the drain join.
//!
//! [`Threads`] is the one registry of every OS thread the runtime starts —
//! pool workers, background loops, the server's threads. It names them, gates
//! their start (a group of threads starts all together or not at all), and
//! hands each a clone of one `done` sender that reports its id on exit
//! through a drop guard (so a panic still reports).
//!
//! The [`Joiner`] — the thread in `Runtime::run` — then loops on
//! `recv_deadline(deadline)`:
//!
//! 1. a message marks that thread exited (a message that is ready at the
//!    deadline still counts: crossbeam tries the channel before it looks at
//!    the clock);
//! 2. disconnect means every sender is gone, so every thread has exited;
//! 3. a timeout means the deadline passed with threads still running.
//!
//! Nothing here polls or sleeps: every wait is a channel receive with a
//! deadline.
//!
//! # Starting a group
//!
//! `Threads::start` spawns every thread of a group (a pool's workers, a
//! background thread) behind a gate: each body first waits for the gate to
//! open. Only when every spawn succeeded are the entries marked started and
//! the gate opened; if one spawn fails, the guard closes the gate (the bodies
//! never run), joins the threads already spawned, and leaves their entries
//! unstarted, so their exit messages are ignored. Like rayon's
//! `Terminator`, the undo is a drop guard, so it also runs if the caller
//! unwinds.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::report::ThreadOutcome;
use crate::thread::{self, Joinable};

/// A background thread's outcome, written by the thread, read by its unit's
/// report after the join.
pub(crate) type OutcomeSlot = Arc<Mutex<Option<ThreadOutcome>>>;

/// Whether a thread keeps the run from completing by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Work that ends by itself (a pool's workers): the run completes once
    /// every such thread has exited.
    Work,
    /// A service (the server, `spawn_service`): runs until a stop, so the run
    /// does not complete while it is alive.
    Service,
    /// A helper (`spawn`): never holds the run open, unless it is all there
    /// is (then the run completes when every helper returned).
    None,
}

/// One thread to start.
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) hold: Hold,
    pub(crate) stack_size: Option<usize>,
    pub(crate) body: Box<dyn FnOnce() + Send>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    hold: Hold,
    handle: Option<Joinable>,
    /// Started and not yet reported its exit.
    alive: bool,
    started: Option<Instant>,
}

/// Every thread the runtime started. Ids index `entries` and are never
/// reused.
#[derive(Debug)]
pub(crate) struct Threads {
    entries: Vec<Entry>,
    done_tx: Sender<usize>,
    done_rx: Receiver<usize>,
}

impl Default for Threads {
    fn default() -> Self {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Threads {
            entries: Vec::new(),
            done_tx,
            done_rx,
        }
    }
}

/// Undoes a partial start on drop unless disarmed (see "Starting a group").
struct StartGuard {
    gate: Option<Sender<()>>,
    spawned: Vec<(usize, Joinable)>,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        drop(self.gate.take()); // closed without a message: bodies never run
        for (_, handle) in self.spawned.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Threads {
    /// The id the next thread will get (for units that name their threads
    /// by id before they start).
    pub(crate) fn next_id(&self) -> usize {
        self.entries.len()
    }

    /// Starts every thread of `specs`, or none. Returns their ids, in order.
    ///
    /// # Errors
    ///
    /// The OS refused a thread; the ones already spawned were joined without
    /// running their bodies.
    pub(crate) fn start(&mut self, specs: Vec<Spec>) -> io::Result<Vec<usize>> {
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
        let mut guard = StartGuard {
            gate: Some(gate_tx),
            spawned: Vec::with_capacity(specs.len()),
        };
        for spec in specs {
            let id = self.entries.len();
            self.entries.push(Entry {
                name: spec.name.clone(),
                hold: spec.hold,
                handle: None,
                alive: false,
                started: None,
            });
            let gate = gate_rx.clone();
            let body = spec.body;
            let handle = thread::spawn(
                spec.name,
                id,
                spec.stack_size,
                self.done_tx.clone(),
                move || {
                    if gate.recv().is_ok() {
                        body();
                    }
                },
            )?;
            guard.spawned.push((id, handle));
        }
        // Every spawn succeeded: mark them started, then open the gate. An
        // exit message is only read in `Runtime::run`, after every `start`,
        // so none is missed.
        let now = Instant::now();
        let gate = guard.gate.take().expect("set above");
        let mut ids = Vec::with_capacity(guard.spawned.len());
        for (id, handle) in guard.spawned.drain(..) {
            let e = &mut self.entries[id];
            e.handle = Some(handle);
            e.alive = true;
            e.started = Some(now);
            ids.push(id);
            let _ = gate.send(());
        }
        Ok(ids)
    }

    /// Ends registration: the joiner owns the threads from here on.
    pub(crate) fn into_joiner(self) -> Joiner {
        let Threads {
            entries,
            done_tx,
            done_rx,
        } = self;
        // Drop our own sender, so a disconnect means every thread exited.
        drop(done_tx);
        let mut j = Joiner {
            entries,
            done: done_rx,
            alive: 0,
            holders_alive: 0,
            has_holders: false,
            last_exit: None,
        };
        for e in &j.entries {
            if e.alive {
                j.alive += 1;
                if e.hold != Hold::None {
                    j.holders_alive += 1;
                    j.has_holders = true;
                }
            }
        }
        j
    }
}

/// What units may ask about threads when they seal and report.
pub(crate) trait ThreadView {
    /// Whether thread `id` has not reported its exit (as of the last drain).
    fn is_alive(&self, id: usize) -> bool;
    /// When thread `id` started.
    fn started(&self, id: usize) -> Option<Instant>;
    /// The thread's name.
    fn name(&self, id: usize) -> &str;
}

/// The drain join over every started thread.
#[derive(Debug)]
pub(crate) struct Joiner {
    entries: Vec<Entry>,
    done: Receiver<usize>,
    alive: usize,
    holders_alive: usize,
    has_holders: bool,
    last_exit: Option<Instant>,
}

impl Joiner {
    pub(crate) fn done(&self) -> &Receiver<usize> {
        &self.done
    }

    pub(crate) fn alive(&self) -> usize {
        self.alive
    }

    /// The completion rule: every thread that holds the run open has exited
    /// (a service never does by itself), or, when no thread holds it, every
    /// thread has.
    pub(crate) fn is_complete(&self) -> bool {
        if self.has_holders {
            self.holders_alive == 0
        } else {
            self.alive == 0
        }
    }

    pub(crate) fn last_exit(&self) -> Option<Instant> {
        self.last_exit
    }

    /// Records that thread `id` has exited. Ids of entries that never
    /// started (a group whose start was undone) are ignored.
    pub(crate) fn exited(&mut self, id: usize) {
        if let Some(e) = self.entries.get_mut(id) {
            if e.alive {
                e.alive = false;
                self.alive -= 1;
                if e.hold != Hold::None {
                    self.holders_alive -= 1;
                }
                self.last_exit = Some(Instant::now());
            }
        }
    }

    /// The channel disconnected: every guard has sent and dropped.
    pub(crate) fn all_exited(&mut self) {
        for id in 0..self.entries.len() {
            self.exited(id);
        }
    }

    /// Takes every exit message already sent, without waiting: before a
    /// decision about who is stuck, so no thread that has exited is named.
    pub(crate) fn drain(&mut self) {
        loop {
            match self.done.try_recv() {
                Ok(id) => self.exited(id),
                Err(crossbeam_channel::TryRecvError::Empty) => return,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    self.all_exited();
                    return;
                }
            }
        }
    }

    /// Collects exits until every thread has exited or `deadline` passes
    /// (`None`: no deadline).
    pub(crate) fn wait_until(&mut self, deadline: Option<Instant>) {
        while self.alive > 0 {
            let msg = match deadline {
                Some(d) => self.done.recv_deadline(d),
                None => self.done.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(id) => self.exited(id),
                Err(RecvTimeoutError::Disconnected) => self.all_exited(),
                Err(RecvTimeoutError::Timeout) => return,
            }
        }
    }

    /// How many of the threads `ids` have not reported their exit.
    pub(crate) fn alive_among(&self, ids: &[usize]) -> usize {
        ids.iter().filter(|&&id| self.is_alive(id)).count()
    }

    /// Collects exits (of any thread) until every thread of `ids` has
    /// exited or `deadline` passes (`None`: no deadline): the wait of one
    /// stage of the stop.
    pub(crate) fn wait_for(&mut self, ids: &[usize], deadline: Option<Instant>) {
        while self.alive_among(ids) > 0 {
            let msg = match deadline {
                Some(d) => self.done.recv_deadline(d),
                None => self.done.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(id) => self.exited(id),
                Err(RecvTimeoutError::Disconnected) => self.all_exited(),
                Err(RecvTimeoutError::Timeout) => return,
            }
        }
    }

    /// How many threads the registry holds (ids are `0..len`).
    pub(crate) fn thread_count(&self) -> usize {
        self.entries.len()
    }

    /// Joins every exited thread and detaches the rest (they are named by
    /// their units' reports).
    pub(crate) fn join_and_detach(&mut self) {
        for e in &mut self.entries {
            let Some(handle) = e.handle.take() else {
                continue;
            };
            if e.alive {
                drop(handle); // detach
            } else {
                // It reported its exit, so this returns promptly. Panics
                // were caught inside; a panic in the guard itself is moot.
                let _ = handle.join();
            }
        }
    }
}

impl ThreadView for Joiner {
    fn is_alive(&self, id: usize) -> bool {
        self.entries.get(id).is_some_and(|e| e.alive)
    }

    fn started(&self, id: usize) -> Option<Instant> {
        self.entries.get(id).and_then(|e| e.started)
    }

    fn name(&self, id: usize) -> &str {
        self.entries.get(id).map_or("?", |e| &e.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn spec(name: &str, hold: Hold, body: impl FnOnce() + Send + 'static) -> Spec {
        Spec {
            name: name.into(),
            hold,
            stack_size: None,
            body: Box::new(body),
        }
    }

    #[test]
    fn a_group_starts_and_every_exit_is_joined() {
        let mut threads = Threads::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let specs = (0..3)
            .map(|i| {
                let ran = ran.clone();
                spec(&format!("t-{i}"), Hold::Work, move || {
                    ran.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        assert_eq!(threads.start(specs).unwrap(), vec![0, 1, 2]);
        let mut j = threads.into_joiner();
        j.wait_until(None);
        assert_eq!(j.alive(), 0);
        assert!(j.is_complete());
        j.join_and_detach();
        assert_eq!(ran.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_failed_spawn_runs_no_body_and_leaves_nothing_started() {
        let mut threads = Threads::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let ok = {
            let ran = ran.clone();
            spec("ok", Hold::Work, move || {
                ran.fetch_add(1, Ordering::Relaxed);
            })
        };
        // A stack no machine has makes `thread::Builder::spawn` fail.
        let mut bad = spec("bad", Hold::Work, || {});
        bad.stack_size = Some(1 << 60);
        assert!(threads.start(vec![ok, bad]).is_err());
        let j = threads.into_joiner();
        assert_eq!(j.alive(), 0, "nothing started");
        assert_eq!(ran.load(Ordering::Relaxed), 0, "the gate never opened");
    }

    #[test]
    fn a_service_keeps_the_run_from_completing() {
        let mut threads = Threads::default();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        threads
            .start(vec![
                spec("work", Hold::Work, || {}),
                spec("svc", Hold::Service, move || {
                    let _ = stop_rx.recv();
                }),
            ])
            .unwrap();
        let mut j = threads.into_joiner();
        // Wait for the work thread's exit (the only one that can come).
        let id = j.done().recv().unwrap();
        j.exited(id);
        assert_eq!(j.alive(), 1);
        assert!(!j.is_complete(), "the service holds the run open");
        drop(stop_tx);
        j.wait_until(None);
        assert!(j.is_complete());
    }

    #[test]
    fn helpers_alone_complete_when_they_return() {
        let mut threads = Threads::default();
        threads.start(vec![spec("h", Hold::None, || {})]).unwrap();
        let mut j = threads.into_joiner();
        assert!(!j.is_complete());
        j.wait_until(None);
        assert!(j.is_complete());
    }
}
