//! The `api_keys` table: credentials for machines, stored as their
//! SHA-256, each with the roles it carries.

use super::{Prepared as _, secs};
use crate::domain::{Roles, TokenHash};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::result::Error as DbError;
use diesel::sql_types::{
    Array, BigInt, Bytea, Double, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use uuid::Uuid;

/// A key as its owner (or an admin) sees it: never the key itself.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct KeyRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = Text)]
    pub name: String,
    /// What the key may do: the roles it was made with, less any its
    /// owner lost since ([`narrow_to`]).
    #[diesel(sql_type = Array<Text>)]
    pub roles: Roles,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key's owner as [`LOCK_OWNER`] found it.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Owner {
    #[diesel(sql_type = Array<Text>)]
    pub roles: Roles,
    /// The database's clock (the one clock every instance shares): what a
    /// key's `expires_at` must be after.
    #[diesel(sql_type = Timestamptz)]
    pub now: DateTime<Utc>,
}

/// Takes enabled user `$1`'s row lock (the lock a login takes) and reads
/// its roles: key creations of one user queue on it, so each counts the
/// keys the ones before it committed; a disable, whose update takes the
/// same lock, revokes every key made before it and none is made after.
pub const LOCK_OWNER: &str = "\
SELECT roles::text[] AS roles, now() AS now FROM users
WHERE id = $1 AND disabled_at IS NULL FOR NO KEY UPDATE";

/// Locks enabled user `id` by [`LOCK_OWNER`]; `None` for no such enabled user.
pub async fn lock_owner(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<Owner>, DbError> {
    diesel::sql_query(LOCK_OWNER)
        .bind::<SqlUuid, _>(id)
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<Owner>| rows.pop())
}

/// A key being made: what [`create`] inserts.
#[derive(Debug, Clone, Copy)]
pub struct NewKey<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: &'a str,
    pub hash: &'a TokenHash,
    pub roles: Roles,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Inserts key `$1` of user `$2` while the user holds fewer than `$7`
/// keys (expired ones too: every row counts, so the table cannot grow past
/// the cap per user) and the caller's session `$8` is still active (a
/// password change or a log out everywhere that committed first wins).
/// Must run after [`LOCK_OWNER`] in the same transaction, as a statement
/// of its own: only then does its snapshot hold every key that creations
/// before it committed, and every revocation a password change made.
pub const CREATE: &str = "\
INSERT INTO api_keys (id, user_id, name, key_hash, roles, expires_at)
SELECT $1, $2, $3, $4, $5::user_role[], $6
WHERE (SELECT count(*) FROM api_keys WHERE user_id = $2) < $7
  AND EXISTS (SELECT 1 FROM sessions
              WHERE id = $8 AND user_id = $2 AND revoked_at IS NULL
                AND idle_expires_at > now() AND absolute_expires_at > now())
RETURNING id, user_id, name, roles::text[] AS roles, created_at, expires_at, last_used_at";

/// [`CREATE`] as this build sends it.
pub fn create_sql() -> &'static str {
    statement!(CREATE, KeyCreationIgnoresRevokedCaller => CREATE_KEY_WITHOUT_CALLER)
}

/// Why [`create`] made nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotMade {
    /// The user holds `cap` keys.
    Full,
    /// The caller's session ended first.
    CallerGone,
}

/// Inserts `key` by [`CREATE`], made by `session`, within `cap` keys for
/// its user; on nothing made, one more read says why.
pub async fn create(
    conn: &mut AsyncPgConnection,
    key: NewKey<'_>,
    session: Uuid,
    cap: u32,
) -> Result<Result<KeyRow, NotMade>, DbError> {
    let made: Option<KeyRow> = diesel::sql_query(create_sql())
        .bind::<SqlUuid, _>(key.id)
        .bind::<SqlUuid, _>(key.user_id)
        .bind::<Text, _>(key.name)
        .bind::<Bytea, _>(key.hash.0.as_slice())
        .bind::<Array<Text>, _>(key.roles.words())
        .bind::<Nullable<Timestamptz>, _>(key.expires_at)
        .bind::<BigInt, _>(i64::from(cap))
        .bind::<SqlUuid, _>(session)
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<KeyRow>| rows.pop())?;
    if let Some(row) = made {
        return Ok(Ok(row));
    }
    let held = diesel::sql_query("SELECT count(*) AS n FROM api_keys WHERE user_id = $1")
        .bind::<SqlUuid, _>(key.user_id)
        .prepared()
        .get_result::<Held>(conn)
        .await?;
    Ok(Err(match held.n >= i64::from(cap) {
        true => NotMade::Full,
        false => NotMade::CallerGone,
    }))
}

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Validates key `$1`: one indexed lookup, its roles as stored. Nothing
/// else is read: the changes that end a key or narrow what it may do
/// (revocation, a disable, a password change or reset, a role taken from
/// its owner) change its row in their own transaction. `last_used_at` is
/// written only when `$2` seconds have passed since the last write (so a
/// busy key costs reads only), and the key is served then only if the
/// write found its row: a key whose touch waited on its revocation (the
/// row's delete) is not served.
pub const VALIDATE: &str = "\
WITH found AS (
    SELECT id, user_id, roles::text[] AS roles,
           last_used_at IS NULL OR now() - last_used_at >= make_interval(secs => $2) AS due
    FROM api_keys
    WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())
), touched AS (
    UPDATE api_keys SET last_used_at = now()
    WHERE id = (SELECT id FROM found WHERE due)
    RETURNING id
)
SELECT found.id, found.user_id, found.roles FROM found
WHERE NOT found.due OR EXISTS (SELECT 1 FROM touched)";

/// A validated key.
#[derive(Debug, Clone, Copy, PartialEq, QueryableByName)]
pub struct ValidKey {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = Array<Text>)]
    pub roles: Roles,
}

/// The live key holding `hash` by [`VALIDATE`], touched if due.
pub async fn validate(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
    touch_interval: Duration,
) -> Result<Option<ValidKey>, DbError> {
    diesel::sql_query(VALIDATE)
        .bind::<Bytea, _>(hash.0.as_slice())
        .bind::<Double, _>(secs(touch_interval))
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<ValidKey>| rows.pop())
}

/// User `$1`'s keys, expired ones too (they count against the cap until
/// revoked or purged), oldest first: at most the cap of them.
pub async fn list(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<Vec<KeyRow>, DbError> {
    diesel::sql_query(
        "SELECT id, user_id, name, roles::text[] AS roles, created_at, expires_at, last_used_at
         FROM api_keys WHERE user_id = $1
         ORDER BY created_at, id",
    )
    .bind::<SqlUuid, _>(user_id)
    .prepared()
    .get_results(conn)
    .await
}

/// Revokes key `$1` (deletes it: a revoked key is nothing to keep), when
/// `$2` is given only if it is that user's; whether it did. Committed
/// before the caller is answered, so no validation that starts after the
/// answer finds the key.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Option<Uuid>,
) -> Result<bool, DbError> {
    diesel::sql_query("DELETE FROM api_keys WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)")
        .bind::<SqlUuid, _>(id)
        .bind::<Nullable<SqlUuid>, _>(owner)
        .prepared()
        .execute(conn)
        .await
        .map(|n| n == 1)
}

/// Revokes every key of user `$1` (its disable, its password's change or
/// reset); how many.
pub async fn revoke_all_of(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<usize, DbError> {
    diesel::sql_query("DELETE FROM api_keys WHERE user_id = $1")
        .bind::<SqlUuid, _>(user_id)
        .prepared()
        .execute(conn)
        .await
}

/// Takes from user `$1`'s keys every role that `$2` (what the owner's new
/// roles cover) lacks: a role taken from the owner is gone from its keys
/// for good, not only while the owner lacks it. Runs after the update of
/// the owner's roles, in its transaction: every key a creation made while
/// holding the owner's lock is in this statement's snapshot.
pub async fn narrow_to(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    covered: Roles,
) -> Result<usize, DbError> {
    diesel::sql_query(
        "UPDATE api_keys
         SET roles = ARRAY(SELECT r FROM unnest(roles) AS r WHERE r = ANY($2::user_role[]) ORDER BY r)
         WHERE user_id = $1 AND NOT roles <@ $2::user_role[]",
    )
    .bind::<SqlUuid, _>(user_id)
    .bind::<Array<Text>, _>(covered.words())
    .prepared()
    .execute(conn)
    .await
}
