//! One isolated PostgreSQL database per test.
//!
//! The server comes from [`pg_provision`] (`DATABASE_URL`, or a private
//! throwaway cluster for this test process). Once per process a template
//! database is migrated (its name carries a hash of the migrations, so stale
//! templates are never reused); each test then gets `CREATE DATABASE ...
//! TEMPLATE`, a file-level copy that costs milliseconds, and drops it on
//! `Drop`. Databases left by crashed runs (their PID is gone) are swept.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use pg_provision::{DbUrl, Server};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TEST_PREFIX: &str = "tessera_test_";
const TEMPLATE_PREFIX: &str = "tessera_tpl_";

/// The server and the template, shared by every test of this process. Kept
/// in a static (never dropped): a private cluster is removed by its watchdog
/// when the process exits.
struct Shared {
    admin: DbUrl,
    template: String,
    _server: Server,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        on_own_thread(prepare).unwrap_or_else(|e| panic!("test database unavailable: {e}"))
    })
}

fn prepare() -> Result<Shared, String> {
    let server = Server::from_env_or_throwaway().map_err(|e| e.to_string())?;
    let admin = server.url.clone();
    let template = format!("{TEMPLATE_PREFIX}{}", env!("TESSERA_MIGRATIONS_HASH"));
    block_on(async {
        let mut conn = connect(&admin).await?;
        // Serialise template creation across test processes.
        exec(&mut conn, "SELECT pg_advisory_lock(727274)").await?;
        let result = ensure_template(&mut conn, &admin, &template).await;
        exec(&mut conn, "SELECT pg_advisory_unlock(727274)").await?;
        result?;
        sweep_leftovers(&mut conn, &template).await
    })?;
    Ok(Shared {
        admin,
        template,
        _server: server,
    })
}

async fn ensure_template(
    conn: &mut AsyncPgConnection,
    admin: &DbUrl,
    template: &str,
) -> Result<(), String> {
    if database_names(conn, template)
        .await?
        .iter()
        .any(|n| n == template)
    {
        return Ok(());
    }
    let building = format!("{template}_building");
    exec(conn, &format!("DROP DATABASE IF EXISTS \"{building}\"")).await?;
    exec(conn, &format!("CREATE DATABASE \"{building}\"")).await?;
    let url = admin.with_database(&building).to_string();
    auth_core::db::run_migrations_blocking(&url).map_err(|e| e.to_string())?;
    // Renamed only once complete, so no process ever clones a half-migrated template.
    exec(
        conn,
        &format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\""),
    )
    .await?;
    exec(
        conn,
        &format!("ALTER DATABASE \"{template}\" WITH ALLOW_CONNECTIONS false"),
    )
    .await
}

/// Drops test databases whose creating process is gone, and old templates.
async fn sweep_leftovers(conn: &mut AsyncPgConnection, template: &str) -> Result<(), String> {
    for name in database_names(conn, "tessera_").await? {
        let stale_test = name
            .strip_prefix(TEST_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
        let stale_template =
            name.starts_with(TEMPLATE_PREFIX) && name != template && !name.ends_with("_building");
        if stale_test || stale_template {
            let _ = exec(
                conn,
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )
            .await;
        }
    }
    Ok(())
}

/// A database name no other test uses (this process's id, for the sweep of
/// crashed runs, and a random part).
fn fresh_name() -> String {
    format!(
        "{TEST_PREFIX}{}_{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A database of its own for one test, dropped when this value is dropped.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: DbUrl,
    clone_time: Duration,
}

impl TestDb {
    /// Clones the migrated template into a new database.
    pub async fn new() -> TestDb {
        let shared = shared();
        let name = fresh_name();
        let started = Instant::now();
        let sql = format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{}\"",
            shared.template
        );
        let result = async {
            let mut conn = connect(&shared.admin).await?;
            exec(&mut conn, &sql).await
        }
        .await;
        result.unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        TestDb {
            url: shared.admin.with_database(&name),
            name,
            clone_time: started.elapsed(),
        }
    }

    /// A name for a database of its own that does not exist yet (see
    /// [`TestDb::create_empty`]); dropped like any other when this is dropped.
    pub fn not_created() -> TestDb {
        let name = fresh_name();
        TestDb {
            url: shared().admin.with_database(&name),
            name,
            clone_time: Duration::ZERO,
        }
    }

    /// Creates this database empty: no schema, no migrations.
    pub async fn create_empty(&self) {
        let sql = format!("CREATE DATABASE \"{}\" TEMPLATE template0", self.name);
        let mut conn = connect(&shared().admin)
            .await
            .unwrap_or_else(|e| panic!("connecting as admin: {e}"));
        exec(&mut conn, &sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn url(&self) -> String {
        self.url.to_string()
    }

    /// Where the service under test reaches this database: directly, or
    /// through the PgBouncer at `TESSERA_TEST_PGBOUNCER` (`host:port`, set
    /// by the chaos tier's `pgbouncer` case). The test's own checks keep
    /// reading [`TestDb::url`], the database itself.
    pub fn service_url(&self) -> String {
        match through_pgbouncer() {
            Some((host, port)) => self.url.with_host_port(&host, port).to_string(),
            None => self.url(),
        }
    }

    /// The database server's `(host, port)`.
    pub fn host_port(&self) -> (String, u16) {
        self.url.host_port()
    }

    /// This database's URL with another server address (a proxy in front of it).
    pub fn url_at(&self, host: &str, port: u16) -> String {
        self.url.with_host_port(host, port).to_string()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long `CREATE DATABASE ... TEMPLATE` took for this database.
    pub fn clone_time(&self) -> Duration {
        self.clone_time
    }

    /// A new connection of its own (for fresh reads, held locks, or steps of
    /// a forced interleaving).
    pub async fn connect(&self) -> AsyncPgConnection {
        connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.name))
    }

    /// Runs `sql` on a new connection (test set-up, e.g. moving a lease into the past).
    pub async fn execute(&self, sql: &str) {
        let mut conn = self.connect().await;
        exec(&mut conn, sql).await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Tasks shown with `status`, counted afresh over `task_view`.
    pub async fn shown_tasks(&self, status: &str) -> i64 {
        self.count(&format!(
            "SELECT count(*) AS n FROM task_view WHERE status = '{status}'"
        ))
        .await
    }

    /// Tasks by shown status (unassigned, assigned, completed), counted
    /// afresh over `task_view`: the oracle the service's stats must match.
    pub async fn shown_task_counts(&self) -> (i64, i64, i64) {
        (
            self.shown_tasks("unassigned").await,
            self.shown_tasks("assigned").await,
            self.shown_tasks("completed").await,
        )
    }

    /// What `GET /v1/tasks/stats` must answer, counted afresh over
    /// `task_view` (every status, and the delayed among the unassigned).
    pub async fn shown_task_stats(&self) -> serde_json::Value {
        let shown =
            |status: &str| format!("SELECT count(*) AS n FROM task_view WHERE status = '{status}'");
        let mut stats = serde_json::Map::new();
        for status in ["unassigned", "assigned", "completed", "failed", "cancelled"] {
            stats.insert(status.into(), self.count(&shown(status)).await.into());
        }
        let delayed = "SELECT count(*) AS n FROM task_view WHERE status = 'unassigned' AND not_before > now()";
        stats.insert("delayed".into(), self.count(delayed).await.into());
        serde_json::Value::Object(stats)
    }

    /// Reads a column of uuids afresh, in the query's order (the query must
    /// return one uuid column named `id`).
    pub async fn uuids(&self, sql: &str) -> Vec<uuid::Uuid> {
        use diesel::QueryableByName;
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            id: uuid::Uuid,
        }
        let mut conn = self.connect().await;
        match diesel::sql_query(sql).get_results::<Id>(&mut conn).await {
            Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
            Err(e) => panic!("{sql}: {e} (the query must return one uuid column named id)"),
        }
    }

    /// Reads one bigint afresh, on a new connection: what the database holds
    /// now, not what any participant believes.
    pub async fn count(&self, sql: &str) -> i64 {
        use diesel::QueryableByName;
        use diesel_async::RunQueryDsl;
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.connect().await;
        match diesel::sql_query(sql).get_result::<N>(&mut conn).await {
            Ok(row) => row.n,
            Err(e) => panic!("{sql}: {e} (the query must return one bigint column named n)"),
        }
    }

    /// Waits, by observing the server (no sleeps), until `task` is done or some
    /// other session of this database is blocked on a lock. Returns `true` if
    /// a blocked session was seen first. Panics after 15 s of neither.
    pub async fn blocked_or_done<T>(&self, task: &tokio::task::JoinHandle<T>) -> bool {
        let mut observer = LockObserver::new(self, "").await;
        loop {
            if task.is_finished() {
                return false;
            }
            if observer.waiting().await > 0 {
                return true;
            }
            observer
                .tick("neither finished nor blocked within 15 s")
                .await;
        }
    }

    /// Runs `sql` inside a transaction left open on a connection of its own,
    /// so whatever locks it took stay held until [`Held::release`] (or the
    /// drop of the connection, if the test fails first).
    pub async fn hold(&self, sql: &str) -> Held {
        use diesel_async::SimpleAsyncConnection as _;
        let mut conn = self.connect().await;
        conn.batch_execute(&format!("BEGIN; {sql}"))
            .await
            .unwrap_or_else(|e| panic!("holding `{sql}`: {e}"));
        Held { conn }
    }

    /// Holds the row of `table` with this `id` locked FOR UPDATE (see
    /// [`TestDb::hold`]): writers of that row queue behind the test.
    pub async fn hold_row(&self, table: &str, id: uuid::Uuid) -> Held {
        self.hold(&format!(
            "SELECT id FROM {table} WHERE id = '{id}' FOR UPDATE"
        ))
        .await
    }

    /// Waits, by observing the server (no sleeps), until at least `n` other
    /// sessions of this database wait on a lock: the participants a test
    /// holds back are all in place. Panics after 15 s.
    pub async fn wait_for_lock_waiters(&self, n: i64) {
        let mut observer = LockObserver::new(self, "").await;
        while observer.waiting().await < n {
            observer
                .tick(&format!(
                    "fewer than {n} sessions waited on a lock within 15 s"
                ))
                .await;
        }
    }

    /// Waits, by observing the server (no sleeps), until some other session
    /// of this database has waited on a lock for at least `at_least` by the
    /// server's clock, counted from the start of the statement that waits.
    /// Panics after 15 s.
    pub async fn wait_for_a_lock_wait_of(&self, at_least: Duration) {
        let waited = format!(
            "AND clock_timestamp() - query_start >= interval '{} milliseconds'",
            at_least.as_millis()
        );
        let mut observer = LockObserver::new(self, &waited).await;
        while observer.waiting().await < 1 {
            observer
                .tick(&format!("no session waited on a lock for {at_least:?}"))
                .await;
        }
    }

    /// Waits, by observing the server and `elsewhere` (no sleeps), until
    /// the sessions of this database waiting on a lock plus `elsewhere()`
    /// (participants parked or done outside PostgreSQL: answered, or
    /// waiting in the service's memory) reach `n`. Panics after 15 s.
    pub async fn wait_until_parked(&self, n: i64, elsewhere: impl Fn() -> i64) {
        let mut observer = LockObserver::new(self, "").await;
        loop {
            let in_db = observer.waiting().await;
            let outside = elsewhere();
            if in_db + outside >= n {
                return;
            }
            observer
                .tick(&format!(
                    "within 15 s only {in_db} waited on a lock and {outside} elsewhere, of {n}"
                ))
                .await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = shared().admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop cannot await; a short-lived thread with its own runtime can.
        let _ = on_own_thread(move || {
            block_on(async {
                let mut conn = connect(&admin).await?;
                exec(&mut conn, &sql).await
            })
        });
    }
}

async fn connect(url: &DbUrl) -> Result<AsyncPgConnection, String> {
    AsyncPgConnection::establish(&url.to_string())
        .await
        .map_err(|e| format!("{e} ({})", url.redacted()))
}

async fn exec(conn: &mut AsyncPgConnection, sql: &str) -> Result<(), String> {
    conn.batch_execute(sql)
        .await
        .map_err(|e| format!("{sql}: {e}"))
}

async fn database_names(conn: &mut AsyncPgConnection, prefix: &str) -> Result<Vec<String>, String> {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    diesel::sql_query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
        .bind::<diesel::sql_types::Text, _>(prefix)
        .get_results::<Name>(conn)
        .await
        .map(|rows| rows.into_iter().map(|r| r.datname).collect())
        .map_err(|e| e.to_string())
}

/// Runs `f` on a fresh OS thread (outside any async runtime) and waits.
fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .unwrap_or_else(|_| panic!("helper thread panicked"))
}

fn block_on<F: Future>(fut: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => panic!("building a runtime: {e}"),
    }
}

/// An open transaction holding the locks a test took (see [`TestDb::hold`]).
pub struct Held {
    conn: AsyncPgConnection,
}

impl Held {
    /// Ends the transaction, releasing its locks; what it wrote is undone.
    pub async fn release(mut self) {
        use diesel_async::SimpleAsyncConnection as _;
        self.conn
            .batch_execute("ROLLBACK")
            .await
            .unwrap_or_else(|e| panic!("releasing held locks: {e}"));
    }

    /// Ends the transaction by committing what it wrote, releasing its locks.
    pub async fn release_committing(mut self) {
        use diesel_async::SimpleAsyncConnection as _;
        self.conn
            .batch_execute("COMMIT")
            .await
            .unwrap_or_else(|e| panic!("committing the held transaction: {e}"));
    }
}

/// Counts, on a connection of its own, the other sessions of one database
/// that wait on a lock (`pg_stat_activity`), for at most 15 s.
struct LockObserver {
    conn: AsyncPgConnection,
    sql: String,
    deadline: Instant,
}

impl LockObserver {
    /// Counting the waiting sessions that also meet `and` (SQL beginning
    /// with `AND`, or empty).
    async fn new(db: &TestDb, and: &str) -> LockObserver {
        LockObserver {
            conn: db.connect().await,
            sql: format!(
                "SELECT count(*) AS n FROM pg_stat_activity
                 WHERE datname = '{}' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() {and}",
                db.name
            ),
            deadline: Instant::now() + Duration::from_secs(15),
        }
    }

    async fn waiting(&mut self) -> i64 {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        match diesel::sql_query(&self.sql)
            .get_result::<N>(&mut self.conn)
            .await
        {
            Ok(row) => row.n,
            Err(e) => panic!("observing pg_stat_activity: {e}"),
        }
    }

    /// Yields before the next look; panics with `why` past the deadline.
    async fn tick(&self, why: &str) {
        assert!(Instant::now() < self.deadline, "{why}");
        tokio::task::yield_now().await;
    }
}

/// The PgBouncer tests route the service through, from `TESSERA_TEST_PGBOUNCER`.
pub fn through_pgbouncer() -> Option<(String, u16)> {
    let value = std::env::var("TESSERA_TEST_PGBOUNCER").ok()?;
    let (host, port) = value.trim().rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}
