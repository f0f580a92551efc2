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
    /// A checkout that finds no free connection fails at once.
    PoolFailsFast,
    /// The login limit counts failures, verifies, and only then records one.
    LoginLimitCheckThenRecord,
    /// The hash queue has neither a capacity nor a deadline.
    HashQueueUnbounded,
    /// Login locks the user row FOR UPDATE (blocks claims' key-share checks).
    UserLockForUpdate,
    /// A session's created_at is its transaction's start, not its issue.
    SessionCreatedAtTxStart,
}

impl Fault {
    pub const ALL: [Fault; 17] = [
        Fault::ClaimTwoStatements,
        Fault::ClaimWithoutSkipLocked,
        Fault::ClaimReportsRequested,
        Fault::SessionLimitWithoutLock,
        Fault::RefreshWithoutRevokedGuard,
        Fault::TouchCanUnrevoke,
        Fault::LowEntropyToken,
        Fault::CompleteWithoutFence,
        Fault::RegistrationCheckThenInsert,
        Fault::RefreshSelectThenUpdate,
        Fault::RevokeAllCountThenUpdate,
        Fault::RevocationBeforeCommit,
        Fault::PoolFailsFast,
        Fault::LoginLimitCheckThenRecord,
        Fault::HashQueueUnbounded,
        Fault::UserLockForUpdate,
        Fault::SessionCreatedAtTxStart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::ClaimTwoStatements => "claim_two_statements",
            Fault::ClaimWithoutSkipLocked => "claim_without_skip_locked",
            Fault::ClaimReportsRequested => "claim_reports_requested",
            Fault::SessionLimitWithoutLock => "session_limit_without_lock",
            Fault::RefreshWithoutRevokedGuard => "refresh_without_revoked_guard",
            Fault::TouchCanUnrevoke => "touch_can_unrevoke",
            Fault::LowEntropyToken => "low_entropy_token",
            Fault::CompleteWithoutFence => "complete_without_fence",
            Fault::RegistrationCheckThenInsert => "registration_check_then_insert",
            Fault::RefreshSelectThenUpdate => "refresh_select_then_update",
            Fault::RevokeAllCountThenUpdate => "revoke_all_count_then_update",
            Fault::RevocationBeforeCommit => "revocation_before_commit",
            Fault::PoolFailsFast => "pool_fails_fast",
            Fault::LoginLimitCheckThenRecord => "login_limit_check_then_record",
            Fault::HashQueueUnbounded => "hash_queue_unbounded",
            Fault::UserLockForUpdate => "user_lock_for_update",
            Fault::SessionCreatedAtTxStart => "session_created_at_tx_start",
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

/// The broken statements behind the faults above, kept here so the real
/// store reads as the real SQL (the store calls these under `active`).
pub(crate) mod sql {
    use crate::domain::TokenHash;
    use crate::store::sessions::SessionRow;
    use diesel::QueryResult;
    use diesel::sql_types::{Bytea, Double, Text, Uuid as SqlUuid};
    use diesel_async::{AsyncPgConnection, RunQueryDsl};
    use std::time::Duration;
    use uuid::Uuid;

    const COLUMNS: &str =
        "id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, revoked_at";
    const ACTIVE: &str =
        "revoked_at IS NULL AND idle_expires_at > now() AND absolute_expires_at > now()";

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
}
