//! auth-api's integration tests, one binary (tier 1 unless under `concurrent`).
//! Each test runs the real app over its own database; assertions about state
//! read the database afresh.

mod concurrent;
mod input;
mod operations;
mod sessions;
mod tasks;
mod users;
