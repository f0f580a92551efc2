use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::fields::{Fields, FromJson};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use auth_core::domain::FieldError;
use serde::Serialize;
use serde_json::Value;

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

#[derive(Serialize)]
struct UserBody {
    id: uuid::Uuid,
    email: String,
}

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
