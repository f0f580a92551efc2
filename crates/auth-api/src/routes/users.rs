//! Users: registration, the caller's own account, and what admins manage.

use crate::config::Registration;
use crate::error::ApiError;
use crate::error::Problem;
use crate::extract::{Authenticated, InSession, JsonBody, path_id};
use crate::fields::{Fields, FromJson, Member};
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use auth_core::accounts::{MAX_LISTED_USERS, UserChange};
use auth_core::domain::{FieldError, Right, Role, Roles};
use auth_core::store::users::Account;
use chrono::{DateTime, Utc};
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
    /// Only an admin may give roles; without them the user gets the
    /// configured default roles (`TESSERA_DEFAULT_ROLES`).
    #[schema(schema_with = optional_roles_schema, required = false)]
    #[serde(default)]
    pub roles: Member<Roles>,
}

/// The schema of a set of roles: an array of the role words, written from
/// `Role::ALL`.
pub(super) fn roles_schema() -> utoipa::openapi::schema::Array {
    roles_array().build()
}

/// [`roles_schema`] where the member may be left out or `null` (the
/// default then applies).
pub(super) fn optional_roles_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::{Type, schema::SchemaType};
    roles_array()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .build()
}

fn roles_array() -> utoipa::openapi::schema::ArrayBuilder {
    let words: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
    let role = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(words));
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(role)
        .description(Some(
            "Roles: `worker` (claims and works its own tasks), `assigner` (also creates, cancels, assigns and reads every task), `admin` (everything, users too)",
        ))
}

/// A registration as read: the credentials, and the roles if given.
pub struct NewUser {
    credentials: Credentials,
    roles: Option<Roles>,
}

impl FromJson for RegisterRequest {
    type Checked = NewUser;
    fn check(self) -> Result<NewUser, Vec<FieldError>> {
        let mut f = Fields::top();
        let roles = f.optional("roles", self.roles);
        let credentials = Credentials::check(self.email, self.password);
        match (credentials, f.finish(Some(roles))) {
            (Ok(credentials), Ok(roles)) => Ok(NewUser { credentials, roles }),
            (Err(mut errors), other) => {
                errors.extend(other.err().unwrap_or_default());
                Err(errors)
            }
            (Ok(_), Err(errors)) => Err(errors),
        }
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

/// A user.
#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    id: uuid::Uuid,
    /// As stored: trimmed and lower-cased.
    email: String,
    #[schema(schema_with = roles_schema)]
    roles: Roles,
    created_at: DateTime<Utc>,
    /// A disabled user has no session and cannot log in.
    disabled: bool,
}

impl From<Account> for UserResponse {
    fn from(a: Account) -> UserResponse {
        UserResponse {
            id: a.id,
            email: a.email,
            roles: a.roles,
            created_at: a.created_at,
            disabled: a.disabled,
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    summary = "Register (or, as an admin, create a user)",
    description = "Without a token: self-registration, while `TESSERA_REGISTRATION` is `open`, with the default roles. With an admin's token: a user with the `roles` given.",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = UserResponse),
        (status = 401, description = "`invalid_token`: a token was sent and is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: registration is closed, or `roles` were given, and the caller is no admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`email_taken`: the email is registered", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    state: web::Data<AppState>,
    caller: Option<Authenticated>,
    JsonBody(body): JsonBody<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    // Only an admin's token lifts the limits (a bad token was refused).
    let by_admin = caller.is_some_and(|Authenticated(c)| c.roles().grant(Right::Administer));
    if !by_admin && (state.registration == Registration::Closed || body.roles.is_some()) {
        return Err(ApiError::Forbidden(Right::Administer));
    }
    let roles = body.roles.unwrap_or(state.default_roles);
    let Credentials { email, password } = body.credentials;
    let user = state.sessions.register(&email, &password, roles).await?;
    Ok(HttpResponse::Created().json(UserResponse::from(user)))
}

#[utoipa::path(
    get,
    path = "/v1/users/me",
    tag = "users",
    summary = "The caller's own account",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = UserResponse))
)]
pub async fn me(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let user = state.sessions.account(p.user_id()).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(user)))
}

/// `GET /v1/users` parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// Users whose email sorts after this one (the last email of the page before).
    after: Option<String>,
    /// At most this many users (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// A page of users, by email.
#[derive(Serialize, ToSchema)]
pub struct UserListResponse {
    users: Vec<UserResponse>,
}

#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    summary = "List users by email (admin)",
    security(("bearer" = [])),
    params(UserListQuery),
    responses(
        (status = 200, description = "A page of users", body = UserListResponse),
        (status = 422, description = "`validation_failed`: a bad query value", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<UserListQuery>::from_query(req.query_string()).map_err(|_| {
        ApiError::Validation(vec![FieldError::new(
            "query",
            "limit must be an integer from 1 to 1000",
        )])
    })?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LISTED_USERS).contains(&limit) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "limit",
            "must be from 1 to 1000",
        )]));
    }
    let users = state
        .sessions
        .accounts(query.after.as_deref(), limit)
        .await?;
    Ok(HttpResponse::Ok().json(UserListResponse {
        users: users.into_iter().map(UserResponse::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    summary = "Read a user (admin)",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 404, description = "`not_found`: no such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn read(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user = state.sessions.account(path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(user)))
}

/// `PATCH /v1/users/{id}`: what to change; a member left out stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeUserRequest {
    /// The user's roles from now on (every request that starts after this
    /// call returned is judged by them, on every instance).
    #[schema(schema_with = optional_roles_schema, required = false)]
    #[serde(default)]
    roles: Member<Roles>,
    /// `true` disables the user and revokes all its sessions and API keys in the same
    /// transaction; `false` enables it again.
    #[schema(value_type = Option<bool>)]
    #[serde(default)]
    disabled: Member<bool>,
}

impl FromJson for ChangeUserRequest {
    type Checked = UserChange;
    fn check(self) -> Result<UserChange, Vec<FieldError>> {
        let mut f = Fields::top();
        let roles = f.optional("roles", self.roles);
        let disabled = f.optional("disabled", self.disabled);
        f.finish(Some(UserChange { roles, disabled }))
    }
}

#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    tag = "users",
    summary = "Change a user's roles, or disable it (admin)",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body = ChangeUserRequest,
    responses(
        (status = 200, description = "The user as it now is", body = UserResponse),
        (status = 404, description = "`not_found`: no such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn change(
    state: web::Data<AppState>,
    id: web::Path<String>,
    JsonBody(change): JsonBody<ChangeUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = state.sessions.change_user(path_id(&id)?, change).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(user)))
}

/// `PUT /v1/users/me/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The password now; checked as a login's is (a wrong one counts as a
    /// failed login for the limit).
    #[schema(value_type = String, required = true)]
    #[serde(default)]
    current_password: Member<String>,
    /// 8 to 128 characters (Unicode scalar values).
    #[schema(value_type = String, required = true, min_length = 8, max_length = 128)]
    #[serde(default)]
    new_password: Member<String>,
}

/// Both passwords, as read.
pub struct PasswordChange {
    current: String,
    new: String,
}

impl FromJson for ChangePasswordRequest {
    type Checked = PasswordChange;
    fn check(self) -> Result<PasswordChange, Vec<FieldError>> {
        let mut f = Fields::top();
        let current = f.required("current_password", self.current_password);
        let new = f.required("new_password", self.new_password);
        f.finish(current.zip(new))
            .map(|(current, new)| PasswordChange { current, new })
    }
}

#[utoipa::path(
    put,
    path = "/v1/users/me/password",
    tag = "users",
    summary = "Change the caller's password",
    description = "Every other session of the caller is revoked in the same transaction (the calling one lives), also one a refresh rotated meanwhile; a login that verified the old password opens nothing after it.",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed; the other sessions revoked"),
        (status = 401, description = "`invalid_credentials`: the current password is wrong (counted as a failed login); `invalid_token`: no valid session", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: the email's failed logins reached the limit", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds before trying again"))),
    )
)]
pub async fn change_password(
    state: web::Data<AppState>,
    InSession(p): InSession,
    JsonBody(change): JsonBody<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    state
        .sessions
        .change_password(&p, &change.current, &change.new)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A reset token, shown this once.
#[derive(Serialize, ToSchema)]
pub struct PasswordResetResponse {
    /// Opaque, single use; give it to the user by a channel you trust.
    reset_token: String,
    expires_at: DateTime<Utc>,
}

#[utoipa::path(
    post,
    path = "/v1/users/{id}/password-reset",
    tag = "users",
    summary = "Issue a single-use password reset token for a user (admin)",
    description = "Replaces any reset token the user had. Stored only as its hash.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 201, description = "Issued", body = PasswordResetResponse),
        (status = 404, description = "`not_found`: no such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn issue_reset(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let issued = state.sessions.issue_reset(path_id(&id)?).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(PasswordResetResponse {
            reset_token: issued.token.expose(),
            expires_at: issued.expires_at,
        }))
}

/// `POST /v1/password-resets`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// The token an admin issued.
    #[schema(value_type = String, required = true)]
    #[serde(default)]
    reset_token: Member<String>,
    /// 8 to 128 characters (Unicode scalar values).
    #[schema(value_type = String, required = true, min_length = 8, max_length = 128)]
    #[serde(default)]
    new_password: Member<String>,
}

/// A reset as read.
pub struct PasswordReset {
    token: String,
    new: String,
}

impl FromJson for ResetPasswordRequest {
    type Checked = PasswordReset;
    fn check(self) -> Result<PasswordReset, Vec<FieldError>> {
        let mut f = Fields::top();
        let token = f.required("reset_token", self.reset_token);
        let new = f.required("new_password", self.new_password);
        f.finish(token.zip(new))
            .map(|(token, new)| PasswordReset { token, new })
    }
}

#[utoipa::path(
    post,
    path = "/v1/password-resets",
    tag = "users",
    summary = "Set a new password with a reset token",
    description = "Takes no bearer token: the reset token is the credential, good once. Every session of the user is revoked in the same transaction. Of concurrent uses of one token exactly one succeeds.",
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "The password is set; every session of the user revoked"),
        (status = 401, description = "`invalid_token`: the reset token is used, expired or unknown", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reset_password(
    state: web::Data<AppState>,
    JsonBody(reset): JsonBody<ResetPasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    state
        .sessions
        .reset_password(&reset.token, &reset.new)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
