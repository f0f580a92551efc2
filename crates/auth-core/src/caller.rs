//! Whoever a valid credential speaks for: a person's session or a
//! machine's API key. The interface asks this of every authenticated
//! request, once, before anything else of the request is read.

use crate::SessionError;
use crate::auth::{Principal, SessionService};
use crate::domain::{ApiKeyToken, Roles};
use uuid::Uuid;

/// The caller behind a valid credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A session token: a person, logged in.
    Session(Principal),
    /// An API key: a machine acting for the key's owner.
    Key(KeyHolder),
}

/// The caller behind a valid API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHolder {
    pub key_id: Uuid,
    pub user_id: Uuid,
    /// What the key may do, as the validation read them: the roles it
    /// was made with, less any its owner lost since.
    pub roles: Roles,
}

impl Caller {
    pub fn user_id(&self) -> Uuid {
        match self {
            Caller::Session(p) => p.user_id,
            Caller::Key(k) => k.user_id,
        }
    }

    /// The roles in force for this request.
    pub fn roles(&self) -> Roles {
        match self {
            Caller::Session(p) => p.roles,
            Caller::Key(k) => k.roles,
        }
    }

    /// The credential's own id (a session's or a key's): what bounds "per
    /// credential" count by.
    pub fn credential_id(&self) -> Uuid {
        match self {
            Caller::Session(p) => p.session_id,
            Caller::Key(k) => k.key_id,
        }
    }
}

impl SessionService {
    /// The caller behind `token`: an API key when it is written as one
    /// (looked up among keys only), a session token otherwise. Either way
    /// one statement, and `InvalidToken` for anything that is not live.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, SessionError> {
        if ApiKeyToken::is_key(token) {
            self.validate_key(token).await.map(Caller::Key)
        } else {
            self.validate(token).await.map(Caller::Session)
        }
    }
}
