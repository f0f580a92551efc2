//! `/openapi.json` against what is really routed: every served route is in
//! the document and vice versa, and the document carries the contract's
//! error codes.

use auth_api::routes::SERVED;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;
use test_support::TestApp;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> anyhow::Result<Value> {
    let res = app.get("/openapi.json", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    Ok(res.json().await?)
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().cloned().unwrap();
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_string(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn served_routes() -> BTreeSet<(String, String)> {
    SERVED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

#[tokio::test]
async fn every_served_route_is_documented_and_every_documented_route_is_served()
-> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    let doc = document(&app).await?;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not an OpenAPI 3 document: {}",
        doc["openapi"]
    );
    let documented = documented_routes(&doc);
    let served = served_routes();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    assert_eq!(served.len(), 32, "the contract has 32 routes");
    Ok(())
}

/// `SERVED` is generated with the routing, but check actix agrees: each
/// listed method is routed (not 405) and every other method is 405.
#[tokio::test]
async fn the_served_list_matches_what_actix_routes() {
    let app = TestApp::spawn().await;
    let paths: BTreeSet<&str> = SERVED.iter().map(|(_, p)| *p).collect();
    for path in paths {
        let concrete = path
            .replace("{session_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{id}", &uuid::Uuid::new_v4().to_string());
        for method in METHODS {
            let routed = SERVED.contains(&(method, path));
            let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap_or(Method::GET);
            let res = app
                .client
                .request(verb, format!("{}{concrete}", app.address))
                .send()
                .await;
            let res = match res {
                Ok(r) => r,
                Err(e) => panic!("{method} {path}: {e}"),
            };
            if routed {
                assert_ne!(
                    res.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
            } else {
                assert_eq!(
                    res.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
                // RFC 9110: a 405 lists the methods the path has.
                let allow: Vec<String> = SERVED
                    .iter()
                    .filter(|(_, p)| *p == path)
                    .map(|(m, _)| m.to_uppercase())
                    .collect();
                let header = res.headers().get("allow").and_then(|v| v.to_str().ok());
                assert_eq!(header, Some(allow.join(", ").as_str()), "{method} {path}");
            }
        }
    }
}

#[tokio::test]
async fn the_document_lists_every_error_code_of_the_contract() -> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    let doc = document(&app).await?;
    let listed: BTreeSet<&str> = doc["components"]["schemas"]["ProblemCode"]["enum"]
        .as_array()
        .map(|codes| codes.iter().filter_map(Value::as_str).collect())
        .expect("the document lists ProblemCode's values");
    // Copied from the interface (docs/http-api.md), not from the code.
    let contract = [
        "malformed_request",
        "payload_too_large",
        "unsupported_media_type",
        "validation_failed",
        "not_found",
        "email_taken",
        "invalid_credentials",
        "too_many_attempts",
        "invalid_token",
        "not_assignee",
        "service_unavailable",
    ];
    for code in contract {
        assert!(listed.contains(code), "{code} missing from ProblemCode");
    }
    // Every authenticated operation documents its 401 and every body its 422.
    let paths = doc["paths"].as_object().cloned().unwrap();
    for (path, item) in &paths {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            if op.get("security").is_some() {
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path}: no 401"
                );
            }
            if op.get("requestBody").is_some() {
                assert!(
                    op["responses"].get("422").is_some(),
                    "{method} {path}: no 422"
                );
            }
        }
    }
    Ok(())
}

/// The routes and error codes docs/http-api.md names: routes as
/// "`METHOD /path`" (query strings cut), codes as "`4xx code`" / "`5xx code`".
fn named_by_the_interface_page() -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/http-api.md"
    ))
    .expect("docs/http-api.md");
    let mut routes = BTreeSet::new();
    let mut codes = BTreeSet::new();
    for quoted in page.split('`').skip(1).step_by(2) {
        let mut words = quoted.split_whitespace();
        let (Some(first), Some(second), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if METHODS.contains(&first.to_ascii_lowercase().as_str()) && second.starts_with('/') {
            let path = second.split('?').next().unwrap_or(second);
            routes.insert((first.to_ascii_lowercase(), path.to_owned()));
        } else if first.len() == 3 && first.starts_with(['4', '5']) && first.parse::<u16>().is_ok()
        {
            codes.insert(second.to_owned());
        }
    }
    (routes, codes)
}

#[tokio::test]
async fn the_interface_page_and_the_document_name_the_same_routes_and_codes() -> anyhow::Result<()>
{
    let app = TestApp::spawn().await;
    let doc = document(&app).await?;
    let (page_routes, page_codes) = named_by_the_interface_page();
    let documented = documented_routes(&doc);
    assert_eq!(
        page_routes, documented,
        "docs/http-api.md vs /openapi.json routes"
    );
    let enum_codes: BTreeSet<String> = doc["components"]["schemas"]["ProblemCode"]["enum"]
        .as_array()
        .expect("ProblemCode lists its values")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        page_codes, enum_codes,
        "docs/http-api.md vs /openapi.json error codes"
    );
    Ok(())
}
