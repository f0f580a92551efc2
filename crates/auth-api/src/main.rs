//! `auth-api`: the tessera service binary and its admin commands. Every
//! setting is a flag that also reads its environment variable
//! (`auth-api --help` lists them with their defaults; docs/operations.md
//! explains them); `serve` is the default command.

use anyhow::Context as _;
use auth_api::config::ApiConfig;
use auth_api::settings::SETTINGS;
use auth_api::{startup, telemetry};
use auth_core::auth::SessionService;
use auth_core::config::{
    HashParams, HashPoolConfig, PoolConfig, Pooler, RetentionPolicy, SessionPolicy,
};
use auth_core::db;
use auth_core::hashing::PasswordHasher;
use auth_core::retention::{Cleanup, CleanupRun};
use clap::parser::ValueSource;
use clap::{Arg, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::BufRead as _;

#[derive(Parser)]
#[command(
    name = "auth-api",
    version,
    about = "tessera: authentication sessions and a shared work queue over PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP until SIGTERM (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Run the retention cleanup once and exit.
    Cleanup {
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Register a user; the password is read from the first line of stdin.
    Create {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Revoke every active session of a user; prints how many.
    Revoke {
        #[arg(long)]
        email: String,
    },
}

/// The command line: the subcommands, plus one global flag per setting.
fn command() -> clap::Command {
    let settings = SETTINGS.iter().map(|s| {
        Arg::new(s.var)
            .long(s.flag())
            .env(s.var)
            .hide_env_values(true)
            .value_name("VALUE")
            .global(true)
            .help(format!("{} [default: {}]", s.help, (s.default)()))
    });
    Cli::command().args(settings)
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let matches = command().get_matches();
    // Flags win over the environment; values clap took from the
    // environment are read there by the configuration itself.
    let given: BTreeMap<String, String> = SETTINGS
        .iter()
        .filter(|s| matches.value_source(s.var) == Some(ValueSource::CommandLine))
        .filter_map(|s| {
            let value = matches.get_one::<String>(s.var)?;
            Some((s.var.to_owned(), value.clone()))
        })
        .collect();
    auth_core::config::set_command_line(given);
    let cli = Cli::from_arg_matches(&matches)?;
    telemetry::init_tracing();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Migrate => {
            let applied = db::run_migrations(&database_url()?).await?;
            println!("applied {applied} migrations");
            Ok(())
        }
        Command::Cleanup { dry_run } => cleanup(dry_run).await,
        Command::Users(UsersCommand::Create { email }) => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let user = sessions()
                .await?
                .register(&email, password.trim_end_matches(['\r', '\n']))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created user {} ({})", user.id, user.email);
            Ok(())
        }
        Command::Sessions(SessionsCommand::Revoke { email }) => {
            let revoked = sessions()
                .await?
                .revoke_all_of(&email)
                .await
                .map_err(|e| anyhow::anyhow!("{email}: {e}"))?;
            println!("revoked {revoked} sessions of {email}");
            Ok(())
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let config = ApiConfig::from_env().context("reading configuration")?;
    let app = startup::build(config).await?;
    tracing::info!(port = app.port, "tessera auth-api listening");
    // On SIGTERM/SIGINT: end long-poll waits, stop accepting, let in-flight
    // requests finish within the grace period, then return.
    let stop = app.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received");
        stop.await;
    });
    app.server.await.context("server failed")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn database_url() -> anyhow::Result<String> {
    auth_core::config::env_opt::<String>("DATABASE_URL")?
        .context("DATABASE_URL (or --database-url) is required")
}

/// A one-connection pool for an admin command, on a migrated schema.
async fn admin_pool() -> anyhow::Result<db::Db> {
    let url = database_url()?;
    db::run_migrations(&url).await?;
    let config = PoolConfig {
        max_size: 1,
        ..PoolConfig::from_env()?
    };
    Ok(db::connect(&url, &config, Pooler::from_env()?).await?)
}

async fn sessions() -> anyhow::Result<SessionService> {
    let hasher = PasswordHasher::new(
        HashParams::from_env()?,
        HashPoolConfig {
            workers: Some(1),
            ..HashPoolConfig::from_env()?
        },
    )?;
    Ok(SessionService::new(
        admin_pool().await?,
        hasher,
        SessionPolicy::from_env()?,
    ))
}

async fn cleanup(dry_run: bool) -> anyhow::Result<()> {
    let cleanup = Cleanup::new(
        admin_pool().await?,
        RetentionPolicy::from_env()?,
        SessionPolicy::from_env()?.failure_window,
    );
    let (verb, purged) = if dry_run {
        ("would delete", cleanup.due().await?)
    } else {
        match cleanup.run().await? {
            CleanupRun::Done(purged) => ("deleted", purged),
            CleanupRun::Yielded(purged) => {
                println!("another instance holds the cleanup lock; stopped");
                ("deleted", purged)
            }
        }
    };
    println!(
        "{verb}: {} sessions, {} login attempts, {} tasks",
        purged.sessions, purged.login_attempts, purged.tasks
    );
    Ok(())
}
