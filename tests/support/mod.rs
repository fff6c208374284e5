//! Helpers shared by the integration tests; each test file includes this
//! module with `mod support;` and uses the parts it needs.

pub mod http;
