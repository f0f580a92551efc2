//! The `sessions` table. A session is active while it is not revoked and
//! neither its idle nor its absolute expiry has passed.

use super::{Prepared as _, secs};
use crate::domain::{ClientInfo, Roles, TokenHash};
use chrono::{DateTime, Utc};
use diesel::result::Error as DbError;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Double, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::{Queryable, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use uuid::Uuid;

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

/// The statement behind every validation, as sent: `$1` the token hash,
/// `$2` the touch interval and `$3` the idle timeout, in seconds. One
/// statement finds the active session holding the token and, when its
/// `last_seen_at` is older than the touch interval, slides its idle expiry
/// (at most one write per session per interval; never past the absolute
/// expiry). The touch writes only while the session is still active, as
/// PostgreSQL re-reads a row it waited for: a touch that queued behind a
/// revocation answers nothing rather than reviving the session. The
/// user's roles are read by the same statement, so a role taken away is
/// gone for every request that starts after the change committed, on every
/// instance (nothing caches them). Public so
/// the load tier's `--ceiling` run times exactly this statement.
pub const VALIDATE: &str = "\
WITH found AS (
    SELECT s.id, s.user_id, s.created_at, s.last_seen_at, s.idle_expires_at, s.absolute_expires_at,
           s.revoked_at, now() - s.last_seen_at >= make_interval(secs => $2) AS due,
           u.roles::text[] AS roles
    FROM sessions AS s JOIN users AS u ON u.id = s.user_id AND u.disabled_at IS NULL
    WHERE s.token_hash = $1
      AND s.revoked_at IS NULL AND s.idle_expires_at > now() AND s.absolute_expires_at > now()
), touched AS (
    UPDATE sessions
    SET last_seen_at = now(),
        idle_expires_at = LEAST(now() + make_interval(secs => $3), absolute_expires_at)
    WHERE id = (SELECT id FROM found WHERE due)
      AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()
    RETURNING id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at
)
SELECT touched.*, found.roles FROM touched, found
UNION ALL
SELECT id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at, roles
FROM found WHERE NOT due";

/// [`VALIDATE`] as this build sends it: under a chosen fault, the statement
/// that breaks it (the isolation specs run what is sent).
pub fn validate_sql() -> &'static str {
    statement!(VALIDATE, TouchCanUnrevoke => VALIDATE_REVIVING)
}

/// A validated session and its user's roles as they are now.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Validated {
    #[diesel(embed)]
    pub session: SessionRow,
    #[diesel(sql_type = Array<Text>)]
    pub roles: Roles,
}

/// The active session holding `hash`, touched if due (see [`VALIDATE`]).
pub async fn validate(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
    touch_interval: Duration,
    idle: Duration,
) -> Result<Option<Validated>, DbError> {
    diesel::sql_query(validate_sql())
        .bind::<Bytea, _>(hash.0.as_slice())
        .bind::<Double, _>(secs(touch_interval))
        .bind::<Double, _>(secs(idle))
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<Validated>| rows.pop())
}

/// What a login's session is made of.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub hash: &'a TokenHash,
    pub client: &'a ClientInfo,
    /// The stored password hash the login's password was verified against:
    /// the session opens only while it is still the user's.
    pub verified: &'a str,
}

/// Opens a session within the user's limit, in one statement: records the
/// login attempt that admitted it as `succeeded` (clearing the email's
/// count; only when the session opens), locks the user's unrevoked sessions, drops the expired ones
/// (they never validate again, so the count and the eviction read only
/// live rows), counts the active ones, revokes the oldest beyond
/// `limit - 1` (`$9`), and inserts the new one unless the user is disabled
/// or its password is no longer the one the login verified (`$10`, its
/// stored hash): a disable or a password change that committed while the
/// login waited for the user's lock wins (it revoked what it saw, and
/// nothing opens after it with the old password). Must run after the user's
/// row lock ([`super::users::lock_sql`]) in the same transaction, as a
/// statement of its own: only then does its snapshot hold every session
/// that logins before it committed.
///
/// The user's lock keeps other logins out, not revocations: a log out that
/// commits after the login's snapshot would still be counted, and the
/// login would evict one session too many (the log out's own caller, say,
/// which no order of the two calls explains). Locking the user's unrevoked
/// rows (`FOR UPDATE`) waits for such a revocation and re-reads its rows,
/// so the count is of what is active when the login acts. Every row the
/// statement then deletes (expired) or revokes (evicted) is among those it
/// holds, taken in id order as revocations take theirs, so the two never
/// deadlock.
///
/// A session is dated by the moment of its insert (`clock_timestamp()`),
/// not by its transaction's start (`now()`): a login that waited on the
/// user lock must not look older than a session issued while it waited,
/// or eviction would pick the wrong "oldest".
pub const OPEN: &str = "\
WITH allowed AS (
    SELECT EXISTS (SELECT 1 FROM users WHERE id = $2 AND disabled_at IS NULL AND password_hash = $10) AS ok
), reported AS (
    UPDATE login_attempts SET outcome = 'succeeded', settled_at = clock_timestamp()
    WHERE id = $8 AND (SELECT ok FROM allowed)
), unrevoked AS (
    SELECT id, created_at, idle_expires_at > now() AND absolute_expires_at > now() AS live
    FROM sessions
    WHERE user_id = $2 AND revoked_at IS NULL
    ORDER BY id FOR UPDATE
), expired AS (
    DELETE FROM sessions WHERE id IN (SELECT id FROM unrevoked WHERE NOT live)
), active AS (
    SELECT id, created_at FROM unrevoked WHERE live
), evicted AS (
    UPDATE sessions SET revoked_at = now()
    WHERE revoked_at IS NULL AND (SELECT ok FROM allowed)
      AND id IN (SELECT id FROM active ORDER BY created_at, id
                 LIMIT GREATEST((SELECT count(*) FROM active) - $9 + 1, 0))
)
INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at, idle_expires_at,
                      absolute_expires_at, user_agent, ip)
SELECT $1, $2, $3, t, t, t + LEAST(make_interval(secs => $4), make_interval(secs => $5)),
       t + make_interval(secs => $5), $6, $7::inet
FROM (SELECT clock_timestamp() AS t) AS issued
WHERE (SELECT ok FROM allowed)
RETURNING id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at";

/// [`OPEN`] as this build sends it.
pub fn open_sql() -> &'static str {
    statement!(OPEN,
        LoginCountsUnlockedRows => OPEN_COUNTING_UNLOCKED,
        LoginLocksSessionsOutOfOrder => OPEN_LOCKING_DESCENDING,
        SessionCreatedAtTxStart => OPEN_DATED_AT_TX_START,
        LoginIgnoresDisabled => OPEN_IGNORING_DISABLED,
        LoginOpensAfterPasswordChange => OPEN_AFTER_PASSWORD_CHANGE)
}

/// Opens a session by [`OPEN`]. `None`: no such user, or a disabled one.
pub async fn open(
    conn: &mut AsyncPgConnection,
    new: NewSession<'_>,
    limit: i64,
    (idle, absolute): (Duration, Duration),
    succeeded_attempt: Option<i64>,
) -> Result<Option<SessionRow>, DbError> {
    diesel::sql_query(open_sql())
        .bind::<SqlUuid, _>(new.id)
        .bind::<SqlUuid, _>(new.user_id)
        .bind::<Bytea, _>(new.hash.0.as_slice())
        .bind::<Double, _>(secs(idle))
        .bind::<Double, _>(secs(absolute))
        .bind::<Nullable<Text>, _>(new.client.user_agent())
        .bind::<Nullable<Text>, _>(new.client.ip().map(|ip| ip.to_string()))
        .bind::<Nullable<BigInt>, _>(succeeded_attempt)
        .bind::<BigInt, _>(limit)
        .bind::<Text, _>(new.verified)
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<SessionRow>| rows.pop())
}

/// Swaps the token of the active session holding `$1` for `$2` (sliding
/// its idle expiry by `$3` seconds) in one statement, which also remembers
/// `$1` as rotated away (see [`reused`]). Concurrent rotations of one token
/// queue on the row lock and re-check `token_hash = $1` after the winner
/// commits, so exactly one wins.
pub const ROTATE: &str = "\
WITH rotated AS (
    UPDATE sessions
    SET token_hash = $2, last_seen_at = now(),
        idle_expires_at = LEAST(now() + make_interval(secs => $3), absolute_expires_at)
    WHERE token_hash = $1
      AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()
    RETURNING id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at
), remembered AS (
    INSERT INTO rotated_tokens (token_hash, session_id) SELECT $1, id FROM rotated
)
SELECT * FROM rotated";

/// [`ROTATE`] as this build sends it.
pub fn rotate_sql() -> &'static str {
    statement!(ROTATE,
        RefreshWithoutRevokedGuard => ROTATE_UNGUARDED,
        ReuseNotRemembered => ROTATE_FORGETTING)
}

/// Rotates `old` to `new` by [`ROTATE`]; the session as it now is.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    old: &TokenHash,
    new: &TokenHash,
    idle: Duration,
) -> Result<Option<SessionRow>, DbError> {
    diesel::sql_query(rotate_sql())
        .bind::<Bytea, _>(old.0.as_slice())
        .bind::<Bytea, _>(new.0.as_slice())
        .bind::<Double, _>(secs(idle))
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<SessionRow>| rows.pop())
}

/// The session a revocation is asked through, with the token it was asked
/// with. `None` for the operator's command line, which asks through none.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub session_id: Uuid,
    pub token: &'a TokenHash,
}

/// What a revocation did: whether its caller still held the session with
/// that token when it ran (a refresh or a revocation in between makes the
/// call one that came after it: a 401), how many sessions it revoked, and
/// whether a writer raced it (see [`revoke`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Revocation {
    #[diesel(sql_type = Bool)]
    pub caller: bool,
    #[diesel(sql_type = BigInt)]
    pub revoked: i64,
    #[diesel(sql_type = Bool)]
    pub raced: bool,
}

/// The revocation, as sent: `$1` the caller's session and `$2` its token
/// (both NULL for the operator), `$3` the user, `$4` the target session or
/// NULL for all, `$5` whether it runs under the user's lock (see [`revoke`]).
pub const REVOKE: &str = "\
WITH seen AS (
    SELECT id FROM sessions
    WHERE user_id = $3
      AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()
      AND ($4::uuid IS NULL OR id IN ($1, $4))
), locked AS (
    SELECT id, token_hash FROM sessions
    WHERE id IN (SELECT id FROM seen)
      AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()
    ORDER BY id FOR UPDATE
), raced AS (
    SELECT (SELECT count(*) FROM seen) > (SELECT count(*) FROM locked) AS raced
), allowed AS (
    SELECT $1::uuid IS NULL
           OR EXISTS (SELECT 1 FROM locked WHERE id = $1 AND token_hash = $2) AS caller
), revoked AS (
    UPDATE sessions SET revoked_at = now()
    WHERE id IN (SELECT id FROM locked) AND ($4::uuid IS NULL OR id = $4)
      AND (SELECT caller FROM allowed) AND ($5 OR NOT (SELECT raced FROM raced))
    RETURNING 1
)
SELECT (SELECT caller FROM allowed) AS caller,
       (SELECT count(*) FROM revoked) AS revoked,
       (SELECT raced FROM raced) AS raced";

/// Revokes the user's active session `target`, or every one of them
/// (`None`), as long as the caller's session still has the caller's token.
/// One statement: it locks the caller's row and the rows it revokes (in id
/// order, so revocations never deadlock each other) and reads the caller's
/// token as it is now: a refresh or a revocation that committed in between
/// makes this call one that came after it, refused (`caller: false`) as it
/// would have been. The count is what this statement changed, so
/// concurrent calls never count a session twice.
///
/// A row the statement saw active but found ended once it held the lock
/// was ended by a writer that committed in between: if that was a login's
/// eviction, the login's new session is missing from this statement's
/// snapshot, and no order of the two calls explains revoking the rest
/// without it. Such a statement changes nothing and says `raced`; the
/// caller runs it again under the user's lock, which logins take
/// (`under_user_lock`), where it acts whatever ended meanwhile.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    caller: Option<&Caller<'_>>,
    user_id: Uuid,
    target: Option<Uuid>,
    under_user_lock: bool,
) -> Result<Revocation, DbError> {
    diesel::sql_query(REVOKE)
        .bind::<Nullable<SqlUuid>, _>(caller.map(|c| c.session_id))
        .bind::<Nullable<Bytea>, _>(caller.map(|c| c.token.0.to_vec()))
        .bind::<SqlUuid, _>(user_id)
        .bind::<Nullable<SqlUuid>, _>(target)
        .bind::<Bool, _>(under_user_lock)
        .prepared()
        .get_result(conn)
        .await
}

/// A password change's revocation, as sent: every unrevoked session of
/// user `$1` but the caller's, `$2`, as long as the caller's session is
/// active and still holds its token `$3` (a revocation or a refresh that
/// committed since the caller's validation makes the change one that came
/// after it: `caller` false, nothing revoked). All the user's unrevoked rows
/// are locked in id order, as every revocation and login takes them, so
/// none of them deadlock; the expired too, so a touch racing this cannot
/// keep one alive. By the user, not by the tokens seen: a refresh of one of
/// them that committed while this waited for its row gave the row a new
/// token, and the row, re-read, is revoked all the same. Runs after the
/// user's lock (the password's update), so no login opens one meanwhile.
pub const REVOKE_OTHERS: &str = "\
WITH locked AS (
    SELECT id, token_hash, idle_expires_at > now() AND absolute_expires_at > now() AS live
    FROM sessions
    WHERE user_id = $1 AND revoked_at IS NULL
    ORDER BY id FOR UPDATE
), allowed AS (
    SELECT EXISTS (SELECT 1 FROM locked WHERE id = $2 AND token_hash = $3 AND live) AS caller
), revoked AS (
    UPDATE sessions SET revoked_at = now()
    WHERE id IN (SELECT id FROM locked WHERE id <> $2) AND (SELECT caller FROM allowed)
    RETURNING 1
)
SELECT (SELECT caller FROM allowed) AS caller, (SELECT count(*) FROM revoked) AS revoked";

/// What a password change's revocation did ([`REVOKE_OTHERS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct OthersRevoked {
    /// The caller's session still held its token: the others are revoked.
    #[diesel(sql_type = Bool)]
    pub caller: bool,
    #[diesel(sql_type = BigInt)]
    pub revoked: i64,
}

/// [`REVOKE_OTHERS`] as this build sends it.
pub fn revoke_others_sql() -> &'static str {
    statement!(REVOKE_OTHERS,
        PasswordChangeRevokesTokensSeen => REVOKE_OTHERS_BY_TOKENS_SEEN,
        PasswordChangeIgnoresRevokedCaller => REVOKE_OTHERS_WHOEVER_CALLS)
}

/// Revokes the user's sessions but the caller's by [`REVOKE_OTHERS`].
pub async fn revoke_others(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    caller: &Caller<'_>,
) -> Result<OthersRevoked, DbError> {
    diesel::sql_query(revoke_others_sql())
        .bind::<SqlUuid, _>(user_id)
        .bind::<SqlUuid, _>(caller.session_id)
        .bind::<Bytea, _>(caller.token.0.as_slice())
        .prepared()
        .get_result(conn)
        .await
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

/// Looks `$1` up among rotated-away tokens, by the database's clock (the
/// same for every instance); rotated away more than the grace (`$2`
/// seconds) ago, revokes its session in the same statement, so the token
/// that replaced it stops working too.
const REUSED: &str = "\
WITH reuse AS (
    SELECT session_id, now() - rotated_at > make_interval(secs => $2) AS past_grace
    FROM rotated_tokens WHERE token_hash = $1
), revoked AS (
    UPDATE sessions SET revoked_at = now()
    WHERE id = (SELECT session_id FROM reuse WHERE past_grace) AND revoked_at IS NULL
    RETURNING id
)
SELECT past_grace, EXISTS (SELECT 1 FROM revoked) AS revoked FROM reuse";

/// What `hash` says as a rotated-away token, by [`REUSED`]. `None`: not a
/// token that was ever rotated away.
pub async fn reused(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
    grace: Duration,
) -> Result<Option<Reuse>, DbError> {
    diesel::sql_query(statement!(REUSED, ReuseWithoutGrace => REUSED_AT_ONCE))
        .bind::<Bytea, _>(hash.0.as_slice())
        .bind::<Double, _>(secs(grace))
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<Reuse>| rows.pop())
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
    diesel::sql_query(
        "SELECT id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at,
                revoked_at, user_agent, host(ip) AS ip
         FROM sessions
         WHERE user_id = $1
           AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()
         ORDER BY created_at, id",
    )
    .bind::<SqlUuid, _>(user_id)
    .prepared()
    .get_results(conn)
    .await
}
