//! Batch tools on rayon (feature `rayon`): a rayon `ThreadPool` whose threads
//! the runtime spawns, names and joins, and parallel iterators on it that
//! stop between items and hand back what never started.
//!
//! # How it plugs in
//!
//! [`RayonBuilder::build`] builds the rayon pool with
//! `ThreadPoolBuilder::spawn_handler`: the handler only collects rayon's
//! `ThreadBuilder`s (rayon's `build` does not wait for its threads), and
//! the thread registry then starts them all, as one group, named
//! `<name>-<i>` and held as [`Hold::Work`], so they are joined in the same
//! drain as every pool worker and against the same deadline. The unit
//! (`Core`) keeps the only long-lived `Arc` of the rayon pool; a call clones
//! it for its duration. At `stop_accepting` the unit drops its `Arc`, and
//! when the last call returns the rayon pool is dropped, which tells rayon
//! to let its threads exit: the drain then joins them. Dropping the
//! [`RayonPool`] handle does the same outside a stop, which is how a run
//! completes by itself.
//!
//! # The per-item check and the accounting
//!
//! Every call drives the input with its own rayon consumer
//! (`Run`), which rayon splits exactly as it splits the input, so each
//! piece's folder (`Piece`) knows its positions `[base, end)`. A piece runs
//! its items in one loop inside one `catch_unwind` (a panic is counted and
//! the loop resumes at the next item). Before each item the loop loads the
//! token's stop flag once, `Relaxed`, through a reference held in a
//! register (`Token::stop_flag`); once it has seen the stop, the rest of
//! the piece is handed back without running. Successes are not counted per
//! item: when a piece completes, `succeeded = len - failed - panicked -
//! handed back`, and its counts are added to the unit's atomics under the
//! read side of the seal gate (`Core::gate`), so no shared cache line is
//! touched per item. Pieces are merged left before right, so what they
//! hand back is in input order without a sort.
//!
//! Positions travel with nothing: the iterator rayon gives a piece has an
//! exact size hint, so the position of the item just taken is `first + n -
//! 1 - left`, computed only where a result or a hand-back needs it
//! (`Piece::exact`; an inexact iterator takes `Piece::counted`).
//!
//! # After the stop
//!
//! | input | a piece running at the stop | a piece not begun at the stop |
//! |---|---|---|
//! | index range (`par_for_each_range`) | sees the flag before its next item; its rest is handed back as one range | never split nor fed (`Run::full` says the consumer is full); `complete` hands its positions back whole |
//! | owned items (`par_for_each`, `par_map`) | sees the flag before its next item; its rest is handed back item by item, with positions | split and fed as usual, and handed back at its first item: the items must come back themselves |
//!
//! A piece that ran nothing skips the gate (nothing to add).
//!
//! Counting by difference, as for pools: `submitted` is added when a call
//! begins; at the seal the items not yet counted as succeeded, failed,
//! panicked or handed back were in a piece still running on a thread the
//! runtime gave up on, and are abandoned. A piece or call that finishes
//! after the seal records nothing, so no item is in two buckets. A call
//! stores its handed-back items while it still holds the rayon pool, so the
//! threads cannot exit (and the seal cannot come) before they are stored.

use std::any::{Any, TypeId};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rayon::iter::plumbing::{Consumer, Folder, Producer, ProducerCallback, Reducer};
use rayon::iter::{IndexedParallelIterator, IntoParallelIterator};

use crate::error::BuildError;
use crate::join::{Hold, Spec, ThreadView};
use crate::pool::MAX_ERRORS;
use crate::reason::StopReason;
use crate::report::{JobError, PoolId, PoolReport, Report, StuckThread};
use crate::runtime::Runtime;
use crate::shared::Shared;
use crate::thread::catch;
use crate::token::Token;
use crate::unit::{PoolStats, Unit};

// ===== Runtime::rayon =====

impl Runtime {
    /// Starts configuring a rayon pool named `name` that this runtime owns:
    /// its threads (`<name>-0` …) are spawned and named by the runtime and
    /// joined in its drain; see [`RayonBuilder`] and [`RayonPool`].
    ///
    /// ```
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let hash = rt.rayon("hash").threads(2).build()?;
    /// let done = hash.par_for_each((0..1000u64).collect::<Vec<_>>(), |n, _token| {
    ///     std::hint::black_box(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    ///     Ok(())
    /// });
    /// assert_eq!(done.succeeded, 1000);
    /// drop(hash); // no more calls: its threads exit and the run completes
    /// let report = rt.run();
    /// assert!(report.pool("hash").unwrap().is_balanced());
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    pub fn rayon(&mut self, name: impl Into<String>) -> RayonBuilder<'_> {
        RayonBuilder {
            rt: self,
            name: name.into(),
            threads: None,
            stack_size: None,
            fail_fast: false,
        }
    }
}

// ===== RayonBuilder =====

/// Configures a rayon pool owned by the runtime; made by
/// [`Runtime::rayon`], finished by [`build`](RayonBuilder::build).
#[must_use = "the rayon pool starts only when `build` is called"]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub struct RayonBuilder<'rt> {
    rt: &'rt mut Runtime,
    name: String,
    threads: Option<usize>,
    stack_size: Option<usize>,
    fail_fast: bool,
}

impl fmt::Debug for RayonBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RayonBuilder {
            rt: _,
            name,
            threads,
            stack_size,
            fail_fast,
        } = self;
        f.debug_struct("RayonBuilder")
            .field("name", name)
            .field("threads", threads)
            .field("stack_size", stack_size)
            .field("fail_fast", fail_fast)
            .finish_non_exhaustive()
    }
}

impl RayonBuilder<'_> {
    /// Sets the number of rayon threads. Default: the machine's available
    /// parallelism. Zero is refused by `build` with
    /// [`BuildError::ZeroWorkers`] (rayon itself would read zero as "the
    /// default").
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Sets each thread's stack size in bytes. Default: the platform's
    /// default for spawned threads.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// When `true`, the first item that fails or panics triggers the stop
    /// ([`StopReason::JobFailed`] naming the pool). Default: `false`.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// Builds the rayon pool and starts its threads, `<name>-0` …
    /// `<name>-{N-1}`, through the runtime's thread registry.
    ///
    /// A pool built after the stop began (a signal during start-up) starts
    /// stopped: its threads exit at once and every call hands all its
    /// items back. That is not an error.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`], [`BuildError::InvalidName`],
    /// [`BuildError::DuplicateName`] (the name or one of the thread names
    /// is taken), [`BuildError::Spawn`] if rayon refused the configuration
    /// or the OS refused a thread (no thread of the pool then runs, and the
    /// names are free again).
    pub fn build(self) -> Result<RayonPool, BuildError> {
        let RayonBuilder {
            rt,
            name,
            threads,
            stack_size,
            fail_fast,
        } = self;
        let reg = rt.registry();
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if threads == 0 {
            return Err(BuildError::ZeroWorkers { pool: name });
        }
        let mut names = vec![name.clone()];
        names.extend((0..threads).map(|i| format!("{name}-{i}")));
        reg.reserve(&names)?;
        // rayon's `build` hands each thread to the handler and returns
        // without waiting for any of them; the registry starts them below.
        let mut builders = Vec::with_capacity(threads);
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name({
                let name = name.clone();
                move |i| format!("{name}-{i}")
            })
            .spawn_handler(|thread| {
                builders.push(thread);
                Ok(())
            })
            .build();
        let pool = match built {
            Ok(pool) => pool,
            Err(e) => {
                reg.unreserve(&names);
                return Err(BuildError::Spawn(std::io::Error::other(e)));
            }
        };
        let first = reg.threads.next_id();
        let specs = builders
            .into_iter()
            .zip(&names[1..])
            .map(|(thread, name)| Spec {
                name: name.clone(),
                hold: Hold::Work,
                stack_size,
                body: Box::new(move || thread.run()),
            })
            .collect();
        // On failure the rayon threads never run; dropping `pool` below
        // tells their registry to terminate, and nothing waits for them.
        let ids = reg.start_threads(&names, specs)?;
        debug_assert_eq!(ids, (first..first + threads).collect::<Vec<_>>());
        let core = Arc::new(Core {
            name,
            token: reg.token(),
            shared: reg.shared.clone(),
            fail_fast,
            threads: ids,
            pool: Mutex::new(Some(Arc::new(pool))),
            gate: RwLock::new(None),
            counts: Counts::default(),
            errors: Mutex::new(Vec::new()),
            stashes: Mutex::new(Vec::new()),
            ids: Mutex::new(Vec::new()),
        });
        reg.add_unit(core.clone());
        Ok(RayonPool { core })
    }
}

// ===== RayonPool =====

/// A rayon pool the runtime owns: parallel iterators and scopes that stop
/// gracefully.
///
/// Made by [`Runtime::rayon`]. Each call blocks the calling thread until
/// it is done (like rayon's `install`), runs its items on the pool's
/// threads, and returns what became of them. The calls take `&self`, so
/// one pool can serve several threads.
///
/// # On a stop
///
/// * No new item starts: each item checks the token (one atomic load)
///   before it runs.
/// * Items in flight finish; they get the pool's [`Token`] and may watch
///   [`Token::is_hard_stopping`] to give up at the drain deadline.
/// * The items that never started are handed back in input order:
///   [`par_for_each`](RayonPool::par_for_each) puts them in the [`Report`]
///   (the items themselves; [`Report::take_handed_back`] with
///   [`id`](RayonPool::id)), [`par_for_each_range`](RayonPool::par_for_each_range)
///   puts the index ranges there, [`par_map`](RayonPool::par_map) returns
///   them with the results it has.
/// * The call returns, the rayon pool is dropped, and its threads exit and
///   are joined in the drain, against the same deadline as every other
///   thread. A thread still in an item at the end of the kill grace is
///   named in [`Report::stuck`] and detached.
///
/// # Accounting
///
/// The pool has one [`PoolReport`] under its name, summed over every call:
/// `submitted = succeeded + failed + panicked + handed_back + abandoned`.
/// An item that returns `Err` or panics is counted and its message kept
/// (the first eight, in [`PoolReport::errors`]); the other items go on.
/// `abandoned` counts the items of a call still running when the runtime
/// gave up on its threads, at the granularity of rayon's pieces: the items
/// of a piece that had not finished (in flight, or done but not yet
/// counted) are abandoned. A [`scope`](RayonPool::scope) counts as one item.
///
/// # Dropping
///
/// Dropping the handle (after its last call) lets the threads exit, so a
/// runtime whose work is all on this pool completes by itself; like a
/// [`Pool`](crate::Pool), the pool holds the run open while the handle
/// lives.
///
/// # Examples
///
/// A batch tool that checkpoints what a Ctrl-C left undone:
///
/// ```no_run
/// use winddown::Runtime;
///
/// fn main() -> anyhow::Result<std::process::ExitCode> {
///     let mut rt = Runtime::new()?;
///     let files = rt.rayon("hash").threads(8).build()?;
///     let id = files.id::<String>();
///     let todo: Vec<String> = (0..10_000).map(|i| format!("file-{i}")).collect();
///     rt.spawn("main-work", move |_token| {
///         let outcome = files.par_for_each(todo, |path, _token| {
///             std::hint::black_box(path.len()); // hash the file
///             Ok(())
///         });
///         eprintln!("{} done, {} left", outcome.succeeded, outcome.handed_back);
///         Ok(()) // `files` is dropped here: its threads exit
///     })?;
///     let mut report = rt.run();
///     let left: Vec<String> = report.take_handed_back(id); // in input order
///     std::fs::write("resume.txt", left.join("\n"))?;
///     Ok(report.process_exit_code())
/// }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub struct RayonPool {
    core: Arc<Core>,
}

impl fmt::Debug for RayonPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RayonPool")
            .field("name", &self.core.name)
            .field("threads", &self.core.threads.len())
            .field("is_stopping", &self.core.token.is_stopping())
            .finish_non_exhaustive()
    }
}

impl Drop for RayonPool {
    fn drop(&mut self) {
        self.core.release();
    }
}

/// What one call on a [`RayonPool`] did with its items.
///
/// `items == succeeded + failed + panicked + handed_back` for every call
/// that returned (a call's own items are never abandoned from its point
/// of view: it waited for them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub struct ParOutcome {
    /// Items the call was given.
    pub items: u64,
    /// Items that returned `Ok`.
    pub succeeded: u64,
    /// Items that returned `Err`.
    pub failed: u64,
    /// Items that panicked.
    pub panicked: u64,
    /// Items that never started because the stop came first.
    pub handed_back: u64,
}

impl ParOutcome {
    /// Returns `true` if every item ran (none was handed back).
    pub fn is_complete(&self) -> bool {
        self.handed_back == 0
    }
}

/// What [`RayonPool::par_map`] returns: the results it has, with their
/// input positions, and the items that never started.
///
/// Every input position is in exactly one of `results`, `failed` and
/// `remainder`, each sorted by position.
#[derive(Debug)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub struct Mapped<T, R> {
    /// `(position, result)` of every item that returned `Ok`.
    pub results: Vec<(usize, R)>,
    /// Positions of the items that returned `Err` or panicked (their
    /// messages are in the report's [`PoolReport::errors`], the first
    /// eight).
    pub failed: Vec<usize>,
    /// `(position, item)` of every item that never started.
    pub remainder: Vec<(usize, T)>,
    /// The counts.
    pub outcome: ParOutcome,
}

impl<T, R> Mapped<T, R> {
    /// Returns `true` if every item ran and returned `Ok`.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.remainder.is_empty()
    }
}

/// Why [`RayonPool::scope`] did not return the scope's value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub enum ScopeError {
    /// The stop had begun (or the pool was dropped) before the scope could
    /// start; it did not run.
    Stopped,
    /// The scope, or a task spawned in it, panicked; the message is the
    /// first panic's.
    Panicked(String),
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Stopped => f.write_str("the rayon pool stopped before the scope began"),
            ScopeError::Panicked(msg) => write!(f, "the scope panicked: {msg}"),
        }
    }
}

impl std::error::Error for ScopeError {}

impl RayonPool {
    /// The pool's name, as in the report.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.core.threads.len()
    }

    /// The token the items get: stopping once the runtime's stop began,
    /// hard at the drain deadline.
    pub fn token(&self) -> &Token {
        &self.core.token
    }

    /// The typed id under which the report keeps this pool's handed-back
    /// items of type `T`, for [`Report::take_handed_back`]: `T` for
    /// [`par_for_each`](RayonPool::par_for_each) over items of type `T`,
    /// `Range<usize>` for [`par_for_each_range`](RayonPool::par_for_each_range).
    /// The same `T` always gives the same id. (With items of more than one
    /// type, [`Report::take_handed_back_named`] finds only the type handed
    /// back first; use the ids.)
    pub fn id<T: 'static>(&self) -> PoolId<T> {
        PoolId::from_raw(self.core.raw_id(TypeId::of::<T>()))
    }

    /// Runs `f(item, &token)` for every item of `items` on the pool's
    /// threads, and blocks until every item has run or been handed back.
    ///
    /// `items` is anything rayon can split by position (`Vec<T>`, ranges,
    /// `vec.into_par_iter().map(..)`, …) whose items are owned. Before each
    /// item, one atomic load checks the token; once stopping has begun, no
    /// new item starts and the ones that did not start are handed back in
    /// the report, in input order ([`Report::take_handed_back`] with
    /// `self.id::<T>()`). An `Err` or a panic is caught and counted; the
    /// other items go on (with [`fail_fast`](RayonBuilder::fail_fast), the
    /// first one triggers the stop).
    ///
    /// Called after the stop began, or after the handle's pool was given
    /// up, it runs nothing and hands every item back. Called after the
    /// report was made (after [`Runtime::run`] returned), the items it
    /// hands back are dropped: the report can no longer take them, and the
    /// returned counts say how many.
    ///
    /// # Panics
    ///
    /// Never panics because of an item: item panics are caught.
    ///
    /// # Examples
    ///
    /// ```
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let pool = rt.rayon("check").threads(2).build()?;
    /// let id = pool.id::<u32>();
    /// let outcome = pool.par_for_each(vec![1u32, 2, 3, 4], |n, _token| {
    ///     winddown::anyhow::ensure!(n != 3, "three");
    ///     Ok(())
    /// });
    /// assert_eq!((outcome.succeeded, outcome.failed), (3, 1));
    /// rt.handle().request("stop");
    /// // After the stop nothing starts: every item comes back.
    /// let outcome = pool.par_for_each(vec![5u32, 6], |_, _| Ok(()));
    /// assert_eq!(outcome.handed_back, 2);
    /// drop(pool);
    /// let mut report = rt.run();
    /// assert_eq!(report.take_handed_back(id), [5, 6]);
    /// assert!(report.pool("check").unwrap().is_balanced());
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn par_for_each<I, F>(&self, items: I, f: F) -> ParOutcome
    where
        I: IntoParallelIterator,
        I::Iter: IndexedParallelIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item, &Token) -> anyhow::Result<()> + Send + Sync,
    {
        let keep = |core: &Core, leaf: &mut Leaf<Vec<(usize, I::Item)>, Discard>| {
            let back = std::mem::take(&mut leaf.back);
            let n = back.len() as u64;
            core.hand_back(back.into_iter().map(|(_, item)| item).collect(), n);
        };
        self.drive(items, 0, f, keep).1
    }

    /// Runs `f(index, &token)` for every index of `range` on the pool's
    /// threads, as [`par_for_each`](RayonPool::par_for_each) does, and
    /// hands back the indices that never started as ranges, merged and in
    /// order ([`Report::take_handed_back`] with `self.id::<Range<usize>>()`):
    /// the shape for input the caller owns elsewhere (a slice, a file
    /// list), indexed by position.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::ops::Range;
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let pool = rt.rayon("rows").threads(2).build()?;
    /// let id = pool.id::<Range<usize>>();
    /// let handle = rt.handle();
    /// let outcome = pool.par_for_each_range(0..10_000, |i, _token| {
    ///     if i == 10 {
    ///         handle.request("enough"); // items not started yet come back
    ///     }
    ///     Ok(())
    /// });
    /// assert!(outcome.succeeded >= 1);
    /// drop(pool);
    /// let mut report = rt.run();
    /// let left: usize = report.take_handed_back(id).iter().map(|r| r.len()).sum();
    /// assert_eq!(left as u64, outcome.handed_back);
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn par_for_each_range<F>(&self, range: Range<usize>, f: F) -> ParOutcome
    where
        F: Fn(usize, &Token) -> anyhow::Result<()> + Send + Sync,
    {
        let keep = |core: &Core, leaf: &mut Leaf<Ranges, Discard>| {
            let n = Back::<usize>::len(&leaf.back) as u64;
            core.hand_back(std::mem::take(&mut leaf.back).into_vec(), n);
        };
        let offset = range.start;
        self.drive(range, offset, f, keep).1
    }

    /// Maps every item of `items` through `f(item, &token)` on the pool's
    /// threads and returns the results with their positions; on a stop,
    /// also the items that never started, with theirs ([`Mapped`]).
    /// Nothing is dropped: every position is a result, a failure or part of
    /// the remainder. The remainder is returned here rather than kept in
    /// the report, and counted in the pool's `handed_back`.
    ///
    /// # Examples
    ///
    /// ```
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let pool = rt.rayon("square").threads(2).build()?;
    /// let mapped = pool.par_map(vec![1u64, 2, 3], |n, _token| {
    ///     winddown::anyhow::ensure!(n != 2, "two");
    ///     Ok(n * n)
    /// });
    /// assert_eq!(mapped.results, [(0, 1), (2, 9)]);
    /// assert_eq!(mapped.failed, [1]);
    /// assert!(mapped.remainder.is_empty());
    /// # drop(pool);
    /// # rt.run();
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn par_map<I, R, F>(&self, items: I, f: F) -> Mapped<I::Item, R>
    where
        I: IntoParallelIterator,
        I::Iter: IndexedParallelIterator,
        I::Item: Send,
        R: Send,
        F: Fn(I::Item, &Token) -> anyhow::Result<R> + Send + Sync,
    {
        let keep = |core: &Core, leaf: &mut Leaf<Positioned<I::Item>, Positioned<R>>| {
            // Returned to the caller, not kept: counted here.
            core.count(&Tally {
                handed_back: leaf.back.len() as u64,
                ..Tally::default()
            });
        };
        let (leaf, outcome) = self.drive(items, 0, f, keep);
        Mapped {
            results: leaf.out,
            failed: leaf.failed_at,
            remainder: leaf.back,
            outcome,
        }
    }

    /// Runs `f(scope, &token)` in a [`rayon::Scope`][Scope] on the pool's threads
    /// and blocks until it and every task spawned in it have returned.
    ///
    /// The scope counts as one item of the pool. The runtime cannot stop
    /// the tasks a scope spawns: a task should check the token (clone it
    /// into the task) before it starts its work. A panic in the scope or in
    /// a task is caught and counted.
    ///
    /// # Errors
    ///
    /// [`ScopeError::Stopped`] if the stop had begun before the scope could
    /// start (it then did not run; it counts as handed back);
    /// [`ScopeError::Panicked`] if it or a task panicked.
    ///
    /// [Scope]: https://docs.rs/rayon/1/rayon/struct.Scope.html
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use winddown::Runtime;
    ///
    /// let mut rt = Runtime::builder().signals(false).build()?;
    /// let pool = rt.rayon("tree").threads(2).build()?;
    /// let sum = AtomicU64::new(0);
    /// pool.scope(|s, token| {
    ///     for n in 1..=4u64 {
    ///         let (sum, token) = (&sum, token.clone());
    ///         s.spawn(move |_| {
    ///             if !token.is_stopping() {
    ///                 sum.fetch_add(n, Ordering::Relaxed);
    ///             }
    ///         });
    ///     }
    /// })
    /// .expect("running");
    /// assert_eq!(sum.into_inner(), 10);
    /// # drop(pool);
    /// # rt.run();
    /// # Ok::<(), winddown::BuildError>(())
    /// ```
    pub fn scope<'scope, R, F>(&self, f: F) -> Result<R, ScopeError>
    where
        F: FnOnce(&rayon::Scope<'scope>, &Token) -> R + Send,
        R: Send,
    {
        let core = &*self.core;
        let pool = core.begin(1);
        let Some(pool) = pool.filter(|_| !core.token.is_stopping()) else {
            core.count(&Tally {
                handed_back: 1,
                ..Tally::default()
            });
            return Err(ScopeError::Stopped);
        };
        let token = &core.token;
        let result = catch(|| pool.scope(|s| f(s, token)));
        drop(pool);
        match result {
            Ok(value) => {
                core.count(&Tally {
                    succeeded: 1,
                    ..Tally::default()
                });
                Ok(value)
            }
            Err(panic) => {
                let message = format!("panicked: {panic}");
                core.record_error(message.clone(), true);
                core.count(&Tally {
                    panicked: 1,
                    ..Tally::default()
                });
                core.fail_fast(message);
                Err(ScopeError::Panicked(panic))
            }
        }
    }

    /// The engine of the three iterator calls: the enumerated input driven
    /// into one `Leaf` per rayon piece, each counted as it completes, then
    /// merged in input order. `keep` records the handed-back items
    /// while this call still holds the rayon pool: the threads cannot exit,
    /// so the drain cannot end and the seal cannot come, before it has.
    fn drive<I, R, B, O, F, K>(
        &self,
        items: I,
        offset: usize,
        f: F,
        keep: K,
    ) -> (Leaf<B, O>, ParOutcome)
    where
        I: IntoParallelIterator,
        I::Iter: IndexedParallelIterator,
        I::Item: Send,
        R: Send,
        B: Back<I::Item>,
        O: Out<R>,
        F: Fn(I::Item, &Token) -> anyhow::Result<R> + Send + Sync,
        K: FnOnce(&Core, &mut Leaf<B, O>),
    {
        let core = &*self.core;
        let iter = items.into_par_iter();
        let n = iter.len();
        let Some(pool) = core.begin(n as u64) else {
            // No pool any more (stopped, or given up): hand everything
            // back, on this thread, without running any of it.
            let back = iter.with_producer(HandAll::<B>(PhantomData));
            let tally = Tally {
                handed_back: back.len() as u64,
                ..Tally::default()
            };
            let mut leaf = Leaf {
                tally,
                stopped: true,
                back,
                out: O::default(),
                failed_at: Vec::new(),
            };
            keep(core, &mut leaf);
            return (leaf, tally.outcome(n as u64));
        };
        let run = Run {
            core,
            f: &f,
            flag: core.token.stop_flag(),
            token: &core.token,
            base: 0,
            end: n,
            offset,
            _types: PhantomData,
        };
        let mut all: Leaf<B, O> = pool.install(|| iter.drive(run));
        all.tally.handed_back = all.back.len() as u64;
        let outcome = all.tally.outcome(n as u64);
        keep(core, &mut all);
        drop(pool); // perhaps the last clone: the threads may now exit
        (all, outcome)
    }
}

// ===== The unit =====

/// The rayon pool as a unit: its threads, counts, errors and what it
/// handed back.
struct Core {
    name: String,
    token: Token,
    shared: Arc<Shared>,
    fail_fast: bool,
    /// The threads' ids in the registry.
    threads: Vec<usize>,
    /// The only long-lived `Arc` of the rayon pool; calls clone it for
    /// their duration. Taken at `stop_accepting` and when the handle is
    /// dropped, so the rayon pool is dropped (its threads exit) when the
    /// last call returns.
    pool: Mutex<Option<Arc<rayon::ThreadPool>>>,
    /// The seal gate: `None` until the seal, then the counts as they were.
    /// Pieces count under its read side (many at once: at a stop, every
    /// thread's piece completes at the same moment, and a mutex there
    /// queued them behind whichever holder the kernel had preempted); the
    /// seal takes the write side, so it waits for every count in progress.
    /// Every change of `counts` and `stashes` is made holding it and only
    /// while it is `None`, so nothing is recorded after the seal.
    gate: RwLock<Option<Tally>>,
    counts: Counts,
    errors: Mutex<Vec<JobError>>,
    /// Handed-back items, one list per item type, in call order.
    stashes: Mutex<Vec<Stashed>>,
    /// The raw report id per item type (`RayonPool::id`).
    ids: Mutex<Vec<(TypeId, u64)>>,
}

/// The unit's counters. Written only under the gate's read side — by
/// several pieces at once, hence atomics and `fetch_add` — and read by the
/// seal under its write side, which excludes every writer, so the seal
/// reads a consistent set. `Relaxed` throughout: the lock's release and
/// acquire order the writes before the seal's read; a live snapshot
/// (`pool_stats`) needs no ordering.
#[derive(Default)]
struct Counts {
    submitted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    handed_back: AtomicU64,
}

/// Counts of one leaf, one call or the sealed unit.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    submitted: u64,
    succeeded: u64,
    failed: u64,
    panicked: u64,
    handed_back: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.submitted += other.submitted;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.panicked += other.panicked;
        self.handed_back += other.handed_back;
    }

    fn outcome(&self, items: u64) -> ParOutcome {
        ParOutcome {
            items,
            succeeded: self.succeeded,
            failed: self.failed,
            panicked: self.panicked,
            handed_back: self.handed_back,
        }
    }
}

impl Core {
    /// A call begins with `n` items: counts them submitted and returns the
    /// rayon pool, or `None` if it is gone (the stop began, or the handle
    /// is being dropped).
    fn begin(&self, n: u64) -> Option<Arc<rayon::ThreadPool>> {
        let gate = self.gate.read();
        if gate.is_none() {
            self.counts.submitted.fetch_add(n, Ordering::Relaxed);
        }
        drop(gate);
        self.pool.lock().clone()
    }

    /// Adds a finished leaf's (or call's) outcomes, unless sealed.
    fn count(&self, t: &Tally) {
        let gate = self.gate.read();
        if gate.is_some() {
            return; // sealed: these items stay abandoned
        }
        let c = &self.counts;
        c.succeeded.fetch_add(t.succeeded, Ordering::Relaxed);
        c.failed.fetch_add(t.failed, Ordering::Relaxed);
        c.panicked.fetch_add(t.panicked, Ordering::Relaxed);
        c.handed_back.fetch_add(t.handed_back, Ordering::Relaxed);
    }

    /// Stores a call's handed-back items (in input order) and counts them
    /// as `count` items (a range holds many), unless sealed (then they are
    /// dropped and stay abandoned).
    fn hand_back<T: Send + 'static>(&self, items: Vec<T>, count: u64) {
        if items.is_empty() {
            return;
        }
        let raw = self.raw_id(TypeId::of::<T>());
        let gate = self.gate.read();
        if gate.is_some() {
            return;
        }
        self.counts.handed_back.fetch_add(count, Ordering::Relaxed);
        let mut stashes = self.stashes.lock();
        if let Some(list) = stashes
            .iter_mut()
            .find(|s| s.raw == raw)
            .and_then(|s| s.items.as_any().downcast_mut::<Vec<T>>())
        {
            list.extend(items);
        } else {
            stashes.push(Stashed {
                raw,
                items: Box::new(items),
            });
        }
    }

    fn raw_id(&self, ty: TypeId) -> u64 {
        let mut ids = self.ids.lock();
        if let Some(&(_, raw)) = ids.iter().find(|(t, _)| *t == ty) {
            return raw;
        }
        let raw = PoolId::<()>::fresh().raw();
        ids.push((ty, raw));
        raw
    }

    fn item_failed(&self, message: String, panicked: bool) {
        self.record_error(message.clone(), panicked);
        self.fail_fast(message);
    }

    fn record_error(&self, message: String, panicked: bool) {
        #[cfg(feature = "tracing")]
        if panicked {
            event!(error, pool = %self.name, job_key = "-", panic = %message, "job panicked");
        } else {
            event!(warn, pool = %self.name, job_key = "-", error = %message, "job failed");
        }
        let mut errors = self.errors.lock();
        if errors.len() < MAX_ERRORS {
            errors.push(JobError {
                pool: self.name.clone(),
                key: None,
                message,
                panicked,
            });
        }
    }

    fn fail_fast(&self, error: String) {
        if self.fail_fast {
            let _began = self.shared.trigger(StopReason::JobFailed {
                pool: self.name.clone(),
                error,
            });
            if _began {
                event!(warn, pool = %self.name, "fail-fast pool: a failure stops the run");
            }
        }
    }

    /// Gives up the long-lived `Arc` of the rayon pool; the pool is dropped
    /// (and its threads told to exit) when no call holds it any more.
    /// Idempotent; never blocks on a call (dropping a rayon pool only
    /// signals its threads).
    fn release(&self) {
        let pool = self.pool.lock().take();
        drop(pool);
    }

    fn live(&self) -> Tally {
        let c = &self.counts;
        Tally {
            submitted: c.submitted.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            panicked: c.panicked.load(Ordering::Relaxed),
            handed_back: c.handed_back.load(Ordering::Relaxed),
        }
    }
}

impl Unit for Core {
    fn stop_accepting(&self) {
        self.release();
    }

    fn seal(&self, _threads: &dyn ThreadView) {
        let mut gate = self.gate.write();
        if gate.is_none() {
            *gate = Some(self.live());
        }
    }

    fn report(&self, threads: &dyn ThreadView, report: &mut Report) {
        let Some(s) = *self.gate.read() else {
            debug_assert!(false, "report before seal");
            return;
        };
        let ran = s.succeeded + s.failed + s.panicked;
        // Counting by difference: every item not in another bucket was in
        // a piece still running on a thread the runtime gave up on.
        let abandoned = s.submitted.saturating_sub(ran + s.handed_back);
        debug_assert!(s.submitted >= ran + s.handed_back, "an item counted twice");
        for &id in &self.threads {
            if threads.is_alive(id) {
                report.stuck.push(StuckThread {
                    thread: threads.name(id).to_owned(),
                    pool: Some(self.name.clone()),
                    job_key: None,
                    in_job: None,
                });
            }
        }
        report.pools.push(PoolReport {
            name: self.name.clone(),
            workers: self.threads.len(),
            submitted: s.submitted,
            succeeded: s.succeeded,
            failed: s.failed,
            panicked: s.panicked,
            handed_back: s.handed_back,
            abandoned,
            handed_back_keys: Vec::new(),
            abandoned_keys: Vec::new(),
            errors: std::mem::take(&mut *self.errors.lock()),
            worker_failures: Vec::new(),
        });
        for stash in std::mem::take(&mut *self.stashes.lock()) {
            stash.items.put(stash.raw, &self.name, report);
        }
    }

    fn pool_stats(&self) -> Option<(&str, PoolStats)> {
        let t = match *self.gate.read() {
            Some(sealed) => sealed,
            None => self.live(),
        };
        Some((
            &self.name,
            PoolStats {
                workers: self.threads.len(),
                init_failures: 0,
                submitted: t.submitted,
                queued: 0,
                in_flight: 0,
                succeeded: t.succeeded,
                failed: t.failed,
                panicked: t.panicked,
                handed_back: t.handed_back,
                abandoned: 0,
            },
        ))
    }
}

// ===== The consumer: what one rayon piece does =====

/// The rayon consumer of one call, for the piece `[base, end)` of the
/// input. rayon splits it exactly as it splits the input (an indexed
/// consumer's contract: the left half of `split_at(i)` gets `i` items), so
/// a folder knows how many items it gets without counting them.
struct Run<'c, F, T, R, B, O> {
    core: &'c Core,
    f: &'c F,
    /// The token's stop flag, loaded once per item (`Relaxed`: see
    /// `Token::stop_flag`).
    flag: &'c AtomicBool,
    token: &'c Token,
    base: usize,
    end: usize,
    /// The value of the item at position 0 for an index-range input (its
    /// `start`), so that a piece's unstarted indices can be handed back
    /// from its positions alone (`Back::BY_POSITION`); 0 otherwise.
    offset: usize,
    _types: Types<T, R, B, O>,
}

/// Values with their input positions.
type Positioned<T> = Vec<(usize, T)>;

/// The types a `Run` carries but does not own.
type Types<T, R, B, O> = PhantomData<fn() -> (T, R, B, O)>;

impl<F, T, R, B, O> Run<'_, F, T, R, B, O> {
    fn piece(&self, base: usize, end: usize) -> Self {
        Run {
            core: self.core,
            f: self.f,
            flag: self.flag,
            token: self.token,
            base,
            end,
            offset: self.offset,
            _types: PhantomData,
        }
    }
}

impl<'c, F, T, R, B, O> Consumer<T> for Run<'c, F, T, R, B, O>
where
    T: Send,
    R: Send,
    B: Back<T>,
    O: Out<R>,
    F: Fn(T, &Token) -> anyhow::Result<R> + Sync,
{
    type Folder = Piece<'c, F, T, R, B, O>;
    type Reducer = Merge;
    type Result = Leaf<B, O>;

    fn split_at(self, index: usize) -> (Self, Self, Merge) {
        let mid = self.base + index;
        (self.piece(self.base, mid), self.piece(mid, self.end), Merge)
    }

    fn into_folder(self) -> Self::Folder {
        Piece {
            next_at: self.base,
            run: self,
            leaf: Leaf::default(),
        }
    }

    /// After the stop, for an input whose unstarted items are handed back
    /// by position (an index range): rayon then neither splits nor feeds
    /// the pieces not yet begun, and each goes to `complete` unfed, which
    /// hands its positions back whole. Any other input is fed to the end,
    /// because its items must be handed back themselves.
    fn full(&self) -> bool {
        B::BY_POSITION && self.flag.load(Ordering::Relaxed)
    }
}

/// The folder of one piece: runs its items in order, on one thread.
struct Piece<'c, F, T, R, B, O> {
    run: Run<'c, F, T, R, B, O>,
    /// The input position of the next item this folder will be given
    /// (rayon may call `consume_iter` more than once on a folder, e.g. for
    /// a chained input: each call continues where the last one ended).
    next_at: usize,
    leaf: Leaf<B, O>,
}

impl<F, T, R, B, O> Folder<T> for Piece<'_, F, T, R, B, O>
where
    T: Send,
    R: Send,
    B: Back<T>,
    O: Out<R>,
    F: Fn(T, &Token) -> anyhow::Result<R> + Sync,
{
    type Result = Leaf<B, O>;

    fn consume(self, item: T) -> Self {
        self.consume_iter(std::iter::once(item))
    }

    /// The hot loop. Per item: one relaxed load of the stop flag, the
    /// item, a test of its result. One `catch_unwind` around the loop, not
    /// one per item: after a panic the loop goes on with the next item.
    /// Successes are not counted here; `complete` finds them by difference.
    ///
    /// Positions are not carried with the items (an enumerated input costs
    /// a second induction variable per item, ≈ 15 % of a trivial item):
    /// the iterator rayon hands a leaf knows exactly how many items it has
    /// left, so an item's position is `first + n - 1 - left`, computed
    /// only where it is used — by `par_map`'s results and by the stop's
    /// hand-back, never by `par_for_each`'s loop. An iterator whose size is
    /// not exact takes the counted loop instead.
    fn consume_iter<I>(mut self, items: I) -> Self
    where
        I: IntoIterator<Item = T>,
    {
        let mut items = items.into_iter();
        if self.leaf.stopped {
            let at = self.next_at;
            let before = self.leaf.back.len();
            self.leaf.back.extend((at..).zip(&mut items));
            self.next_at += self.leaf.back.len() - before;
            return self;
        }
        match items.size_hint() {
            (lo, Some(hi)) if lo == hi => self.exact(items, lo),
            _ => self.counted(items),
        }
        self
    }

    /// The piece is done: its successes by difference, its counts added to
    /// the unit's (handed back is counted when stored: `Core::hand_back`).
    fn complete(self) -> Leaf<B, O> {
        let Piece {
            run,
            mut leaf,
            next_at,
        } = self;
        if B::BY_POSITION && next_at < run.end {
            // Never fed (`Run::full`, or a range that ended early): what
            // it was not given never started.
            leaf.back.push_positions(next_at, run.end, run.offset);
            leaf.stopped = true;
        }
        let len = (run.end - run.base) as u64;
        let back = leaf.back.len() as u64;
        let t = &mut leaf.tally;
        let others = t.failed + t.panicked + back;
        debug_assert!(others <= len, "a piece got more items than its length");
        t.succeeded = len.saturating_sub(others);
        leaf.failed_at = leaf.out.missing(run.base, run.end - back as usize);
        // A piece that ran nothing (after the stop, most of them) has
        // nothing to add: it skips the gate, which 64 threads finishing
        // pieces at once would otherwise all take.
        if t.succeeded + t.failed + t.panicked > 0 {
            run.core.count(&Tally {
                handed_back: 0,
                ..leaf.tally
            });
        }
        leaf
    }

    fn full(&self) -> bool {
        false
    }
}

impl<F, T, R, B, O> Piece<'_, F, T, R, B, O>
where
    T: Send,
    R: Send,
    B: Back<T>,
    O: Out<R>,
    F: Fn(T, &Token) -> anyhow::Result<R> + Sync,
{
    /// The loop for an iterator that has exactly `n` items.
    fn exact<I: Iterator<Item = T>>(&mut self, mut items: I, n: usize) {
        let (core, f, flag, token) = (self.run.core, self.run.f, self.run.flag, self.run.token);
        let first = self.next_at;
        let leaf = &mut self.leaf;
        // The position of the item `next` just returned, given how many
        // are left after it (the size hint stays exact while iterating).
        let at = move |left: usize| first + n - 1 - left;
        loop {
            let (out, failed) = (&mut leaf.out, &mut leaf.tally.failed);
            let items = &mut items;
            let ended = catch(|| {
                // `while let`, not `for`: the body reads the iterator's
                // size hint, which a `for` loop's borrow would not allow.
                #[allow(clippy::while_let_on_iterator)]
                while let Some(item) = items.next() {
                    if flag.load(Ordering::Relaxed) {
                        return Some((at(items.size_hint().0), item));
                    }
                    match f(item, token) {
                        Ok(r) => out.push(at(items.size_hint().0), r),
                        Err(e) => item_failed(core, failed, &e),
                    }
                }
                None
            });
            match ended {
                Ok(None) => break,
                Ok(Some((at, item))) => {
                    // The stop: this item and the `left` after it never
                    // start.
                    leaf.stopped = true;
                    let left = first + n - 1 - at;
                    leaf.back.push_run(at, item, left, items);
                    break;
                }
                Err(panic) => item_panicked(core, &mut leaf.tally.panicked, &panic),
            }
        }
        self.next_at = first + n;
    }

    /// The loop for an iterator of unknown length: positions counted.
    fn counted<I: Iterator<Item = T>>(&mut self, mut items: I) {
        let (core, f, flag, token) = (self.run.core, self.run.f, self.run.flag, self.run.token);
        let leaf = &mut self.leaf;
        let next = &mut self.next_at;
        loop {
            let (out, failed) = (&mut leaf.out, &mut leaf.tally.failed);
            let (items, next) = (&mut items, &mut *next);
            let ended = catch(|| {
                for item in &mut *items {
                    let at = *next;
                    *next += 1;
                    if flag.load(Ordering::Relaxed) {
                        return Some((at, item));
                    }
                    match f(item, token) {
                        Ok(r) => out.push(at, r),
                        Err(e) => item_failed(core, failed, &e),
                    }
                }
                None
            });
            match ended {
                Ok(None) => break,
                Ok(Some((at, item))) => {
                    // The stop: this item and the rest of the piece never
                    // start.
                    leaf.stopped = true;
                    leaf.back.push(at, item);
                    let before = leaf.back.len();
                    leaf.back.extend((*next..).zip(items));
                    *next += leaf.back.len() - before;
                    break;
                }
                Err(panic) => item_panicked(core, &mut leaf.tally.panicked, &panic),
            }
        }
    }
}

/// An item returned `Err`: counted and recorded, off the hot path.
#[cold]
#[inline(never)]
fn item_failed(core: &Core, failed: &mut u64, e: &anyhow::Error) {
    *failed += 1;
    core.item_failed(error_text(e), false);
}

/// An item panicked (the loop goes on with the next): counted and
/// recorded, off the hot path.
#[cold]
#[inline(never)]
fn item_panicked(core: &Core, panicked: &mut u64, panic: &str) {
    *panicked += 1;
    core.item_failed(format!("panicked: {panic}"), true);
}

/// Joins two adjacent pieces, left before right: input order.
struct Merge;

impl<B: MergeBack, O: MergeOut> Reducer<Leaf<B, O>> for Merge {
    fn reduce(self, mut left: Leaf<B, O>, right: Leaf<B, O>) -> Leaf<B, O> {
        left.tally.add(&right.tally);
        left.stopped |= right.stopped;
        left.back.append(right.back);
        left.out.append(right.out);
        left.failed_at.extend(right.failed_at);
        left
    }
}

/// What one piece (and, merged, one call) collected.
struct Leaf<B, O> {
    tally: Tally,
    /// The piece has seen the stop: the rest of it is handed back.
    stopped: bool,
    back: B,
    out: O,
    /// Positions of the items that failed or panicked (kept only by
    /// `par_map`).
    failed_at: Vec<usize>,
}

impl<B: Default, O: Default> Default for Leaf<B, O> {
    fn default() -> Self {
        Leaf {
            tally: Tally::default(),
            stopped: false,
            back: B::default(),
            out: O::default(),
            failed_at: Vec::new(),
        }
    }
}

/// Appending a later piece's handed-back items.
trait MergeBack {
    fn append(&mut self, later: Self);
}

/// Where the items that never started go.
trait Back<T>: MergeBack + Default + Send {
    /// The items can be handed back from their positions alone (an index
    /// range's are `offset + position`): see `Run::full`.
    const BY_POSITION: bool = false;

    fn push(&mut self, at: usize, item: T);
    fn len(&self) -> usize;

    /// Hands back the items at positions `from..to` without having them;
    /// only called if `BY_POSITION`.
    fn push_positions(&mut self, _from: usize, _to: usize, _offset: usize) {
        unreachable!("only inputs handed back by position skip their items");
    }

    fn extend(&mut self, items: impl Iterator<Item = (usize, T)>) {
        for (at, item) in items {
            self.push(at, item);
        }
    }

    /// Adds `item` at `at` and then the `left` items of `rest`, which are
    /// at the positions that follow: a stop's hand-back of the rest of a
    /// piece.
    fn push_run(&mut self, at: usize, item: T, left: usize, rest: impl Iterator<Item = T>) {
        self.push(at, item);
        debug_assert_eq!(rest.size_hint(), (left, Some(left)));
        self.extend((at + 1..).zip(rest));
    }
}

/// Owned items with their positions.
impl<T: Send> MergeBack for Vec<(usize, T)> {
    fn append(&mut self, mut later: Self) {
        Vec::append(self, &mut later);
    }
}

impl<T: Send> Back<T> for Vec<(usize, T)> {
    fn push(&mut self, at: usize, item: T) {
        Vec::push(self, (at, item));
    }

    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Indices as merged ranges. The first range is kept inline: after a stop
/// most pieces hand back exactly one, and a heap allocation for each, on
/// 64 threads at once, was a good part of the stop's cost.
#[derive(Default)]
struct Ranges {
    first: Option<Range<usize>>,
    more: Vec<Range<usize>>,
}

impl Ranges {
    fn last_mut(&mut self) -> Option<&mut Range<usize>> {
        match self.more.last_mut() {
            Some(r) => Some(r),
            None => self.first.as_mut(),
        }
    }

    /// Adds `r` after the others, merged with the last if adjacent.
    fn push_range(&mut self, r: Range<usize>) {
        match self.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            Some(_) => self.more.push(r),
            None => self.first = Some(r),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Range<usize>> {
        self.first.iter().chain(&self.more)
    }

    fn into_vec(self) -> Vec<Range<usize>> {
        self.first.into_iter().chain(self.more).collect()
    }
}

impl MergeBack for Ranges {
    fn append(&mut self, later: Self) {
        for r in later.first.into_iter().chain(later.more) {
            self.push_range(r);
        }
    }
}

impl Back<usize> for Ranges {
    const BY_POSITION: bool = true;

    fn push(&mut self, _at: usize, index: usize) {
        self.push_range(index..index + 1);
    }

    fn push_positions(&mut self, from: usize, to: usize, offset: usize) {
        if from < to {
            self.push_range(from + offset..to + offset);
        }
    }

    fn len(&self) -> usize {
        self.iter().map(ExactSizeIterator::len).sum()
    }

    /// The rest of a piece of a range input is the indices after `index`
    /// (the input is a `Range<usize>`, so its items are consecutive): one
    /// range, without walking them — at a stop, 64 threads handing back a
    /// few thousand indices each one by one cost more than the stop itself
    /// on 2 cores.
    fn push_run(
        &mut self,
        _at: usize,
        index: usize,
        left: usize,
        _rest: impl Iterator<Item = usize>,
    ) {
        debug_assert!(
            _rest.eq(index + 1..index + 1 + left),
            "a range's rest is consecutive"
        );
        self.push_range(index..index + 1 + left);
    }
}

/// Appending a later piece's results.
trait MergeOut {
    fn append(&mut self, later: Self);
}

/// Where the results go.
trait Out<R>: MergeOut + Default + Send {
    fn push(&mut self, at: usize, r: R);
    /// The positions of `[base, end)` without a result (the items that
    /// failed or panicked); empty when results are not kept.
    fn missing(&self, base: usize, end: usize) -> Vec<usize>;
}

/// `par_for_each`: nothing to keep.
#[derive(Default)]
struct Discard;

impl MergeOut for Discard {
    fn append(&mut self, _later: Self) {}
}

impl Out<()> for Discard {
    #[inline]
    fn push(&mut self, _at: usize, _r: ()) {}

    fn missing(&self, _base: usize, _end: usize) -> Vec<usize> {
        Vec::new()
    }
}

impl<R: Send> MergeOut for Vec<(usize, R)> {
    fn append(&mut self, mut later: Self) {
        Vec::append(self, &mut later);
    }
}

impl<R: Send> Out<R> for Vec<(usize, R)> {
    fn push(&mut self, at: usize, r: R) {
        Vec::push(self, (at, r));
    }

    fn missing(&self, base: usize, end: usize) -> Vec<usize> {
        // Results are in position order within a piece.
        let mut have = self.iter().map(|&(at, _)| at).peekable();
        (base..end)
            .filter(|at| {
                if have.peek() == Some(at) {
                    have.next();
                    false
                } else {
                    true
                }
            })
            .collect()
    }
}

/// Drains an indexed parallel iterator on the calling thread, without a
/// pool, into a [`Back`]: a call made after the rayon pool was given up
/// hands every item back this way.
struct HandAll<B>(PhantomData<B>);

impl<T, B: Back<T>> ProducerCallback<T> for HandAll<B> {
    type Output = B;

    fn callback<P: Producer<Item = T>>(self, producer: P) -> B {
        let mut back = B::default();
        for (at, item) in producer.into_iter().enumerate() {
            back.push(at, item);
        }
        back
    }
}

// ===== Handed-back items in the report =====

/// One item type's handed-back items, until the report takes them.
struct Stashed {
    raw: u64,
    items: Box<dyn Stash>,
}

/// A `Vec<T>` of handed-back items behind a type-erased box.
trait Stash: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    fn put(self: Box<Self>, raw: u64, name: &str, report: &mut Report);
}

impl<T: Send + 'static> Stash for Vec<T> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn put(self: Box<Self>, raw: u64, name: &str, report: &mut Report) {
        report.put_handed_back(PoolId::<T>::from_raw(raw), name, *self);
    }
}

/// An error with its causes, as pools format them; a `Display` that panics
/// is caught.
fn error_text(e: &anyhow::Error) -> String {
    catch(|| format!("{e:#}")).unwrap_or_else(|p| format!("<Display panicked: {p}>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_adjacent_pieces_at_the_junction() {
        let mut a = Ranges::default();
        for i in [5, 6, 7, 9] {
            a.push(0, i);
        }
        let mut b = Ranges::default();
        for i in [0, 1, 3, 4] {
            b.push(0, i);
        }
        b.append(a);
        assert_eq!(Back::<usize>::len(&b), 8);
        assert_eq!(b.into_vec(), [0..2, 3..8, 9..10]);
        // A run after the inline first range, and one merging into it.
        let mut c = Ranges::default();
        c.push_run(0, 3, 2, 4..6);
        c.push_run(0, 6, 1, 7..8);
        c.push_run(0, 10, 0, 11..11);
        assert_eq!(c.into_vec(), [3..8, 10..11]);
    }

    /// The fallback loop, for an iterator whose size hint is not exact
    /// (rayon's own producers always give exact ones, so only a folder
    /// driven by hand reaches it): positions counted one by one, across
    /// two calls on one folder and across the stop.
    #[test]
    fn a_folder_fed_an_iterator_of_unknown_length_counts_positions_itself() {
        let mut rt = crate::Runtime::builder().signals(false).build().unwrap();
        let handle = rt.handle();
        let pool = rt.rayon("fallback").threads(1).build().unwrap();
        let core = &*pool.core;
        let rayon_pool = core.begin(20).expect("running");
        let f = |x: u64, _: &Token| -> anyhow::Result<u64> {
            if x == 14 {
                handle.request("enough");
            }
            anyhow::ensure!(x != 3, "three");
            Ok(x * 10)
        };
        let run: Run<'_, _, u64, u64, Positioned<u64>, Positioned<u64>> = Run {
            core,
            f: &f,
            flag: core.token.stop_flag(),
            token: &core.token,
            base: 100,
            end: 120,
            offset: 0,
            _types: PhantomData,
        };
        let folder = run.into_folder();
        // `filter` keeps every item but makes the hint inexact.
        let folder = folder.consume_iter((0..10u64).filter(|_| true));
        assert_eq!(folder.next_at, 110);
        let folder = folder.consume_iter((10..20u64).filter(|_| true));
        assert_eq!(folder.next_at, 120);
        let leaf = folder.complete();
        // Ran 0..=14 (3 failed), the stop was seen before 15.
        let ran: Vec<(usize, u64)> = (0..15)
            .filter(|&x| x != 3)
            .map(|x| (100 + x as usize, x * 10))
            .collect();
        assert_eq!(leaf.out, ran);
        assert_eq!(leaf.failed_at, [103]);
        let back: Vec<(usize, u64)> = (15..20).map(|x| (100 + x as usize, x)).collect();
        assert_eq!(leaf.back, back);
        assert_eq!((leaf.tally.succeeded, leaf.tally.failed), (14, 1));
        core.hand_back(leaf.back, 5);
        drop((rayon_pool, pool));
        rt.run();
    }

    #[test]
    fn a_stash_keeps_one_list_per_type() {
        let mut s: Box<dyn Stash> = Box::new(vec![1u32]);
        s.as_any()
            .downcast_mut::<Vec<u32>>()
            .expect("same type")
            .push(2);
        assert!(s.as_any().downcast_mut::<Vec<u64>>().is_none());
    }
}
