//! `winddown-probe`: the drain latency of any program — start it, wait until
//! it is ready, send it a signal, and time how long it takes to exit.
//!
//! ```sh
//! cargo install winddown --features probe
//! winddown-probe --runs 20 --ready-line '^ready$' 'target/release/examples/batch --keep-open'
//! winddown-probe --ready-port 127.0.0.1:8080 --load-url http://127.0.0.1:8080/health \
//!     'server --addr 127.0.0.1:8080' 'other-server --port 8080'     # A/B, runs interleaved
//! ```
//!
//! Each command is started `--runs` times (with two or more commands, in
//! turn: A, B, A, B, …, so a drift of the machine hits them alike), in a
//! process group of its own. Readiness is one of a stdout line matching a
//! regular expression (`--ready-line`), a TCP port accepting
//! (`--ready-port`), `READY=1` on a `NOTIFY_SOCKET` datagram socket the
//! probe binds (`--ready-notify`), or, with none of these, the spawn itself.
//! After `--delay` (fixed, or a random draw from a range) the signal
//! (`--signal`, default `TERM`) goes to the process (or, with
//! `--signal-group`, its group), and the latency is the time from the
//! `kill` to the return of `wait`. A process still alive `--timeout` after
//! the signal is killed with its group and counted as a timeout.
//!
//! The human table goes to stdout; `--json FILE` and `--svg FILE` write the
//! same results for scripts and for a look. Exit code: 0 if every run was
//! measured, 1 if one timed out, was never ready, exited before the signal
//! or could not be started, 2 for a usage error.

#[cfg(unix)]
mod load;
#[cfg(unix)]
mod output;
#[cfg(unix)]
mod run;
#[cfg(unix)]
mod stats;
#[cfg(unix)]
mod words;

#[cfg(unix)]
mod probe;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    probe::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("winddown-probe: signals and process groups are Unix only");
    std::process::ExitCode::from(2)
}
