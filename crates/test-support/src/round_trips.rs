//! The counting proxy the round-trip budgets and the crowd races read the
//! service's database work through (shared with the chaos tier: harness).

pub use harness::round_trips::{CountingProxy, Sent};
