//! Every setting of the service, once: its variable, what it does and its
//! default as the code computes it. The command line offers each as a flag
//! (`--session-idle-secs` for `TESSERA_SESSION_IDLE_SECS`) that also reads
//! the variable, and `--help` lists them; a test keeps this table,
//! `.env.sample` and docs/operations.md in step.

use auth_core::config::{
    Bulkheads, HashParams, HashPoolConfig, PoolConfig, Pooler, QueuePolicy, RetentionPolicy,
    SessionPolicy,
};

/// One setting.
pub struct Setting {
    pub var: &'static str,
    pub help: &'static str,
    /// The default as shown in `--help`, computed from the code's defaults.
    pub default: fn() -> String,
}

impl Setting {
    /// The flag that sets it: `TESSERA_SESSION_IDLE_SECS` -> `session-idle-secs`.
    pub fn flag(&self) -> String {
        self.var
            .trim_start_matches("TESSERA_")
            .to_ascii_lowercase()
            .replace('_', "-")
    }
}

fn secs(d: std::time::Duration) -> String {
    d.as_secs().to_string()
}

macro_rules! settings {
    ($($var:literal => $help:literal, $default:expr;)+) => {
        /// Every setting the service reads.
        pub const SETTINGS: &[Setting] = &[$(Setting { var: $var, help: $help, default: || $default },)+];
    };
}

settings! {
    "DATABASE_URL" => "PostgreSQL connection URL (required)", "(none)".into();
    "TESSERA_BIND" => "Listen address", "127.0.0.1:8080".into();
    "TESSERA_WORKERS" => "actix worker threads", "one per core".into();
    "TESSERA_SHUTDOWN_GRACE_SECS" => "How long in-flight requests may finish on SIGTERM", "30".into();
    "TESSERA_SESSION_IDLE_SECS" => "Idle timeout of a session, slid by use", secs(SessionPolicy::default().idle_timeout);
    "TESSERA_SESSION_ABSOLUTE_SECS" => "Absolute lifetime of a session; rotation never extends it", secs(SessionPolicy::default().absolute_lifetime);
    "TESSERA_MAX_SESSIONS_PER_USER" => "Active sessions per user; a login beyond it revokes the oldest", SessionPolicy::default().max_sessions_per_user.get().to_string();
    "TESSERA_TOUCH_INTERVAL_SECS" => "At most one last_seen_at write per session per interval", secs(SessionPolicy::default().touch_interval);
    "TESSERA_LOGIN_MAX_FAILURES" => "Failed logins per email and window before 429", SessionPolicy::default().max_failed_logins.to_string();
    "TESSERA_LOGIN_FAILURE_WINDOW_SECS" => "Window of the failed-login count", secs(SessionPolicy::default().failure_window);
    "TESSERA_REFRESH_REUSE_GRACE_SECS" => "A rotated-away token presented again later than this revokes its session (within it: a plain 401)", secs(SessionPolicy::default().reuse_grace);
    "TESSERA_TRUSTED_PROXIES" => "Comma-separated proxy addresses or CIDR networks whose X-Forwarded-For names a login's IP", "(none)".into();
    "TESSERA_TASK_LEASE_SECS" => "How long a claim holds a task", secs(QueuePolicy::default().lease);
    "TESSERA_TASK_MAX_WAIT_MS" => "Longest a long-poll claim waits, whatever its wait_ms (at most 30000)", QueuePolicy::default().max_wait.as_millis().to_string();
    "TESSERA_TASK_WAITERS_PER_CREDENTIAL" => "Long-poll claims one session may have waiting; one more gets 429", QueuePolicy::default().waiters.per_credential.to_string();
    "TESSERA_TASK_WAITERS_PER_INSTANCE" => "Long-poll claims waiting in one instance; one more gets 429", QueuePolicy::default().waiters.per_instance.to_string();
    "TESSERA_DB_LISTEN_URL" => "Direct PostgreSQL URL for long-poll wake-ups (LISTEN); needed behind a transaction pooler", "DATABASE_URL, none behind a transaction pooler".into();
    "TESSERA_TASK_COUNTS_FOLD_SECS" => "How often the task-count deltas are folded", secs(QueuePolicy::default().counts_fold_interval);
    "TESSERA_CLEANUP_INTERVAL_SECS" => "How often the retention cleanup is tried", secs(RetentionPolicy::default().interval);
    "TESSERA_SESSION_RETENTION_SECS" => "Sessions revoked or expired longer ago are deleted", secs(RetentionPolicy::default().sessions);
    "TESSERA_TASK_RETENTION_SECS" => "Tasks completed, failed or cancelled longer ago are deleted", secs(RetentionPolicy::default().tasks);
    "TESSERA_CLEANUP_BATCH" => "Rows per cleanup batch", RetentionPolicy::default().batch.to_string();
    "TESSERA_ARGON2_M_KIB" => "argon2id memory (KiB)", HashParams::PRODUCTION.memory_kib.to_string();
    "TESSERA_ARGON2_T" => "argon2id iterations", HashParams::PRODUCTION.iterations.to_string();
    "TESSERA_ARGON2_P" => "argon2id lanes", HashParams::PRODUCTION.parallelism.to_string();
    "TESSERA_HASH_WORKERS" => "Dedicated password-hashing threads", "all cores but one, at least 1".into();
    "TESSERA_HASH_QUEUE_CAPACITY" => "Hashes that may wait for a worker; one more gets 503", format!("{} per worker", HashPoolConfig::QUEUE_PER_WORKER);
    "TESSERA_HASH_WAIT_MS" => "Longest a login or registration waits for a hash worker", HashPoolConfig::default().wait_deadline.as_millis().to_string();
    "TESSERA_POOL_PROFILE" => "A pool profile from the profiles file", "(none: the built-in defaults)".into();
    "TESSERA_POOL_PROFILES_FILE" => "Where pool profiles are read from", "config/pool-profiles.toml".into();
    "TESSERA_POOL_MAX_SIZE" => "Pool size (overrides the profile)", PoolConfig::default().max_size.to_string();
    "TESSERA_POOL_MIN_IDLE" => "Connections kept open while idle", "(none)".into();
    "TESSERA_POOL_CONNECTION_TIMEOUT_MS" => "Checkout wait before 503", PoolConfig::default().connection_timeout_ms.to_string();
    "TESSERA_POOL_IDLE_TIMEOUT_MS" => "Close connections idle this long", format!("{:?}", PoolConfig::default().idle_timeout_ms);
    "TESSERA_POOL_MAX_LIFETIME_MS" => "Close connections this old", format!("{:?}", PoolConfig::default().max_lifetime_ms);
    "TESSERA_POOL_TEST_ON_CHECKOUT" => "Ping each connection on checkout (one more round trip per request; off: a dead connection fails one request and is dropped)", PoolConfig::default().test_on_checkout.to_string();
    "TESSERA_STATEMENT_TIMEOUT_MS" => "statement_timeout of the queue class's connections", PoolConfig::default().statement_timeout_ms.to_string();
    "TESSERA_DB_POOLER" => "`transaction` behind a transaction pooler such as PgBouncer (no state kept past a transaction), else `none`", Pooler::default().to_string();
    "TESSERA_SESSIONS_POOL_MAX_SIZE" => "Connections of the sessions class", "the profile's max_size".into();
    "TESSERA_SESSIONS_STATEMENT_TIMEOUT_MS" => "statement_timeout of the sessions class", Bulkheads::default().sessions_statement_timeout_ms.to_string();
    "TESSERA_READS_POOL_MAX_SIZE" => "Connections of the reads class (listings, stats, cleanup)", Bulkheads::default().reads_max_size.to_string();
    "TESSERA_READS_STATEMENT_TIMEOUT_MS" => "statement_timeout of the reads class", Bulkheads::default().reads_statement_timeout_ms.to_string();
    "TESSERA_LOG_FORMAT" => "`json` for JSON log lines", "text".into();
}
