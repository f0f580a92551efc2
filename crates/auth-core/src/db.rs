//! The connection pools, how work runs on their connections, and the
//! embedded migrations.

use crate::config::{PoolConfig, Pooler};
use crate::error::StoreError;
use diesel::connection::CacheSize;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt as _;
use std::sync::Arc;
use std::time::Duration;

pub type DbPool = Pool<AsyncPgConnection>;

/// A pool and the way work must run on its connections.
///
/// Directly on PostgreSQL a connection is one server session: its
/// `statement_timeout` is set once, statements are prepared once and cached.
/// Behind a transaction pooler (PgBouncer's `pool_mode = transaction`) each
/// transaction may run on a different server session, so nothing may live
/// longer than a transaction: every unit of work is one transaction that
/// begins by setting its `statement_timeout` (`SET LOCAL`), and no prepared
/// statement is kept past the query that made it.
#[derive(Clone, Debug)]
pub struct Db {
    pool: DbPool,
    /// How a unit of work begins behind a transaction pooler; `None` directly.
    pooled_begin: Option<Arc<str>>,
}

impl Db {
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Runs `work` on one checked-out connection: directly as it is (each
    /// statement its own transaction unless `work` opens one with
    /// [`atomic`]), behind a transaction pooler as one transaction.
    pub async fn run<R, E, F>(&self, work: F) -> Result<R, E>
    where
        F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<R, E>,
        E: From<StoreError>,
    {
        let mut conn = self.pool.get().await.map_err(StoreError::from)?;
        match &self.pooled_begin {
            None => work(&mut conn).await,
            Some(begin) => in_transaction(&mut conn, begin, work).await,
        }
    }
}

impl Db {
    /// Runs `work` as one transaction on one checked-out connection.
    pub async fn transaction<R, E, F>(&self, work: F) -> Result<R, E>
    where
        F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<R, E>,
        E: From<StoreError>,
    {
        self.run(async |conn| atomic(conn, work).await).await
    }
}

/// Runs `work` in a transaction: its own, or the one `conn` is already in
/// (behind a transaction pooler, every [`Db::run`] is one).
pub async fn atomic<R, E, F>(conn: &mut AsyncPgConnection, work: F) -> Result<R, E>
where
    F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<R, E>,
    E: From<StoreError>,
{
    atomic_after(conn, None, work).await
}

/// Whether `conn` is in a transaction already (behind a transaction
/// pooler, every [`Db::run`] is one).
pub fn within_transaction(conn: &mut AsyncPgConnection) -> Result<bool, StoreError> {
    let depth = AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .map_err(StoreError::from)?;
    Ok(depth.is_some())
}

/// Runs `work` in a transaction that first runs `prelude`: simple-protocol
/// SQL whose text carries no outside input (a lock by a numeric key or an
/// id the service generated). Directly, the prelude rides on the `BEGIN`,
/// one round trip for both; inside a transaction already open (behind a
/// transaction pooler) it is sent on its own.
pub async fn atomic_after<R, E, F>(
    conn: &mut AsyncPgConnection,
    prelude: Option<&str>,
    work: F,
) -> Result<R, E>
where
    F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<R, E>,
    E: From<StoreError>,
{
    match (within_transaction(conn)?, prelude) {
        (true, None) => work(conn).await,
        (true, Some(prelude)) => {
            conn.batch_execute(prelude)
                .await
                .map_err(StoreError::from)?;
            work(conn).await
        }
        (false, None) => in_transaction(conn, "BEGIN", work).await,
        (false, Some(prelude)) => in_transaction(conn, &format!("BEGIN; {prelude}"), work).await,
    }
}

/// `begin`, then `work`, then COMMIT, or ROLLBACK if `work` failed.
async fn in_transaction<R, E, F>(conn: &mut AsyncPgConnection, begin: &str, work: F) -> Result<R, E>
where
    F: AsyncFnOnce(&mut AsyncPgConnection) -> Result<R, E>,
    E: From<StoreError>,
{
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(conn, begin).await {
        // `begin` may be several statements (BEGIN, then a lock): if a later
        // one failed, the server's transaction is open but diesel does not
        // know it, so close it here rather than pool an aborted connection.
        let _ = conn.batch_execute("ROLLBACK").await;
        return Err(StoreError::from(e).into());
    }
    match work(conn).await {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(conn)
                .await
                .map_err(StoreError::from)?;
            Ok(value)
        }
        Err(failed) => match AnsiTransactionManager::rollback_transaction(conn).await {
            // A broken transaction manager discards the connection; the
            // first error is the one worth reporting.
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(failed),
            Err(rollback) => Err(StoreError::from(rollback).into()),
        },
    }
}

/// One pool per class of request (see [`crate::config::Bulkheads`]).
#[derive(Clone)]
pub struct Pools {
    pub sessions: Db,
    pub queue: Db,
    pub reads: Db,
    pub(crate) classes: crate::config::PoolClasses,
}

impl Pools {
    pub async fn build(
        database_url: &str,
        classes: &crate::config::PoolClasses,
        pooler: Pooler,
    ) -> Result<Pools, diesel::ConnectionError> {
        or_fault!(OnePoolForEveryClass => crate::faults::one_pool_for_every_class(database_url, classes, pooler).await);
        Ok(Pools {
            sessions: connect(database_url, &classes.sessions, pooler).await?,
            queue: connect(database_url, &classes.queue, pooler).await?,
            reads: connect(database_url, &classes.reads, pooler).await?,
            classes: classes.clone(),
        })
    }

    /// Each class by the name its metrics carry, with its configured size.
    pub fn by_class(&self) -> [(&'static str, &DbPool, u32); 3] {
        [
            (
                "sessions",
                self.sessions.pool(),
                self.classes.sessions.max_size,
            ),
            ("queue", self.queue.pool(), self.classes.queue.max_size),
            ("reads", self.reads.pool(), self.classes.reads.max_size),
        ]
    }

    /// Whether the database answers a query within the checkout timeout,
    /// through the pool the sessions class (every validation) depends on.
    pub async fn ready(&self) -> bool {
        match self.sessions.pool().get().await {
            // The simple protocol: no prepared statement, fine behind any pooler.
            Ok(mut conn) => conn.batch_execute("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}

/// Every migration, compiled into the binary and applied at start-up.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// A pool whose connections are set up for `pooler`. Directly, every new
/// connection gets its `statement_timeout`, so no query can hold a pooled
/// connection forever; behind a transaction pooler each unit of work sets it.
pub async fn connect(
    database_url: &str,
    config: &PoolConfig,
    pooler: Pooler,
) -> Result<Db, diesel::ConnectionError> {
    let statement_timeout_ms = config.statement_timeout_ms;
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |url: &str| {
        let url = url.to_owned();
        async move {
            match pooler {
                Pooler::None => {
                    let mut conn = AsyncPgConnection::establish(&url).await?;
                    conn.batch_execute(&format!(
                        "SET statement_timeout = {statement_timeout_ms}; SET application_name = 'tessera'"
                    ))
                    .await
                    .map_err(bad_connection)?;
                    Ok(conn)
                }
                Pooler::Transaction => establish_uncached(&url).await,
            }
        }
        .boxed()
    });
    // bb8 asks the manager to verify a connection on checkout only when
    // test_on_check_out is set. Directly the check is a cached `SELECT 1`;
    // behind a transaction pooler a prepared one would outlive its
    // transaction, so it is sent as a simple query.
    manager_config.recycling_method = match pooler {
        Pooler::None => RecyclingMethod::Verified,
        Pooler::Transaction => {
            RecyclingMethod::CustomFunction(Box::new(|conn| conn.batch_execute("SELECT 1").boxed()))
        }
    };
    let manager = AsyncDieselConnectionManager::new_with_config(database_url, manager_config);
    let builder = Pool::builder()
        .max_size(config.max_size)
        .min_idle(config.min_idle)
        .connection_timeout(checkout_timeout(config))
        .idle_timeout(config.idle_timeout_ms.map(Duration::from_millis))
        .max_lifetime(config.max_lifetime_ms.map(Duration::from_millis))
        .test_on_check_out(config.test_on_checkout)
        .error_sink(Box::new(LogConnectErrors));
    // build_unchecked: the service must start (and report not-ready) even
    // while the database is down; connections are made on demand.
    let pool = builder.build_unchecked(manager);
    let pooled_begin = (pooler == Pooler::Transaction).then(|| {
        Arc::from(format!(
            "BEGIN; SET LOCAL statement_timeout = {statement_timeout_ms}"
        ))
    });
    Ok(Db { pool, pooled_begin })
}
/// A connection that keeps no prepared statement, opened so that it also
/// works behind a transaction pooler. diesel-async sets the time zone and
/// the encoding of every new connection with two prepared statements
/// (pgbouncer/pgbouncer#1288): outside a transaction PgBouncer may parse
/// them on one server session and run them on another. Here they run
/// inside a transaction of their own, and the cache that would keep them is
/// dropped (which closes them) before it commits. `application_name` is one
/// of the settings PgBouncer carries from server session to server session.
async fn establish_uncached(url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(bad_connection)?;
    let mut connection = connection;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        use futures_util::StreamExt as _;
        // The server's notices ("already exists, skipping") are not news.
        while let Some(message) = messages.next().await {
            if let Err(error) = message {
                tracing::debug!(%error, "database connection ended");
                break;
            }
        }
    });
    client
        .batch_execute("BEGIN")
        .await
        .map_err(bad_connection)?;
    let mut conn = AsyncPgConnection::try_from(client).await?;
    conn.set_prepared_statement_cache_size(CacheSize::Disabled);
    conn.batch_execute("SET application_name = 'tessera'; COMMIT")
        .await
        .map_err(bad_connection)?;
    Ok(conn)
}

/// A connection that could not be made or set up, with every cause
/// (tokio-postgres says only "db error" at the top; the server's reason,
/// "database ... does not exist", is its source).
fn bad_connection(e: impl std::error::Error) -> diesel::ConnectionError {
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        why.push_str(": ");
        why.push_str(&cause.to_string());
        source = cause.source();
    }
    diesel::ConnectionError::BadConnection(why)
}

/// Logs why a new connection failed (bb8 otherwise drops the error, and a
/// checkout that waited for it reports only a timeout).
#[derive(Debug, Clone, Copy)]
struct LogConnectErrors;

impl bb8::ErrorSink<diesel_async::pooled_connection::PoolError> for LogConnectErrors {
    fn sink(&self, error: diesel_async::pooled_connection::PoolError) {
        tracing::warn!(%error, "could not open a database connection");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<diesel_async::pooled_connection::PoolError>> {
        Box::new(*self)
    }
}

/// How long a checkout may wait for a connection.
fn checkout_timeout(config: &PoolConfig) -> Duration {
    or_fault!(PoolFailsFast => Duration::from_millis(1));
    Duration::from_millis(config.connection_timeout_ms.max(1))
}

/// The advisory-lock key migrations run under: "tessera" + 0.
const MIGRATION_LOCK: i64 = 0x7465_7373_6572_6100;

/// Applies pending migrations over a dedicated connection, all in one
/// transaction that first takes a transaction-level advisory lock:
/// instances starting together on an empty database take turns, each one
/// after the first finds nothing left to apply, and a failed migration
/// leaves the schema as it was. A transaction-level lock (unlike a session
/// lock) also holds behind a transaction pooler, and no statement is kept
/// past it. Runs on its own OS thread because diesel's migration harness is
/// synchronous and would block (or panic inside) an async runtime.
pub fn run_migrations_blocking(database_url: &str) -> Result<usize, MigrationError> {
    use diesel::RunQueryDsl as _;
    use diesel::sql_types::BigInt;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    let url = database_url.to_owned();
    std::thread::spawn(move || {
        let failed = |e: &dyn std::fmt::Display| MigrationError(e.to_string());
        // The wrapper blocks on a runtime's handle; a multi-threaded one
        // drives the connection while this thread waits.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| failed(&e))?;
        let conn = runtime
            .block_on(establish_uncached(&url))
            .map_err(|e| failed(&e))?;
        let _entered = runtime.enter();
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        diesel::Connection::transaction(&mut conn, |conn| {
            diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<BigInt, _>(MIGRATION_LOCK)
                .execute(conn)
                .map_err(|e| failed(&e))?;
            conn.run_pending_migrations(MIGRATIONS)
                .map(|applied| applied.len())
                .map_err(|e| failed(&*e))
        })
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

impl From<diesel::result::Error> for MigrationError {
    fn from(e: diesel::result::Error) -> MigrationError {
        MigrationError(e.to_string())
    }
}
