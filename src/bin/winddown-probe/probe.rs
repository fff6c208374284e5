//! The command line and the order of the runs.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use nix::sys::signal::Signal;
use regex::Regex;

use crate::load;
use crate::output;
use crate::run::{self, Outcome, Plan, Ready};
use crate::words;

/// Measures how long programs take to exit after a signal (drain latency).
///
/// Each COMMAND is split into words like a shell would (quotes, backslashes;
/// no expansion) unless --shell is given. With two or more commands the runs
/// are interleaved (A B A B …) and the medians compared.
#[derive(Parser, Debug)]
#[command(name = "winddown-probe", version)]
pub(crate) struct Args {
    /// The commands to measure (one or more).
    #[arg(required = true, value_name = "COMMAND")]
    commands: Vec<String>,
    /// Runs per command.
    #[arg(short = 'n', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Ready when a line of stdout matches this regular expression.
    #[arg(long, value_name = "REGEX", group = "readiness")]
    ready_line: Option<String>,
    /// Ready when a TCP connection to this address succeeds (`PORT` means
    /// `127.0.0.1:PORT`).
    #[arg(long, value_name = "ADDR", group = "readiness")]
    ready_port: Option<String>,
    /// Ready when the command sends `READY=1` to `NOTIFY_SOCKET`, which the
    /// probe binds and sets for it.
    #[arg(long, group = "readiness")]
    ready_notify: bool,
    /// Milliseconds from the spawn to give up on readiness (the group is
    /// killed).
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(..=MAX_MS))]
    ready_timeout: u64,
    /// The signal to send: a name (`TERM`, `SIGINT`) or a number.
    #[arg(short, long, default_value = "TERM", value_parser = parse_signal)]
    signal: Signal,
    /// Send the signal to the command's whole process group.
    #[arg(long)]
    signal_group: bool,
    /// Milliseconds from ready to the signal: a fixed `MS` or a random
    /// `MIN-MAX` (uniform, drawn per run).
    #[arg(short, long, value_name = "MS|MIN-MAX", default_value = "0", value_parser = parse_delay)]
    delay: Delay,
    /// Milliseconds from the signal to give up on the exit (the group is
    /// killed and the run counted as a timeout).
    #[arg(short, long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(..=MAX_MS))]
    timeout: u64,
    /// Seed for the random delays (default: drawn, and printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Apply a load during each run: GET this `http://` URL.
    #[arg(long, value_name = "URL")]
    load_url: Option<String>,
    /// Requests per second of the load, all client threads together.
    #[arg(long, value_name = "N", default_value_t = 200.0, requires = "load_url")]
    load_rate: f64,
    /// Client threads of the load.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "load_url",
          value_parser = clap::value_parser!(u16).range(1..))]
    load_threads: u16,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a plot of the latencies (SVG) to this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Run each command through `sh -c` (the signal then goes to the shell
    /// unless the command `exec`s, or --signal-group is given).
    #[arg(long)]
    shell: bool,
    /// Pass the commands' stdout and stderr to the probe's stderr.
    #[arg(long)]
    show_output: bool,
}

/// The longest wait any flag may ask for, in ms (about 11.6 days): deadlines
/// are `Instant`s, and this keeps every one of them representable.
const MAX_MS: u64 = 1_000_000_000;

/// The load's rate bounds, requests per second.
const RATE: std::ops::RangeInclusive<f64> = 0.01..=1_000_000.0;

/// Ready → signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delay {
    Fixed(u64),
    Range(u64, u64),
}

impl Delay {
    fn draw(&self, rng: &mut fastrand::Rng) -> Duration {
        Duration::from_millis(match *self {
            Delay::Fixed(ms) => ms,
            Delay::Range(lo, hi) => rng.u64(lo..=hi),
        })
    }
}

fn parse_delay(s: &str) -> Result<Delay, String> {
    let ms = |t: &str| match t.trim().parse::<u64>() {
        Ok(v) if v <= MAX_MS => Ok(v),
        Ok(_) => Err(format!("`{t}` is more than {MAX_MS} ms")),
        Err(_) => Err(format!("`{t}` is not a number of milliseconds")),
    };
    match s.split_once('-') {
        None => Ok(Delay::Fixed(ms(s)?)),
        Some((lo, hi)) => {
            let (lo, hi) = (ms(lo)?, ms(hi)?);
            if lo > hi {
                return Err(format!("the range {lo}-{hi} is empty"));
            }
            Ok(Delay::Range(lo, hi))
        }
    }
}

fn parse_signal(s: &str) -> Result<Signal, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("no signal number {n}"));
    }
    let upper = s.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| format!("no signal named `{s}`"))
}

fn parse_addr(s: &str) -> anyhow::Result<SocketAddr> {
    let with_host = if s.parse::<u16>().is_ok() {
        format!("127.0.0.1:{s}")
    } else {
        s.to_owned()
    };
    with_host
        .to_socket_addrs()
        .with_context(|| format!("resolving --ready-port {s}"))?
        .next()
        .with_context(|| format!("--ready-port {s} resolves to no address"))
}

/// One command and its runs, in the order they ran.
#[derive(Debug)]
pub(crate) struct Measured {
    /// `A`, `B`, …
    pub(crate) label: String,
    /// As given on the command line.
    pub(crate) command: String,
    pub(crate) runs: Vec<run::Run>,
}

/// Everything the outputs need.
#[derive(Debug)]
pub(crate) struct Results {
    pub(crate) commands: Vec<Measured>,
    pub(crate) signal: Signal,
    pub(crate) seed: u64,
    pub(crate) ready: String,
    pub(crate) delay: Delay,
    pub(crate) timeout_ms: u64,
    /// `url`, `rate`, `threads`, if there was a load.
    pub(crate) load: Option<(String, f64, u16)>,
}

pub(crate) fn main() -> ExitCode {
    let args = Args::parse();
    match probe(&args) {
        Ok(all_measured) => {
            if all_measured {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("winddown-probe: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs everything; `Ok(true)` if every run was measured.
fn probe(args: &Args) -> anyhow::Result<bool> {
    let argvs = args
        .commands
        .iter()
        .map(|c| {
            if args.shell {
                Ok(vec!["sh".to_owned(), "-c".to_owned(), c.clone()])
            } else {
                words::split(c).with_context(|| format!("splitting the command `{c}`"))
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (ready, ready_text) = match (&args.ready_line, &args.ready_port, args.ready_notify) {
        (Some(re), _, _) => (
            Ready::Line(Regex::new(re).context("--ready-line")?),
            format!("line /{re}/"),
        ),
        (_, Some(port), _) => {
            let addr = parse_addr(port)?;
            (Ready::Port(addr), format!("port {addr}"))
        }
        (_, _, true) => (Ready::Notify, "notify READY=1".to_owned()),
        _ => (Ready::Spawned, "spawned".to_owned()),
    };
    let load = match &args.load_url {
        Some(url) => {
            if !RATE.contains(&args.load_rate) {
                bail!(
                    "--load-rate must be from {} to {} requests per second",
                    RATE.start(),
                    RATE.end()
                );
            }
            Some(load::Spec {
                url: load::Url::parse(url).context("--load-url")?,
                rate: args.load_rate,
                threads: usize::from(args.load_threads),
            })
        }
        None => None,
    };
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut commands: Vec<Measured> = args
        .commands
        .iter()
        .enumerate()
        .map(|(i, c)| Measured {
            label: label(i),
            command: c.clone(),
            runs: Vec::new(),
        })
        .collect();
    eprintln!(
        "winddown-probe: {} run(s) of {} command(s), ready on {ready_text}, {} after {}, seed {seed}",
        args.runs,
        commands.len(),
        args.signal,
        delay_text(args.delay),
    );
    for round in 0..args.runs {
        for (i, argv) in argvs.iter().enumerate() {
            let plan = Plan {
                argv,
                ready: &ready,
                ready_timeout: Duration::from_millis(args.ready_timeout),
                delay: args.delay.draw(&mut rng),
                signal: args.signal,
                group: args.signal_group,
                exit_timeout: Duration::from_millis(args.timeout),
                show_output: args.show_output,
                load: load.as_ref(),
            };
            let r = run::run(&plan);
            eprintln!(
                "  {} run {}/{}: {}",
                commands[i].label,
                round + 1,
                args.runs,
                output::outcome_text(&r.outcome)
            );
            commands[i].runs.push(r);
        }
    }
    let results = Results {
        commands,
        signal: args.signal,
        seed,
        ready: ready_text,
        delay: args.delay,
        timeout_ms: args.timeout,
        load: load
            .as_ref()
            .map(|l| (l.url.to_string(), l.rate, args.load_threads)),
    };
    print!("{}", output::table(&results));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&output::json(&results))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, output::svg(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(results
        .commands
        .iter()
        .flat_map(|c| &c.runs)
        .all(|r| matches!(r.outcome, Outcome::Measured { .. })))
}

/// `A`…`Z`, then `C27`, `C28`, ….
fn label(i: usize) -> String {
    match u8::try_from(i) {
        Ok(n) if n < 26 => char::from(b'A' + n).to_string(),
        _ => format!("C{}", i + 1),
    }
}

pub(crate) fn delay_text(d: Delay) -> String {
    match d {
        Delay::Fixed(ms) => format!("{ms} ms"),
        Delay::Range(lo, hi) => format!("{lo}-{hi} ms (random)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_with_or_without_sig_and_by_number() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigint"), Ok(Signal::SIGINT));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn delays_are_fixed_or_a_non_empty_range() {
        assert_eq!(parse_delay("250"), Ok(Delay::Fixed(250)));
        assert_eq!(parse_delay("10-20"), Ok(Delay::Range(10, 20)));
        assert!(parse_delay("20-10").is_err());
        assert!(parse_delay("x").is_err());
        assert!(parse_delay("0-18446744073709551615").is_err());
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..100 {
            let d = Delay::Range(10, 20).draw(&mut rng).as_millis();
            assert!((10..=20).contains(&d), "{d}");
        }
    }

    #[test]
    fn labels_go_past_z() {
        assert_eq!(
            (label(0), label(1), label(25), label(26)),
            ("A".into(), "B".into(), "Z".into(), "C27".into())
        );
    }
}
