//! `auth-api`: the tessera service binary and its admin commands. Every
//! setting is a flag that also reads its environment variable
//! (`auth-api --help` lists them with their defaults; docs/operations.md
//! explains them); `serve` is the default command.

use anyhow::Context as _;
use auth_api::config::ApiConfig;
use auth_api::settings::Settings;
use auth_api::{startup, telemetry};
use auth_core::auth::SessionService;
use auth_core::config::{HashPoolConfig, PoolConfig};
use auth_core::db;
use auth_core::domain::{Role, Roles};
use auth_core::hashing::PasswordHasher;
use auth_core::retention::{Cleanup, CleanupRun};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
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
        /// A role to give (worker, assigner, admin); repeatable or
        /// comma-separated [default: the configured default roles]
        #[arg(long = "role", value_delimiter = ',', value_parser = parse_role)]
        roles: Vec<Role>,
    },
    /// Set a user's roles (for one that existed before roles, say, to make it an admin).
    SetRoles {
        #[arg(long)]
        email: String,
        /// The user's roles from now on (worker, assigner, admin); repeatable
        /// or comma-separated
        #[arg(long = "role", value_delimiter = ',', value_parser = parse_role, required = true)]
        roles: Vec<Role>,
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

fn parse_role(word: &str) -> Result<Role, String> {
    Role::parse(word.trim())
        .ok_or_else(|| format!("`{word}` is not a role (worker, assigner or admin)"))
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    // The subcommands, plus one global flag per setting.
    let matches = Settings::augment(Cli::command()).get_matches();
    let settings = Settings::from_matches(&matches)?;
    let cli = Cli::from_arg_matches(&matches)?;
    telemetry::init_tracing(settings.service.log_format == "json");
    // Migrating needs the database's address only; the rest need it all.
    let config = || settings.config().context("reading configuration");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config()?).await,
        Command::Migrate => {
            let url = settings.service.database_url.as_deref();
            let url = url.context("DATABASE_URL (or --database-url) is required")?;
            let applied = db::run_migrations(url).await?;
            println!("applied {applied} migrations");
            Ok(())
        }
        Command::Cleanup { dry_run } => cleanup(&config()?, dry_run).await,
        Command::Users(UsersCommand::Create { email, roles }) => {
            let config = config()?;
            let roles = match roles.is_empty() {
                true => config.default_roles,
                false => roles.into_iter().collect(),
            };
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let user = sessions(&config)
                .await?
                .register(&email, password.trim_end_matches(['\r', '\n']), roles)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "created user {} ({}) with roles [{}]",
                user.id, user.email, user.roles
            );
            Ok(())
        }
        Command::Users(UsersCommand::SetRoles { email, roles }) => {
            let roles: Roles = roles.into_iter().collect();
            let user = sessions(&config()?)
                .await?
                .set_roles_of(&email, roles)
                .await
                .map_err(|e| anyhow::anyhow!("{email}: {e}"))?;
            println!(
                "{} ({}) now has roles [{}]",
                user.id, user.email, user.roles
            );
            Ok(())
        }
        Command::Sessions(SessionsCommand::Revoke { email }) => {
            let revoked = sessions(&config()?)
                .await?
                .revoke_all_of(&email)
                .await
                .map_err(|e| anyhow::anyhow!("{email}: {e}"))?;
            println!("revoked {revoked} sessions of {email}");
            Ok(())
        }
    }
}

async fn serve(config: ApiConfig) -> anyhow::Result<()> {
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

/// A one-connection pool for an admin command, on a migrated schema.
async fn admin_pool(config: &ApiConfig) -> anyhow::Result<db::Db> {
    db::run_migrations(&config.database_url).await?;
    let pool = PoolConfig {
        max_size: 1,
        ..config.pool.clone()
    };
    Ok(db::connect(&config.database_url, &pool, config.pooler).await?)
}

async fn sessions(config: &ApiConfig) -> anyhow::Result<SessionService> {
    let hasher = PasswordHasher::new(
        config.hash,
        HashPoolConfig {
            workers: Some(1),
            ..config.hash_pool
        },
    )?;
    Ok(SessionService::new(
        admin_pool(config).await?,
        hasher,
        config.sessions.clone(),
    ))
}

async fn cleanup(config: &ApiConfig, dry_run: bool) -> anyhow::Result<()> {
    let cleanup = Cleanup::new(
        admin_pool(config).await?,
        config.retention.clone(),
        config.sessions.failure_window,
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
        "{verb}: {} sessions, {} API keys, {} login attempts, {} tasks",
        purged.sessions, purged.api_keys, purged.login_attempts, purged.tasks
    );
    Ok(())
}
