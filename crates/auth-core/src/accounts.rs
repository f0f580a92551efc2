//! Users as an admin manages them: read, list, change roles, disable,
//! issue password resets; and the reset's use.
//! Who may call these is the interface's business (the `admin` role);
//! what they do to sessions is this module's.

use crate::SessionError;
use crate::auth::SessionService;
use crate::domain::{Email, FieldError, Password, Roles, SessionToken};
use crate::store::users::Account;
use crate::store::{api_keys, password_resets, sessions, users};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A password reset token an admin issued, shown this once.
#[derive(Debug)]
pub struct IssuedReset {
    pub token: SessionToken,
    pub expires_at: DateTime<Utc>,
}

/// Most users one listing returns.
pub const MAX_LISTED_USERS: i64 = 1000;

/// What an admin changes of a user; `None` leaves it as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserChange {
    pub roles: Option<Roles>,
    pub disabled: Option<bool>,
}

impl SessionService {
    /// User `id`; `NotFound` when there is none.
    pub async fn account(&self, id: Uuid) -> Result<Account, SessionError> {
        self.db
            .run(async |conn| Ok::<_, SessionError>(users::account(conn, id).await?))
            .await?
            .ok_or(SessionError::NotFound)
    }

    /// At most `limit` users by email, from the first email after `after`.
    pub async fn accounts(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Account>, SessionError> {
        let limit = limit.clamp(1, MAX_LISTED_USERS);
        self.db
            .run(async |conn| Ok(users::accounts(conn, after, limit).await?))
            .await
    }

    /// The operator's change of roles (the admin command line), by email;
    /// `NotFound` when no user has it.
    pub async fn set_roles_of(&self, email: &str, roles: Roles) -> Result<Account, SessionError> {
        let email = Email::parse(email).map_err(|_| SessionError::NotFound)?;
        let user = self
            .db
            .run(async |conn| {
                Ok::<_, SessionError>(users::find_by_email(conn, email.as_str()).await?)
            })
            .await?
            .ok_or(SessionError::NotFound)?;
        let change = UserChange {
            roles: Some(roles),
            disabled: None,
        };
        self.change_user(user.id, change).await
    }

    /// Changes user `id`'s roles or disables (enables) it; `NotFound` when
    /// there is none. Roles are read afresh by every session's validation,
    /// and a role taken away is taken from the user's API keys in the same
    /// transaction (by a statement after the update, which holds the
    /// user's lock: a key a creation made first is in its snapshot), so the
    /// change is in force for every request that starts after this
    /// returns, on every instance. Disabling revokes every session and API
    /// key of the user in the same transaction, by a statement of its own after the
    /// update: the update takes the user's row lock, so every login that
    /// held it has committed its session, which that statement's snapshot
    /// then holds; logins that wait for the lock find the user disabled
    /// ([`sessions::OPEN`]) and open nothing.
    pub async fn change_user(&self, id: Uuid, change: UserChange) -> Result<Account, SessionError> {
        self.db
            .transaction(async |conn| {
                or_fault!(DisableRevokesBeforeLocking => crate::faults::revoke_then_disable(conn, id, change).await);
                let account = users::change(conn, id, change.roles, change.disabled)
                    .await?
                    .ok_or(SessionError::NotFound)?;
                if let Some(roles) = change.roles {
                    or_fault!(RoleRemovalLeavesKeyRoles => Ok(account));
                    api_keys::narrow_to(conn, id, roles.implied()).await?;
                }
                if change.disabled == Some(true) {
                    sessions::revoke(conn, None, id, None, true).await?;
                    or_fault!(DisableLeavesApiKeys => { password_resets::discard(conn, id).await?; Ok(account) });
                    api_keys::revoke_all_of(conn, id).await?;
                    password_resets::discard(conn, id).await?;
                }
                Ok(account)
            })
            .await
    }

    /// Issues a single-use password reset token for user `id` (in place of
    /// any earlier one), stored as its hash; `NotFound` for no such user.
    pub async fn issue_reset(&self, id: Uuid) -> Result<IssuedReset, SessionError> {
        let token = SessionToken::generate().map_err(SessionError::Entropy)?;
        let hash = token.hash();
        let lifetime = self.policy.reset_lifetime;
        let issued = self
            .db
            .run(async |conn| {
                Ok::<_, SessionError>(password_resets::issue(conn, &hash, id, lifetime).await?)
            })
            .await?
            .ok_or(SessionError::NotFound)?;
        Ok(IssuedReset {
            token,
            expires_at: issued.expires_at,
        })
    }

    /// Sets a new password with a reset token, once: in one transaction the
    /// token is used ([`password_resets::USE`]: of concurrent uses exactly
    /// one wins), the user's hash replaced under its lock, and every session
    /// of the user revoked. A used, expired or unknown token is
    /// `InvalidToken`; an unknown one is found so before anything is hashed.
    pub async fn reset_password(&self, token: &str, new: &str) -> Result<(), SessionError> {
        let new = Password::parse(new)
            .map_err(|d| SessionError::Invalid(vec![FieldError::new("new_password", d)]))?;
        let hash = SessionToken::parse(token)
            .ok_or(SessionError::InvalidToken)?
            .hash();
        self.db
            .run(async |conn| Ok::<_, SessionError>(password_resets::owner(conn, &hash).await?))
            .await?
            .ok_or(SessionError::InvalidToken)?;
        let password_hash = self.hasher().hash(&new).await?;
        self.db
            .transaction(async |conn| {
                let user = password_resets::use_once(conn, &hash)
                    .await?
                    .ok_or(SessionError::InvalidToken)?;
                if !users::set_password(conn, user, &password_hash, None).await? {
                    return Err(SessionError::InvalidToken);
                }
                sessions::revoke(conn, None, user, None, true).await?;
                api_keys::revoke_all_of(conn, user).await?;
                Ok(())
            })
            .await
    }
}
