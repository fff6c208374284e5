//! Job ownership: one state word per worker, so that every job a worker takes
//! off its queue ends in exactly one bucket of the report (design invariant
//! 1), whatever the interleaving of the worker and the joiner.
//!
//! # The state word
//!
//! An `AtomicU64`: the top bit says the joiner has *sealed* the worker (given
//! up on it at the end of the kill grace), the next two bits are the state,
//! and the low 61 bits the worker's *job number*: how many jobs it has taken
//! so far, counting the one it holds (in a batch that runs on, below, the
//! first of those it holds). Every `take` (and every `next_after`, below)
//! counts at least one more, so the word a worker writes is never one it wrote before
//! (no ABA), and the joiner can tell "still the same job" from "a later
//! one" by the number alone.
//!
//! | state     | meaning                                      | set by             | left by                                 |
//! |-----------|----------------------------------------------|--------------------|-----------------------------------------|
//! | `IDLE`    | holds no job                                 | worker, start/done | worker: `take` → `HELD`, `take_and_run` → `RUNNING` |
//! | `HELD`    | took a job, runs the key function or hands it back | worker, `take`     | worker: `run` → `RUNNING`, `release` → `IDLE` |
//! | `RUNNING` | inside the job function (in a batch that runs on: inside job `progress`) | worker | worker: `finish_after` → `IDLE` (number + ran), `next_after` → `RUNNING` (number + ran + 1) |
//! | `+SEALED` | the joiner gave up on this worker            | joiner, `seal`     | never                                   |
//!
//! `next_after` is the batch step (`Submitter::submit_batch`): a worker
//! that finished job *n* of a batch and starts job *n + 1* of the same
//! batch moves `RUNNING(n) → RUNNING(n + 1)` in one CAS, which both counts
//! job *n* as the worker's and takes job *n + 1*: one CAS per job instead
//! of two. Before the stop a job that returned `Ok` needs no CAS at all
//! ("Batches before the stop", below). The jobs of the batch after the
//! running one stay in the worker's hands; the table below says who counts
//! them.
//!
//! Every transition of the worker is a compare-and-swap from the exact word
//! it wrote last; the joiner's seal is a `fetch_or` of the sealed bit. So
//! exactly one of two things happens for each transition: the worker's CAS
//! lands first (the joiner's seal then sees the new state), or the seal
//! lands first (the worker's CAS fails, and the worker records nothing from
//! then on and exits). Who accounts for a job:
//!
//! | seal finds   | the job is                      | counted by                                       |
//! |--------------|---------------------------------|--------------------------------------------------|
//! | `RUNNING`    | in flight                       | the joiner: abandoned, with the key if any       |
//! | `RUNNING(n)`, `progress` = *n + r* | jobs *n* … *n + r − 1* of a batch returned `Ok`, *n + r* in flight | the joiner: *r* succeeded (`ran_on`), job *n + r* abandoned |
//! | `HELD`       | taken, not started              | the joiner: abandoned (the key may not exist yet) |
//! | `IDLE`       | none, or one between `recv` and `take`, or one whose outcome is being counted | the joiner, by difference (below) |
//! | any          | the rest of a batch, in the worker's hands | the joiner, by difference (abandoned); handed back if the worker brings it to the late list before the report |
//!
//! # Counting by difference
//!
//! Two windows are invisible in the word: a job between the channel's `recv`
//! and the worker's `take`, and finished jobs between `finish_after` (the
//! CAS to `IDLE`, or `next_after`) and the worker's counter bump; and the rest of a
//! batch a worker holds is in no word at all. The joiner builds the report
//! from counters it reads once after sealing; a job in any of these is in
//! none of them, so the joiner counts `submitted − (succeeded + failed +
//! panicked + handed back)` as abandoned (`PoolTally::abandoned`). That is
//! exact because every other bucket is: a sealed worker records nothing
//! after the seal (its CASes fail), a worker that exited reported it on the
//! done channel after its last bump (which orders the bump before the
//! joiner's read), and `submitted` is final once the queue closed. A job
//! counted this way really was on a thread that had not finished with it
//! when the runtime gave up: the meaning of abandoned.
//!
//! A sealed worker whose CAS fails while it holds jobs that never started
//! (`take`, `take_and_run`, `run`, `next_after` or `release` failed; for
//! `next_after`, the rest of its batch) gives them to the pool's late list instead of
//! dropping them. The report, made after the release hooks, moves what
//! arrived there by then from abandoned to handed back (those jobs were in
//! none of the seal's buckets, so the identity still holds); what arrives
//! later stays abandoned. That covers a worker descheduled across the seal
//! between its last stop check and its `recv`: it takes a job that was
//! still queued when the joiner sealed it.
//!
//! # Batches before the stop: running on without a CAS
//!
//! A CAS per job is most of what a batch's job costs (≈ 7 ns uncontended
//! on a KVM guest, against a few for the rest of the job path). So before
//! the stop, in a pool without a key function, a job of a batch that
//! returned `Ok` is not published: the worker *runs on* into the next job
//! with one plain store, `progress = n + r` (`run_on`, `Release`), while
//! the word keeps saying `RUNNING(n)`. The next CAS — `next_after` after a
//! failure or once stopping, `finish_after` at the batch's end or when the
//! stop says to hand the rest back — counts all *r* together with the job
//! it ends, and the worker then bumps its counters by as many.
//!
//! | the worker, after job *n + r* of a batch | word | `progress` | counters |
//! |---|---|---|---|
//! | returned `Ok`, not stopping: runs on (`run_on`) | `RUNNING(n)`, unchanged | *n + r + 1* | unchanged |
//! | failed or panicked, or stopping: `next_after(r)` | `RUNNING(n + r + 1)` | unchanged (now behind the word) | + *r* succeeded, + the job's outcome |
//! | last job, or handing back: `finish_after(r)` | `IDLE(n + r)` | unchanged | + *r* succeeded, + the job's outcome |
//!
//! The seal, on a `RUNNING(n)` word, reads `progress` after its `fetch_or`
//! (`ran_on`): *p ≥ n* means jobs *n* … *p − 1* returned `Ok` (they are
//! counted succeeded, `Tally::add_ran_on`) and job *p* is the one in
//! flight (abandoned); a `progress` behind *n* is left from an earlier
//! batch, and none ran on. Either way the worker's next CAS fails, so it
//! never counts them itself: no job is in two buckets. Whatever value of
//! `progress` the seal reads, the jobs before it really returned `Ok` (the
//! worker stores it only after that), so the report never calls a job
//! succeeded that was not; at worst a job that returned `Ok` just as the
//! seal read an older `progress` is counted abandoned, the meaning of
//! abandoned (the runtime did not see it end).
//!
//! What running on gives up, and why it is only done before the stop: a
//! worker whose word is `RUNNING(n)` learns that it was sealed only at its
//! next CAS, not between two jobs. That matters only after the stop (the
//! seal comes at the end of the kill grace), and once the stop has begun a
//! worker checks the token after every job and takes the CAS path, exactly
//! as outside a batch. A worker still running on at the seal had not seen
//! the stop, which began a whole drain deadline and kill grace earlier: it
//! was inside one job all that time, the job the seal finds in flight.
//! (Only if that job returns in the nanoseconds of the seal itself, and its
//! load of the stop flag were stale across the whole deadline, could it
//! start one more job of its batch before its CAS fails; that job is then
//! counted abandoned, with the rest of the batch, and nothing is lost or
//! counted twice.) Failures always take the CAS path, so an error message
//! is recorded only for a job the report counts as failed.
//!
//! # How long a stuck job has run: stamped only once the stop began
//!
//! The report says how long a stuck worker had been in its job
//! (`StuckThread::in_job`). A clock read per job would pay for that on
//! every job of every run (≈ 35 ns on a KVM guest, as much as the rest of
//! the job path), although the answer is wanted only for a job still
//! running at the drain deadline. So a worker stamps a job's start (the
//! `stamp` word: the time on the pool's clock and the job number's low
//! bit) only when it takes the job after the stop began, which it learns
//! from one atomic load of the token. The joiner, at the seal:
//!
//! * finds a stamp of the same parity as the sealed word's job number: the
//!   job started after the stop began, and the stamp is its start. (The
//!   worker writes job *n*'s stamp before the CAS that publishes *n*, and
//!   after the seal it can write at most job *n + 1*'s, of the other
//!   parity, before its CAS fails; no earlier job has a stamp unless every
//!   job since has one.)
//! * otherwise: the job started before the stop, and the joiner counts from
//!   the trigger (`stop_began`, the root token's stop time), which is then
//!   a lower bound of its time in the job. (A job whose worker checked the
//!   token just before the trigger and took the job just after is counted
//!   from the trigger too: off by that window, a few nanoseconds.)
//!
//! # Orderings
//!
//! The worker's CASes are `AcqRel`: `Release` publishes the key it stored
//! before `run` and the stamp it stored before `take` (so a joiner that
//! sees the word reads them), and the counter bumps of the job before (so a
//! joiner whose seal reads the word that a later transition wrote also sees
//! those bumps). The seal is `AcqRel` for the same pairing from the other
//! side. The stamp itself is written and read `Relaxed`: the word's CASes
//! and the seal order it.
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
const NUMBER_MASK: u64 = (1 << STATE_SHIFT) - 1;

const IDLE: u64 = 0;
const HELD: u64 = 1 << STATE_SHIFT;
const RUNNING: u64 = 2 << STATE_SHIFT;

/// In the stamp word: a stamp was written (else the word is 0).
const STAMPED: u64 = 1 << 63;
/// In the stamp word: the low bit of the stamped job's number.
const PARITY: u64 = 1 << 62;
const NANOS_MASK: u64 = PARITY - 1;

/// What the seal found in a worker's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sealed {
    /// No job seen (see "Counting by difference").
    Idle,
    /// A job taken and not started, since the instant given (module doc,
    /// "How long a stuck job has run").
    Held(Instant),
    /// A job running since the instant given.
    Running(Instant),
    /// Already sealed before (sealing twice is harmless).
    Again,
}

/// One worker's state word, its stamp and the clock the stamp reads.
#[derive(Debug)]
pub(crate) struct Slot {
    word: AtomicU64,
    /// `STAMPED | parity | nanoseconds since epoch` of the last job taken
    /// after the stop began; 0 before any.
    stamp: AtomicU64,
    /// In a batch before the stop: the number of the job the worker is in,
    /// while the word still says an earlier one of the same batch (module
    /// doc, "Batches before the stop"). Written only by the worker, read by
    /// the seal; 0 before any.
    progress: AtomicU64,
    epoch: Instant,
}

impl Slot {
    pub(crate) fn new(epoch: Instant) -> Slot {
        Slot {
            word: AtomicU64::new(IDLE),
            stamp: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            epoch,
        }
    }

    /// The worker's proof for its first `take`. Only the slot's worker calls
    /// it, once, before it takes anything.
    pub(crate) fn start(&self) -> Idle {
        Idle(IDLE)
    }

    fn cas(&self, from: u64, to: u64) -> bool {
        // The worker passes the exact word it wrote last, so a seal (which
        // only adds the top bit) is the only thing that can make this fail.
        self.word
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Stamps the start of job `number` if `stopping` (module doc).
    fn stamp(&self, number: u64, stopping: bool) {
        if stopping {
            // Truncation only after ~146 years on the pool's clock.
            let nanos = (self.epoch.elapsed().as_nanos() as u64) & NANOS_MASK;
            let parity = if number & 1 == 1 { PARITY } else { 0 };
            self.stamp
                .store(STAMPED | parity | nanos, Ordering::Relaxed);
        }
    }

    /// `IDLE → HELD` right after the worker received a job; `stopping` says
    /// whether the stop has begun (then the start is stamped). Returns the
    /// proof to pass on, or `None` if the worker was sealed: the job is then
    /// the joiner's (counted by difference) and the worker must exit.
    #[must_use]
    pub(crate) fn take(&self, idle: Idle, stopping: bool) -> Option<Held> {
        let number = (idle.0 + 1) & NUMBER_MASK;
        self.stamp(number, stopping);
        let word = HELD | number;
        self.cas(idle.0, word).then_some(Held(word))
    }

    /// `IDLE → RUNNING` in one step, for pools without a key function (one
    /// CAS per job instead of two). `None` if sealed.
    #[must_use]
    pub(crate) fn take_and_run(&self, idle: Idle, stopping: bool) -> Option<Running> {
        let number = (idle.0 + 1) & NUMBER_MASK;
        self.stamp(number, stopping);
        let word = RUNNING | number;
        self.cas(idle.0, word).then_some(Running(word))
    }

    /// `HELD → RUNNING`. `None` if sealed meanwhile (the joiner counted the
    /// job abandoned).
    #[must_use]
    pub(crate) fn run(&self, held: Held) -> Option<Running> {
        let word = RUNNING | (held.0 & NUMBER_MASK);
        self.cas(held.0, word).then_some(Running(word))
    }

    /// `RUNNING(n) → RUNNING(n + ran + 1)`: the job function of job
    /// *n + ran* of a batch returned (after `ran` jobs run on, `run_on`; 0
    /// outside a run) and the worker starts the next job of the same batch:
    /// one CAS counts jobs *n* to *n + ran* as the worker's and takes the
    /// one after them. `None` if sealed meanwhile: the joiner counted the
    /// job abandoned (and the jobs run on too, unless it read them,
    /// `ran_on`), the worker records nothing and gives the rest of the batch
    /// to the late list.
    #[must_use]
    pub(crate) fn next_after(&self, running: Running, ran: u64, stopping: bool) -> Option<Running> {
        let number = ((running.0 & NUMBER_MASK) + ran + 1) & NUMBER_MASK;
        self.stamp(number, stopping);
        let word = RUNNING | number;
        self.cas(running.0, word).then_some(Running(word))
    }

    /// In a batch before the stop, with no CAS: the `ran` jobs since the
    /// word said `running` (job *n*) all returned `Ok`, and job *n + ran*
    /// begins. One plain store of `progress` (`Release`, so a seal that
    /// reads it also sees what those jobs did); the word keeps saying *n*
    /// until `next_after` or `finish_after` counts them (module doc,
    /// "Batches before the stop").
    #[inline]
    pub(crate) fn run_on(&self, running: &Running, ran: u64) {
        self.progress.store(
            ((running.0 & NUMBER_MASK) + ran) & NUMBER_MASK,
            Ordering::Release,
        );
    }

    /// `HELD → IDLE`: the worker gives the job back (hand-back). Returns
    /// `None` if sealed meanwhile: the job is then abandoned and must not be
    /// handed back. The caller holds the pool's hand-back lock across this
    /// call and the push, and the joiner takes the list under that lock after
    /// sealing, so a job that left `HELD` this way is always in the list it
    /// reads.
    #[must_use]
    pub(crate) fn release(&self, held: Held) -> Option<Idle> {
        let word = held.0 & NUMBER_MASK;
        self.cas(held.0, word).then_some(Idle(word))
    }

    /// `RUNNING → IDLE` when the job function returned. Returns `None` if
    /// sealed while it ran: the joiner counted the job abandoned, so the
    /// worker records nothing.
    #[must_use]
    pub(crate) fn finish(&self, running: Running) -> Option<Idle> {
        self.finish_after(running, 0)
    }

    /// `finish` after `ran` jobs run on (`run_on`): `RUNNING(n) →
    /// IDLE(n + ran)`, which counts jobs *n* to *n + ran* as the worker's.
    #[must_use]
    pub(crate) fn finish_after(&self, running: Running, ran: u64) -> Option<Idle> {
        let word = ((running.0 & NUMBER_MASK) + ran) & NUMBER_MASK;
        self.cas(running.0, word).then_some(Idle(word))
    }

    /// The joiner gives up on this worker. From here on every CAS of the
    /// worker fails. A job found `HELD` or `RUNNING` is dated by its stamp,
    /// or else from `stop_began` (module doc).
    pub(crate) fn seal(&self, stop_began: Instant) -> Sealed {
        let prev = self.word.fetch_or(SEALED, Ordering::AcqRel);
        if prev & SEALED != 0 {
            return Sealed::Again;
        }
        let since = || {
            let stamp = self.stamp.load(Ordering::Relaxed);
            let parity = if prev & 1 == 1 { PARITY } else { 0 };
            if stamp & STAMPED != 0 && stamp & PARITY == parity {
                self.epoch + Duration::from_nanos(stamp & NANOS_MASK)
            } else {
                stop_began
            }
        };
        match prev & STATE_MASK {
            HELD => Sealed::Held(since()),
            RUNNING => Sealed::Running(since()),
            _ => Sealed::Idle,
        }
    }
}

impl Slot {
    /// After a seal that found `RUNNING(n)`: how many jobs the worker had
    /// run on past job *n* (`run_on`), all returned `Ok` and none counted
    /// yet; 0 if it was not running on. The word no longer changes once
    /// sealed, and `progress` is read after the seal's RMW (`Acquire`,
    /// pairing with `run_on`). A `progress` left from an earlier batch is
    /// behind the word's number (every later word counts past it), so the
    /// difference is then "negative" and reads as 0.
    pub(crate) fn ran_on(&self) -> u64 {
        let word = self.word.load(Ordering::Acquire);
        if word & SEALED == 0 || word & STATE_MASK != RUNNING {
            return 0;
        }
        let ran = self.progress.load(Ordering::Acquire).wrapping_sub(word) & NUMBER_MASK;
        if ran < 1 << 60 {
            ran
        } else {
            0
        }
    }

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
    #[inline]
    pub(crate) fn bump(&self, which: Counter) {
        self.bump_by(which, 1);
    }

    /// Counts `n` outcomes of one kind at once (`bump`'s rules).
    #[inline]
    pub(crate) fn bump_by(&self, which: Counter, n: u64) {
        let c = self.counter(which);
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Release);
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
    /// Successes of sealed workers that had run on in a batch and never
    /// counted them (`Slot::ran_on`); added once per seal by the joiner,
    /// and part of the `Succeeded` sum.
    ran_on: AtomicU64,
}

impl Tally {
    /// A tally for `workers` workers whose slots stamp times from `epoch`.
    pub(crate) fn new(workers: usize, epoch: Instant) -> Tally {
        Tally {
            workers: (0..workers).map(|_| WorkerTally::new(epoch)).collect(),
            handed_back: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            init_failed: AtomicUsize::new(0),
            ran_on: AtomicU64::new(0),
        }
    }

    /// The sum of one counter over every worker (for `Succeeded`, with the
    /// successes the seal found run on).
    pub(crate) fn sum(&self, which: Counter) -> u64 {
        let extra = match which {
            Counter::Succeeded => self.ran_on.load(Ordering::Acquire),
            _ => 0,
        };
        self.workers.iter().map(|w| w.get(which)).sum::<u64>() + extra
    }

    /// The joiner counts `n` successes a sealed worker had run on.
    pub(crate) fn add_ran_on(&self, n: u64) {
        if n > 0 {
            self.ran_on.fetch_add(n, Ordering::Release);
        }
    }

    /// Workers holding a job right now (`Slot::is_busy`).
    pub(crate) fn in_flight(&self) -> usize {
        self.workers.iter().filter(|w| w.slot.is_busy()).count()
    }

    /// A worker handed one job back (called under the hand-back lock).
    pub(crate) fn handed_back_one(&self) {
        self.handed_back_n(1);
    }

    /// Workers handed `n` jobs back (called under the hand-back lock).
    pub(crate) fn handed_back_n(&self, n: u64) {
        self.handed_back.fetch_add(n, Ordering::Release);
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

/// Proof that the worker is in `IDLE` (the exact word it wrote).
#[derive(Debug)]
pub(crate) struct Idle(u64);

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

    fn never() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_job_goes_idle_held_running_idle() {
        let s = slot();
        let held = s.take(s.start(), false).unwrap();
        let running = s.run(held).unwrap();
        assert!(s.finish(running).is_some());
        assert_eq!(s.seal(never()), Sealed::Idle);
    }

    #[test]
    fn a_batch_moves_running_to_running_one_cas_per_job() {
        let s = slot();
        let mut running = s.take_and_run(s.start(), false).unwrap();
        for _ in 0..5 {
            running = s.next_after(running, 0, false).unwrap();
        }
        let idle = s.finish(running).unwrap();
        // The job number went on counting: six jobs taken.
        assert_eq!(idle.0, 6);
        let held = s.take(idle, false).unwrap();
        assert_eq!(held.0 & NUMBER_MASK, 7);
    }

    #[test]
    fn jobs_run_on_are_counted_by_the_next_cas_and_the_word_numbers_them() {
        let s = slot();
        let running = s.take_and_run(s.start(), false).unwrap(); // job 1
        s.run_on(&running, 1); // job 1 Ok, in job 2
        s.run_on(&running, 2); // job 2 Ok, in job 3
        let running = s.next_after(running, 2, false).unwrap(); // job 3 ended
        assert_eq!(running.0 & NUMBER_MASK, 4);
        s.run_on(&running, 1); // job 4 Ok, in job 5
        let idle = s.finish_after(running, 1).unwrap();
        assert_eq!(idle.0, 5);
        // Nothing sealed: nothing for the joiner to add.
        assert_eq!(s.ran_on(), 0);
    }

    #[test]
    fn a_seal_reads_the_jobs_run_on_and_only_those_of_the_running_batch() {
        // Sealed while running on: jobs 1 and 2 returned Ok, 3 in flight.
        let s = slot();
        let running = s.take_and_run(s.start(), false).unwrap();
        s.run_on(&running, 1);
        s.run_on(&running, 2);
        assert!(matches!(s.seal(never()), Sealed::Running(_)));
        assert_eq!(s.ran_on(), 2);
        // The worker's next CAS fails, so it never counts them itself.
        assert!(s.next_after(running, 2, false).is_none());
        assert_eq!(s.ran_on(), 2);

        // A `progress` left by an earlier batch is behind the word.
        let s = slot();
        let running = s.take_and_run(s.start(), false).unwrap();
        s.run_on(&running, 3);
        let idle = s.finish_after(running, 3).unwrap(); // IDLE(4)
        let _running = s.take_and_run(idle, false).unwrap(); // RUNNING(5)
        assert!(matches!(s.seal(never()), Sealed::Running(_)));
        assert_eq!(s.ran_on(), 0);

        // Sealed right after a `next_after`: the new word is past `progress`.
        let s = slot();
        let running = s.take_and_run(s.start(), false).unwrap();
        s.run_on(&running, 1);
        let _running = s.next_after(running, 1, false).unwrap(); // RUNNING(3)
        assert!(matches!(s.seal(never()), Sealed::Running(_)));
        assert_eq!(s.ran_on(), 0);

        // Sealed idle or held: nothing ran on.
        let s = slot();
        let running = s.take_and_run(s.start(), false).unwrap();
        s.run_on(&running, 2);
        let idle = s.finish_after(running, 2).unwrap();
        let _held = s.take(idle, false).unwrap();
        assert!(matches!(s.seal(never()), Sealed::Held(_)));
        assert_eq!(s.ran_on(), 0);
    }

    #[test]
    fn a_seal_while_held_makes_run_and_release_fail() {
        let s = slot();
        let held = s.take(s.start(), false).unwrap();
        assert!(matches!(s.seal(never()), Sealed::Held(_)));
        assert!(s.run(held).is_none());
        let s = slot();
        let held = s.take(s.start(), false).unwrap();
        assert!(matches!(s.seal(never()), Sealed::Held(_)));
        assert!(s.release(held).is_none());
    }

    #[test]
    fn a_seal_while_running_makes_finish_and_next_fail() {
        let s = slot();
        let running = s.take_and_run(s.start(), false).unwrap();
        assert!(matches!(s.seal(never()), Sealed::Running(_)));
        assert!(s.finish(running).is_none());
        assert_eq!(s.seal(never()), Sealed::Again);
        let s = slot();
        let running = s.take_and_run(s.start(), false).unwrap();
        let running = s.next_after(running, 0, false).unwrap();
        assert!(matches!(s.seal(never()), Sealed::Running(_)));
        assert!(s.next_after(running, 0, false).is_none());
    }

    #[test]
    fn a_sealed_idle_worker_cannot_take() {
        let s = slot();
        assert_eq!(s.seal(never()), Sealed::Idle);
        assert!(s.take(s.start(), false).is_none());
        assert!(s.take_and_run(s.start(), false).is_none());
    }

    #[test]
    fn a_job_taken_after_the_stop_is_dated_by_its_stamp() {
        let s = slot();
        let before = Instant::now();
        let _held = s.take(s.start(), true).unwrap();
        let stop_began = Instant::now() + Duration::from_secs(3600);
        let Sealed::Held(at) = s.seal(stop_began) else {
            panic!("held")
        };
        // The clock is truncated to whole nanoseconds since the epoch.
        assert!(at + Duration::from_micros(1) >= before);
        assert!(at < stop_began, "the stamp, not the fallback");
    }

    #[test]
    fn a_job_taken_before_the_stop_is_dated_from_the_stop() {
        let s = slot();
        let running = s.take_and_run(s.start(), false).unwrap();
        let _running = s.next_after(running, 0, false).unwrap();
        let stop_began = Instant::now();
        assert_eq!(s.seal(stop_began), Sealed::Running(stop_began));
    }

    #[test]
    fn a_stamp_of_the_next_job_does_not_date_the_sealed_one() {
        // Job 1 started before the stop (no stamp); the seal lands while
        // it runs; the worker then stamps job 2 before its `next` fails.
        let s = slot();
        let running = s.take_and_run(s.start(), false).unwrap();
        let stop_began = Instant::now();
        let prev = s.word.load(Ordering::Relaxed);
        s.stamp((prev & NUMBER_MASK) + 1, true);
        assert_eq!(s.seal(stop_began), Sealed::Running(stop_began));
        assert!(s.next_after(running, 0, true).is_none());
    }

    /// The paths a worker takes with a batch of `len` jobs (unkeyed): the
    /// first by `take_and_run`, every later one by `next_after` (or, with
    /// `run_on`, by running on until the seal), the last ended by
    /// `finish_after`; or, stopping after `done` jobs, `finish_after` and a
    /// hand-back of the rest (`take` + `release`).
    #[derive(Clone, Copy, Debug)]
    enum BatchPath {
        All,
        HandBackAfter(usize),
    }

    /// What one round counted: (jobs the worker counted, jobs it handed
    /// back, jobs it gave to the late list, what the seal found, the jobs
    /// the seal read as run on).
    type Round = (usize, usize, usize, Sealed, usize);

    /// Runs one batch with a seal before step `seal_at`. With `run_on`, a
    /// job that is neither the last nor the stop point runs on into the
    /// next without a CAS, until the seal: the seal comes after the stop,
    /// and a worker that has seen the stop takes the CAS path (slot doc,
    /// "Batches before the stop"), so the model switches to `next_after`
    /// once sealed.
    fn batch_round(len: usize, path: BatchPath, seal_at: usize, run_on: bool) -> Option<Round> {
        let s = slot();
        let mut step = 0;
        let mut sealed = None;
        let mut maybe_seal = |s: &Slot| {
            if step == seal_at {
                let seal = s.seal(never());
                sealed = Some((seal, s.ran_on() as usize));
            }
            step += 1;
            sealed.is_some()
        };
        let (mut counted, mut back, mut late) = (0, 0, 0);
        let stop_after = match path {
            BatchPath::All => len,
            BatchPath::HandBackAfter(d) => d,
        };
        maybe_seal(&s);
        'batch: {
            let Some(mut running) = s.take_and_run(s.start(), false) else {
                late = len;
                break 'batch;
            };
            let mut done = 0;
            let mut ran = 0;
            loop {
                let seen = maybe_seal(&s); // the job runs
                done += 1;
                if done == len || done == stop_after {
                    let Some(idle) = s.finish_after(running, ran as u64) else {
                        late = len - done;
                        break 'batch;
                    };
                    counted += ran + 1;
                    if done < len {
                        maybe_seal(&s);
                        let Some(held) = s.take(idle, true) else {
                            late = len - done;
                            break 'batch;
                        };
                        maybe_seal(&s);
                        if s.release(held).is_some() {
                            back = len - done;
                        } else {
                            late = len - done;
                        }
                    }
                    break 'batch;
                }
                if run_on && !seen {
                    ran += 1;
                    s.run_on(&running, ran as u64);
                    continue;
                }
                let Some(r) = s.next_after(running, ran as u64, seen) else {
                    late = len - done;
                    break 'batch;
                };
                counted += ran + 1;
                ran = 0;
                running = r;
            }
        }
        maybe_seal(&s);
        // `None` once `seal_at` is past the path's last step.
        sealed.map(|(seal, ran_on)| (counted, back, late, seal, ran_on))
    }

    /// Every interleaving of one batch's worker steps with one seal, with
    /// and without running on: every job is counted once, by the worker,
    /// the hand-back list, or the joiner (the jobs it reads as run on, the
    /// one it finds in the word, and by difference the rest, which the
    /// worker brings to the late list).
    #[test]
    fn exhaustive_interleavings_of_one_batch_and_one_seal() {
        for run_on in [false, true] {
            for len in 1..=4 {
                let mut paths = vec![BatchPath::All];
                paths.extend((1..len).map(BatchPath::HandBackAfter));
                for path in paths {
                    for seal_at in 0..=3 * len + 2 {
                        let Some((counted, back, late, seal, ran_on)) =
                            batch_round(len, path, seal_at, run_on)
                        else {
                            assert!(seal_at > len, "every step of {path:?} was tried");
                            break;
                        };
                        let ctx = format!(
                            "len {len}, {path:?}, run on {run_on}, seal before step {seal_at}: {seal:?}, {ran_on} run on"
                        );
                        // The seal counts as succeeded what it read as run
                        // on; by difference it counts as abandoned
                        // everything nobody counted.
                        let by_difference = len - counted - back - ran_on;
                        // Of those, only a job the seal caught running
                        // really ran on a thread given up on; every other
                        // one (held, or the rest of the batch) went to the
                        // late list, which hands it back: none is lost.
                        let in_flight = usize::from(matches!(seal, Sealed::Running(_)));
                        assert_eq!(by_difference, in_flight + late, "{ctx}");
                        assert_ne!(seal, Sealed::Again, "{ctx}");
                        if !run_on {
                            assert_eq!(ran_on, 0, "{ctx}");
                        }
                    }
                }
            }
        }
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
                        joiner_counts = Some(s.seal(never()));
                    }
                };
                maybe_seal(step, &s);
                step += 1;
                match path {
                    Path::KeyThenRun => {
                        if let Some(h) = s.take(s.start(), false) {
                            maybe_seal(step, &s);
                            step += 1;
                            if let Some(r) = s.run(h) {
                                maybe_seal(step, &s);
                                step += 1;
                                worker_counts = s.finish(r).is_some();
                            }
                        }
                    }
                    Path::Direct => {
                        if let Some(r) = s.take_and_run(s.start(), false) {
                            maybe_seal(step, &s);
                            step += 1;
                            worker_counts = s.finish(r).is_some();
                        }
                    }
                    Path::HandBack => {
                        if let Some(h) = s.take(s.start(), false) {
                            maybe_seal(step, &s);
                            step += 1;
                            worker_counts = s.release(h).is_some();
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
