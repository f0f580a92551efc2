//! Deliberately broken variants of the concurrency-critical code, compiled
//! only with the test-only `faults` feature and chosen at run time by
//! `TESSERA_FAULT=<name>`. They exist to prove that the concurrency tests can
//! fail (`cargo xtask prove`); a normal build does not contain this module.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Builds [`Fault`], its `ALL` and its names from `table.rs`.
macro_rules! faults {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Every deliberate fault, by the name `TESSERA_FAULT` takes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Fault {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Fault {
            pub const ALL: &[Fault] = &[$(Fault::$variant),*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Fault::$variant => $name,)*
                }
            }
        }
    };
}

include!("table.rs");

impl Fault {
    pub fn from_name(name: &str) -> Option<Fault> {
        Fault::ALL.iter().copied().find(|f| f.name() == name)
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

/// `hash_queue_unbounded`: a hashing pool whose queue takes every job and
/// whose deadline never comes (a day), so a flood waits instead of being
/// shed.
pub(crate) fn unbounded(pool: crate::config::HashPoolConfig) -> crate::config::HashPoolConfig {
    crate::config::HashPoolConfig {
        queue_capacity: Some(usize::MAX),
        wait_deadline: std::time::Duration::from_secs(24 * 3600),
        ..pool
    }
}

/// `one_pool_for_every_class`: every class of request shares the queue
/// class's pool, so a stuck class takes the others' connections.
pub(crate) async fn one_pool_for_every_class(
    database_url: &str,
    classes: &crate::config::PoolClasses,
    pooler: crate::config::Pooler,
) -> Result<crate::db::Pools, diesel::ConnectionError> {
    let one = crate::db::connect(database_url, &classes.queue, pooler).await?;
    Ok(crate::db::Pools {
        sessions: one.clone(),
        queue: one.clone(),
        reads: one,
        classes: classes.clone(),
    })
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
    roles: crate::domain::Roles,
) -> Result<crate::store::users::Account, crate::SessionError> {
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
            sql::insert_user_ignoring_conflict(conn, id, email.as_str(), &hash, roles).await?,
        )
    })
    .await
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
    let n = sql::count_active(conn, user_id).await?;
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

/// `revocation_first_try_in_transaction`: `auth::revoke_sessions` with its
/// first try (no user lock) made inside a transaction too, so the rows it
/// locked stay held while the retry waits for the user's lock.
pub(crate) async fn revoke_trying_first_inside(
    conn: &mut diesel_async::AsyncPgConnection,
    caller: Option<&crate::store::sessions::Caller<'_>>,
    user_id: uuid::Uuid,
    target: Option<uuid::Uuid>,
) -> Result<crate::store::sessions::Revocation, crate::SessionError> {
    use crate::store::{sessions, users};
    let first = sessions::revoke(conn, caller, user_id, target, false).await?;
    if !first.raced {
        return Ok(first);
    }
    let lock = users::lock_sql(user_id);
    crate::db::atomic_after(conn, Some(&lock), async |conn| {
        Ok(sessions::revoke(conn, caller, user_id, target, true).await?)
    })
    .await
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

/// The `long_poll_no_recheck` fault's wait: deaf to every wake-up and
/// re-check for all of `limit` (only the shutdown ends it early), so a
/// claim that found nothing at first answers empty whatever arrives.
pub(crate) async fn wait_deaf(
    woken: &mut crate::wakeups::Subscription,
    limit: std::time::Duration,
) -> crate::wakeups::Woken {
    use crate::wakeups::Woken;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match woken.wait_at_most(left).await {
            Woken::TryAgain => continue,
            other => return other,
        }
    }
}

/// The broken statements behind the faults above, whole, so the real store
/// reads as the real SQL (it swaps them in with `statement!`).
pub(crate) mod sql;

/// `roles_cached_per_instance`: a validation that serves each session with
/// the roles this instance saw at its first validation (reuse detection
/// left out: this fault is about roles).
pub(crate) async fn validate_with_roles_first_seen(
    service: &crate::auth::SessionService,
    token: &str,
) -> Result<crate::auth::Principal, crate::SessionError> {
    use crate::SessionError;
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: OnceLock<Mutex<HashMap<uuid::Uuid, crate::domain::Roles>>> = OnceLock::new();
    let token = crate::domain::SessionToken::parse(token).ok_or(SessionError::InvalidToken)?;
    let hash = token.hash();
    let policy = &service.policy;
    let found = service
        .db
        .run(async |conn| {
            crate::store::sessions::validate(
                conn,
                &hash,
                policy.touch_interval,
                policy.idle_timeout,
            )
            .await
            .map_err(crate::StoreError::from)
        })
        .await?
        .ok_or(SessionError::InvalidToken)?;
    let session = found.session;
    let roles = *SEEN
        .get_or_init(Mutex::default)
        .lock()
        .map_err(|_| SessionError::InvalidToken)?
        .entry(session.id)
        .or_insert(found.roles);
    Ok(crate::auth::Principal {
        session_id: session.id,
        user_id: session.user_id,
        created_at: session.created_at,
        expires_at: session.expires_at(),
        roles,
        token: hash,
    })
}

/// `disable_revokes_before_locking`: revokes the user's sessions, then
/// takes the user's row lock by the update that disables it.
pub(crate) async fn revoke_then_disable(
    conn: &mut diesel_async::AsyncPgConnection,
    id: uuid::Uuid,
    change: crate::accounts::UserChange,
) -> Result<crate::store::users::Account, crate::SessionError> {
    if change.disabled == Some(true) {
        crate::store::sessions::revoke(conn, None, id, None, true)
            .await
            .map_err(crate::StoreError::from)?;
    }
    crate::store::users::change(conn, id, change.roles, change.disabled)
        .await
        .map_err(crate::StoreError::from)?
        .ok_or(crate::SessionError::NotFound)
}

/// `api_key_cap_counted_unlocked`: reads the owner's roles without its
/// lock, counts its live keys, then inserts with no count of its own:
/// creations that count together all see room.
pub(crate) async fn create_key_count_then_insert(
    conn: &mut diesel_async::AsyncPgConnection,
    owner: uuid::Uuid,
    session: uuid::Uuid,
    request: &crate::api_keys::KeyRequest,
    hash: &crate::domain::TokenHash,
    cap: u32,
) -> Result<crate::store::api_keys::KeyRow, crate::SessionError> {
    use crate::StoreError;
    use diesel::sql_types::{Array, BigInt, Text, Uuid as SqlUuid};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Held {
        #[diesel(sql_type = Array<Text>)]
        roles: crate::domain::Roles,
        #[diesel(sql_type = BigInt)]
        live: i64,
    }
    let held: Vec<Held> = diesel::sql_query(
        "SELECT u.roles::text[] AS roles,
                (SELECT count(*) FROM api_keys WHERE user_id = u.id) AS live
         FROM users AS u WHERE u.id = $1 AND u.disabled_at IS NULL",
    )
    .bind::<SqlUuid, _>(owner)
    .get_results(conn)
    .await
    .map_err(StoreError::from)?;
    let held = held
        .into_iter()
        .next()
        .ok_or(crate::SessionError::InvalidToken)?;
    if held.live >= i64::from(cap) {
        return Err(crate::api_keys::key_cap_reached(cap));
    }
    let new = crate::store::api_keys::NewKey {
        id: uuid::Uuid::new_v4(),
        user_id: owner,
        name: &request.name,
        hash,
        roles: request.roles.unwrap_or(held.roles),
        expires_at: request.expires_at,
    };
    crate::store::api_keys::create(conn, new, session, u32::MAX)
        .await
        .map_err(StoreError::from)?
        .map_err(|_| crate::SessionError::InvalidToken)
}

/// `api_keys_cached_per_instance`: each key this instance validated once
/// is served again from memory, as it was then.
pub(crate) async fn validate_key_cached(
    service: &crate::auth::SessionService,
    text: &str,
) -> Result<crate::caller::KeyHolder, crate::SessionError> {
    use crate::SessionError;
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: OnceLock<Mutex<HashMap<[u8; 32], crate::caller::KeyHolder>>> = OnceLock::new();
    let hash = crate::domain::ApiKeyToken::parse(text)
        .ok_or(SessionError::InvalidToken)?
        .hash();
    let cache = SEEN.get_or_init(Mutex::default);
    if let Some(held) = cache
        .lock()
        .ok()
        .and_then(|seen| seen.get(&hash.0).copied())
    {
        return Ok(held);
    }
    let touch = service.policy.touch_interval;
    let found = service
        .db
        .run(async |conn| {
            crate::store::api_keys::validate(conn, &hash, touch)
                .await
                .map_err(crate::StoreError::from)
        })
        .await?
        .ok_or(SessionError::InvalidToken)?;
    let held = crate::api_keys::holder(found);
    if let Ok(mut seen) = cache.lock() {
        seen.insert(hash.0, held);
    }
    Ok(held)
}
