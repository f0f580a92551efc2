//! The goose clients' shared [`Record`] of what the service acknowledged,
//! written as `record.json` for the checks `xtask load` runs afterwards.

pub use harness::record::Record;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

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
    with(|record| record.write(Path::new(path)))
}
