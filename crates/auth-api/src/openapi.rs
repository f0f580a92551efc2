//! The OpenAPI 3.1 document, assembled from the routes' annotations and
//! their `*Request` / `*Response` types. This module imports the routes,
//! never the reverse: startup hands the finished document to the route that
//! serves it. The responses every route shares (401, 403 from the route
//! table's rights, 400/413/415/422, 404, 503) are added by [`SharedResponses`] from what an operation has, so no
//! route can forget one.

use crate::error::{FieldProblem, Problem, ProblemCode};
use crate::routes::{ACCESS, Access, api_keys, health, sessions, tasks, users};
use auth_core::domain::Right;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

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
        health::document,
        users::register,
        users::me,
        users::change_password,
        users::list,
        users::read,
        users::change,
        users::issue_reset,
        users::reset_password,
        api_keys::create,
        api_keys::list,
        api_keys::revoke,
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
        tasks::read,
        tasks::complete,
        tasks::release,
        tasks::heartbeat,
        tasks::fail,
        tasks::cancel,
    ),
    components(schemas(Problem, ProblemCode, FieldProblem)),
    modifiers(&SharedResponses),
    tags(
        (name = "users"),
        (name = "api-keys", description = "Credentials for machines, stored only as SHA-256 hashes"),
        (name = "sessions", description = "Opaque bearer tokens, stored only as SHA-256 hashes"),
        (name = "tasks", description = "The shared work queue"),
        (name = "operations"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn json() -> Result<String, serde_json::Error> {
    ApiDoc::openapi().to_json()
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
            let ops = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
                ("put", &mut item.put),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let access = ACCESS
                    .iter()
                    .find(|(m, p, _)| *m == method && p == path)
                    .map(|(_, _, access)| *access);
                add_shared(op, uses_database, has_path_id, access);
            }
        }
    }
}

fn add_shared(op: &mut Operation, uses_database: bool, has_path_id: bool, access: Option<Access>) {
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut add = |status: &str, response: Response| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(RefOr::T(response));
    };
    if authenticated {
        add("401", unauthenticated(access));
    }
    if let Some(right) = access.and_then(Access::right) {
        add("403", forbidden(right));
    }
    if access == Some(Access::Personal) {
        let why = "the credential is an API key: only a session may do this";
        add("403", problem(&[ProblemCode::Forbidden], why).build());
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

/// The 401 of an authenticated route of `access`.
fn unauthenticated(access: Option<Access>) -> Response {
    let why = match access {
        Some(Access::Session) => {
            "missing, malformed, unknown, expired or revoked token, or an API key (it has no session)"
        }
        _ => "missing, malformed, unknown, expired or revoked token",
    };
    problem(&[ProblemCode::InvalidToken], why)
        .header("WWW-Authenticate", string_header("`Bearer`"))
        .build()
}

/// The 403 of a route that needs `right`, naming the roles that grant it.
fn forbidden(right: Right) -> Response {
    let roles: Vec<&str> = right.granted_by().iter().map(|r| r.as_str()).collect();
    let why = format!("the caller holds none of the roles {}", roles.join(", "));
    problem(&[ProblemCode::Forbidden], &why).build()
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
