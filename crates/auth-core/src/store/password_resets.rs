//! The `password_resets` table: admin-issued, single-use reset tokens,
//! stored as their SHA-256, at most one per user.

use super::{Prepared as _, secs};
use crate::domain::TokenHash;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::result::Error as DbError;
use diesel::sql_types::{Bytea, Double, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use uuid::Uuid;

/// An issued reset: when it stops working.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Issued {
    #[diesel(sql_type = Timestamptz)]
    pub expires_at: DateTime<Utc>,
}

/// Issues `$1` (a token's hash) for user `$2`, valid `$3` seconds, in place
/// of any the user had: one statement, so two issues for one user leave one
/// token (the unique user id decides which). Nothing for no such user.
const ISSUE: &str = "\
INSERT INTO password_resets (token_hash, user_id, expires_at)
SELECT $1, id, now() + make_interval(secs => $3) FROM users WHERE id = $2
ON CONFLICT (user_id) DO UPDATE
SET token_hash = EXCLUDED.token_hash, created_at = now(),
    expires_at = EXCLUDED.expires_at, used_at = NULL
RETURNING expires_at";

/// Issues a reset token for `user_id` by [`ISSUE`]; `None`: no such user.
pub async fn issue(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
    user_id: Uuid,
    lifetime: Duration,
) -> Result<Option<Issued>, DbError> {
    diesel::sql_query(ISSUE)
        .bind::<Bytea, _>(hash.0.as_slice())
        .bind::<SqlUuid, _>(user_id)
        .bind::<Double, _>(secs(lifetime))
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<Issued>| rows.pop())
}

#[derive(QueryableByName)]
struct Owner {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
}

/// The enabled user a usable (unused, unexpired) reset token `$1` belongs to: a
/// look before the new password is hashed, so an unknown token costs no
/// hash. Deciding is [`USE`]'s.
pub async fn owner(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
) -> Result<Option<Uuid>, DbError> {
    diesel::sql_query(
        "SELECT user_id FROM password_resets
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()",
    )
    .bind::<Bytea, _>(hash.0.as_slice())
    .prepared()
    .get_results(conn)
    .await
    .map(|mut rows: Vec<Owner>| rows.pop().map(|o| o.user_id))
}

/// Uses reset token `$1`, once: concurrent uses queue on its row and
/// re-check `used_at IS NULL` once the winner commits, so exactly one gets
/// the user's id and the others nothing.
pub const USE: &str = "\
UPDATE password_resets SET used_at = now()
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
RETURNING user_id";

/// [`USE`] as this build sends it.
pub fn use_sql() -> &'static str {
    statement!(USE, ResetTokenUsedTwice => USE_RESET_UNGUARDED)
}

/// Uses reset token `hash` by [`USE`]: its user, or `None` when it was
/// used (also by a concurrent use that won), expired, or never issued.
pub async fn use_once(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
) -> Result<Option<Uuid>, DbError> {
    diesel::sql_query(use_sql())
        .bind::<Bytea, _>(hash.0.as_slice())
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<Owner>| rows.pop().map(|o| o.user_id))
}

/// Deletes user `id`'s reset token, if any: a password change or a
/// disable makes an outstanding reset moot.
pub async fn discard(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<(), DbError> {
    diesel::sql_query("DELETE FROM password_resets WHERE user_id = $1")
        .bind::<SqlUuid, _>(user_id)
        .prepared()
        .execute(conn)
        .await
        .map(|_| ())
}
