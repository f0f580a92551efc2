//! Upkeep the service does for itself while it runs: folding the task-count
//! deltas, so a stats call sums a few rows per status, not every write.

use auth_core::queue::TaskQueue;
use std::sync::Weak;
use std::time::Duration;

/// Folds every `every` until `alive` has no owner left (the service and its
/// workers dropped their state). Any number of instances may fold at once;
/// a failed fold (database down) is retried at the next tick.
pub fn spawn_count_folding(queue: TaskQueue, every: Duration, alive: Weak<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.upgrade().is_none() {
                break;
            }
            if let Err(e) = queue.compact_counts().await {
                tracing::warn!(error = %e, "folding task counts failed; retrying at the next tick");
            }
        }
    });
}
