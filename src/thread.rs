//! Spawning the runtime's threads: a name, a drop guard that reports the exit
//! (also on panic), and one helper around `catch_unwind`.

use std::any::Any;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;

/// Reports a thread's exit on the runtime's `done` channel when dropped, so
/// the joiner hears about a thread that panicked as well as one that returned.
///
/// WARNING: once the last guard has sent, the joiner may go on to tear the
/// runtime down; a thread must not touch shared state after its guard drops.
#[derive(Debug)]
pub(crate) struct DoneGuard {
    id: usize,
    done: Sender<usize>,
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        // The joiner may have given up on us (we were detached at the
        // deadline) and dropped the receiver; that is fine.
        let _ = self.done.send(self.id);
    }
}

/// Spawns an OS thread named `name` that runs `body` and then reports `id` on
/// `done`. `stack_size` of `None` keeps the platform default.
pub(crate) fn spawn(
    name: String,
    id: usize,
    stack_size: Option<usize>,
    done: Sender<usize>,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let mut builder = thread::Builder::new().name(name);
    if let Some(size) = stack_size {
        builder = builder.stack_size(size);
    }
    builder.spawn(move || {
        let _guard = DoneGuard { id, done };
        body();
    })
}

/// Runs `f`, turning a panic into `Err(message)`. Used for jobs, hooks and
/// thread bodies alike, so the thread survives and the panic is recorded.
///
/// `AssertUnwindSafe` is sound here in the library's sense: after a panic the
/// runtime never looks at the state the closure captured; it only records the
/// message (the user's own shared state is theirs to guard, as with any
/// `catch_unwind`).
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_returns_the_panic_message() {
        let r: Result<(), String> = catch(|| panic!("boom {}", 7));
        assert_eq!(r.unwrap_err(), "boom 7");
        assert_eq!(catch(|| 5).unwrap(), 5);
    }

    #[test]
    fn done_guard_reports_even_when_the_thread_panics() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let h = spawn("t-panics".into(), 3, None, tx, || panic!("x")).unwrap();
        assert_eq!(rx.recv().unwrap(), 3);
        assert!(h.join().is_err());
        assert!(rx.recv().is_err(), "disconnect: every sender is gone");
    }
}
