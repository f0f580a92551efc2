//! The configuration the service runs with: what [`crate::settings`]
//! resolves the flags and variables to, or what a test builds from
//! [`crate::settings::Settings::defaults`].

use auth_core::config::{
    Bulkheads, HashParams, HashPoolConfig, PoolConfig, Pooler, QueuePolicy, RetentionPolicy,
    SessionPolicy,
};
use auth_core::domain::Roles;

/// Who may create users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Registration {
    /// Anyone (`POST /v1/users` without a token).
    Open,
    /// Only an admin.
    Closed,
}

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
    pub registration: Registration,
    /// What a self-registered user holds.
    pub default_roles: Roles,
    pub bulkheads: Bulkheads,
    pub sessions: SessionPolicy,
    pub queue: QueuePolicy,
    pub retention: RetentionPolicy,
    pub hash: HashParams,
    pub hash_pool: HashPoolConfig,
}
