//! API keys: credentials for machines, made and listed by their owners
//! (and by admins, for any user).

use super::users::{optional_roles_schema, roles_schema};
use crate::error::{ApiError, Problem};
use crate::extract::{Authenticated, InSession, JsonBody, allow, path_id};
use crate::fields::{Fields, FromJson, Member};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use auth_core::api_keys::{KeyRequest, MAX_KEY_NAME_CHARS};
use auth_core::caller::Caller;
use auth_core::domain::{FieldError, Right, Roles};
use auth_core::store::api_keys::KeyRow;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/api-keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// What the key is for (1 to 100 characters): shown in listings.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100, example = "billing-worker")]
    #[serde(default)]
    name: Member<String>,
    /// Among what the caller's roles cover (more is `403`); left out, the
    /// caller's roles. A role the owner later loses is taken from the key
    /// for good.
    #[schema(schema_with = optional_roles_schema, required = false)]
    #[serde(default)]
    roles: Member<Roles>,
    /// When the key stops working; left out, only its revocation ends it.
    #[schema(value_type = Option<DateTime<Utc>>, required = false)]
    #[serde(default)]
    expires_at: Member<DateTime<Utc>>,
}

impl FromJson for CreateKeyRequest {
    type Checked = KeyRequest;
    fn check(self) -> Result<KeyRequest, Vec<FieldError>> {
        let mut f = Fields::top();
        let name = f.required("name", self.name);
        let roles = f.optional("roles", self.roles);
        let expires_at = f.optional("expires_at", self.expires_at);
        let request = f.finish(name.map(|name| KeyRequest {
            name,
            roles,
            expires_at,
        }))?;
        request.check().map(|()| request)
    }
}

/// A key as listed: never the key itself.
#[derive(Serialize, ToSchema)]
pub struct KeyResponse {
    id: Uuid,
    user_id: Uuid,
    name: String,
    /// What the key may do now: the roles it was made with, less any its
    /// owner lost since.
    #[schema(schema_with = roles_schema)]
    roles: Roles,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    /// Written at most once per touch interval (`TESSERA_TOUCH_INTERVAL_SECS`).
    last_used_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for KeyResponse {
    fn from(row: KeyRow) -> KeyResponse {
        KeyResponse {
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            roles: row.roles,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
        }
    }
}

/// A key just made, with the key itself, shown this once.
#[derive(Serialize, ToSchema)]
pub struct IssuedKeyResponse {
    id: Uuid,
    /// Send as `Authorization: Bearer <key>`. Shown only now: the service
    /// keeps only its SHA-256.
    #[schema(example = "tsk_6Xq0m0...")]
    key: String,
    name: String,
    #[schema(schema_with = roles_schema)]
    roles: Roles,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "Make an API key for the caller (a session, not a key)",
    description = "At most `TESSERA_API_KEYS_PER_USER` keys per user (default 100), expired ones included until revoked or purged; one more is `422`. The key's roles are among what the caller's roles cover (an admin may make a worker's key). A password change or reset, or a disable, revokes every key of the user.",
    security(("bearer" = [])),
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Made; the key is shown this once", body = IssuedKeyResponse),
        (status = 403, description = "`forbidden`: the caller is an API key (only a session makes keys), or asked for roles its own do not cover", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: a bad field, an `expires_at` not in the future, or the caller's user holds `TESSERA_API_KEYS_PER_USER` keys already (expired ones included)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    InSession(p): InSession,
    JsonBody(request): JsonBody<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let issued = state.sessions.create_key(&p, request).await?;
    let row = issued.row;
    Ok(HttpResponse::Created().json(IssuedKeyResponse {
        id: row.id,
        key: issued.key.expose(),
        name: row.name,
        roles: row.roles,
        created_at: row.created_at,
        expires_at: row.expires_at,
    }))
}

/// `GET /v1/api-keys` parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    /// Another user's keys (admin only); left out, the caller's.
    user_id: Option<Uuid>,
}

/// A user's live keys, oldest first.
#[derive(Serialize, ToSchema)]
pub struct KeyListResponse {
    api_keys: Vec<KeyResponse>,
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "List the caller's API keys, expired ones too (an admin: any user's)",
    security(("bearer" = [])),
    params(KeyListQuery),
    responses(
        (status = 200, description = "The keys, oldest first (at most the per-user cap of them)", body = KeyListResponse),
        (status = 403, description = "`forbidden`: `user_id` of another user, and the caller is no admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `user_id` is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<KeyListQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::Validation(vec![FieldError::new("user_id", "must be a UUID")]))?;
    let owner = query.user_id.unwrap_or(caller.user_id());
    if owner != caller.user_id() {
        allow(&caller, Right::Administer)?;
    }
    let keys = state.sessions.keys(owner).await?;
    Ok(HttpResponse::Ok().json(KeyListResponse {
        api_keys: keys.into_iter().map(KeyResponse::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    summary = "Revoke an API key of the caller's (an admin: any user's)",
    description = "No request that starts after this returned is served with the key, on any instance. A session revokes any key of its user; a key that is no admin's, only itself.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "`not_found`: no such key of the caller's (to a key that is no admin's: any key but itself)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    // A key that is no admin's revokes only itself: one leaked key must
    // not be able to cut its owner's other machines off.
    let own_key = match &caller {
        Caller::Key(k) => k.key_id == id,
        Caller::Session(_) => true,
    };
    let owner = match caller.roles().grant(Right::Administer) {
        true => None,
        false if own_key => Some(caller.user_id()),
        false => return Err(ApiError::NotFound),
    };
    state.sessions.revoke_key(id, owner).await?;
    Ok(HttpResponse::NoContent().finish())
}

// The longest name, as the schema above states it.
const _: () = assert!(MAX_KEY_NAME_CHARS == 100);
