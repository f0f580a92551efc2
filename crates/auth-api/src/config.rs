//! The service's configuration, from the environment.

use auth_core::config::{
    Bulkheads, ConfigError, HashParams, HashPoolConfig, PoolConfig, Pooler, QueuePolicy,
    RetentionPolicy, SessionPolicy, env_opt, env_or,
};

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `DATABASE_URL` (required).
    pub database_url: String,
    /// `TESSERA_BIND`, default `127.0.0.1:8080`.
    pub bind: String,
    /// `TESSERA_WORKERS`: actix worker threads, default one per core.
    pub workers: Option<usize>,
    /// `TESSERA_SHUTDOWN_GRACE_SECS`: how long in-flight requests may finish on SIGTERM (default 30).
    pub shutdown_grace_secs: u64,
    /// The pool profile: the queue class's pool, and the base of the others.
    pub pool: PoolConfig,
    /// `TESSERA_DB_POOLER`: `transaction` behind PgBouncer's transaction pooling.
    pub pooler: Pooler,
    /// `TESSERA_DB_LISTEN_URL`: where long-poll wake-ups are listened for
    /// (a session of its own; default `DATABASE_URL`, except behind a
    /// transaction pooler, where LISTEN cannot work: none).
    pub listen_url: Option<String>,
    /// `TESSERA_TRUSTED_PROXIES`: whose `X-Forwarded-For` names the client.
    pub trusted_proxies: crate::client::TrustedProxies,
    pub bulkheads: Bulkheads,
    pub sessions: SessionPolicy,
    pub queue: QueuePolicy,
    pub retention: RetentionPolicy,
    pub hash: HashParams,
    pub hash_pool: HashPoolConfig,
}

impl ApiConfig {
    /// Reads every variable listed on the fields above, plus those of
    /// [`PoolConfig::from_env`], [`Bulkheads::from_env`], [`SessionPolicy::from_env`],
    /// [`QueuePolicy::from_env`], [`RetentionPolicy::from_env`], [`HashParams::from_env`] and
    /// [`HashPoolConfig::from_env`].
    pub fn from_env() -> Result<ApiConfig, ConfigError> {
        let database_url =
            env_opt::<String>("DATABASE_URL")?.ok_or_else(|| ConfigError::Invalid {
                var: "DATABASE_URL".into(),
                detail: "is required (e.g. postgres://postgres@127.0.0.1:5432/tessera)".into(),
            })?;
        let pooler = Pooler::from_env()?;
        let listen_url = match env_opt::<String>("TESSERA_DB_LISTEN_URL")? {
            Some(url) => Some(url),
            None if pooler == Pooler::None => Some(database_url.clone()),
            None => None,
        };
        Ok(ApiConfig {
            database_url,
            listen_url,
            bind: env_or("TESSERA_BIND", "127.0.0.1:8080".to_string())?,
            workers: env_opt("TESSERA_WORKERS")?,
            shutdown_grace_secs: env_or("TESSERA_SHUTDOWN_GRACE_SECS", 30)?,
            pool: PoolConfig::from_env()?,
            pooler,
            trusted_proxies: crate::client::TrustedProxies::from_env()?,
            bulkheads: Bulkheads::from_env()?,
            sessions: SessionPolicy::from_env()?,
            queue: QueuePolicy::from_env()?,
            retention: RetentionPolicy::from_env()?,
            hash: HashParams::from_env()?,
            hash_pool: HashPoolConfig::from_env()?,
        })
    }
}
