//! The shared work queue: batch create (idempotent by key), claim (also
//! long-poll), heartbeat, complete, fail (with retries), release, cancel,
//! list, stats.

use crate::config::QueuePolicy;
use crate::db::Db;
use crate::domain::{FieldError, TaskStatus};
use crate::error::{QueueError, StoreError};
use crate::store::tasks::{self, ClaimRequest, NewTaskRow, TaskCounts, TaskRow};
use crate::wakeups::{Wakeups, Woken};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

type Result<T, E = QueueError> = std::result::Result<T, E>;

pub const MAX_BATCH: usize = 1000;
pub const MAX_TITLE_CHARS: usize = 500;
pub const MAX_CLAIM: i64 = 30;
pub const MAX_LIST: i64 = 1000;
pub const DEFAULT_LIST: i64 = 100;
pub const PRIORITIES: std::ops::RangeInclusive<i32> = -1000..=1000;
pub const MAX_ATTEMPTS: std::ops::RangeInclusive<i32> = 1..=100;
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
pub const MAX_KEY_CHARS: usize = 200;
pub const MAX_ERROR_CHARS: usize = 2000;
pub const MAX_WAIT_MS: u64 = 30_000;
pub const LEASE_SECS: std::ops::RangeInclusive<u64> = 1..=3600;

/// A task to create.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub title: String,
    pub schedulable: bool,
    pub priority: i32,
    pub not_before: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    /// An idempotency key: a task with this key already stored is returned
    /// in place of a new one.
    pub key: Option<String>,
}

impl NewTask {
    /// A task with the contract's defaults.
    pub fn titled(title: impl Into<String>) -> NewTask {
        NewTask {
            title: title.into(),
            schedulable: true,
            priority: 0,
            not_before: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            key: None,
        }
    }
}

/// What a create did: every task in the order asked (an existing task in
/// place of each known key) and how many rows are new.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub tasks: Vec<TaskRow>,
    pub created: usize,
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

/// Why a text cannot be stored, if it cannot. PostgreSQL's text cannot
/// hold NUL, so a text with one would otherwise fail at the database (a 500).
fn text_problem(text: &str, max_chars: usize) -> Option<String> {
    if !(1..=max_chars).contains(&text.chars().count()) {
        Some(format!("must be 1 to {max_chars} characters"))
    } else if text.contains('\0') {
        Some("must not contain NUL characters".into())
    } else {
        None
    }
}

/// Every problem of one item of a batch.
fn task_problems(i: usize, t: &NewTask) -> impl Iterator<Item = FieldError> {
    let field = move |name: &str| format!("tasks[{i}].{name}");
    [
        text_problem(&t.title, MAX_TITLE_CHARS).map(|why| FieldError::new(field("title"), why)),
        (!PRIORITIES.contains(&t.priority))
            .then(|| FieldError::new(field("priority"), "must be between -1000 and 1000")),
        (!MAX_ATTEMPTS.contains(&t.max_attempts))
            .then(|| FieldError::new(field("max_attempts"), "must be between 1 and 100")),
        t.key
            .as_deref()
            .and_then(|k| text_problem(k, MAX_KEY_CHARS))
            .map(|why| FieldError::new(field("key"), why)),
    ]
    .into_iter()
    .flatten()
}

/// How long a long-poll claim may wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wait(Duration);

impl Wait {
    /// `wait_ms` of a claim: 0..=30000.
    /// What is left of this wait once `spent` of it has passed (the wait
    /// counts from the request's arrival, not from when the claim starts).
    pub fn less(self, spent: Duration) -> Wait {
        Wait(self.0.saturating_sub(spent))
    }

    pub fn from_millis(ms: i64) -> Result<Wait, QueueError> {
        match u64::try_from(ms) {
            Ok(ms) if ms <= MAX_WAIT_MS => Ok(Wait(Duration::from_millis(ms))),
            _ => Err(QueueError::invalid(
                "wait_ms",
                "must be between 0 and 30000",
            )),
        }
    }
}

/// Who asks for a claim: the user, and the credential they sent (the
/// bound on long polls is per credential).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant {
    pub user: Uuid,
    pub credential: Uuid,
}

/// The queue's operations. Writes (create, claim, complete, release, the
/// counts' folding) use `db`; listings and stats, whose cost the caller
/// chooses, use `reads`, a bulkhead of their own.
#[derive(Clone, Debug)]
pub struct TaskQueue {
    db: Db,
    reads: Db,
    policy: QueuePolicy,
    wakeups: Wakeups,
    /// Tasks claimed for a caller that was gone by then, handed back.
    handed_back: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl TaskQueue {
    pub fn new(db: Db, reads: Db, policy: QueuePolicy) -> TaskQueue {
        TaskQueue {
            db,
            reads,
            wakeups: Wakeups::new(policy.waiters),
            policy,
            handed_back: Default::default(),
        }
    }

    /// Tasks handed back since start because their claimant had hung up.
    pub fn handed_back(&self) -> u64 {
        self.handed_back.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The instance's wake-ups: its listener, waiter count and shutdown.
    pub fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// Creates 1..=1000 tasks for `creator` in one statement; a key the
    /// creator already holds (or repeated within the batch) yields its
    /// existing task instead, and another creator's key is another key. A
    /// key sent with other content than its task was created with is
    /// `KeyConflict`, and the batch creates nothing (one transaction).
    pub async fn create(&self, creator: Uuid, batch: Vec<NewTask>) -> Result<Created> {
        if batch.is_empty() || batch.len() > MAX_BATCH {
            return Err(QueueError::invalid("tasks", "must list 1 to 1000 tasks"));
        }
        let errors: Vec<FieldError> = batch
            .iter()
            .enumerate()
            .flat_map(|(i, t)| task_problems(i, t))
            .take(crate::domain::MAX_FIELD_ERRORS + 1)
            .collect();
        if !errors.is_empty() {
            return Err(QueueError::Invalid(errors));
        }
        let plan = BatchPlan::of(batch)?;
        // Only a keyed batch can meet a conflict after inserting rows:
        // it runs in a transaction, so a conflict leaves nothing behind,
        // its keys locked first (`tasks::LOCK_KEYS`: two batches of one
        // creator never deadlock). An unkeyed one is one statement, atomic
        // as it is.
        let keys: Vec<String> = plan.digests.keys().cloned().collect();
        self.db
            .run(async |conn| match keys.is_empty() {
                false => {
                    crate::db::atomic(conn, async |conn| {
                        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                        tasks::lock_keys(conn, creator, &keys).await?;
                        insert_planned(conn, creator, &plan).await
                    })
                    .await
                }
                true => insert_planned(conn, creator, &plan).await,
            })
            .await
    }

    /// Claims up to `count` (1..=30) tasks for `assignee` (default: the
    /// caller). When none is claimable it waits up to `wait` (capped by the
    /// policy) for some to become so, trying again on every wake-up (a
    /// notification, or the instance's one re-check a second), and answers
    /// as soon as it claimed one or more, or when the wait ends or the
    /// service stops (`claimed() == 0`). A claim that would wait is
    /// refused at once past the bounds on waiters (`TooManyWaiters`).
    ///
    /// A caller that hangs up is dropped from its wait: nothing is claimed
    /// for it afterwards, and what a try under way claims for it is handed
    /// back ([`TaskQueue::claim_once`]).
    pub async fn claim(
        &self,
        claimant: Claimant,
        count: i64,
        assignee: Option<Uuid>,
        wait: Wait,
    ) -> Result<ClaimOutcome> {
        if !(1..=MAX_CLAIM).contains(&count) {
            return Err(QueueError::invalid("count", "must be between 1 and 30"));
        }
        let wait = wait.0.min(self.policy.max_wait);
        let pass = match wait.is_zero() {
            true => None,
            false => Some(self.wakeups.admit(claimant.credential)?),
        };
        let deadline = Instant::now() + wait;
        // Subscribed before the first try, so an arrival during it is not
        // lost; only a claim that may wait (a wake-up to one that will not
        // would wait for its try to end before it passes on).
        let mut woken = pass.as_ref().map(|_| self.wakeups.subscribe());
        let caller = claimant.user;
        let assignee = assignee.unwrap_or(caller);
        let mut claimed = self
            .claim_once(
                self.claim_request(count, assignee, caller),
                assignee != caller,
            )
            .await?;
        while let Some(woken) = woken.as_mut().filter(|_| claimed.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if woken.wait(left).await != Woken::TryAgain {
                break;
            }
            let req = self.claim_request(count, assignee, caller);
            claimed = match self.claim_once(req, false).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    // This try may have used the wake-up: pass it on.
                    self.wakeups.wake();
                    return Err(e);
                }
            };
            // Took all it asked for: there may be more for the next waiter.
            if claimed.len() as i64 == count {
                self.wakeups.wake();
            }
        }
        Ok(ClaimOutcome::new(count, claimed))
    }

    /// One try, in a task of its own so that it runs to its end whatever
    /// becomes of the caller: if the caller is gone once the tasks are
    /// claimed (its client hung up, and actix dropped the request), they
    /// are released at once, each under the fence of the claim that took
    /// it, with its attempt handed back, instead of staying leased to
    /// nobody. `check_assignee`: the assignee is another user, who must be
    /// enabled and hold `worker`.
    async fn claim_once(&self, req: ClaimRequest, check_assignee: bool) -> Result<Vec<TaskRow>> {
        let (queue, undo) = (self.clone(), self.clone());
        let claimed = crate::detached::to_end(
            async move {
                queue
                    .db
                    .run(async |conn| {
                        if check_assignee
                            && !crate::store::users::may_work(conn, req.assignee).await?
                        {
                            return Err(QueueError::invalid(
                                "assignee_id",
                                "no such user, or one who does not hold the worker role, or a disabled one",
                            ));
                        }
                        Ok(claim_due(conn, req).await?)
                    })
                    .await
            },
            move |unanswered: Result<Vec<TaskRow>>| async move {
                if let Ok(tasks) = unanswered
                    && !tasks.is_empty()
                {
                    undo.hand_back(req.assignee, tasks).await;
                }
            },
        )
        .await;
        claimed.unwrap_or_else(|| {
            Err(StoreError::Unavailable(
                crate::error::Unavailable::ConnectionLost,
                "the claim ended without an answer".into(),
            )
            .into())
        })
    }

    /// Releases tasks claimed for a caller that was gone, each fenced by
    /// the claim that took it (so nothing its assignee did meanwhile is
    /// undone), handing their attempts back; returns how many.
    async fn hand_back(&self, assignee: Uuid, claimed: Vec<TaskRow>) -> u64 {
        or_fault!(HungUpClaimsKept => 0);
        let released = self
            .db
            .run(async |conn| {
                let mut released = 0u64;
                for task in &claimed {
                    let back = tasks::release(conn, task.id, assignee, Some(task.attempt)).await?;
                    released += u64::from(back.is_some());
                }
                Ok::<_, StoreError>(released)
            })
            .await;
        match released {
            Ok(n) => {
                self.handed_back
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    tasks = n,
                    "claimed tasks handed back: the client hung up before its answer"
                );
                n
            }
            // Their leases lapse instead; nothing else can be done here.
            Err(e) => {
                tracing::warn!(error = %e, tasks = claimed.len(),
                    "claimed tasks of a client that hung up could not be handed back; their leases will lapse");
                0
            }
        }
    }

    fn claim_request(&self, count: i64, assignee: Uuid, caller: Uuid) -> ClaimRequest {
        ClaimRequest {
            count,
            assignee,
            assigned_by: caller,
            lease: self.policy.lease,
        }
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

    /// Extends the lease of a task the caller holds: `lease_secs` (1..=3600,
    /// default the policy's lease) from now.
    pub async fn heartbeat(
        &self,
        caller: Uuid,
        id: Uuid,
        lease_secs: Option<u64>,
    ) -> Result<TaskRow> {
        let lease = match lease_secs {
            None => self.policy.lease,
            Some(s) if LEASE_SECS.contains(&s) => Duration::from_secs(s),
            Some(_) => {
                return Err(QueueError::invalid(
                    "lease_secs",
                    "must be between 1 and 3600",
                ));
            }
        };
        self.db
            .run(
                async |conn| match tasks::heartbeat(conn, id, caller, lease).await? {
                    Some(row) => Ok(row),
                    None => Err(why_not_held(conn, id).await?),
                },
            )
            .await
    }

    /// Records a failed attempt of a task the caller holds: retried after a
    /// backoff while attempts are left and `retry`, else `failed`.
    pub async fn fail(&self, caller: Uuid, id: Uuid, error: &str, retry: bool) -> Result<TaskRow> {
        if let Some(why) = text_problem(error, MAX_ERROR_CHARS) {
            return Err(QueueError::invalid("error", &why));
        }
        self.db
            .run(
                async |conn| match tasks::fail(conn, id, caller, error, retry).await? {
                    Some(row) => Ok(row),
                    None => Err(why_not_held(conn, id).await?),
                },
            )
            .await
    }

    /// Cancels a task that is unassigned or assigned (anyone may: the queue
    /// is shared); a finished one is `NotCancellable`.
    pub async fn cancel(&self, id: Uuid) -> Result<TaskRow> {
        self.db
            .run(async |conn| match tasks::cancel(conn, id).await? {
                Some(row) => Ok(row),
                None if tasks::find(conn, id).await?.is_some() => Err(QueueError::NotCancellable),
                None => Err(QueueError::NotFound),
            })
            .await
    }

    /// Task `id` as shown, to `reader`: any task to one who may assign
    /// (`everyone`), else only one assigned to the reader; `NotFound`
    /// otherwise (another's task is not even said to exist).
    pub async fn read(&self, reader: Uuid, everyone: bool, id: Uuid) -> Result<TaskRow> {
        let found = self
            .reads
            .run(async |conn| Ok::<_, QueueError>(tasks::find(conn, id).await?))
            .await?;
        match found {
            Some(task) if everyone || task.assigned_to == Some(reader) => Ok(task),
            _ => Err(QueueError::NotFound),
        }
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

    /// Stores as failed the tasks whose lease lapsed on their last attempt
    /// (they already show so), a bounded batch per call; run with the folds.
    pub async fn fail_spent_leases(&self) -> Result<usize> {
        self.db
            .run(async |conn| Ok(tasks::fail_spent_leases(conn, 1000).await?))
            .await
    }
}

/// Promotes the delayed tasks that came due, then claims: two statements,
/// the claim itself still one (`tasks::claim`).
async fn claim_due(
    conn: &mut diesel_async::AsyncPgConnection,
    req: ClaimRequest,
) -> Result<Vec<TaskRow>, StoreError> {
    tasks::promote_due(conn).await?;
    Ok(tasks::claim(conn, req).await?)
}

/// One position of a create's answer: a task without a key (by its new id)
/// or the task of a key.
enum Slot {
    Id(Uuid),
    Key(String),
}

/// The rows to insert (each key once, at its first position) and, for each
/// item asked, where its task comes from.
struct BatchPlan {
    rows: Vec<NewTaskRow>,
    order: Vec<Slot>,
    /// Each key's content digest, as asked.
    digests: HashMap<String, [u8; 32]>,
}

impl BatchPlan {
    /// The rows to insert, one per key; a key repeated with other content
    /// within the batch is `KeyConflict`.
    fn of(batch: Vec<NewTask>) -> Result<BatchPlan> {
        let mut digests: HashMap<String, [u8; 32]> = HashMap::new();
        let mut rows = Vec::with_capacity(batch.len());
        let mut order = Vec::with_capacity(batch.len());
        for mut t in batch {
            // Stored to the microsecond: what is hashed is what is stored.
            t.not_before = t
                .not_before
                .map(|at| chrono::SubsecRound::trunc_subsecs(at, 6));
            let id = Uuid::new_v4();
            let key_digest = t.key.as_ref().map(|_| content_digest(&t));
            match (&t.key, key_digest) {
                (Some(k), Some(digest)) => {
                    order.push(Slot::Key(k.clone()));
                    if let Some(seen) = digests.insert(k.clone(), digest) {
                        if seen != digest {
                            return Err(QueueError::KeyConflict(k.clone()));
                        }
                        continue;
                    }
                }
                _ => order.push(Slot::Id(id)),
            }
            rows.push(NewTaskRow {
                id,
                title: t.title,
                schedulable: t.schedulable,
                priority: t.priority,
                not_before: t.not_before,
                max_attempts: t.max_attempts,
                key: t.key,
                key_digest,
            });
        }
        Ok(BatchPlan {
            rows,
            order,
            digests,
        })
    }

    /// `KeyConflict` when a stored task holding one of the batch's keys was
    /// created with other content than the batch asks for.
    fn check_content(&self, found: &tasks::KeyedRow) -> Result<()> {
        or_fault!(KeyConflictUnchecked => Ok(()));
        let Some(key) = &found.task.key else {
            return Ok(());
        };
        let asked = self.digests.get(key).map(|d| d.as_slice());
        match (asked, found.key_digest.as_deref()) {
            (Some(asked), Some(stored)) if asked != stored => {
                Err(QueueError::KeyConflict(key.clone()))
            }
            _ => Ok(()),
        }
    }
}

/// What a keyed task is created with, as one digest: the title, the
/// priority, `not_before` (to the microsecond, as stored) and
/// `max_attempts`, the interface's list of what a repeated key must repeat
/// (its `payload` joins them with payloads, hashed only when given, so a
/// task without one keeps the digest it has now).
fn content_digest(t: &NewTask) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let not_before = t.not_before.map_or(i64::MIN, |at| at.timestamp_micros());
    let mut hash = Sha256::new();
    hash.update(b"tessera task content 1\0");
    hash.update((t.title.len() as u64).to_be_bytes());
    hash.update(t.title.as_bytes());
    hash.update(t.priority.to_be_bytes());
    hash.update(not_before.to_be_bytes());
    hash.update(t.max_attempts.to_be_bytes());
    hash.finalize().into()
}

/// Inserts `plan`'s rows for `creator` and reads the tasks of the keys the
/// creator already held: every task in the order asked, and how many rows
/// are new (see [`TaskQueue::create`]).
async fn insert_planned(
    conn: &mut diesel_async::AsyncPgConnection,
    creator: Uuid,
    plan: &BatchPlan,
) -> Result<Created> {
    let mut created = 0;
    let mut by_key: HashMap<String, TaskRow> = HashMap::new();
    let mut by_id: HashMap<Uuid, TaskRow> = HashMap::new();
    let mut pending = plan.rows.clone();
    // A known key's task can be deleted (retention) between the
    // insert that met it and the read: then it is inserted anew.
    for _ in 0..3 {
        let inserted = tasks::insert_batch(conn, creator, &pending).await?;
        created += inserted.len();
        for row in inserted {
            match &row.key {
                Some(k) => by_key.insert(k.clone(), row),
                None => by_id.insert(row.id, row),
            };
        }
        // Keys another create stored first: that create has
        // committed (the insert waited for it), so this read sees it.
        let taken: Vec<&str> = pending
            .iter()
            .filter_map(|r| r.key.as_deref())
            .filter(|k| !by_key.contains_key(*k))
            .collect();
        if !taken.is_empty() {
            for found in tasks::find_by_keys(conn, creator, &taken).await? {
                plan.check_content(&found)?;
                if let Some(k) = found.task.key.clone() {
                    by_key.insert(k, found.task);
                }
            }
        }
        pending.retain(|r| r.key.as_ref().is_some_and(|k| !by_key.contains_key(k)));
        if pending.is_empty() {
            break;
        }
    }
    let tasks = plan
        .order
        .iter()
        .map(|slot| match slot {
            Slot::Id(id) => by_id.get(id).cloned(),
            Slot::Key(k) => by_key.get(k).cloned(),
        })
        .collect::<Option<Vec<TaskRow>>>()
        .ok_or_else(|| {
            StoreError::Unavailable(
                crate::error::Unavailable::Contended,
                "an idempotency key's task kept vanishing".into(),
            )
        })?;
    Ok(Created { tasks, created })
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
