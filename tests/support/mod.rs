//! Helpers shared by the integration tests; each test file includes this
//! module with `mod support;` and uses the parts it needs.

// Each test binary uses only some of the helpers, and they are `pub` for
// the test files, not for a public API.
#![allow(dead_code, unreachable_pub)]

pub mod http;
pub mod process;
