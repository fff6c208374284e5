//! A queue consumer on SQLite: jobs from a durable table, run on a pool,
//! put back to pending at the stop, reclaimed after a crash.
//!
//! ```sh
//! cargo run --release --example queue -- --db /tmp/q.db --seed 2000   # create and fill the queue
//! cargo run --release --example queue -- --db /tmp/q.db               # consume; Ctrl-C once: drain; twice: exit at once
//! cargo run --release --example queue -- --db /tmp/q.db --until-empty # exit once the queue is empty
//! cargo run --release --example queue -- --help                       # every option
//! ```
//!
//! Try `kill -9` on a running consumer and start it again: the jobs the dead
//! process had claimed are reclaimed and run; the ones it had finished are
//! not run again.
//!
//! # The table
//!
//! ```sql
//! jobs(id, payload, state, owner, attempts, claimed_at, done_at)
//! -- state:      pending | claimed | done | failed
//! -- owner:      the pid of the process that claimed it (kept once done)
//! -- attempts:   how many times the job ran and failed (Err or panic)
//! -- claimed_at, done_at: Unix time in ms
//! ```
//!
//! The database is in WAL mode (readers never block the one writer) with a
//! busy timeout (`--busy-timeout-ms`), `synchronous = NORMAL` (a commit
//! survives the process being killed; in WAL mode only a power loss can undo
//! the last commits). Every write is one `BEGIN IMMEDIATE` transaction, so
//! two consumers on one database never claim the same job.
//!
//! # A job's life
//!
//! 1. The feeder (a service thread, stopped by the runtime's token) claims
//!    up to `--batch` pending jobs in one transaction (`state = claimed`,
//!    `owner = pid`) and submits them to the pool, waiting while its queue
//!    is full.
//! 2. A worker runs the job: its effect comes first (`run <id>` appended to
//!    the ledger), then its work time (`--work`), then it marks the job done
//!    in a transaction — only if this process still owns the claim.
//!    A SIGKILL between the `run` line and the commit makes the job run again
//!    later: delivery is *at least once*, and at most the jobs in flight at
//!    a kill (one per worker) run twice.
//! 3. A job that returns `Err` or panics goes back to `pending` with
//!    `attempts + 1`, or to `failed` once `attempts` reaches
//!    `--max-attempts`.
//! 4. At the stop, nothing stays claimed: a submit the pool refuses puts that
//!    job and the rest of its batch back to pending at once; the jobs still
//!    queued come back in the report (`DrainPolicy::HandBack`) and are put
//!    back; a job cut by the hard stop (its work waits on the hard token)
//!    puts itself back; a job whose thread is stuck at the deadline
//!    (`--deaf`) is put back from the report's abandoned keys. Anything still
//!    claimed by this pid after that is put back too and counted as *stray*
//!    (there should be none).
//! 5. On start, jobs left `claimed` by a process that no longer runs are
//!    reclaimed (put back to pending). "No longer runs" is decided by the
//!    owner's pid on this machine: `kill(pid, 0)` fails with `ESRCH`, or the
//!    pid is this process's own (a dead predecessor's pid reused). A pid
//!    reused by another live process keeps its jobs claimed until that
//!    process exits; `--lease-ms` bounds that (claims older than the lease
//!    are reclaimed whoever holds them — pick it longer than any job). A
//!    killed process that has not been reaped yet (a zombie) still counts as
//!    running.
//!
//! # Output
//!
//! Stdout carries `ready` once the signal handler is installed, the
//! reclaim is done and the feeder and workers run, `queue full` the first
//! time the feeder finds the pool's queue full, `phase <name>` at each
//! transition, `run <id>` as each job begins (with `--print-runs`), `empty`
//! when `--until-empty` finds nothing left to do, and at the end
//! `queue pending=<n> claimed=<n> done=<n> failed=<n>`, the table's counts
//! after the stop. `--seed N` prints `seeded <first>..=<last>` and exits.
//! The report goes to stderr (and as JSON to `--report`).
//!
//! The ledger (`--ledger`) gets one line per event, appended and written
//! through as it happens, so a SIGKILL loses none that were written:
//!
//! ```text
//! claim <id>            claimed by the feeder
//! run <id>              the job's effect: it ran (once per execution)
//! done <id>             marked done (after the commit)
//! fail <id> <state>     returned Err: now pending again or failed (or
//!                       lost: no longer this process's claim)
//! panic <id> <state>    panicked: likewise
//! interrupted <id>      cut by the hard stop: put back to pending
//! lost <id>             no longer this process's claim when it finished
//! unsubmitted <id>      refused by the pool at the stop: put back
//! handback <id>         still queued at the stop: put back
//! abandoned <id>        its worker was stuck at the deadline: put back
//! stray <id>            still claimed by this process at the end: put back
//! reclaim <id> <owner>  at start: left claimed by a process that is gone
//! ```
//!
//! Each worker has its own connection: the pool is started with
//! `start_with(init, job)`, whose init (`open_worker`) runs once on each
//! worker's thread and whose job (`run_job`) gets `&mut Connection`. A worker
//! whose connection cannot be opened takes no job and is reported; if none
//! can, the pool closes and its queued jobs come back at the stop.

#[path = "common/mod.rs"]
mod common;

use common::{parse_work, say, Ledger, Work};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, ValueEnum};
use crossbeam_channel::{after, never, select, Receiver, Sender};
use rusqlite::{params, Connection, TransactionBehavior};
use winddown::{DrainPolicy, HookOutcome, Report, Runtime, Submitter, Token, TrySubmitError};

/// A consumer of a durable job queue in SQLite, with a graceful stop:
/// Ctrl-C once drains and puts unfinished jobs back, twice exits at once.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The database file (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Create the table and add N pending jobs, then exit.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Worker threads (each with its own connection).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Pool queue capacity (default: twice the workers).
    #[arg(long)]
    capacity: Option<usize>,
    /// Jobs claimed per transaction (default: the workers).
    #[arg(long)]
    batch: Option<usize>,
    /// Work time per job: a fixed time (`5ms`) or a range (`5-20ms`); units
    /// `us`, `ms`, `s`. The work waits on the hard token, so the hard stop
    /// cuts it.
    #[arg(long, default_value = "5-20ms", value_parser = parse_work)]
    work: Work,
    /// Work ignores the hard token (a job stuck in a call that cannot be
    /// interrupted): at the deadline its thread is abandoned.
    #[arg(long)]
    deaf: bool,
    /// What happens to queued jobs at the stop: `handback` puts them back to
    /// pending unstarted, `finish` runs them within the deadline.
    #[arg(long, value_enum, default_value_t = Policy::Handback)]
    policy: Policy,
    /// Drain deadline, in ms from the signal.
    #[arg(long = "grace-ms", alias = "grace", default_value_t = 10_000)]
    grace_ms: u64,
    /// After the deadline, ms to wait before stuck threads are named and
    /// detached.
    #[arg(long = "kill-grace-ms", alias = "kill-grace", default_value_t = 1_000)]
    kill_grace_ms: u64,
    /// Failures (Err or panic) after which a job is `failed` instead of
    /// `pending` again.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Jobs whose id is divisible by K fail (every time).
    #[arg(long, value_name = "K")]
    fail_every: Option<u64>,
    /// Exit once no job is pending and none is in flight, instead of
    /// waiting for new jobs.
    #[arg(long)]
    until_empty: bool,
    /// Without `--until-empty`: how often an idle consumer looks for jobs
    /// added by others, in ms (the wait ends at once on a stop).
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Reclaim at start any claim older than this many ms, whoever holds it
    /// (by default only claims of processes that no longer run).
    #[arg(long, value_name = "MS")]
    lease_ms: Option<u64>,
    /// How long a connection waits for another one's write lock, in ms.
    #[arg(long, default_value_t = 5_000)]
    busy_timeout_ms: u64,
    /// Append one line per event to this file.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Write the report as JSON to this file (atomically).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print `run <id>` on stdout as each job begins.
    #[arg(long)]
    print_runs: bool,
    /// No report on stderr, no panic messages.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Policy {
    Finish,
    Handback,
}

/// One claimed job, as the pool carries it.
#[derive(Debug)]
struct Job {
    id: i64,
    payload: String,
}

// ===== Ledger and stdout =====

// ===== The store: every statement on the jobs table =====

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id         INTEGER PRIMARY KEY,
    payload    TEXT    NOT NULL,
    state      TEXT    NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    owner      INTEGER,
    attempts   INTEGER NOT NULL DEFAULT 0,
    claimed_at INTEGER,
    done_at    INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);
";

/// Unix time in ms, for `claimed_at` and `done_at`.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Opens a connection with the busy timeout and the durability this
/// example relies on (see the module docs).
fn open(path: &Path, busy_timeout: Duration) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Opens the main connection: WAL mode (a property of the file, so set
/// once here) and the table.
fn open_main(path: &Path, busy_timeout: Duration) -> anyhow::Result<Connection> {
    let conn = open(path, busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("{}: cannot use WAL mode (got {mode})", path.display());
    }
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Adds `n` pending jobs; returns the first and last id.
fn seed(conn: &mut Connection, n: u64) -> anyhow::Result<(i64, i64)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut first = None;
    let mut last = 0;
    {
        let mut insert = tx.prepare("INSERT INTO jobs (payload) VALUES (?1)")?;
        for i in 0..n {
            insert.execute([format!("payload {i}")])?;
            last = tx.last_insert_rowid();
            first.get_or_insert(last);
        }
    }
    tx.commit()?;
    Ok((first.unwrap_or(0), last))
}

/// Claims up to `n` pending jobs, lowest ids first, for `me`.
fn claim(conn: &mut Connection, me: i64, n: usize) -> anyhow::Result<Vec<Job>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut jobs = {
        let mut stmt = tx.prepare_cached(
            "UPDATE jobs SET state = 'claimed', owner = ?1, claimed_at = ?2
             WHERE id IN (SELECT id FROM jobs WHERE state = 'pending' ORDER BY id LIMIT ?3)
             RETURNING id, payload",
        )?;
        let rows = stmt.query_map(
            params![me, now_ms(), i64::try_from(n).unwrap_or(i64::MAX)],
            |r| {
                Ok(Job {
                    id: r.get(0)?,
                    payload: r.get(1)?,
                })
            },
        )?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.commit()?;
    // RETURNING gives no order; keep the queue's.
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// Marks job `id` done if `me` still holds its claim; `false` if not (its
/// claim was reclaimed: a lease that expired while it ran).
fn mark_done(conn: &mut Connection, id: i64, me: i64) -> anyhow::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx.execute(
        "UPDATE jobs SET state = 'done', done_at = ?3
         WHERE id = ?1 AND state = 'claimed' AND owner = ?2",
        params![id, me, now_ms()],
    )?;
    tx.commit()?;
    Ok(n == 1)
}

/// Records a failed run of job `id`: `attempts + 1`, and `pending` again, or
/// `failed` once the attempts reach `max`. Returns the new state, `None` if
/// `me` no longer holds the claim.
fn mark_failed(
    conn: &mut Connection,
    id: i64,
    me: i64,
    max: u32,
) -> anyhow::Result<Option<String>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state = {
        let mut stmt = tx.prepare_cached(
            "UPDATE jobs SET attempts = attempts + 1, owner = NULL, claimed_at = NULL,
                 state = CASE WHEN attempts + 1 >= ?3 THEN 'failed' ELSE 'pending' END
             WHERE id = ?1 AND state = 'claimed' AND owner = ?2
             RETURNING state",
        )?;
        let mut rows = stmt.query_map(params![id, me, max], |r| r.get::<_, String>(0))?;
        rows.next().transpose()?
    };
    tx.commit()?;
    Ok(state)
}

/// Puts the given jobs back to pending if `me` holds their claim; returns
/// the ids it put back.
fn put_back(conn: &mut Connection, ids: &[i64], me: i64) -> anyhow::Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut back = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE jobs SET state = 'pending', owner = NULL, claimed_at = NULL
             WHERE id = ?1 AND state = 'claimed' AND owner = ?2",
        )?;
        for &id in ids {
            if stmt.execute(params![id, me])? == 1 {
                back.push(id);
            }
        }
    }
    tx.commit()?;
    Ok(back)
}

/// Puts every job still claimed by `me` back to pending; returns their ids.
fn put_back_all(conn: &mut Connection, me: i64) -> anyhow::Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ids = {
        let mut stmt = tx.prepare(
            "UPDATE jobs SET state = 'pending', owner = NULL, claimed_at = NULL
             WHERE state = 'claimed' AND owner = ?1
             RETURNING id",
        )?;
        let rows = stmt.query_map([me], |r| r.get::<_, i64>(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.commit()?;
    ids.sort_unstable();
    Ok(ids)
}

/// Whether the process `pid` still runs on this machine (`kill(pid, 0)`;
/// `EPERM` means it runs as another user).
#[cfg(unix)]
fn pid_runs(pid: i64) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // `kill(0, …)` and negative pids address process groups.
        return false;
    }
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Elsewhere there is no cheap check: every owner counts as running, and
/// only `--lease-ms` reclaims.
#[cfg(not(unix))]
fn pid_runs(_pid: i64) -> bool {
    true
}

/// Puts back to pending the jobs left claimed by a process that no longer
/// runs, or by this process's pid (a dead predecessor's, reused), or
/// claimed before `lease` ago. Returns `(id, old owner)` of each.
fn reclaim(
    conn: &mut Connection,
    me: i64,
    lease: Option<Duration>,
) -> anyhow::Result<Vec<(i64, Option<i64>)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let claimed: Vec<(i64, Option<i64>, Option<i64>)> = {
        let mut stmt = tx.prepare(
            "SELECT id, owner, claimed_at FROM jobs WHERE state = 'claimed' ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let expired_before = lease.map(|l| now_ms() - i64::try_from(l.as_millis()).unwrap_or(0));
    let mut reclaimed = Vec::new();
    {
        let mut put = tx.prepare(
            "UPDATE jobs SET state = 'pending', owner = NULL, claimed_at = NULL WHERE id = ?1",
        )?;
        for (id, owner, claimed_at) in claimed {
            let gone = owner.map_or(true, |o| o == me || !pid_runs(o));
            let expired = matches!((expired_before, claimed_at), (Some(t), Some(c)) if c < t);
            if gone || expired {
                put.execute([id])?;
                reclaimed.push((id, owner));
            }
        }
    }
    tx.commit()?;
    Ok(reclaimed)
}

/// The table's counts by state.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    pending: u64,
    claimed: u64,
    done: u64,
    failed: u64,
}

fn counts(conn: &Connection) -> anyhow::Result<Counts> {
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
    let mut c = Counts::default();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        let n = u64::try_from(n)?;
        match state.as_str() {
            "pending" => c.pending = n,
            "claimed" => c.claimed = n,
            "done" => c.done = n,
            "failed" => c.failed = n,
            other => bail!("unknown job state {other:?}"),
        }
    }
    Ok(c)
}

// ===== The consumer =====

/// What the feeder and the workers share.
struct Context {
    db: PathBuf,
    busy_timeout: Duration,
    /// This process's pid: the `owner` of its claims.
    me: i64,
    ledger: Ledger,
    work: Work,
    deaf: bool,
    fail_every: Option<u64>,
    max_attempts: u32,
    print_runs: bool,
    /// Jobs claimed by the feeder and not yet settled by a worker (done,
    /// failed or put back) nor put back by the feeder. Only the feeder adds
    /// (before it submits), so once it reads zero, every job it claimed has
    /// been settled (each worker's commit comes before its decrement, which
    /// is `Release` and pairs with the feeder's `Acquire` load).
    in_flight: AtomicUsize,
    /// Wakes the feeder when a job settles (it may have gone back to
    /// pending). Capacity one: a full channel means a wake-up is pending
    /// already, and the feeder's next claim comes after it.
    settled: Sender<()>,
}

/// The per-worker init: one connection for every job of this worker.
fn open_worker(cx: &Context) -> anyhow::Result<Connection> {
    open(&cx.db, cx.busy_timeout)
}

/// Counts a job as settled when dropped: at the end of the job, also when
/// it panics.
struct Settle<'a>(&'a Context);

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
        let _ = self.0.settled.try_send(());
    }
}

/// How a job's work ended, short of a panic.
enum Ran {
    Finished,
    /// The hard token fired while it worked.
    Interrupted,
}

/// The job's work: wait the work time, cut short by the hard stop unless
/// `--deaf`; fail if `--fail-every` says so.
fn work(cx: &Context, job: &Job, token: &Token) -> anyhow::Result<Ran> {
    let mut rng = fastrand::Rng::with_seed(job.id.unsigned_abs());
    let span = u64::try_from((cx.work.max - cx.work.min).as_nanos()).unwrap_or(u64::MAX);
    let cost = cx.work.min + Duration::from_nanos(rng.u64(0..=span));
    if cx.deaf {
        // Deaf to every token, like a thread stuck in a system call.
        std::thread::sleep(cost);
    } else if token.wait_hard_timeout(cost) {
        return Ok(Ran::Interrupted);
    }
    if cx
        .fail_every
        .is_some_and(|k| k != 0 && job.id.unsigned_abs() % k == 0)
    {
        bail!("job {} ({}): injected failure", job.id, job.payload);
    }
    Ok(Ran::Finished)
}

/// One job on one worker: its effect, its work, then its settlement in the
/// table. An `Err` or a panic is recorded in the table first, then passed on
/// to the pool, which counts it.
fn run_job(conn: &mut Connection, cx: &Context, job: Job, token: &Token) -> anyhow::Result<()> {
    let id = job.id;
    cx.ledger.log(format_args!("run {id}"));
    if cx.print_runs {
        say(format_args!("run {id}"));
    }
    match catch_unwind(AssertUnwindSafe(|| work(cx, &job, token))) {
        Ok(Ok(Ran::Finished)) => {
            if mark_done(conn, id, cx.me)? {
                cx.ledger.log(format_args!("done {id}"));
            } else {
                cx.ledger.log(format_args!("lost {id}"));
            }
            Ok(())
        }
        Ok(Ok(Ran::Interrupted)) => {
            if put_back(conn, &[id], cx.me)?.is_empty() {
                cx.ledger.log(format_args!("lost {id}"));
            } else {
                cx.ledger.log(format_args!("interrupted {id}"));
            }
            Err(anyhow!(
                "job {id}: cut by the hard stop, put back to pending"
            ))
        }
        Ok(Err(e)) => {
            let state = mark_failed(conn, id, cx.me, cx.max_attempts)?;
            let state = state.as_deref().unwrap_or("lost");
            cx.ledger.log(format_args!("fail {id} {state}"));
            Err(e)
        }
        Err(panic) => {
            // Best effort: the panic goes on to the pool either way.
            let state = mark_failed(conn, id, cx.me, cx.max_attempts);
            let state = match &state {
                Ok(Some(s)) => s.as_str(),
                Ok(None) => "lost",
                Err(_) => "claimed",
            };
            cx.ledger.log(format_args!("panic {id} {state}"));
            resume_unwind(panic)
        }
    }
}

/// The feeder: claims small batches and submits them until the stop (or,
/// with `--until-empty`, until nothing is left). Waits are on the stop
/// receiver, the `settled` channel and a poll deadline, never a sleep.
fn feed(
    cx: &Context,
    submitter: &Submitter<Job>,
    settled: &Receiver<()>,
    token: &Token,
    batch: usize,
    until_empty: bool,
    poll: Duration,
) -> anyhow::Result<()> {
    let mut conn = open(&cx.db, cx.busy_timeout)?;
    let said_full = &mut false;
    loop {
        if token.is_stopping() {
            return Ok(());
        }
        // Read before the claim: zero here means every job claimed so far
        // was settled before the claim looks (see `Context::in_flight`).
        let busy = cx.in_flight.load(Ordering::Acquire);
        let jobs = claim(&mut conn, cx.me, batch)?;
        if jobs.is_empty() {
            if until_empty && busy == 0 {
                say(format_args!("empty"));
                return Ok(());
            }
            let poll = if until_empty { never() } else { after(poll) };
            select! {
                recv(token.receiver()) -> _ => return Ok(()),
                recv(settled) -> _ => {}
                recv(poll) -> _ => {}
            }
            continue;
        }
        cx.in_flight.fetch_add(jobs.len(), Ordering::Relaxed);
        for job in &jobs {
            cx.ledger.log(format_args!("claim {}", job.id));
        }
        let mut rest = jobs.into_iter();
        while let Some(job) = rest.next() {
            let refused = match submitter.try_submit(job) {
                Ok(()) => continue,
                Err(TrySubmitError::Full(job)) => {
                    if !*said_full {
                        *said_full = true;
                        say(format_args!("queue full"));
                    }
                    match submitter.submit(job) {
                        Ok(()) => continue,
                        Err(refused) => refused.into_inner(),
                    }
                }
                Err(refused) => refused.into_inner(),
            };
            // The stop: this job and the rest of the batch never reach a
            // worker; back to pending at once.
            let ids: Vec<i64> = std::iter::once(refused).chain(rest).map(|j| j.id).collect();
            cx.in_flight.fetch_sub(ids.len(), Ordering::Relaxed);
            for id in put_back(&mut conn, &ids, cx.me)? {
                cx.ledger.log(format_args!("unsubmitted {id}"));
            }
            return Ok(());
        }
    }
}

/// What the stop put back to pending, by where the jobs were.
#[derive(Debug, Default)]
struct PutBack {
    handed_back: Vec<i64>,
    abandoned: Vec<i64>,
    stray: Vec<i64>,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let busy_timeout = Duration::from_millis(args.busy_timeout_ms);
    let mut conn = open_main(&args.db, busy_timeout)?;
    if let Some(n) = args.seed {
        let (first, last) = seed(&mut conn, n)?;
        say(format_args!("seeded {first}..={last}"));
        return Ok(ExitCode::SUCCESS);
    }
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if args.quiet {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let ledger = Ledger::open(args.ledger.as_deref())?;
    let me = i64::from(std::process::id());

    let mut rt = Runtime::builder()
        .grace(Duration::from_millis(args.grace_ms))
        .kill_grace(Duration::from_millis(args.kill_grace_ms))
        .on_phase(|phase| say(format_args!("phase {phase}")))
        .build()?;

    // Before any claim of ours: what a killed predecessor left claimed.
    let reclaimed = reclaim(&mut conn, me, args.lease_ms.map(Duration::from_millis))?;
    for (id, owner) in &reclaimed {
        let owner = owner.map_or_else(|| "none".to_owned(), |o| o.to_string());
        ledger.log(format_args!("reclaim {id} {owner}"));
    }

    let (settled_tx, settled_rx) = crossbeam_channel::bounded(1);
    let cx = Arc::new(Context {
        db: args.db.clone(),
        busy_timeout,
        me,
        ledger: ledger.clone(),
        work: args.work,
        deaf: args.deaf,
        fail_every: args.fail_every,
        max_attempts: args.max_attempts,
        print_runs: args.print_runs,
        in_flight: AtomicUsize::new(0),
        settled: settled_tx,
    });

    let mut pool = rt
        .pool::<Job>("queue")
        .workers(args.workers)
        .drain(match args.policy {
            Policy::Finish => DrainPolicy::Finish,
            Policy::Handback => DrainPolicy::HandBack,
        })
        .key(|job: &Job| job.id);
    if let Some(c) = args.capacity {
        pool = pool.capacity(c);
    }
    let init_cx = cx.clone();
    let job_cx = cx.clone();
    let pool = pool.start_with(
        move |_worker| open_worker(&init_cx),
        move |conn: &mut Connection, job: Job, token: &Token| {
            let cx = &*job_cx;
            let _settle = Settle(cx);
            run_job(conn, cx, job, token)
        },
    )?;
    let pool_id = pool.id();

    // The feeder holds the only submitter: when it returns (the stop, or
    // `--until-empty` with nothing left) the pool closes and drains.
    let feed_cx = cx.clone();
    let batch = args.batch.unwrap_or(args.workers).max(1);
    let (until_empty, poll) = (args.until_empty, Duration::from_millis(args.poll_ms));
    rt.spawn_service("feeder", move |token| {
        let submitter = pool.into_submitter();
        feed(
            &feed_cx,
            &submitter,
            &settled_rx,
            &token,
            batch,
            until_empty,
            poll,
        )
    })?;

    say(format_args!("ready"));
    let mut report = rt.run();

    // Nothing stays claimed by this process: what the pool handed back,
    // what a stuck worker held, and (there should be none) anything else.
    let mut back = PutBack::default();
    let handed: Vec<i64> = report
        .take_handed_back(pool_id)
        .iter()
        .map(|j| j.id)
        .collect();
    back.handed_back = put_back(&mut conn, &handed, me)?;
    for id in &back.handed_back {
        ledger.log(format_args!("handback {id}"));
    }
    let stuck: Vec<i64> = report
        .pool("queue")
        .map(|p| {
            p.abandoned_keys
                .iter()
                .filter_map(|k| k.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    back.abandoned = put_back(&mut conn, &stuck, me)?;
    for id in &back.abandoned {
        ledger.log(format_args!("abandoned {id}"));
    }
    back.stray = put_back_all(&mut conn, me)?;
    for id in &back.stray {
        ledger.log(format_args!("stray {id}"));
    }
    if !back.stray.is_empty() {
        eprintln!(
            "{} jobs were still claimed by this process after the stop; put back: {:?}",
            back.stray.len(),
            back.stray
        );
    }

    let table = counts(&conn)?;
    if let Some(path) = &args.report {
        write_json(path, &report, &back, reclaimed.len(), table)?;
    }
    if !args.quiet {
        eprintln!("{report:#}");
    }
    say(format_args!(
        "queue pending={} claimed={} done={} failed={}",
        table.pending, table.claimed, table.done, table.failed
    ));
    Ok(report.process_exit_code())
}

fn hook_status(outcome: &HookOutcome) -> &'static str {
    match outcome {
        HookOutcome::Ok => "ok",
        HookOutcome::Failed(_) => "failed",
        HookOutcome::Panicked(_) => "panicked",
        HookOutcome::TimedOut => "timed_out",
        _ => "other",
    }
}

/// Writes the report as JSON to a temporary file beside `path`, then renames
/// it over `path`, so a reader never sees half a report. The fields are the
/// `batch` example's, plus `reclaimed`, `put_back` and `queue`.
fn write_json(
    path: &Path,
    report: &Report,
    back: &PutBack,
    reclaimed: usize,
    table: Counts,
) -> anyhow::Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pools: Vec<_> = report
        .pools
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "workers": p.workers,
                "submitted": p.submitted,
                "succeeded": p.succeeded,
                "failed": p.failed,
                "panicked": p.panicked,
                "handed_back": p.handed_back,
                "abandoned": p.abandoned,
                "abandoned_keys": p.abandoned_keys,
            })
        })
        .collect();
    let json = serde_json::json!({
        "reason": report.reason.to_string(),
        "signal": report.reason.signal().map(|s| s.name()),
        "exit_code": report.exit_code,
        "hard_stopped": report.hard_stopped(),
        "drain_latency_ms": report.timings.drain_latency.map(ms),
        "join_ms": ms(report.timings.join),
        "release_ms": ms(report.timings.release),
        "total_ms": ms(report.timings.total),
        "hard_stop_ms": report.timings.hard_stop.map(ms),
        "pools": pools,
        "handed_back_ids": back.handed_back,
        "stuck": report.stuck.iter().map(|s| serde_json::json!({
            "thread": s.thread,
            "job_key": s.job_key,
            "ms_in_job": s.in_job.map(ms),
        })).collect::<Vec<_>>(),
        "hooks": report.hooks.iter().map(|h| serde_json::json!({
            "name": h.name,
            "status": hook_status(&h.outcome),
            "ms": ms(h.elapsed),
        })).collect::<Vec<_>>(),
        "errors": report.errors().map(|e| serde_json::json!({
            "key": e.key,
            "message": e.message,
            "panicked": e.panicked,
        })).collect::<Vec<_>>(),
        "reclaimed": reclaimed,
        "put_back": {
            "handed_back": back.handed_back.len(),
            "abandoned": back.abandoned.len(),
            "stray": back.stray.len(),
        },
        "queue": {
            "pending": table.pending,
            "claimed": table.claimed,
            "done": table.done,
            "failed": table.failed,
        },
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}
