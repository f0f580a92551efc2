use super::users::Credentials;
use crate::error::ApiError;
use crate::extract::{Authenticated, BearerToken, JsonBody, path_id};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use auth_core::auth::IssuedSession;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Serialize)]
struct IssuedBody {
    token: String,
    session_id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
}

impl From<IssuedSession> for IssuedBody {
    fn from(s: IssuedSession) -> IssuedBody {
        IssuedBody {
            token: s.token.expose(),
            session_id: s.session_id,
            user_id: s.user_id,
            expires_at: s.expires_at,
        }
    }
}

#[derive(Serialize)]
struct CurrentBody {
    session_id: Uuid,
    user_id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct SessionItem {
    session_id: Uuid,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    current: bool,
}

/// Session responses carry a secret: never cache them.
fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header(("Cache-Control", "no-store"));
    builder
}

pub async fn login(
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let issued = state.sessions.login(&body.email, &body.password).await?;
    Ok(no_store(HttpResponse::Created()).json(IssuedBody::from(issued)))
}

pub async fn current(Authenticated(p): Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(CurrentBody {
        session_id: p.session_id,
        user_id: p.user_id,
        created_at: p.created_at,
        expires_at: p.expires_at,
    })
}

pub async fn logout(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
) -> Result<HttpResponse, ApiError> {
    state.sessions.logout(&p).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotation authenticates by the swap itself: one statement, one winner.
pub async fn refresh(
    state: web::Data<AppState>,
    BearerToken(token): BearerToken,
) -> Result<HttpResponse, ApiError> {
    let issued = state.sessions.refresh(&token).await?;
    Ok(no_store(HttpResponse::Created()).json(IssuedBody::from(issued)))
}

pub async fn list(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let sessions: Vec<SessionItem> = state
        .sessions
        .list(&p)
        .await?
        .into_iter()
        .map(|s| SessionItem {
            session_id: s.session_id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            current: s.current,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sessions": sessions })))
}

pub async fn revoke(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    session_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session_id = path_id(&session_id)?;
    state.sessions.revoke(&p, session_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn revoke_all(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let revoked = state.sessions.revoke_all(&p).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "revoked": revoked })))
}
