use crate::error::ApiError;
use crate::extract::{Authenticated, JsonBody, path_id};
use crate::fields::{Fields, FromJson};
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse, web};
use auth_core::domain::FieldError;
use auth_core::queue::{NewTask, TaskFilter};
use auth_core::store::tasks::TaskRow;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// A task as the contract shows it.
#[derive(Serialize)]
pub struct TaskBody {
    id: Uuid,
    title: String,
    schedulable: bool,
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

fn bodies(rows: Vec<TaskRow>) -> Vec<TaskBody> {
    rows.into_iter().map(TaskBody::from).collect()
}

pub struct CreateTasks(Vec<NewTask>);

impl FromJson for CreateTasks {
    const MAX_BODY: usize = 1024 * 1024;

    fn from_json(value: &Value) -> Result<Self, Vec<FieldError>> {
        let mut f = Fields::of(value, "");
        let items = f.array("tasks");
        let mut tasks = Vec::new();
        for (i, item) in items.into_iter().flatten().enumerate() {
            let mut t = Fields::of(item, &format!("tasks[{i}]"));
            let title = t.string("title").map(str::to_owned);
            let schedulable = t.optional_bool("schedulable", true);
            f.errors.append(&mut t.errors);
            tasks.extend(title.map(|title| NewTask { title, schedulable }));
        }
        f.finish(items.map(|_| CreateTasks(tasks)))
    }
}

pub async fn create(
    state: web::Data<AppState>,
    _caller: Authenticated,
    JsonBody(CreateTasks(batch)): JsonBody<CreateTasks>,
) -> Result<HttpResponse, ApiError> {
    let created = state.queue.create(batch).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "tasks": bodies(created) })))
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

pub async fn claim(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    JsonBody(body): JsonBody<ClaimBody>,
) -> Result<HttpResponse, ApiError> {
    let outcome = state
        .queue
        .claim(p.user_id, body.count, body.assignee_id)
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "requested": outcome.requested,
        "claimed": outcome.claimed(),
        "tasks": bodies(outcome.tasks),
    })))
}

pub async fn complete(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task = state.queue.complete(p.user_id, path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(TaskBody::from(task)))
}

pub async fn release(
    state: web::Data<AppState>,
    Authenticated(p): Authenticated,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task = state.queue.release(p.user_id, path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(TaskBody::from(task)))
}

/// `?status=&assignee=me&limit=`; unknown parameters are ignored.
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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tasks": bodies(tasks) })))
}

pub async fn stats(
    state: web::Data<AppState>,
    _caller: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let c = state.queue.stats().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "unassigned": c.unassigned,
        "assigned": c.assigned,
        "completed": c.completed,
    })))
}
