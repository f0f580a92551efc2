//! Deliberately broken variants of the concurrency-critical code, compiled
//! only with the test-only `faults` feature and chosen at run time by
//! `TESSERA_FAULT=<name>`. They exist to prove that the concurrency tests can
//! fail (`cargo xtask prove`); a normal build does not contain this module.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every deliberate fault, by the name `TESSERA_FAULT` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Claim as SELECT ... FOR UPDATE SKIP LOCKED, then a separate UPDATE.
    ClaimTwoStatements,
    /// Claim with FOR UPDATE but without SKIP LOCKED (claimers queue).
    ClaimWithoutSkipLocked,
    /// Claim reports `requested` as `claimed`.
    ClaimReportsRequested,
    /// Login counts and evicts sessions without locking the user row.
    SessionLimitWithoutLock,
    /// Login counts its user's active sessions from its snapshot without
    /// locking them: a revocation committing meanwhile is still counted,
    /// and the login evicts one session too many.
    LoginCountsUnlockedRows,
    /// Refresh does not check that the session is still unrevoked.
    RefreshWithoutRevokedGuard,
    /// The last-seen touch writes back the revoked_at it read.
    TouchCanUnrevoke,
    /// Tokens come from a counter instead of the OS CSPRNG.
    LowEntropyToken,
    /// Complete/release check neither the assignee nor the lease.
    CompleteWithoutFence,
    /// Registration checks for the email first, then inserts ignoring conflicts.
    RegistrationCheckThenInsert,
    /// Refresh reads the session by token, then updates it by id.
    RefreshSelectThenUpdate,
    /// Revoke-all counts the active sessions, then revokes them.
    RevokeAllCountThenUpdate,
    /// Logout and revoke-all answer before their revocation has committed.
    RevocationBeforeCommit,
    /// Logout and revocations act on the session their token opened when
    /// it was validated, whatever a refresh did to the token since.
    RevocationIgnoresRotation,
    /// A revocation that a login's eviction raced (a row it saw active was
    /// ended before it locked it) acts on what it locked, without the
    /// login's new session, instead of running again under the user's lock.
    RevocationMissesRacingLogin,
    /// A checkout that finds no free connection fails at once.
    PoolFailsFast,
    /// The login limit counts failures, verifies, and only then records one.
    LoginLimitCheckThenRecord,
    /// The login limit counts checks in flight like failures (v1.1's
    /// wording): correct logins that arrive together are refused.
    LoginLimitRefusesInFlight,
    /// An admission that finds the email limited refuses only its own
    /// login: every login of a crowd for it queues for an admission of its own.
    LoginLimitRefusalNotShared,
    /// The hash queue has neither a capacity nor a deadline.
    HashQueueUnbounded,
    /// Login locks the user row FOR UPDATE (blocks claims' key-share checks).
    UserLockForUpdate,
    /// A session's created_at is its transaction's start, not its issue.
    SessionCreatedAtTxStart,
    /// Task counts are folded as read-sums, delete-all, insert-sums.
    CountsFoldedInTwoStatements,
    /// Every class of request shares one pool (no bulkheads).
    OnePoolForEveryClass,
    /// The cleanup locks its batches FOR UPDATE without SKIP LOCKED (waits).
    CleanupWaitsOnLocks,
    /// Any rotated-away token presented again revokes its session, even
    /// within the grace window (parallel refreshes log the user out).
    ReuseWithoutGrace,
    /// A rotation does not remember the token it replaced (a stolen token
    /// presented after the grace revokes nothing).
    ReuseNotRemembered,
    /// Create looks the idempotency keys up first, then inserts without
    /// ON CONFLICT (concurrent creates of one key collide).
    KeyCheckThenInsert,
    /// A claim takes tasks whatever their attempts (no max_attempts).
    ClaimIgnoresMaxAttempts,
    /// A heartbeat extends any assigned task's lease (no assignee, no lease check).
    HeartbeatWithoutFence,
    /// Cancel from any status, finished ones included.
    CancelAnyStatus,
    /// A long-poll claim sleeps out its wait after one empty try (no wake-ups,
    /// no re-check).
    LongPollNoRecheck,
    /// Tasks claimed for a caller that hung up stay leased to it.
    HungUpClaimsKept,
    /// actix keeps serving a request whose client hung up (half-closed
    /// connections allowed, its default).
    HangUpsIgnored,
    /// Each long-poll waiter re-checks the queue every second on its own
    /// (the first design: database work grows with the number of waiters).
    LongPollRecheckPerWaiter,
    /// Long-poll claims wait without a bound per credential or instance.
    WaitersUnbounded,
    /// A JSON body is read whole and parsed into a `serde_json::Value`
    /// before its members are judged (memory follows what it holds).
    BodyReadWhole,
}

impl Fault {
    pub const ALL: [Fault; 37] = [
        Fault::ClaimTwoStatements,
        Fault::ClaimWithoutSkipLocked,
        Fault::ClaimReportsRequested,
        Fault::SessionLimitWithoutLock,
        Fault::LoginCountsUnlockedRows,
        Fault::RefreshWithoutRevokedGuard,
        Fault::TouchCanUnrevoke,
        Fault::LowEntropyToken,
        Fault::CompleteWithoutFence,
        Fault::RegistrationCheckThenInsert,
        Fault::RefreshSelectThenUpdate,
        Fault::RevokeAllCountThenUpdate,
        Fault::RevocationIgnoresRotation,
        Fault::RevocationMissesRacingLogin,
        Fault::RevocationBeforeCommit,
        Fault::PoolFailsFast,
        Fault::LoginLimitCheckThenRecord,
        Fault::LoginLimitRefusesInFlight,
        Fault::LoginLimitRefusalNotShared,
        Fault::HashQueueUnbounded,
        Fault::UserLockForUpdate,
        Fault::SessionCreatedAtTxStart,
        Fault::CountsFoldedInTwoStatements,
        Fault::OnePoolForEveryClass,
        Fault::CleanupWaitsOnLocks,
        Fault::ReuseWithoutGrace,
        Fault::ReuseNotRemembered,
        Fault::KeyCheckThenInsert,
        Fault::ClaimIgnoresMaxAttempts,
        Fault::HeartbeatWithoutFence,
        Fault::CancelAnyStatus,
        Fault::LongPollNoRecheck,
        Fault::HungUpClaimsKept,
        Fault::HangUpsIgnored,
        Fault::LongPollRecheckPerWaiter,
        Fault::WaitersUnbounded,
        Fault::BodyReadWhole,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::ClaimTwoStatements => "claim_two_statements",
            Fault::ClaimWithoutSkipLocked => "claim_without_skip_locked",
            Fault::ClaimReportsRequested => "claim_reports_requested",
            Fault::SessionLimitWithoutLock => "session_limit_without_lock",
            Fault::LoginCountsUnlockedRows => "login_counts_unlocked_rows",
            Fault::RefreshWithoutRevokedGuard => "refresh_without_revoked_guard",
            Fault::TouchCanUnrevoke => "touch_can_unrevoke",
            Fault::LowEntropyToken => "low_entropy_token",
            Fault::CompleteWithoutFence => "complete_without_fence",
            Fault::RegistrationCheckThenInsert => "registration_check_then_insert",
            Fault::RefreshSelectThenUpdate => "refresh_select_then_update",
            Fault::RevokeAllCountThenUpdate => "revoke_all_count_then_update",
            Fault::RevocationIgnoresRotation => "revocation_ignores_rotation",
            Fault::RevocationMissesRacingLogin => "revocation_misses_racing_login",
            Fault::RevocationBeforeCommit => "revocation_before_commit",
            Fault::PoolFailsFast => "pool_fails_fast",
            Fault::LoginLimitCheckThenRecord => "login_limit_check_then_record",
            Fault::LoginLimitRefusesInFlight => "login_limit_refuses_in_flight",
            Fault::LoginLimitRefusalNotShared => "login_limit_refusal_not_shared",
            Fault::HashQueueUnbounded => "hash_queue_unbounded",
            Fault::UserLockForUpdate => "user_lock_for_update",
            Fault::SessionCreatedAtTxStart => "session_created_at_tx_start",
            Fault::CountsFoldedInTwoStatements => "counts_folded_in_two_statements",
            Fault::OnePoolForEveryClass => "one_pool_for_every_class",
            Fault::CleanupWaitsOnLocks => "cleanup_waits_on_locks",
            Fault::ReuseWithoutGrace => "reuse_without_grace",
            Fault::ReuseNotRemembered => "reuse_not_remembered",
            Fault::KeyCheckThenInsert => "key_check_then_insert",
            Fault::ClaimIgnoresMaxAttempts => "claim_ignores_max_attempts",
            Fault::HeartbeatWithoutFence => "heartbeat_without_fence",
            Fault::CancelAnyStatus => "cancel_any_status",
            Fault::LongPollNoRecheck => "long_poll_no_recheck",
            Fault::HungUpClaimsKept => "hung_up_claims_kept",
            Fault::HangUpsIgnored => "hang_ups_ignored",
            Fault::LongPollRecheckPerWaiter => "long_poll_recheck_per_waiter",
            Fault::WaitersUnbounded => "waiters_unbounded",
            Fault::BodyReadWhole => "body_read_whole",
        }
    }

    pub fn from_name(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Whether `fault` was chosen for this process.
pub fn active(fault: Fault) -> bool {
    static CHOSEN: OnceLock<Option<Fault>> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        std::env::var("TESSERA_FAULT")
            .ok()
            .and_then(|n| Fault::from_name(n.trim()))
    }) == Some(fault)
}

/// A "token" that is unique but predictable: a counter in the last 8 bytes.
pub(crate) fn counter_token() -> crate::domain::SessionToken {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut bytes = [0u8; 32];
    bytes[24..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    crate::domain::SessionToken::from_bytes(bytes)
}

/// Registration that checks for the email first and then inserts ignoring a
/// conflict: concurrent registrations all pass the check and all "succeed".
pub(crate) async fn register_check_then_insert(
    db: &crate::db::Db,
    hasher: &crate::hashing::PasswordHasher,
    email: crate::domain::Email,
    password: crate::domain::Password,
) -> Result<crate::auth::RegisteredUser, crate::SessionError> {
    let found = db
        .run(async |conn| {
            Ok::<_, crate::SessionError>(
                crate::store::users::find_by_email(conn, email.as_str()).await?,
            )
        })
        .await?;
    if found.is_some() {
        return Err(crate::SessionError::EmailTaken);
    }
    let hash = hasher.hash(&password).await?;
    let id = uuid::Uuid::new_v4();
    db.run(async |conn| {
        Ok::<_, crate::SessionError>(
            sql::insert_user_ignoring_conflict(conn, id, email.as_str(), &hash).await?,
        )
    })
    .await?;
    Ok(crate::auth::RegisteredUser {
        id,
        email: email.to_string(),
    })
}

/// Refresh as read-then-update-by-id: every reader of the old token rotates.
pub(crate) async fn refresh_select_then_update(
    conn: &mut diesel_async::AsyncPgConnection,
    old: &crate::domain::SessionToken,
    new: crate::domain::SessionToken,
    idle: std::time::Duration,
) -> Result<crate::auth::IssuedSession, crate::SessionError> {
    let row = sql::rotate_select_then_update(conn, &old.hash(), &new.hash(), idle)
        .await?
        .ok_or(crate::SessionError::InvalidToken)?;
    Ok(crate::auth::IssuedSession {
        token: new,
        session_id: row.id,
        user_id: row.user_id,
        expires_at: row.expires_at(),
    })
}

/// Logout that answers before its revocation has run.
pub(crate) fn revoke_in_background(
    db: &crate::db::Db,
    session_id: uuid::Uuid,
    user_id: uuid::Uuid,
) -> Result<(), crate::SessionError> {
    let db = db.clone();
    tokio::spawn(async move {
        let _ = db
            .run(async |conn| {
                Ok::<_, crate::StoreError>(
                    crate::store::sessions::revoke(conn, None, user_id, Some(session_id), true)
                        .await?,
                )
            })
            .await;
    });
    Ok(())
}

/// Revoke-all that counts, answers, and revokes later.
pub(crate) async fn revoke_all_in_background(
    db: &crate::db::Db,
    conn: &mut diesel_async::AsyncPgConnection,
    user_id: uuid::Uuid,
) -> Result<usize, crate::SessionError> {
    let n = crate::store::sessions::count_active(conn, user_id).await?;
    let db = db.clone();
    tokio::spawn(async move {
        let _ = db
            .run(async |conn| {
                Ok::<_, crate::StoreError>(
                    crate::store::sessions::revoke(conn, None, user_id, None, true).await?,
                )
            })
            .await;
    });
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The `long_poll_recheck_per_waiter` fault's wait: at most a second, then
/// a try of its own, whatever woke it.
pub(crate) async fn wait_rechecking_alone(
    woken: &mut crate::wakeups::Subscription,
    left: std::time::Duration,
) -> crate::wakeups::Woken {
    use crate::wakeups::{RECHECK, Woken};
    match woken.wait_at_most(left.min(RECHECK)).await {
        Woken::Expired if left > RECHECK => Woken::TryAgain,
        other => other,
    }
}

/// The broken statements behind the faults above, kept here so the real
/// store reads as the real SQL (the store calls these under `active`).
pub(crate) mod sql {
    use crate::domain::TokenHash;
    use crate::store::login_attempts::AdmissionRow;
    use crate::store::secs;
    use crate::store::sessions::SessionRow;
    use crate::store::tasks::{CLAIM_ORDER, CLAIMABLE, ClaimRequest, NewTaskRow, TaskRow};
    use diesel::sql_types::{
        Array, BigInt, Bytea, Double, Nullable, Text, Timestamptz, Uuid as SqlUuid,
    };
    use diesel::{QueryResult, QueryableByName};

    /// Claims wait on each other's rows (no SKIP LOCKED).
    pub const LOCK_WAITING: &str = "FOR UPDATE";
    /// Any caller may write to any assigned task, under any attempt.
    pub const NO_FENCE: &str =
        "id = $1 AND status = 'assigned' AND ($2 IS NOT NULL) AND ($3::int IS NULL OR TRUE)";
    /// Claimable whatever the attempts.
    pub const CLAIMABLE_ANY_ATTEMPT: &str =
        "schedulable AND status IN ('unassigned', 'assigned') AND NOT delayed
               AND (lease_expires_at IS NULL OR lease_expires_at <= now())
               AND (not_before IS NULL OR not_before <= now())";
    /// Sessions dated by their transaction's start.
    pub const TRANSACTION_START: &str = "now()";
    use diesel_async::{AsyncPgConnection, RunQueryDsl};
    use std::time::Duration;
    use uuid::Uuid;

    use crate::store::sessions::{ACTIVE, COLUMNS};

    /// Registration: an insert that ignores a conflict (after a check that
    /// a concurrent registration passes too).
    pub async fn insert_user_ignoring_conflict(
        conn: &mut AsyncPgConnection,
        id: Uuid,
        email: &str,
        hash: &str,
    ) -> QueryResult<()> {
        diesel::sql_query(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(email)
        .bind::<Text, _>(hash)
        .execute(conn)
        .await
        .map(|_| ())
    }

    /// Refresh: read the session by token, then rotate it by id, so every
    /// reader of the old token rotates.
    pub async fn rotate_select_then_update(
        conn: &mut AsyncPgConnection,
        old: &TokenHash,
        new: &TokenHash,
        idle: Duration,
    ) -> QueryResult<Option<SessionRow>> {
        let found: Vec<SessionRow> = diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM sessions WHERE token_hash = $1 AND {ACTIVE}"
        ))
        .bind::<Bytea, _>(old.0.as_slice())
        .get_results(conn)
        .await?;
        let Some(session) = found.into_iter().next() else {
            return Ok(None);
        };
        diesel::sql_query(format!(
            "UPDATE sessions SET token_hash = $2, last_seen_at = now(),
                 idle_expires_at = LEAST(now() + make_interval(secs => $3), absolute_expires_at)
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
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
        let n = crate::store::sessions::count_active(conn, user_id).await?;
        diesel::sql_query(format!(
            "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND {ACTIVE}"
        ))
        .bind::<SqlUuid, _>(user_id)
        .execute(conn)
        .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The touch as a write-back of the row it read: sets `revoked_at` to
    /// the value the statement's snapshot saw and does not re-check that
    /// the session is still active, reviving one revoked meanwhile.
    pub const TOUCH_WRITING_BACK_REVOKED_AT: &str =
        ", revoked_at = (SELECT revoked_at FROM found) WHERE id = (SELECT id FROM found WHERE due)";

    /// Rotation that checks expiry but not revocation.
    pub async fn rotate_without_revoked_guard(
        conn: &mut AsyncPgConnection,
        old: &TokenHash,
        new: &TokenHash,
        idle: Duration,
    ) -> QueryResult<Option<SessionRow>> {
        diesel::sql_query(format!(
            "UPDATE sessions SET token_hash = $2, last_seen_at = now(),
                 idle_expires_at = LEAST(now() + make_interval(secs => $3), absolute_expires_at)
             WHERE token_hash = $1 AND absolute_expires_at > now() RETURNING {COLUMNS}"
        ))
        .bind::<Bytea, _>(old.0.as_slice())
        .bind::<Bytea, _>(new.0.as_slice())
        .bind::<Double, _>(idle.as_secs_f64())
        .get_results(conn)
        .await
        .map(|mut rows: Vec<SessionRow>| rows.pop())
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
        let picked: Vec<Id> = diesel::sql_query(format!(
            "SELECT id FROM tasks WHERE {CLAIMABLE} ORDER BY {CLAIM_ORDER} LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind::<BigInt, _>(req.count)
        .get_results(conn)
        .await?;
        let ids: Vec<Uuid> = picked.into_iter().map(|p| p.id).collect();
        let mut rows: Vec<TaskRow> = diesel::sql_query(format!(
            "UPDATE tasks SET status = 'assigned', assigned_to = $2, assigned_by = $3, assigned_at = now(),
                 lease_expires_at = now() + make_interval(secs => $4), attempt = attempt + 1
             WHERE id = ANY($1) RETURNING {}",
            crate::store::tasks::COLUMNS
        ))
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<SqlUuid, _>(req.assignee)
        .bind::<SqlUuid, _>(req.assigned_by)
        .bind::<Double, _>(req.lease.as_secs_f64())
        .get_results(conn)
        .await?;
        crate::store::tasks::sort_in_claim_order(&mut rows);
        Ok(rows)
    }

    /// Idempotent create as check-then-insert: keys already stored are
    /// skipped, the rest inserted with no conflict handling, so a concurrent
    /// create of the same key meets the unique constraint.
    pub async fn insert_after_key_check(
        conn: &mut AsyncPgConnection,
        tasks: &[NewTaskRow],
    ) -> QueryResult<Vec<TaskRow>> {
        let keys: Vec<&str> = tasks.iter().filter_map(|t| t.key.as_deref()).collect();
        let taken: Vec<String> = crate::store::tasks::find_by_keys(conn, &keys)
            .await?
            .into_iter()
            .filter_map(|t| t.key)
            .collect();
        let mut inserted = Vec::new();
        for t in tasks
            .iter()
            .filter(|t| t.key.as_ref().is_none_or(|k| !taken.contains(k)))
        {
            let row: TaskRow = diesel::sql_query(format!(
                "INSERT INTO tasks (id, title, schedulable, priority, not_before, max_attempts, key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {}",
                crate::store::tasks::COLUMNS
            ))
            .bind::<SqlUuid, _>(t.id)
            .bind::<Text, _>(&t.title)
            .bind::<diesel::sql_types::Bool, _>(t.schedulable)
            .bind::<diesel::sql_types::Integer, _>(t.priority)
            .bind::<Nullable<Timestamptz>, _>(t.not_before)
            .bind::<diesel::sql_types::Integer, _>(t.max_attempts)
            .bind::<Nullable<Text>, _>(t.key.as_deref())
            .get_result(conn)
            .await?;
            inserted.push(row);
        }
        Ok(inserted)
    }

    /// The check-then-record login limit: counts failures only, admits
    /// without recording anything (attempt 0); the outcome is inserted
    /// after the check.
    pub async fn count_only(
        conn: &mut AsyncPgConnection,
        email: &str,
        limit: u32,
        window: Duration,
    ) -> QueryResult<AdmissionRow> {
        diesel::sql_query(
            "WITH counted AS (
                 SELECT attempted_at FROM login_attempts
                 WHERE email = $1 AND attempted_at > now() - make_interval(secs => $3)
                   AND outcome = 'failed'
                   AND id > (SELECT coalesce(max(id), 0) FROM login_attempts
                             WHERE email = $1 AND outcome = 'succeeded')
                 ORDER BY id DESC LIMIT $2
             )
             SELECT CASE WHEN (SELECT count(*) FROM counted) < $2 THEN 'admitted' ELSE 'limited' END AS verdict,
                    CASE WHEN (SELECT count(*) FROM counted) < $2 THEN 0::bigint END AS attempt_id,
                    (SELECT EXTRACT(EPOCH FROM min(attempted_at) + make_interval(secs => $3) - now())::float8
                     FROM counted) AS retry_after_secs,
                    u.id AS user_id, u.password_hash
             FROM (SELECT 1) AS one LEFT JOIN users AS u ON u.email = $1",
        )
        .bind::<Text, _>(email)
        .bind::<BigInt, _>(i64::from(limit.max(1)))
        .bind::<Double, _>(secs(window))
        .get_result(conn)
        .await
    }

    /// The login limit as first written (contract v1.1): a check in flight
    /// counts like a failure, so logins that merely arrive together while
    /// ten are being checked are refused (429), correct passwords included.
    /// The admission itself is still one statement under the email's lock.
    pub async fn admit_counting_in_flight(
        conn: &mut AsyncPgConnection,
        email: &str,
        limit: u32,
        window: Duration,
    ) -> Result<AdmissionRow, crate::error::StoreError> {
        let lock = crate::store::login_attempts::lock_email_sql(email);
        crate::db::atomic_after(conn, Some(&lock), async |conn| {
            diesel::sql_query(
                "WITH counted AS (
                     SELECT attempted_at FROM login_attempts
                     WHERE email = $1
                       AND attempted_at > now() - make_interval(secs => $3)
                       AND outcome <> 'succeeded'
                       AND id > (SELECT coalesce(max(id), 0) FROM login_attempts
                                 WHERE email = $1 AND outcome = 'succeeded')
                     ORDER BY id DESC
                     LIMIT $2
                 ),
                 admitted AS (
                     INSERT INTO login_attempts (email)
                     SELECT $1 WHERE (SELECT count(*) FROM counted) < $2
                     RETURNING id
                 )
                 SELECT CASE WHEN (SELECT id FROM admitted) IS NULL THEN 'limited' ELSE 'admitted' END AS verdict,
                        (SELECT id FROM admitted) AS attempt_id,
                        (SELECT EXTRACT(EPOCH FROM min(attempted_at) + make_interval(secs => $3) - now())::float8
                         FROM counted) AS retry_after_secs,
                        u.id AS user_id, u.password_hash
                 FROM (SELECT 1) AS one LEFT JOIN users AS u ON u.email = $1",
            )
            .bind::<Text, _>(email)
            .bind::<BigInt, _>(i64::from(limit.max(1)))
            .bind::<Double, _>(secs(window))
            .get_result(conn)
            .await
            .map_err(crate::error::StoreError::from)
        })
        .await
    }

    /// The faulty build's late record of an outcome (check-then-record).
    pub async fn insert_outcome(
        conn: &mut AsyncPgConnection,
        email: &str,
        outcome: &'static str,
    ) -> QueryResult<()> {
        diesel::sql_query(
            "INSERT INTO login_attempts (email, outcome, settled_at) VALUES ($1, $2, clock_timestamp())",
        )
            .bind::<Text, _>(email)
            .bind::<Text, _>(outcome)
            .execute(conn)
            .await
            .map(|_| ())
    }

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
        diesel::sql_query("INSERT INTO task_count_deltas (status, n) SELECT * FROM unnest($1, $2)")
            .bind::<Array<Text>, _>(statuses)
            .bind::<Array<BigInt>, _>(counts)
            .execute(conn)
            .await?;
        Ok(folded)
    }
}
