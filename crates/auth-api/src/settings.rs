//! Every setting of the service, once: its flag, its variable, what it
//! does and its default (taken from auth-core's own defaults, never
//! written twice), one `clap` struct per concern. A flag wins over its
//! variable; an empty variable counts as unset. `--help` lists them; a
//! test holds `.env.sample` and docs/operations.md to `--help`, and one
//! holds every flag's name to its variable's (`TESSERA_SESSION_IDLE_SECS`
//! is `--session-idle-secs`). [`Settings::config`] turns them into the
//! [`ApiConfig`] the service runs with; tests start from
//! [`Settings::defaults`].

use crate::client::TrustedProxies;
use crate::config::{ApiConfig, Registration};
use auth_core::config::{
    Bulkheads, ConfigError, HashParams, HashPoolConfig, PoolConfig, PoolProfiles, Pooler,
    QueuePolicy, RetentionPolicy, SessionLimit, SessionPolicy,
};
use auth_core::domain::{Role, Roles};
use auth_core::wakeups::WaiterLimits;
use clap::{Args, FromArgMatches as _};
use std::path::Path;
use std::time::Duration;

/// All of them.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    #[command(flatten)]
    pub service: ServiceSettings,
    #[command(flatten)]
    pub users: UserSettings,
    #[command(flatten)]
    pub sessions: SessionSettings,
    #[command(flatten)]
    pub queue: QueueSettings,
    #[command(flatten)]
    pub retention: RetentionSettings,
    #[command(flatten)]
    pub hashing: HashSettings,
    #[command(flatten)]
    pub pool: PoolSettings,
    #[command(flatten)]
    pub bulkheads: BulkheadSettings,
}

/// The process: where it listens, what it connects to, how it stops and logs.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Service")]
pub struct ServiceSettings {
    /// PostgreSQL connection URL (required)
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Listen address
    #[arg(long, env = "TESSERA_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// actix worker threads [default: one per core]
    #[arg(long, env = "TESSERA_WORKERS")]
    pub workers: Option<usize>,
    /// How long in-flight requests may finish on SIGTERM
    #[arg(long, env = "TESSERA_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Comma-separated proxy addresses or CIDR networks whose X-Forwarded-For names a login's IP [default: none]
    #[arg(long, env = "TESSERA_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<TrustedProxies>,
    /// Direct PostgreSQL URL for long-poll wake-ups (LISTEN); needed behind a transaction pooler [default: DATABASE_URL, none behind a transaction pooler]
    #[arg(long, env = "TESSERA_DB_LISTEN_URL")]
    pub db_listen_url: Option<String>,
    /// `transaction` behind a transaction pooler such as PgBouncer (no state kept past a transaction), else `none`
    #[arg(long, env = "TESSERA_DB_POOLER", default_value_t = Pooler::default())]
    pub db_pooler: Pooler,
    /// `json` for JSON log lines
    #[arg(long, env = "TESSERA_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Who may sign up, and with which roles.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Users")]
pub struct UserSettings {
    /// `open`: anyone may register (POST /v1/users); `closed`: only an admin may create users
    #[arg(long, env = "TESSERA_REGISTRATION", value_enum, default_value_t = Registration::Open)]
    pub registration: Registration,
    /// Comma-separated roles (worker, assigner, admin) a self-registered user gets
    #[arg(long, env = "TESSERA_DEFAULT_ROLES", default_value = "worker")]
    pub default_roles: Roles,
}

/// Sessions and logins.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Sessions")]
pub struct SessionSettings {
    /// Idle timeout of a session, slid by use
    #[arg(long, env = "TESSERA_SESSION_IDLE_SECS",
          default_value_t = SessionPolicy::default().idle_timeout.as_secs())]
    pub session_idle_secs: u64,
    /// Absolute lifetime of a session; rotation never extends it
    #[arg(long, env = "TESSERA_SESSION_ABSOLUTE_SECS",
          default_value_t = SessionPolicy::default().absolute_lifetime.as_secs())]
    pub session_absolute_secs: u64,
    /// Active sessions per user; a login beyond it revokes the oldest
    #[arg(long, env = "TESSERA_MAX_SESSIONS_PER_USER",
          default_value_t = SessionPolicy::default().max_sessions_per_user.get(),
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions_per_user: u32,
    /// At most one last_seen_at write per session per interval
    #[arg(long, env = "TESSERA_TOUCH_INTERVAL_SECS",
          default_value_t = SessionPolicy::default().touch_interval.as_secs())]
    pub touch_interval_secs: u64,
    /// Failed logins per email and window before 429
    #[arg(long, env = "TESSERA_LOGIN_MAX_FAILURES",
          default_value_t = SessionPolicy::default().max_failed_logins,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures: u32,
    /// Window of the failed-login count
    #[arg(long, env = "TESSERA_LOGIN_FAILURE_WINDOW_SECS",
          default_value_t = SessionPolicy::default().failure_window.as_secs())]
    pub login_failure_window_secs: u64,
    /// A rotated-away token presented again later than this revokes its session (within it: a plain 401)
    #[arg(long, env = "TESSERA_REFRESH_REUSE_GRACE_SECS",
          default_value_t = SessionPolicy::default().reuse_grace.as_secs())]
    pub refresh_reuse_grace_secs: u64,
    /// How long an admin-issued password reset token works
    #[arg(long, env = "TESSERA_PASSWORD_RESET_SECS",
          default_value_t = SessionPolicy::default().reset_lifetime.as_secs())]
    pub password_reset_secs: u64,
    /// Live API keys a user may hold at once; one more is 422
    #[arg(long, env = "TESSERA_API_KEYS_PER_USER",
          default_value_t = SessionPolicy::default().api_keys_per_user,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub api_keys_per_user: u32,
}

/// The work queue.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Queue")]
pub struct QueueSettings {
    /// How long a claim holds a task
    #[arg(long, env = "TESSERA_TASK_LEASE_SECS",
          default_value_t = QueuePolicy::default().lease.as_secs())]
    pub task_lease_secs: u64,
    /// Longest a long-poll claim waits, whatever its wait_ms (at most 30000)
    #[arg(long, env = "TESSERA_TASK_MAX_WAIT_MS",
          default_value_t = QueuePolicy::default().max_wait.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=30_000))]
    pub task_max_wait_ms: u64,
    /// Long-poll claims one session may have waiting; one more gets 429
    #[arg(long, env = "TESSERA_TASK_WAITERS_PER_CREDENTIAL",
          default_value_t = WaiterLimits::default().per_credential)]
    pub task_waiters_per_credential: usize,
    /// Long-poll claims waiting in one instance; one more gets 429
    #[arg(long, env = "TESSERA_TASK_WAITERS_PER_INSTANCE",
          default_value_t = WaiterLimits::default().per_instance)]
    pub task_waiters_per_instance: usize,
    /// How often the task-count deltas are folded
    #[arg(long, env = "TESSERA_TASK_COUNTS_FOLD_SECS",
          default_value_t = QueuePolicy::default().counts_fold_interval.as_secs())]
    pub task_counts_fold_secs: u64,
}

/// The retention cleanup.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Retention")]
pub struct RetentionSettings {
    /// How often the retention cleanup is tried
    #[arg(long, env = "TESSERA_CLEANUP_INTERVAL_SECS",
          default_value_t = RetentionPolicy::default().interval.as_secs())]
    pub cleanup_interval_secs: u64,
    /// Sessions revoked or expired longer ago are deleted
    #[arg(long, env = "TESSERA_SESSION_RETENTION_SECS",
          default_value_t = RetentionPolicy::default().sessions.as_secs())]
    pub session_retention_secs: u64,
    /// Tasks completed, failed or cancelled longer ago are deleted
    #[arg(long, env = "TESSERA_TASK_RETENTION_SECS",
          default_value_t = RetentionPolicy::default().tasks.as_secs())]
    pub task_retention_secs: u64,
    /// Rows per cleanup batch
    #[arg(long, env = "TESSERA_CLEANUP_BATCH",
          default_value_t = RetentionPolicy::default().batch,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub cleanup_batch: i64,
}

/// Password hashing: argon2id's cost and the hashing pool.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Password hashing")]
pub struct HashSettings {
    /// argon2id memory (KiB)
    #[arg(long, env = "TESSERA_ARGON2_M_KIB", default_value_t = HashParams::PRODUCTION.memory_kib)]
    pub argon2_m_kib: u32,
    /// argon2id iterations
    #[arg(long, env = "TESSERA_ARGON2_T", default_value_t = HashParams::PRODUCTION.iterations)]
    pub argon2_t: u32,
    /// argon2id lanes
    #[arg(long, env = "TESSERA_ARGON2_P", default_value_t = HashParams::PRODUCTION.parallelism)]
    pub argon2_p: u32,
    /// Dedicated password-hashing threads [default: all cores but one, at least 1]
    #[arg(long, env = "TESSERA_HASH_WORKERS")]
    pub hash_workers: Option<usize>,
    #[arg(long, env = "TESSERA_HASH_QUEUE_CAPACITY", help = format!(
        "Hashes that may wait for a worker; one more gets 503 [default: {} per worker]",
        HashPoolConfig::QUEUE_PER_WORKER))]
    pub hash_queue_capacity: Option<usize>,
    /// Longest a login or registration waits for a hash worker
    #[arg(long, env = "TESSERA_HASH_WAIT_MS",
          default_value_t = HashPoolConfig::default().wait_deadline.as_millis() as u64)]
    pub hash_wait_ms: u64,
}

/// The queue class's pool (and the base of the others): a profile, then overrides.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection pool")]
pub struct PoolSettings {
    /// A pool profile from the profiles file [default: none, the built-in defaults]
    #[arg(long, env = "TESSERA_POOL_PROFILE")]
    pub pool_profile: Option<String>,
    /// Where pool profiles are read from
    #[arg(
        long,
        env = "TESSERA_POOL_PROFILES_FILE",
        default_value = "config/pool-profiles.toml"
    )]
    pub pool_profiles_file: String,
    #[arg(long, env = "TESSERA_POOL_MAX_SIZE", value_parser = clap::value_parser!(u32).range(1..), help = default_help(
        "Pool size",
        PoolConfig::default().max_size))]
    pub pool_max_size: Option<u32>,
    #[arg(long, env = "TESSERA_POOL_MIN_IDLE", help = default_help(
        "Connections kept open while idle",
        PoolConfig::default().min_idle))]
    pub pool_min_idle: Option<u32>,
    #[arg(long, env = "TESSERA_POOL_CONNECTION_TIMEOUT_MS", help = default_help(
        "Checkout wait before 503",
        PoolConfig::default().connection_timeout_ms))]
    pub pool_connection_timeout_ms: Option<u64>,
    #[arg(long, env = "TESSERA_POOL_IDLE_TIMEOUT_MS", help = default_help(
        "Close connections idle this long",
        PoolConfig::default().idle_timeout_ms))]
    pub pool_idle_timeout_ms: Option<u64>,
    #[arg(long, env = "TESSERA_POOL_MAX_LIFETIME_MS", help = default_help(
        "Close connections this old",
        PoolConfig::default().max_lifetime_ms))]
    pub pool_max_lifetime_ms: Option<u64>,
    #[arg(long, env = "TESSERA_POOL_TEST_ON_CHECKOUT", action = clap::ArgAction::Set, help = default_help(
        "Ping each connection on checkout (one more round trip per request; off: a dead connection fails one request and is dropped)",
        PoolConfig::default().test_on_checkout))]
    pub pool_test_on_checkout: Option<bool>,
    #[arg(long, env = "TESSERA_STATEMENT_TIMEOUT_MS", help = default_help(
        "statement_timeout of the queue class's connections",
        PoolConfig::default().statement_timeout_ms))]
    pub statement_timeout_ms: Option<u64>,
}

/// The bulkheads: the sessions and reads classes' own pools.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Bulkheads")]
pub struct BulkheadSettings {
    /// Connections of the sessions class [default: the profile's max_size]
    #[arg(long, env = "TESSERA_SESSIONS_POOL_MAX_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    pub sessions_pool_max_size: Option<u32>,
    /// statement_timeout of the sessions class
    #[arg(long, env = "TESSERA_SESSIONS_STATEMENT_TIMEOUT_MS",
          default_value_t = Bulkheads::default().sessions_statement_timeout_ms)]
    pub sessions_statement_timeout_ms: u64,
    /// Connections of the reads class (listings, stats, cleanup)
    #[arg(long, env = "TESSERA_READS_POOL_MAX_SIZE",
          default_value_t = Bulkheads::default().reads_max_size,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub reads_pool_max_size: u32,
    /// statement_timeout of the reads class
    #[arg(long, env = "TESSERA_READS_STATEMENT_TIMEOUT_MS",
          default_value_t = Bulkheads::default().reads_statement_timeout_ms)]
    pub reads_statement_timeout_ms: u64,
}

/// A pool setting's help: its default is the profile's, else the built-in one.
fn default_help(what: &str, built_in: impl std::fmt::Debug) -> String {
    format!("{what} [default: the profile's, else {built_in:?}]")
}

impl Settings {
    /// `command` with every setting as a global flag that also reads its
    /// variable, values hidden in `--help`. A variable's value is trimmed
    /// (a secret file's trailing newline is no part of a URL), and an empty
    /// one counts as unset.
    pub fn augment(command: clap::Command) -> clap::Command {
        // The settings' struct docs are not the program's description.
        let about = command.get_about().cloned();
        let command = <Settings as Args>::augment_args(command);
        match about {
            Some(about) => command.about(about),
            None => command,
        }
        .mut_args(|arg| {
            let value = arg.get_env().and_then(std::env::var_os);
            let value = value.as_ref().map(|v| v.to_string_lossy());
            let arg = match value {
                Some(value) if value.trim().is_empty() => arg.env(None),
                // Given as the lowest source but the variable (a flag still
                // wins), never shown: it may be a secret.
                Some(value) if value.trim() != value => arg
                    .env(None)
                    .default_value(value.trim().to_owned())
                    .hide_default_value(true),
                _ => arg,
            };
            arg.global(true).hide_env_values(true).value_name("VALUE")
        })
    }

    /// The settings a command line gave (see [`Settings::augment`]).
    pub fn from_matches(matches: &clap::ArgMatches) -> Result<Settings, clap::Error> {
        Settings::from_arg_matches(matches)
    }

    /// Every default, whatever the environment says: where tests start.
    pub fn defaults() -> Result<Settings, clap::Error> {
        let command = <Settings as Args>::augment_args(clap::Command::new("defaults"))
            .mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(["defaults"])?;
        Settings::from_arg_matches(&matches)
    }

    /// The configuration the service runs with.
    pub fn config(&self) -> Result<ApiConfig, ConfigError> {
        let service = &self.service;
        let database_url = service
            .database_url
            .clone()
            .ok_or_else(|| ConfigError::Invalid {
                var: "DATABASE_URL".into(),
                detail: "is required: set it or pass --database-url \
                         (e.g. postgres://postgres@127.0.0.1:5432/tessera)"
                    .into(),
            })?;
        if self.users.default_roles.contains(Role::Admin) {
            return Err(ConfigError::Invalid {
                var: "TESSERA_DEFAULT_ROLES".into(),
                detail: "may not hold admin: everyone who registers would be one; \
                         make admins with `auth-api users create --role admin`"
                    .into(),
            });
        }
        let listen_url = match (&service.db_listen_url, service.db_pooler) {
            (Some(url), _) => Some(url.clone()),
            (None, Pooler::None) => Some(database_url.clone()),
            (None, Pooler::Transaction) => None,
        };
        Ok(ApiConfig {
            database_url,
            listen_url,
            bind: service.bind.clone(),
            workers: service.workers,
            shutdown_grace_secs: service.shutdown_grace_secs,
            pooler: service.db_pooler,
            trusted_proxies: service.trusted_proxies.clone().unwrap_or_default(),
            registration: self.users.registration,
            default_roles: self.users.default_roles,
            pool: self.pool.config()?,
            bulkheads: self.bulkheads.config(),
            sessions: self.sessions.policy(),
            queue: self.queue.policy(),
            retention: self.retention.policy(),
            hash: self.hashing.params(),
            hash_pool: self.hashing.pool(),
        })
    }
}

impl SessionSettings {
    pub fn policy(&self) -> SessionPolicy {
        SessionPolicy {
            idle_timeout: Duration::from_secs(self.session_idle_secs),
            absolute_lifetime: Duration::from_secs(self.session_absolute_secs),
            max_sessions_per_user: SessionLimit::try_from(self.max_sessions_per_user)
                .unwrap_or(SessionLimit::DEFAULT),
            touch_interval: Duration::from_secs(self.touch_interval_secs),
            max_failed_logins: self.login_max_failures,
            failure_window: Duration::from_secs(self.login_failure_window_secs),
            reuse_grace: Duration::from_secs(self.refresh_reuse_grace_secs),
            reset_lifetime: Duration::from_secs(self.password_reset_secs),
            api_keys_per_user: self.api_keys_per_user,
        }
    }
}

impl QueueSettings {
    pub fn policy(&self) -> QueuePolicy {
        QueuePolicy {
            lease: Duration::from_secs(self.task_lease_secs),
            counts_fold_interval: Duration::from_secs(self.task_counts_fold_secs),
            max_wait: Duration::from_millis(self.task_max_wait_ms),
            waiters: WaiterLimits {
                per_credential: self.task_waiters_per_credential,
                per_instance: self.task_waiters_per_instance,
            },
            ..QueuePolicy::default()
        }
    }
}

impl RetentionSettings {
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            interval: Duration::from_secs(self.cleanup_interval_secs),
            sessions: Duration::from_secs(self.session_retention_secs),
            tasks: Duration::from_secs(self.task_retention_secs),
            batch: self.cleanup_batch,
        }
    }
}

impl HashSettings {
    pub fn params(&self) -> HashParams {
        HashParams {
            memory_kib: self.argon2_m_kib,
            iterations: self.argon2_t,
            parallelism: self.argon2_p,
        }
    }

    pub fn pool(&self) -> HashPoolConfig {
        HashPoolConfig {
            workers: self.hash_workers,
            queue_capacity: self.hash_queue_capacity,
            wait_deadline: Duration::from_millis(self.hash_wait_ms),
        }
    }
}

impl PoolSettings {
    /// The profile (or the built-in defaults), then each override given.
    pub fn config(&self) -> Result<PoolConfig, ConfigError> {
        let mut config = match self.pool_profile.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => {
                PoolProfiles::load(Path::new(&self.pool_profiles_file))?.get(name)?
            }
            _ => PoolConfig::default(),
        };
        config.max_size = self.pool_max_size.unwrap_or(config.max_size);
        config.min_idle = self.pool_min_idle.or(config.min_idle);
        config.connection_timeout_ms = self
            .pool_connection_timeout_ms
            .unwrap_or(config.connection_timeout_ms);
        config.idle_timeout_ms = self.pool_idle_timeout_ms.or(config.idle_timeout_ms);
        config.max_lifetime_ms = self.pool_max_lifetime_ms.or(config.max_lifetime_ms);
        config.test_on_checkout = self
            .pool_test_on_checkout
            .unwrap_or(config.test_on_checkout);
        config.statement_timeout_ms = self
            .statement_timeout_ms
            .unwrap_or(config.statement_timeout_ms);
        if config.max_size == 0 {
            return Err(ConfigError::Invalid {
                var: "TESSERA_POOL_MAX_SIZE".into(),
                detail: "must be at least 1 (the profile says 0)".into(),
            });
        }
        Ok(config)
    }
}

impl BulkheadSettings {
    pub fn config(&self) -> Bulkheads {
        Bulkheads {
            sessions_max_size: self.sessions_pool_max_size,
            sessions_statement_timeout_ms: self.sessions_statement_timeout_ms,
            reads_max_size: self.reads_pool_max_size,
            reads_statement_timeout_ms: self.reads_statement_timeout_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    fn with(args: &[&str]) -> Settings {
        let command = Settings::augment(clap::Command::new("auth-api"));
        let matches = command
            .try_get_matches_from(
                [&["auth-api", "--database-url", "postgres://x/y"], args].concat(),
            )
            .unwrap();
        Settings::from_matches(&matches).unwrap()
    }

    #[test]
    fn default_roles_are_read_and_admin_is_refused_among_them() {
        let config = with(&["--default-roles", "worker, assigner"])
            .config()
            .unwrap();
        assert_eq!(config.default_roles.to_string(), "worker,assigner");
        let refused = with(&["--default-roles", "worker,admin"])
            .config()
            .unwrap_err();
        assert!(
            refused.to_string().contains("TESSERA_DEFAULT_ROLES"),
            "{refused}"
        );
        let command = Settings::augment(clap::Command::new("auth-api"));
        assert!(
            command
                .try_get_matches_from(["auth-api", "--default-roles", "root"])
                .is_err()
        );
        assert!(
            Settings::augment(clap::Command::new("auth-api"))
                .try_get_matches_from(["auth-api", "--registration", "maybe"])
                .is_err()
        );
    }

    /// One name per setting: its flag is its variable's, without `TESSERA_`.
    #[test]
    fn every_flag_is_named_after_its_variable() {
        let command = Settings::augment(clap::Command::new("auth-api"));
        let mut named = 0;
        for arg in command.get_arguments() {
            let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
                continue;
            };
            let flag = var
                .trim_start_matches("TESSERA_")
                .to_ascii_lowercase()
                .replace('_', "-");
            assert_eq!(arg.get_long(), Some(flag.as_str()), "{var}");
            named += 1;
        }
        assert!(named > 30, "only {named} settings");
    }

    /// The defaults are auth-core's, and the environment does not reach them.
    #[test]
    fn the_defaults_are_the_domains_own() {
        let settings = Settings::defaults().unwrap();
        assert_eq!(
            settings.sessions.policy().idle_timeout,
            auth_core::config::SessionPolicy::default().idle_timeout
        );
        assert_eq!(
            settings.retention.policy(),
            auth_core::config::RetentionPolicy::default()
        );
        assert_eq!(settings.service.database_url, None);
        assert!(settings.config().is_err(), "DATABASE_URL is required");
    }

    #[test]
    fn a_flag_is_checked_where_it_is_read() {
        let command = Settings::augment(clap::Command::new("auth-api"));
        for bad in [
            ["auth-api", "--login-max-failures", "0"],
            ["auth-api", "--task-max-wait-ms", "30001"],
            ["auth-api", "--cleanup-batch", "0"],
            ["auth-api", "--db-pooler", "session"],
            ["auth-api", "--trusted-proxies", "not-an-address"],
        ] {
            assert!(
                command.clone().try_get_matches_from(bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
