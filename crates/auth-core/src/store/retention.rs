//! The cleanup's statements. Each deletes at most `batch` rows in one short
//! transaction: rows locked by anyone else are skipped (`SKIP LOCKED`), so a
//! batch never waits on a login, a validation or a claim, and none of them
//! waits longer than one batch on it.

use super::secs;
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
            .get_result::<Taken>(conn)
            .await?
            .taken,
    )
}

async fn delete(
    conn: &mut AsyncPgConnection,
    sql: &str,
    age: Duration,
    batch: i64,
) -> Result<u64, DbError> {
    let row = diesel::sql_query(sql.replace("{lock}", lock_clause()))
        .bind::<Double, _>(secs(age))
        .bind::<BigInt, _>(batch)
        .get_result::<Deleted>(conn)
        .await?;
    Ok(row.n.max(0) as u64)
}

/// How a batch locks its rows: never waiting for anyone else's.
fn lock_clause() -> &'static str {
    or_fault!(CleanupWaitsOnLocks => crate::faults::sql::LOCK_WAITING);
    "FOR UPDATE SKIP LOCKED"
}

/// Sessions revoked or expired more than `age` ago.
pub async fn purge_sessions(
    conn: &mut AsyncPgConnection,
    age: Duration,
    batch: i64,
) -> Result<u64, DbError> {
    delete(
        conn,
        "WITH gone AS (
           DELETE FROM sessions WHERE id IN (
             SELECT id FROM sessions
              WHERE LEAST(revoked_at, idle_expires_at) < now() - make_interval(secs => $1)
              ORDER BY LEAST(revoked_at, idle_expires_at)
              LIMIT $2 {lock})
           RETURNING 1)
         SELECT count(*) AS n FROM gone",
        age,
        batch,
    )
    .await
}

/// Login attempts older than `age` (the login limit's window).
pub async fn purge_login_attempts(
    conn: &mut AsyncPgConnection,
    age: Duration,
    batch: i64,
) -> Result<u64, DbError> {
    delete(
        conn,
        "WITH gone AS (
           DELETE FROM login_attempts WHERE id IN (
             SELECT id FROM login_attempts
              WHERE attempted_at < now() - make_interval(secs => $1)
              ORDER BY attempted_at
              LIMIT $2 {lock})
           RETURNING 1)
         SELECT count(*) AS n FROM gone",
        age,
        batch,
    )
    .await
}

/// Tasks completed more than `age` ago.
pub async fn purge_finished_tasks(
    conn: &mut AsyncPgConnection,
    age: Duration,
    batch: i64,
) -> Result<u64, DbError> {
    delete(
        conn,
        "WITH gone AS (
           DELETE FROM tasks WHERE id IN (
             SELECT id FROM tasks
              WHERE status = 'completed' AND completed_at < now() - make_interval(secs => $1)
              ORDER BY completed_at
              LIMIT $2 {lock})
           RETURNING 1)
         SELECT count(*) AS n FROM gone",
        age,
        batch,
    )
    .await
}

/// What the cleanup would delete now, without deleting (`cleanup --dry-run`).
pub async fn count_due(
    conn: &mut AsyncPgConnection,
    sessions_age: Duration,
    attempts_age: Duration,
    tasks_age: Duration,
) -> Result<[u64; 3], DbError> {
    #[derive(QueryableByName)]
    struct Due {
        #[diesel(sql_type = BigInt)]
        sessions: i64,
        #[diesel(sql_type = BigInt)]
        attempts: i64,
        #[diesel(sql_type = BigInt)]
        tasks: i64,
    }
    let due = diesel::sql_query(
        "SELECT
           (SELECT count(*) FROM sessions
             WHERE LEAST(revoked_at, idle_expires_at) < now() - make_interval(secs => $1)) AS sessions,
           (SELECT count(*) FROM login_attempts
             WHERE attempted_at < now() - make_interval(secs => $2)) AS attempts,
           (SELECT count(*) FROM tasks
             WHERE status = 'completed' AND completed_at < now() - make_interval(secs => $3)) AS tasks",
    )
    .bind::<Double, _>(secs(sessions_age))
    .bind::<Double, _>(secs(attempts_age))
    .bind::<Double, _>(secs(tasks_age))
    .get_result::<Due>(conn)
    .await?;
    Ok([due.sessions, due.attempts, due.tasks].map(|n| n.max(0) as u64))
}
