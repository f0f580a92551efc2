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
    /// The roles the key was made with.
    #[diesel(sql_type = Array<Text>)]
    pub roles: Roles,
    /// Its owner's roles now: the key may do what both grant.
    #[diesel(sql_type = Array<Text>)]
    pub owner_roles: Roles,
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

/// Inserts key `$1` of user `$2` unless the user has `$7` live keys
/// already (unrevoked, unexpired). Must run after [`LOCK_OWNER`] in the
/// same transaction, as a statement of its own: only then does its
/// snapshot hold every key that creations before it committed.
pub const CREATE: &str = "\
INSERT INTO api_keys (id, user_id, name, key_hash, roles, expires_at)
SELECT $1, $2, $3, $4, $5::user_role[], $6
WHERE (SELECT count(*) FROM api_keys
       WHERE user_id = $2 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())) < $7
RETURNING id, user_id, name, roles::text[] AS roles, $5 AS owner_roles,
          created_at, expires_at, last_used_at";

/// Inserts `key` by [`CREATE`] within `cap` live keys for its user;
/// `None` when the user has that many.
pub async fn create(
    conn: &mut AsyncPgConnection,
    key: NewKey<'_>,
    cap: u32,
) -> Result<Option<KeyRow>, DbError> {
    diesel::sql_query(CREATE)
        .bind::<SqlUuid, _>(key.id)
        .bind::<SqlUuid, _>(key.user_id)
        .bind::<Text, _>(key.name)
        .bind::<Bytea, _>(key.hash.0.as_slice())
        .bind::<Array<Text>, _>(key.roles.words())
        .bind::<Nullable<Timestamptz>, _>(key.expires_at)
        .bind::<BigInt, _>(i64::from(cap))
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<KeyRow>| rows.pop())
}

/// Validates key `$1`: live, its owner enabled; reads the key's roles and
/// its owner's (the key may do what both grant, so a role taken from the
/// owner leaves its keys at once). One indexed lookup, like a session's;
/// `last_used_at` is written only when `$2` seconds have passed since the
/// last write (at most one write per key per interval, so a busy key costs
/// reads only), and then only while the key is still unrevoked: a key
/// whose touch waited on its revocation is not served.
pub const VALIDATE: &str = "\
WITH found AS (
    SELECT k.id, k.user_id, k.roles::text[] AS roles, u.roles::text[] AS owner_roles,
           k.last_used_at IS NULL OR now() - k.last_used_at >= make_interval(secs => $2) AS due
    FROM api_keys AS k JOIN users AS u ON u.id = k.user_id AND u.disabled_at IS NULL
    WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
), touched AS (
    UPDATE api_keys SET last_used_at = now()
    WHERE id = (SELECT id FROM found WHERE due) AND revoked_at IS NULL
    RETURNING id
)
SELECT found.id, found.user_id, found.roles, found.owner_roles FROM found
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
    #[diesel(sql_type = Array<Text>)]
    pub owner_roles: Roles,
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

/// User `$1`'s live keys, oldest first (at most the cap of them).
pub async fn list(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<Vec<KeyRow>, DbError> {
    diesel::sql_query(
        "SELECT k.id, k.user_id, k.name, k.roles::text[] AS roles, u.roles::text[] AS owner_roles,
                k.created_at, k.expires_at, k.last_used_at
         FROM api_keys AS k JOIN users AS u ON u.id = k.user_id
         WHERE k.user_id = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
         ORDER BY k.created_at, k.id",
    )
    .bind::<SqlUuid, _>(user_id)
    .prepared()
    .get_results(conn)
    .await
}

/// Revokes unrevoked key `$1`, when `$2` is given only if it is that
/// user's; whether it did. Committed before the caller is answered, so no
/// validation that starts after the answer finds the key.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: Option<Uuid>,
) -> Result<bool, DbError> {
    diesel::sql_query(
        "UPDATE api_keys SET revoked_at = now()
         WHERE id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR user_id = $2)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<SqlUuid>, _>(owner)
    .prepared()
    .execute(conn)
    .await
    .map(|n| n == 1)
}

/// Revokes every unrevoked key of user `$1` (its disable); how many.
pub async fn revoke_all_of(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<usize, DbError> {
    diesel::sql_query(
        "UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind::<SqlUuid, _>(user_id)
    .prepared()
    .execute(conn)
    .await
}
