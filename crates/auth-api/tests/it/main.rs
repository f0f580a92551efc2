//! auth-api's integration tests, one binary (tier 1 unless under `concurrent`).
//! Each test runs the real app over its own database; assertions about state
//! read the database afresh.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this covers the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_keys;
mod bounds;
mod cli;
mod concurrent;
mod edges;
mod hostile;
mod input;
mod openapi;
mod operations;
mod passwords;
mod pooler;
mod queue_rules;
mod retention;
mod roles;
mod round_trips;
mod security;
mod session_security;
mod sessions;
mod startup;
mod tasks;
mod users;
