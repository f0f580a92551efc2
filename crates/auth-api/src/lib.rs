//! tessera's HTTP service: the contract's routes over auth-core. No SQL here.

pub mod client;
pub mod config;
pub mod error;
pub mod extract;
#[cfg(feature = "faults")]
mod faults;
pub mod fields;
pub mod maintenance;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
