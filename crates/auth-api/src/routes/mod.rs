//! The contract's routes. Handlers only translate: JSON in, a service call,
//! JSON out; no SQL and no rules here.

pub(crate) mod api_keys;
pub(crate) mod health;
pub mod sessions;
pub mod tasks;
pub(crate) mod users;

use crate::error::ApiError;
use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, Resource, Route, web};
use auth_core::domain::Right;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Registration: a token, when sent, must be valid (an admin's lifts
    /// the limits on registering); without one, a closed registration is
    /// refused. Both before the body is read
    /// (see [`crate::extract::require_registrar`]).
    Registration,
    /// A valid session token, checked before anything else of the request
    /// is read (see [`crate::extract::require_credential`]): the routes of
    /// the session itself, which an API key, having none, gets `401` from.
    Session,
    /// A valid session token, checked likewise: what only a person may do
    /// (make an API key, change the password); a valid API key gets `403`.
    Personal,
    /// A valid credential, a session's token or an API key, checked likewise.
    Credential,
    /// A valid credential whose roles grant [`Right::Work`], checked
    /// likewise (`403` otherwise).
    Work,
    /// ... granting [`Right::Assign`].
    Assign,
    /// ... granting [`Right::Administer`].
    Administer,
    /// A bearer token the handler checks itself, in the statement that uses
    /// it (refresh: the swap is the check). Such a route reads no body.
    Token,
}

/// Declares the served routes once: `configure` registers them with actix
/// and `SERVED` lists them, so the OpenAPI coverage test compares the
/// document with what is really routed, not with a hand-kept copy. A
/// `[Session]`, `[Personal]` or `[Credential]` route is wrapped in the
/// credential check, so its body is never read for a caller without a
/// valid token (or with a key where only a session may call); a `[Work]`,
/// `[Assign]` or `[Administer]` route also needs a role granting that right: this table
/// is where who may do what is read (the two routes whose right depends on
/// what they are asked, `GET /v1/tasks` and the claim, ask for
/// [`Right::Assign`] in their handler when they act for someone else).
macro_rules! contract_routes {
    ($($path:literal => { $($method:ident [$access:ident] $handler:path),+ $(,)? })+) => {
        /// Every route of the contract, each answering 405 for other methods.
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(cfg.service(resource($path)$(.route(gate(Access::$access, web::$method().to($handler))))+);)+
        }

        /// `(method, path)` of every served route, paths in OpenAPI's template syntax.
        pub const SERVED: &[(&str, &str)] = &[$($((stringify!($method), $path),)+)+];

        /// Who may call each served route.
        pub const ACCESS: &[(&str, &str, Access)] =
            &[$($((stringify!($method), $path, Access::$access),)+)+];
    };
}

contract_routes! {
    "/healthz" => { get [Public] health::healthz }
    "/readyz" => { get [Public] health::readyz }
    "/metrics" => { get [Public] health::metrics }
    "/openapi.json" => { get [Public] health::document }
    "/v1/users" => { post [Registration] users::register, get [Administer] users::list }
    "/v1/users/me" => { get [Credential] users::me }
    "/v1/users/me/password" => { put [Personal] users::change_password }
    "/v1/users/{id}" => { get [Administer] users::read, patch [Administer] users::change }
    "/v1/users/{id}/password-reset" => { post [Administer] users::issue_reset }
    "/v1/password-resets" => { post [Public] users::reset_password }
    "/v1/api-keys" => { post [Personal] api_keys::create, get [Credential] api_keys::list }
    "/v1/api-keys/{id}" => { delete [Credential] api_keys::revoke }
    "/v1/sessions" => {
        post [Public] sessions::login,
        get [Session] sessions::list,
        delete [Session] sessions::revoke_all,
    }
    "/v1/sessions/current" => { get [Session] sessions::current, delete [Session] sessions::logout }
    "/v1/sessions/current/refresh" => { post [Token] sessions::refresh }
    "/v1/sessions/{session_id}" => { delete [Session] sessions::revoke }
    "/v1/tasks" => { post [Assign] tasks::create, get [Work] tasks::list }
    "/v1/tasks/claim" => { post [Work] tasks::claim }
    "/v1/tasks/stats" => { get [Assign] tasks::stats }
    "/v1/tasks/{id}" => { get [Work] tasks::read }
    "/v1/tasks/{id}/complete" => { post [Work] tasks::complete }
    "/v1/tasks/{id}/release" => { post [Work] tasks::release }
    "/v1/tasks/{id}/heartbeat" => { post [Work] tasks::heartbeat }
    "/v1/tasks/{id}/fail" => { post [Work] tasks::fail }
    "/v1/tasks/{id}/cancel" => { post [Assign] tasks::cancel }
}

impl Access {
    /// The right a route needs beyond a valid session, if any.
    pub fn right(self) -> Option<Right> {
        match self {
            Access::Public
            | Access::Registration
            | Access::Token
            | Access::Session
            | Access::Personal
            | Access::Credential => None,
            Access::Work => Some(Right::Work),
            Access::Assign => Some(Right::Assign),
            Access::Administer => Some(Right::Administer),
        }
    }

    /// Whether every call needs a valid token.
    pub fn authenticated(self) -> bool {
        !matches!(self, Access::Public | Access::Registration)
    }
}

/// A route as its access demands: the authenticated ones behind the
/// session check, which also checks the right the route needs.
fn gate(access: Access, route: Route) -> Route {
    match access {
        Access::Public | Access::Token => route,
        Access::Registration => route.wrap(from_fn(crate::extract::require_registrar)),
        Access::Session
        | Access::Personal
        | Access::Credential
        | Access::Work
        | Access::Assign
        | Access::Administer => route.wrap(from_fn(move |req, next| {
            crate::extract::require_credential(access, req, next)
        })),
    }
}

/// A path whose other methods answer 405 with the `Allow` header RFC 9110 asks for.
fn resource(path: &'static str) -> Resource {
    let allow: Vec<String> = SERVED
        .iter()
        .filter(|(_, p)| *p == path)
        .map(|(method, _)| method.to_ascii_uppercase())
        .collect();
    let allow = allow.join(", ");
    web::resource(path).default_service(web::to(move || {
        let allow = allow.clone();
        async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) }
    }))
}

/// Any path the contract does not have.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
