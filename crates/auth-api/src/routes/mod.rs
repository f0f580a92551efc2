//! The contract's routes. Handlers only translate: JSON in, a service call,
//! JSON out; no SQL and no rules here.

mod health;
mod sessions;
mod tasks;
mod users;

use crate::error::ApiError;
use actix_web::{HttpResponse, Resource, web};

/// Every route of the contract, each answering 405 for other methods.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/readyz").route(web::get().to(health::readyz)))
        .service(resource("/metrics").route(web::get().to(health::metrics)))
        .service(resource("/v1/users").route(web::post().to(users::register)))
        .service(
            resource("/v1/sessions")
                .route(web::post().to(sessions::login))
                .route(web::get().to(sessions::list))
                .route(web::delete().to(sessions::revoke_all)),
        )
        .service(
            resource("/v1/sessions/current")
                .route(web::get().to(sessions::current))
                .route(web::delete().to(sessions::logout)),
        )
        .service(resource("/v1/sessions/current/refresh").route(web::post().to(sessions::refresh)))
        .service(resource("/v1/sessions/{session_id}").route(web::delete().to(sessions::revoke)))
        .service(
            resource("/v1/tasks")
                .route(web::post().to(tasks::create))
                .route(web::get().to(tasks::list)),
        )
        .service(resource("/v1/tasks/claim").route(web::post().to(tasks::claim)))
        .service(resource("/v1/tasks/stats").route(web::get().to(tasks::stats)))
        .service(resource("/v1/tasks/{id}/complete").route(web::post().to(tasks::complete)))
        .service(resource("/v1/tasks/{id}/release").route(web::post().to(tasks::release)));
}

fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed)
    }))
}

/// Any path the contract does not have.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
