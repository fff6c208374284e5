//! The README's quick-start example, verbatim: a pool of workers that drains
//! on Ctrl-C, a release hook, and the report's exit code.

use std::process::ExitCode;
use std::time::Duration;

use winddown::Runtime;

fn main() -> anyhow::Result<ExitCode> {
    // Installs the SIGINT/SIGTERM/SIGHUP handler; the drain gets 5 s.
    let mut rt = Runtime::builder().grace(Duration::from_secs(5)).build()?;

    // Four named threads ("square-0" … "square-3") pull jobs off one queue.
    let jobs = rt.pool::<u64>("square").workers(4).start(|n, _token| {
        std::thread::sleep(Duration::from_millis(10)); // the real work
        println!("{n}² = {}", n * n);
        Ok(())
    })?;

    // Runs after every worker has stopped, like `defer` in Go.
    rt.on_release("close-db", Duration::from_secs(1), || {
        println!("database closed");
        Ok(())
    });

    // Feed the pool from a producer thread; dropping the submitter at the
    // end says "no more work", and the run completes once it has drained.
    rt.spawn("producer", move |_token| {
        if let Err(refused) = jobs.feed(1..=200) {
            // Stopped early: these never ran; keep them for the next run.
            eprintln!("not submitted: {} jobs", refused.into_unsubmitted().count());
        }
        Ok(())
    })?;

    let report = rt.run(); // blocks until done or Ctrl-C, then drains
    eprintln!("{report}");
    Ok(report.process_exit_code())
}
