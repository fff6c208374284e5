//! Job ownership: one state word per worker, so that every job a worker takes
//! off its queue ends in exactly one bucket of the report (design invariant
//! 1), whatever the interleaving of the worker and the joiner.
//!
//! # The state word
//!
//! An `AtomicU64`: the top bit says the joiner has *sealed* the worker (given
//! up on it at the end of the kill grace), the next two bits are the state,
//! and the low 61 bits the nanosecond (on the pool's clock) at which the
//! worker entered it.
//!
//! | state     | meaning                                      | set by             | left by                                 |
//! |-----------|----------------------------------------------|--------------------|-----------------------------------------|
//! | `IDLE`    | holds no job                                 | worker, start/done | worker: `take` → `HELD` or `RUNNING`    |
//! | `HELD`    | took a job, runs the key function or hands it back | worker, `take`     | worker: `run` → `RUNNING`, `release` → `IDLE` |
//! | `RUNNING` | inside the job function                      | worker             | worker: `finish` → `IDLE`               |
//! | `+SEALED` | the joiner gave up on this worker            | joiner, `seal`     | never                                   |
//!
//! Every transition of the worker is a compare-and-swap from the state it
//! expects; the joiner's seal is a `fetch_or` of the sealed bit. So exactly
//! one of two things happens for each transition: the worker's CAS lands
//! first (the joiner's seal then sees the new state), or the seal lands first
//! (the worker's CAS fails, and the worker records nothing from then on and
//! exits). Who accounts for a job:
//!
//! | seal finds   | the job is                      | counted by                                       |
//! |--------------|---------------------------------|--------------------------------------------------|
//! | `RUNNING`    | in flight                       | the joiner: abandoned, with the key if any       |
//! | `HELD`       | taken, not started              | the joiner: abandoned (the key may not exist yet) |
//! | `IDLE`       | none, or one between `recv` and `take`, or one whose outcome is being counted | the joiner, by difference (below) |
//!
//! # Counting by difference
//!
//! Two windows are invisible in the word: a job between the channel's `recv`
//! and the worker's `take`, and a finished job between `finish` (the CAS to
//! `IDLE`) and the worker's counter bump. The joiner builds the report from
//! counters it reads once after sealing; a job in either window is in none of
//! them, so the joiner counts `submitted − (succeeded + failed + panicked +
//! handed back)` as abandoned (`PoolTally::abandoned`). That is exact
//! because every other bucket is: a sealed worker records nothing after the
//! seal (its CASes fail), a worker that exited reported it on the done
//! channel after its last bump (which orders the bump before the joiner's
//! read), and `submitted` is final once the queue closed. A job counted this
//! way really was on a thread that had not finished with it when the runtime
//! gave up: the meaning of abandoned.
//!
//! A sealed worker whose CAS fails while it holds a job that never started
//! (`take`, `take_and_run`, `run` or `release` failed) gives the job to the
//! pool's late list instead of dropping it. The report, made after the
//! release hooks, moves what arrived there by then from abandoned to handed
//! back (those jobs were in none of the seal's buckets, so the identity
//! still holds); one that arrives later stays abandoned. That covers a
//! worker descheduled across the seal between its last stop check and its
//! `recv`: it takes a job that was still queued when the joiner sealed it.
//!
//! # Orderings
//!
//! The worker's CASes are `AcqRel`: `Release` publishes the key it stored
//! before `run` (so a joiner that sees `RUNNING` reads the key), and the
//! counter bumps of the job before (so a joiner whose seal reads the word
//! that a later transition wrote also sees those bumps). The seal is
//! `AcqRel` for the same pairing from the other side.
//!
//! # The tally: counters beside the slots
//!
//! [`Tally`] keeps, per worker, the slot and its outcome counters
//! ([`WorkerTally`]), and per pool the counts only the stop or a failed
//! init changes. It is shared by the pool's workers, the joiner and the
//! pool's submit side, which reads it for live counts (`PoolStats`):
//!
//! | field                          | written by                              | how                           | read by |
//! |--------------------------------|-----------------------------------------|-------------------------------|---------|
//! | `succeeded`, `failed`, `panicked` | its own worker only, after `finish`/`release` | load + `Release` store (no RMW) | the joiner after the seal or the worker's exit; snapshots, `Acquire` |
//! | `handed_back`                  | workers handing back (under the pool's hand-back lock), the joiner at seal and report | `fetch_add` / `store`, `Release` | snapshots, `Acquire` |
//! | `abandoned`                    | the joiner, once, at the report         | `store`, `Release`            | snapshots, `Acquire` |
//! | `init_failed`                  | a worker whose init failed              | `fetch_add`, `AcqRel`         | that RMW (who was last?), snapshots |
//!
//! The `Release`/`Acquire` pair is what makes a snapshot's one promise
//! hold: a snapshot that sees a job's outcome counted also sees the
//! `submitted` increment made before the job was sent (the channel orders
//! the send before the worker's receive), because it reads `submitted`
//! after the counters. On x86 a `Release` store is a plain store, so the
//! worker's job path pays nothing for it. The joiner's exact final read
//! needs no more than `Relaxed` (the done channel or the seal orders it),
//! as above.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SEALED: u64 = 1 << 63;
const STATE_SHIFT: u32 = 61;
const STATE_MASK: u64 = 0b11 << STATE_SHIFT;
const TIME_MASK: u64 = (1 << STATE_SHIFT) - 1;

const IDLE: u64 = 0;
const HELD: u64 = 1 << STATE_SHIFT;
const RUNNING: u64 = 2 << STATE_SHIFT;

/// What the seal found in a worker's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sealed {
    /// No job seen (see "Counting by difference").
    Idle,
    /// A job taken and not started, since the instant given.
    Held(Instant),
    /// A job running since the instant given.
    Running(Instant),
    /// Already sealed before (sealing twice is harmless).
    Again,
}

/// One worker's state word and the clock it stamps.
#[derive(Debug)]
pub(crate) struct Slot {
    word: AtomicU64,
    epoch: Instant,
}

impl Slot {
    pub(crate) fn new(epoch: Instant) -> Slot {
        Slot {
            word: AtomicU64::new(IDLE),
            epoch,
        }
    }

    fn now(&self) -> u64 {
        // Truncation only after ~73 years of uptime.
        (self.epoch.elapsed().as_nanos() as u64) & TIME_MASK
    }

    fn at(&self, word: u64) -> Instant {
        self.epoch + Duration::from_nanos(word & TIME_MASK)
    }

    fn cas(&self, from: u64, to: u64) -> bool {
        // `from` carries no time bits for IDLE; for HELD and RUNNING the
        // worker passes the exact word it wrote, so a seal (which only adds
        // the top bit) is the only thing that can make this fail.
        self.word
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// `IDLE → HELD` right after the worker received a job. Returns the word
    /// to pass on, or `None` if the worker was sealed: the job is then the
    /// joiner's (counted by difference) and the worker must exit.
    #[must_use]
    pub(crate) fn take(&self) -> Option<Held> {
        let word = HELD | self.now();
        self.cas(IDLE, word).then_some(Held(word))
    }

    /// `IDLE → RUNNING` in one step, for pools without a key function (one
    /// CAS per job instead of two). `None` if sealed.
    #[must_use]
    pub(crate) fn take_and_run(&self) -> Option<Running> {
        let word = RUNNING | self.now();
        self.cas(IDLE, word).then_some(Running(word))
    }

    /// `HELD → RUNNING`. `None` if sealed meanwhile (the joiner counted the
    /// job abandoned).
    #[must_use]
    pub(crate) fn run(&self, held: Held) -> Option<Running> {
        let word = RUNNING | (held.0 & TIME_MASK);
        self.cas(held.0, word).then_some(Running(word))
    }

    /// `HELD → IDLE`: the worker gives the job back (hand-back). Returns
    /// `false` if sealed meanwhile: the job is then abandoned and must not be
    /// handed back. The caller holds the pool's hand-back lock across this
    /// call and the push, and the joiner takes the list under that lock after
    /// sealing, so a job that left `HELD` this way is always in the list it
    /// reads.
    #[must_use]
    pub(crate) fn release(&self, held: Held) -> bool {
        self.cas(held.0, IDLE)
    }

    /// `RUNNING → IDLE` when the job function returned. Returns `false` if
    /// sealed while it ran: the joiner counted the job abandoned, so the
    /// worker records nothing.
    #[must_use]
    pub(crate) fn finish(&self, running: Running) -> bool {
        self.cas(running.0, IDLE)
    }

    /// The joiner gives up on this worker. From here on every CAS of the
    /// worker fails.
    pub(crate) fn seal(&self) -> Sealed {
        let prev = self.word.fetch_or(SEALED, Ordering::AcqRel);
        if prev & SEALED != 0 {
            return Sealed::Again;
        }
        match prev & STATE_MASK {
            HELD => Sealed::Held(self.at(prev)),
            RUNNING => Sealed::Running(self.at(prev)),
            _ => Sealed::Idle,
        }
    }
}

impl Slot {
    /// `true` while the worker holds a job (`HELD` or `RUNNING`) and is not
    /// sealed: the job is in flight. A sealed worker's job is the joiner's
    /// (abandoned or counted by difference), so it is no longer in flight.
    /// `Relaxed`: a snapshot wants the word's value, nothing it publishes.
    pub(crate) fn is_busy(&self) -> bool {
        let word = self.word.load(Ordering::Relaxed);
        word & SEALED == 0 && word & STATE_MASK != IDLE
    }
}

/// One worker's slot and outcome counters, on a cache line pair of its own
/// so that two workers counting jobs do not contend for one line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct WorkerTally {
    /// Who owns this worker's job.
    pub(crate) slot: Slot,
    /// Jobs that returned `Ok(())`, written only by this worker.
    succeeded: AtomicU64,
    /// Jobs that returned `Err`, written only by this worker.
    failed: AtomicU64,
    /// Jobs that panicked, written only by this worker.
    panicked: AtomicU64,
}

/// Which counter an outcome bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    Succeeded,
    Failed,
    Panicked,
}

impl WorkerTally {
    fn new(epoch: Instant) -> WorkerTally {
        WorkerTally {
            slot: Slot::new(epoch),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
        }
    }

    fn counter(&self, which: Counter) -> &AtomicU64 {
        match which {
            Counter::Succeeded => &self.succeeded,
            Counter::Failed => &self.failed,
            Counter::Panicked => &self.panicked,
        }
    }

    /// Counts one outcome. Only this worker's thread calls it, so a load
    /// and a store (no read-modify-write) cannot lose a count; `Release`
    /// for the snapshots (module doc, "The tally").
    pub(crate) fn bump(&self, which: Counter) {
        let c = self.counter(which);
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// Reads one counter (`Acquire`, pairing with `bump`).
    pub(crate) fn get(&self, which: Counter) -> u64 {
        self.counter(which).load(Ordering::Acquire)
    }
}

/// A pool's tally: every worker's slot and counters, and the pool-wide
/// counts (module doc, "The tally").
#[derive(Debug)]
pub(crate) struct Tally {
    /// One per worker, by index.
    pub(crate) workers: Box<[WorkerTally]>,
    /// Jobs handed back so far (final once the report is made).
    handed_back: AtomicU64,
    /// Jobs abandoned; written once, at the report.
    abandoned: AtomicU64,
    /// Workers whose init failed.
    init_failed: AtomicUsize,
}

impl Tally {
    /// A tally for `workers` workers whose slots stamp times from `epoch`.
    pub(crate) fn new(workers: usize, epoch: Instant) -> Tally {
        Tally {
            workers: (0..workers).map(|_| WorkerTally::new(epoch)).collect(),
            handed_back: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            init_failed: AtomicUsize::new(0),
        }
    }

    /// The sum of one counter over every worker.
    pub(crate) fn sum(&self, which: Counter) -> u64 {
        self.workers.iter().map(|w| w.get(which)).sum()
    }

    /// Workers holding a job right now (`Slot::is_busy`).
    pub(crate) fn in_flight(&self) -> usize {
        self.workers.iter().filter(|w| w.slot.is_busy()).count()
    }

    /// A worker handed one job back (called under the hand-back lock).
    pub(crate) fn handed_back_one(&self) {
        self.handed_back.fetch_add(1, Ordering::Release);
    }

    /// The joiner sets the handed-back count (at the seal, then final at
    /// the report).
    pub(crate) fn set_handed_back(&self, n: u64) {
        self.handed_back.store(n, Ordering::Release);
    }

    pub(crate) fn handed_back(&self) -> u64 {
        self.handed_back.load(Ordering::Acquire)
    }

    /// The joiner sets the abandoned count, once, at the report.
    pub(crate) fn set_abandoned(&self, n: u64) {
        self.abandoned.store(n, Ordering::Release);
    }

    pub(crate) fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Counts a worker whose init failed; returns `true` if every worker of
    /// the pool has now failed, so that none can take a job. `AcqRel`: the
    /// RMW decides who is last, and every earlier failure is visible to it.
    pub(crate) fn init_failed(&self) -> bool {
        self.init_failed.fetch_add(1, Ordering::AcqRel) + 1 == self.workers.len()
    }

    pub(crate) fn init_failures(&self) -> usize {
        self.init_failed.load(Ordering::Acquire)
    }
}

/// Proof that the worker is in `HELD` (the exact word it wrote).
#[derive(Debug)]
pub(crate) struct Held(u64);

/// Proof that the worker is in `RUNNING` (the exact word it wrote).
#[derive(Debug)]
pub(crate) struct Running(u64);

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot::new(Instant::now())
    }

    #[test]
    fn a_job_goes_idle_held_running_idle() {
        let s = slot();
        let held = s.take().unwrap();
        let running = s.run(held).unwrap();
        assert!(s.finish(running));
        assert_eq!(s.seal(), Sealed::Idle);
    }

    #[test]
    fn a_seal_while_held_makes_run_and_release_fail() {
        let s = slot();
        let held = s.take().unwrap();
        assert!(matches!(s.seal(), Sealed::Held(_)));
        assert!(s.run(held).is_none());
        let s = slot();
        let held = s.take().unwrap();
        assert!(matches!(s.seal(), Sealed::Held(_)));
        assert!(!s.release(held));
    }

    #[test]
    fn a_seal_while_running_makes_finish_fail() {
        let s = slot();
        let running = s.take_and_run().unwrap();
        assert!(matches!(s.seal(), Sealed::Running(_)));
        assert!(!s.finish(running));
        assert_eq!(s.seal(), Sealed::Again);
    }

    #[test]
    fn a_sealed_idle_worker_cannot_take() {
        let s = slot();
        assert_eq!(s.seal(), Sealed::Idle);
        assert!(s.take().is_none());
        assert!(s.take_and_run().is_none());
    }

    #[test]
    fn the_seal_reports_when_the_state_began() {
        let s = slot();
        let before = Instant::now();
        let _held = s.take().unwrap();
        let Sealed::Held(at) = s.seal() else {
            panic!("held")
        };
        // The clock is truncated to whole nanoseconds since the epoch.
        assert!(at + Duration::from_micros(1) >= before);
    }

    /// Every interleaving of one job's worker steps with one seal: exactly
    /// one side accounts for the job.
    #[test]
    fn exhaustive_interleavings_of_one_job_and_one_seal() {
        // The worker's steps for one job, by path; the seal may land before
        // any of them (index 0..=len).
        #[derive(Clone, Copy, Debug)]
        enum Path {
            KeyThenRun,
            Direct,
            HandBack,
        }
        for path in [Path::KeyThenRun, Path::Direct, Path::HandBack] {
            let steps = match path {
                Path::KeyThenRun => 3,
                Path::Direct => 2,
                Path::HandBack => 2,
            };
            for seal_at in 0..=steps {
                let s = slot();
                let mut joiner_counts = None;
                let mut worker_counts = false;
                let mut step = 0;
                let mut maybe_seal = |step: usize, s: &Slot| {
                    if step == seal_at {
                        joiner_counts = Some(s.seal());
                    }
                };
                maybe_seal(step, &s);
                step += 1;
                match path {
                    Path::KeyThenRun => {
                        if let Some(h) = s.take() {
                            maybe_seal(step, &s);
                            step += 1;
                            if let Some(r) = s.run(h) {
                                maybe_seal(step, &s);
                                step += 1;
                                worker_counts = s.finish(r);
                            }
                        }
                    }
                    Path::Direct => {
                        if let Some(r) = s.take_and_run() {
                            maybe_seal(step, &s);
                            step += 1;
                            worker_counts = s.finish(r);
                        }
                    }
                    Path::HandBack => {
                        if let Some(h) = s.take() {
                            maybe_seal(step, &s);
                            step += 1;
                            worker_counts = s.release(h);
                        }
                    }
                }
                maybe_seal(step, &s);
                let seal = joiner_counts.expect("the seal ran");
                // The joiner counts a job it sees Held/Running; a job it
                // sees Idle was either already counted by the worker or is
                // in the recv→take window (counted by difference, which is
                // the case where the worker's `take` fails).
                let joiner_explicit = matches!(seal, Sealed::Held(_) | Sealed::Running(_));
                let by_difference = matches!(seal, Sealed::Idle) && !worker_counts;
                let owners = [joiner_explicit, worker_counts, by_difference]
                    .iter()
                    .filter(|b| **b)
                    .count();
                assert_eq!(owners, 1, "{path:?}, seal before step {seal_at}: {seal:?}");
            }
        }
    }
}
