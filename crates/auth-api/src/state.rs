//! What every handler can reach.

use crate::metrics::Metrics;
use auth_core::auth::SessionService;
use auth_core::db::Pools;
use auth_core::queue::TaskQueue;

#[derive(Clone)]
pub struct AppState {
    /// One pool per class of request (the bulkheads).
    pub pools: Pools,
    pub sessions: SessionService,
    pub queue: TaskQueue,
    pub metrics: Metrics,
    /// Owned by every holder of the state; background upkeep stops once
    /// none is left.
    pub alive: std::sync::Arc<()>,
}
