//! Deliberately broken variants of auth-api's own rules, compiled only with
//! the test-only `faults` feature (auth-core's `faults` chooses them by
//! `TESSERA_FAULT`); each replaces a whole function through one
//! `or_fault!` line at its top. See auth-core's `faults` module.

use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::fields::{self, FromJson, Nesting, Read};
use crate::state::AppState;
use actix_web::HttpServer;
use actix_web::dev::Payload;
use actix_web::dev::Server;
use futures_util::StreamExt as _;
use std::net::TcpListener;

/// `body_read_whole`: the body is read to its end (its size and nesting
/// still checked as it arrives) and materialised before its members are
/// judged, so a padded body costs its whole size.
pub async fn read_whole<T: FromJson>(
    mut payload: Payload,
    limit: usize,
) -> Result<T::Checked, ApiError> {
    let mut body = Vec::new();
    let mut nesting = Nesting::default();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::MalformedRequest("the body could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        nesting.feed(&chunk)?;
        body.extend_from_slice(&chunk);
    }
    let whole: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    std::hint::black_box(&whole);
    match fields::read::<T>(&body, true)? {
        Read::Done(checked) => Ok(checked),
        Read::NeedMore => Err(ApiError::MalformedRequest("the body is not valid JSON")),
    }
}

/// `hang_ups_ignored`: the service's server with half-closed connections
/// allowed (actix's default), so a request whose client hung up is still
/// served: a long-poll claim keeps waiting and takes a task for nobody.
pub fn http_server_serving_hung_up_requests(
    config: &ApiConfig,
    state: AppState,
    listener: TcpListener,
) -> anyhow::Result<Server> {
    let (data, document) = crate::startup::app_data(state)?;
    let mut server = HttpServer::new(move || crate::startup::app(data.clone(), document.clone()))
        .shutdown_timeout(config.shutdown_grace_secs)
        .h1_allow_half_closed(true)
        .disable_signals()
        .listen(listener)?;
    if let Some(workers) = config.workers {
        server = server.workers(workers.max(1));
    }
    Ok(server.run())
}
