//! The configuration the service runs with: what [`crate::settings`]
//! resolves the flags and variables to, or what a test builds from
//! [`crate::settings::Settings::defaults`].

use auth_core::config::{
    Bulkheads, HashParams, HashPoolConfig, PoolConfig, Pooler, QueuePolicy, RetentionPolicy,
    SessionPolicy,
};

/// What each field means, its variable and its default: the setting of
/// the same name in [`crate::settings`].
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub database_url: String,
    pub bind: String,
    pub workers: Option<usize>,
    pub shutdown_grace_secs: u64,
    /// The queue class's pool, and the base of the others.
    pub pool: PoolConfig,
    pub pooler: Pooler,
    /// Where long-poll wake-ups are listened for (a session of its own):
    /// none behind a transaction pooler unless given.
    pub listen_url: Option<String>,
    pub trusted_proxies: crate::client::TrustedProxies,
    pub bulkheads: Bulkheads,
    pub sessions: SessionPolicy,
    pub queue: QueuePolicy,
    pub retention: RetentionPolicy,
    pub hash: HashParams,
    pub hash_pool: HashPoolConfig,
}
