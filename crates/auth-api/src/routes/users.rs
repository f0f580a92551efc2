use crate::error::ApiError;
use crate::error::Problem;
use crate::extract::JsonBody;
use crate::fields::{Fields, FromJson};
use crate::openapi::RegisterRequest;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use auth_core::domain::FieldError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `{"email", "password"}`: the shape shared by register and login.
pub struct Credentials {
    pub email: String,
    pub password: String,
}

impl FromJson for Credentials {
    fn from_json(value: &Value) -> Result<Self, Vec<FieldError>> {
        let mut f = Fields::of(value, "");
        let email = f.string("email");
        let password = f.string("password");
        let both = email.zip(password).map(|(e, p)| Credentials {
            email: e.to_owned(),
            password: p.to_owned(),
        });
        f.finish(both)
    }
}

/// A registered user.
#[derive(Serialize, ToSchema)]
pub struct UserBody {
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
        (status = 201, description = "Registered", body = UserBody),
        (status = 409, description = "`email_taken`: the email is registered", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let user = state.sessions.register(&body.email, &body.password).await?;
    Ok(HttpResponse::Created().json(UserBody {
        id: user.id,
        email: user.email,
    }))
}
