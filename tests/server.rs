//! Placeholder while the server tests are written.
