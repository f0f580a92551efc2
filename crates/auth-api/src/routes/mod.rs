//! The contract's routes. Handlers only translate: JSON in, a service call,
//! JSON out; no SQL and no rules here.

pub(crate) mod health;
pub(crate) mod sessions;
pub(crate) mod tasks;
pub(crate) mod users;

use crate::error::ApiError;
use actix_web::{HttpResponse, Resource, web};

/// Declares the served routes once: `configure` registers them with actix
/// and `SERVED` lists them, so the OpenAPI coverage test compares the
/// document with what is really routed, not with a hand-kept copy.
macro_rules! contract_routes {
    ($($path:literal => { $($method:ident $handler:path),+ $(,)? })+) => {
        /// Every route of the contract, each answering 405 for other methods.
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(cfg.service(resource($path)$(.route(web::$method().to($handler)))+);)+
        }

        /// `(method, path)` of every served route, paths in OpenAPI's template syntax.
        pub const SERVED: &[(&str, &str)] = &[$($((stringify!($method), $path),)+)+];
    };
}

contract_routes! {
    "/healthz" => { get health::healthz }
    "/readyz" => { get health::readyz }
    "/metrics" => { get health::metrics }
    "/openapi.json" => { get crate::openapi::document }
    "/v1/users" => { post users::register }
    "/v1/sessions" => { post sessions::login, get sessions::list, delete sessions::revoke_all }
    "/v1/sessions/current" => { get sessions::current, delete sessions::logout }
    "/v1/sessions/current/refresh" => { post sessions::refresh }
    "/v1/sessions/{session_id}" => { delete sessions::revoke }
    "/v1/tasks" => { post tasks::create, get tasks::list }
    "/v1/tasks/claim" => { post tasks::claim }
    "/v1/tasks/stats" => { get tasks::stats }
    "/v1/tasks/{id}/complete" => { post tasks::complete }
    "/v1/tasks/{id}/release" => { post tasks::release }
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
