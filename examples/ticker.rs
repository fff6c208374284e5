//! A background thread that does periodic work until told to stop: flush
//! metrics every `--every` ms, once more on the way out.
//!
//! Two ways to wait are shown side by side:
//!
//! * `flusher` waits on [`Token::wait_timeout`], which returns early (with
//!   `true`) when the stop begins — the simplest periodic loop;
//! * `reporter` uses `crossbeam_channel::select!` over a tick channel and the
//!   token's receiver, for a thread that waits on other channels too.
//!
//! ```sh
//! cargo run --example ticker          # Ctrl-C to stop; each loop exits at once
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use crossbeam_channel::{select, tick};
use winddown::{Runtime, Token};

/// Periodic background work that stops at once on Ctrl-C.
#[derive(Parser, Debug)]
struct Args {
    /// Period of both loops, in ms.
    #[arg(long, default_value_t = 500)]
    every: u64,
    /// Stop by itself after this many ms (default: run until a signal).
    #[arg(long)]
    stop_after: Option<u64>,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let every = Duration::from_millis(args.every);
    let mut rt = Runtime::builder().grace(Duration::from_secs(2)).build()?;

    // Stands in for metrics gathered by the rest of the program.
    let events = Arc::new(AtomicU64::new(0));

    let counted = events.clone();
    rt.spawn("flusher", move |token: Token| {
        let mut flushes = 0u64;
        // `wait_timeout` is `true` once stopping: one last flush, then out.
        while !token.wait_timeout(every) {
            counted.fetch_add(1, Ordering::Relaxed);
            flushes += 1;
            println!("flush #{flushes}");
        }
        println!("final flush after {flushes} periodic ones");
        Ok(())
    })?;

    let seen = events.clone();
    rt.spawn("reporter", move |token: Token| {
        let ticks = tick(every);
        loop {
            select! {
                recv(ticks) -> _ => {
                    println!("events so far: {}", seen.load(Ordering::Relaxed));
                }
                // The token's receiver disconnects when the stop begins, so
                // this arm becomes ready and stays ready.
                recv(token.receiver()) -> _ => break,
            }
        }
        println!("reporter stopped ({:?})", token.reason());
        Ok(())
    })?;

    if let Some(ms) = args.stop_after {
        let handle = rt.handle();
        rt.spawn("timer", move |token: Token| {
            if !token.wait_timeout(Duration::from_millis(ms)) {
                handle.request("--stop-after elapsed");
            }
            Ok(())
        })?;
    }

    println!("ready");
    let report = rt.run();
    eprintln!("{report}");
    Ok(report.process_exit_code())
}
