//! tessera's domain: users, sessions and the shared work queue, with all of
//! their SQL (in [`store`]). No HTTP here: auth-api maps these types to the
//! contract.

pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
#[cfg(feature = "faults")]
pub mod faults;
pub mod hashing;
pub mod login_limit;
pub mod queue;
pub mod store;

pub use error::{Error, Result};
