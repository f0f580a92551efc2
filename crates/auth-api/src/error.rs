//! The one error type of the HTTP layer: each variant maps to a status and a
//! stable `code`, rendered as an RFC 9457 problem document.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use auth_core::domain::{FieldError, MAX_FIELD_ERRORS, Right};
use auth_core::{QueueError, SessionError, StoreError};
use serde::Serialize;
use std::fmt;
use utoipa::ToSchema;

/// Every answer that is not a success: one variant per contract case, so
/// [`ApiError::parts`] is the one place a status and code are chosen. The
/// domains' errors are translated by the `From` impls below, each of their
/// variants once.
#[derive(Debug)]
pub enum ApiError {
    /// Not JSON, or nested deeper than 32 levels.
    MalformedRequest(&'static str),
    PayloadTooLarge {
        limit: usize,
    },
    UnsupportedMediaType,
    Validation(Vec<FieldError>),
    NotFound,
    /// `allow`: the path's methods, for the `Allow` header.
    MethodNotAllowed {
        allow: String,
    },
    EmailTaken,
    InvalidCredentials,
    TooManyAttempts {
        retry_after_secs: u64,
    },
    InvalidToken,
    /// A valid credential without the right the request needs.
    Forbidden(Right),
    /// A valid credential asking for what it may not have; the text says what.
    Refused(&'static str),
    NotAssignee,
    NotCancellable,
    /// An idempotency key sent again with other content.
    KeyConflict(String),
    /// A long-poll claim past the bound on waiters (per credential or per instance).
    TooManyWaiters,
    /// The database or the pool could not serve in time (logged as a warning).
    Unavailable(StoreError),
    /// The hash queue shed the login (logged at debug: it is the design working).
    Overloaded(SessionError),
    /// Anything else: logged with its causes, answered with a generic 500.
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> ApiError {
        match e {
            SessionError::Invalid(errors) => ApiError::Validation(errors),
            SessionError::EmailTaken => ApiError::EmailTaken,
            SessionError::InvalidCredentials => ApiError::InvalidCredentials,
            SessionError::TooManyAttempts { retry_after_secs } => {
                ApiError::TooManyAttempts { retry_after_secs }
            }
            SessionError::InvalidToken => ApiError::InvalidToken,
            SessionError::NotFound => ApiError::NotFound,
            SessionError::Forbidden(why) => ApiError::Refused(why),
            e @ SessionError::Overloaded(_) => ApiError::Overloaded(e),
            e @ (SessionError::Hashing(_) | SessionError::Entropy(_)) => {
                ApiError::Internal(Box::new(e))
            }
            SessionError::Store(e) => e.into(),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> ApiError {
        match e {
            QueueError::Invalid(errors) => ApiError::Validation(errors),
            QueueError::NotFound => ApiError::NotFound,
            QueueError::NotAssignee => ApiError::NotAssignee,
            QueueError::NotCancellable => ApiError::NotCancellable,
            QueueError::KeyConflict(key) => ApiError::KeyConflict(key),
            QueueError::TooManyWaiters(_) => ApiError::TooManyWaiters,
            QueueError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            e @ StoreError::Unavailable(..) => ApiError::Unavailable(e),
            e @ StoreError::Database(_) => ApiError::Internal(Box::new(e)),
        }
    }
}

/// The contract's stable error codes; the OpenAPI document lists the same enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    InvalidCredentials,
    TooManyAttempts,
    InvalidToken,
    Forbidden,
    NotAssignee,
    NotCancellable,
    KeyConflict,
    TooManyWaiters,
    ServiceUnavailable,
    InternalError,
}

impl ProblemCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::MalformedRequest => "malformed_request",
            ProblemCode::PayloadTooLarge => "payload_too_large",
            ProblemCode::UnsupportedMediaType => "unsupported_media_type",
            ProblemCode::ValidationFailed => "validation_failed",
            ProblemCode::NotFound => "not_found",
            ProblemCode::MethodNotAllowed => "method_not_allowed",
            ProblemCode::EmailTaken => "email_taken",
            ProblemCode::InvalidCredentials => "invalid_credentials",
            ProblemCode::TooManyAttempts => "too_many_attempts",
            ProblemCode::InvalidToken => "invalid_token",
            ProblemCode::Forbidden => "forbidden",
            ProblemCode::NotAssignee => "not_assignee",
            ProblemCode::NotCancellable => "not_cancellable",
            ProblemCode::KeyConflict => "key_conflict",
            ProblemCode::TooManyWaiters => "too_many_waiters",
            ProblemCode::ServiceUnavailable => "service_unavailable",
            ProblemCode::InternalError => "internal_error",
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `urn:tessera:problem:<code>`.
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    code: ProblemCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// With `validation_failed`: each offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 50)]
    errors: Option<Vec<FieldProblem>>,
    /// With `validation_failed`: `true` when more fields failed than `errors`
    /// lists (it lists at most 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
    /// The request's id (its `X-Request-Id`, or one the service made): the
    /// same id is on every log line of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

/// One offending field of a `validation_failed` problem.
#[derive(Serialize, ToSchema)]
#[schema(as = FieldError)]
pub struct FieldProblem {
    /// e.g. `email` or `tasks[3].title`.
    field: String,
    detail: String,
}

impl From<&FieldError> for FieldProblem {
    fn from(e: &FieldError) -> FieldProblem {
        FieldProblem {
            field: e.field.clone(),
            detail: e.detail.clone(),
        }
    }
}

impl ApiError {
    /// (status, code, title): the contract's table.
    fn parts(&self) -> (StatusCode, ProblemCode, &'static str) {
        use ProblemCode as C;
        use StatusCode as S;
        match self {
            ApiError::MalformedRequest(_) => {
                (S::BAD_REQUEST, C::MalformedRequest, "Malformed request")
            }
            ApiError::PayloadTooLarge { .. } => (
                S::PAYLOAD_TOO_LARGE,
                C::PayloadTooLarge,
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                C::UnsupportedMediaType,
                "Unsupported media type",
            ),
            ApiError::Validation(_) => (
                S::UNPROCESSABLE_ENTITY,
                C::ValidationFailed,
                "Validation failed",
            ),
            ApiError::NotFound => (S::NOT_FOUND, C::NotFound, "Not found"),
            ApiError::MethodNotAllowed { .. } => (
                S::METHOD_NOT_ALLOWED,
                C::MethodNotAllowed,
                "Method not allowed",
            ),
            ApiError::EmailTaken => (S::CONFLICT, C::EmailTaken, "Email already registered"),
            ApiError::InvalidCredentials => (
                S::UNAUTHORIZED,
                C::InvalidCredentials,
                "Invalid credentials",
            ),
            ApiError::TooManyAttempts { .. } => (
                S::TOO_MANY_REQUESTS,
                C::TooManyAttempts,
                "Too many failed login attempts",
            ),
            ApiError::InvalidToken => (S::UNAUTHORIZED, C::InvalidToken, "Invalid token"),
            ApiError::Forbidden(_) | ApiError::Refused(_) => {
                (S::FORBIDDEN, C::Forbidden, "Forbidden")
            }
            ApiError::NotAssignee => (S::CONFLICT, C::NotAssignee, "Task is not assigned to you"),
            ApiError::NotCancellable => {
                (S::CONFLICT, C::NotCancellable, "Task is already finished")
            }
            ApiError::KeyConflict(_) => (
                S::CONFLICT,
                C::KeyConflict,
                "Idempotency key used with other content",
            ),
            ApiError::TooManyWaiters => (
                S::TOO_MANY_REQUESTS,
                C::TooManyWaiters,
                "Too many long-poll claims waiting",
            ),
            ApiError::Unavailable(_) | ApiError::Overloaded(_) => (
                S::SERVICE_UNAVAILABLE,
                C::ServiceUnavailable,
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                S::INTERNAL_SERVER_ERROR,
                C::InternalError,
                "Internal server error",
            ),
        }
    }

    /// A human-readable detail; never internals (SQL, causes) for 5xx.
    fn detail(&self) -> Option<String> {
        match self {
            ApiError::MalformedRequest(why) => Some((*why).to_string()),
            ApiError::PayloadTooLarge { limit } => {
                Some(format!("the body must be at most {limit} bytes"))
            }
            ApiError::UnsupportedMediaType => Some("send Content-Type: application/json".into()),
            ApiError::Forbidden(right) => Some(format!(
                "this needs one of the roles {}",
                right
                    .granted_by()
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            ApiError::Refused(why) => Some((*why).to_owned()),
            ApiError::KeyConflict(key) => Some(format!(
                "the key {key:?} names a task created with another title, priority, not_before or max_attempts; nothing was created"
            )),
            ApiError::TooManyAttempts { retry_after_secs } => {
                Some(format!("try again in {retry_after_secs} s"))
            }
            _ => None,
        }
    }

    /// The headers the contract gives this answer.
    fn headers(&self) -> Option<(header::HeaderName, String)> {
        match self {
            ApiError::TooManyAttempts { retry_after_secs } => {
                Some((header::RETRY_AFTER, retry_after_secs.to_string()))
            }
            ApiError::Unavailable(_) | ApiError::Overloaded(_) | ApiError::TooManyWaiters => {
                Some((header::RETRY_AFTER, "1".to_owned()))
            }
            ApiError::InvalidToken => Some((header::WWW_AUTHENTICATE, "Bearer".to_owned())),
            ApiError::MethodNotAllowed { allow } => Some((header::ALLOW, allow.clone())),
            _ => None,
        }
    }

    /// Server-side failures are logged (client errors are not): a shed
    /// login at debug, an unavailable database as a warning, anything else
    /// as an error with its causes.
    fn log(&self) {
        match self {
            ApiError::Overloaded(e) => tracing::debug!(error = %e, "shed load"),
            ApiError::Unavailable(e) => {
                tracing::warn!(error = %cause_chain(e), "database unavailable");
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %cause_chain(e.as_ref()), "request failed")
            }
            _ => {}
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unavailable(e) => write!(f, "{e}"),
            ApiError::Overloaded(e) => write!(f, "{e}"),
            ApiError::Internal(e) => write!(f, "{e}"),
            other => f.write_str(other.parts().1.as_str()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, title) = self.parts();
        self.log();
        let errors = match self {
            ApiError::Validation(errors) => Some(errors.as_slice()),
            _ => None,
        };
        let body = Problem {
            kind: format!("urn:tessera:problem:{}", code.as_str()),
            title,
            status: status.as_u16(),
            code,
            detail: self.detail(),
            errors: errors.map(|e| {
                e.iter()
                    .take(MAX_FIELD_ERRORS)
                    .map(FieldProblem::from)
                    .collect()
            }),
            truncated: errors.filter(|e| e.len() > MAX_FIELD_ERRORS).map(|_| true),
            request_id: crate::telemetry::current_request_id(),
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(header) = self.headers() {
            response.insert_header(header);
        }
        response.body(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// The full cause chain of an error, for the log only.
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ApiError, cause_chain};
    use actix_web::ResponseError as _;
    use actix_web::http::StatusCode;
    use auth_core::hashing::HashError;
    use auth_core::{SessionError, StoreError, Unavailable};
    use std::sync::{Arc, Mutex};

    /// What rendering `error` as a response logged, at every level.
    fn logged_by(error: &ApiError) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                match self.0.lock() {
                    Ok(mut held) => held.extend_from_slice(bytes),
                    Err(poisoned) => poisoned.into_inner().extend_from_slice(bytes),
                }
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let _ = error.error_response();
        });
        let bytes = match buffer.0.lock() {
            Ok(held) => held.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn an_internal_error_is_logged_as_an_error_with_its_causes() {
        let log = logged_by(&ApiError::from(SessionError::Hashing(HashError::Failed(
            "salt refused".into(),
        ))));
        assert!(log.contains("ERROR"), "{log}");
        assert!(log.contains("request failed"), "{log}");
        assert!(log.contains("salt refused"), "{log}");
    }

    #[test]
    fn an_unavailable_database_is_a_warning_and_shed_load_only_debug() {
        let log = logged_by(&ApiError::from(pool_timeout()));
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains("database unavailable"), "{log}");
        assert!(!log.contains("ERROR"), "{log}");
        let log = logged_by(&ApiError::from(SessionError::from(HashError::QueueFull)));
        assert!(log.contains("DEBUG") && log.contains("shed load"), "{log}");
        assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    }

    #[test]
    fn client_errors_log_nothing() {
        for error in [
            ApiError::from(SessionError::InvalidCredentials),
            ApiError::from(SessionError::InvalidToken),
            ApiError::from(SessionError::TooManyAttempts {
                retry_after_secs: 3,
            }),
            ApiError::NotFound,
            ApiError::UnsupportedMediaType,
        ] {
            assert_eq!(logged_by(&error), "", "{error:?} logged");
        }
    }

    #[test]
    fn the_cause_chain_names_every_cause_in_order() {
        let e = SessionError::Store(pool_timeout());
        assert_eq!(
            cause_chain(&e),
            "database unavailable (PoolTimeout): timed out waiting for a pooled connection"
        );
        assert_eq!(cause_chain(&SessionError::InvalidToken), "invalid token");
    }

    fn pool_timeout() -> StoreError {
        StoreError::Unavailable(
            Unavailable::PoolTimeout,
            "timed out waiting for a pooled connection".into(),
        )
    }

    #[test]
    fn every_domain_error_answers_its_contract_code() {
        use auth_core::QueueError;
        let cases: [(ApiError, &str); 10] = [
            (SessionError::Invalid(vec![]).into(), "validation_failed"),
            (SessionError::EmailTaken.into(), "email_taken"),
            (
                SessionError::InvalidCredentials.into(),
                "invalid_credentials",
            ),
            (SessionError::InvalidToken.into(), "invalid_token"),
            (SessionError::NotFound.into(), "not_found"),
            (QueueError::Invalid(vec![]).into(), "validation_failed"),
            (QueueError::NotFound.into(), "not_found"),
            (QueueError::NotAssignee.into(), "not_assignee"),
            (
                QueueError::Store(pool_timeout()).into(),
                "service_unavailable",
            ),
            (
                SessionError::Hashing(HashError::Failed("x".into())).into(),
                "internal_error",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.parts().1.as_str(), code, "{error:?}");
        }
    }

    #[test]
    fn the_status_and_the_message_match_the_problem() {
        let cases = [
            (ApiError::EmailTaken, StatusCode::CONFLICT),
            (ApiError::NotAssignee, StatusCode::CONFLICT),
            (
                ApiError::from(pool_timeout()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                ApiError::PayloadTooLarge { limit: 8 },
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                ApiError::Validation(vec![]),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.status_code(), status, "{error:?}");
            assert_eq!(error.error_response().status(), status, "{error:?}");
        }
        // Server-side errors say what they are; the others their stable code.
        assert_eq!(
            ApiError::from(pool_timeout()).to_string(),
            "database unavailable (PoolTimeout)"
        );
        assert_eq!(ApiError::EmailTaken.to_string(), "email_taken");
        assert_eq!(ApiError::NotFound.to_string(), "not_found");
        assert_eq!(
            ApiError::UnsupportedMediaType.to_string(),
            "unsupported_media_type"
        );
    }
}
