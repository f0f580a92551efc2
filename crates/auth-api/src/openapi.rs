//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//!
//! Request bodies are read by hand (`fields.rs`) so that a 422 lists every
//! bad field; the `*Request` types here only describe those bodies. The
//! responses every route shares (401, 400/413/415/422, 404, 503) are added by
//! [`SharedResponses`] from what an operation has, so no route can forget one.

use crate::error::{FieldErrorSchema, Problem, ProblemCode};
use crate::routes::{health, sessions, tasks, users};
use actix_web::HttpResponse;
use std::sync::OnceLock;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// `POST /v1/users`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RegisterRequest {
    /// Stored trimmed and lower-cased; at most 254 characters. The pattern is
    /// what the service accepts: one `@`, 1-64 characters before it,
    /// dot-separated non-empty labels after it, no spaces or control characters.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]{1,64}@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)*$",
        example = "ada@example.com"
    )]
    email: String,
    /// 8 to 128 characters (Unicode scalar values).
    #[schema(min_length = 8, max_length = 128, example = "correct horse battery")]
    password: String,
}

/// `POST /v1/sessions`. Any strings are accepted: a value that could never
/// be valid is `401 invalid_credentials`, like a wrong one.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    #[schema(example = "ada@example.com")]
    email: String,
    #[schema(example = "correct horse battery")]
    password: String,
}

/// One task of a batch.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewTaskRequest {
    /// 1 to 500 characters, no NUL.
    #[schema(min_length = 1, max_length = 500, pattern = r"^[^\x00]*$")]
    title: String,
    /// Only schedulable tasks are claimed.
    #[schema(default = true)]
    schedulable: Option<bool>,
}

/// `POST /v1/tasks`: 1 to 1000 tasks, at most 1 MiB.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CreateTasksRequest {
    #[schema(min_items = 1, max_items = 1000)]
    tasks: Vec<NewTaskRequest>,
}

/// `POST /v1/tasks/claim`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ClaimRequest {
    #[schema(minimum = 1, maximum = 30)]
    count: i64,
    /// Defaults to the caller; must be an existing user (else 422).
    #[schema(
        pattern = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
    )]
    assignee_id: Option<Uuid>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tessera",
        description = "Authentication sessions and a shared work queue. Errors are RFC 9457 problem documents with a stable `code`."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        document,
        users::register,
        sessions::login,
        sessions::list,
        sessions::revoke_all,
        sessions::current,
        sessions::logout,
        sessions::refresh,
        sessions::revoke,
        tasks::create,
        tasks::list,
        tasks::claim,
        tasks::stats,
        tasks::complete,
        tasks::release,
    ),
    components(schemas(Problem, ProblemCode, FieldErrorSchema)),
    modifiers(&SharedResponses),
    tags(
        (name = "users"),
        (name = "sessions", description = "Opaque bearer tokens, stored only as SHA-256 hashes"),
        (name = "tasks", description = "The shared work queue"),
        (name = "operations"),
    )
)]
pub struct ApiDoc;

/// The document as served, built once.
pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default())
}

/// The OpenAPI document of this service.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json())
}

/// Adds the bearer scheme and the responses an operation has because of
/// what it is: authenticated, has a body, has a path id, uses the database.
struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        for (path, item) in doc.paths.paths.iter_mut() {
            let uses_database = path.starts_with("/v1/");
            let has_path_id = path.contains('{');
            for op in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                add_shared(op, uses_database, has_path_id);
            }
        }
    }
}

fn add_shared(op: &mut Operation, uses_database: bool, has_path_id: bool) {
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut add = |status: &str, response: Response| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(RefOr::T(response));
    };
    if authenticated {
        add(
            "401",
            problem(
                &[ProblemCode::InvalidToken],
                "missing, malformed, unknown, expired or revoked token",
            )
            .header("WWW-Authenticate", string_header("`Bearer`"))
            .build(),
        );
    }
    if op.request_body.is_some() {
        add(
            "400",
            problem(
                &[ProblemCode::MalformedRequest],
                "not JSON, or nested deeper than 32 levels",
            )
            .build(),
        );
        add(
            "413",
            problem(
                &[ProblemCode::PayloadTooLarge],
                "over 16 KiB (1 MiB for task batches)",
            )
            .build(),
        );
        add(
            "415",
            problem(
                &[ProblemCode::UnsupportedMediaType],
                "the body is not `application/json`",
            )
            .build(),
        );
        add(
            "422",
            problem(
                &[ProblemCode::ValidationFailed],
                "wrong shape or invalid values; `errors` lists each field",
            )
            .build(),
        );
    }
    if has_path_id {
        add(
            "404",
            problem(&[ProblemCode::NotFound], "no such id (or not a UUID)").build(),
        );
    }
    if uses_database {
        add(
            "503",
            problem(
                &[ProblemCode::ServiceUnavailable],
                "the database or the pool could not serve in time",
            )
            .header(
                "Retry-After",
                integer_header("Seconds to wait before retrying"),
            )
            .build(),
        );
    }
}

fn problem(codes: &[ProblemCode], why: &str) -> ResponseBuilder {
    let codes: Vec<String> = codes.iter().map(|c| format!("`{}`", c.as_str())).collect();
    ResponseBuilder::new()
        .description(format!("{}: {why}", codes.join(", ")))
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .build()
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        ))
        .description(Some(description))
        .build()
}
