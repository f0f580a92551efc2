//! The contract's routes. Handlers only translate: JSON in, a service call,
//! JSON out; no SQL and no rules here.

pub(crate) mod health;
pub mod sessions;
pub mod tasks;
pub(crate) mod users;

use crate::error::ApiError;
use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, Resource, Route, web};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// A valid bearer token, checked before anything else of the request is
    /// read (see [`crate::extract::require_session`]).
    Session,
    /// A bearer token the handler checks itself, in the statement that uses
    /// it (refresh: the swap is the check). Such a route reads no body.
    Token,
}

/// Declares the served routes once: `configure` registers them with actix
/// and `SERVED` lists them, so the OpenAPI coverage test compares the
/// document with what is really routed, not with a hand-kept copy. A
/// `[Session]` route is wrapped in the session check, so its body is never
/// read for a caller without a valid token.
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
    "/v1/users" => { post [Public] users::register }
    "/v1/sessions" => {
        post [Public] sessions::login,
        get [Session] sessions::list,
        delete [Session] sessions::revoke_all,
    }
    "/v1/sessions/current" => { get [Session] sessions::current, delete [Session] sessions::logout }
    "/v1/sessions/current/refresh" => { post [Token] sessions::refresh }
    "/v1/sessions/{session_id}" => { delete [Session] sessions::revoke }
    "/v1/tasks" => { post [Session] tasks::create, get [Session] tasks::list }
    "/v1/tasks/claim" => { post [Session] tasks::claim }
    "/v1/tasks/stats" => { get [Session] tasks::stats }
    "/v1/tasks/{id}/complete" => { post [Session] tasks::complete }
    "/v1/tasks/{id}/release" => { post [Session] tasks::release }
    "/v1/tasks/{id}/heartbeat" => { post [Session] tasks::heartbeat }
    "/v1/tasks/{id}/fail" => { post [Session] tasks::fail }
    "/v1/tasks/{id}/cancel" => { post [Session] tasks::cancel }
}

/// A route as its access demands: session routes behind the session check.
fn gate(access: Access, route: Route) -> Route {
    match access {
        Access::Public | Access::Token => route,
        Access::Session => route.wrap(from_fn(crate::extract::require_session)),
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
