//! Bad input of every kind the contract names gets its 4xx problem document.

use reqwest::StatusCode;
use serde_json::json;
use test_support::TestApp;
use test_support::app::{expect_problem, expect_status};

#[tokio::test]
async fn a_body_that_is_not_json_is_400() {
    let app = TestApp::spawn().await;
    for body in [&b"{\"email\":"[..], b"not json", b"", b"\xff\xfe{}"] {
        expect_problem(
            app.post_raw("/v1/users", Some("application/json"), body.to_vec())
                .await,
            StatusCode::BAD_REQUEST,
            "malformed_request",
        )
        .await;
    }
}

#[tokio::test]
async fn nesting_deeper_than_32_is_400_and_32_is_read() {
    let app = TestApp::spawn().await;
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
    expect_problem(
        app.post_raw("/v1/users", Some("application/json"), nested(33))
            .await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
    expect_problem(
        app.post_raw("/v1/users", Some("application/json"), nested(5000))
            .await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
    // 32 levels parse; an array is then the wrong shape.
    expect_problem(
        app.post_raw("/v1/users", Some("application/json"), nested(32))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_16_kib_is_413() {
    let app = TestApp::spawn().await;
    let big = json!({"email": "a@b.c", "password": "x".repeat(17 * 1024)})
        .to_string()
        .into_bytes();
    expect_problem(
        app.post_raw("/v1/users", Some("application/json"), big.clone())
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    expect_problem(
        app.post_raw("/v1/sessions", Some("application/json"), big)
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(app.db.count("SELECT count(*) AS n FROM users").await, 0);
}

#[tokio::test]
async fn a_missing_or_wrong_content_type_is_415() {
    let app = TestApp::spawn().await;
    let body = json!({"email": "a@b.c", "password": "long enough"})
        .to_string()
        .into_bytes();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        expect_problem(
            app.post_raw("/v1/users", ct, body.clone()).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    expect_status(
        app.post_raw("/v1/users", Some("application/json; charset=utf-8"), body)
            .await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_422_naming_the_fields() {
    let app = TestApp::spawn().await;
    for (body, fields) in [
        (json!([1, 2]), vec!["body"]),
        (json!("a string"), vec!["body"]),
        (json!({}), vec!["email", "password"]),
        (
            json!({"email": 5, "password": ["x"]}),
            vec!["email", "password"],
        ),
        (json!({"email": "a@b.c"}), vec!["password"]),
    ] {
        for path in ["/v1/users", "/v1/sessions"] {
            let problem = expect_problem(
                app.post_json(path, None, &body).await,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            )
            .await;
            let got: Vec<&str> = problem["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["field"].as_str())
                .collect();
            assert_eq!(got, fields, "{path} {body}");
            assert!(problem["errors"][0]["detail"].is_string());
        }
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problem_documents() {
    let app = TestApp::spawn().await;
    expect_problem(
        app.get("/v1/nothing-here", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let res = app
        .client
        .put(app.url("/v1/sessions"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    expect_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}
