//! The domain's errors, one enum per domain: [`SessionError`] for users and
//! sessions, [`QueueError`] for the work queue, and [`StoreError`] for the
//! database under both. The API maps each variant to a status and a stable
//! code in one place (auth-api's `error.rs`).

use crate::domain::FieldError;
use crate::hashing::HashError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError;

/// Users, logins and sessions.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("input failed validation")]
    Invalid(Vec<FieldError>),
    #[error("email already registered")]
    EmailTaken,
    /// Unknown email, wrong password, or an impossible one: deliberately one case.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed logins")]
    TooManyAttempts { retry_after_secs: u64 },
    /// Missing, malformed, unknown, expired or revoked: deliberately one case.
    #[error("invalid token")]
    InvalidToken,
    /// A valid credential asking for what it may not have (more roles
    /// than its owner holds, say); the text says what.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// No such session among the caller's.
    #[error("not found")]
    NotFound,
    /// The password-hash queue is full or its deadline passed: a fast 503.
    #[error("overloaded")]
    Overloaded(#[source] HashError),
    #[error("password hashing failed")]
    Hashing(#[source] HashError),
    #[error("token generation failed")]
    Entropy(#[source] getrandom::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The work queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("input failed validation")]
    Invalid(Vec<FieldError>),
    /// No such task.
    #[error("not found")]
    NotFound,
    #[error("task is not assigned to the caller")]
    NotAssignee,
    /// Cancel of a task already completed, failed or cancelled.
    #[error("task is finished")]
    NotCancellable,
    /// An idempotency key the creator holds, sent with other content than
    /// its task was created with.
    #[error("idempotency key `{0}` was used with other content")]
    KeyConflict(String),
    /// A long-poll claim past the bound on waiters (per credential or per
    /// instance): refused at once.
    #[error(transparent)]
    TooManyWaiters(#[from] crate::wakeups::Crowded),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueueError {
    pub fn invalid(field: &str, detail: &str) -> QueueError {
        QueueError::Invalid(vec![FieldError::new(field, detail)])
    }
}

/// The database or its pool.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database or the pool could not serve in time; worth a retry.
    #[error("database unavailable ({0:?})")]
    Unavailable(
        Unavailable,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    #[error("database error")]
    Database(#[source] DieselError),
}

/// Why the database could not serve: each is worth a retry (`503`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No pooled connection within the checkout timeout.
    PoolTimeout,
    /// No new connection could be opened.
    Connect,
    /// The connection died under the query (killed, reset, server gone).
    ConnectionLost,
    /// The statement ran past `statement_timeout`.
    StatementTimeout,
    /// The server is shutting down or starting up.
    ServerNotReady,
    /// Concurrent writes kept changing the rows the request needed.
    Contended,
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> StoreError {
        let reason = match &e {
            // No SQLSTATE: the request never got an answer (the connection
            // closed or broke under it).
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => Some(Unavailable::ConnectionLost),
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
                server_state(info.message())
            }
            _ => None,
        };
        match reason {
            Some(reason) => StoreError::Unavailable(reason, Box::new(e)),
            None => StoreError::Database(e),
        }
    }
}

/// The server states that mean "not now" rather than "wrong request". The
/// server reports them with SQLSTATEs (57014 query_canceled, 40P01
/// deadlock_detected, 57P01 admin_shutdown, 57P03 cannot_connect_now), but diesel-async 0.9 keeps
/// the SQLSTATE only for the kinds diesel names and reports these as
/// `Unknown`, so their (English, `lc_messages`) texts are all that is left.
fn server_state(message: &str) -> Option<Unavailable> {
    if message.contains("statement timeout") {
        Some(Unavailable::StatementTimeout)
    } else if message.contains("deadlock detected") {
        // 40P01: the server chose this transaction to end a lock cycle;
        // the request may be retried as it is.
        Some(Unavailable::Contended)
    } else if ["terminating connection", "shutting down", "starting up"]
        .iter()
        .any(|needle| message.contains(needle))
    {
        Some(Unavailable::ServerNotReady)
    } else {
        None
    }
}

impl From<bb8::RunError<PoolError>> for StoreError {
    fn from(e: bb8::RunError<PoolError>) -> StoreError {
        match e {
            bb8::RunError::TimedOut => StoreError::Unavailable(
                Unavailable::PoolTimeout,
                "timed out waiting for a pooled connection".into(),
            ),
            bb8::RunError::User(inner) => {
                StoreError::Unavailable(Unavailable::Connect, Box::new(inner))
            }
        }
    }
}

/// The store's errors reach each domain through its `Store` variant.
macro_rules! from_store {
    ($($domain:ty),+) => {$(
        impl From<DieselError> for $domain {
            fn from(e: DieselError) -> Self {
                StoreError::from(e).into()
            }
        }

        impl From<bb8::RunError<PoolError>> for $domain {
            fn from(e: bb8::RunError<PoolError>) -> Self {
                StoreError::from(e).into()
            }
        }
    )+};
}

from_store!(SessionError, QueueError);

impl From<HashError> for SessionError {
    fn from(e: HashError) -> SessionError {
        if e.is_overload() {
            SessionError::Overloaded(e)
        } else {
            SessionError::Hashing(e)
        }
    }
}

impl From<getrandom::Error> for SessionError {
    fn from(e: getrandom::Error) -> SessionError {
        SessionError::Entropy(e)
    }
}

/// Whether a diesel error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

#[cfg(test)]
mod tests {
    use super::{StoreError, Unavailable};
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    fn from(kind: DatabaseErrorKind, message: &str) -> StoreError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned())).into()
    }

    fn reason(e: &StoreError) -> Option<Unavailable> {
        match e {
            StoreError::Unavailable(reason, _) => Some(*reason),
            StoreError::Database(_) => None,
        }
    }

    #[test]
    fn a_dead_or_busy_database_is_unavailable_not_an_internal_error() {
        use DatabaseErrorKind::{ClosedConnection, UnableToSendCommand, Unknown};
        for (kind, message, expected) in [
            (ClosedConnection, "closed", Unavailable::ConnectionLost),
            (
                UnableToSendCommand,
                "connection closed",
                Unavailable::ConnectionLost,
            ),
            (
                UnableToSendCommand,
                "error communicating with the server: Connection reset by peer (os error 104)",
                Unavailable::ConnectionLost,
            ),
            (
                Unknown,
                "terminating connection due to administrator command",
                Unavailable::ServerNotReady,
            ),
            (
                Unknown,
                "canceling statement due to statement timeout",
                Unavailable::StatementTimeout,
            ),
            (
                Unknown,
                "the database system is shutting down",
                Unavailable::ServerNotReady,
            ),
            (
                Unknown,
                "the database system is starting up",
                Unavailable::ServerNotReady,
            ),
        ] {
            assert_eq!(reason(&from(kind, message)), Some(expected), "{message}");
        }
        assert_eq!(
            reason(&from(Unknown, "relation \"nope\" does not exist")),
            None
        );
        assert_eq!(
            reason(&StoreError::from(bb8::RunError::TimedOut)),
            Some(Unavailable::PoolTimeout)
        );
        // The kind decides: a constraint error is the request's, whatever its text says.
        assert_eq!(
            reason(&from(
                DatabaseErrorKind::CheckViolation,
                "statement timeout"
            )),
            None
        );
    }
}
