//! The `login_attempts` table behind the per-email login limit. See
//! [`crate::login_limit`] for the rule; these are its statements.

use super::users::UserRow;
use super::{Prepared as _, secs};
use diesel::QueryableByName;
use diesel::result::Error as DbError;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use uuid::Uuid;

/// What an admission decided ([`admit`]), and the user holding the email,
/// if any (looked up by the same statement: one round trip for both).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct AdmissionRow {
    /// `admitted`, `busy` or `limited` (see [`admit`]).
    #[diesel(sql_type = Text)]
    pub verdict: String,
    /// The new attempt's id, when admitted.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub attempt_id: Option<i64>,
    /// When limited: seconds until the oldest counted failure leaves the
    /// window (and the email may be tried again).
    #[diesel(sql_type = Nullable<Double>)]
    pub retry_after_secs: Option<f64>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub user_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    pub password_hash: Option<String>,
}

impl AdmissionRow {
    /// The user the admission looked up, if the email is registered.
    pub fn user(&self, email: &str) -> Option<UserRow> {
        Some(UserRow {
            id: self.user_id?,
            email: email.to_owned(),
            password_hash: self.password_hash.clone()?,
        })
    }
}

/// The statement that serialises every admission of one email until the
/// transaction ends, on every instance: a transaction-level advisory lock
/// on a key derived from the email (a row lock would need a row to exist
/// first; an unknown email has none). Its text carries only that number, so
/// it can ride on the transaction's `BEGIN` ([`crate::db::atomic_after`]).
pub fn lock_email_sql(email: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(email.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    format!("SELECT pg_advisory_xact_lock({})", i64::from_be_bytes(key))
}

/// The admission, as sent: `$1` the email, `$2` the limit, `$3` the
/// window and `$4` the staleness, in seconds (see [`admit`]).
pub const ADMIT: &str = "\
WITH purged AS (
    DELETE FROM login_attempts
    WHERE email = $1 AND attempted_at <= now() - make_interval(secs => $3)
),
last_success AS (
    SELECT coalesce(max(coalesce(settled_at, attempted_at)), '-infinity') AS at
    FROM login_attempts
    WHERE email = $1 AND outcome = 'succeeded'
),
failures AS (
    SELECT attempted_at FROM login_attempts, last_success
    WHERE email = $1
      AND attempted_at > now() - make_interval(secs => $3)
      AND ((outcome = 'failed' AND coalesce(settled_at, attempted_at) > last_success.at)
           OR (outcome = 'pending' AND attempted_at <= now() - make_interval(secs => $4)
               AND attempted_at > last_success.at))
    ORDER BY attempted_at DESC
    LIMIT $2
),
in_flight AS (
    SELECT count(*) AS n FROM login_attempts
    WHERE email = $1 AND outcome = 'pending'
      AND attempted_at > now() - make_interval(secs => $4)
),
decided AS (
    SELECT CASE
             WHEN (SELECT count(*) FROM failures) >= $2 THEN 'limited'
             WHEN (SELECT count(*) FROM failures) + (SELECT n FROM in_flight) >= $2 THEN 'busy'
             ELSE 'admitted'
           END AS verdict
),
admitted AS (
    INSERT INTO login_attempts (email)
    SELECT $1 FROM decided WHERE verdict = 'admitted'
    RETURNING id
)
SELECT decided.verdict,
       (SELECT id FROM admitted) AS attempt_id,
       CASE WHEN decided.verdict = 'limited' THEN
           (SELECT EXTRACT(EPOCH FROM min(attempted_at) + make_interval(secs => $3) - now())::float8
            FROM failures)
       END AS retry_after_secs,
       u.id AS user_id, u.password_hash
FROM decided LEFT JOIN users AS u ON u.email = $1 AND u.disabled_at IS NULL";

/// [`ADMIT`] as this build sends it: under a chosen fault, the statement
/// that breaks it.
pub fn admit_sql() -> &'static str {
    statement!(ADMIT,
        LoginLimitCheckThenRecord => ADMIT_COUNTING_FAILURES_ONLY,
        LoginLimitRefusesInFlight => ADMIT_COUNTING_IN_FLIGHT)
}

/// Decides one login attempt for `email` and, when admitted, inserts it as
/// pending. Must run after [`lock_email_sql`] in the same transaction, as
/// its own statement: only then does its snapshot include every admission
/// committed before this one.
///
/// Failures count from the email's last success, within `window`, in the
/// order outcomes were reported (`settled_at`; an outcome written without
/// one, by an instance older than the column, by its admission time): a
/// guess admitted before a success but checked after it still counts. An attempt still pending
/// after `stale` was abandoned (its process died between admission and
/// report) and counts as a failure too, if admitted after the last
/// success. Attempts pending for less are checks in flight. With `limit` failures the email
/// is `limited`; with fewer, but failures and checks in flight together at
/// `limit`, it is `busy` (the caller waits for a check to end: any of them
/// may be the last guess allowed); else the attempt is `admitted`. So at
/// most `limit` wrong passwords are checked since the last success, and a
/// correct one is refused only once the failures alone reach the limit.
/// Also drops this email's attempts that left the window.
pub async fn admit(
    conn: &mut AsyncPgConnection,
    email: &str,
    limit: u32,
    window: Duration,
    stale: Duration,
) -> Result<AdmissionRow, DbError> {
    diesel::sql_query(admit_sql())
        .bind::<Text, _>(email)
        .bind::<BigInt, _>(i64::from(limit.max(1)))
        .bind::<Double, _>(secs(window))
        .bind::<Double, _>(secs(stale))
        .prepared()
        .get_result(conn)
        .await
}

/// Records how an admitted attempt ended (`failed` or `succeeded`).
pub async fn report(
    conn: &mut AsyncPgConnection,
    attempt_id: i64,
    outcome: &'static str,
) -> Result<(), DbError> {
    diesel::sql_query(
        "UPDATE login_attempts SET outcome = $2, settled_at = clock_timestamp() WHERE id = $1",
    )
    .bind::<BigInt, _>(attempt_id)
    .bind::<Text, _>(outcome)
    .prepared()
    .execute(conn)
    .await
    .map(|_| ())
}

/// Gives back an admitted attempt whose password was never checked (the
/// hashing pool refused it): it was no guess, so it must not count as one.
pub async fn withdraw(conn: &mut AsyncPgConnection, attempt_id: i64) -> Result<(), DbError> {
    diesel::sql_query("DELETE FROM login_attempts WHERE id = $1 AND outcome = 'pending'")
        .bind::<BigInt, _>(attempt_id)
        .prepared()
        .execute(conn)
        .await
        .map(|_| ())
}
