//! What the clients saw, kept for the correctness checks that run after the
//! load: which registrations, logouts, claims, completions and releases the
//! service acknowledged. `xtask load` compares it with the database.

use serde::Serialize;
use std::sync::{Mutex, OnceLock, PoisonError};
use uuid::Uuid;

#[derive(Debug, Default, Serialize)]
pub struct Record {
    /// Users whose registration returned 201.
    pub registered: Vec<Uuid>,
    /// Sessions whose logout returned 204.
    pub logged_out: Vec<Uuid>,
    /// Validations sent with a token after its logout returned; each must be 401.
    pub validations_after_logout: u64,
    /// Of those, how many the service accepted (a violation).
    pub accepted_after_logout: u64,
    /// Claim calls answered 200, and of those how many claimed nothing.
    pub claim_calls: u64,
    pub empty_claims: u64,
    pub requested_total: u64,
    /// The sum of the `claimed` figures the service reported.
    pub claimed_total: u64,
    /// Claim answers whose `claimed` differed from their task list, exceeded
    /// `requested`, or listed a task not assigned to the caller.
    pub dishonest_claims: u64,
    /// Task ids in every claim answer (a task appears once per claim of it).
    pub claimed: Vec<Uuid>,
    /// Tasks whose release returned 200, and whose completion returned 200.
    pub released: Vec<Uuid>,
    pub completed: Vec<Uuid>,
    /// Tasks the producers' batch creates acknowledged.
    pub tasks_created: u64,
}

fn global() -> &'static Mutex<Record> {
    static RECORD: OnceLock<Mutex<Record>> = OnceLock::new();
    RECORD.get_or_init(Mutex::default)
}

/// Applies `f` to the shared record.
pub fn with<R>(f: impl FnOnce(&mut Record) -> R) -> R {
    let mut record = global().lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut record)
}

/// Writes the record as JSON to `path`.
pub fn write(path: &str) -> anyhow::Result<()> {
    let json = with(|record| serde_json::to_vec_pretty(record))?;
    std::fs::write(path, json)?;
    Ok(())
}
