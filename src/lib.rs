//! Graceful shutdown for programs that do their work on OS threads.
//!
//! winddown turns Ctrl-C or SIGTERM into an orderly stop — **stop accepting
//! new work → drain in-flight work → release resources → exit** — within a
//! deadline, losing no job, and tells you what happened in a [`Report`]. It is
//! a blocking runtime: no async anywhere.
//!
//! # Quick start
//!
//! ```toml
//! [dependencies]
//! winddown = "0.1"
//! anyhow = "1" # or use the re-export, `winddown::anyhow`
//! ```
//!
//! ```no_run
//! use std::process::ExitCode;
//! use std::time::Duration;
//! use winddown::Runtime;
//!
//! fn main() -> anyhow::Result<ExitCode> {
//!     let mut rt = Runtime::builder().grace(Duration::from_secs(10)).build()?;
//!     let jobs = rt.pool::<u64>("hash").workers(4).start(|n, _token| {
//!         let _digest = (0..n).fold(0u64, |h, i| h.rotate_left(5) ^ i);
//!         Ok(())
//!     })?;
//!     rt.on_release("flush", Duration::from_secs(1), || Ok(()));
//!     std::thread::spawn(move || {
//!         // A producer stops as soon as `submit` hands its job back.
//!         for n in 0..1_000_000 {
//!             if jobs.submit(n).is_err() {
//!                 break;
//!             }
//!         }
//!     });
//!     let report = rt.run(); // Ctrl-C once: drain; twice: exit now
//!     eprintln!("{report}");
//!     Ok(report.process_exit_code())
//! }
//! ```
//!
//! # Lifecycle
//!
//! ```text
//! Running ─trigger─► StopAccepting ─► Draining ─(all joined)──────────► Releasing ─► Done
//!                                     stage 0,  └─(deadline)─► HardStop ─(kill grace)─┘
//!                                     stage 1, …
//! ```
//!
//! | phase | entered when | what holds in it |
//! | --- | --- | --- |
//! | `Running` | the runtime is built | every stage accepts work |
//! | `StopAccepting` | the first trigger | the first stage's tokens report stopping, its queues close, blocked `submit`s return their jobs; the stop-accepting hooks run; later stages still accept |
//! | `Draining` | the hooks returned | the stages drain in order: each waits for its threads, then the next one stops accepting and drains |
//! | `HardStop` | `trigger + grace` with a thread still running | every stage's hard token fires, the stages not yet begun begin; at `trigger + grace + kill grace` the threads still running are named and detached |
//! | `Releasing` | every stage drained or was given up on | the release hooks run, last registered first |
//! | `Done` | the hooks returned | the [`Report`] is made |
//!
//! * **Trigger.** A signal (see [Signals](#signals)), [`Handle::request`],
//!   a failed job in a [fail-fast](PoolBuilder::fail_fast) pool, dropping
//!   the runtime, or completion (below). The first trigger's [`StopReason`]
//!   wins.
//! * **StopAccepting.** Every [`Token`] of the first stage (every token but
//!   those of [later stages](#stages)) reports stopping, every queue of the
//!   first stage closes, blocked `submit`s return their jobs, stop-accepting
//!   hooks run.
//! * **Draining.** Workers finish what they hold — and, under
//!   [`DrainPolicy::Finish`], what is queued — and exit between jobs. The
//!   runtime joins them on a channel with a deadline (`grace`), one stage
//!   after another.
//! * **HardStop.** At the deadline the hard token fires; at `grace + kill
//!   grace` from the trigger the threads still running are named in the
//!   report and detached.
//! * **Releasing.** Release hooks run, last registered first, each bounded by
//!   its budget, each exactly once.
//! * **Done.** [`Runtime::run`] returns the [`Report`].
//!
//! # Stages
//!
//! The full pattern is ordered: the server stops accepting and finishes its
//! requests, *then* the background workers drain, *then* resources are
//! released. [`Runtime::stage`] makes a later stage; a pool put in it with
//! [`PoolBuilder::stage`] goes on accepting and running jobs after the
//! trigger — a request handler still in flight can queue work — until every
//! thread of the earlier stages has exited. Then its tokens stop, its queue
//! closes, and it drains under its policy. Everything not given a stage
//! (servers, background threads, pools) is in [`Stage::FIRST`].
//!
//! One deadline bounds the whole stop: every stage shares `trigger +
//! grace`. [`Runtime::stage_with_budget`] (and
//! [`Runtime::first_stage_budget`]) give a stage a bound of its own, from
//! when it began: past it only that stage's hard token fires, its threads
//! get the kill grace, and the next stage begins. So the stop still ends
//! within `grace + kill grace` + the hook budgets from the trigger. The
//! report lists each stage with when it began and its drain latency
//! ([`Report::stages`]).
//!
//! ```
//! use std::time::Duration;
//! use winddown::Runtime;
//!
//! let mut rt = Runtime::builder().signals(false).build()?;
//! let workers = rt.stage_with_budget("workers", Duration::from_secs(5))?;
//! let mail = rt.pool::<String>("mail").stage(workers).workers(1).start(|_to, _| Ok(()))?;
//! rt.spawn_service("acceptor", move |token| {
//!     token.wait(); // the stop: a request still in flight...
//!     mail.submit("ops@example.com".into()).expect("...queues its mail");
//!     Ok(())
//! })?;
//! rt.handle().request("deploy");
//! let report = rt.run();
//! assert_eq!(report.pool("mail").unwrap().succeeded, 1);
//! assert_eq!(report.stages[1].name, "workers");
//! # Ok::<(), winddown::BuildError>(())
//! ```
//!
//! **Completion.** The run ends by itself ([`StopReason::Completed`]) when
//! every thread that holds it open has exited: a pool's workers hold it (a
//! pool is done once all its [`Submitter`]s are dropped and its queue has
//! drained), and so do services ([`Runtime::spawn_service`], the
//! [`Server`]'s threads), which run until a stop — so a warm-up pool that
//! drains does not end a program that also serves. Helpers
//! ([`Runtime::spawn`]) never hold the run open; a runtime with nothing but
//! helpers completes when they have all returned.
//!
//! **A stop during start-up** is not an error: a pool, thread or server
//! added after the trigger starts stopped (its workers exit at once, its
//! submits hand the job back), and `run` goes straight to the stop.
//!
//! # Signals
//!
//! A runtime built with signals on (the default) stops on SIGINT, SIGTERM and
//! SIGHUP ([`Builder::handle_signals`] chooses the set; on Windows, Ctrl-C).
//! Signals are counted per process, from the last runtime built:
//!
//! | case | outcome | exit code |
//! | --- | --- | --- |
//! | first signal while `Running` (also during start-up) | graceful stop, reason [`StopReason::Signal`] with the signal | 130, or 1 if something failed |
//! | first signal while a stop begun by code, completion or fail-fast runs (StopAccepting, Draining, HardStop, Releasing) | nothing: the stop goes on, hooks run | the report's (0 or 1) |
//! | second distinct signal, any phase, force-exit on (default) | the process ends at once, `winddown: second signal (…), exiting now` on stderr, no report | [`ExitCodes::forced`], 3 |
//! | second distinct signal, [force-exit off](Builder::force_exit_on_second_signal) | nothing | the report's |
//! | the same signal again within 100 ms (coreutils `timeout`, an init system or a shell signalling the child and its process group) | one delivery: ignored | — |
//! | a signal after `run` returned | counted by the same rule: a first is nothing, a second exits only with force-exit on | 3, or the program's |
//! | a signal inherited as ignored (`nohup` → SIGHUP, `trap '' INT`) | stays ignored, unless [`Builder::honor_ignored_signals`]`(false)` | — |
//! | a signal not in the runtime's set | its disposition is untouched (default action), unless an earlier runtime in the process hooked it (then it is swallowed) | — |
//! | several runtimes in one process | a signal stops every running one; it counts as a second signal only if it began no stop | as above |
//!
//! The count restarts when a runtime is built, and that runtime's force-exit
//! choice holds until the next one is built. A stop begun by code never
//! counts as a signal. No runtime ever built: nothing is installed.
//!
//! # Exit codes
//!
//! The library never exits by itself (except on the second signal); it hands
//! the program a code in [`Report::exit_code`]:
//!
//! | outcome | code |
//! | --- | --- |
//! | completed or requested, nothing failed | 0 |
//! | stopped by a signal, drained cleanly | 130 |
//! | a job failed or panicked, a hook failed or timed out, a background thread failed, a thread was stuck, the hard stop fired (work was cut at the deadline), or a server connection was forced | 1 |
//! | the second signal ended the process at once | 3 |
//!
//! Override them with [`Builder::exit_codes`] (and
//! [`Builder::forced_exit_code`]).
//!
//! # Guarantees
//!
//! 1. **Nothing lost.** For every pool, `submitted = succeeded + failed +
//!    panicked + handed_back + abandoned` ([`PoolReport::is_balanced`]); a
//!    refused submit returns the job in its error.
//! 2. **No hang.** From the trigger, `run` returns within grace + kill grace
//!    + the hook budgets.
//! 3. **No busy waiting.** Every wake-up is a channel message, a disconnect
//!    or a deadline; an idle runtime uses no CPU.
//! 4. **Jobs are not cut.** Workers stop between jobs; mid-job only where the
//!    job checks [`Token::is_hard_stopping`].
//! 5. **No exit with cleanup pending**, except the second signal.
//! 6. **Release hooks run exactly once**, in reverse order.
//! 7. **Threads carry names**: `<pool>-<i>` or the name given.
//!
//! # Batch tools on rayon
//!
//! With the `rayon` feature, [`Runtime::rayon`] gives a [`RayonPool`]: a
//! rayon thread pool whose threads the runtime spawns (through rayon's
//! `spawn_handler`), names (`hash-0` …) and joins in the same drain as
//! every other thread, against the same deadline. Its `par_for_each`,
//! `par_for_each_range`, `par_map` and `scope` run on it and stop like a
//! pool drains:
//!
//! * before each item, one relaxed atomic load checks the token: once the
//!   stop has begun no new item starts;
//! * items in flight finish (they get the [`Token`], and may give up when
//!   its hard stop fires at the deadline);
//! * a panic or an `Err` in an item is caught and counted, and the other
//!   items go on;
//! * the items that never started are handed back in input order — the
//!   items themselves, or index ranges for a range — in the [`Report`]
//!   ([`Report::take_handed_back`] with [`RayonPool::id`]); `par_map`
//!   returns them with the results it has;
//! * the pool's [`PoolReport`] keeps the identity `submitted = succeeded +
//!   failed + panicked + handed_back + abandoned`.
//!
//! ```
//! # #[cfg(not(feature = "rayon"))] fn main() {} // this example needs `rayon`
//! # #[cfg(feature = "rayon")]
//! # fn main() -> Result<(), winddown::BuildError> {
//! use std::ops::Range;
//! use winddown::Runtime;
//!
//! let mut rt = Runtime::builder().signals(false).build()?;
//! let pool = rt.rayon("hash").threads(2).build()?;
//! let left = pool.id::<Range<usize>>();
//! let stop = rt.handle();
//! pool.par_for_each_range(0..100_000, |i, _token| {
//!     if i == 1_000 {
//!         stop.request("Ctrl-C"); // stands in for a signal
//!     }
//!     Ok(())
//! });
//! drop(pool); // its threads exit; the drain joins them
//! let mut report = rt.run();
//! let hash = report.pool("hash").unwrap();
//! assert!(hash.is_balanced() && hash.handed_back > 0);
//! let handed_back = hash.handed_back;
//! let todo: Vec<Range<usize>> = report.take_handed_back(left); // checkpoint these
//! assert_eq!(todo.iter().map(|r| r.len() as u64).sum::<u64>(), handed_back);
//! # Ok(())
//! # }
//! ```
//!
//! # Servers
//!
//! With the `http` feature (on by default), a blocking HTTP/1.1 [`Server`]
//! runs in the same runtime as the pools, and stops like Go's
//! `http.Server.Shutdown`:
//!
//! ```no_run
//! # #[cfg(not(feature = "http"))] fn main() {} // this example needs `http`
//! # #[cfg(feature = "http")]
//! use winddown::{Response, Runtime, Server};
//!
//! # #[cfg(feature = "http")]
//! fn main() -> anyhow::Result<std::process::ExitCode> {
//!     let mut rt = Runtime::new()?;
//!     Server::builder()
//!         .workers(16)
//!         .health_path("/health")
//!         .pre_close_delay(std::time::Duration::from_secs(5))
//!         .bind("127.0.0.1:8080")?
//!         .start(&mut rt, |req, _token| Ok(Response::text(200, format!("hi {}\n", req.path()))))?;
//!     let report = rt.run();
//!     eprintln!("{report}");
//!     Ok(report.process_exit_code())
//! }
//! ```
//!
//! * From the trigger, the health path answers 503 and every response
//!   carries `Connection: close`; after the optional
//!   [pre-close delay][pre-close] (accepting and
//!   serving all the while, so load balancers can deregister), the listener
//!   closes: the blocked `accept` is woken, not polled, and new connects are
//!   refused.
//! * Every request already read runs to completion. Idle keep-alive
//!   connections are closed at once, with a FIN; connections that have not
//!   sent a full request get a short close window (200 ms by default) to
//!   send it, and are closed with a FIN at its end.
//! * A connection still busy at the drain deadline is shut down and counted
//!   as forced in [`Report::servers`] ([`ConnectionCounts`]); a forced
//!   connection counts as a failure (exit code 1), like a stuck job.
//! * An accept error (too many open files) pauses the acceptor (5 ms
//!   doubling to 1 s, cut short by the stop) and serving goes on.
//!
//! # systemd
//!
//! Started by systemd as a `Type=notify` service (`NOTIFY_SOCKET` set), a
//! runtime says `READY=1` when [`Runtime::run`] begins, `STOPPING=1` at the
//! trigger, extends systemd's stop timeout (`EXTEND_TIMEOUT_USEC`) to cover
//! the grace, kill grace and hook budgets it was given, and sends
//! `WATCHDOG=1` when `WATCHDOG_USEC` asks for it — from one waiting thread,
//! with std's datagram socket, no extra dependency. It is the `systemd`
//! feature, on by default; without `NOTIFY_SOCKET` it does nothing. See
//! [`Builder::notify_systemd`] for the messages and the opt-out.
//!
//! # Events
//!
//! With the `tracing` feature, winddown reports what it does as
//! [`tracing`](https://docs.rs/tracing) events with the target `winddown`
//! and structured fields (durations in milliseconds, `*_ms`). Without the
//! feature the calls are compiled out: no dependency, no cost. `tracing`
//! rather than `log` because the fields (signal, phase, pool, thread, job
//! key, durations) are what a log pipeline indexes, and `log` users still
//! get every event through `tracing`'s `log` feature or `tracing-log`.
//!
//! | event (message) | level | fields |
//! | --- | --- | --- |
//! | `signal received: stopping gracefully` | warn | `signal`, `number` |
//! | `signal received while a stop is under way: nothing more to do` | info | `signal`, `number` |
//! | `the same signal again within 100 ms: counted once` | debug | `signal` |
//! | `second signal: exiting now, without the report` | error | `signal`, `code` |
//! | `signal inherited as ignored (nohup, trap ''): left ignored` | info | `signal` |
//! | `signal handling registered` | debug | `signals`, `force_exit` |
//! | `stop begun` | info | `reason`, `ran_for_ms`, `grace_ms` |
//! | `phase` (each phase entered) | info | `phase` |
//! | `job failed` / `job panicked` | warn / error | `pool`, `job_key` (`-` without a key function), `error` / `panic` |
//! | `fail-fast pool: a failure stops the run` | warn | `pool` |
//! | `pool worker failed outside a job` (init, teardown) | error | `pool`, `thread`, `stage`, `panicked`, `error` |
//! | `drain deadline passed: hard stop; …` | warn | `still_running`, `grace_ms` |
//! | `drained` | info | `drain_latency_ms` |
//! | `kill grace over: threads still running are detached` | warn | `stuck` |
//! | `thread stuck past the deadline: detached` | warn | `thread`, `pool`, `job_key` (`-` if none), `in_job_ms` |
//! | `hook done` | debug | `hook`, `kind`, `elapsed_ms` |
//! | `hook overran its budget: …` | warn | `hook`, `kind`, `budget_ms` |
//! | `hook failed` / `hook panicked` | warn / error | `hook`, `kind`, `error` / `panic`, `elapsed_ms` |
//! | `background thread failed` / `… panicked` | warn / error | `thread`, `error` / `panic` |
//! | `accept failed; retrying after a pause` | warn | `addr`, `error`, `backoff_ms` |
//! | `handler failed: answered 500` / `handler panicked: …` | warn / error | `addr`, `path`, `error` / `panic` |
//! | `closing the listener` | info | `addr` |
//! | `drain deadline: closing the connections still open, …` | warn | `addr` |
//! | `stopped` (the last event of a run) | info | `reason`, `exit_code`, `total_ms`, `summary` |
//!
//! ```no_run
//! # #[cfg(feature = "tracing")] {
//! // Any subscriber works; e.g. with tracing-subscriber:
//! //   tracing_subscriber::fmt().with_env_filter("winddown=info").init();
//! let rt = winddown::Runtime::new()?;
//! let report = rt.run(); // events go to the subscriber as the stop runs
//! # let _ = report;
//! # }
//! # Ok::<(), winddown::BuildError>(())
//! ```
//!
//! # Measuring your own shutdown
//!
//! [`Measure`] stops a runtime of your program N times — each run built
//! afresh by a closure that returns the runtime and its work as a
//! [`Trial`] — and returns the [`Percentiles`] (min, p50, p90, p99, max) of
//! its drain latency, return latency (trigger → [`Runtime::run`] returned)
//! and hook time, for a criterion bench or a CI gate on the p99. The
//! trigger can wait until the work says it is ready
//! ([`Trial::ready_on`]), or a delay after that. Nothing in it is timed by
//! sleeping or polling; see [`Measure`] for a runnable example.
//!
//! A program (or test, or bench) that builds and stops runtimes again and
//! again can also turn on [`reuse_threads`]: the threads of a stopped
//! runtime park and run the next runtime's workers of the same name, so a
//! stop no longer waits for the kernel to tear hundreds of threads down.
//! It is off by default; its one visible change is that `thread_local!`
//! values outlive a run.
//!
//! # Features
//!
//! | feature | default | adds |
//! | --- | --- | --- |
//! | `http` | on | [`Server`], [`ServerBuilder`], [`Request`], [`Response`]: the blocking HTTP/1.1 server above (dependencies `httparse`, `socket2`); [`Listener`], `Handover`: socket activation and the handover to a new process (on Unix, `listenfd`, `rustix`) |
//! | `systemd` | on | `sd_notify` when `NOTIFY_SOCKET` is set ([systemd](#systemd); no dependencies) |
//! | `serde` | off | `Serialize` for [`Report`] and its parts ([serialization](Report#serialization); dependency `serde`) |
//! | `tracing` | off | events for logs ([Events](#events); dependency `tracing`) |
//! | `rayon` | off | [`Runtime::rayon`], [`RayonPool`]: parallel iterators and scopes that stop between items ([Batch tools on rayon](#batch-tools-on-rayon); dependency `rayon`) |
//!
//! With every feature off (`default-features = false`) the core — runtime,
//! pools, tokens, signals, hooks, the report — is all there; the report's
//! [`servers`](Report::servers) list is then always empty. Items that need a
//! feature say so on docs.rs.
//!
//! # Limitations
//!
//! * SIGKILL cannot be caught; nothing runs.
//! * A thread stuck in a blocking call that ignores tokens cannot be stopped:
//!   it is named in [`Report::stuck`] and detached, and the process exits
//!   around it.
//! * A signal hooked for one runtime stays hooked for the life of the
//!   process (the old disposition cannot be restored without `unsafe`).
//!
//! # Unsafe
//!
//! This crate has `#![forbid(unsafe_code)]`: the unsafe parts live in
//! crossbeam-channel, parking_lot and ctrlc, behind their safe APIs.
//!
//! # Architecture
//!
//! The modules form layers with no import cycle; `docs/architecture.md`
//! draws them:
//!
//! ```text
//! measure, server, par → runtime → pool → registry → shared → unit, join, submit
//!                 (signal, hooks and systemd beside registry)
//!        → slot, token, phase, report, reason, error, thread, event, stage
//! ```
//!
//! # Foreign types in the API
//!
//! * [`crossbeam_channel::Receiver`][Receiver], from [`Token::receiver`] and
//!   [`Token::hard_receiver`], for [`select!`][select] (add
//!   `crossbeam-channel = "0.5"` to your dependencies to use it).
//! * [`anyhow::Error`] and [`anyhow::Result`]: what jobs, hooks, background
//!   threads and handlers return; re-exported as [`winddown::anyhow`](mod@anyhow).
//! * With the `rayon` feature: rayon's `IntoParallelIterator` and
//!   `IndexedParallelIterator` (what [`RayonPool`]'s calls take) and
//!   `rayon::Scope` (what [`RayonPool::scope`] passes).
//!
//! <!-- crossbeam-channel sets no `html_root_url`, so rustdoc cannot link
//! into it without its docs built alongside: the links are written out. -->
//!
//! [Receiver]: https://docs.rs/crossbeam-channel/0.5/crossbeam_channel/struct.Receiver.html
//! [select]: https://docs.rs/crossbeam-channel/0.5/crossbeam_channel/macro.select.html

// The server's items exist only with `http`; without it, the crate docs
// link to them on docs.rs (built with every feature) so that `cargo doc
// --no-default-features` has no broken link either.
#![cfg_attr(feature = "http", doc = "[pre-close]: ServerBuilder::pre_close_delay")]
#![cfg_attr(
    not(feature = "http"),
    doc = "[pre-close]: https://docs.rs/winddown/0.1/winddown/struct.ServerBuilder.html#method.pre_close_delay",
    doc = "[`Server`]: https://docs.rs/winddown/0.1/winddown/struct.Server.html",
    doc = "[`ServerBuilder`]: https://docs.rs/winddown/0.1/winddown/struct.ServerBuilder.html",
    doc = "[`Request`]: https://docs.rs/winddown/0.1/winddown/struct.Request.html",
    doc = "[`Response`]: https://docs.rs/winddown/0.1/winddown/struct.Response.html",
    doc = "[`Listener`]: https://docs.rs/winddown/0.1/winddown/struct.Listener.html"
)]
// The same for the rayon items without the `rayon` feature.
#![cfg_attr(
    not(feature = "rayon"),
    doc = "[`Runtime::rayon`]: https://docs.rs/winddown/0.1/winddown/struct.Runtime.html#method.rayon",
    doc = "[`RayonPool`]: https://docs.rs/winddown/0.1/winddown/struct.RayonPool.html",
    doc = "[`RayonPool::scope`]: https://docs.rs/winddown/0.1/winddown/struct.RayonPool.html#method.scope",
    doc = "[`RayonPool::id`]: https://docs.rs/winddown/0.1/winddown/struct.RayonPool.html#method.id"
)]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
// docs.rs builds with `--cfg docsrs` (see `[package.metadata.docs.rs]`) and
// marks each feature-gated item with the feature it needs.
//
// The pattern for a feature-gated public item: `#[cfg(feature = "x")]` and
// `#[cfg_attr(docsrs, doc(cfg(feature = "x")))]` on the item itself and on
// its `pub use` below, so the note shows wherever the item is rendered.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
#[macro_use]
mod event;
mod hooks;
mod join;
mod measure;
#[cfg(feature = "rayon")]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
mod par;
mod phase;
mod pool;
mod reason;
mod registry;
mod report;
mod runtime;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
mod server;
mod shared;
mod signal;
mod slot;
mod stage;
mod submit;
mod systemd;
mod thread;
mod token;
mod unit;

pub use crate::error::{BuildError, InstallError};
pub use crate::measure::{
    Measure, MeasureError, MeasuredRun, Measurement, Percentiles, Trial, MEASURE_REQUEST,
};
#[cfg(feature = "rayon")]
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
pub use crate::par::{Mapped, ParOutcome, RayonBuilder, RayonPool, ScopeError};
pub use crate::phase::Phase;
pub use crate::pool::{DrainPolicy, Pool, PoolBuilder};
pub use crate::reason::{Signal, StopReason};
pub use crate::report::{
    ConnectionCounts, ExitCodes, HookKind, HookOutcome, HookReport, JobError, PoolId, PoolReport,
    Report, ServerReport, StageReport, StuckThread, TakeError, ThreadOutcome, ThreadReport,
    Timings, WorkerFailure, WorkerStage,
};
pub use crate::runtime::{Builder, Runtime, DEFAULT_GRACE, DEFAULT_KILL_GRACE};
#[cfg(all(feature = "http", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "http", unix))))]
pub use crate::server::Handover;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use crate::server::{
    Listener, ListenerSource, Request, Response, Server, ServerBuilder, HANDOVER_ENV,
};
pub use crate::shared::Handle;
pub use crate::stage::Stage;
pub use crate::submit::{FeedError, SubmitError, SubmitTimeoutError, Submitter, TrySubmitError};
pub use crate::thread::reuse_threads;
pub use crate::token::{StopSource, Token};

pub use crate::unit::PoolStats;
/// The [`anyhow`](https://docs.rs/anyhow/1) crate, re-exported: jobs, hooks,
/// background threads and handlers return [`anyhow::Result`], so
/// `winddown::anyhow::Result<()>` (and `winddown::anyhow::bail!`, …) work
/// without a dependency of your own. The version is the one winddown depends
/// on (1.x), so the error types always match.
///
/// ```
/// use winddown::anyhow::{ensure, Result};
///
/// fn job(n: u32) -> Result<()> {
///     ensure!(n != 13, "unlucky");
///     Ok(())
/// }
/// assert!(job(12).is_ok());
/// assert_eq!(job(13).unwrap_err().to_string(), "unlucky");
/// ```
pub use anyhow;
