//! Stop-accepting and release hooks: each runs once, on a thread of its own,
//! bounded by its budget; an error or panic is recorded and the rest still
//! run.
//!
//! A hook runs on its own thread so that one that overruns its budget can be
//! left behind: the runner waits on a one-shot channel with `recv_timeout`,
//! records `TimedOut`, detaches the thread and starts the next hook. The
//! overrunning hook keeps running concurrently with the ones after it; that
//! is the price of "no hang" (design invariant 2) and is documented on
//! [`Runtime::on_release`](crate::Runtime::on_release).

use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::report::{HookKind, HookOutcome, HookReport};
use crate::thread::catch;

type HookFn = Box<dyn FnOnce() -> anyhow::Result<()> + Send>;

pub(crate) struct Hook {
    pub(crate) name: String,
    pub(crate) budget: Duration,
    pub(crate) f: HookFn,
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hook")
            .field("name", &self.name)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Runs `hooks` in the order given, each against its budget.
pub(crate) fn run_all(kind: HookKind, hooks: Vec<Hook>) -> Vec<HookReport> {
    hooks.into_iter().map(|h| run_one(kind, h)).collect()
}

fn run_one(kind: HookKind, hook: Hook) -> HookReport {
    let Hook { name, budget, f } = hook;
    let start = Instant::now();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name(format!("hook:{name}"))
        .spawn(move || {
            let _ = tx.send(catch(f));
        });
    let outcome = match spawned {
        Err(e) => HookOutcome::Failed(format!("could not spawn the hook's thread: {e}")),
        Ok(handle) => {
            // A zero budget still lets a hook that is already done count;
            // a budget too large for the clock waits without limit.
            let result = match start.checked_add(budget) {
                Some(deadline) => rx.recv_deadline(deadline),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let outcome = match result {
                Ok(Ok(Ok(()))) => HookOutcome::Ok,
                Ok(Ok(Err(e))) => HookOutcome::Failed(format!("{e:#}")),
                Ok(Err(panic)) => HookOutcome::Panicked(panic),
                Err(RecvTimeoutError::Timeout) => HookOutcome::TimedOut,
                // `catch` turns every panic into a message, so the sender is
                // only dropped after sending; keep a defined answer anyway.
                Err(RecvTimeoutError::Disconnected) => {
                    HookOutcome::Panicked("hook thread ended without a result".into())
                }
            };
            if outcome == HookOutcome::TimedOut {
                drop(handle); // detach: it may finish later, unobserved
            } else {
                // It has sent its result and is about to end: join it, so no
                // thread is left behind.
                let _ = handle.join();
            }
            outcome
        }
    };
    let report = HookReport {
        name,
        kind,
        outcome,
        elapsed: start.elapsed(),
    };
    log(&report, budget);
    report
}

/// The hook's event: `debug` when it went well, `warn` otherwise.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
fn log(report: &HookReport, budget: std::time::Duration) {
    let kind = match report.kind {
        HookKind::StopAccepting => "stop_accepting",
        HookKind::Release => "release",
    };
    match &report.outcome {
        HookOutcome::Ok => event!(
            debug,
            hook = %report.name,
            kind,
            elapsed_ms = crate::event::ms(report.elapsed),
            "hook done"
        ),
        HookOutcome::TimedOut => event!(
            warn,
            hook = %report.name,
            kind,
            budget_ms = crate::event::ms(budget),
            "hook overran its budget: left running, the next one starts"
        ),
        HookOutcome::Failed(error) => event!(
            warn,
            hook = %report.name,
            kind,
            error = %error,
            elapsed_ms = crate::event::ms(report.elapsed),
            "hook failed"
        ),
        HookOutcome::Panicked(panic) => event!(
            error,
            hook = %report.name,
            kind,
            panic = %panic,
            elapsed_ms = crate::event::ms(report.elapsed),
            "hook panicked"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(
        name: &str,
        budget_ms: u64,
        f: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> Hook {
        Hook {
            name: name.into(),
            budget: Duration::from_millis(budget_ms),
            f: Box::new(f),
        }
    }

    #[test]
    fn outcomes_are_recorded_and_every_hook_runs() {
        let (block_tx, block_rx) = crossbeam_channel::bounded::<()>(0);
        let reports = run_all(
            HookKind::Release,
            vec![
                hook("ok", 1000, || Ok(())),
                hook("err", 1000, || Err(anyhow::anyhow!("disk full"))),
                hook("panics", 1000, || panic!("oops")),
                hook("slow", 20, move || {
                    let _ = block_rx.recv(); // until the test ends
                    Ok(())
                }),
                hook("after", 1000, || Ok(())),
            ],
        );
        let outcomes: Vec<_> = reports.iter().map(|r| r.outcome.clone()).collect();
        assert_eq!(
            outcomes,
            [
                HookOutcome::Ok,
                HookOutcome::Failed("disk full".into()),
                HookOutcome::Panicked("oops".into()),
                HookOutcome::TimedOut,
                HookOutcome::Ok,
            ]
        );
        drop(block_tx);
    }
}
