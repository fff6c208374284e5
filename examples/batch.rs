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
//! # For people and for programs
//!
//! When stdout is a terminal (or with `--human`), the demo talks to people:
//! a progress bar on stdout (done/total, rate, elapsed, ETA), one line when
//! the stop begins (`draining 2 in flight, 4 queued — Ctrl-C again to exit
//! now`), one per later phase (`releasing…`), and a summary at the end: the
//! items done, failed, panicked, handed back, abandoned and never submitted,
//! the drain latency, the exit code, how to resume, then the report's
//! one-line form. None of the protocol lines below reach the terminal.
//!
//! When stdout is not a terminal (or with `--machine`), it speaks the
//! protocol below, which the signal tests (`tests/signals.rs`) and scripts
//! read; the ledger and the JSON report are the same in both modes.
//!
//! It writes what happened to a ledger, one line per event, appended and
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
//!
//! # Engines
//!
//! `--engine pool` (the default) runs the items on a winddown pool fed by
//! a producer thread, as above. `--engine rayon` runs them as one
//! `par_for_each` on a rayon pool the runtime owns (`Runtime::rayon`, its
//! threads `batch-0` …): the ledger, the protocol lines and the JSON report
//! are the same, except that there is no queue (no `queue full` line, no
//! `unsubmitted` items: every item is submitted at once, and on a stop
//! every item not started is handed back, whatever `--policy` says;
//! `--capacity` does not apply). An item abandoned on a stuck rayon thread
//! has no `abandoned` line: rayon pools count abandoned items by piece,
//! without their ids.

#[path = "common/mod.rs"]
mod common;

use common::{parse_work, say, Ledger, Work};
use std::collections::HashSet;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use winddown::{
    DrainPolicy, Handle, Phase, PoolId, Report, Runtime, Signal, StopReason, Token, TrySubmitError,
};

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
    /// Where the items run: `pool` (a winddown pool fed by a producer) or
    /// `rayon` (one `par_for_each` on a rayon pool the runtime owns).
    #[arg(long, value_enum, default_value_t = Engine::Pool)]
    engine: Engine,
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
    /// No progress bar, no report on stderr (and, for people, no lines and
    /// no summary).
    #[arg(long)]
    quiet: bool,
    /// Output for people (progress bar on stdout, the draining line, the
    /// summary) even when stdout is not a terminal.
    #[arg(long, conflicts_with = "machine")]
    human: bool,
    /// The machine-readable protocol (`ready`, `phase …`, the report on
    /// stderr) even when stdout is a terminal.
    #[arg(long)]
    machine: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Engine {
    Pool,
    Rayon,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Policy {
    Finish,
    Handback,
}

/// One unit of work.
#[derive(Debug)]
struct Item {
    id: u64,
    cost: Duration,
}

// ===== Output: for programs or for people =====

/// Who reads stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Scripts and tests: the protocol lines on stdout, the progress bar on
    /// stderr (drawn only if stderr is a terminal), `{report:#}` on stderr.
    Machine,
    /// People: the progress bar and every line on stdout, no protocol lines.
    Human,
}

impl Mode {
    /// `--human` or `--machine` if given, else people exactly when stdout
    /// is a terminal.
    fn choose(args: &Args) -> Mode {
        if args.human || (!args.machine && std::io::stdout().is_terminal()) {
            Mode::Human
        } else {
            Mode::Machine
        }
    }
}

/// Where each kind of line goes, by [`Mode`]. Every line is printed with
/// the progress bar suspended, so none is torn by a redraw.
#[derive(Clone)]
struct Out {
    mode: Mode,
    quiet: bool,
    bar: ProgressBar,
}

impl Out {
    fn new(mode: Mode, quiet: bool, items: u64) -> Out {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            match mode {
                Mode::Machine => {
                    let bar =
                        ProgressBar::with_draw_target(Some(items), ProgressDrawTarget::stderr());
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{bar:40} {pos}/{len} items  {per_sec}  {msg}",
                        )
                        .expect("valid template"),
                    );
                    bar
                }
                Mode::Human => {
                    let bar =
                        ProgressBar::with_draw_target(Some(items), ProgressDrawTarget::stdout());
                    bar.set_style(running_style());
                    // Redraws while nothing finishes (a stuck item, a slow
                    // drain), so elapsed and ETA stay true.
                    bar.enable_steady_tick(Duration::from_millis(250));
                    bar
                }
            }
        };
        Out { mode, quiet, bar }
    }

    /// A line of the protocol: on stdout for programs, nowhere for people.
    fn protocol(&self, line: std::fmt::Arguments<'_>) {
        if self.mode == Mode::Machine {
            say(line);
        }
    }

    /// A line for people, above the progress bar; nowhere for programs or
    /// with `--quiet`.
    fn human(&self, line: std::fmt::Arguments<'_>) {
        if self.mode == Mode::Human && !self.quiet {
            self.bar.suspend(|| say(line));
        }
    }

    /// A diagnostic on stderr (a panic message) in both modes.
    fn error(&self, line: std::fmt::Arguments<'_>) {
        self.bar.suspend(|| eprintln!("{line}"));
    }
}

/// The bar while the run accepts work: `12s [████░░░░] 5210/20000 items
/// 434/s  ETA 34s`.
fn running_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{elapsed:>4} [{bar:32}] {pos}/{len} items  {rate}  ETA {eta}  {msg}",
    )
    .expect("valid template")
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        },
    )
    .progress_chars("█▉▊▋▌▍▎▏░")
}

/// The bar from the stop on: no rate or ETA (the rest is not going to
/// run), the phase in the message.
fn stopping_style() -> ProgressStyle {
    ProgressStyle::with_template("{elapsed:>4} [{bar:32}] {pos}/{len} items  {msg}")
        .expect("valid template")
        .progress_chars("█▉▊▋▌▍▎▏░")
}

/// `850.0 ms`, `12.3 s`, `4m 05s`.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        format!("{}m {:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// `1 item`, `2 items`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

// ===== Live counts =====

/// How many items are queued and in flight right now: the pool's own live
/// counts ([`winddown::PoolStats`]), read through a [`Handle`] (a handle
/// keeps nothing open, where a submitter would keep the pool from
/// completing). The handle is set once the runtime is built; phases, which
/// read it, fire only inside `run`.
#[derive(Debug, Default)]
struct Live {
    handle: OnceLock<Handle>,
}

/// What [`Live::snapshot`] saw.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    in_flight: u64,
    queued: u64,
}

impl Live {
    fn snapshot(&self) -> Snapshot {
        self.handle
            .get()
            .and_then(|h| h.pool_stats(POOL))
            .map_or_else(Snapshot::default, |s| Snapshot {
                in_flight: s.in_flight as u64,
                queued: s.queued as u64,
            })
    }
}

/// The pool's name (its workers are `batch-0`, `batch-1`, …).
const POOL: &str = "batch";

// ===== Lines for people =====

/// What another signal does, to tell people the truth about Ctrl-C.
#[derive(Clone, Debug)]
struct Keys {
    /// SIGINT is among the signals handled: Ctrl-C stops gracefully.
    ctrl_c: bool,
    /// A second signal ends the process at once.
    force_exit: bool,
    /// The signals handled, by name (for the start line when SIGINT is not
    /// one of them).
    names: Vec<&'static str>,
}

impl Keys {
    fn new(args: &Args) -> Keys {
        let set: &[Signal] = if args.signals.is_empty() {
            &Signal::DEFAULT_SET
        } else {
            &args.signals
        };
        Keys {
            ctrl_c: set.contains(&Signal::Interrupt),
            force_exit: !args.no_force_exit,
            names: set.iter().map(|s| s.name()).collect(),
        }
    }

    /// The start line's hint.
    fn how_to_stop(&self) -> String {
        match (self.ctrl_c, self.force_exit) {
            (true, true) => "press Ctrl-C to stop (twice to exit at once)".to_owned(),
            (true, false) => "press Ctrl-C to stop".to_owned(),
            (false, _) => format!("send {} to stop", self.names.join(" or ")),
        }
    }

    /// What Ctrl-C does once the stop has begun for `reason`.
    fn while_stopping(&self, reason: Option<&StopReason>) -> String {
        if !self.ctrl_c {
            return "Ctrl-C ends the process at once (SIGINT is not in --signals)".to_owned();
        }
        if !self.force_exit {
            return "Ctrl-C is ignored now (--no-force-exit)".to_owned();
        }
        match reason.and_then(StopReason::signal) {
            Some(Signal::Interrupt) => "Ctrl-C again to exit now".to_owned(),
            // Another signal began the stop: SIGINT is a second, distinct one.
            Some(_) => "Ctrl-C to exit now".to_owned(),
            // A stop begun by code: a first signal changes nothing.
            None => "Ctrl-C twice to exit now".to_owned(),
        }
    }
}

/// Turns the phases into lines for people.
struct PhaseLines {
    out: Out,
    live: Arc<Live>,
    /// The runtime's token, set once it is built (before any phase fires):
    /// the stop's reason.
    stop: Arc<OnceLock<Token>>,
    keys: Keys,
    policy: Policy,
    grace: Duration,
    kill_grace: Duration,
    hooks: usize,
}

impl PhaseLines {
    fn show(&self, phase: Phase) {
        let reason = self.stop.get().and_then(Token::reason);
        match phase {
            Phase::StopAccepting => {
                self.out.bar.set_style(stopping_style());
                self.out.bar.set_message("stopping");
                if let Some(line) = self.draining_line(reason.as_ref()) {
                    self.out.human(format_args!("{line}"));
                }
            }
            Phase::Draining => self.out.bar.set_message("draining"),
            Phase::HardStop => {
                self.out.bar.set_message("hard stop");
                let running = self.live.snapshot().in_flight;
                self.out.human(format_args!(
                    "deadline passed ({}): {} still running get {} more, then are left behind",
                    human_duration(self.grace),
                    plural(running, "item", "items"),
                    human_duration(self.kill_grace),
                ));
            }
            Phase::Releasing => {
                self.out.bar.set_message("releasing");
                let hooks = plural(self.hooks as u64, "release hook", "release hooks");
                self.out.human(format_args!("releasing… ({hooks})"));
            }
            _ => {}
        }
    }

    /// The line that says the stop began; none when the work simply ran out.
    fn draining_line(&self, reason: Option<&StopReason>) -> Option<String> {
        let why = match reason {
            Some(StopReason::Completed) => return None,
            Some(StopReason::Signal(Signal::Interrupt)) | None => String::new(),
            Some(StopReason::Signal(s)) => format!("{}: ", s.name()),
            Some(StopReason::JobFailed { error, .. }) => format!("fail-fast: {error}; "),
            Some(other) => format!("stopping ({other}): "),
        };
        let now = self.live.snapshot();
        let fate = match self.policy {
            Policy::Handback if now.queued > 0 => " (to hand back)",
            _ => "",
        };
        Some(format!(
            "{why}draining {} in flight, {} queued{fate} — {}",
            now.in_flight,
            now.queued,
            self.keys.while_stopping(reason),
        ))
    }
}

/// What the summary needs besides the report.
struct Run<'a> {
    /// Items this run was given (ids left after `--resume`).
    total: u64,
    /// Ids of `1..=--items` skipped as already done in the `--resume` ledger.
    skipped: u64,
    ledger: Option<&'a Path>,
    resume: Option<&'a Path>,
}

/// The summary for people: what became of every item, the drain latency,
/// the exit code, how to resume, then the report's own one-line summary.
fn summary(run: &Run<'_>, report: &Report) -> String {
    use std::fmt::Write as _;

    let ran = human_duration(report.timings.triggered - report.timings.started);
    let mut s = match &report.reason {
        StopReason::Completed => format!("finished in {ran}\n"),
        StopReason::Signal(sig) => format!("stopped by {} after {ran}\n", sig.name()),
        StopReason::JobFailed { error, .. } => {
            format!("stopped at the first failure (--fail-fast) after {ran}: {error}\n")
        }
        other => format!("stopped ({other}) after {ran}\n"),
    };
    let pool = report.pool("batch");
    let count = |f: fn(&winddown::PoolReport) -> u64| pool.map_or(0, f);
    let submitted = count(|p| p.submitted);
    let done = count(|p| p.succeeded);
    let failed = count(|p| p.failed);
    let panicked = count(|p| p.panicked);
    let never = run.total.saturating_sub(submitted);
    let row = |s: &mut String, label: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(s, "  {label:<16}{value:>9}");
    };
    row(&mut s, "items", &run.total);
    if run.skipped > 0 {
        let _ = writeln!(
            s,
            "  ({} more already done per the --resume ledger)",
            run.skipped
        );
    }
    row(&mut s, "done", &done);
    row(&mut s, "failed", &failed);
    row(&mut s, "panicked", &panicked);
    row(&mut s, "handed back", &count(|p| p.handed_back));
    row(&mut s, "abandoned", &count(|p| p.abandoned));
    let _ = writeln!(
        s,
        "  {:<16}{never:>9}   ({} items − {submitted} submitted)",
        "never submitted", run.total
    );
    match report.timings.drain_latency {
        Some(d) => row(&mut s, "drain latency", &human_duration(d)),
        None => row(&mut s, "drain latency", &"timed out"),
    }
    for stuck in &report.stuck {
        let _ = write!(s, "  left behind: {}", stuck.thread);
        if let Some(key) = &stuck.job_key {
            let _ = write!(s, " in item {key}");
        }
        if let Some(d) = stuck.in_job {
            let _ = write!(s, " for {}", human_duration(d));
        }
        s.push('\n');
    }
    row(&mut s, "exit code", &report.exit_code);
    if pool.is_some_and(|p| !p.is_balanced()) {
        s.push_str("  warning: the pool's counts do not add up to its submitted items\n");
    }

    // `--resume` redoes every id without done, fail or panic in a ledger.
    let left = run.total.saturating_sub(done + failed + panicked);
    if left > 0 {
        let left = plural(left, "item", "items");
        match (run.ledger, run.resume) {
            (Some(ledger), Some(resume)) if resume != ledger => {
                let _ = writeln!(
                    s,
                    "to process the {left} left, join the ledgers and resume from both: \
                     cat {} {} > all.ledger, then run again with --ledger all.ledger \
                     --resume all.ledger",
                    resume.display(),
                    ledger.display(),
                );
            }
            (Some(ledger), _) => {
                let _ = writeln!(
                    s,
                    "to process the {left} left, run again with the same options and \
                     --resume {}",
                    ledger.display(),
                );
            }
            (None, _) => {
                let _ = writeln!(
                    s,
                    "{left} not processed; run with --ledger FILE to be able to resume \
                     them with --resume FILE"
                );
            }
        }
    }
    let _ = write!(s, "{report}");
    s
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

/// With the `tracing` feature and `RUST_LOG` set (e.g. `RUST_LOG=winddown=debug`),
/// winddown's events are printed to stderr; otherwise nothing is installed.
#[cfg(feature = "tracing")]
fn init_events() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

#[cfg(not(feature = "tracing"))]
fn init_events() {}

fn main() -> anyhow::Result<ExitCode> {
    init_events();
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
    let run_info = Run {
        total: ids.len() as u64,
        skipped: args.items - ids.len() as u64,
        ledger: args.ledger.as_deref(),
        resume: args.resume.as_deref(),
    };

    let mode = Mode::choose(&args);
    let out = Out::new(mode, args.quiet, ids.len() as u64);
    let live = Arc::new(Live::default());
    let keys = Keys::new(&args);

    if args.quiet {
        std::panic::set_hook(Box::new(|_| {}));
    } else {
        let panic_out = out.clone();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            panic_out.error(format_args!("{}: {info}", thread.name().unwrap_or("?")));
        }));
    }

    let phase_bar = out.bar.clone();
    let stop = Arc::new(OnceLock::new());
    let lines = PhaseLines {
        out: out.clone(),
        live: live.clone(),
        stop: stop.clone(),
        keys: keys.clone(),
        policy: args.policy,
        grace: Duration::from_millis(args.grace),
        kill_grace: Duration::from_millis(args.kill_grace),
        hooks: args.hooks,
    };
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
        .on_phase(move |phase| match mode {
            Mode::Machine => {
                phase_bar.set_message(phase.name());
                say(format_args!("phase {phase}"));
            }
            Mode::Human => lines.show(phase),
        })
        .build()?;
    // Phases fire only inside `run`, after this.
    let _ = stop.set(rt.handle().token());
    let _ = live.handle.set(rt.handle());

    let stuck: HashSet<u64> = args.stuck.iter().copied().collect();
    let coop: HashSet<u64> = args.coop_stuck.iter().copied().collect();
    let (fail_every, panic_every) = (args.fail_every, args.panic_every);
    let divides = |k: Option<u64>, id: u64| k.is_some_and(|k| k != 0 && id % k == 0);

    let job_ledger = ledger.clone();
    let job_out = out.clone();
    let job = move |item: Item, token: &Token| -> anyhow::Result<()> {
        let id = item.id;
        let thread = std::thread::current();
        job_ledger.log(format_args!("start {id} {}", thread.name().unwrap_or("?")));
        if stuck.contains(&id) || coop.contains(&id) {
            job_out.protocol(format_args!("stuck {id}"));
        }
        if stuck.contains(&id) {
            job_out.human(format_args!(
                "item {id} is stuck and ignores the stop (--stuck)"
            ));
            // Deaf to every token, like a thread stuck in a system call.
            std::thread::sleep(Duration::from_secs(3600));
        }
        if coop.contains(&id) {
            job_out.human(format_args!(
                "item {id} runs until the deadline (--coop-stuck)"
            ));
            // Long work that aborts only when the deadline passes.
            token.wait_hard();
        } else {
            std::hint::black_box(burn(&item));
        }
        job_out.bar.inc(1);
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
    };
    let work = args.work;
    let make_item = move |id: u64| {
        let mut rng = fastrand::Rng::with_seed(id);
        let span = (work.max - work.min).as_nanos() as u64;
        let cost = work.min + Duration::from_nanos(rng.u64(0..=span));
        Item { id, cost }
    };
    let keep_open = args.keep_open;
    let pool_id: PoolId<Item> = match args.engine {
        Engine::Pool => {
            let mut pool = rt
                .pool::<Item>(POOL)
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
            let pool = pool.start(job)?;
            let pool_id = pool.id();
            spawn_producer(
                &mut rt,
                pool.into_submitter(),
                ids,
                make_item,
                &ledger,
                &out,
                keep_open,
            )?;
            pool_id
        }
        Engine::Rayon => {
            let pool = rt
                .rayon(POOL)
                .threads(workers)
                .fail_fast(args.fail_fast)
                .build()?;
            let pool_id = pool.id::<Item>();
            // One call over every item; the items not started when the
            // stop comes are handed back in the report. Dropping the pool
            // at the end lets its threads exit, so the run completes.
            rt.spawn("producer", move |token| {
                let items: Vec<Item> = ids.into_iter().map(make_item).collect();
                pool.par_for_each(items, job);
                if keep_open {
                    token.wait();
                }
                drop(pool);
                Ok(())
            })?;
            pool_id
        }
    };

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

    out.protocol(format_args!("ready"));
    out.human(format_args!(
        "batch: {} on {}, {} each; on a stop, queued items are {}",
        plural(run_info.total, "item", "items"),
        plural(workers as u64, "worker", "workers"),
        match (args.work.min, args.work.max) {
            (min, max) if min == max => format!("{min:?}"),
            (min, max) => format!("{min:?}–{max:?}"),
        },
        match args.policy {
            Policy::Finish => "run",
            Policy::Handback => "handed back",
        },
    ));
    out.human(format_args!("{}", keys.how_to_stop()));
    let mut report = rt.run();
    out.bar.finish_and_clear();

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
    match mode {
        Mode::Machine if !args.quiet => eprintln!("{report:#}"),
        Mode::Machine => {}
        Mode::Human => out.human(format_args!("{}", summary(&run_info, &report))),
    }
    if let Some(ms) = args.after_run_ms {
        // The program's own cleanup after the runtime is done: signals now
        // follow the documented rule (a first one is nothing; a second one
        // exits only with force-exit on).
        out.protocol(format_args!("checkpoint begin"));
        out.human(format_args!("saving a checkpoint…"));
        ledger.log(format_args!("checkpoint begin"));
        std::thread::sleep(Duration::from_millis(ms));
        ledger.log(format_args!("checkpoint end"));
        out.protocol(format_args!("checkpoint end"));
        out.human(format_args!("checkpoint saved"));
    }
    Ok(report.process_exit_code())
}

/// The producer of `--engine pool`: submits every item, then drops its
/// submitter, which closes the pool; the run completes once the pool has
/// drained. It says `queue full` the first time the queue is full (the
/// tests wait for it). On a stop, the submit it is blocked in returns the
/// item, which is logged as unsubmitted with every item not reached yet.
fn spawn_producer(
    rt: &mut Runtime,
    submitter: winddown::Submitter<Item>,
    ids: Vec<u64>,
    make_item: impl Fn(u64) -> Item + Send + 'static,
    ledger: &Ledger,
    out: &Out,
    keep_open: bool,
) -> anyhow::Result<()> {
    let feed_ledger = ledger.clone();
    let feed_out = out.clone();
    rt.spawn("producer", move |token| {
        let mut items = ids.into_iter().map(make_item);
        let mut said_full = false;
        while let Some(item) = items.next() {
            let refused = match submitter.try_submit(item) {
                Ok(()) => continue,
                Err(TrySubmitError::Full(item)) => {
                    if !said_full {
                        said_full = true;
                        feed_out.protocol(format_args!("queue full"));
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
    Ok(())
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
