//! The `sessions` table. A session is active while it is not revoked and
//! neither its idle nor its absolute expiry has passed.

use super::secs;
use crate::domain::{ClientInfo, TokenHash};
use chrono::{DateTime, Utc};
use diesel::result::Error as DbError;
use diesel::sql_types::{
    BigInt, Bool, Bytea, Double, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::{Queryable, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use uuid::Uuid;

/// The SQL condition for "active", against table alias-free `sessions`.
pub(crate) const ACTIVE: &str =
    "revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()";

/// Columns every query returns; `$touch` is the touch interval in seconds.
pub(crate) const COLUMNS: &str =
    "id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at";

#[derive(Debug, Clone, PartialEq, QueryableByName, Queryable)]
pub struct SessionRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub last_seen_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub idle_expires_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub absolute_expires_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl SessionRow {
    /// Whichever expiry comes first.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.idle_expires_at.min(self.absolute_expires_at)
    }
}

/// An active session found by its token, and whether its `last_seen_at` is
/// older than the touch interval (so a touch is due).
#[derive(Debug, Clone)]
pub struct FoundSession {
    pub session: SessionRow,
    pub touch_due: bool,
}

/// The validation lookup: the active session holding `$hash`, and the
/// database's clock. Written with the DSL so diesel caches it as a prepared
/// statement (planned once per connection; raw `sql_query` is re-planned on
/// every call, which cost about half of PostgreSQL's time for this statement).
macro_rules! lookup_query {
    ($hash:expr) => {{
        use super::schema::sessions::dsl as s;
        use diesel::dsl::now;
        use diesel::{ExpressionMethods as _, IntoSql as _, QueryDsl as _};
        s::sessions
            .filter(s::token_hash.eq($hash))
            .filter(s::revoked_at.is_null())
            .filter(s::idle_expires_at.gt(now))
            .filter(s::absolute_expires_at.gt(now))
            .select((
                (
                    s::id,
                    s::user_id,
                    s::created_at,
                    s::last_seen_at,
                    s::idle_expires_at,
                    s::absolute_expires_at,
                    s::revoked_at,
                ),
                now.into_sql::<Timestamptz>(),
            ))
    }};
}

/// The statement behind every validation, as sent (`$1`: the token hash).
/// Public so the load tier's `--ceiling` run times exactly this statement
/// with pgbench.
pub fn validate_lookup_sql() -> String {
    let hash: &[u8] = &[];
    let text = diesel::debug_query::<diesel::pg::Pg, _>(&lookup_query!(hash)).to_string();
    text.split(" -- binds:")
        .next()
        .unwrap_or_default()
        .to_owned()
}

pub async fn find_active_by_hash(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
    touch_interval: Duration,
) -> Result<Option<FoundSession>, DbError> {
    use diesel::OptionalExtension as _;
    let found: Option<(SessionRow, DateTime<Utc>)> = lookup_query!(hash.0.as_slice())
        .first(conn)
        .await
        .optional()?;
    Ok(found.map(|(session, db_now)| {
        let idle_for = (db_now - session.last_seen_at).to_std().unwrap_or_default();
        FoundSession {
            touch_due: idle_for >= touch_interval,
            session,
        }
    }))
}

/// Records use and slides the idle expiry (never past the absolute one).
/// Writes only `last_seen_at`/`idle_expires_at` and only while the session is
/// still active, so a touch that read the row before a concurrent revocation
/// cannot bring it back. `None`: the session stopped being active meanwhile.
pub async fn touch(
    conn: &mut AsyncPgConnection,
    read: &SessionRow,
    idle: Duration,
) -> Result<Option<SessionRow>, DbError> {
    or_fault!(TouchCanUnrevoke => crate::faults::sql::touch_writing_back_revoked_at(conn, read, idle).await);
    diesel::sql_query(format!(
        "UPDATE sessions SET last_seen_at = now(),
             idle_expires_at = LEAST(now() + make_interval(secs => $2), absolute_expires_at)
         WHERE id = $1 AND {ACTIVE} RETURNING {COLUMNS}"
    ))
    .bind::<SqlUuid, _>(read.id)
    .bind::<Double, _>(secs(idle))
    .get_results(conn)
    .await
    .map(|mut rows: Vec<SessionRow>| rows.pop())
}

/// Inserts a session. Its times are `clock_timestamp()`, the moment of the
/// insert, not `now()`, the start of the transaction: a login that waited on
/// the user lock must not look older than a session issued while it waited,
/// or eviction would pick the wrong "oldest".
pub async fn insert(
    conn: &mut AsyncPgConnection,
    new: NewSession<'_>,
    idle: Duration,
    absolute: Duration,
) -> Result<SessionRow, DbError> {
    let clock = creation_clock();
    diesel::sql_query(format!(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at, idle_expires_at,
                               absolute_expires_at, user_agent, ip)
         SELECT $1, $2, $3, t, t, t + LEAST(make_interval(secs => $4), make_interval(secs => $5)),
                t + make_interval(secs => $5), $6, $7::inet
         FROM (SELECT {clock} AS t) AS issued
         RETURNING {COLUMNS}"
    ))
    .bind::<SqlUuid, _>(new.id)
    .bind::<SqlUuid, _>(new.user_id)
    .bind::<Bytea, _>(new.hash.0.as_slice())
    .bind::<Double, _>(secs(idle))
    .bind::<Double, _>(secs(absolute))
    .bind::<Nullable<Text>, _>(new.client.user_agent())
    .bind::<Nullable<Text>, _>(new.client.ip().map(|ip| ip.to_string()))
    .get_result(conn)
    .await
}

/// What a login's session is made of.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub hash: &'a TokenHash,
    pub client: &'a ClientInfo,
}

/// Deletes the user's unrevoked sessions that have expired (an expired
/// session can never validate again); returns how many.
pub async fn delete_expired_of(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
) -> Result<usize, DbError> {
    diesel::sql_query(
        "DELETE FROM sessions WHERE user_id = $1 AND revoked_at IS NULL
           AND (idle_expires_at <= now() OR absolute_expires_at <= now())",
    )
    .bind::<SqlUuid, _>(user_id)
    .execute(conn)
    .await
}

pub async fn count_active(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<i64, DbError> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(format!(
        "SELECT count(*) AS n FROM sessions WHERE user_id = $1 AND {ACTIVE}"
    ))
    .bind::<SqlUuid, _>(user_id)
    .get_result::<Count>(conn)
    .await
    .map(|c| c.n)
}

/// The creation time of a session: the moment of the insert, not of the
/// transaction's start (a login transaction may wait on the user's lock).
fn creation_clock() -> &'static str {
    or_fault!(SessionCreatedAtTxStart => crate::faults::sql::TRANSACTION_START);
    "clock_timestamp()"
}

/// Revokes the user's `n` oldest active sessions; returns how many it revoked.
pub async fn revoke_oldest(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    n: i64,
) -> Result<usize, DbError> {
    if n <= 0 {
        return Ok(0);
    }
    diesel::sql_query(format!(
        "UPDATE sessions SET revoked_at = now()
         WHERE id IN (SELECT id FROM sessions WHERE user_id = $1 AND {ACTIVE} ORDER BY created_at, id LIMIT $2)"
    ))
    .bind::<SqlUuid, _>(user_id)
    .bind::<BigInt, _>(n)
    .execute(conn)
    .await
}

/// Swaps the token of the active session holding `old` for `new` in one
/// statement, which also remembers `old` as rotated away (see [`reused`]).
/// Concurrent rotations of one token queue on the row lock and re-check
/// `token_hash = old` after the winner commits, so exactly one wins.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    old: &TokenHash,
    new: &TokenHash,
    idle: Duration,
) -> Result<Option<SessionRow>, DbError> {
    or_fault!(RefreshWithoutRevokedGuard => crate::faults::sql::rotate_without_revoked_guard(conn, old, new, idle).await);
    let remember = remember_rotated();
    diesel::sql_query(format!(
        "WITH rotated AS (
             UPDATE sessions SET token_hash = $2, last_seen_at = now(),
                 idle_expires_at = LEAST(now() + make_interval(secs => $3), absolute_expires_at)
             WHERE token_hash = $1 AND {ACTIVE} RETURNING {COLUMNS}
         ), remembered AS (
             {remember}
         )
         SELECT {COLUMNS} FROM rotated"
    ))
    .bind::<Bytea, _>(old.0.as_slice())
    .bind::<Bytea, _>(new.0.as_slice())
    .bind::<Double, _>(secs(idle))
    .get_results(conn)
    .await
    .map(|mut rows: Vec<SessionRow>| rows.pop())
}

/// Revokes one active session of `user_id`; false when there is none.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    session_id: Uuid,
    user_id: Uuid,
) -> Result<bool, DbError> {
    diesel::sql_query(format!(
        "UPDATE sessions SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND {ACTIVE}"
    ))
    .bind::<SqlUuid, _>(session_id)
    .bind::<SqlUuid, _>(user_id)
    .execute(conn)
    .await
    .map(|n| n == 1)
}

/// Revokes every active session of the user; the count is what this
/// statement changed, so concurrent calls never count a session twice.
pub async fn revoke_all(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<usize, DbError> {
    diesel::sql_query(format!(
        "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND {ACTIVE}"
    ))
    .bind::<SqlUuid, _>(user_id)
    .execute(conn)
    .await
}

/// The rotation's memory of the old token, inside [`rotate`]'s statement.
fn remember_rotated() -> &'static str {
    or_fault!(ReuseNotRemembered => "SELECT 1");
    "INSERT INTO rotated_tokens (token_hash, session_id) SELECT $1, id FROM rotated"
}

/// What a token that was rotated away says when presented again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Reuse {
    /// Rotated away longer ago than the grace window.
    #[diesel(sql_type = Bool)]
    pub past_grace: bool,
    /// This call revoked the session (it was still unrevoked).
    #[diesel(sql_type = Bool)]
    pub revoked: bool,
}

/// Looks `hash` up among rotated-away tokens, by the database's clock (the
/// same for every instance); past the grace window, revokes its session in
/// the same statement, so the token that replaced it stops working too.
/// `None`: not a token that was ever rotated away.
pub async fn reused(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
    grace: Duration,
) -> Result<Option<Reuse>, DbError> {
    let grace_rule = reuse_grace_rule();
    diesel::sql_query(format!(
        "WITH reuse AS (
             SELECT session_id, {grace_rule} AS past_grace
             FROM rotated_tokens WHERE token_hash = $1
         ), revoked AS (
             UPDATE sessions SET revoked_at = now()
             WHERE id = (SELECT session_id FROM reuse WHERE past_grace) AND revoked_at IS NULL
             RETURNING id
         )
         SELECT past_grace, EXISTS (SELECT 1 FROM revoked) AS revoked FROM reuse"
    ))
    .bind::<Bytea, _>(hash.0.as_slice())
    .bind::<Double, _>(secs(grace))
    .get_results(conn)
    .await
    .map(|mut rows: Vec<Reuse>| rows.pop())
}

/// When a rotated-away token counts as stolen.
fn reuse_grace_rule() -> &'static str {
    or_fault!(ReuseWithoutGrace => "true");
    "now() - rotated_at > make_interval(secs => $2)"
}

/// One row of the session list: the session and where its login came from.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ListedSession {
    #[diesel(embed)]
    pub session: SessionRow,
    #[diesel(sql_type = Nullable<Text>)]
    pub user_agent: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub ip: Option<String>,
}

/// The user's active sessions, oldest first.
pub async fn list_active(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
) -> Result<Vec<ListedSession>, DbError> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS}, user_agent, host(ip) AS ip FROM sessions
         WHERE user_id = $1 AND {ACTIVE} ORDER BY created_at, id"
    ))
    .bind::<SqlUuid, _>(user_id)
    .get_results(conn)
    .await
}

#[cfg(test)]
mod tests {
    /// The statement the ceiling run times with pgbench is the lookup the
    /// validations send: by token hash, active only, with the clock.
    #[test]
    fn the_validate_lookup_sql_is_the_statement_sent() {
        let sql = super::validate_lookup_sql();
        for part in [
            "FROM \"sessions\"",
            "\"sessions\".\"token_hash\" = $1",
            "\"sessions\".\"revoked_at\" IS NULL",
            "\"sessions\".\"idle_expires_at\" > CURRENT_TIMESTAMP",
        ] {
            assert!(sql.contains(part), "{part} missing from {sql}");
        }
        assert!(!sql.contains("binds"), "{sql}");
    }
}
