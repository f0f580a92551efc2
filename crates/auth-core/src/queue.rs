//! The shared work queue: batch create, claim, complete, release, list, stats.

use crate::config::QueuePolicy;
use crate::db::Db;
use crate::domain::{FieldError, TaskStatus};
use crate::error::{QueueError, StoreError};
use crate::store::tasks::{self, ClaimRequest, TaskCounts, TaskRow};
use uuid::Uuid;

type Result<T, E = QueueError> = std::result::Result<T, E>;

pub const MAX_BATCH: usize = 1000;
pub const MAX_TITLE_CHARS: usize = 500;
pub const MAX_CLAIM: i64 = 30;
pub const MAX_LIST: i64 = 1000;
pub const DEFAULT_LIST: i64 = 100;

/// A task to create.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub title: String,
    pub schedulable: bool,
}

/// What one claim did: how many were asked for and exactly the tasks this
/// call assigned. `claimed() == 0` means none were free; it is not an error.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimOutcome {
    pub requested: i64,
    claimed: usize,
    pub tasks: Vec<TaskRow>,
}

impl ClaimOutcome {
    fn new(requested: i64, tasks: Vec<TaskRow>) -> ClaimOutcome {
        or_fault!(ClaimReportsRequested => ClaimOutcome {
            requested,
            claimed: requested as usize,
            tasks,
        });
        ClaimOutcome {
            requested,
            claimed: tasks.len(),
            tasks,
        }
    }

    /// The number of tasks this call assigned.
    pub fn claimed(&self) -> usize {
        self.claimed
    }
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub assignee: Option<Uuid>,
    pub limit: Option<i64>,
}

/// Why a title cannot be stored, if it cannot. PostgreSQL's text cannot
/// hold NUL, so a title with one would otherwise fail at the database (a 500).
fn title_problem(title: &str) -> Option<&'static str> {
    if !(1..=MAX_TITLE_CHARS).contains(&title.chars().count()) {
        Some("must be 1 to 500 characters")
    } else if title.contains('\0') {
        Some("must not contain NUL characters")
    } else {
        None
    }
}

/// The queue's operations. Writes (create, claim, complete, release, the
/// counts' folding) use `db`; listings and stats, whose cost the caller
/// chooses, use `reads`, a bulkhead of their own.
#[derive(Clone, Debug)]
pub struct TaskQueue {
    db: Db,
    reads: Db,
    policy: QueuePolicy,
}

impl TaskQueue {
    pub fn new(db: Db, reads: Db, policy: QueuePolicy) -> TaskQueue {
        TaskQueue { db, reads, policy }
    }

    /// Creates 1..=1000 tasks in one statement.
    pub async fn create(&self, batch: Vec<NewTask>) -> Result<Vec<TaskRow>> {
        if batch.is_empty() || batch.len() > MAX_BATCH {
            return Err(QueueError::invalid("tasks", "must list 1 to 1000 tasks"));
        }
        let errors: Vec<FieldError> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                title_problem(&t.title).map(|why| FieldError::new(format!("tasks[{i}].title"), why))
            })
            .take(crate::domain::MAX_FIELD_ERRORS + 1)
            .collect();
        if !errors.is_empty() {
            return Err(QueueError::Invalid(errors));
        }
        let rows: Vec<(Uuid, String, bool)> = batch
            .into_iter()
            .map(|t| (Uuid::new_v4(), t.title, t.schedulable))
            .collect();
        self.db
            .run(async |conn| Ok(tasks::insert_batch(conn, &rows).await?))
            .await
    }

    /// Claims up to `count` (1..=30) tasks for `assignee` (default: the caller).
    pub async fn claim(
        &self,
        caller: Uuid,
        count: i64,
        assignee: Option<Uuid>,
    ) -> Result<ClaimOutcome> {
        if !(1..=MAX_CLAIM).contains(&count) {
            return Err(QueueError::invalid("count", "must be between 1 and 30"));
        }
        let lease = self.policy.lease;
        self.db
            .run(async |conn| {
                let assignee = match assignee {
                    Some(id) if id != caller => {
                        if !crate::store::users::exists(conn, id).await? {
                            return Err(QueueError::invalid("assignee_id", "no such user"));
                        }
                        id
                    }
                    _ => caller,
                };
                let req = ClaimRequest {
                    count,
                    assignee,
                    assigned_by: caller,
                    lease,
                };
                let claimed = tasks::claim(conn, req).await?;
                Ok(ClaimOutcome::new(count, claimed))
            })
            .await
    }

    /// Completes a task the caller holds under a live lease.
    pub async fn complete(&self, caller: Uuid, id: Uuid) -> Result<TaskRow> {
        self.db
            .run(
                async |conn| match tasks::complete(conn, id, caller, None).await? {
                    Some(row) => Ok(row),
                    None => Err(why_not_held(conn, id).await?),
                },
            )
            .await
    }

    /// Returns a task the caller holds to the queue.
    pub async fn release(&self, caller: Uuid, id: Uuid) -> Result<TaskRow> {
        self.db
            .run(
                async |conn| match tasks::release(conn, id, caller, None).await? {
                    Some(row) => Ok(row),
                    None => Err(why_not_held(conn, id).await?),
                },
            )
            .await
    }

    pub async fn list(&self, filter: TaskFilter) -> Result<Vec<TaskRow>> {
        let limit = filter.limit.unwrap_or(DEFAULT_LIST);
        if !(1..=MAX_LIST).contains(&limit) {
            return Err(QueueError::Invalid(vec![FieldError::new(
                "limit",
                "must be between 1 and 1000",
            )]));
        }
        self.reads
            .run(async |conn| Ok(tasks::list(conn, filter.status, filter.assignee, limit).await?))
            .await
    }

    pub async fn stats(&self) -> Result<TaskCounts> {
        self.reads
            .run(async |conn| Ok(tasks::counts(conn).await?))
            .await
    }

    /// Folds the count deltas the writers appended (the service runs this
    /// every few seconds; any number of instances may run it at once).
    pub async fn compact_counts(&self) -> Result<usize> {
        self.db
            .run(async |conn| Ok(tasks::compact_counts(conn).await?))
            .await
    }
}

/// Why a task the caller tried to finish is not theirs to finish.
async fn why_not_held(
    conn: &mut diesel_async::AsyncPgConnection,
    id: Uuid,
) -> Result<QueueError, StoreError> {
    Ok(if tasks::find(conn, id).await?.is_some() {
        QueueError::NotAssignee
    } else {
        QueueError::NotFound
    })
}
