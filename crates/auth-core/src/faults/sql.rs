//! The broken statements, whole (see `statement!`), and the broken
//! functions that run more than one.

use crate::domain::TokenHash;
use crate::store::sessions::SessionRow;
use crate::store::tasks::{ClaimRequest, TaskRow};
use diesel::sql_types::{Array, BigInt, Bytea, Double, Text, Uuid as SqlUuid};
use diesel::{QueryResult, QueryableByName};

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use uuid::Uuid;

/// `touch_can_unrevoke`: the touch as a write-back of the row it read: it
/// sets `revoked_at` to the value the statement's snapshot saw and does not
/// re-check that the session is still active, reviving one revoked meanwhile.
pub const VALIDATE_REVIVING: &str = "\
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
        idle_expires_at = LEAST(now() + make_interval(secs => $3), absolute_expires_at),
        revoked_at = (SELECT revoked_at FROM found)
    WHERE id = (SELECT id FROM found WHERE due)
    RETURNING id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at
)
SELECT touched.*, found.roles FROM touched, found
UNION ALL
SELECT id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at, roles
FROM found WHERE NOT due";

/// `login_counts_unlocked_rows`: the login counts its user's sessions from
/// its snapshot, without locking them (no `FOR UPDATE` in `unrevoked`).
pub const OPEN_COUNTING_UNLOCKED: &str = "\
WITH allowed AS (
    SELECT EXISTS (SELECT 1 FROM users WHERE id = $2 AND disabled_at IS NULL AND password_hash = $10) AS ok
), reported AS (
    UPDATE login_attempts SET outcome = 'succeeded', settled_at = clock_timestamp()
    WHERE id = $8 AND (SELECT ok FROM allowed)
), unrevoked AS (
    SELECT id, created_at, idle_expires_at > now() AND absolute_expires_at > now() AS live
    FROM sessions
    WHERE user_id = $2 AND revoked_at IS NULL
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

/// `login_locks_sessions_out_of_order`: the login locks its user's
/// sessions in descending id order (`ORDER BY id DESC` in `unrevoked`),
/// where a revocation locks them ascending.
pub const OPEN_LOCKING_DESCENDING: &str = "\
WITH allowed AS (
    SELECT EXISTS (SELECT 1 FROM users WHERE id = $2 AND disabled_at IS NULL AND password_hash = $10) AS ok
), reported AS (
    UPDATE login_attempts SET outcome = 'succeeded', settled_at = clock_timestamp()
    WHERE id = $8 AND (SELECT ok FROM allowed)
), unrevoked AS (
    SELECT id, created_at, idle_expires_at > now() AND absolute_expires_at > now() AS live
    FROM sessions
    WHERE user_id = $2 AND revoked_at IS NULL
    ORDER BY id DESC FOR UPDATE
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

/// `login_ignores_disabled`: the session is opened for any user that
/// exists, disabled or not.
pub const OPEN_IGNORING_DISABLED: &str = "\
WITH allowed AS (
    SELECT EXISTS (SELECT 1 FROM users WHERE id = $2 AND password_hash = $10) AS ok
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

/// `login_opens_after_password_change`: the session is opened whatever
/// became of the password the login verified meanwhile.
pub const OPEN_AFTER_PASSWORD_CHANGE: &str = "\
WITH allowed AS (
    SELECT EXISTS (SELECT 1 FROM users WHERE id = $2 AND disabled_at IS NULL AND $10::text IS NOT NULL) AS ok
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

/// `password_change_revokes_tokens_seen`: the other sessions are revoked
/// by the tokens the statement's snapshot read: a refresh that committed
/// meanwhile gave its row a token the list does not hold, and the row is
/// skipped when re-read.
pub const REVOKE_OTHERS_BY_TOKENS_SEEN: &str = "\
WITH allowed AS (
    SELECT EXISTS (SELECT 1 FROM sessions
                   WHERE id = $2 AND token_hash = $3 AND revoked_at IS NULL
                     AND idle_expires_at > now() AND absolute_expires_at > now()) AS caller
), revoked AS (
    UPDATE sessions SET revoked_at = now()
    WHERE token_hash IN (SELECT token_hash FROM sessions
                         WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL)
      AND revoked_at IS NULL AND (SELECT caller FROM allowed)
    RETURNING 1
)
SELECT (SELECT caller FROM allowed) AS caller, (SELECT count(*) FROM revoked) AS revoked";

/// `reset_token_used_twice`: the use re-checks only the token, not that
/// it is unused: every use queued behind the winner uses it again.
/// `key_creation_ignores_revoked_caller`: [`crate::store::api_keys::CREATE`]
/// without the check that the caller's session (`$8`, still bound) is active.
pub const CREATE_KEY_WITHOUT_CALLER: &str = "\
INSERT INTO api_keys (id, user_id, name, key_hash, roles, expires_at)
SELECT $1, $2, $3, $4, $5::user_role[], $6
WHERE (SELECT count(*) FROM api_keys WHERE user_id = $2) < $7
  AND $8::uuid IS NOT NULL
RETURNING id, user_id, name, roles::text[] AS roles, created_at, expires_at, last_used_at";

pub const USE_RESET_UNGUARDED: &str = "\
UPDATE password_resets SET used_at = now()
WHERE token_hash = $1 AND expires_at > now()
RETURNING user_id";

/// `password_change_ignores_newer_password`: the change sets its hash
/// over any, whatever committed since its check (`$3` read and ignored).
pub const SET_PASSWORD_OVER_ANY: &str = "\
UPDATE users SET password_hash = $2
WHERE id = $1 AND disabled_at IS NULL AND ($3::text IS NULL OR true)";

/// `password_change_ignores_revoked_caller`: the others are revoked
/// whatever became of the caller's session (`$3` read and ignored).
pub const REVOKE_OTHERS_WHOEVER_CALLS: &str = "\
WITH locked AS (
    SELECT id FROM sessions
    WHERE user_id = $1 AND revoked_at IS NULL AND $3::bytea IS NOT NULL
    ORDER BY id FOR UPDATE
), revoked AS (
    UPDATE sessions SET revoked_at = now()
    WHERE id IN (SELECT id FROM locked WHERE id <> $2)
    RETURNING 1
)
SELECT true AS caller, (SELECT count(*) FROM revoked) AS revoked";

/// `session_created_at_tx_start`: sessions dated by their transaction's
/// start (`now()` in `issued`), not by their insert.
pub const OPEN_DATED_AT_TX_START: &str = "\
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
FROM (SELECT now() AS t) AS issued
WHERE (SELECT ok FROM allowed)
RETURNING id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at";

/// `refresh_without_revoked_guard`: the rotation checks expiry but not
/// revocation (and remembers nothing).
pub const ROTATE_UNGUARDED: &str = "\
UPDATE sessions
SET token_hash = $2, last_seen_at = now(),
    idle_expires_at = LEAST(now() + make_interval(secs => $3), absolute_expires_at)
WHERE token_hash = $1 AND absolute_expires_at > now()
RETURNING id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at";

/// `reuse_not_remembered`: the rotation does not remember the token it
/// replaced.
pub const ROTATE_FORGETTING: &str = "\
UPDATE sessions
SET token_hash = $2, last_seen_at = now(),
    idle_expires_at = LEAST(now() + make_interval(secs => $3), absolute_expires_at)
WHERE token_hash = $1
  AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()
RETURNING id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at";

/// `reuse_without_grace`: any rotated-away token presented again counts as
/// stolen, however recently it was rotated.
pub const REUSED_AT_ONCE: &str = "\
WITH reuse AS (
    SELECT session_id, true AS past_grace
    FROM rotated_tokens WHERE token_hash = $1
), revoked AS (
    UPDATE sessions SET revoked_at = now()
    WHERE id = (SELECT session_id FROM reuse WHERE past_grace) AND revoked_at IS NULL
    RETURNING id
)
SELECT past_grace, EXISTS (SELECT 1 FROM revoked) AS revoked FROM reuse";

/// `session_limit_without_lock`: the "lock" reads the user row, locking
/// nothing.
pub const LOCK_NOTHING: &str = "SELECT 1 FROM users WHERE id = $1";

/// `user_lock_for_update`: the user lock also blocks the `KEY SHARE` locks
/// of foreign-key checks (claims for this user, session inserts).
pub const LOCK_FOR_UPDATE: &str = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE";

/// `claim_ignores_max_attempts`: claimable whatever the attempts.
pub const CLAIM_ANY_ATTEMPT: &str = "\
WITH picked AS (
    SELECT id FROM tasks
    WHERE schedulable AND status IN ('unassigned', 'assigned')
      AND NOT delayed
      AND (lease_expires_at IS NULL OR lease_expires_at <= now())
      AND (not_before IS NULL OR not_before <= now())
    ORDER BY priority DESC, seq
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t
SET status = 'assigned', assigned_to = $2, assigned_by = $3, assigned_at = now(),
    lease_expires_at = now() + make_interval(secs => $4), attempt = t.attempt + 1
FROM picked WHERE t.id = picked.id
RETURNING t.id, t.seq, t.title, t.schedulable, t.status, t.assigned_to, t.assigned_by,
          t.assigned_at, t.lease_expires_at, t.completed_at, t.attempt, t.created_at,
          t.priority, t.not_before, t.max_attempts, t.key, t.last_error, t.created_by";

/// `claim_without_skip_locked`: claimers wait on each other's rows.
pub const CLAIM_WAITING: &str = "\
WITH picked AS (
    SELECT id FROM tasks
    WHERE schedulable AND status IN ('unassigned', 'assigned') AND attempt - released < max_attempts
      AND NOT delayed
      AND (lease_expires_at IS NULL OR lease_expires_at <= now())
      AND (not_before IS NULL OR not_before <= now())
    ORDER BY priority DESC, seq
    LIMIT $1
    FOR UPDATE
)
UPDATE tasks AS t
SET status = 'assigned', assigned_to = $2, assigned_by = $3, assigned_at = now(),
    lease_expires_at = now() + make_interval(secs => $4), attempt = t.attempt + 1
FROM picked WHERE t.id = picked.id
RETURNING t.id, t.seq, t.title, t.schedulable, t.status, t.assigned_to, t.assigned_by,
          t.assigned_at, t.lease_expires_at, t.completed_at, t.attempt, t.created_at,
          t.priority, t.not_before, t.max_attempts, t.key, t.last_error, t.created_by";

/// `complete_without_fence`: any caller completes any assigned task, under
/// any attempt, with or without a live lease.
pub const COMPLETE_UNFENCED: &str = "\
UPDATE tasks
SET status = 'completed', completed_at = now(), finished_at = now(), lease_expires_at = NULL
WHERE id = $1 AND status = 'assigned' AND ($2::uuid IS NOT NULL) AND ($3::int IS NULL OR TRUE)
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// `complete_without_fence`: any caller releases any assigned task.
pub const RELEASE_UNFENCED: &str = "\
UPDATE tasks
SET status = 'unassigned', assigned_to = NULL, assigned_by = NULL, assigned_at = NULL,
    lease_expires_at = NULL, released = released + 1
WHERE id = $1 AND status = 'assigned' AND ($2::uuid IS NOT NULL) AND ($3::int IS NULL OR TRUE)
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// `complete_without_fence` and `heartbeat_without_fence`: any caller
/// extends any assigned task's lease.
pub const HEARTBEAT_UNFENCED: &str = "\
UPDATE tasks
SET lease_expires_at = now() + make_interval(secs => $4)
WHERE id = $1 AND status = 'assigned' AND ($2::uuid IS NOT NULL) AND ($3::int IS NULL OR TRUE)
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// `complete_without_fence`: any caller fails any assigned task.
pub const FAIL_UNFENCED: &str = "\
UPDATE tasks
SET status = CASE WHEN $5 AND attempt - released < max_attempts THEN 'unassigned'::task_status ELSE 'failed' END,
    not_before = CASE WHEN $5 AND attempt - released < max_attempts
        THEN now() + make_interval(secs => least(power(2, attempt - released - 1), 3600) * (1 - 0.2 * random()))
        ELSE not_before END,
    delayed = $5 AND attempt - released < max_attempts,
    finished_at = CASE WHEN $5 AND attempt - released < max_attempts THEN NULL ELSE now() END,
    assigned_to = CASE WHEN $5 AND attempt - released < max_attempts THEN NULL ELSE assigned_to END,
    assigned_by = CASE WHEN $5 AND attempt - released < max_attempts THEN NULL ELSE assigned_by END,
    assigned_at = CASE WHEN $5 AND attempt - released < max_attempts THEN NULL ELSE assigned_at END,
    lease_expires_at = NULL,
    last_error = $4
WHERE id = $1 AND status = 'assigned' AND ($2::uuid IS NOT NULL) AND ($3::int IS NULL OR TRUE)
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// `cancel_any_status`: cancels finished tasks too.
pub const CANCEL_ANY_STATUS: &str = "\
UPDATE tasks
SET status = 'cancelled', finished_at = now(), delayed = false, assigned_to = NULL,
    assigned_by = NULL, assigned_at = NULL, lease_expires_at = NULL
WHERE id = $1
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// `cleanup_waits_on_locks`: the cleanup's batch that `delete` is, waiting
/// for rows others hold (`FOR UPDATE` without `SKIP LOCKED`).
pub fn purge_waiting(delete: &str) -> &'static str {
    let table = ["sessions", "login_attempts", "tasks"]
        .into_iter()
        .find(|table| delete.contains(&format!("DELETE FROM {table} ")))
        .unwrap_or("tasks");
    match table {
        "sessions" => {
            "\
WITH gone AS (
    DELETE FROM sessions WHERE id IN (
        SELECT id FROM sessions
        WHERE LEAST(revoked_at, idle_expires_at) < now() - make_interval(secs => $1)
        ORDER BY LEAST(revoked_at, idle_expires_at) LIMIT $2
        FOR UPDATE)
    RETURNING 1)
SELECT count(*) AS n FROM gone"
        }
        "login_attempts" => {
            "\
WITH gone AS (
    DELETE FROM login_attempts WHERE id IN (
        SELECT id FROM login_attempts
        WHERE attempted_at < now() - make_interval(secs => $1)
        ORDER BY attempted_at LIMIT $2
        FOR UPDATE)
    RETURNING 1)
SELECT count(*) AS n FROM gone"
        }
        _ => {
            "\
WITH gone AS (
    DELETE FROM tasks WHERE id IN (
        SELECT id FROM tasks
        WHERE status IN ('completed', 'failed', 'cancelled')
          AND finished_at < now() - make_interval(secs => $1)
        ORDER BY finished_at LIMIT $2
        FOR UPDATE)
    RETURNING 1)
SELECT count(*) AS n FROM gone"
        }
    }
}

/// The user's active sessions, counted apart from what acts on them.
pub async fn count_active(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS n FROM sessions
         WHERE user_id = $1
           AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()",
    )
    .bind::<SqlUuid, _>(user_id)
    .get_result::<Count>(conn)
    .await
    .map(|c| c.n)
}

/// Registration: an insert that ignores a conflict (after a check that
/// a concurrent registration passes too), answering as if it inserted.
pub async fn insert_user_ignoring_conflict(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    email: &str,
    hash: &str,
    roles: crate::domain::Roles,
) -> QueryResult<crate::store::users::Account> {
    diesel::sql_query(
        "WITH inserted AS (
             INSERT INTO users (id, email, password_hash, roles) VALUES ($1, $2, $3, $4::user_role[])
             ON CONFLICT DO NOTHING
         )
         SELECT $1 AS id, $2 AS email, $4 AS roles, now() AS created_at, false AS disabled",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(email)
    .bind::<Text, _>(hash)
    .bind::<Array<Text>, _>(roles.words())
    .get_result(conn)
    .await
}

/// Refresh: read the session by token, then rotate it by id, so every
/// reader of the old token rotates.
pub async fn rotate_select_then_update(
    conn: &mut AsyncPgConnection,
    old: &TokenHash,
    new: &TokenHash,
    idle: Duration,
) -> QueryResult<Option<SessionRow>> {
    let found: Vec<SessionRow> = diesel::sql_query(
        "SELECT id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at
         FROM sessions
         WHERE token_hash = $1
           AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()",
    )
    .bind::<Bytea, _>(old.0.as_slice())
    .get_results(conn)
    .await?;
    let Some(session) = found.into_iter().next() else {
        return Ok(None);
    };
    diesel::sql_query(
        "UPDATE sessions SET token_hash = $2, last_seen_at = now(),
             idle_expires_at = LEAST(now() + make_interval(secs => $3), absolute_expires_at)
         WHERE id = $1
         RETURNING id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at",
    )
    .bind::<SqlUuid, _>(session.id)
    .bind::<Bytea, _>(new.0.as_slice())
    .bind::<Double, _>(idle.as_secs_f64())
    .get_results(conn)
    .await
    .map(|mut rows: Vec<SessionRow>| rows.pop())
}

/// Revoke-all: count, then update, and report the count.
pub async fn revoke_all_count_then_update(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
) -> QueryResult<usize> {
    let n = count_active(conn, user_id).await?;
    diesel::sql_query(
        "UPDATE sessions SET revoked_at = now()
         WHERE user_id = $1
           AND revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()",
    )
    .bind::<SqlUuid, _>(user_id)
    .execute(conn)
    .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The classic broken claim: the SELECT's locks end with its own
/// statement, so the UPDATE can assign rows another claimer also picked.
pub async fn claim_in_two_statements(
    conn: &mut AsyncPgConnection,
    req: ClaimRequest,
) -> QueryResult<Vec<TaskRow>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let picked: Vec<Id> = diesel::sql_query(
        "SELECT id FROM tasks
         WHERE schedulable AND status IN ('unassigned', 'assigned') AND attempt - released < max_attempts
           AND NOT delayed
           AND (lease_expires_at IS NULL OR lease_expires_at <= now())
           AND (not_before IS NULL OR not_before <= now())
         ORDER BY priority DESC, seq
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind::<BigInt, _>(req.count)
    .get_results(conn)
    .await?;
    let ids: Vec<Uuid> = picked.into_iter().map(|p| p.id).collect();
    let mut rows: Vec<TaskRow> = diesel::sql_query(
        "UPDATE tasks SET status = 'assigned', assigned_to = $2, assigned_by = $3, assigned_at = now(),
             lease_expires_at = now() + make_interval(secs => $4), attempt = attempt + 1
         WHERE id = ANY($1)
         RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
                       lease_expires_at, completed_at, attempt, created_at, priority, not_before,
                       max_attempts, key, last_error, created_by",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<SqlUuid, _>(req.assignee)
    .bind::<SqlUuid, _>(req.assigned_by)
    .bind::<Double, _>(req.lease.as_secs_f64())
    .get_results(conn)
    .await?;
    crate::store::tasks::sort_in_claim_order(&mut rows);
    Ok(rows)
}

/// `key_check_then_insert`: the key checked by a plain `NOT EXISTS` under
/// the statement's snapshot, no `ON CONFLICT`: inserts of one key that
/// start together all find it free, and all but one then fail on the
/// unique index (an error to their callers, where one row and every answer
/// naming it were due).
pub const INSERT_AFTER_KEY_CHECK: &str = "\
INSERT INTO tasks (id, title, schedulable, priority, not_before, max_attempts, key, key_digest,
                   created_by, delayed)
SELECT id, title, schedulable, priority, not_before, max_attempts, key, key_digest, $8,
       coalesce(not_before > now(), false)
FROM unnest($1, $2, $3, $4, $5, $6, $7, $9)
     WITH ORDINALITY AS b(id, title, schedulable, priority, not_before, max_attempts, key,
                          key_digest, n)
WHERE NOT EXISTS (SELECT 1 FROM tasks AS taken WHERE taken.key = b.key AND taken.created_by = $8)
ORDER BY n
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// `key_locks_unbounded`: [`crate::store::tasks::LOCK_KEYS`] with one lock
/// per key (`$4`, the bucket count, still bound): a batch of 1000 keys
/// holds 1000 locks.
pub const LOCK_EVERY_KEY: &str = "\
SELECT pg_advisory_xact_lock($1, h)
FROM (SELECT DISTINCT hashtext($2 || '/' || k) + 0 * $4 AS h
      FROM unnest($3::text[]) AS k) AS keys
ORDER BY h";

/// `idempotency_keys_global`: [`crate::store::tasks::INSERT`] that
/// skips a key any creator holds (as v1.1's global keys did)...
pub const INSERT_UNLESS_KEY_ANYWHERE: &str = "\
INSERT INTO tasks (id, title, schedulable, priority, not_before, max_attempts, key, key_digest,
                   created_by, delayed)
SELECT id, title, schedulable, priority, not_before, max_attempts, key, key_digest, $8,
       coalesce(not_before > now(), false)
FROM unnest($1, $2, $3, $4, $5, $6, $7, $9)
     WITH ORDINALITY AS b(id, title, schedulable, priority, not_before, max_attempts, key,
                          key_digest, n)
WHERE NOT EXISTS (SELECT 1 FROM tasks AS taken WHERE taken.key = b.key)
ORDER BY n
ON CONFLICT (created_by, key) WHERE key IS NOT NULL DO NOTHING
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// ... and [`crate::store::tasks::FIND_BY_KEYS`] that finds the key's task
/// whoever created it (`$1` still bound).
pub const FIND_BY_KEYS_ANYWHERE: &str = "\
SELECT v.id, v.seq, v.title, v.schedulable, v.status, v.assigned_to, v.assigned_by, v.assigned_at,
       v.lease_expires_at, v.completed_at, v.attempt, v.created_at, v.priority, v.not_before,
       v.max_attempts, v.key, v.last_error, v.created_by, t.key_digest
FROM task_view AS v JOIN tasks AS t ON t.id = v.id
WHERE $1::uuid IS NOT NULL AND t.key = ANY($2)";

/// `login_limit_check_then_record`: the admission counts reported failures
/// only, never the checks in flight (no `busy`), so logins that arrive
/// together all pass the count before any of them records its outcome.
pub const ADMIT_COUNTING_FAILURES_ONLY: &str = "\
WITH last_success AS (
    SELECT coalesce(max(coalesce(settled_at, attempted_at)), '-infinity') AS at
    FROM login_attempts
    WHERE email = $1 AND outcome = 'succeeded'
),
failures AS (
    SELECT attempted_at FROM login_attempts, last_success
    WHERE email = $1
      AND attempted_at > now() - make_interval(secs => $3)
      AND outcome = 'failed' AND coalesce(settled_at, attempted_at) > last_success.at
    ORDER BY attempted_at DESC
    LIMIT $2
),
decided AS (
    SELECT CASE WHEN (SELECT count(*) FROM failures) >= $2 THEN 'limited' ELSE 'admitted' END
           AS verdict
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

/// `login_limit_refuses_in_flight`, the limit as first written (contract
/// v1.1): a check in flight counts like a failure, so logins that merely
/// arrive together while `limit` are being checked are refused (429),
/// correct passwords included.
pub const ADMIT_COUNTING_IN_FLIGHT: &str = "\
WITH last_success AS (
    SELECT coalesce(max(coalesce(settled_at, attempted_at)), '-infinity') AS at
    FROM login_attempts
    WHERE email = $1 AND outcome = 'succeeded'
),
counted AS (
    SELECT attempted_at FROM login_attempts, last_success
    WHERE email = $1
      AND attempted_at > now() - make_interval(secs => $3)
      AND outcome <> 'succeeded' AND attempted_at > last_success.at
    ORDER BY attempted_at DESC
    LIMIT $2
),
decided AS (
    SELECT CASE WHEN (SELECT count(*) FROM counted) >= $2 THEN 'limited' ELSE 'admitted' END
           AS verdict
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
            FROM counted)
       END AS retry_after_secs,
       u.id AS user_id, u.password_hash
FROM decided LEFT JOIN users AS u ON u.email = $1 AND u.disabled_at IS NULL";

/// Folds the task-count deltas in separate statements: what a writer
/// appends between the read and the delete is deleted unsummed.
pub(crate) async fn fold_counts_in_two_statements(
    conn: &mut AsyncPgConnection,
) -> QueryResult<usize> {
    #[derive(QueryableByName)]
    struct Sum {
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let sums: Vec<Sum> = diesel::sql_query(
        "SELECT status, sum(n)::bigint AS n FROM task_count_deltas GROUP BY status",
    )
    .get_results(conn)
    .await?;
    let folded = diesel::sql_query("DELETE FROM task_count_deltas")
        .execute(conn)
        .await?;
    let statuses: Vec<&str> = sums.iter().map(|s| s.status.as_str()).collect();
    let counts: Vec<i64> = sums.iter().map(|s| s.n).collect();
    diesel::sql_query(
        "INSERT INTO task_count_deltas (status, n) SELECT * FROM unnest($1::task_status[], $2)",
    )
    .bind::<Array<Text>, _>(statuses)
    .bind::<Array<BigInt>, _>(counts)
    .execute(conn)
    .await?;
    Ok(folded)
}
