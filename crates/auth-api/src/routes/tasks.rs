use crate::error::ApiError;
use crate::error::Problem;
use crate::extract::{Authenticated, JsonBody, path_id};
use crate::fields::{Fields, FromJson};
use crate::openapi::{ClaimRequest, CreateTasksRequest};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use auth_core::domain::FieldError;
use auth_core::queue::{MAX_BATCH, NewTask, TaskFilter};
use auth_core::store::tasks::TaskRow;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A task as the contract shows it. A task whose lease has expired shows as
/// `unassigned` with no assignee.
#[derive(Serialize, ToSchema)]
pub struct TaskBody {
    id: Uuid,
    title: String,
    schedulable: bool,
    #[schema(value_type = TaskStatus)]
    status: String,
    assigned_to: Option<Uuid>,
    assigned_by: Option<Uuid>,
    assigned_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl From<TaskRow> for TaskBody {
    fn from(t: TaskRow) -> TaskBody {
        TaskBody {
            id: t.id,
            title: t.title,
            schedulable: t.schedulable,
            status: t.status,
            assigned_to: t.assigned_to,
            assigned_by: t.assigned_by,
            assigned_at: t.assigned_at,
            lease_expires_at: t.lease_expires_at,
            completed_at: t.completed_at,
        }
    }
}

/// `status` of a task.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // a schema only: the status travels as the store's string
pub enum TaskStatus {
    Unassigned,
    Assigned,
    Completed,
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    tasks: Vec<TaskBody>,
}

/// What one claim did: `claimed` is exactly the number of tasks this call
/// assigned (0 when none were free, which is not an error).
#[derive(Serialize, ToSchema)]
pub struct ClaimAnswer {
    requested: i64,
    claimed: usize,
    tasks: Vec<TaskBody>,
}

/// Counted from the database at the time of the call.
#[derive(Serialize, ToSchema)]
pub struct TaskStats {
    unassigned: i64,
    assigned: i64,
    completed: i64,
}

/// The query of `GET /v1/tasks`; read by hand so every bad value is listed.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation of the query string
pub struct ListQuery {
    /// Only tasks in this status.
    status: Option<TaskStatus>,
    /// `me` or a user id: only tasks assigned to them.
    #[param(
        pattern = "^(me|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
    )]
    assignee: Option<String>,
    /// At most this many tasks (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

fn bodies(rows: Vec<TaskRow>) -> Vec<TaskBody> {
    rows.into_iter().map(TaskBody::from).collect()
}

pub struct CreateTasks(Vec<NewTask>);

impl FromJson for CreateTasks {
    const MAX_BODY: usize = 1024 * 1024;

    fn from_json(value: &Value) -> Result<Self, Vec<FieldError>> {
        let mut f = Fields::of(value, "");
        let items = f.array("tasks");
        // The count first: an oversized batch is refused without reading its items.
        if items.is_some_and(|items| items.is_empty() || items.len() > MAX_BATCH) {
            f.push(FieldError::new("tasks", "must list 1 to 1000 tasks"));
            return Err(f.errors);
        }
        let mut tasks = Vec::new();
        for (i, item) in items.into_iter().flatten().enumerate() {
            if f.is_full() {
                break;
            }
            let mut t = Fields::of(item, &format!("tasks[{i}]"));
            let title = t.string("title").map(str::to_owned);
            let schedulable = t.optional_bool("schedulable", true);
            f.absorb(t);
            tasks.extend(title.map(|title| NewTask { title, schedulable }));
        }
        f.finish(items.map(|_| CreateTasks(tasks)))
    }
}

#[utoipa::path(
    post,
    path = "/v1/tasks",
    tag = "tasks",
    summary = "Create a batch of tasks",
    security(("bearer" = [])),
    request_body = CreateTasksRequest,
    responses((status = 201, description = "Created, in the order given", body = TaskList))
)]
pub async fn create(
    state: web::Data<AppState>,
    _caller: Authenticated,
    JsonBody(CreateTasks(batch)): JsonBody<CreateTasks>,
) -> Result<HttpResponse, ApiError> {
    let created = state.queue.create(batch).await?;
    Ok(HttpResponse::Created().json(TaskList {
        tasks: bodies(created),
    }))
}

pub struct ClaimBody {
    count: i64,
    assignee_id: Option<Uuid>,
}

impl FromJson for ClaimBody {
    fn from_json(value: &Value) -> Result<Self, Vec<FieldError>> {
        let mut f = Fields::of(value, "");
        let count = f.integer("count");
        let assignee_id = f.optional_uuid("assignee_id");
        f.finish(count.map(|count| ClaimBody { count, assignee_id }))
    }
}

#[utoipa::path(
    post,
    path = "/v1/tasks/claim",
    tag = "tasks",
    summary = "Claim up to `count` free tasks",
    description = "Only schedulable tasks that are unassigned (or whose lease expired). Concurrent claimers never get the same task and never wait on each other's rows.",
    security(("bearer" = [])),
    request_body = ClaimRequest,
    responses((status = 200, description = "What this call assigned", body = ClaimAnswer))
)]
pub async fn claim(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    JsonBody(body): JsonBody<ClaimBody>,
) -> Result<HttpResponse, ApiError> {
    let outcome = state
        .queue
        .claim(p.user_id, body.count, body.assignee_id)
        .await?;
    Ok(HttpResponse::Ok().json(ClaimAnswer {
        requested: outcome.requested,
        claimed: outcome.claimed(),
        tasks: bodies(outcome.tasks),
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
        (status = 200, description = "Completed", body = TaskBody),
        (status = 409, description = "`not_assignee`: not held by the caller under a live lease", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn complete(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task = state.queue.complete(p.user_id, path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(TaskBody::from(task)))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/release",
    tag = "tasks",
    summary = "Return a task the caller holds to the queue",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A task id (UUID)")),
    responses(
        (status = 200, description = "Back in `unassigned`", body = TaskBody),
        (status = 409, description = "`not_assignee`: not held by the caller under a live lease", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn release(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task = state.queue.release(p.user_id, path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(TaskBody::from(task)))
}

/// `?status=&assignee=me&limit=`; unknown parameters are ignored.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    summary = "List tasks, oldest first",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Matching tasks", body = TaskList),
        (status = 422, description = "`validation_failed`: a bad query value", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string()).map_err(|_| {
            ApiError::Validation(vec![FieldError::new(
                "query",
                "is not a valid query string",
            )])
        })?;
    let mut filter = TaskFilter::default();
    let mut errors = Vec::new();
    for (key, value) in query.into_inner() {
        match key.as_str() {
            "status" => filter.status = Some(value),
            "assignee" if value == "me" => filter.assignee = Some(p.user_id),
            "assignee" => match Uuid::parse_str(&value) {
                Ok(id) => filter.assignee = Some(id),
                Err(_) => errors.push(FieldError::new("assignee", "must be me or a user id")),
            },
            "limit" => match value.parse() {
                Ok(n) => filter.limit = Some(n),
                Err(_) => errors.push(FieldError::new("limit", "must be an integer")),
            },
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let tasks = state.queue.list(filter).await?;
    Ok(HttpResponse::Ok().json(TaskList {
        tasks: bodies(tasks),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/tasks/stats",
    tag = "tasks",
    summary = "Count tasks by status",
    security(("bearer" = [])),
    responses((status = 200, description = "Counts", body = TaskStats))
)]
pub async fn stats(
    state: web::Data<AppState>,
    _caller: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let c = state.queue.stats().await?;
    Ok(HttpResponse::Ok().json(TaskStats {
        unassigned: c.unassigned,
        assigned: c.assigned,
        completed: c.completed,
    }))
}
