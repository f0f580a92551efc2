//! `POST /v1/users`.

use crate::error::ApiError;
use crate::error::Problem;
use crate::extract::JsonBody;
use crate::fields::{Fields, FromJson};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use auth_core::domain::FieldError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/users`.
// Read as two strings; `Email` and `Password` apply the rules below and
// answer `422` per field.
#[derive(ToSchema)]
pub struct RegisterRequest {
    /// Stored trimmed and lower-cased; at most 254 characters. The pattern is
    /// what the service accepts: one `@`, 1-64 characters before it,
    /// dot-separated non-empty labels after it, no spaces or control characters.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)*$",
        example = "ada@example.com"
    )]
    pub email: String,
    /// 8 to 128 characters (Unicode scalar values).
    #[schema(min_length = 8, max_length = 128, example = "correct horse battery")]
    pub password: String,
}

impl FromJson for RegisterRequest {
    fn from_json(value: &Value) -> Result<Self, Vec<FieldError>> {
        credentials(value).map(|(email, password)| RegisterRequest { email, password })
    }
}

/// `{"email", "password"}` as two strings: the shape of register and login.
pub(super) fn credentials(value: &Value) -> Result<(String, String), Vec<FieldError>> {
    let mut f = Fields::of(value, "");
    let email = f.string("email").map(str::to_owned);
    let password = f.string("password").map(str::to_owned);
    f.finish(email.zip(password))
}

/// A registered user.
#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    id: uuid::Uuid,
    /// As stored: trimmed and lower-cased.
    email: String,
}

#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    summary = "Register",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = UserResponse),
        (status = 409, description = "`email_taken`: the email is registered", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = state.sessions.register(&body.email, &body.password).await?;
    Ok(HttpResponse::Created().json(UserResponse {
        id: user.id,
        email: user.email,
    }))
}
