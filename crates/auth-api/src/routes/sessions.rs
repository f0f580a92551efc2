//! `/v1/sessions`: log in, validate, log out, rotate, list, revoke.

use crate::error::ApiError;
use crate::error::Problem;
use crate::extract::{BearerToken, InSession, JsonBody, path_id};
use crate::fields::{FromJson, Member};
use crate::routes::users::Credentials;
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use auth_core::auth::IssuedSession;
use auth_core::domain::FieldError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/sessions`. Any strings are accepted: a value that could never
/// be valid is `401 invalid_credentials`, like a wrong one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(value_type = String, required = true, example = "ada@example.com")]
    #[serde(default)]
    pub email: Member<String>,
    #[schema(value_type = String, required = true, example = "correct horse battery")]
    #[serde(default)]
    pub password: Member<String>,
}

impl FromJson for LoginRequest {
    type Checked = Credentials;
    fn check(self) -> Result<Credentials, Vec<FieldError>> {
        Credentials::check(self.email, self.password)
    }
}

/// A new session and its token; the token is shown only here.
#[derive(Serialize, ToSchema)]
pub struct IssuedSessionResponse {
    /// Opaque, URL-safe; 256 bits from the OS CSPRNG.
    token: String,
    session_id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
}

impl From<IssuedSession> for IssuedSessionResponse {
    fn from(s: IssuedSession) -> IssuedSessionResponse {
        IssuedSessionResponse {
            token: s.token.expose(),
            session_id: s.session_id,
            user_id: s.user_id,
            expires_at: s.expires_at,
        }
    }
}

/// The session a token belongs to.
#[derive(Serialize, ToSchema)]
pub struct CurrentSessionResponse {
    session_id: Uuid,
    user_id: Uuid,
    created_at: DateTime<Utc>,
    /// The idle or the absolute expiry, whichever comes first.
    expires_at: DateTime<Utc>,
}

/// One of the caller's active sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    session_id: Uuid,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    /// Whether this is the session of the calling token.
    current: bool,
    /// The login's `User-Agent` (its first 256 characters), if it sent one.
    user_agent: Option<String>,
    /// The login's IP: the peer's, or, when the peer is a trusted proxy,
    /// the right-most `X-Forwarded-For` address that is not one.
    ip: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionListResponse {
    sessions: Vec<SessionResponse>,
}

#[derive(Serialize, ToSchema)]
pub struct RevokedResponse {
    /// Sessions this call revoked.
    revoked: usize,
}

/// Session responses carry a secret: never cache them.
fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header(("Cache-Control", "no-store"));
    builder
}

#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "sessions",
    summary = "Log in",
    request_body = LoginRequest,
    responses(
        (status = 201, description = "Logged in", body = IssuedSessionResponse),
        (status = 401, description = "`invalid_credentials`: unknown email or wrong password (indistinguishable)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: too many failed logins for this email", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until a login may be tried again"))),
    )
)]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = state.trusted_proxies.client_of(&req);
    let issued = state
        .sessions
        .login(&body.email, &body.password, &client)
        .await?;
    Ok(no_store(HttpResponse::Created()).json(IssuedSessionResponse::from(issued)))
}

#[utoipa::path(
    get,
    path = "/v1/sessions/current",
    tag = "sessions",
    summary = "Validate the token",
    security(("bearer" = [])),
    responses((status = 200, description = "The token is valid", body = CurrentSessionResponse))
)]
pub async fn current(InSession(p): InSession) -> HttpResponse {
    HttpResponse::Ok().json(CurrentSessionResponse {
        session_id: p.session_id,
        user_id: p.user_id,
        created_at: p.created_at,
        expires_at: p.expires_at,
    })
}

#[utoipa::path(
    delete,
    path = "/v1/sessions/current",
    tag = "sessions",
    summary = "Log out",
    security(("bearer" = [])),
    responses((status = 204, description = "Logged out; the token is invalid from now on"))
)]
pub async fn logout(
    state: web::Data<AppState>,
    InSession(p): InSession,
) -> Result<HttpResponse, ApiError> {
    state.sessions.logout(&p).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotation authenticates by the swap itself: one statement, one winner.
#[utoipa::path(
    post,
    path = "/v1/sessions/current/refresh",
    tag = "sessions",
    summary = "Rotate the token",
    description = "Same session id and absolute expiry; the old token is invalid from now on. Of concurrent refreshes with one token exactly one succeeds.",
    security(("bearer" = [])),
    responses((status = 201, description = "A new token for the same session", body = IssuedSessionResponse))
)]
pub async fn refresh(
    state: web::Data<AppState>,
    BearerToken(token): BearerToken,
) -> Result<HttpResponse, ApiError> {
    let issued = state.sessions.refresh(&token).await?;
    Ok(no_store(HttpResponse::Created()).json(IssuedSessionResponse::from(issued)))
}

#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    summary = "List the caller's active sessions",
    security(("bearer" = [])),
    responses((status = 200, description = "Active sessions", body = SessionListResponse))
)]
pub async fn list(
    state: web::Data<AppState>,
    InSession(p): InSession,
) -> Result<HttpResponse, ApiError> {
    let sessions: Vec<SessionResponse> = state
        .sessions
        .list(&p)
        .await?
        .into_iter()
        .map(|s| SessionResponse {
            session_id: s.session_id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            current: s.current,
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    Ok(HttpResponse::Ok().json(SessionListResponse { sessions }))
}

#[utoipa::path(
    delete,
    path = "/v1/sessions/{session_id}",
    tag = "sessions",
    summary = "Revoke one of the caller's sessions",
    security(("bearer" = [])),
    params(("session_id" = String, Path, description = "A session id (UUID)")),
    responses((status = 204, description = "Revoked"))
)]
pub async fn revoke(
    state: web::Data<AppState>,
    InSession(p): InSession,
    session_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session_id = path_id(&session_id)?;
    state.sessions.revoke(&p, session_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    delete,
    path = "/v1/sessions",
    tag = "sessions",
    summary = "Log out everywhere",
    security(("bearer" = [])),
    responses((status = 200, description = "How many sessions this call revoked", body = RevokedResponse))
)]
pub async fn revoke_all(
    state: web::Data<AppState>,
    InSession(p): InSession,
) -> Result<HttpResponse, ApiError> {
    let revoked = state.sessions.revoke_all(&p).await?;
    Ok(HttpResponse::Ok().json(RevokedResponse { revoked }))
}
