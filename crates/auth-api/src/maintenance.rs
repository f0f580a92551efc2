//! Upkeep the service does for itself while it runs: storing as failed the
//! tasks whose lease lapsed on their last attempt, and folding the
//! task-count deltas, so a stats call sums a few rows per status, not every
//! write; and the retention cleanup.

use auth_core::queue::TaskQueue;
use auth_core::retention::{Cleanup, CleanupRun};
use std::sync::Weak;
use std::time::Duration;

/// Folds every `every` (the first fold one interval after start) until
/// `alive` has no owner left (the service and its workers dropped their
/// state). Any number of instances may fold at once; a failed fold
/// (database down) is retried at the next tick.
pub fn spawn_count_folding(queue: TaskQueue, every: Duration, alive: Weak<()>) {
    tokio::spawn(async move {
        let every = every.max(Duration::from_millis(100));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.upgrade().is_none() {
                break;
            }
            if let Err(e) = queue.fail_spent_leases().await {
                tracing::warn!(error = %e, "storing lapsed last attempts as failed failed; retrying at the next tick");
            }
            if let Err(e) = queue.compact_counts().await {
                tracing::warn!(error = %e, "folding task counts failed; retrying at the next tick");
            }
        }
    });
}

/// Runs the cleanup every `every` (the first run one interval after start)
/// until `alive` has no owner left. Every instance tries; the cleanup's
/// try-lock lets one delete at a time. A failed run is retried next time.
pub fn spawn_cleanup(cleanup: Cleanup, every: Duration, alive: Weak<()>) {
    tokio::spawn(async move {
        let every = every.max(Duration::from_secs(1));
        loop {
            tokio::time::sleep(every).await;
            if alive.upgrade().is_none() {
                break;
            }
            match cleanup.run().await {
                Ok(CleanupRun::Done(p)) if p != Default::default() => tracing::info!(
                    sessions = p.sessions,
                    api_keys = p.api_keys,
                    login_attempts = p.login_attempts,
                    tasks = p.tasks,
                    "cleanup purged rows past their retention"
                ),
                Ok(CleanupRun::Yielded(_)) => {
                    tracing::debug!("cleanup yielded: another instance runs it");
                }
                Ok(CleanupRun::Done(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cleanup failed; retrying at the next interval")
                }
            }
        }
    });
}
