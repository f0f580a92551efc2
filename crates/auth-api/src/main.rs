//! `auth-api`: the tessera service binary. Reads its configuration from the
//! environment (docs/operations.md), applies migrations, serves until SIGTERM.

use anyhow::Context as _;
use auth_api::config::ApiConfig;
use auth_api::{startup, telemetry};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let config = ApiConfig::from_env().context("reading configuration")?;
    let app = startup::build(config).await?;
    tracing::info!(port = app.port, "tessera auth-api listening");
    // actix handles SIGTERM/SIGINT: stop accepting, let in-flight requests
    // finish within the grace period, then return.
    app.server.await.context("server failed")?;
    tracing::info!("shut down cleanly");
    Ok(())
}
