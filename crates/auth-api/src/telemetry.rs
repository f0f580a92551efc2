//! Logging set-up and a request log that never records secrets: it logs the
//! method, the route pattern (not the raw path), status and latency; never
//! headers, bodies or query strings. The same four facts feed /metrics, so
//! each comes from a fixed set: a method actix does not know is `other`, a
//! path no route matched is `unmatched`; nothing a client invents becomes a
//! new label value or a new log field.

use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage as _, web};
use futures_util::future::LocalBoxFuture;
use std::future::{Ready, ready};
use std::time::Instant;
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;

tokio::task_local! {
    static REQUEST_ID: String;
}

const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being answered, inside the request log's scope.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The caller's `X-Request-Id` when it is a plausible id (1 to 64 of
/// `A-Za-z0-9._-`: it goes into logs and answers), else a new UUID.
fn request_id_of(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// `RUST_LOG` filters (default `info`); `json` lines when asked for
/// (`TESSERA_LOG_FORMAT`), else text.
pub fn init_tracing(json: bool) {
    // Whatever RUST_LOG says, SQL parameters are never logged.
    let filter = quiet_sql_parameters(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    );
    // Colours only for a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Keeps tokio-postgres' statement parameters out of the log: its debug
/// lines carry every bind value (password hashes, token hashes).
fn quiet_sql_parameters(filter: EnvFilter) -> EnvFilter {
    match "tokio_postgres=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// The method as a label: one of the methods HTTP defines, else `other`.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

pub struct RequestLog;

/// When a request arrived (a request extension, set by [`RequestLog`]):
/// a long poll's `wait_ms` counts from here, so time spent queueing for a
/// connection to check the caller is part of the wait, not added to it.
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub Instant);

impl<S, B> Transform<S, ServiceRequest> for RequestLog
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RequestLogService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestLogService { service }))
    }
}

pub struct RequestLogService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for RequestLogService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        req.extensions_mut().insert(Arrived(started));
        let method = method_label(req.method());
        let metrics = req
            .app_data::<web::Data<AppState>>()
            .map(|state| state.metrics.clone());
        let request_id = request_id_of(&req);
        // Every log line of this request carries its id (the span), and so
        // does every problem document (the task-local, read by ApiError).
        let span = tracing::info_span!("request", request_id = %request_id);
        let fut = REQUEST_ID.scope(
            request_id.clone(),
            self.service.call(req).instrument(span.clone()),
        );
        Box::pin(async move {
            let mut res = fut.await?;
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                res.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            let _entered = span.enter();
            let route = res
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".into());
            let elapsed = started.elapsed();
            let status = res.status().as_u16();
            if let Some(metrics) = metrics {
                metrics.observe(method, &route, status, elapsed.as_secs_f64());
            }
            tracing::info!(
                method,
                route,
                status,
                micros = elapsed.as_micros() as u64,
                "request"
            );
            Ok(res)
        })
    }
}
