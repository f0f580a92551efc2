//! API keys: credentials for machines. A key is made by a person's
//! session (never by another key), carries roles its owner's cover, has no
//! idle expiry and is never rotated; it ends when revoked, at its
//! `expires_at`, or with its owner's disable, password change or reset, and
//! loses for good any role its owner loses. Each of those changes the
//! key's row in its own transaction, so a validation reads the key alone.

use crate::SessionError;
use crate::auth::Principal;
use crate::auth::SessionService;
use crate::caller::KeyHolder;
use crate::domain::{ApiKeyToken, FieldError, Roles};
use crate::store::api_keys::{self, KeyRow, NewKey, NotMade};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The longest name a key may have, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 100;

/// A key just made, with its text shown this once.
#[derive(Debug)]
pub struct IssuedKey {
    pub key: ApiKeyToken,
    pub row: KeyRow,
}

/// A key as asked for: its name, its roles (`None`: all of the owner's),
/// and when it ends (`None`: when revoked).
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    pub roles: Option<Roles>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl KeyRequest {
    /// The request's values checked: a name of 1..=100 characters without
    /// control characters. (That `expires_at` is in the future is judged
    /// by the database's clock, when the key is made.)
    pub fn check(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let chars = self.name.chars().count();
        if chars == 0 || chars > MAX_KEY_NAME_CHARS || self.name.trim().is_empty() {
            errors.push(FieldError::new(
                "name",
                format!("must be 1 to {MAX_KEY_NAME_CHARS} characters, not only spaces"),
            ));
        } else if self.name.chars().any(char::is_control) {
            errors.push(FieldError::new("name", "must not hold control characters"));
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors),
        }
    }
}

impl SessionService {
    /// Makes a key for the caller's user, within the per-user cap of keys
    /// (`Invalid` beyond it) and what the owner's roles cover (`Forbidden`
    /// for more). One transaction: the owner's row lock first
    /// ([`api_keys::LOCK_OWNER`]), then the insert that counts and checks
    /// the caller's session ([`api_keys::CREATE`]), so of creations racing
    /// at the cap exactly as many as fit succeed, and a session a password
    /// change revoked meanwhile makes nothing (`InvalidToken`).
    pub async fn create_key(
        &self,
        caller: &Principal,
        request: KeyRequest,
    ) -> Result<IssuedKey, SessionError> {
        let (owner, session) = (caller.user_id, caller.session_id);
        request.check().map_err(SessionError::Invalid)?;
        let key = ApiKeyToken::generate().map_err(SessionError::Entropy)?;
        let hash = key.hash();
        let cap = self.policy.api_keys_per_user;
        let row = self
            .db
            .transaction(async |conn| {
                or_fault!(ApiKeyCapCountedUnlocked => crate::faults::create_key_count_then_insert(conn, owner, session, &request, &hash, cap).await);
                let held = api_keys::lock_owner(conn, owner)
                    .await?
                    .ok_or(SessionError::InvalidToken)?;
                if request.expires_at.is_some_and(|at| at <= held.now) {
                    let why = FieldError::new("expires_at", "must be in the future");
                    return Err(SessionError::Invalid(vec![why]));
                }
                let roles = request.roles.unwrap_or(held.roles);
                if !roles.within(held.roles) {
                    return Err(SessionError::Forbidden(
                        "a key's roles must be among its owner's",
                    ));
                }
                let new = NewKey {
                    id: Uuid::new_v4(),
                    user_id: owner,
                    name: &request.name,
                    hash: &hash,
                    roles,
                    expires_at: request.expires_at,
                };
                match api_keys::create(conn, new, session, cap).await? {
                    Ok(row) => Ok(row),
                    Err(NotMade::Full) => Err(key_cap_reached(cap)),
                    Err(NotMade::CallerGone) => Err(SessionError::InvalidToken),
                }
            })
            .await?;
        Ok(IssuedKey { key, row })
    }

    /// User `owner`'s keys, expired ones too, oldest first.
    pub async fn keys(&self, owner: Uuid) -> Result<Vec<KeyRow>, SessionError> {
        self.db
            .run(async |conn| Ok(api_keys::list(conn, owner).await?))
            .await
    }

    /// Revokes key `id`; with `owner`, only if it is that user's (an
    /// admin passes `None`). `NotFound` when no such key is there. Once
    /// this returns, no validation finds the key.
    pub async fn revoke_key(&self, id: Uuid, owner: Option<Uuid>) -> Result<(), SessionError> {
        let revoked = self
            .db
            .run(async |conn| Ok::<_, SessionError>(api_keys::revoke(conn, id, owner).await?))
            .await?;
        match revoked {
            true => Ok(()),
            false => Err(SessionError::NotFound),
        }
    }

    /// The live key `text` and what it may do now (see
    /// [`api_keys::VALIDATE`]); `InvalidToken` otherwise.
    pub async fn validate_key(&self, text: &str) -> Result<KeyHolder, SessionError> {
        or_fault!(ApiKeysCachedPerInstance => crate::faults::validate_key_cached(self, text).await);
        let hash = ApiKeyToken::parse(text)
            .ok_or(SessionError::InvalidToken)?
            .hash();
        let touch = self.policy.touch_interval;
        let found = self
            .db
            .run(async |conn| Ok::<_, SessionError>(api_keys::validate(conn, &hash, touch).await?))
            .await?
            .ok_or(SessionError::InvalidToken)?;
        Ok(holder(found))
    }
}

/// The caller behind a validated key.
pub(crate) fn holder(found: api_keys::ValidKey) -> KeyHolder {
    KeyHolder {
        key_id: found.id,
        user_id: found.user_id,
        roles: found.roles,
    }
}

/// The answer to a creation past the cap: the contract's `422`.
pub(crate) fn key_cap_reached(cap: u32) -> SessionError {
    SessionError::Invalid(vec![FieldError::new(
        "name",
        format!("a user may hold at most {cap} API keys, expired ones included: revoke one first"),
    )])
}
