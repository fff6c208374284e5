//! Process-wide signal wiring: one `ctrlc` handler for the whole process,
//! routing each signal to the live runtimes.
//!
//! `ctrlc` allows one handler per process, so the first runtime that wants
//! signals installs a router and every runtime registers with it while it is
//! alive. On a signal the router, for each registered runtime:
//!
//! * triggers the stop with [`StopReason::Signal`](crate::StopReason::Signal)
//!   if it was running (first signal);
//! * otherwise — a stop is already under way — ends the process at once with
//!   exit code 130, unless that runtime opted out (second signal).
//!
//! With no runtime registered (before the first or after the last run), a
//! signal ends the process with 130, as the default disposition would have:
//! installing winddown must not make a program immune to Ctrl-C.
//!
//! The handler body runs under `catch_unwind`: a panic on ctrlc's thread
//! would end that thread and silently disable every later signal.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::error::InstallError;
use crate::runtime::Shared;
use crate::thread::catch;

/// The exit code for a second signal (the shell's "interrupted").
pub(crate) const FORCED_EXIT_CODE: i32 = 130;

struct Router {
    installed: bool,
    next_id: u64,
    live: Vec<(u64, Weak<Shared>)>,
}

static ROUTER: Mutex<Router> = Mutex::new(Router {
    installed: false,
    next_id: 0,
    live: Vec::new(),
});

/// Keeps a runtime registered with the router; deregisters on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        ROUTER.lock().live.retain(|(id, _)| *id != self.id);
    }
}

/// Registers `shared` for signals, installing the process handler on first
/// use.
pub(crate) fn register(shared: &Arc<Shared>) -> Result<Registration, InstallError> {
    let mut router = ROUTER.lock();
    if !router.installed {
        ctrlc::set_handler(on_signal).map_err(|e| match e {
            ctrlc::Error::MultipleHandlers => InstallError::HandlerTaken(e),
            e => InstallError::Platform(e),
        })?;
        router.installed = true;
    }
    let id = router.next_id;
    router.next_id += 1;
    router.live.push((id, Arc::downgrade(shared)));
    Ok(Registration { id })
}

fn on_signal() {
    let outcome = catch(|| {
        // Upgrade under the lock, act outside it: triggering runs no user
        // code, but exiting while holding the lock would be rude to any
        // other thread's `Drop`.
        let live: Vec<Arc<Shared>> = ROUTER
            .lock()
            .live
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        if live.is_empty() {
            force_exit("signal with no runtime running");
        }
        for rt in live {
            if !rt.on_signal() {
                force_exit("second signal");
            }
        }
    });
    if let Err(panic) = outcome {
        eprintln!("winddown: the signal handler panicked ({panic}); still listening");
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the second signal ends the process: design invariant 5"
)]
fn force_exit(why: &str) -> ! {
    eprintln!("winddown: {why}, exiting now");
    std::process::exit(FORCED_EXIT_CODE)
}
