//! The one error type of the HTTP layer: each variant maps to a status and a
//! stable `code`, rendered as an RFC 9457 problem document.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use auth_core::domain::{FieldError, MAX_FIELD_ERRORS};
use serde::Serialize;
use std::fmt;
use utoipa::ToSchema;

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
    Core(auth_core::Error),
}

impl From<auth_core::Error> for ApiError {
    fn from(e: auth_core::Error) -> ApiError {
        match e {
            auth_core::Error::Invalid(errors) => ApiError::Validation(errors),
            auth_core::Error::NotFound => ApiError::NotFound,
            other => ApiError::Core(other),
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
    NotAssignee,
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
            ProblemCode::NotAssignee => "not_assignee",
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
        use auth_core::Error as E;
        match self {
            ApiError::MalformedRequest(_) => (
                StatusCode::BAD_REQUEST,
                ProblemCode::MalformedRequest,
                "Malformed request",
            ),
            ApiError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::PayloadTooLarge,
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ProblemCode::UnsupportedMediaType,
                "Unsupported media type",
            ),
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ProblemCode::ValidationFailed,
                "Validation failed",
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, ProblemCode::NotFound, "Not found"),
            ApiError::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                ProblemCode::MethodNotAllowed,
                "Method not allowed",
            ),
            ApiError::Core(e) => match e {
                E::Invalid(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ProblemCode::ValidationFailed,
                    "Validation failed",
                ),
                E::EmailTaken => (
                    StatusCode::CONFLICT,
                    ProblemCode::EmailTaken,
                    "Email already registered",
                ),
                E::InvalidCredentials => (
                    StatusCode::UNAUTHORIZED,
                    ProblemCode::InvalidCredentials,
                    "Invalid credentials",
                ),
                E::TooManyAttempts { .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    ProblemCode::TooManyAttempts,
                    "Too many failed login attempts",
                ),
                E::InvalidToken => (
                    StatusCode::UNAUTHORIZED,
                    ProblemCode::InvalidToken,
                    "Invalid token",
                ),
                E::NotFound => (StatusCode::NOT_FOUND, ProblemCode::NotFound, "Not found"),
                E::NotAssignee => (
                    StatusCode::CONFLICT,
                    ProblemCode::NotAssignee,
                    "Task is not assigned to you",
                ),
                E::Unavailable(_) | E::Overloaded(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ProblemCode::ServiceUnavailable,
                    "Service unavailable",
                ),
                E::Database(_) | E::Hashing(_) | E::Entropy(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ProblemCode::InternalError,
                    "Internal server error",
                ),
            },
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
            ApiError::Core(auth_core::Error::TooManyAttempts { retry_after_secs }) => {
                Some(format!("try again in {retry_after_secs} s"))
            }
            _ => None,
        }
    }

    fn field_errors(&self) -> Option<&[FieldError]> {
        match self {
            ApiError::Validation(errors) | ApiError::Core(auth_core::Error::Invalid(errors)) => {
                Some(errors)
            }
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Core(e) => write!(f, "{e}"),
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
        match self {
            ApiError::Core(e) if status.is_server_error() => {
                if matches!(e, auth_core::Error::Overloaded(_)) {
                    tracing::debug!(error = %e, "shed load");
                } else if status == StatusCode::SERVICE_UNAVAILABLE {
                    tracing::warn!(error = %e, "database unavailable");
                } else {
                    tracing::error!(error = ?anyhow_chain(e), "request failed");
                }
            }
            _ => {}
        }
        let errors = self.field_errors();
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
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        match self {
            ApiError::Core(auth_core::Error::TooManyAttempts { retry_after_secs }) => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::Core(auth_core::Error::Unavailable(_) | auth_core::Error::Overloaded(_)) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::Core(auth_core::Error::InvalidToken) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, allow.as_str()));
            }
            _ => {}
        }
        response.body(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// The full cause chain of an error, for the log only.
fn anyhow_chain(e: &auth_core::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ApiError, anyhow_chain};
    use actix_web::ResponseError as _;
    use actix_web::http::StatusCode;
    use auth_core::Error as E;
    use auth_core::hashing::HashError;
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
        let log = logged_by(&ApiError::Core(E::Hashing(HashError::Failed(
            "salt refused".into(),
        ))));
        assert!(log.contains("ERROR"), "{log}");
        assert!(log.contains("request failed"), "{log}");
        assert!(log.contains("salt refused"), "{log}");
    }

    #[test]
    fn an_unavailable_database_is_a_warning_and_shed_load_only_debug() {
        let log = logged_by(&ApiError::Core(E::Unavailable("pool timed out".into())));
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains("database unavailable"), "{log}");
        assert!(!log.contains("ERROR"), "{log}");
        let log = logged_by(&ApiError::Core(E::Overloaded(HashError::QueueFull)));
        assert!(log.contains("DEBUG") && log.contains("shed load"), "{log}");
        assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    }

    #[test]
    fn client_errors_log_nothing() {
        for error in [
            ApiError::Core(E::InvalidCredentials),
            ApiError::Core(E::InvalidToken),
            ApiError::Core(E::TooManyAttempts {
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
        let e = E::Overloaded(HashError::DeadlineExceeded);
        let deadline = HashError::DeadlineExceeded.to_string();
        assert_eq!(
            anyhow_chain(&e),
            format!("overloaded: {deadline}: {deadline}")
        );
        assert_eq!(anyhow_chain(&E::InvalidToken), "invalid token");
    }

    #[test]
    fn the_status_and_the_message_match_the_problem() {
        let cases = [
            (ApiError::Core(E::EmailTaken), StatusCode::CONFLICT),
            (ApiError::Core(E::NotAssignee), StatusCode::CONFLICT),
            (
                ApiError::Core(E::Unavailable("down".into())),
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
        // Core errors say what they are; the others their stable code.
        assert_eq!(
            ApiError::Core(E::EmailTaken).to_string(),
            "email already registered"
        );
        assert_eq!(ApiError::NotFound.to_string(), "not_found");
        assert_eq!(
            ApiError::UnsupportedMediaType.to_string(),
            "unsupported_media_type"
        );
    }
}
