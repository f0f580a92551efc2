//! tessera's domain: users, sessions and the shared work queue. Every
//! statement of the rules is in [`store`]; [`db`] and [`wakeups`] send only
//! their own session SQL (the statement timeout, a transaction's advisory
//! lock, `LISTEN`). No HTTP here: auth-api maps these types to the contract.

/// The statement `$real`, or, when the deliberate fault `$fault` was
/// chosen, the whole statement `faults::sql::$broken` that breaks it (with
/// the same binds; a function of `$arg`s when it depends on them). Expands to `$real` in a normal build, so the store
/// reads as the real SQL.
macro_rules! statement {
    ($real:expr, $($fault:ident => $broken:ident $(($($arg:expr),*))?),+ $(,)?) => {{
        #[cfg(feature = "faults")]
        let sql: &'static str = {
            let mut sql: &'static str = $real;
            $(
                if crate::faults::active(crate::faults::Fault::$fault) {
                    sql = crate::faults::sql::$broken $(($($arg),*))?;
                }
            )+
            sql
        };
        #[cfg(not(feature = "faults"))]
        let sql: &'static str = $real;
        sql
    }};
}

/// Returns `$broken` (a call into the calling crate's `faults`; without
/// one, returns at once) instead of running the rest of the function, when
/// the deliberate fault `$fault` was chosen. Expands to nothing in a normal
/// build (the caller's `faults` feature decides), so the real code reads as
/// the real code.
#[macro_export]
macro_rules! or_fault {
    // A function with nothing to return does nothing instead.
    ($fault:ident) => {
        #[cfg(feature = "faults")]
        if $crate::faults::active($crate::faults::Fault::$fault) {
            return;
        }
    };
    ($fault:ident => $broken:expr) => {
        #[cfg(feature = "faults")]
        if $crate::faults::active($crate::faults::Fault::$fault) {
            return $broken;
        }
    };
}

pub mod accounts;
pub mod api_keys;
pub mod auth;
pub mod caller;
pub mod config;
pub mod db;
mod detached;
pub mod domain;
pub mod error;
#[cfg(feature = "faults")]
pub mod faults;
pub mod hashing;
pub mod login_limit;
pub mod queue;
pub mod retention;
pub mod store;
pub mod wakeups;

pub use error::{QueueError, SessionError, StoreError, Unavailable};
