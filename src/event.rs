//! Events for logs, through [`tracing`](https://docs.rs/tracing) when the
//! `tracing` feature is on; nothing at all when it is off.
//!
//! Every event has the target `winddown` and structured fields, so a
//! subscriber can filter them (`RUST_LOG=winddown=info` with
//! `tracing-subscriber`'s `EnvFilter`) and a log pipeline can index them.
//! The crate docs' *Events* section lists them with their levels and fields.
//!
//! The macro below expands to nothing without the feature: its arguments are
//! not even evaluated, so an event costs nothing when off. A value computed
//! only for an event is computed inside the macro call for that reason.

/// Emits one event at `$level` (`error`, `warn`, `info`, `debug`, `trace`)
/// with the target `winddown`; the rest of the arguments are `tracing`'s
/// (fields, then the message).
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {{
        #[cfg(feature = "tracing")]
        {
            ::tracing::$level!(target: "winddown", $($arg)+);
        }
    }};
}

/// A duration as milliseconds, the unit every event's `*_ms` field uses,
/// to the microsecond (so a log line reads `1505.386`, not
/// `1505.3869399999999`).
#[cfg(feature = "tracing")]
pub(crate) fn ms(d: std::time::Duration) -> f64 {
    // Whole microseconds fit an f64 exactly up to 2^53 µs (285 years).
    d.as_micros() as f64 / 1e3
}
