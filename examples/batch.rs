//! The main demo: a CPU-bound batch job that drains on Ctrl-C.
//!
//! ```sh
//! cargo run --release --example batch                 # Ctrl-C once: drain; twice: exit at once
//! cargo run --release --example batch -- --help       # every option
//! ```
//!
//! Each item burns CPU (hashing a buffer made from its id) for a time drawn
//! from `--work`. A producer thread submits the items to a pool; on the first
//! signal the producer's blocked submit returns its item, the workers
//! finish what they hold (and, under `--policy finish`, what is queued), the
//! release hooks run, and the report is printed.
//!
//! It doubles as the subject of the signal tests (`tests/signals.rs`), so it
//! also writes what happened to a ledger, one line per event, appended and
//! flushed as it happens:
//!
//! ```text
//! start <id> <thread>   done <id>   fail <id>   panic <id>
//! handback <id>         unsubmitted <id>        abandoned <id>
//! hook <i> begin        hook <i> end
//! checkpoint begin       checkpoint end        (with --after-run-ms)
//! ```
//!
//! Stdout carries `ready` once the signal handler is installed and the
//! workers run, `queue full` the first time the queue is full, `phase
//! <name>` at each transition, and `stuck <id>` when an item of `--stuck` or
//! `--coop-stuck` begins, `checkpoint begin`/`checkpoint end` around the
//! work after `run` (`--after-run-ms`); the report goes to stderr
//! (and as JSON to `--report`).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use winddown::{DrainPolicy, Report, Runtime, Signal, Token, TrySubmitError};

/// A CPU-bound batch job with a graceful stop: Ctrl-C once drains, twice
/// exits at once.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Number of items (ids 1..=N).
    #[arg(long, default_value_t = 4000)]
    items: u64,
    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Queue capacity (default: twice the workers; 0 = rendezvous).
    #[arg(long)]
    capacity: Option<usize>,
    /// CPU time per item: a fixed time (`2ms`) or a range (`0-2ms`,
    /// `10-20ms`); units `us`, `ms`, `s`.
    #[arg(long, default_value = "1-3ms", value_parser = parse_work)]
    work: Work,
    /// What happens to queued items on stop: `finish` runs them, `handback`
    /// returns them unstarted.
    #[arg(long, value_enum, default_value_t = Policy::Handback)]
    policy: Policy,
    /// Drain deadline, in ms from the signal.
    #[arg(long, default_value_t = 10_000)]
    grace: u64,
    /// After the deadline, ms to wait before stuck threads are named and
    /// detached.
    #[arg(long, default_value_t = 1_000)]
    kill_grace: u64,
    /// Stop everything at the first failed or panicked item.
    #[arg(long)]
    fail_fast: bool,
    /// Items whose id is divisible by K fail.
    #[arg(long, value_name = "K")]
    fail_every: Option<u64>,
    /// Items whose id is divisible by K panic.
    #[arg(long, value_name = "K")]
    panic_every: Option<u64>,
    /// Comma-separated ids that block for an hour and ignore every token.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    stuck: Vec<u64>,
    /// Comma-separated ids that block until the hard token fires, then
    /// return.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    coop_stuck: Vec<u64>,
    /// Number of release hooks.
    #[arg(long, default_value_t = 2)]
    hooks: usize,
    /// How long each release hook takes, in ms.
    #[arg(long, default_value_t = 50)]
    hook_ms: u64,
    /// Each release hook's budget, in ms.
    #[arg(long, default_value_t = 1_000)]
    hook_budget: u64,
    /// A second signal does not end the process at once.
    #[arg(long)]
    no_force_exit: bool,
    /// The exit code of a forced exit (the second signal).
    #[arg(long, default_value_t = 3)]
    forced_exit_code: i32,
    /// The signals that stop the run, comma-separated (`INT,TERM,HUP,QUIT`;
    /// default INT, TERM and HUP). A signal left out keeps its default
    /// action.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_signal)]
    signals: Vec<Signal>,
    /// Hook a signal even if it was inherited as ignored (`nohup`,
    /// `trap ''`); by default it stays ignored.
    #[arg(long)]
    no_honor_ignored: bool,
    /// After `run` returns, spend this long "saving a checkpoint" (ledger and
    /// stdout: `checkpoint begin`, `checkpoint end`), as a program's own
    /// cleanup after the runtime is done.
    #[arg(long, value_name = "MS")]
    after_run_ms: Option<u64>,
    /// Append one line per event to this file.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Write the report as JSON to this file (atomically).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Process only the ids that did not reach done, fail or panic in this
    /// earlier ledger.
    #[arg(long, value_name = "LEDGER")]
    resume: Option<PathBuf>,
    /// Keep the pool open after the last item, like a consumer waiting for
    /// more work, until a signal (to measure the drain of an idle pool).
    #[arg(long)]
    keep_open: bool,
    /// No progress bar, no report on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Policy {
    Finish,
    Handback,
}

/// CPU time per item: uniform in `min..=max`.
#[derive(Clone, Copy, Debug)]
struct Work {
    min: Duration,
    max: Duration,
}

fn parse_work(s: &str) -> Result<Work, String> {
    let unit_at = s
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("`{s}`: no unit (us, ms or s)"))?;
    let (nums, unit) = s.split_at(unit_at);
    let scale: fn(u64) -> Duration = match unit {
        "us" => Duration::from_micros,
        "ms" => Duration::from_millis,
        "s" => Duration::from_secs,
        _ => return Err(format!("`{unit}`: unknown unit (us, ms or s)")),
    };
    let num = |n: &str| n.trim().parse::<u64>().map_err(|e| format!("`{n}`: {e}"));
    let (min, max) = match nums.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(nums)?, num(nums)?),
    };
    if min > max {
        return Err(format!("`{s}`: the range is empty"));
    }
    Ok(Work {
        min: scale(min),
        max: scale(max),
    })
}

/// One unit of work.
#[derive(Debug)]
struct Item {
    id: u64,
    cost: Duration,
}

/// The event log: every line is one `write` on a file opened for appending,
/// so lines are whole and on disk (in the page cache) as soon as they are
/// written, even if the process then ends at once.
#[derive(Clone)]
struct Ledger(Option<Arc<Mutex<File>>>);

impl Ledger {
    fn open(path: Option<&Path>) -> anyhow::Result<Ledger> {
        let Some(path) = path else {
            return Ok(Ledger(None));
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open ledger {}", path.display()))?;
        Ok(Ledger(Some(Arc::new(Mutex::new(file)))))
    }

    fn log(&self, line: std::fmt::Arguments<'_>) {
        if let Some(file) = &self.0 {
            let line = format!("{line}\n");
            // A lost ledger line would make the accounting lie: say so.
            if let Err(e) = file.lock().write_all(line.as_bytes()) {
                eprintln!("ledger write failed: {e}");
            }
        }
    }
}

/// Prints a line on stdout and flushes it at once (the tests wait for it).
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Reads an earlier ledger and returns the ids that reached an outcome.
fn finished_ids(path: &Path) -> anyhow::Result<HashSet<u64>> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut done = HashSet::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        if let (Some("done" | "fail" | "panic"), Some(id)) = (words.next(), words.next()) {
            done.insert(
                id.parse()
                    .with_context(|| format!("bad ledger line {line:?}"))?,
            );
        }
    }
    Ok(done)
}

/// Burns CPU for `item.cost`: hashes a buffer made from the id, again and
/// again. The result is returned so the work cannot be optimised away.
fn burn(item: &Item) -> u64 {
    let buf: Vec<u8> = (0..4096u32)
        .map(|i| (u64::from(i) ^ item.id) as u8)
        .collect();
    let start = Instant::now();
    let mut acc = item.id;
    loop {
        let mut h = DefaultHasher::new();
        acc.hash(&mut h);
        buf.hash(&mut h);
        acc = h.finish();
        if start.elapsed() >= item.cost {
            return acc;
        }
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let ledger = Ledger::open(args.ledger.as_deref())?;
    let skip = match &args.resume {
        Some(path) => finished_ids(path)?,
        None => HashSet::new(),
    };
    let ids: Vec<u64> = (1..=args.items).filter(|id| !skip.contains(id)).collect();

    if args.quiet {
        std::panic::set_hook(Box::new(|_| {}));
    } else {
        std::panic::set_hook(Box::new(|info| {
            let thread = std::thread::current();
            eprintln!("{}: {info}", thread.name().unwrap_or("?"));
        }));
    }

    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar =
            ProgressBar::with_draw_target(Some(ids.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} items  {per_sec}  {msg}")
                .expect("valid template"),
        );
        bar
    };

    let phase_bar = progress.clone();
    let mut builder = Runtime::builder();
    if !args.signals.is_empty() {
        builder = builder.handle_signals(args.signals.iter().copied());
    }
    let mut rt = builder
        .grace(Duration::from_millis(args.grace))
        .kill_grace(Duration::from_millis(args.kill_grace))
        .force_exit_on_second_signal(!args.no_force_exit)
        .forced_exit_code(args.forced_exit_code)
        .honor_ignored_signals(!args.no_honor_ignored)
        .on_phase(move |phase| {
            phase_bar.set_message(phase.name());
            say(format_args!("phase {phase}"));
        })
        .build()?;

    let stuck: HashSet<u64> = args.stuck.iter().copied().collect();
    let coop: HashSet<u64> = args.coop_stuck.iter().copied().collect();
    let (fail_every, panic_every) = (args.fail_every, args.panic_every);
    let divides = |k: Option<u64>, id: u64| k.is_some_and(|k| k != 0 && id % k == 0);

    let mut pool = rt
        .pool::<Item>("batch")
        .workers(workers)
        .drain(match args.policy {
            Policy::Finish => DrainPolicy::Finish,
            Policy::Handback => DrainPolicy::HandBack,
        })
        .fail_fast(args.fail_fast)
        .key(|item: &Item| item.id);
    if let Some(c) = args.capacity {
        pool = pool.capacity(c);
    }
    let job_ledger = ledger.clone();
    let job_bar = progress.clone();
    let pool = pool.start(move |item: Item, token: &Token| {
        let id = item.id;
        let thread = std::thread::current();
        job_ledger.log(format_args!("start {id} {}", thread.name().unwrap_or("?")));
        if stuck.contains(&id) || coop.contains(&id) {
            say(format_args!("stuck {id}"));
        }
        if stuck.contains(&id) {
            // Deaf to every token, like a thread stuck in a system call.
            std::thread::sleep(Duration::from_secs(3600));
        }
        if coop.contains(&id) {
            // Long work that aborts only when the deadline passes.
            token.wait_hard();
        } else {
            std::hint::black_box(burn(&item));
        }
        job_bar.inc(1);
        if divides(panic_every, id) {
            job_ledger.log(format_args!("panic {id}"));
            panic!("item {id}: injected panic");
        }
        if divides(fail_every, id) {
            job_ledger.log(format_args!("fail {id}"));
            bail!("item {id}: injected failure");
        }
        job_ledger.log(format_args!("done {id}"));
        Ok(())
    })?;
    let pool_id = pool.id();
    let submitter = pool.into_submitter();

    // The producer: submits every item, then drops its submitter, which
    // closes the pool; the run completes once the pool has drained. It says
    // `queue full` the first time the queue is full (the tests wait for it).
    // On a stop, the submit it is blocked in returns the item, which is
    // logged as unsubmitted with every item not reached yet.
    let work = args.work;
    let feed_ledger = ledger.clone();
    let keep_open = args.keep_open;
    rt.spawn("producer", move |token| {
        let mut items = ids.into_iter().map(|id| {
            let mut rng = fastrand::Rng::with_seed(id);
            let span = (work.max - work.min).as_nanos() as u64;
            let cost = work.min + Duration::from_nanos(rng.u64(0..=span));
            Item { id, cost }
        });
        let mut said_full = false;
        while let Some(item) = items.next() {
            let refused = match submitter.try_submit(item) {
                Ok(()) => continue,
                Err(TrySubmitError::Full(item)) => {
                    if !said_full {
                        said_full = true;
                        say(format_args!("queue full"));
                    }
                    match submitter.submit(item) {
                        Ok(()) => continue,
                        Err(refused) => refused.into_inner(),
                    }
                }
                Err(refused) => refused.into_inner(),
            };
            for item in std::iter::once(refused).chain(items) {
                feed_ledger.log(format_args!("unsubmitted {}", item.id));
            }
            break;
        }
        if keep_open {
            token.wait();
        }
        Ok(())
    })?;

    for i in 0..args.hooks {
        let hook_ledger = ledger.clone();
        let hook_ms = Duration::from_millis(args.hook_ms);
        rt.on_release(
            format!("hook-{i}"),
            Duration::from_millis(args.hook_budget),
            move || {
                hook_ledger.log(format_args!("hook {i} begin"));
                // Stands in for flushing a cache or closing a database.
                std::thread::sleep(hook_ms);
                hook_ledger.log(format_args!("hook {i} end"));
                Ok(())
            },
        );
    }

    say(format_args!("ready"));
    let mut report = rt.run();
    progress.finish_and_clear();

    let handed_back = report.take_handed_back(pool_id);
    for item in &handed_back {
        ledger.log(format_args!("handback {}", item.id));
    }
    if let Some(pool) = report.pool("batch") {
        for key in &pool.abandoned_keys {
            ledger.log(format_args!("abandoned {key}"));
        }
    }
    if let Some(path) = &args.report {
        write_json(path, &report, &handed_back)?;
    }
    if !args.quiet {
        eprintln!("{report:#}");
    }
    if let Some(ms) = args.after_run_ms {
        // The program's own cleanup after the runtime is done: signals now
        // follow the documented rule (a first one is nothing; a second one
        // exits only with force-exit on).
        say(format_args!("checkpoint begin"));
        ledger.log(format_args!("checkpoint begin"));
        std::thread::sleep(Duration::from_millis(ms));
        ledger.log(format_args!("checkpoint end"));
        say(format_args!("checkpoint end"));
    }
    Ok(report.process_exit_code())
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    Signal::from_name(s).ok_or_else(|| format!("unknown signal {s:?} (INT, TERM, HUP or QUIT)"))
}

/// Writes the report as JSON to a temporary file beside `path`, then renames
/// it over `path`, so a reader never sees half a report.
///
/// The whole report, as the library serializes it, is under `"report"`.
/// The top-level keys are this example's own format, which scripts and the
/// signal tests read; they are taken from the serialized report, and stay
/// as they were where the library's shape differs (`hooks`, `stuck`,
/// `errors`) or the library has no such field (`handed_back_ids`).
fn write_json(path: &Path, report: &Report, handed_back: &[Item]) -> anyhow::Result<()> {
    use serde_json::{json, Map, Value};

    let full = serde_json::to_value(report)?;
    let mut out = Map::new();
    for key in [
        "reason",
        "signal",
        "exit_code",
        "hard_stopped",
        "drain_latency_ms",
        "join_ms",
        "release_ms",
        "total_ms",
        "hard_stop_ms",
        "pools",
    ] {
        out.insert(key.into(), full[key].clone());
    }
    let each = |key: &str, f: &dyn Fn(&Value) -> Value| -> Value {
        full[key].as_array().into_iter().flatten().map(f).collect()
    };
    out.insert(
        "handed_back_ids".into(),
        handed_back.iter().map(|i| i.id).collect(),
    );
    out.insert(
        "stuck".into(),
        each("stuck", &|s| {
            json!({ "thread": s["thread"], "job_key": s["job_key"], "ms_in_job": s["in_job_ms"] })
        }),
    );
    out.insert(
        "hooks".into(),
        each(
            "hooks",
            &|h| json!({ "name": h["name"], "status": h["outcome"], "ms": h["elapsed_ms"] }),
        ),
    );
    out.insert(
        "errors".into(),
        serde_json::to_value(report.errors().collect::<Vec<_>>())?,
    );
    out.insert("report".into(), full);
    let json = Value::Object(out);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}
