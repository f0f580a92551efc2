//! What the load tier (`load-tests`, `xtask load`) and the chaos tier share
//! and what deserves unit tests of its own: the record of what clients were
//! told, the post-run checks and their SQL, the contract's limits, the
//! thresholds and goose's report they judge, the chaos tier's traffic
//! driver, latency figures over windows of a run, and the drift rule a soak
//! run is judged by. xtask keeps the command line, processes, clusters,
//! sequencing, charts and summaries.

pub mod checks;
pub mod contract;
pub mod drift;
pub mod goose_report;
pub mod latency;
pub mod record;
pub mod round_trips;
pub mod thresholds;
pub mod timeline;
pub mod traffic;
