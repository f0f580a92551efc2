//! Test tooling for tessera, usable by any crate of the workspace:
//! - [`TestDb`]: a fresh, isolated database per test (tiers 1 and 2);
//! - [`TestApp`]: the real actix app on a random port over a `TestDb`;
//! - [`concurrency`]: barrier start, history recording and checkers (tier 2).
//!
//! Test tooling: a failed expectation here is the calling test's failure
//! report, so `unwrap`/`expect` are allowed, as they are in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod concurrency;
pub mod db;
pub mod round_trips;

pub use app::{LoggedIn, TestApp};
pub use db::TestDb;

/// Initialises test logging once when `TEST_LOG` is set (quiet otherwise).
pub fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
                ))
                .with_test_writer()
                .try_init();
        }
    });
}
