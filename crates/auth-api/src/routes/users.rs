//! `POST /v1/users`.

use crate::error::ApiError;
use crate::error::Problem;
use crate::extract::JsonBody;
use crate::fields::{Fields, FromJson, Member};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use auth_core::domain::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/users`.
// Read as two strings; `Email` and `Password` apply the rules below and
// answer `422` per field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Stored trimmed and lower-cased; at most 254 characters. The pattern is
    /// what the service accepts: one `@`, 1-64 characters before it,
    /// dot-separated non-empty labels after it, no spaces or control characters.
    #[schema(
        value_type = String,
        required = true,
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)*$",
        example = "ada@example.com"
    )]
    #[serde(default)]
    pub email: Member<String>,
    /// 8 to 128 characters (Unicode scalar values).
    #[schema(
        value_type = String,
        required = true,
        min_length = 8,
        max_length = 128,
        example = "correct horse battery"
    )]
    #[serde(default)]
    pub password: Member<String>,
}

impl FromJson for RegisterRequest {
    type Checked = Credentials;
    fn check(self) -> Result<Credentials, Vec<FieldError>> {
        Credentials::check(self.email, self.password)
    }
}

/// `{"email", "password"}` as two strings: what register and login read.
pub struct Credentials {
    pub email: String,
    pub password: String,
}

impl Credentials {
    pub(super) fn check(
        email: Member<String>,
        password: Member<String>,
    ) -> Result<Credentials, Vec<FieldError>> {
        let mut f = Fields::top();
        let email = f.required("email", email);
        let password = f.required("password", password);
        f.finish(email.zip(password))
            .map(|(email, password)| Credentials { email, password })
    }
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
