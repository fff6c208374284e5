//! Helpers shared by the integration tests; each test file includes this
//! module with `mod support;` and uses the parts it needs.

// Each test binary uses only some of the helpers, and they are `pub` for
// the test files, not for a public API.
#![allow(dead_code, unreachable_pub)]

pub mod batch;
pub mod http;
pub mod process;

/// The seed for the random tests: `WINDDOWN_TEST_SEED` or the clock,
/// printed so a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("WINDDOWN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("seed {seed} (replay with WINDDOWN_TEST_SEED={seed})");
    seed
}
