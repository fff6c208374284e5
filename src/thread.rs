//! Spawning the runtime's threads: a name, a drop guard that reports the exit
//! (also on panic), one helper around `catch_unwind`, and the opt-in cache
//! of parked threads that [`reuse_threads`] turns on.
//!
//! # Reusing threads
//!
//! Tearing a thread down is most of what a stop of many idle workers costs:
//! the kernel's exit, the stack's `madvise`/`munmap` and the TLB
//! shoot-downs they send to the other CPUs (`BENCHMARKS.md`, "Where the time
//! goes"). With reuse on, a thread whose body has returned does not exit: it
//! parks in a process-wide cache, keyed by its name and stack size, and the
//! next spawn of the same name and stack size hands it the new body instead
//! of asking the OS for a thread. The protocol, under the cache's one lock:
//!
//! 1. a parked thread is listed with its mailbox (a mutex and a condvar),
//!    and waits on the mailbox with a deadline (`keep_alive`);
//! 2. a spawn removes a listed thread and delivers it the body, both under
//!    the cache's lock, so a thread that is no longer listed has its body in
//!    its mailbox, or is about to;
//! 3. a thread whose deadline passed takes the cache's lock: still listed,
//!    it removes itself and exits; not listed, it waits (without a deadline)
//!    for the body that step 2 delivers;
//! 4. turning reuse off marks every listed mailbox closed and wakes it; its
//!    thread exits.
//!
//! A spawned body then reports its end on a channel of its own (after its
//! `DoneGuard` has sent), which is what "join" waits for.

use std::any::Any;
use std::collections::HashMap;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// Reports a thread's exit on the runtime's `done` channel when dropped, so
/// the joiner hears about a thread that panicked as well as one that returned.
///
/// WARNING: once the last guard has sent, the joiner may go on to tear the
/// runtime down; a thread must not touch shared state after its guard drops.
#[derive(Debug)]
pub(crate) struct DoneGuard {
    id: usize,
    done: Sender<usize>,
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        // The joiner may have given up on us (we were detached at the
        // deadline) and dropped the receiver; that is fine.
        let _ = self.done.send(self.id);
    }
}

/// A spawned thread's body, to join or detach.
#[derive(Debug)]
pub(crate) struct Joinable(Inner);

#[derive(Debug)]
enum Inner {
    /// A thread of its own: joined when the OS thread has exited.
    Os(JoinHandle<()>),
    /// A body run by a reusable thread: `true` once it ended in a panic,
    /// `false` once it returned (its guard has sent in both cases).
    Reused(Receiver<bool>),
}

impl Joinable {
    /// Blocks until the body has ended: the OS thread exited, or for a
    /// reusable thread, the body and its guard have run (the thread then
    /// parks for its next body). `Err` if the body panicked.
    pub(crate) fn join(self) -> Result<(), ()> {
        match self.0 {
            Inner::Os(handle) => handle.join().map_err(drop),
            Inner::Reused(ended) => match ended.recv() {
                Ok(false) => Ok(()),
                Ok(true) | Err(_) => Err(()),
            },
        }
    }
}

/// Spawns a thread named `name` that runs `body` and then reports `id` on
/// `done`. `stack_size` of `None` keeps the platform default. With
/// [`reuse_threads`] on, a parked thread of the same name and stack size
/// runs it if there is one.
pub(crate) fn spawn(
    name: String,
    id: usize,
    stack_size: Option<usize>,
    done: Sender<usize>,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<Joinable> {
    let mut builder = thread::Builder::new().name(name.clone());
    if let Some(size) = stack_size {
        builder = builder.stack_size(size);
    }
    if !cache().is_on() {
        let handle = builder.spawn(move || {
            let _guard = DoneGuard { id, done };
            body();
        })?;
        return Ok(Joinable(Inner::Os(handle)));
    }
    let (ended_tx, ended_rx) = crossbeam_channel::bounded(1);
    let task: Task = Box::new(move || {
        let panicked = {
            let _guard = DoneGuard { id, done };
            // The panic hook has printed the message; the body's thread is
            // a reusable one, so the unwind stops here.
            panic::catch_unwind(AssertUnwindSafe(body)).is_err()
        };
        let _ = ended_tx.send(panicked);
    });
    let key = (name, stack_size);
    let unclaimed = cache().hand_over(&key, task);
    if let Some(task) = unclaimed {
        // No parked thread: a new one, which parks after this body.
        // Detached: it ends by itself (keep-alive, or reuse turned off).
        builder.spawn(move || reusable(key, task))?;
    }
    Ok(Joinable(Inner::Reused(ended_rx)))
}

/// Turns thread reuse on for the whole process: up to `max_idle` threads
/// whose work has ended stay parked, each for up to `keep_alive`, and the
/// next runtime's pool workers and background threads of the **same name
/// and stack size** run on them instead of on new threads. `max_idle` of 0
/// turns reuse off again (the default): every parked thread exits.
///
/// What it buys: a stop no longer waits for the kernel to tear the threads
/// down (exit, stack `munmap`, TLB shoot-downs), and the next start does not
/// wait to create them. That matters to programs that build and stop
/// runtimes again and again in one process — tests, benches,
/// [`Measure`](crate::Measure), a supervisor that restarts its workers — and
/// most at hundreds of workers; see `BENCHMARKS.md` for the figures. A
/// program that stops once and exits gains nothing from it.
///
/// What changes with it on:
///
/// * [`Runtime::run`](crate::Runtime::run) returns once every body has
///   ended and its thread is parked; the OS threads live on, asleep (no
///   CPU: each waits on a channel with a deadline), until they are reused,
///   their `keep_alive` passes, reuse is turned off, or the process exits.
/// * `thread_local!` values are not dropped between two bodies run by one
///   thread: the next runtime's job on `hash-0` sees what the last one left
///   there. Keep per-run state in the pool's per-worker state
///   ([`PoolBuilder::start_with`](crate::PoolBuilder::start_with)), which is
///   dropped at the end of every run, not in thread-locals.
/// * Names stay exact (invariant 7): a thread is reused only under the name
///   it was created with.
/// * A thread still stuck at the end of the kill grace is detached as
///   before; if its job ever returns, it parks like the others.
///
/// ```
/// use std::time::Duration;
///
/// winddown::reuse_threads(64, Duration::from_secs(5));
/// for _ in 0..3 {
///     let mut rt = winddown::Runtime::builder().signals(false).build()?;
///     let jobs = rt.pool::<u32>("w").workers(4).start(|_, _| Ok(()))?;
///     drop(jobs);
///     let report = rt.run(); // the second and third run reuse w-0..w-3
///     assert_eq!(report.exit_code, 0);
/// }
/// winddown::reuse_threads(0, Duration::ZERO); // off: the parked threads exit
/// # Ok::<(), winddown::BuildError>(())
/// ```
pub fn reuse_threads(max_idle: usize, keep_alive: Duration) {
    let mut c = cache();
    c.max_idle = max_idle;
    c.keep_alive = keep_alive;
    if max_idle == 0 {
        c.count = 0;
        for parked in std::mem::take(&mut c.idle).into_values().flatten() {
            parked.mailbox.close(); // step 4
        }
    }
}

/// A body for a reusable thread.
type Task = Box<dyn FnOnce() + Send>;

/// A thread's name and stack size.
type Key = (String, Option<usize>);

/// Where a parked thread waits for its next body. A plain mutex and condvar
/// rather than a channel: a channel's receive spins and yields before it
/// sleeps, and a thousand threads parking at once on two cores turn those
/// yields into a storm of context switches (see `BENCHMARKS.md`).
#[derive(Default)]
struct Mailbox {
    slot: Mutex<Slot>,
    wake: Condvar,
}

#[derive(Default)]
struct Slot {
    task: Option<Task>,
    /// Reuse was turned off while the thread was listed: exit.
    closed: bool,
}

impl Mailbox {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        // No code panics while holding it; a poisoned lock is still sound.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver(&self, task: Task) {
        self.slot().task = Some(task);
        self.wake.notify_one();
    }

    fn close(&self) {
        self.slot().closed = true;
        self.wake.notify_one();
    }
}

/// A parked thread: its id in the cache, and its mailbox.
struct Parked {
    id: u64,
    mailbox: Arc<Mailbox>,
}

/// The process-wide cache of parked threads (see "Reusing threads").
struct Cache {
    max_idle: usize,
    keep_alive: Duration,
    idle: HashMap<Key, Vec<Parked>>,
    /// Threads listed in `idle`.
    count: usize,
    next_id: u64,
}

/// The cache's lock: std's, which sleeps after a short spin, rather than
/// parking_lot's, which yields the CPU in a loop under contention (every
/// worker of a stopping pool parks at once).
fn cache() -> MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            Mutex::new(Cache {
                max_idle: 0,
                keep_alive: Duration::ZERO,
                idle: HashMap::new(),
                count: 0,
                next_id: 0,
            })
        })
        .lock()
        // No code panics while holding it; a poisoned lock is still sound.
        .unwrap_or_else(PoisonError::into_inner)
}

impl Cache {
    fn is_on(&self) -> bool {
        self.max_idle > 0
    }

    /// Step 2: gives `task` to a parked thread of `key`; hands it back if
    /// there is none.
    fn hand_over(&mut self, key: &Key, task: Task) -> Option<Task> {
        let Some(parked) = self.idle.get_mut(key).and_then(Vec::pop) else {
            return Some(task);
        };
        self.count -= 1;
        parked.mailbox.deliver(task);
        None
    }

    /// Step 1: lists a thread; `None` if the cache is off or full.
    fn park(&mut self, key: &Key, mailbox: &Arc<Mailbox>) -> Option<(u64, Duration)> {
        if !self.is_on() || self.count >= self.max_idle {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.count += 1;
        self.idle.entry(key.clone()).or_default().push(Parked {
            id,
            mailbox: mailbox.clone(),
        });
        Some((id, self.keep_alive))
    }

    /// Step 3: removes thread `id` if it is still listed.
    fn unpark(&mut self, key: &Key, id: u64) -> bool {
        let Some(parked) = self.idle.get_mut(key) else {
            return false;
        };
        let Some(at) = parked.iter().position(|p| p.id == id) else {
            return false;
        };
        parked.swap_remove(at);
        self.count -= 1;
        true
    }
}

/// The main loop of a reusable thread: run a body, park, run the next one
/// handed over, until the cache has no room or no use for it.
fn reusable(key: Key, first: Task) {
    let mailbox = Arc::new(Mailbox::default());
    let mut task = first;
    loop {
        task();
        let Some((id, keep_alive)) = cache().park(&key, &mailbox) else {
            return;
        };
        match wait_for_task(&key, id, &mailbox, keep_alive) {
            Some(next) => task = next,
            None => return,
        }
    }
}

/// Steps 3 and 4: waits for the next body until `keep_alive` has passed
/// (then leaves the cache) or reuse is turned off.
fn wait_for_task(key: &Key, id: u64, mailbox: &Mailbox, keep_alive: Duration) -> Option<Task> {
    let deadline = Instant::now().checked_add(keep_alive);
    let mut listed = true;
    let mut slot = mailbox.slot();
    loop {
        if let Some(task) = slot.task.take() {
            return Some(task);
        }
        if slot.closed {
            return None;
        }
        let left = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        if left.is_zero() && listed {
            drop(slot);
            if cache().unpark(key, id) {
                return None;
            }
            // Taken just before the deadline: the body is delivered (or on
            // its way, under the mailbox's lock). Wait for it without a
            // deadline.
            listed = false;
            slot = mailbox.slot();
            continue;
        }
        slot = if listed {
            mailbox
                .wake
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0
        } else {
            mailbox
                .wake
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner)
        };
    }
}

/// Runs `f`, turning a panic into `Err(message)`. Used for jobs, hooks and
/// thread bodies alike, so the thread survives and the panic is recorded.
///
/// `AssertUnwindSafe` is sound here in the library's sense: after a panic the
/// runtime never looks at the state the closure captured; it only records the
/// message (the user's own shared state is theirs to guard, as with any
/// `catch_unwind`).
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_returns_the_panic_message() {
        let r: Result<(), String> = catch(|| panic!("boom {}", 7));
        assert_eq!(r.unwrap_err(), "boom 7");
        assert_eq!(catch(|| 5).unwrap(), 5);
    }

    #[test]
    fn done_guard_reports_even_when_the_thread_panics() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let h = spawn("t-panics".into(), 3, None, tx, || panic!("x")).unwrap();
        assert_eq!(rx.recv().unwrap(), 3);
        assert!(h.join().is_err());
        assert!(rx.recv().is_err(), "disconnect: every sender is gone");
    }
}
