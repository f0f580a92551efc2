//! The one error type of the HTTP layer: each variant maps to a status and a
//! stable `code`, rendered as an RFC 9457 problem document.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use auth_core::domain::FieldError;
use serde::Serialize;
use std::fmt;

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
    MethodNotAllowed,
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

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    /// (status, code, title): the contract's table.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use auth_core::Error as E;
        match self {
            ApiError::MalformedRequest(_) => (
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "Malformed request",
            ),
            ApiError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Validation failed",
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            ApiError::Core(e) => match e {
                E::Invalid(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "Validation failed",
                ),
                E::EmailTaken => (
                    StatusCode::CONFLICT,
                    "email_taken",
                    "Email already registered",
                ),
                E::InvalidCredentials => (
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    "Invalid credentials",
                ),
                E::TooManyAttempts { .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    "Too many failed login attempts",
                ),
                E::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token", "Invalid token"),
                E::NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found"),
                E::NotAssignee => (
                    StatusCode::CONFLICT,
                    "not_assignee",
                    "Task is not assigned to you",
                ),
                E::Unavailable(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    "Service unavailable",
                ),
                E::Database(_) | E::Hashing(_) | E::Entropy(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
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
            other => f.write_str(other.parts().1),
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
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    tracing::warn!(error = %e, "database unavailable");
                } else {
                    tracing::error!(error = ?anyhow_chain(e), "request failed");
                }
            }
            _ => {}
        }
        let body = Problem {
            kind: format!("urn:tessera:problem:{code}"),
            title,
            status: status.as_u16(),
            code,
            detail: self.detail(),
            errors: self.field_errors(),
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
            ApiError::Core(auth_core::Error::Unavailable(_)) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::Core(auth_core::Error::InvalidToken) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
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
