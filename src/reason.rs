//! Why a stop began: [`StopReason`], and the [`Signal`] that caused it.
//!
//! The lowest module of the crate: plain data, imported by the token tree,
//! the signal router and the report alike.

use std::fmt;

/// A signal winddown can turn into a graceful stop.
///
/// On Unix each variant is the POSIX signal of the same name; on Windows
/// only [`Signal::Interrupt`] (Ctrl-C and Ctrl-Break) is delivered.
///
/// ```
/// use winddown::Signal;
///
/// assert_eq!(Signal::Terminate.name(), "SIGTERM");
/// assert_eq!(Signal::from_name("SIGINT"), Some(Signal::Interrupt));
/// assert_eq!(Signal::from_name("hup"), Some(Signal::Hangup));
/// ```
///
/// Serialized (feature `serde`) as its [`name`](Signal::name), `"SIGTERM"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Signal {
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
    /// SIGTERM: what `kill`, systemd, Kubernetes and `timeout` send.
    Terminate,
    /// SIGHUP: the terminal went away (often "reload" to an operator).
    Hangup,
    /// SIGQUIT: Ctrl-\ in a terminal. Not in the default set: its default
    /// action (a core dump) is what most programs want.
    Quit,
}

impl Signal {
    /// The signals a runtime handles unless told otherwise:
    /// SIGINT, SIGTERM and SIGHUP.
    pub const DEFAULT_SET: [Signal; 3] = [Signal::Interrupt, Signal::Terminate, Signal::Hangup];

    /// Every signal winddown knows.
    pub const ALL: [Signal; 4] = [
        Signal::Interrupt,
        Signal::Terminate,
        Signal::Hangup,
        Signal::Quit,
    ];

    /// The conventional name, `"SIGINT"`, `"SIGTERM"`, `"SIGHUP"` or
    /// `"SIGQUIT"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
            Signal::Quit => "SIGQUIT",
        }
    }

    /// The signal's number on Linux and the BSDs (2, 15, 1, 3): the same on
    /// every platform winddown runs on. The shell reports a death by signal
    /// `n` as exit status `128 + n`.
    pub fn number(self) -> i32 {
        match self {
            Signal::Interrupt => 2,
            Signal::Terminate => 15,
            Signal::Hangup => 1,
            Signal::Quit => 3,
        }
    }

    /// Parses `"SIGTERM"`, `"TERM"` or `"term"` (any case, with or without
    /// the `SIG` prefix). Returns `None` for anything else.
    pub fn from_name(name: &str) -> Option<Signal> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL.into_iter().find(|s| &s.name()[3..] == bare)
    }

    /// The signal with this number, if winddown knows it.
    pub fn from_number(number: i32) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.number() == number)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stop began. The first trigger's reason wins and every observer sees
/// the same one.
///
/// Serialized (feature `serde`) as an object tagged by `kind`:
/// `{"kind": "signal", "signal": "SIGTERM"}`,
/// `{"kind": "requested", "message": "…"}`,
/// `{"kind": "job_failed", "pool": "…", "error": "…"}`,
/// `{"kind": "completed"}`. (A serialized [`Report`](crate::Report) also
/// carries the `Display` form, in `reason`.)
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// A signal reached the process (which one is carried).
    ///
    /// Its `Display` is the bare word `signal`, kept stable for scripts;
    /// the signal's name is in the variant ([`StopReason::signal`]).
    Signal(Signal),
    /// Code asked for the stop, with a message saying why.
    Requested(String),
    /// A job failed or panicked in a pool with fail-fast on.
    JobFailed {
        /// The pool's name.
        pool: String,
        /// The job's error or panic message.
        error: String,
    },
    /// The work ran out: every unit that holds the run open finished by
    /// itself (see the crate docs' Lifecycle).
    Completed,
}

impl StopReason {
    /// The signal, if a signal began the stop.
    pub fn signal(&self) -> Option<Signal> {
        match self {
            StopReason::Signal(s) => Some(*s),
            _ => None,
        }
    }

    /// Returns `true` if a signal began the stop.
    pub fn is_signal(&self) -> bool {
        matches!(self, StopReason::Signal(_))
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Signal(_) => f.write_str("signal"),
            StopReason::Requested(msg) => write!(f, "requested: {msg}"),
            StopReason::JobFailed { pool, error } => {
                write!(f, "job failed in pool {pool}: {error}")
            }
            StopReason::Completed => f.write_str("completed"),
        }
    }
}

// ===== Serialization (the `serde` feature) =====

#[cfg(feature = "serde")]
impl serde::Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for StopReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The shape on the wire: every variant a struct, so that serde's
        /// internal tagging can put `kind` beside its fields.
        #[derive(serde::Serialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum Repr<'a> {
            Signal { signal: Signal },
            Requested { message: &'a str },
            JobFailed { pool: &'a str, error: &'a str },
            Completed,
        }
        match self {
            StopReason::Signal(signal) => Repr::Signal { signal: *signal },
            StopReason::Requested(message) => Repr::Requested { message },
            StopReason::JobFailed { pool, error } => Repr::JobFailed { pool, error },
            StopReason::Completed => Repr::Completed,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for s in Signal::ALL {
            assert_eq!(Signal::from_name(s.name()), Some(s));
            assert_eq!(Signal::from_name(&s.name()[3..].to_lowercase()), Some(s));
            assert_eq!(Signal::from_number(s.number()), Some(s));
        }
        assert_eq!(Signal::from_name("SIGKILL"), None);
        assert_eq!(Signal::from_name(""), None);
        assert_eq!(Signal::from_number(9), None);
    }

    #[test]
    fn display_of_a_signal_reason_is_the_stable_word() {
        assert_eq!(StopReason::Signal(Signal::Terminate).to_string(), "signal");
        assert_eq!(
            StopReason::Signal(Signal::Hangup).signal(),
            Some(Signal::Hangup)
        );
        assert!(!StopReason::Completed.is_signal());
    }
}
