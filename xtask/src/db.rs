//! `cargo xtask db start|stop|url|psql`: the persistent developer database.

use crate::psql::Psql;
use anyhow::Context as _;
use clap::Subcommand;
use pg_provision::{Cluster, DbUrl, Server};
use std::process::Command;

/// The application database inside the developer cluster.
pub const APP_DATABASE: &str = "tessera";

#[derive(Subcommand)]
pub enum Action {
    /// Starts the persistent cluster (created on first use) and prints its URL.
    Start,
    /// Stops the persistent cluster; its data stays in .tessera/pg.
    Stop,
    /// Prints the application database URL (starting the cluster if needed).
    Url,
    /// Opens psql on the application database.
    Psql,
}

pub fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Start | Action::Url => {
            let server = app_server()?;
            println!("{}", app_url(&server));
        }
        Action::Stop => {
            let mut cluster = Cluster::start_persistent(&crate::persistent_dir())?;
            cluster.stop()?;
            println!(
                "stopped; data kept in {}",
                crate::persistent_dir().display()
            );
        }
        Action::Psql => {
            let server = app_server()?;
            let psql = server
                .cluster
                .as_ref()
                .map(|c| c.bin_dir().join("psql"))
                .unwrap_or_else(|| "psql".into());
            let status = Command::new(psql)
                .arg(app_url(&server).to_string())
                .status()
                .context("running psql")?;
            std::process::exit(status.code().unwrap_or(1));
        }
    }
    Ok(())
}

/// `DATABASE_URL` when set and reachable, else the persistent cluster with
/// the application database created.
pub fn app_server() -> anyhow::Result<Server> {
    let server = Server::from_env_or_persistent(&crate::persistent_dir())?;
    if server.cluster.is_some() {
        Psql::new(&server, server.url.clone()).ensure_database(APP_DATABASE)?;
    }
    Ok(server)
}

pub fn app_url(server: &Server) -> DbUrl {
    match server.origin {
        pg_provision::Origin::Environment => server.url.clone(),
        pg_provision::Origin::Private => server.url.with_database(APP_DATABASE),
    }
}
