//! Retention: the periodic cleanup of what no rule reads any more (the
//! contract's "Retention" sections). Sessions and API keys revoked or
//! expired more than the session retention ago, login attempts that left the limit's window,
//! and tasks finished (completed, failed, cancelled) more than the task retention ago are deleted in
//! bounded batches, each its own short transaction that skips locked rows.
//! Every batch first takes the cleanup's advisory lock with a try-lock: an
//! instance that finds it taken stops its run, so at most one instance
//! deletes at a time, and a crashed one holds nothing.

use crate::config::RetentionPolicy;
use crate::db::Db;
use crate::error::StoreError;
use crate::store::retention;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What one run deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub api_keys: u64,
    pub login_attempts: u64,
    pub tasks: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupRun {
    /// Every backlog drained (each last batch came back short).
    Done(Purged),
    /// Another instance holds the cleanup's lock; this one deleted `Purged`
    /// before it noticed (nothing, when it noticed at the first batch).
    Yielded(Purged),
}

/// Counters since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct CleanupStats {
    pub sessions: AtomicU64,
    pub api_keys: AtomicU64,
    pub login_attempts: AtomicU64,
    pub tasks: AtomicU64,
    /// Unix seconds of the last completed run; 0 before the first.
    pub last_run_unix: AtomicI64,
}

#[derive(Clone, Copy)]
enum Table {
    Sessions,
    ApiKeys,
    LoginAttempts,
    Tasks,
}

impl Table {
    const ALL: [Table; 4] = [
        Table::Sessions,
        Table::ApiKeys,
        Table::LoginAttempts,
        Table::Tasks,
    ];

    fn purge(self) -> retention::Purge {
        match self {
            Table::Sessions => retention::SESSIONS,
            Table::ApiKeys => retention::API_KEYS,
            Table::LoginAttempts => retention::LOGIN_ATTEMPTS,
            Table::Tasks => retention::FINISHED_TASKS,
        }
    }
}

impl Purged {
    fn of(&mut self, table: Table) -> &mut u64 {
        match table {
            Table::Sessions => &mut self.sessions,
            Table::ApiKeys => &mut self.api_keys,
            Table::LoginAttempts => &mut self.login_attempts,
            Table::Tasks => &mut self.tasks,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Cleanup {
    db: Db,
    policy: RetentionPolicy,
    /// Login attempts older than this no longer count (the limit's window).
    login_window: Duration,
    stats: Arc<CleanupStats>,
}

impl Cleanup {
    pub fn new(db: Db, policy: RetentionPolicy, login_window: Duration) -> Cleanup {
        Cleanup {
            db,
            policy,
            login_window,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &CleanupStats {
        &self.stats
    }

    /// Deletes every row past its retention, batch by batch.
    pub async fn run(&self) -> Result<CleanupRun, StoreError> {
        let mut purged = Purged::default();
        for table in Table::ALL {
            loop {
                let Some(n) = self.batch(table).await? else {
                    return Ok(CleanupRun::Yielded(purged));
                };
                *purged.of(table) += n;
                let counter = match table {
                    Table::Sessions => &self.stats.sessions,
                    Table::ApiKeys => &self.stats.api_keys,
                    Table::LoginAttempts => &self.stats.login_attempts,
                    Table::Tasks => &self.stats.tasks,
                };
                counter.fetch_add(n, Ordering::Relaxed);
                if n < self.policy.batch as u64 {
                    break;
                }
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.stats
            .last_run_unix
            .store(i64::try_from(now).unwrap_or(i64::MAX), Ordering::Relaxed);
        Ok(CleanupRun::Done(purged))
    }

    /// What a run would delete now (nothing is deleted).
    pub async fn due(&self) -> Result<Purged, StoreError> {
        self.db
            .run(async |conn| {
                let mut due = Purged::default();
                for table in Table::ALL {
                    *due.of(table) =
                        retention::count_due(conn, table.purge(), self.age(table)).await?;
                }
                Ok(due)
            })
            .await
    }

    /// One batch under the try-lock; `None` when another instance holds it.
    async fn batch(&self, table: Table) -> Result<Option<u64>, StoreError> {
        let (age, batch) = (self.age(table), self.policy.batch);
        self.db
            .transaction(async move |conn| {
                if !retention::try_lock_cleanup(conn).await? {
                    return Ok(None);
                }
                Ok(Some(
                    retention::purge(conn, table.purge(), age, batch).await?,
                ))
            })
            .await
    }

    fn age(&self, table: Table) -> Duration {
        match table {
            Table::Sessions | Table::ApiKeys => self.policy.sessions,
            Table::LoginAttempts => self.login_window,
            Table::Tasks => self.policy.tasks,
        }
    }
}
