//! `/v1/tasks`: the shared work queue.

use crate::error::ApiError;
use crate::error::Problem;
use crate::extract::{Authenticated, JsonBody, OptionalJsonBody, path_id};
use crate::fields::{Fields, FromJson, Items, Member, Object};
use crate::state::AppState;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use auth_core::domain::{self, FieldError, Right};
use auth_core::queue::{Claimant, DEFAULT_MAX_ATTEMPTS, MAX_BATCH, NewTask, TaskFilter, Wait};
use auth_core::store::tasks::TaskRow;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A task as the contract shows it. A task whose lease has expired shows as
/// `unassigned` with no assignee (or `failed`, "lease expired", when that was
/// its last allowed attempt).
#[derive(Serialize, ToSchema)]
pub struct TaskResponse {
    id: Uuid,
    title: String,
    schedulable: bool,
    status: TaskStatus,
    assigned_to: Option<Uuid>,
    assigned_by: Option<Uuid>,
    assigned_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    /// Higher is claimed first.
    #[schema(minimum = -1000, maximum = 1000)]
    priority: i32,
    /// Not claimable before this moment (also set by a retry's backoff).
    not_before: Option<DateTime<Utc>>,
    /// Claims so far.
    attempt: i32,
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: i32,
    /// The idempotency key it was created with (its creator's: another
    /// user's identical key names another task).
    key: Option<String>,
    /// The error of its last failed attempt.
    last_error: Option<String>,
    /// Who created it (null for tasks created before v2 recorded it).
    created_by: Option<Uuid>,
}

impl From<TaskRow> for TaskResponse {
    fn from(t: TaskRow) -> TaskResponse {
        TaskResponse {
            id: t.id,
            title: t.title,
            schedulable: t.schedulable,
            status: t.status.into(),
            assigned_to: t.assigned_to,
            assigned_by: t.assigned_by,
            assigned_at: t.assigned_at,
            lease_expires_at: t.lease_expires_at,
            completed_at: t.completed_at,
            priority: t.priority,
            not_before: t.not_before,
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            key: t.key,
            last_error: t.last_error,
            created_by: t.created_by,
        }
    }
}

/// `status` of a task.
// The wire's spelling of `domain::TaskStatus`; the match below keeps them in step.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Unassigned,
    Assigned,
    Completed,
    Failed,
    Cancelled,
}

impl From<domain::TaskStatus> for TaskStatus {
    fn from(status: domain::TaskStatus) -> TaskStatus {
        match status {
            domain::TaskStatus::Unassigned => TaskStatus::Unassigned,
            domain::TaskStatus::Assigned => TaskStatus::Assigned,
            domain::TaskStatus::Completed => TaskStatus::Completed,
            domain::TaskStatus::Failed => TaskStatus::Failed,
            domain::TaskStatus::Cancelled => TaskStatus::Cancelled,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskListResponse {
    tasks: Vec<TaskResponse>,
}

impl TaskListResponse {
    fn of(rows: Vec<TaskRow>) -> TaskListResponse {
        TaskListResponse {
            tasks: rows.into_iter().map(TaskResponse::from).collect(),
        }
    }
}

/// What a create did: the tasks in the order given (for a key already
/// stored, its existing task) and how many of them are new.
#[derive(Serialize, ToSchema)]
pub struct CreateTasksResponse {
    tasks: Vec<TaskResponse>,
    created: usize,
}

/// What one claim did: `claimed` is exactly the number of tasks this call
/// assigned (0 when none were free, which is not an error).
#[derive(Serialize, ToSchema)]
pub struct ClaimResponse {
    requested: i64,
    claimed: usize,
    tasks: Vec<TaskResponse>,
}

/// Counted from the database at the time of the call. `delayed`: unassigned
/// tasks whose `not_before` is still ahead (also counted in `unassigned`).
#[derive(Serialize, ToSchema)]
pub struct TaskStatsResponse {
    unassigned: i64,
    assigned: i64,
    completed: i64,
    failed: i64,
    cancelled: i64,
    delayed: i64,
}

/// The query of `GET /v1/tasks`, read by hand so every bad value is listed;
/// unknown parameters are ignored.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks in this status.
    #[param(value_type = Option<TaskStatus>)]
    status: Option<domain::TaskStatus>,
    /// `me` or a user id: only tasks assigned to them.
    #[param(
        value_type = Option<String>,
        pattern = "^(me|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    )]
    assignee: Option<Uuid>,
    /// At most this many tasks (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

impl ListQuery {
    /// Reads `query`, `me` standing for `caller`.
    fn parse(query: &str, caller: Uuid) -> Result<ListQuery, ApiError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query).map_err(|_| {
            ApiError::Validation(vec![FieldError::new(
                "query",
                "is not a valid query string",
            )])
        })?;
        let mut parsed = ListQuery {
            status: None,
            assignee: None,
            limit: None,
        };
        let mut errors = Vec::new();
        for (key, value) in pairs.into_inner() {
            match key.as_str() {
                "status" => match domain::TaskStatus::parse(&value) {
                    Some(status) => parsed.status = Some(status),
                    None => errors.push(FieldError::new(
                        "status",
                        "must be unassigned, assigned, completed, failed or cancelled",
                    )),
                },
                "assignee" if value == "me" => parsed.assignee = Some(caller),
                "assignee" => match Uuid::parse_str(&value) {
                    Ok(id) => parsed.assignee = Some(id),
                    Err(_) => errors.push(FieldError::new("assignee", "must be me or a user id")),
                },
                "limit" => match value.parse() {
                    Ok(n) => parsed.limit = Some(n),
                    Err(_) => errors.push(FieldError::new("limit", "must be an integer")),
                },
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(parsed)
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

impl From<ListQuery> for TaskFilter {
    fn from(q: ListQuery) -> TaskFilter {
        TaskFilter {
            status: q.status,
            assignee: q.assignee,
            limit: q.limit,
        }
    }
}

/// One task of a batch.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTaskRequest {
    /// 1 to 500 characters, no NUL.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 500, pattern = r"^[^\x00]*$")]
    #[serde(default)]
    title: Member<String>,
    /// Only schedulable tasks are claimed.
    #[schema(value_type = Option<bool>, default = true)]
    #[serde(default)]
    schedulable: Member<bool>,
    /// Higher is claimed first.
    #[schema(value_type = Option<i32>, default = 0, minimum = -1000, maximum = 1000)]
    #[serde(default)]
    priority: Member<i64>,
    /// Not claimable before this moment (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default)]
    not_before: Member<DateTime<Utc>>,
    /// Claims allowed before it fails for good.
    #[schema(value_type = Option<i32>, default = 5, minimum = 1, maximum = 100)]
    #[serde(default)]
    max_attempts: Member<i64>,
    /// An idempotency key: when a task with it exists, that task is returned
    /// in place of a new one.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\x00]*$")]
    #[serde(default)]
    key: Member<String>,
}

impl NewTaskRequest {
    /// The task, with the contract's defaults; `None` when a member failed
    /// (listed in `f`). Ranges are the queue's to check.
    fn check(self, f: &mut Fields) -> Option<NewTask> {
        let title = f.required("title", self.title);
        let schedulable = f.optional("schedulable", self.schedulable);
        let priority = f.optional("priority", self.priority);
        let not_before = f.optional("not_before", self.not_before);
        let max_attempts = f.optional("max_attempts", self.max_attempts);
        let key = f.optional("key", self.key);
        Some(NewTask {
            title: title?,
            schedulable: schedulable.unwrap_or(true),
            // Out of i32 is out of range too: the queue says so.
            priority: priority.map_or(0, |p| i32::try_from(p).unwrap_or(i32::MAX)),
            not_before,
            max_attempts: max_attempts.map_or(DEFAULT_MAX_ATTEMPTS, |m| {
                i32::try_from(m).unwrap_or(i32::MAX)
            }),
            key,
        })
    }
}

/// `POST /v1/tasks`: 1 to 1000 tasks, at most 1 MiB.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTasksRequest {
    #[schema(value_type = Vec<NewTaskRequest>, required = true, min_items = 1, max_items = 1000)]
    #[serde(default)]
    tasks: Member<Items<Object<NewTaskRequest>, MAX_BATCH>>,
}

impl FromJson for CreateTasksRequest {
    const MAX_BODY: usize = 1024 * 1024;
    type Checked = Vec<NewTask>;

    fn check(self) -> Result<Vec<NewTask>, Vec<FieldError>> {
        let mut f = Fields::top();
        let items = f.required("tasks", self.tasks);
        // The count first: an oversized batch is refused without reading its items.
        if items
            .as_ref()
            .is_some_and(|items| !(1..=MAX_BATCH).contains(&items.count()))
        {
            f.fail("tasks", "must list 1 to 1000 tasks");
            return Err(f.errors);
        }
        let mut tasks = Vec::new();
        for (i, item) in items
            .map(|items| items.items)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if f.is_full() {
                break;
            }
            let mut t = Fields::under(&format!("tasks[{i}]"));
            match item {
                Member::Given(Object(item)) => tasks.extend(item.check(&mut t)),
                Member::Absent | Member::Wrong => t.fail("", "must be a JSON object"),
            }
            f.absorb(t);
        }
        f.finish(Some(tasks))
    }
}

/// `POST /v1/tasks/claim`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 30)]
    #[serde(default)]
    count: Member<i64>,
    /// Defaults to the caller; must be an existing user (else 422).
    #[schema(
        value_type = Option<String>,
        format = Uuid,
        pattern = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
    )]
    #[serde(default)]
    assignee_id: Member<Uuid>,
    /// When nothing is claimable, wait up to this long for tasks to arrive.
    #[schema(value_type = Option<i64>, default = 0, minimum = 0, maximum = 30000)]
    #[serde(default)]
    wait_ms: Member<i64>,
}

/// A claim as the route reads it.
pub struct Claim {
    count: i64,
    assignee_id: Option<Uuid>,
    wait_ms: i64,
}

impl FromJson for ClaimRequest {
    type Checked = Claim;

    fn check(self) -> Result<Claim, Vec<FieldError>> {
        let mut f = Fields::top();
        let count = f.required("count", self.count);
        let assignee_id = f.optional("assignee_id", self.assignee_id);
        let wait_ms = f.optional("wait_ms", self.wait_ms).unwrap_or(0);
        f.finish(count.map(|count| Claim {
            count,
            assignee_id,
            wait_ms,
        }))
    }
}

/// `POST /v1/tasks/{id}/heartbeat`; the body may be left out.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The new lease, from now (default: the service's lease).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 3600)]
    #[serde(default)]
    lease_secs: Member<i64>,
}

impl FromJson for HeartbeatRequest {
    /// `lease_secs`, if given.
    type Checked = Option<i64>;

    fn check(self) -> Result<Option<i64>, Vec<FieldError>> {
        let mut f = Fields::top();
        let lease_secs = f.optional("lease_secs", self.lease_secs);
        f.finish(Some(lease_secs))
    }
}

/// `POST /v1/tasks/{id}/fail`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// What went wrong (kept as `last_error`).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 2000, pattern = r"^[^\x00]*$")]
    #[serde(default)]
    error: Member<String>,
    /// Retry after a backoff while attempts are left (default true).
    #[schema(value_type = Option<bool>, default = true)]
    #[serde(default)]
    retry: Member<bool>,
}

/// A failure as the route reads it.
pub struct Failure {
    error: String,
    retry: bool,
}

impl FromJson for FailRequest {
    type Checked = Failure;

    fn check(self) -> Result<Failure, Vec<FieldError>> {
        let mut f = Fields::top();
        let error = f.required("error", self.error);
        let retry = f.optional("retry", self.retry).unwrap_or(true);
        f.finish(error.map(|error| Failure { error, retry }))
    }
}

#[utoipa::path(
    post,
    path = "/v1/tasks",
    tag = "tasks",
    summary = "Create a batch of tasks",
    security(("bearer" = [])),
    request_body = CreateTasksRequest,
    responses(
        (status = 201, description = "Created, in the order given; a key the caller already holds yields its existing task (another user's identical key is another key)", body = CreateTasksResponse),
        (status = 409, description = "`key_conflict`: a key the caller holds, sent with another title, priority, not_before or max_attempts than its task was created with (also twice within the batch); nothing is created", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(batch): JsonBody<CreateTasksRequest>,
) -> Result<HttpResponse, ApiError> {
    let created = state.queue.create(caller.user_id(), batch).await?;
    Ok(HttpResponse::Created().json(CreateTasksResponse {
        tasks: created.tasks.into_iter().map(TaskResponse::from).collect(),
        created: created.created,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/claim",
    tag = "tasks",
    summary = "Claim up to `count` free tasks, waiting up to `wait_ms` for some",
    description = "Claimable: schedulable, unassigned (or whose lease expired), past `not_before`, with attempts left; highest priority first, then oldest. Concurrent claimers never get the same task and never wait on each other's rows. With `wait_ms`, a claim that finds none waits for tasks to arrive and answers once it claimed at least one or the wait ends (`claimed: 0`).",
    security(("bearer" = [])),
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "What this call assigned", body = ClaimResponse),
        (status = 403, description = "`forbidden`: the caller holds no role that works, or gives an `assignee_id` of someone else without being an assigner or admin", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_waiters`: a long poll past the bound per session or per instance, answered at once", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds before trying again"))),
    )
)]
pub async fn claim(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    JsonBody(body): JsonBody<ClaimRequest>,
) -> Result<HttpResponse, ApiError> {
    let spent = req
        .extensions()
        .get::<crate::telemetry::Arrived>()
        .map(|arrived| arrived.0.elapsed())
        .unwrap_or_default();
    if body
        .assignee_id
        .is_some_and(|assignee| assignee != p.user_id())
    {
        crate::extract::allow(&p, Right::Assign)?;
    }
    let wait = Wait::from_millis(body.wait_ms)?.less(spent);
    let claimant = Claimant {
        user: p.user_id(),
        credential: p.credential_id(),
    };
    let outcome = state
        .queue
        .claim(claimant, body.count, body.assignee_id, wait)
        .await?;
    Ok(HttpResponse::Ok().json(ClaimResponse {
        requested: outcome.requested,
        claimed: outcome.claimed(),
        tasks: outcome.tasks.into_iter().map(TaskResponse::from).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/complete",
    tag = "tasks",
    summary = "Complete a task the caller holds",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A task id (UUID)")),
    responses(
        (status = 200, description = "Completed", body = TaskResponse),
        (status = 409, description = "`not_assignee`: not held by the caller under a live lease", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn complete(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task = state.queue.complete(p.user_id(), path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(TaskResponse::from(task)))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/release",
    tag = "tasks",
    summary = "Return a task the caller holds to the queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A task id (UUID)")),
    responses(
        (status = 200, description = "Back in `unassigned`", body = TaskResponse),
        (status = 409, description = "`not_assignee`: not held by the caller under a live lease", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn release(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task = state.queue.release(p.user_id(), path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(TaskResponse::from(task)))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/heartbeat",
    tag = "tasks",
    summary = "Extend the lease of a task the caller holds",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A task id (UUID)")),
    request_body(content = Option<HeartbeatRequest>, description = "May be left out"),
    responses(
        (status = 200, description = "Lease extended from now", body = TaskResponse),
        (status = 409, description = "`not_assignee`: not held by the caller under a live lease", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn heartbeat(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    id: web::Path<String>,
    OptionalJsonBody(lease_secs): OptionalJsonBody<HeartbeatRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    // A negative value is out of range as well: the queue says so.
    let lease_secs = lease_secs.map(|s| u64::try_from(s).unwrap_or(0));
    let task = state.queue.heartbeat(p.user_id(), id, lease_secs).await?;
    Ok(HttpResponse::Ok().json(TaskResponse::from(task)))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/fail",
    tag = "tasks",
    summary = "Report a failed attempt of a task the caller holds",
    description = "With `retry` (the default) and attempts left the task goes back to the queue, claimable after a backoff (1 s doubling per attempt, at most 1 h, less up to 20% jitter); otherwise it is `failed`.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A task id (UUID)")),
    request_body = FailRequest,
    responses(
        (status = 200, description = "Retried later, or failed", body = TaskResponse),
        (status = 409, description = "`not_assignee`: not held by the caller under a live lease", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn fail(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    id: web::Path<String>,
    JsonBody(body): JsonBody<FailRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let task = state
        .queue
        .fail(p.user_id(), id, &body.error, body.retry)
        .await?;
    Ok(HttpResponse::Ok().json(TaskResponse::from(task)))
}

#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    tag = "tasks",
    summary = "Read one task",
    description = "An assigner reads any task; a worker only one assigned to it (any other is `404`, as if it did not exist).",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A task id (UUID)")),
    responses(
        (status = 200, description = "The task as it is now", body = TaskResponse),
        (status = 404, description = "`not_found`: no such task, or (to a worker) not one assigned to it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn read(
    state: web::Data<AppState>,
    Authenticated(caller): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let everyone = caller.roles().grant(Right::Assign);
    let task = state
        .queue
        .read(caller.user_id(), everyone, path_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(TaskResponse::from(task)))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/cancel",
    tag = "tasks",
    summary = "Cancel a task that is unassigned or assigned",
    description = "Its assignee, if any, gets `409 not_assignee` on every later write.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A task id (UUID)")),
    responses(
        (status = 200, description = "Cancelled", body = TaskResponse),
        (status = 409, description = "`not_cancellable`: already completed, failed or cancelled", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    state: web::Data<AppState>,
    _caller: Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task = state.queue.cancel(path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(TaskResponse::from(task)))
}

#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    summary = "List tasks, oldest first",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Matching tasks", body = TaskListResponse),
        (status = 403, description = "`forbidden`: a worker may list only its own tasks (`assignee=me`); any other listing needs assigner or admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: a bad query value", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string(), p.user_id())?;
    if query.assignee != Some(p.user_id()) {
        crate::extract::allow(&p, Right::Assign)?;
    }
    let tasks = state.queue.list(query.into()).await?;
    Ok(HttpResponse::Ok().json(TaskListResponse::of(tasks)))
}

#[utoipa::path(
    get,
    path = "/v1/tasks/stats",
    tag = "tasks",
    summary = "Count tasks by status",
    security(("bearer" = [])),
    responses((status = 200, description = "Counts", body = TaskStatsResponse))
)]
pub async fn stats(
    state: web::Data<AppState>,
    _caller: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let c = state.queue.stats().await?;
    Ok(HttpResponse::Ok().json(TaskStatsResponse {
        unassigned: c.unassigned,
        assigned: c.assigned,
        completed: c.completed,
        failed: c.failed,
        cancelled: c.cancelled,
        delayed: c.delayed,
    }))
}
