//! The `tasks` table (the shared work queue) and its `task_view`.

use super::{Prepared as _, secs};
use crate::domain::{SqlTaskStatus, TaskStatus};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::result::Error as DbError;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Double, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use uuid::Uuid;

/// A task as the API shows it (from `task_view`, or fresh from a write).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct TaskRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub title: String,
    #[diesel(sql_type = Bool)]
    pub schedulable: bool,
    #[diesel(sql_type = SqlTaskStatus)]
    pub status: TaskStatus,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub assigned_to: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub assigned_by: Option<Uuid>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub assigned_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Claims so far (also the fencing counter).
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    pub priority: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub not_before: Option<DateTime<Utc>>,
    #[diesel(sql_type = Integer)]
    pub max_attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub key: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// Who created it (`None`: before tasks recorded their creator).
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub created_by: Option<Uuid>,
}

/// A row to insert.
#[derive(Debug, Clone)]
pub struct NewTaskRow {
    pub id: Uuid,
    pub title: String,
    pub schedulable: bool,
    pub priority: i32,
    pub not_before: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub key: Option<String>,
    /// For a keyed task: the digest of what it is created with, which a
    /// later create with its key must match.
    pub key_digest: Option<[u8; 32]>,
}

/// The insert, as sent: a batch (`$1`..`$7`, `$9`: ids, titles,
/// schedulable, priorities, not-befores, max attempts, keys, key digests,
/// as arrays) created by `$8`, in one statement, in the given order,
/// skipping every row whose key that creator already holds. `ON CONFLICT
/// DO NOTHING` waits for a concurrent insert of the same (creator, key) to
/// commit or abort, so of N concurrent inserts of one key by one creator
/// exactly one inserts, and the others insert nothing and raise nothing;
/// another creator's key is another key.
pub const INSERT: &str = "\
INSERT INTO tasks (id, title, schedulable, priority, not_before, max_attempts, key, key_digest,
                   created_by, delayed)
SELECT id, title, schedulable, priority, not_before, max_attempts, key, key_digest, $8,
       coalesce(not_before > now(), false)
FROM unnest($1, $2, $3, $4, $5, $6, $7, $9)
     WITH ORDINALITY AS b(id, title, schedulable, priority, not_before, max_attempts, key,
                          key_digest, n)
ORDER BY n
ON CONFLICT (created_by, key) WHERE key IS NOT NULL DO NOTHING
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// [`INSERT`] as this build sends it.
pub fn insert_sql() -> &'static str {
    statement!(INSERT,
        KeyCheckThenInsert => INSERT_AFTER_KEY_CHECK,
        IdempotencyKeysGlobal => INSERT_UNLESS_KEY_ANYWHERE)
}

/// Inserts a batch created by `creator` by [`INSERT`]. Returns the
/// inserted rows.
pub async fn insert_batch(
    conn: &mut AsyncPgConnection,
    creator: Uuid,
    tasks: &[NewTaskRow],
) -> Result<Vec<TaskRow>, DbError> {
    let mut rows: Vec<TaskRow> = diesel::sql_query(insert_sql())
        .bind::<Array<SqlUuid>, _>(tasks.iter().map(|t| t.id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(tasks.iter().map(|t| t.title.as_str()).collect::<Vec<_>>())
        .bind::<Array<Bool>, _>(tasks.iter().map(|t| t.schedulable).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(tasks.iter().map(|t| t.priority).collect::<Vec<_>>())
        .bind::<Array<Nullable<Timestamptz>>, _>(
            tasks.iter().map(|t| t.not_before).collect::<Vec<_>>(),
        )
        .bind::<Array<Integer>, _>(tasks.iter().map(|t| t.max_attempts).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            tasks.iter().map(|t| t.key.as_deref()).collect::<Vec<_>>(),
        )
        .bind::<SqlUuid, _>(creator)
        .bind::<Array<Nullable<Bytea>>, _>(
            tasks
                .iter()
                .map(|t| t.key_digest.map(|d| d.to_vec()))
                .collect::<Vec<_>>(),
        )
        .prepared()
        .get_results(conn)
        .await?;
    rows.sort_by_key(|r| r.seq);
    Ok(rows)
}

/// Takes, in one order, the locks of the keys `$3` of creator `$2`, held
/// until the batch commits: each key falls in one of the creator's
/// [`KEY_LOCK_BUCKETS`] buckets (`$4`), and each bucket is one lock. Each
/// keyed batch holds the rows it inserted until then; two batches of one
/// creator naming the same keys in other orders would each wait on a key
/// the other holds (a deadlock). Locked first and in order, the second
/// waits for the first whole and then finds its rows; batches whose keys
/// share no bucket pass each other. A batch holds at most that many
/// locks, however many keys it names: one per key, a crowd of the largest
/// batches would fill PostgreSQL's shared lock table. Two-key form, class
/// `$1`: a key space of its own, apart from the one-key locks of logins
/// and the cleanup. (The lock calls run after the sort: PostgreSQL
/// evaluates volatile output functions above the ORDER BY.)
pub const LOCK_KEYS: &str = "\
SELECT pg_advisory_xact_lock($1, h)
FROM (SELECT DISTINCT hashtext($2) # (hashtext(k) & ($4 - 1)) AS h
      FROM unnest($3::text[]) AS k) AS buckets
ORDER BY h";

/// The most key locks one keyed batch takes (a power of two).
pub const KEY_LOCK_BUCKETS: usize = 16;

/// The class of [`LOCK_KEYS`]' locks ("task").
const KEYED_BATCHES: i32 = 0x7461_736b;

/// Locks `keys` of `creator` by [`LOCK_KEYS`].
pub async fn lock_keys(
    conn: &mut AsyncPgConnection,
    creator: Uuid,
    keys: &[&str],
) -> Result<(), DbError> {
    or_fault!(KeyedBatchesUnordered => Ok(()));
    // The check-then-insert create of that fault takes no lock either.
    or_fault!(KeyCheckThenInsert => Ok(()));
    let sql = statement!(LOCK_KEYS, KeyLocksUnbounded => LOCK_EVERY_KEY);
    diesel::sql_query(sql)
        .bind::<Integer, _>(KEYED_BATCHES)
        .bind::<Text, _>(creator.to_string())
        .bind::<Array<Text>, _>(keys)
        .bind::<Integer, _>(KEY_LOCK_BUCKETS as i32)
        .prepared()
        .execute(conn)
        .await
        .map(|_| ())
}

/// A keyed task, as shown, with the digest of what it was created with.
#[derive(Debug, Clone, QueryableByName)]
pub struct KeyedRow {
    #[diesel(embed)]
    pub task: TaskRow,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub key_digest: Option<Vec<u8>>,
}

/// The tasks `$1` created that hold the keys `$2`.
pub const FIND_BY_KEYS: &str = "\
SELECT v.id, v.seq, v.title, v.schedulable, v.status, v.assigned_to, v.assigned_by, v.assigned_at,
       v.lease_expires_at, v.completed_at, v.attempt, v.created_at, v.priority, v.not_before,
       v.max_attempts, v.key, v.last_error, v.created_by, t.key_digest
FROM task_view AS v JOIN tasks AS t ON t.id = v.id
WHERE t.created_by = $1 AND t.key = ANY($2)";

/// The tasks `creator` created that hold `keys`, by [`FIND_BY_KEYS`].
pub async fn find_by_keys(
    conn: &mut AsyncPgConnection,
    creator: Uuid,
    keys: &[&str],
) -> Result<Vec<KeyedRow>, DbError> {
    let sql = statement!(FIND_BY_KEYS, IdempotencyKeysGlobal => FIND_BY_KEYS_ANYWHERE);
    diesel::sql_query(sql)
        .bind::<SqlUuid, _>(creator)
        .bind::<Array<Text>, _>(keys)
        .prepared()
        .get_results(conn)
        .await
}

/// Who claims, for whom, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest {
    pub count: i64,
    pub assignee: Uuid,
    pub assigned_by: Uuid,
    pub lease: Duration,
}

/// The claim, as sent: assigns up to `$1` claimable tasks to `$2` for `$3`
/// (who assigns), leased for `$4` seconds, highest priority first, then
/// oldest, and returns exactly the rows this statement assigned. Public so
/// the load tier's `--queue` run times exactly this statement with pgbench.
///
/// Claimable, as the contract says: schedulable, unassigned or with a
/// lapsed lease, past its `not_before`, attempts left. Its first two lines
/// are the predicate of the partial index `tasks_claim_order` (a test holds
/// them to the migration's), whose order is the ORDER BY, so the planner
/// walks that index and filters out held tasks as it goes (`NOT delayed`:
/// [`promote_due`] has run first; docs/queue.md has the plan).
///
/// Why ONE statement: the CTE's `FOR UPDATE` locks are held until the UPDATE
/// that consumes them commits. As two statements (SELECT, then UPDATE) the
/// locks die with the first statement's implicit transaction and two
/// claimers can assign the same rows. Why a CTE rather than
/// `UPDATE ... WHERE id IN (SELECT ... LIMIT n)`: the planner may run such a
/// subquery more than once and take more than `n` rows. Why `SKIP LOCKED`:
/// concurrent claimers pass over each other's rows instead of queueing on
/// them. After locking, PostgreSQL re-checks the WHERE clause against the
/// latest row version, so a row claimed and committed meanwhile is dropped.
pub const CLAIM: &str = "\
WITH picked AS (
    SELECT id FROM tasks
    WHERE schedulable AND status IN ('unassigned', 'assigned') AND attempt - released < max_attempts
      AND NOT delayed
      AND (lease_expires_at IS NULL OR lease_expires_at <= now())
      AND (not_before IS NULL OR not_before <= now())
    ORDER BY priority DESC, seq
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t
SET status = 'assigned', assigned_to = $2, assigned_by = $3, assigned_at = now(),
    lease_expires_at = now() + make_interval(secs => $4), attempt = t.attempt + 1
FROM picked WHERE t.id = picked.id
RETURNING t.id, t.seq, t.title, t.schedulable, t.status, t.assigned_to, t.assigned_by,
          t.assigned_at, t.lease_expires_at, t.completed_at, t.attempt, t.created_at,
          t.priority, t.not_before, t.max_attempts, t.key, t.last_error, t.created_by";

/// [`CLAIM`] as this build sends it: under a chosen fault, the statement
/// that breaks it (the isolation specs run what is sent).
pub fn claim_sql() -> &'static str {
    statement!(CLAIM,
        ClaimIgnoresMaxAttempts => CLAIM_ANY_ATTEMPT,
        ClaimWithoutSkipLocked => CLAIM_WAITING)
}

/// Claims by [`CLAIM`], in claim order.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    req: ClaimRequest,
) -> Result<Vec<TaskRow>, DbError> {
    or_fault!(ClaimTwoStatements => crate::faults::sql::claim_in_two_statements(conn, req).await);
    let mut rows: Vec<TaskRow> = diesel::sql_query(claim_sql())
        .bind::<BigInt, _>(req.count)
        .bind::<SqlUuid, _>(req.assignee)
        .bind::<SqlUuid, _>(req.assigned_by)
        .bind::<Double, _>(secs(req.lease))
        .prepared()
        .get_results(conn)
        .await?;
    sort_in_claim_order(&mut rows);
    Ok(rows)
}

/// Highest priority first, then oldest: the order a claim takes them in.
pub(crate) fn sort_in_claim_order(rows: &mut [TaskRow]) {
    rows.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.seq));
}

/// Makes the delayed tasks that came due claimable (up to 1000 per call,
/// on `tasks_delayed`; usually none): a claim runs this first, so a task is
/// claimable as soon as its `not_before` passes. Rows another claimer is
/// promoting are skipped, not waited for: that claimer takes them.
pub async fn promote_due(conn: &mut AsyncPgConnection) -> Result<usize, DbError> {
    diesel::sql_query(
        "WITH due AS (
             SELECT id FROM tasks WHERE delayed AND not_before <= now()
             ORDER BY not_before LIMIT 1000
             FOR UPDATE SKIP LOCKED
         )
         UPDATE tasks AS t SET delayed = false FROM due WHERE t.id = due.id",
    )
    .prepared()
    .execute(conn)
    .await
}

/// The completion, as sent: `$1` the task, `$2` its assignee, `$3` the
/// claim's attempt or NULL. Public so the load tier's `--queue` run times
/// exactly this statement.
///
/// Its WHERE clause is the fence every write by a worker passes (complete,
/// release, heartbeat, fail; a test holds the four to one text): the task
/// is assigned to this worker, its lease is live, and (when given) it is
/// still the same claim. The row is found by its primary key and only then
/// checked: the other conditions are written so that no index can serve
/// them (`IS TRUE`, `IS NOT DISTINCT FROM`; same meaning in a WHERE clause).
/// Written plainly, the planner took `tasks_assignee_status` (assignee,
/// 'assigned') when the statistics showed few held tasks, and walked every
/// index entry the worker's finished tasks left behind until vacuum: 24,000
/// pages, 25 ms per completion after 70k completions by one worker
/// (`--queue` EXPLAIN).
pub const COMPLETE: &str = "\
UPDATE tasks
SET status = 'completed', completed_at = now(), finished_at = now(), lease_expires_at = NULL
WHERE id = $1 AND (status = 'assigned') IS TRUE AND assigned_to IS NOT DISTINCT FROM $2::uuid
  AND (lease_expires_at > now()) IS TRUE AND ($3::int IS NULL OR attempt = $3)
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// [`COMPLETE`] as this build sends it.
pub fn complete_sql() -> &'static str {
    statement!(COMPLETE, CompleteWithoutFence => COMPLETE_UNFENCED)
}

/// Marks a task completed, if `assignee` holds it under a live lease (and,
/// when `attempt` is given, under that very claim).
pub async fn complete(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    assignee: Uuid,
    attempt: Option<i32>,
) -> Result<Option<TaskRow>, DbError> {
    fenced(conn, complete_sql(), id, assignee, attempt).await
}

/// Runs a write that passes the fence (see [`COMPLETE`]; `$1` the task,
/// `$2` its assignee, `$3` the claim's attempt or NULL); the row as
/// written, if any.
async fn fenced(
    conn: &mut AsyncPgConnection,
    sql: &'static str,
    id: Uuid,
    assignee: Uuid,
    attempt: Option<i32>,
) -> Result<Option<TaskRow>, DbError> {
    diesel::sql_query(sql)
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(assignee)
        .bind::<Nullable<Integer>, _>(attempt)
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<TaskRow>| rows.pop())
}

/// The release: hands the task back to the queue, under the fence (see
/// [`COMPLETE`]). A release is not a failure: its claim does not count
/// toward `max_attempts`.
const RELEASE: &str = "\
UPDATE tasks
SET status = 'unassigned', assigned_to = NULL, assigned_by = NULL, assigned_at = NULL,
    lease_expires_at = NULL, released = released + 1
WHERE id = $1 AND (status = 'assigned') IS TRUE AND assigned_to IS NOT DISTINCT FROM $2::uuid
  AND (lease_expires_at > now()) IS TRUE AND ($3::int IS NULL OR attempt = $3)
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// Hands a task back to the queue by [`RELEASE`].
pub async fn release(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    assignee: Uuid,
    attempt: Option<i32>,
) -> Result<Option<TaskRow>, DbError> {
    let sql = statement!(RELEASE, CompleteWithoutFence => RELEASE_UNFENCED);
    fenced(conn, sql, id, assignee, attempt).await
}

/// The heartbeat: extends the lease to `$4` seconds from now, under the
/// fence (see [`COMPLETE`]; `$3` is NULL: any claim of the assignee's).
pub const HEARTBEAT: &str = "\
UPDATE tasks
SET lease_expires_at = now() + make_interval(secs => $4)
WHERE id = $1 AND (status = 'assigned') IS TRUE AND assigned_to IS NOT DISTINCT FROM $2::uuid
  AND (lease_expires_at > now()) IS TRUE AND ($3::int IS NULL OR attempt = $3)
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// [`HEARTBEAT`] as this build sends it.
pub fn heartbeat_sql() -> &'static str {
    statement!(HEARTBEAT,
        CompleteWithoutFence => HEARTBEAT_UNFENCED,
        HeartbeatWithoutFence => HEARTBEAT_UNFENCED)
}

/// Extends the lease of a task `assignee` holds by [`HEARTBEAT`].
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    assignee: Uuid,
    lease: Duration,
) -> Result<Option<TaskRow>, DbError> {
    diesel::sql_query(heartbeat_sql())
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(assignee)
        .bind::<Nullable<Integer>, _>(None::<i32>)
        .bind::<Double, _>(secs(lease))
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<TaskRow>| rows.pop())
}

/// The failure of an attempt, under the fence (see [`COMPLETE`]; `$3` is
/// NULL): `$4` the error, `$5` whether to retry. With `$5` and attempts
/// left the task goes back to the queue, claimable after the backoff: 1 s
/// doubling per counted attempt, capped at 1 h, less up to 20% (jitter, so
/// failures of one cause spread out instead of retrying together);
/// otherwise it is `failed`.
const FAIL: &str = "\
UPDATE tasks
SET status = CASE WHEN $5 AND attempt - released < max_attempts THEN 'unassigned'::task_status ELSE 'failed' END,
    not_before = CASE WHEN $5 AND attempt - released < max_attempts
        THEN now() + make_interval(secs => least(power(2, attempt - released - 1), 3600) * (1 - 0.2 * random()))
        ELSE not_before END,
    delayed = $5 AND attempt - released < max_attempts,
    finished_at = CASE WHEN $5 AND attempt - released < max_attempts THEN NULL ELSE now() END,
    assigned_to = CASE WHEN $5 AND attempt - released < max_attempts THEN NULL ELSE assigned_to END,
    assigned_by = CASE WHEN $5 AND attempt - released < max_attempts THEN NULL ELSE assigned_by END,
    assigned_at = CASE WHEN $5 AND attempt - released < max_attempts THEN NULL ELSE assigned_at END,
    lease_expires_at = NULL,
    last_error = $4
WHERE id = $1 AND (status = 'assigned') IS TRUE AND assigned_to IS NOT DISTINCT FROM $2::uuid
  AND (lease_expires_at > now()) IS TRUE AND ($3::int IS NULL OR attempt = $3)
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// Records a failed attempt of a task `assignee` holds by [`FAIL`].
pub async fn fail(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    assignee: Uuid,
    error: &str,
    retry: bool,
) -> Result<Option<TaskRow>, DbError> {
    diesel::sql_query(statement!(FAIL, CompleteWithoutFence => FAIL_UNFENCED))
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(assignee)
        .bind::<Nullable<Integer>, _>(None::<i32>)
        .bind::<Text, _>(error)
        .bind::<Bool, _>(retry)
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<TaskRow>| rows.pop())
}

/// The cancel: a task that shows as unassigned or assigned (not a lease
/// that lapsed on the last attempt, which shows as failed) is cancelled;
/// its assignee, if any, loses it, as every later write of theirs fails
/// the fence.
pub const CANCEL: &str = "\
UPDATE tasks
SET status = 'cancelled', finished_at = now(), delayed = false, assigned_to = NULL,
    assigned_by = NULL, assigned_at = NULL, lease_expires_at = NULL
WHERE id = $1
  AND (status = 'unassigned'
       OR (status = 'assigned' AND NOT (lease_expires_at <= now() AND attempt - released >= max_attempts)))
RETURNING id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
          lease_expires_at, completed_at, attempt, created_at, priority, not_before,
          max_attempts, key, last_error, created_by";

/// [`CANCEL`] as this build sends it.
pub fn cancel_sql() -> &'static str {
    statement!(CANCEL, CancelAnyStatus => CANCEL_ANY_STATUS)
}

/// Cancels a task by [`CANCEL`]; `None` when it shows as finished (or does
/// not exist).
pub async fn cancel(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<TaskRow>, DbError> {
    diesel::sql_query(cancel_sql())
        .bind::<SqlUuid, _>(id)
        .prepared()
        .get_results(conn)
        .await
        .map(|mut rows: Vec<TaskRow>| rows.pop())
}

/// Stores as `failed` ("lease expired") up to `batch` tasks whose lease
/// lapsed on their last allowed attempt (`task_view` already shows them so);
/// returns how many. Such a lease cannot be extended any more (the fence
/// wants a live one), so nothing races this but another instance's sweep,
/// which SKIP LOCKED keeps apart.
pub async fn fail_spent_leases(conn: &mut AsyncPgConnection, batch: i64) -> Result<usize, DbError> {
    diesel::sql_query(
        "WITH due AS (
             SELECT id FROM tasks
             WHERE status = 'assigned' AND lease_expires_at <= now() AND attempt - released >= max_attempts
             ORDER BY lease_expires_at LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE tasks AS t SET status = 'failed', last_error = 'lease expired',
             finished_at = t.lease_expires_at, assigned_to = NULL, assigned_by = NULL,
             assigned_at = NULL, lease_expires_at = NULL
         FROM due WHERE t.id = due.id",
    )
    .bind::<BigInt, _>(batch)
    .prepared()
    .execute(conn)
    .await
}

pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<TaskRow>, DbError> {
    diesel::sql_query(
        "SELECT id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at,
                lease_expires_at, completed_at, attempt, created_at, priority, not_before,
                max_attempts, key, last_error, created_by
         FROM task_view WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .prepared()
    .get_results(conn)
    .await
    .map(|mut rows: Vec<TaskRow>| rows.pop())
}

/// Tasks as shown (expired leases read as unassigned), oldest first, by
/// shown status (`$1`) and assignee (`$2`), at most `$3`.
///
/// The filter runs on the stored columns, where the indexes are
/// (`tasks_status_seq`, `tasks_assignee_status`): the shown filter is a
/// union of parts, each walking an index in `seq` order for at most `$3`
/// rows, so the listing reads about `$3` rows per part whatever the history
/// holds. A part runs only when the filter asks for it: its condition on
/// `$1` and `$2` alone is a one-time filter of the plan. A lapsed lease
/// shows as unassigned with no assignee, or as failed when it was the last
/// attempt (spent); `task_view` then shows the picked rows. A status asked
/// with and without an assignee is two parts, not one with
/// `($2 IS NULL OR assigned_to = $2)`: that condition could walk neither
/// index.
const LIST: &str = "
    SELECT v.id, v.seq, v.title, v.schedulable, v.status, v.assigned_to, v.assigned_by,
           v.assigned_at, v.lease_expires_at, v.completed_at, v.attempt, v.created_at,
           v.priority, v.not_before, v.max_attempts, v.key, v.last_error, v.created_by
    FROM (SELECT id, seq FROM (
            (SELECT id, seq FROM tasks
             WHERE $1::task_status IS NULL AND $2::uuid IS NULL
             ORDER BY seq LIMIT $3)
          UNION ALL
            (SELECT id, seq FROM tasks
             WHERE $1 = 'unassigned' AND $2 IS NULL AND status = 'unassigned'
             ORDER BY seq LIMIT $3)
          UNION ALL -- lapsed
            (SELECT id, seq FROM tasks
             WHERE $1 = 'unassigned' AND $2 IS NULL
               AND status = 'assigned' AND lease_expires_at <= now()
               AND attempt - released < max_attempts
             ORDER BY seq LIMIT $3)
          UNION ALL -- held
            (SELECT id, seq FROM tasks
             WHERE $1 = 'assigned' AND $2 IS NULL
               AND status = 'assigned' AND lease_expires_at > now()
             ORDER BY seq LIMIT $3)
          UNION ALL -- held by the assignee
            (SELECT id, seq FROM tasks
             WHERE ($1 = 'assigned' OR $1 IS NULL) AND assigned_to = $2
               AND status = 'assigned' AND lease_expires_at > now()
             ORDER BY seq LIMIT $3)
          UNION ALL
            (SELECT id, seq FROM tasks
             WHERE $1 = 'completed' AND $2 IS NULL AND status = 'completed'
             ORDER BY seq LIMIT $3)
          UNION ALL
            (SELECT id, seq FROM tasks
             WHERE ($1 = 'completed' OR $1 IS NULL) AND assigned_to = $2
               AND status = 'completed'
             ORDER BY seq LIMIT $3)
          UNION ALL
            (SELECT id, seq FROM tasks
             WHERE $1 = 'failed' AND $2 IS NULL AND status = 'failed'
             ORDER BY seq LIMIT $3)
          UNION ALL -- spent
            (SELECT id, seq FROM tasks
             WHERE $1 = 'failed' AND $2 IS NULL
               AND status = 'assigned' AND lease_expires_at <= now()
               AND attempt - released >= max_attempts
             ORDER BY seq LIMIT $3)
          UNION ALL
            (SELECT id, seq FROM tasks
             WHERE ($1 = 'failed' OR $1 IS NULL) AND assigned_to = $2
               AND status = 'failed'
             ORDER BY seq LIMIT $3)
          UNION ALL
            (SELECT id, seq FROM tasks
             WHERE $1 = 'cancelled' AND $2 IS NULL AND status = 'cancelled'
             ORDER BY seq LIMIT $3)
          ) AS parts
          ORDER BY seq LIMIT $3) AS picked
    JOIN task_view v ON v.id = picked.id
    ORDER BY v.seq";

/// The tasks shown with `status` (any, if `None`) held by `assignee` (or
/// anyone's), oldest first, at most `limit`: [`LIST`].
pub async fn list(
    conn: &mut AsyncPgConnection,
    status: Option<TaskStatus>,
    assignee: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TaskRow>, DbError> {
    diesel::sql_query(LIST)
        .bind::<Nullable<SqlTaskStatus>, _>(status)
        .bind::<Nullable<SqlUuid>, _>(assignee)
        .bind::<BigInt, _>(limit)
        .prepared()
        .get_results(conn)
        .await
}

/// Counts by shown status, from the database at the time of the call.
/// `delayed` counts the unassigned tasks waiting for their `not_before`
/// (they are in `unassigned` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct TaskCounts {
    #[diesel(sql_type = BigInt)]
    pub unassigned: i64,
    #[diesel(sql_type = BigInt)]
    pub assigned: i64,
    #[diesel(sql_type = BigInt)]
    pub completed: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub cancelled: i64,
    #[diesel(sql_type = BigInt)]
    pub delayed: i64,
}

/// Sums the count deltas the triggers append (one statement, one snapshot:
/// exactly that snapshot's counts by stored status), then moves the lapsed
/// leases from assigned to unassigned (or to failed, on the last attempt),
/// counted on `tasks_leased` (open work only), and counts the delayed tasks
/// on `tasks_delayed`. No statement here reads the finished history.
pub async fn counts(conn: &mut AsyncPgConnection) -> Result<TaskCounts, DbError> {
    diesel::sql_query(
        "WITH stored AS (
             SELECT coalesce(sum(n) FILTER (WHERE status = 'unassigned'), 0)::bigint AS unassigned,
                    coalesce(sum(n) FILTER (WHERE status = 'assigned'), 0)::bigint AS assigned,
                    coalesce(sum(n) FILTER (WHERE status = 'completed'), 0)::bigint AS completed,
                    coalesce(sum(n) FILTER (WHERE status = 'failed'), 0)::bigint AS failed,
                    coalesce(sum(n) FILTER (WHERE status = 'cancelled'), 0)::bigint AS cancelled
             FROM task_count_deltas
         ), lapsed AS (
             SELECT count(*) FILTER (WHERE attempt - released < max_attempts) AS requeued,
                    count(*) FILTER (WHERE attempt - released >= max_attempts) AS spent
             FROM tasks WHERE status = 'assigned' AND lease_expires_at <= now()
         ), delayed AS (
             SELECT count(*) AS n FROM tasks
             WHERE delayed AND not_before > now()
         )
         SELECT stored.unassigned + lapsed.requeued AS unassigned,
                stored.assigned - lapsed.requeued - lapsed.spent AS assigned,
                stored.completed,
                stored.failed + lapsed.spent AS failed,
                stored.cancelled,
                delayed.n AS delayed
         FROM stored, lapsed, delayed",
    )
    .prepared()
    .get_result(conn)
    .await
}

/// Folds the count deltas into one row per status; returns how many rows
/// it folded. One statement deletes what it sums, so a concurrent fold
/// skips rows already folded and a concurrent writer's rows stay for later.
pub async fn compact_counts(conn: &mut AsyncPgConnection) -> Result<usize, DbError> {
    or_fault!(CountsFoldedInTwoStatements => crate::faults::sql::fold_counts_in_two_statements(conn).await);
    #[derive(QueryableByName)]
    struct Folded {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(
        // Only when some status has more than its one folded row: an idle
        // service rewrites nothing every tick.
        "WITH gone AS (
                  DELETE FROM task_count_deltas
                  WHERE EXISTS (SELECT 1 FROM task_count_deltas GROUP BY status HAVING count(*) > 1)
                  RETURNING status, n
              ),
              kept AS (
                  INSERT INTO task_count_deltas (status, n)
                  SELECT status, sum(n) FROM gone GROUP BY status HAVING sum(n) <> 0
              )
         SELECT count(*) AS n FROM gone",
    )
    .prepared()
    .get_result::<Folded>(conn)
    .await
    .map(|f| usize::try_from(f.n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    /// Whitespace-insensitive: statements and the migration indent apart.
    fn words(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The claim can walk `tasks_claim_order` only while its WHERE clause
    /// implies the index's predicate: written out in both, held together here.
    #[test]
    fn the_claim_repeats_the_predicate_of_its_index() {
        // The index as the newest migration that makes it defines it.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut migrations: Vec<_> = std::fs::read_dir(&dir)
            .expect("the migrations")
            .map(|entry| entry.expect("a migration").path().join("up.sql"))
            .collect();
        migrations.sort();
        let newest = migrations
            .iter()
            .rev()
            .map(|path| std::fs::read_to_string(path).expect("a migration's up.sql"))
            .find(|sql| sql.contains("CREATE INDEX tasks_claim_order"))
            .expect("a migration defines tasks_claim_order");
        let index = newest
            .split("CREATE INDEX tasks_claim_order ON tasks (priority DESC, seq)")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|rest| rest.trim().strip_prefix("WHERE "))
            .expect("the migration defines tasks_claim_order");
        let claim = words(super::CLAIM);
        assert!(
            claim.contains(&format!("WHERE {}", words(index))),
            "the claim's WHERE does not start with `{}`",
            words(index)
        );
        assert!(claim.contains("ORDER BY priority DESC, seq"));
    }

    /// Every worker write passes the same fence, written out in each.
    #[test]
    fn every_worker_write_passes_one_fence() {
        let fence = "WHERE id = $1 AND (status = 'assigned') IS TRUE AND assigned_to IS NOT DISTINCT FROM $2::uuid \
                     AND (lease_expires_at > now()) IS TRUE AND ($3::int IS NULL OR attempt = $3)";
        for sql in [
            super::COMPLETE,
            super::RELEASE,
            super::HEARTBEAT,
            super::FAIL,
        ] {
            assert!(words(sql).contains(&words(fence)), "no fence in {sql}");
        }
    }
}
