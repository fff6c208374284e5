//! Process-wide signal wiring (interim: the `ctrlc` router, behind the
//! interface the runtime uses).

use std::sync::Weak;

use parking_lot::Mutex;

use crate::error::InstallError;
use crate::reason::Signal;
use crate::thread::catch;

/// What a runtime exposes to the router.
pub(crate) trait SignalTarget: Send + Sync {
    /// Begins the graceful stop with `StopReason::Signal(sig)` if still
    /// running; `true` if this call began it.
    fn signal_trigger(&self, sig: Signal) -> bool;
}

/// How a runtime wants signals handled.
#[derive(Clone, Debug)]
pub(crate) struct SignalConfig {
    pub(crate) set: Vec<Signal>,
    pub(crate) honor_ignored: bool,
    pub(crate) force_exit: bool,
    pub(crate) forced_exit_code: i32,
}

struct Router {
    installed: bool,
    next_id: u64,
    live: Vec<(u64, Weak<dyn SignalTarget>)>,
    force_exit: bool,
    code: i32,
}

static ROUTER: Mutex<Router> = Mutex::new(Router {
    installed: false,
    next_id: 0,
    live: Vec::new(),
    force_exit: true,
    code: 3,
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

pub(crate) fn register(
    target: Weak<dyn SignalTarget>,
    config: &SignalConfig,
) -> Result<Registration, InstallError> {
    let mut router = ROUTER.lock();
    if !router.installed {
        ctrlc::set_handler(on_signal).map_err(|e| match e {
            ctrlc::Error::MultipleHandlers => InstallError::HandlerTaken(e),
            e => InstallError::Platform(e),
        })?;
        router.installed = true;
    }
    let _ = (config.honor_ignored, &config.set);
    router.force_exit = config.force_exit;
    router.code = config.forced_exit_code;
    let id = router.next_id;
    router.next_id += 1;
    router.live.push((id, target));
    Ok(Registration { id })
}

fn on_signal() {
    let outcome = catch(|| {
        let (live, force, code) = {
            let r = ROUTER.lock();
            let live: Vec<_> = r.live.iter().filter_map(|(_, w)| w.upgrade()).collect();
            (live, r.force_exit, r.code)
        };
        let mut began = false;
        for rt in live {
            began |= rt.signal_trigger(Signal::Terminate);
        }
        if !began && force {
            force_exit(code);
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
fn force_exit(code: i32) -> ! {
    eprintln!("winddown: second signal, exiting now");
    std::process::exit(code)
}
