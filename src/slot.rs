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

use std::sync::atomic::{AtomicU64, Ordering};
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
