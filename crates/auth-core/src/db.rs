//! The connection pool and the embedded migrations.

use crate::config::PoolConfig;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt as _;
use std::time::Duration;

pub type DbPool = Pool<AsyncPgConnection>;
pub type PooledConn<'a> =
    diesel_async::pooled_connection::bb8::PooledConnection<'a, AsyncPgConnection>;

/// One pool per class of request (see [`crate::config::Bulkheads`]).
#[derive(Clone)]
pub struct Pools {
    pub sessions: DbPool,
    pub queue: DbPool,
    pub reads: DbPool,
    classes: crate::config::PoolClasses,
}

impl Pools {
    pub async fn build(
        database_url: &str,
        classes: &crate::config::PoolClasses,
    ) -> Result<Pools, diesel::ConnectionError> {
        or_fault!(OnePoolForEveryClass => {
            let one = build_pool(database_url, &classes.queue).await?;
            Ok(Pools { sessions: one.clone(), queue: one.clone(), reads: one, classes: classes.clone() })
        });
        Ok(Pools {
            sessions: build_pool(database_url, &classes.sessions).await?,
            queue: build_pool(database_url, &classes.queue).await?,
            reads: build_pool(database_url, &classes.reads).await?,
            classes: classes.clone(),
        })
    }

    /// Each class by the name its metrics carry, with its configured size.
    pub fn by_class(&self) -> [(&'static str, &DbPool, u32); 3] {
        [
            ("sessions", &self.sessions, self.classes.sessions.max_size),
            ("queue", &self.queue, self.classes.queue.max_size),
            ("reads", &self.reads, self.classes.reads.max_size),
        ]
    }

    /// Whether the database answers a query within the checkout timeout,
    /// through the pool the sessions class (every validation) depends on.
    pub async fn ready(&self) -> bool {
        use diesel_async::RunQueryDsl as _;
        match self.sessions.get().await {
            Ok(mut conn) => diesel::sql_query("SELECT 1")
                .execute(&mut *conn)
                .await
                .is_ok(),
            Err(_) => false,
        }
    }
}

/// Every migration, compiled into the binary and applied at start-up.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Builds the pool. Every new connection gets a `statement_timeout`, so no
/// query can hold a pooled connection forever.
pub async fn build_pool(
    database_url: &str,
    config: &PoolConfig,
) -> Result<DbPool, diesel::ConnectionError> {
    let statement_timeout_ms = config.statement_timeout_ms;
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |url: &str| {
        let url = url.to_owned();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            conn.batch_execute(&format!(
                "SET statement_timeout = {statement_timeout_ms}; SET application_name = 'tessera'"
            ))
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            Ok(conn)
        }
        .boxed()
    });
    // bb8 asks the manager to verify a connection on checkout only when
    // test_on_check_out is set; the check is this `SELECT 1`.
    manager_config.recycling_method = RecyclingMethod::Verified;
    let manager = AsyncDieselConnectionManager::new_with_config(database_url, manager_config);
    let builder = Pool::builder()
        .max_size(config.max_size)
        .min_idle(config.min_idle)
        .connection_timeout(checkout_timeout(config))
        .idle_timeout(config.idle_timeout_ms.map(Duration::from_millis))
        .max_lifetime(config.max_lifetime_ms.map(Duration::from_millis))
        .test_on_check_out(config.test_on_checkout);
    // build_unchecked: the service must start (and report not-ready) even
    // while the database is down; connections are made on demand.
    Ok(builder.build_unchecked(manager))
}

/// How long a checkout may wait for a connection.
fn checkout_timeout(config: &PoolConfig) -> Duration {
    or_fault!(PoolFailsFast => Duration::from_millis(1));
    Duration::from_millis(config.connection_timeout_ms.max(1))
}

/// The advisory-lock key migrations run under: "tessera" + 0.
const MIGRATION_LOCK: i64 = 0x7465_7373_6572_6100;

/// Applies pending migrations over a dedicated connection, under a session
/// advisory lock: instances starting together on an empty database take
/// turns, and each one after the first finds nothing left to apply. Runs on
/// its own OS thread because diesel's migration harness is synchronous and
/// would block (or panic inside) an async runtime.
pub fn run_migrations_blocking(database_url: &str) -> Result<usize, MigrationError> {
    use diesel::RunQueryDsl as _;
    use diesel::sql_types::BigInt;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    let url = database_url.to_owned();
    std::thread::spawn(move || {
        let failed = |e: &dyn std::fmt::Display| MigrationError(e.to_string());
        let mut conn =
            <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                .map_err(|e| failed(&e))?;
        // Held until the connection closes (at the end of this thread's
        // work, or with the process).
        diesel::sql_query("SELECT pg_advisory_lock($1)")
            .bind::<BigInt, _>(MIGRATION_LOCK)
            .execute(&mut conn)
            .map_err(|e| failed(&e))?;
        conn.run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.len())
            .map_err(|e| failed(&*e))
    })
    .join()
    .map_err(|_| MigrationError("migration thread panicked".into()))?
}

/// Applies pending migrations from async code without blocking the runtime.
pub async fn run_migrations(database_url: &str) -> Result<usize, MigrationError> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || run_migrations_blocking(&url))
        .await
        .map_err(|_| MigrationError("migration task failed".into()))?
}

/// A migration could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("migrations failed: {0}")]
pub struct MigrationError(String);
