//! Builds the running service from a config: pools, services, the actix
//! server, and the migrations, which run in the background with retries
//! (the service listens at once: `/healthz` is 200 from the start, `/readyz`
//! and the `/v1` routes answer 503 until the schema is migrated). Tests use
//! this same function with port 0.

use crate::config::ApiConfig;
use crate::metrics::Metrics;
use crate::routes;
use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use auth_core::auth::SessionService;
use auth_core::db;
use auth_core::hashing::PasswordHasher;
use auth_core::queue::TaskQueue;
use auth_core::retention::Cleanup;
use std::net::TcpListener;

/// A built, not yet awaited, server and where it listens.
pub struct Application {
    pub server: Server,
    pub port: u16,
    pub state: AppState,
}

impl Application {
    /// Graceful stop: ends every long-poll wait (they answer `claimed: 0`),
    /// stops accepting, and lets in-flight requests finish within the grace.
    pub fn stopper(&self) -> impl Future<Output = ()> + use<> {
        let handle = self.server.handle();
        let wakeups = self.state.queue.wakeups().clone();
        async move {
            wakeups.stop();
            handle.stop(true).await;
        }
    }
}

pub async fn build(config: ApiConfig) -> anyhow::Result<Application> {
    let migrated = spawn_migrations(config.database_url.clone());
    let pools = db::Pools::build(
        &config.database_url,
        &config.bulkheads.classes(&config.pool),
        config.pooler,
    )
    .await
    .context("building the pools")?;
    let hasher =
        PasswordHasher::new(config.hash, config.hash_pool).context("configuring argon2")?;
    // The cleanup works on the reads class: background work, off the
    // sessions' and the queue's pools.
    let cleanup = Cleanup::new(
        pools.reads.clone(),
        config.retention.clone(),
        config.sessions.failure_window,
    );
    let sessions = SessionService::new(
        pools.sessions.clone(),
        hasher.clone(),
        config.sessions.clone(),
    );
    let queue = TaskQueue::new(
        pools.queue.clone(),
        pools.reads.clone(),
        config.queue.clone(),
    );
    let metrics = Metrics::new(
        &pools,
        hasher,
        cleanup.clone(),
        sessions.clone(),
        queue.clone(),
    )
    .context("registering metrics")?;
    let state = AppState {
        pools: pools.clone(),
        metrics,
        trusted_proxies: std::sync::Arc::new(config.trusted_proxies.clone()),
        registration: config.registration,
        default_roles: config.default_roles,
        sessions,
        queue,
        cleanup,
        migrated,
        alive: std::sync::Arc::new(()),
    };
    spawn_background_jobs(&state, &config);
    let listener =
        TcpListener::bind(&config.bind).with_context(|| format!("binding {}", config.bind))?;
    let port = listener.local_addr()?.port();
    let server = http_server(&config, state.clone(), listener)?;
    Ok(Application {
        server,
        port,
        state,
    })
}

/// actix's server over `listener`, every route with the state.
fn http_server(
    config: &ApiConfig,
    state: AppState,
    listener: TcpListener,
) -> anyhow::Result<Server> {
    auth_core::or_fault!(HangUpsIgnored => crate::faults::http_server_serving_hung_up_requests(config, state, listener));
    let (data, document) = app_data(state)?;
    let mut server = HttpServer::new(move || app(data.clone(), document.clone()))
        .shutdown_timeout(config.shutdown_grace_secs)
        // A client that closes its side of the connection has hung up: actix
        // then drops its request instead of answering into the void, so a
        // long-poll claim stops waiting, and what a claim under way took for
        // it is handed back (`TaskQueue::claim`). (A client that half-closes
        // and still reads its answer is refused; HTTP/1.1 clients do not.)
        .h1_allow_half_closed(false)
        // The binary handles the signals itself: long-poll claims must end
        // before actix waits for in-flight requests (`Application::stopper`).
        .disable_signals()
        .listen(listener)?;
    if let Some(workers) = config.workers {
        server = server.workers(workers.max(1));
    }
    Ok(server.run())
}

/// What every worker's app shares: the state and the OpenAPI document.
pub(crate) fn app_data(
    state: AppState,
) -> anyhow::Result<(web::Data<AppState>, web::Data<routes::health::ApiDocument>)> {
    let document = crate::openapi::json().context("serialising the OpenAPI document")?;
    Ok((
        web::Data::new(state),
        web::Data::new(routes::health::ApiDocument(document.into())),
    ))
}

/// One worker's app: every route, behind the middleware, with the state.
pub(crate) fn app(
    data: web::Data<AppState>,
    document: web::Data<routes::health::ApiDocument>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(actix_web::middleware::from_fn(
            crate::extract::until_migrated,
        ))
        .wrap(crate::telemetry::RequestLog)
        .app_data(data)
        .app_data(document)
        .configure(routes::configure)
        .default_service(web::to(routes::not_found))
}

/// The jobs each instance runs beside its requests, started once the
/// schema is current (before, every one of them would fail on a table that
/// is not there yet); each ends once the state's `alive` marker is dropped.
fn spawn_background_jobs(state: &AppState, config: &ApiConfig) {
    let (state, config) = (state.clone(), config.clone());
    let mut migrated = state.migrated.clone();
    tokio::spawn(async move {
        // Only an instance dropped before its schema was current ends here.
        if migrated.wait_for(|done| *done).await.is_ok() {
            start_background_jobs(&state, &config);
        }
    });
}

fn start_background_jobs(state: &AppState, config: &ApiConfig) {
    crate::maintenance::spawn_count_folding(
        state.queue.clone(),
        config.queue.counts_fold_interval,
        std::sync::Arc::downgrade(&state.alive),
    );
    state.queue.wakeups().spawn_recheck(
        config.queue.recheck,
        std::sync::Arc::downgrade(&state.alive),
    );
    match &config.listen_url {
        Some(url) => state
            .queue
            .wakeups()
            .spawn_listener(url.clone(), std::sync::Arc::downgrade(&state.alive)),
        None => tracing::warn!(
            "no TESSERA_DB_LISTEN_URL behind a transaction pooler: long-poll claims find new tasks by their one-second re-check"
        ),
    }
    crate::maintenance::spawn_cleanup(
        state.cleanup.clone(),
        config.retention.interval,
        std::sync::Arc::downgrade(&state.alive),
    );
}

/// Applies the migrations until they succeed, backing off from 250 ms to
/// 10 s between tries (the database may be down, or starting); the
/// receiver turns `true` once the schema is current.
fn spawn_migrations(database_url: String) -> tokio::sync::watch::Receiver<bool> {
    let (done, migrated) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut backoff = std::time::Duration::from_millis(250);
        loop {
            match db::run_migrations(&database_url).await {
                Ok(applied) => {
                    // Flag first, then say so: whoever reads the line (an
                    // operator, a test) finds the service acting on it.
                    let _ = done.send(true);
                    tracing::info!(applied, "database schema is current");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "migrations not applied yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                }
            }
        }
    });
    migrated
}
