//! All of tessera's SQL. Every function takes `&mut AsyncPgConnection`, so a
//! caller can compose several inside one transaction, and tests can run them
//! step by step on connections they control to force an interleaving.
//!
//! Time is always the database's `now()`: one clock for every instance.

pub mod login_attempts;
pub mod retention;
mod schema;
pub mod sessions;
pub mod tasks;
pub mod users;

use std::time::Duration;

/// A duration as the `double precision` seconds that `make_interval(secs => ...)` takes.
pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
