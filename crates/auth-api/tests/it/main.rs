//! auth-api's integration tests, one binary (tier 1 unless under `concurrent`).
//! Each test runs the real app over its own database; assertions about state
//! read the database afresh.

mod bounds;
mod concurrent;
mod hostile;
mod input;
mod openapi;
mod operations;
mod security;
mod sessions;
mod tasks;
mod users;
