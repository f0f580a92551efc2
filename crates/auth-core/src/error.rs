//! The domain's errors: what went wrong, in terms the API maps to a status
//! and a stable code.

use crate::domain::FieldError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("not found")]
    NotFound,
    #[error("task is not assigned to the caller")]
    NotAssignee,
    /// The database or the pool could not serve in time; worth a retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error")]
    Database(#[source] DieselError),
    /// The password-hash queue is full or its deadline passed: a fast 503.
    #[error("overloaded: {0}")]
    Overloaded(#[source] crate::hashing::HashError),
    #[error(transparent)]
    Hashing(crate::hashing::HashError),
    #[error("token generation failed: {0}")]
    Entropy(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &str, detail: &str) -> Error {
        Error::Invalid(vec![FieldError::new(field, detail)])
    }
}

impl From<DieselError> for Error {
    fn from(e: DieselError) -> Error {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                Error::Unavailable(info.message().to_owned())
            }
            DieselError::DatabaseError(_, info) if means_unavailable(info.message()) => {
                Error::Unavailable(info.message().to_owned())
            }
            _ => Error::Database(e),
        }
    }
}

/// Errors that say the database cannot serve now rather than that the
/// request is wrong. They surface as `Unknown` kinds with stable messages:
/// 57014 query_canceled (statement_timeout), 57P01 admin shutdown, 57P03
/// cannot connect now, and tokio-postgres' own "connection closed" and I/O
/// errors when a connection dies under a query (found by the fault tier).
fn means_unavailable(message: &str) -> bool {
    [
        "statement timeout",
        "terminating connection",
        "shutting down",
        "starting up",
        "connection closed",
        "error communicating with the server",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

impl From<bb8::RunError<PoolError>> for Error {
    fn from(e: bb8::RunError<PoolError>) -> Error {
        match e {
            bb8::RunError::TimedOut => {
                Error::Unavailable("timed out waiting for a pooled connection".into())
            }
            bb8::RunError::User(inner) => Error::Unavailable(inner.to_string()),
        }
    }
}

impl From<crate::hashing::HashError> for Error {
    fn from(e: crate::hashing::HashError) -> Error {
        if e.is_overload() {
            Error::Overloaded(e)
        } else {
            Error::Hashing(e)
        }
    }
}

impl From<getrandom::Error> for Error {
    fn from(e: getrandom::Error) -> Error {
        Error::Entropy(e.to_string())
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
    use super::Error;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    fn from_message(message: &str) -> Error {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_owned())).into()
    }

    #[test]
    fn a_dead_or_busy_database_is_unavailable_not_an_internal_error() {
        for message in [
            "connection closed",
            "error communicating with the server: Connection reset by peer (os error 104)",
            "terminating connection due to administrator command",
            "canceling statement due to statement timeout",
            "the database system is shutting down",
            "the database system is starting up",
        ] {
            assert!(
                matches!(from_message(message), Error::Unavailable(_)),
                "{message}"
            );
        }
        assert!(matches!(
            from_message("relation \"nope\" does not exist"),
            Error::Database(_)
        ));
    }
}
