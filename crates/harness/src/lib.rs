//! What the load tier (`load-tests`, `xtask load`) and the fault tier share
//! and what deserves unit tests of its own: latency figures over windows of
//! a run, and the drift rule a soak run is judged by.

pub mod drift;
pub mod latency;
pub mod timeline;
