//! The drain join: every thread the runtime spawned holds a clone of one
//! `done` sender and reports its id on exit through a drop guard (so a panic
//! still reports). The joiner — the thread in `Runtime::run` — loops on
//! `recv_deadline(deadline)`:
//!
//! 1. a message marks that thread exited (a message that is ready at the
//!    deadline still counts: crossbeam tries the channel before it looks at
//!    the clock);
//! 2. disconnect means every sender is gone, so every thread has exited;
//! 3. a timeout means the deadline passed with threads still running; the
//!    runtime then fires the hard token, waits the kill grace the same way,
//!    names whoever has still not reported and detaches them.
//!
//! Nothing here polls or sleeps: every wait is a channel receive with a
//! deadline.

use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::report::{StuckThread, ThreadReport};
use crate::runtime::{background_report, OutcomeSlot};

#[derive(Debug)]
pub(crate) enum ThreadKind {
    Worker,
    Background(OutcomeSlot),
}

#[derive(Debug)]
pub(crate) struct ThreadEntry {
    pub(crate) name: String,
    pub(crate) kind: ThreadKind,
    handle: Option<JoinHandle<()>>,
    /// Started and not yet reported its exit.
    alive: bool,
    started: Option<Instant>,
}

impl ThreadEntry {
    pub(crate) fn new(name: String, kind: ThreadKind) -> ThreadEntry {
        ThreadEntry {
            name,
            kind,
            handle: None,
            alive: false,
            started: None,
        }
    }

    /// Marks the entry running. Its exit message is processed only in
    /// `Runtime::run`, after every `started` call, so none can be missed.
    pub(crate) fn started(&mut self, handle: JoinHandle<()>) {
        self.handle = Some(handle);
        self.alive = true;
        self.started = Some(Instant::now());
    }
}

#[derive(Debug)]
pub(crate) struct Joiner {
    threads: Vec<ThreadEntry>,
    done: Receiver<usize>,
    alive: usize,
    workers_alive: usize,
    last_exit: Option<Instant>,
}

impl Joiner {
    pub(crate) fn new(threads: Vec<ThreadEntry>, done: Receiver<usize>) -> Joiner {
        let alive = threads.iter().filter(|t| t.alive).count();
        let workers_alive = threads
            .iter()
            .filter(|t| t.alive && matches!(t.kind, ThreadKind::Worker))
            .count();
        Joiner {
            threads,
            done,
            alive,
            workers_alive,
            last_exit: None,
        }
    }

    pub(crate) fn done(&self) -> &Receiver<usize> {
        &self.done
    }

    pub(crate) fn alive(&self) -> usize {
        self.alive
    }

    pub(crate) fn workers_alive(&self) -> usize {
        self.workers_alive
    }

    pub(crate) fn is_alive(&self, id: usize) -> bool {
        self.threads.get(id).is_some_and(|t| t.alive)
    }

    pub(crate) fn last_exit(&self) -> Option<Instant> {
        self.last_exit
    }

    /// Records that thread `id` has exited. Ids of entries that never
    /// started (a pool whose start was undone) are ignored.
    pub(crate) fn exited(&mut self, id: usize) {
        if let Some(t) = self.threads.get_mut(id) {
            if t.alive {
                t.alive = false;
                self.alive -= 1;
                if matches!(t.kind, ThreadKind::Worker) {
                    self.workers_alive -= 1;
                }
                self.last_exit = Some(Instant::now());
            }
        }
    }

    /// The channel disconnected: every guard has sent and dropped.
    pub(crate) fn all_exited(&mut self) {
        debug_assert_eq!(self.alive, 0, "each guard sends before it drops");
        for id in 0..self.threads.len() {
            self.exited(id);
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

    /// Joins every exited thread and detaches the rest. Returns the
    /// background threads' reports and the stuck background threads.
    pub(crate) fn join_and_detach(
        &mut self,
        now: Instant,
    ) -> (Vec<ThreadReport>, Vec<StuckThread>) {
        let mut reports = Vec::new();
        let mut stuck = Vec::new();
        for t in &mut self.threads {
            let Some(handle) = t.handle.take() else {
                continue;
            };
            if t.alive {
                drop(handle); // detach; it is named in the report
            } else {
                // It reported its exit, so this returns promptly. Panics
                // were caught inside; a panic in the guard itself is moot.
                let _ = handle.join();
            }
            if let ThreadKind::Background(slot) = &t.kind {
                reports.push(background_report(&t.name, slot, t.alive));
                if t.alive {
                    stuck.push(StuckThread {
                        thread: t.name.clone(),
                        pool: None,
                        job_key: None,
                        in_job: t.started.map(|s| now.saturating_duration_since(s)),
                    });
                }
            }
        }
        (reports, stuck)
    }
}
