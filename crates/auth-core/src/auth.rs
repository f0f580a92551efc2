//! The sessions service: register, login, validate, rotate, list, revoke.
//! Every rule is enforced inside the database statement or transaction that
//! applies it, never by a check made earlier on another connection.

use crate::config::SessionPolicy;
use crate::db::Db;
use crate::domain::{ClientInfo, Email, FieldError, Password, Roles, SessionToken, TokenHash};
use crate::error::{SessionError, is_unique_violation};
use crate::hashing::PasswordHasher;
use crate::login_limit::{Admission, Admitted, Ending, LoginLimit, Settle};
use crate::store::sessions::{Caller, Revocation};
use crate::store::users::Account;
use crate::store::{api_keys, password_resets, sessions, users};
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

type Result<T, E = SessionError> = std::result::Result<T, E>;

/// A session just created or rotated, with the token shown this once.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub token: SessionToken,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// The caller behind a valid token.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The user's roles as the validation read them: as they are when the
    /// request started, whatever an earlier request of the session saw.
    pub roles: Roles,
    /// The token's hash, as validated: a revocation the caller asks for
    /// takes effect only while this is still the session's token (a refresh
    /// between the validation and the revocation makes the call a 401).
    pub token: TokenHash,
}

impl std::fmt::Debug for Principal {
    // Without the token's hash: it is what the database looks tokens up by.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// One row of the caller's session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub current: bool,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Rotated-away tokens presented again, since start (this instance).
#[derive(Debug, Default)]
pub struct ReuseStats {
    /// Within the grace window: a plain 401, the session untouched.
    pub within_grace: AtomicU64,
    /// Past it: taken for stolen, the session revoked.
    pub past_grace: AtomicU64,
}

#[derive(Clone, Debug)]
pub struct SessionService {
    pub(crate) db: Db,
    hasher: PasswordHasher,
    pub(crate) policy: SessionPolicy,
    limit: LoginLimit,
    reuse: Arc<ReuseStats>,
}

impl SessionService {
    pub fn new(db: Db, hasher: PasswordHasher, policy: SessionPolicy) -> SessionService {
        SessionService {
            db,
            limit: LoginLimit::new(&policy, hasher.wait_deadline()),
            hasher,
            policy,
            reuse: Arc::default(),
        }
    }

    pub fn reuse_stats(&self) -> &ReuseStats {
        &self.reuse
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The login limit, with this instance's lines of logins.
    pub fn login_limit(&self) -> &LoginLimit {
        &self.limit
    }

    /// Creates a user holding `roles`. The unique email constraint decides
    /// races: of N concurrent registrations of one email exactly one succeeds.
    pub async fn register(&self, email: &str, password: &str, roles: Roles) -> Result<Account> {
        let mut errors = Vec::new();
        let email = Email::parse(email)
            .map_err(|d| errors.push(FieldError::new("email", d)))
            .ok();
        let password = Password::parse(password)
            .map_err(|d| errors.push(FieldError::new("password", d)))
            .ok();
        let (Some(email), Some(password)) = (email, password) else {
            return Err(SessionError::Invalid(errors));
        };
        or_fault!(RegistrationCheckThenInsert => crate::faults::register_check_then_insert(&self.db, &self.hasher, email, password, roles).await);
        let hash = self.hasher.hash(&password).await?;
        let id = Uuid::new_v4();
        self.db
            .run(
                async |conn| match users::insert(conn, id, email.as_str(), &hash, roles).await {
                    Ok(account) => Ok(account),
                    Err(e) if is_unique_violation(&e) => Err(SessionError::EmailTaken),
                    Err(e) => Err(e.into()),
                },
            )
            .await
    }

    /// Checks credentials and opens a session. Unknown emails, wrong and
    /// impossible passwords all cost one verification and fail alike. The
    /// attempt is admitted by the login limit before anything is verified.
    ///
    /// Waiting for its turn happens in the caller's task: a caller that
    /// stops waiting (its client hung up) leaves its place. From its
    /// admission on, the login runs in a task of its own, so an admitted
    /// attempt always settles: checked and reported, or withdrawn.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<IssuedSession> {
        let deadline = tokio::time::Instant::now() + self.hasher.wait_deadline();
        let Ok(email) = Email::parse(email) else {
            self.hasher
                .reserve_until(deadline)?
                .verify_dummy(password)
                .await?;
            return Err(SessionError::InvalidCredentials);
        };
        // Its turn among this email's logins, then a place in the hash
        // queue (a flood is refused before it reaches the pool), then the
        // admission; no connection is held while waiting or hashing.
        let admission = self
            .limit
            .admit(&self.db, &self.hasher, email.as_str(), deadline)
            .await?;
        let this = self.clone();
        let (password, client) = (password.to_owned(), client.clone());
        settled(async move {
            this.check_and_open(email, admission, &password, &client)
                .await
        })
        .await
    }

    /// An admitted attempt's check and, for the right password, its
    /// session. Every way out settles the attempt: a wrong password is
    /// reported (the attempt dropped only once that committed), and an
    /// attempt whose check or session could not be had is withdrawn (it was
    /// no guess); a write that fails is tried once more, and an attempt
    /// left pending counts as a failure once it is stale.
    async fn check_and_open(
        &self,
        email: Email,
        admission: Admission,
        password: &str,
        client: &ClientInfo,
    ) -> Result<IssuedSession> {
        let (user, attempt) = self.check(email, admission, password).await?;
        // The attempt is dropped (its line told) once the session's
        // statement, which records it, has committed.
        let opened = self.open_session(&user, &attempt, client).await;
        if opened.is_err() {
            self.settle(attempt.settle(Ending::Withdrawn)).await;
        }
        opened
    }

    /// An admitted attempt's check: for the right password, the user and
    /// the attempt, still to be settled by the caller; a wrong one is
    /// settled as a failure, a check that could not be had as withdrawn.
    async fn check(
        &self,
        email: Email,
        Admission {
            attempt,
            user,
            slot,
        }: Admission,
        password: &str,
    ) -> Result<(users::UserRow, Admitted)> {
        let verified = match (&user, Password::parse(password)) {
            (Some(user), Ok(_)) => {
                slot.verify_for(email.as_str(), password, &user.password_hash)
                    .await
            }
            _ => slot
                .verify_dummy_for(email.as_str(), password)
                .await
                .map(|()| false),
        };
        let verified = match verified {
            Ok(verified) => verified,
            Err(e) => {
                self.settle(attempt.settle(Ending::Withdrawn)).await;
                return Err(e.into());
            }
        };
        match user.filter(|_| verified) {
            Some(user) => Ok((user, attempt)),
            None => {
                self.settle(attempt.settle(Ending::Failed)).await;
                Err(SessionError::InvalidCredentials)
            }
        }
    }

    /// Changes the caller's password. The current one is checked as a
    /// login's is, through the login limit (a wrong one counts as a failed
    /// login); then one transaction stores the new hash, which takes the
    /// user's lock, and revokes every other session of the user
    /// ([`sessions::REVOKE_OTHERS`]): refreshes racing it lose, and a login
    /// that verified the old password opens nothing after it
    /// ([`sessions::OPEN`]), and every API key of the user (one a stolen
    /// session made must not outlive the change). The caller's own session
    /// lives.
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: &str,
        new: &str,
    ) -> Result<()> {
        let new = Password::parse(new)
            .map_err(|d| SessionError::Invalid(vec![FieldError::new("new_password", d)]))?;
        let account = self.account(principal.user_id).await?;
        let email = Email::parse(&account.email).map_err(|_| SessionError::InvalidToken)?;
        let deadline = tokio::time::Instant::now() + self.hasher.wait_deadline();
        let admission = self
            .limit
            .admit(&self.db, &self.hasher, email.as_str(), deadline)
            .await?;
        let (this, current, principal) = (self.clone(), current.to_owned(), principal.clone());
        settled(async move {
            let (user, attempt) = this.check(email, admission, &current).await?;
            let changed = this.store_password(&user, &new, &principal).await;
            this.settle(attempt.settle(Ending::Withdrawn)).await;
            changed
        })
        .await
    }

    /// The new password's hash stored and the other sessions revoked, in
    /// one transaction (see [`SessionService::change_password`]). Under the
    /// user's lock it checks again what the change stands on: the hash the
    /// current password was verified against is still the user's (else a
    /// reset or another change won: `InvalidCredentials`), and the caller's
    /// session still holds its token (else it was revoked or rotated
    /// meanwhile: `InvalidToken`); either way nothing is changed.
    async fn store_password(
        &self,
        user: &users::UserRow,
        new: &Password,
        principal: &Principal,
    ) -> Result<()> {
        let hash = self.hasher.hash(new).await?;
        self.db
            .transaction(async |conn| {
                let verified = Some(user.password_hash.as_str());
                if !users::set_password(conn, user.id, &hash, verified).await? {
                    return Err(SessionError::InvalidCredentials);
                }
                let caller = Caller {
                    session_id: principal.session_id,
                    token: &principal.token,
                };
                if !sessions::revoke_others(conn, user.id, &caller)
                    .await?
                    .caller
                {
                    return Err(SessionError::InvalidToken);
                }
                password_resets::discard(conn, user.id).await?;
                or_fault!(PasswordChangeLeavesApiKeys => Ok(()));
                api_keys::revoke_all_of(conn, user.id).await?;
                Ok(())
            })
            .await
    }

    /// Records how an attempt ended, trying twice; if both fail, the
    /// attempt stays pending and is counted as a failure once stale.
    async fn settle(&self, ending: Settle) {
        for _ in 0..2 {
            let ending = ending.clone();
            match self
                .db
                .run(async move |conn| ending.write(conn).await)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "a login attempt's outcome could not be recorded")
                }
            }
        }
    }

    /// Inserts a session within the per-user limit, evicting the oldest. The
    /// user's row lock serialises this user's logins, so the count read by
    /// the statement after it is still true when the insert commits: the
    /// limit holds at every instant. Three round trips: `BEGIN` with the
    /// lock, the statement ([`sessions::open`]), `COMMIT`.
    async fn open_session(
        &self,
        user: &users::UserRow,
        attempt: &Admitted,
        client: &ClientInfo,
    ) -> Result<IssuedSession> {
        let user_id = user.id;
        let token = SessionToken::generate()?;
        let hash = token.hash();
        let session_id = Uuid::new_v4();
        let policy = self.policy.clone();
        let lock = users::lock_sql(user_id);
        let row = self
            .db
            .run(async |conn| {
                crate::db::atomic_after(conn, Some(&lock), async move |conn| {
                    let reported = Some(attempt.succeeded());
                    let new = sessions::NewSession {
                        id: session_id,
                        user_id,
                        hash: &hash,
                        client,
                        verified: &user.password_hash,
                    };
                    let limit = i64::from(policy.max_sessions_per_user.get());
                    let lifetimes = (policy.idle_timeout, policy.absolute_lifetime);
                    sessions::open(conn, new, limit, lifetimes, reported)
                        .await?
                        .ok_or(SessionError::InvalidCredentials)
                })
                .await
            })
            .await?;
        Ok(IssuedSession {
            token,
            session_id: row.id,
            user_id: row.user_id,
            expires_at: row.expires_at(),
        })
    }

    /// The session behind `token`, if active; slides its idle expiry (at most
    /// one write per session per touch interval). One statement
    /// ([`sessions::validate`]), a second only for a token that opens nothing.
    pub async fn validate(&self, token: &str) -> Result<Principal> {
        or_fault!(RolesCachedPerInstance => crate::faults::validate_with_roles_first_seen(self, token).await);
        let token = SessionToken::parse(token).ok_or(SessionError::InvalidToken)?;
        // `None` is an answer, not an error: behind a transaction pooler an
        // error would roll back the revocation a reused token caused.
        let hash = token.hash();
        let found = self
            .db
            .run(async |conn| {
                let policy = &self.policy;
                let found =
                    sessions::validate(conn, &hash, policy.touch_interval, policy.idle_timeout)
                        .await?;
                if found.is_none() {
                    self.not_active(conn, &hash).await?;
                }
                Ok::<_, SessionError>(found)
            })
            .await?
            .ok_or(SessionError::InvalidToken)?;
        let sessions::Validated { session, roles } = found;
        Ok(Principal {
            session_id: session.id,
            user_id: session.user_id,
            created_at: session.created_at,
            expires_at: session.expires_at(),
            roles,
            token: hash,
        })
    }

    /// Rotates the token: same session, same absolute expiry, new token; the
    /// old token is dead once this returns. One statement, so of N concurrent
    /// refreshes with one token exactly one wins.
    pub async fn refresh(&self, token: &str) -> Result<IssuedSession> {
        let old = SessionToken::parse(token).ok_or(SessionError::InvalidToken)?;
        let new = SessionToken::generate()?;
        self.db
            .run(async |conn| {
                or_fault!(RefreshSelectThenUpdate => crate::faults::refresh_select_then_update(conn, &old, new, self.policy.idle_timeout).await.map(Some));
                let Some(row) =
                    sessions::rotate(conn, &old.hash(), &new.hash(), self.policy.idle_timeout)
                        .await?
                else {
                    // An answer, not an error (see `validate`).
                    self.not_active(conn, &old.hash()).await?;
                    return Ok::<_, SessionError>(None);
                };
                Ok(Some(IssuedSession {
                    token: new,
                    session_id: row.id,
                    user_id: row.user_id,
                    expires_at: row.expires_at(),
                }))
            })
            .await?
            .ok_or(SessionError::InvalidToken)
    }

    /// A token that opens no active session (answered `InvalidToken`): if
    /// it is one that was rotated away and the grace window has passed, it
    /// was stolen (or its owner's copy was), and its whole session is
    /// revoked, so the token that replaced it dies too.
    async fn not_active(&self, conn: &mut AsyncPgConnection, hash: &TokenHash) -> Result<()> {
        if let Some(reuse) = sessions::reused(conn, hash, self.policy.reuse_grace).await? {
            let counter = match reuse.past_grace {
                true => &self.reuse.past_grace,
                false => &self.reuse.within_grace,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if reuse.revoked {
                tracing::warn!("a rotated-away token was presented again: its session is revoked");
            }
        }
        Ok(())
    }

    /// Ends the caller's own session while its token is still the
    /// session's; a session already revoked, or a token a refresh replaced
    /// meanwhile, is `InvalidToken`: the call came after that.
    pub async fn logout(&self, principal: &Principal) -> Result<()> {
        or_fault!(RevocationBeforeCommit => crate::faults::revoke_in_background(&self.db, principal.session_id, principal.user_id));
        self.revoke(principal, principal.session_id).await
    }

    pub async fn list(&self, principal: &Principal) -> Result<Vec<SessionSummary>> {
        let rows = self
            .db
            .run(async |conn| {
                Ok::<_, SessionError>(sessions::list_active(conn, principal.user_id).await?)
            })
            .await?;
        // The list is read after the validation: a revocation that
        // committed in between took the caller's session out of it, and
        // the call comes after that revocation (401), not before it.
        if !rows.iter().any(|r| r.session.id == principal.session_id) {
            return Err(SessionError::InvalidToken);
        }
        Ok(rows
            .into_iter()
            .map(|listed| SessionSummary {
                session_id: listed.session.id,
                created_at: listed.session.created_at,
                last_seen_at: listed.session.last_seen_at,
                expires_at: listed.session.expires_at(),
                current: listed.session.id == principal.session_id,
                user_agent: listed.user_agent,
                ip: listed.ip,
            })
            .collect())
    }

    /// Revokes one of the caller's active sessions; `NotFound` otherwise.
    pub async fn revoke(&self, principal: &Principal, session_id: Uuid) -> Result<()> {
        let revocation = self
            .db
            .run(async |conn| {
                revoke_sessions(
                    conn,
                    caller(principal).as_ref(),
                    principal.user_id,
                    Some(session_id),
                )
                .await
            })
            .await?;
        match revocation {
            Revocation { caller: false, .. } => Err(SessionError::InvalidToken),
            Revocation { revoked: 0, .. } => Err(SessionError::NotFound),
            Revocation { .. } => Ok(()),
        }
    }

    /// Revokes all of the caller's active sessions; returns how many this call revoked.
    pub async fn revoke_all(&self, principal: &Principal) -> Result<usize> {
        self.db
            .run(async |conn| {
                or_fault!(RevocationBeforeCommit => crate::faults::revoke_all_in_background(&self.db, conn, principal.user_id).await);
                or_fault!(RevokeAllCountThenUpdate => Ok(crate::faults::sql::revoke_all_count_then_update(conn, principal.user_id).await?));
                match revoke_sessions(conn, caller(principal).as_ref(), principal.user_id, None).await? {
                    Revocation { caller: false, .. } => Err(SessionError::InvalidToken),
                    Revocation { revoked, .. } => Ok(revoked as usize),
                }
            })
            .await
    }

    /// An operator's revocation (the admin command line): every active
    /// session of the user with `email`; returns how many. `NotFound` when
    /// no user has that email.
    pub async fn revoke_all_of(&self, email: &str) -> Result<usize> {
        let email = Email::parse(email).map_err(|_| SessionError::NotFound)?;
        self.db
            .run(async |conn| {
                let user = users::find_by_email(conn, email.as_str())
                    .await?
                    .ok_or(SessionError::NotFound)?;
                Ok(revoke_sessions(conn, None, user.id, None).await?.revoked as usize)
            })
            .await
    }
}

/// An admitted attempt's work, run to its end in a task of its own (see
/// [`crate::detached`]): the attempt settles whatever becomes of the
/// caller. Only a runtime shutting down ends it without an answer.
async fn settled<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    crate::detached::to_end(work, |_unanswered| async {})
        .await
        .unwrap_or(Err(SessionError::Overloaded(
            crate::hashing::HashError::DeadlineExceeded,
        )))
}

/// A revocation ([`sessions::revoke`]): one statement, and only when a
/// writer raced it, once more under the user's lock (three round trips):
/// then every login that will commit before it has, and none can start.
/// Inside a transaction already (behind a transaction pooler) a first
/// try's row locks would be held while it waits for the user's lock, the
/// other way round from a login: there the user's lock comes first.
async fn revoke_sessions(
    conn: &mut AsyncPgConnection,
    caller: Option<&Caller<'_>>,
    user_id: Uuid,
    target: Option<Uuid>,
) -> Result<Revocation> {
    or_fault!(RevocationMissesRacingLogin => Ok(sessions::revoke(conn, caller, user_id, target, true).await?));
    or_fault!(RevocationFirstTryInTransaction => crate::faults::revoke_trying_first_inside(conn, caller, user_id, target).await);
    if !crate::db::within_transaction(conn)? {
        let first = sessions::revoke(conn, caller, user_id, target, false).await?;
        if !first.raced {
            return Ok(first);
        }
    }
    let lock = users::lock_sql(user_id);
    crate::db::atomic_after(conn, Some(&lock), async |conn| {
        Ok(sessions::revoke(conn, caller, user_id, target, true).await?)
    })
    .await
}

/// The session a revocation is asked through, and the token it was asked with.
fn caller(principal: &Principal) -> Option<Caller<'_>> {
    or_fault!(RevocationIgnoresRotation => None);
    Some(Caller {
        session_id: principal.session_id,
        token: &principal.token,
    })
}
