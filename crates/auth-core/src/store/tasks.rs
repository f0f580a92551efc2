//! The `tasks` table (the shared work queue) and its `task_view`.

use super::secs;
use crate::domain::TaskStatus;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::result::Error as DbError;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use uuid::Uuid;

pub(crate) const COLUMNS: &str = "id, seq, title, schedulable, status, assigned_to, assigned_by, assigned_at, \
                       lease_expires_at, completed_at, attempt, created_at";

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
    #[diesel(sql_type = Text)]
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
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// Inserts a batch in one statement, in the given order.
pub async fn insert_batch(
    conn: &mut AsyncPgConnection,
    tasks: &[(Uuid, String, bool)],
) -> Result<Vec<TaskRow>, DbError> {
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.0).collect();
    let titles: Vec<&str> = tasks.iter().map(|t| t.1.as_str()).collect();
    let schedulable: Vec<bool> = tasks.iter().map(|t| t.2).collect();
    let mut rows: Vec<TaskRow> = diesel::sql_query(format!(
        "INSERT INTO tasks (id, title, schedulable)
         SELECT id, title, schedulable FROM unnest($1, $2, $3) WITH ORDINALITY AS b(id, title, schedulable, n)
         ORDER BY n
         RETURNING {COLUMNS}"
    ))
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Text>, _>(titles)
    .bind::<Array<Bool>, _>(schedulable)
    .get_results(conn)
    .await?;
    rows.sort_by_key(|r| r.seq);
    Ok(rows)
}

/// Who claims, for whom, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest {
    pub count: i64,
    pub assignee: Uuid,
    pub assigned_by: Uuid,
    pub lease: Duration,
}

/// Assigns up to `count` claimable tasks, oldest first, and returns exactly
/// the rows this statement assigned.
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
/// The WHERE clause repeats the partial index's predicate so the planner can
/// use `tasks_claimable`, whose order is the ORDER BY.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    req: ClaimRequest,
) -> Result<Vec<TaskRow>, DbError> {
    or_fault!(ClaimTwoStatements => crate::faults::sql::claim_in_two_statements(conn, req).await);
    let lock_clause = lock_clause();
    let mut rows: Vec<TaskRow> = diesel::sql_query(format!(
        "WITH picked AS (
             SELECT id FROM tasks
             WHERE schedulable AND status <> 'completed'
               AND (lease_expires_at IS NULL OR lease_expires_at <= now())
             ORDER BY lease_expires_at NULLS FIRST, seq
             LIMIT $1
             {lock_clause}
         )
         UPDATE tasks AS t
         SET status = 'assigned', assigned_to = $2, assigned_by = $3, assigned_at = now(),
             lease_expires_at = now() + make_interval(secs => $4), attempt = t.attempt + 1
         FROM picked WHERE t.id = picked.id
         RETURNING {}",
        qualified_columns("t")
    ))
    .bind::<BigInt, _>(req.count)
    .bind::<SqlUuid, _>(req.assignee)
    .bind::<SqlUuid, _>(req.assigned_by)
    .bind::<Double, _>(secs(req.lease))
    .get_results(conn)
    .await?;
    rows.sort_by_key(|r| r.seq);
    Ok(rows)
}

fn lock_clause() -> &'static str {
    or_fault!(ClaimWithoutSkipLocked => crate::faults::sql::LOCK_WAITING);
    "FOR UPDATE SKIP LOCKED"
}

fn qualified_columns(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fence every write by a worker passes: the task is assigned to this
/// worker, its lease is live, and (when given) it is still the same claim.
fn fence() -> &'static str {
    or_fault!(CompleteWithoutFence => crate::faults::sql::NO_FENCE);
    "id = $1 AND status = 'assigned' AND assigned_to = $2 AND lease_expires_at > now()
     AND ($3::int IS NULL OR attempt = $3)"
}

/// Marks a task completed, if `assignee` holds it under a live lease (and,
/// when `attempt` is given, under that very claim).
pub async fn complete(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    assignee: Uuid,
    attempt: Option<i32>,
) -> Result<Option<TaskRow>, DbError> {
    diesel::sql_query(format!(
        "UPDATE tasks SET status = 'completed', completed_at = now(), lease_expires_at = NULL
         WHERE {} RETURNING {COLUMNS}",
        fence()
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(assignee)
    .bind::<Nullable<Integer>, _>(attempt)
    .get_results(conn)
    .await
    .map(|mut rows: Vec<TaskRow>| rows.pop())
}

/// Hands a task back to the queue, under the same fence as [`complete`].
pub async fn release(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    assignee: Uuid,
    attempt: Option<i32>,
) -> Result<Option<TaskRow>, DbError> {
    diesel::sql_query(format!(
        "UPDATE tasks SET status = 'unassigned', assigned_to = NULL, assigned_by = NULL, assigned_at = NULL,
             lease_expires_at = NULL
         WHERE {} RETURNING {COLUMNS}",
        fence()
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(assignee)
    .bind::<Nullable<Integer>, _>(attempt)
    .get_results(conn)
    .await
    .map(|mut rows: Vec<TaskRow>| rows.pop())
}

pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<TaskRow>, DbError> {
    diesel::sql_query(format!("SELECT {COLUMNS} FROM task_view WHERE id = $1"))
        .bind::<SqlUuid, _>(id)
        .get_results(conn)
        .await
        .map(|mut rows: Vec<TaskRow>| rows.pop())
}

/// Tasks as shown (expired leases read as unassigned), oldest first.
///
/// The filter runs on the stored columns, where the indexes are
/// (`tasks_status_seq`, `tasks_assignee_status`, `seq`), each part ordered
/// by `seq` and limited, so `LIMIT n` reads about n rows per part whatever
/// the history holds; `task_view` then shows the picked rows.
pub async fn list(
    conn: &mut AsyncPgConnection,
    status: Option<TaskStatus>,
    assignee: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TaskRow>, DbError> {
    let parts = listing_parts(status, assignee.is_some());
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let picked = parts
        .iter()
        .map(|condition| {
            format!("(SELECT id, seq FROM tasks WHERE {condition} ORDER BY seq LIMIT $2)")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    diesel::sql_query(format!(
        "SELECT {} FROM (SELECT id, seq FROM ({picked}) AS parts ORDER BY seq LIMIT $2) AS picked
         JOIN task_view v ON v.id = picked.id ORDER BY v.seq",
        qualified_columns("v")
    ))
    .bind::<Nullable<SqlUuid>, _>(assignee)
    .bind::<BigInt, _>(limit)
    .get_results(conn)
    .await
}

/// The stored conditions whose union is the shown filter (`$1`: the
/// assignee, when `by_assignee`). A lapsed lease shows as unassigned with no
/// assignee, so it joins the unassigned part and leaves every assignee's.
fn listing_parts(status: Option<TaskStatus>, by_assignee: bool) -> Vec<String> {
    const LAPSED: &str = "status = 'assigned' AND lease_expires_at <= now()";
    const HELD: &str = "status = 'assigned' AND lease_expires_at > now()";
    const DONE: &str = "status = 'completed'";
    let parts: Vec<&str> = match (status, by_assignee) {
        (None, false) => vec!["TRUE"],
        (Some(TaskStatus::Unassigned), false) => vec!["status = 'unassigned'", LAPSED],
        // A task shown as unassigned has no assignee.
        (Some(TaskStatus::Unassigned), true) => vec![],
        (Some(TaskStatus::Assigned), _) => vec![HELD],
        (Some(TaskStatus::Completed), _) => vec![DONE],
        (None, true) => vec![HELD, DONE],
    };
    parts
        .into_iter()
        .map(|part| {
            if by_assignee {
                format!("assigned_to = $1 AND {part}")
            } else {
                format!("($1::uuid IS NULL) AND {part}")
            }
        })
        .collect()
}

/// Counts by shown status, from the database at the time of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct TaskCounts {
    #[diesel(sql_type = BigInt)]
    pub unassigned: i64,
    #[diesel(sql_type = BigInt)]
    pub assigned: i64,
    #[diesel(sql_type = BigInt)]
    pub completed: i64,
}

/// Sums the count deltas the triggers append (one statement, one snapshot:
/// exactly that snapshot's counts by stored status), then moves the lapsed
/// leases from assigned to unassigned, counted on `tasks_leased` (open work
/// only). No statement here reads the completed history.
pub async fn counts(conn: &mut AsyncPgConnection) -> Result<TaskCounts, DbError> {
    diesel::sql_query(
        "WITH stored AS (
             SELECT coalesce(sum(n) FILTER (WHERE status = 'unassigned'), 0)::bigint AS unassigned,
                    coalesce(sum(n) FILTER (WHERE status = 'assigned'), 0)::bigint AS assigned,
                    coalesce(sum(n) FILTER (WHERE status = 'completed'), 0)::bigint AS completed
             FROM task_count_deltas
         ), lapsed AS (
             SELECT count(*) AS n FROM tasks WHERE status = 'assigned' AND lease_expires_at <= now()
         )
         SELECT stored.unassigned + lapsed.n AS unassigned,
                stored.assigned - lapsed.n AS assigned,
                stored.completed
         FROM stored, lapsed",
    )
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
    .get_result::<Folded>(conn)
    .await
    .map(|f| usize::try_from(f.n).unwrap_or(0))
}
