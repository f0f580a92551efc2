//! The cleanup's statements. Each deletes at most `batch` rows in one short
//! transaction: rows locked by anyone else are skipped (`SKIP LOCKED`), so a
//! batch never waits on a login, a validation or a claim, and none of them
//! waits longer than one batch on it.

use super::{Prepared as _, secs};
use diesel::QueryableByName;
use diesel::result::Error as DbError;
use diesel::sql_types::{BigInt, Bool, Double};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;

/// The advisory-lock key of the cleanup: "at most one instance at a time".
pub const CLEANUP_LOCK: i64 = 0x7465_7373_6572_6101; // "tessera" + 1

#[derive(QueryableByName)]
struct Taken {
    #[diesel(sql_type = Bool)]
    taken: bool,
}

#[derive(QueryableByName)]
struct Deleted {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Takes the cleanup's lock for the current transaction, if no other
/// instance holds it; it is released at COMMIT (also under a transaction
/// pooler, unlike a session lock).
pub async fn try_lock_cleanup(conn: &mut AsyncPgConnection) -> Result<bool, DbError> {
    Ok(
        diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS taken")
            .bind::<BigInt, _>(CLEANUP_LOCK)
            .prepared()
            .get_result::<Taken>(conn)
            .await?
            .taken,
    )
}

/// What the cleanup deletes from one table: the rows matching `filter`
/// whose `aged` moment is older than the cutoff. An index on `aged` (with
/// `filter` as its predicate) serves both the search and the order, so a
/// batch costs the same whatever the backlog.
#[derive(Debug, Clone, Copy)]
pub struct Purge {
    table: &'static str,
    filter: &'static str,
    aged: &'static str,
}

/// Sessions revoked or expired (`sessions_ended`).
pub const SESSIONS: Purge = Purge {
    table: "sessions",
    filter: "true",
    aged: "LEAST(revoked_at, idle_expires_at)",
};

/// Login attempts (`login_attempts_attempted`).
pub const LOGIN_ATTEMPTS: Purge = Purge {
    table: "login_attempts",
    filter: "true",
    aged: "attempted_at",
};

/// Completed, failed and cancelled tasks (`tasks_finished`).
pub const FINISHED_TASKS: Purge = Purge {
    table: "tasks",
    filter: "status IN ('completed', 'failed', 'cancelled')",
    aged: "finished_at",
};

impl Purge {
    /// `<table> WHERE <the rows due>`, the cutoff's age as `$1` in seconds.
    fn due_rows(&self) -> String {
        let Purge {
            table,
            filter,
            aged,
        } = self;
        format!("{table} WHERE {filter} AND {aged} < now() - make_interval(secs => $1)")
    }
}

/// How a batch locks its rows: never waiting for anyone else's.
fn lock_clause() -> &'static str {
    or_fault!(CleanupWaitsOnLocks => crate::faults::sql::LOCK_WAITING);
    "FOR UPDATE SKIP LOCKED"
}

/// Deletes at most `batch` rows of `what` older than `age`; returns how many.
pub async fn purge(
    conn: &mut AsyncPgConnection,
    what: Purge,
    age: Duration,
    batch: i64,
) -> Result<u64, DbError> {
    let row = diesel::sql_query(format!(
        "WITH gone AS (
           DELETE FROM {table} WHERE id IN (
             SELECT id FROM {due} ORDER BY {aged} LIMIT $2 {lock})
           RETURNING 1)
         SELECT count(*) AS n FROM gone",
        table = what.table,
        due = what.due_rows(),
        aged = what.aged,
        lock = lock_clause(),
    ))
    .bind::<Double, _>(secs(age))
    .bind::<BigInt, _>(batch)
    .prepared()
    .get_result::<Deleted>(conn)
    .await?;
    Ok(row.n.max(0) as u64)
}

/// How many rows of `what` a purge would delete now (`cleanup --dry-run`).
pub async fn count_due(
    conn: &mut AsyncPgConnection,
    what: Purge,
    age: Duration,
) -> Result<u64, DbError> {
    let row = diesel::sql_query(format!("SELECT count(*) AS n FROM {}", what.due_rows()))
        .bind::<Double, _>(secs(age))
        .prepared()
        .get_result::<Deleted>(conn)
        .await?;
    Ok(row.n.max(0) as u64)
}
