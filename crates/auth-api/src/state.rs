//! What every handler can reach.

use crate::metrics::Metrics;
use auth_core::auth::SessionService;
use auth_core::db::Pools;
use auth_core::queue::TaskQueue;
use auth_core::retention::Cleanup;

#[derive(Clone)]
pub struct AppState {
    /// One pool per class of request (the bulkheads).
    pub pools: Pools,
    pub sessions: SessionService,
    pub queue: TaskQueue,
    /// Retention: runs every `TESSERA_CLEANUP_INTERVAL_SECS` (one instance at a time).
    pub cleanup: Cleanup,
    pub metrics: Metrics,
    /// Who may register themselves, and with which roles.
    pub registration: crate::config::Registration,
    pub default_roles: auth_core::domain::Roles,
    /// Whose `X-Forwarded-For` a login believes for its session's IP.
    pub trusted_proxies: std::sync::Arc<crate::client::TrustedProxies>,
    /// `true` once the schema is migrated: until then `/readyz` and the
    /// `/v1` routes answer 503.
    pub migrated: tokio::sync::watch::Receiver<bool>,
    /// Owned by every holder of the state; background upkeep stops once
    /// none is left.
    pub alive: std::sync::Arc<()>,
}
