//! winddown's own failures. Job and hook failures stay `anyhow::Error`; the
//! refusals of `submit` (which hand the job back) live in `submit.rs`.

use std::error::Error;
use std::fmt;
use std::io;

/// Why a runtime, pool or background thread could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A pool was asked for zero workers.
    ZeroWorkers {
        /// The pool's name.
        pool: String,
    },
    /// A pool or thread name was empty or held a NUL byte.
    InvalidName(String),
    /// Two units or threads were given the same name (a pool's workers
    /// are named `<pool>-<i>`, so those names are taken too).
    DuplicateName(String),
    /// The OS refused to spawn a thread (the cause is in `source()`).
    Spawn(io::Error),
    /// Signal handling could not be installed (the cause is in `source()`).
    Signals(InstallError),
    /// A unit was given a [`Stage`](crate::Stage) made by another runtime.
    UnknownStage {
        /// The unit's name.
        unit: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroWorkers { pool } => {
                write!(f, "pool {pool:?} needs at least one worker")
            }
            BuildError::InvalidName(name) => write!(f, "invalid thread name {name:?}"),
            BuildError::DuplicateName(name) => write!(f, "name {name:?} is already in use"),
            BuildError::Spawn(_) => f.write_str("failed to spawn a thread"),
            BuildError::Signals(_) => f.write_str("failed to install signal handling"),
            BuildError::UnknownStage { unit } => {
                write!(f, "{unit:?} was given a stage of another runtime")
            }
        }
    }
}

impl Error for BuildError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BuildError::Spawn(e) => Some(e),
            BuildError::Signals(e) => Some(e),
            _ => None,
        }
    }
}

impl From<InstallError> for BuildError {
    fn from(e: InstallError) -> Self {
        BuildError::Signals(e)
    }
}

/// Why the process-wide signal handling could not be installed.
///
/// On Unix winddown hooks each signal of a runtime's set once per process
/// (through `signal-hook`) and listens on one thread, `winddown-signals`;
/// a handler the program installed before is chained, not replaced, so
/// [`HandlerTaken`](InstallError::HandlerTaken) does not happen there.
#[derive(Debug)]
#[non_exhaustive]
pub enum InstallError {
    /// Another part of the program already set the process's one Ctrl-C
    /// handler (`ctrlc`'s), which winddown needs on non-Unix platforms.
    /// Never returned on Unix.
    HandlerTaken,
    /// The operating system refused to hook a signal or to spawn the
    /// signal thread (the cause is in `source()`).
    Platform(io::Error),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::HandlerTaken => {
                f.write_str("another signal handler is already installed in this process")
            }
            InstallError::Platform(_) => f.write_str("the platform refused the signal handler"),
        }
    }
}

impl Error for InstallError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            InstallError::HandlerTaken => None,
            InstallError::Platform(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_errors_say_what_failed_and_keep_the_cause_in_source() {
        let taken = BuildError::from(InstallError::HandlerTaken);
        assert_eq!(taken.to_string(), "failed to install signal handling");
        let cause = taken.source().expect("the install error");
        assert_eq!(
            cause.to_string(),
            "another signal handler is already installed in this process"
        );
        assert!(cause.source().is_none());
        let platform = InstallError::Platform(io::Error::other("EINVAL"));
        assert_eq!(
            platform.to_string(),
            "the platform refused the signal handler"
        );
        assert_eq!(platform.source().unwrap().to_string(), "EINVAL");
    }
}
