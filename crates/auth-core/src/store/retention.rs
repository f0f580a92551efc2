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

/// What the cleanup deletes from one table, as two statements over the
/// same rows: those ended or finished longer ago than `$1` seconds. An
/// index on the moment each is aged by (with the filter as its predicate)
/// serves both the search and the order, so a batch costs the same whatever
/// the backlog. `delete` takes at most `$2` of them, skipping rows anyone
/// else has locked (`SKIP LOCKED`: it never waits on a login, a validation
/// or a claim), and counts what it deleted; `count` counts them all
/// (`cleanup --dry-run`).
#[derive(Debug, Clone, Copy)]
pub struct Purge {
    delete: &'static str,
    count: &'static str,
}

/// Sessions revoked or expired (`sessions_ended`).
pub const SESSIONS: Purge = Purge {
    delete: "\
WITH gone AS (
    DELETE FROM sessions WHERE id IN (
        SELECT id FROM sessions
        WHERE LEAST(revoked_at, idle_expires_at) < now() - make_interval(secs => $1)
        ORDER BY LEAST(revoked_at, idle_expires_at) LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT count(*) AS n FROM gone",
    count: "\
SELECT count(*) AS n FROM sessions
WHERE LEAST(revoked_at, idle_expires_at) < now() - make_interval(secs => $1)",
};

/// API keys expired (`api_keys_expired`) longer ago than the session
/// retention: an expired key is `401` like an ended session, and stops
/// counting against its owner's cap once gone. (A revoked key is deleted
/// by its revocation.)
pub const API_KEYS: Purge = Purge {
    delete: "\
WITH gone AS (
    DELETE FROM api_keys WHERE id IN (
        SELECT id FROM api_keys
        WHERE expires_at < now() - make_interval(secs => $1)
        ORDER BY expires_at LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT count(*) AS n FROM gone",
    count: "\
SELECT count(*) AS n FROM api_keys
WHERE expires_at < now() - make_interval(secs => $1)",
};

/// Login attempts (`login_attempts_attempted`).
pub const LOGIN_ATTEMPTS: Purge = Purge {
    delete: "\
WITH gone AS (
    DELETE FROM login_attempts WHERE id IN (
        SELECT id FROM login_attempts
        WHERE attempted_at < now() - make_interval(secs => $1)
        ORDER BY attempted_at LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT count(*) AS n FROM gone",
    count: "\
SELECT count(*) AS n FROM login_attempts
WHERE attempted_at < now() - make_interval(secs => $1)",
};

/// Completed, failed and cancelled tasks (`tasks_finished`).
pub const FINISHED_TASKS: Purge = Purge {
    delete: "\
WITH gone AS (
    DELETE FROM tasks WHERE id IN (
        SELECT id FROM tasks
        WHERE status IN ('completed', 'failed', 'cancelled')
          AND finished_at < now() - make_interval(secs => $1)
        ORDER BY finished_at LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT count(*) AS n FROM gone",
    count: "\
SELECT count(*) AS n FROM tasks
WHERE status IN ('completed', 'failed', 'cancelled')
  AND finished_at < now() - make_interval(secs => $1)",
};

/// Deletes at most `batch` rows of `what` older than `age` by its `delete`;
/// returns how many.
pub async fn purge(
    conn: &mut AsyncPgConnection,
    what: Purge,
    age: Duration,
    batch: i64,
) -> Result<u64, DbError> {
    let sql = statement!(what.delete, CleanupWaitsOnLocks => purge_waiting(what.delete));
    let row = diesel::sql_query(sql)
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
    let row = diesel::sql_query(what.count)
        .bind::<Double, _>(secs(age))
        .prepared()
        .get_result::<Deleted>(conn)
        .await?;
    Ok(row.n.max(0) as u64)
}
