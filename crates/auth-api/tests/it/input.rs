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
        .unwrap();
    expect_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

/// A login body of exactly `len` bytes (valid JSON, padded inside a string).
fn login_body_of(len: usize) -> Vec<u8> {
    let frame = json!({"email": "a@b.c", "password": ""}).to_string();
    let pad = len - frame.len();
    json!({"email": "a@b.c", "password": "p".repeat(pad)})
        .to_string()
        .into_bytes()
}

/// Sends `body` with chunked transfer encoding (no Content-Length), so only
/// the streaming check can see its size; returns the status.
async fn post_chunked(app: &TestApp, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    // Two chunks, so the limit is crossed while streaming, not in one read.
    let (first, second) = body.split_at(body.len() / 2);
    for chunk in [first, second] {
        request.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        request.extend_from_slice(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_body_of_exactly_16_kib_is_read_and_one_byte_more_is_413() {
    let app = TestApp::spawn().await;
    let limit = 16 * 1024;
    let exact = login_body_of(limit);
    assert_eq!(exact.len(), limit);
    // Read and judged: an impossible password is 401 like any wrong one.
    let res = app
        .post_raw("/v1/sessions", Some("application/json"), exact.clone())
        .await;
    assert_eq!(res.status().as_u16(), 401, "with Content-Length");
    assert_eq!(
        post_chunked(&app, "/v1/sessions", &exact).await,
        401,
        "chunked"
    );
    let over = login_body_of(limit + 1);
    expect_problem(
        app.post_raw("/v1/sessions", Some("application/json"), over.clone())
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(
        post_chunked(&app, "/v1/sessions", &over).await,
        413,
        "chunked"
    );
    let far_over = login_body_of(3 * limit);
    assert_eq!(
        post_chunked(&app, "/v1/sessions", &far_over).await,
        413,
        "chunked, well over"
    );
}

#[tokio::test]
async fn problems_say_what_to_fix_in_their_detail() {
    let app = TestApp::spawn().await;
    let not_json = expect_problem(
        app.post_raw("/v1/users", Some("application/json"), b"{".to_vec())
            .await,
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
    assert_eq!(not_json["detail"], "the body is not valid JSON");
    let too_big = expect_problem(
        app.post_raw("/v1/users", Some("application/json"), login_body_of(20_000))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert_eq!(too_big["detail"], "the body must be at most 16384 bytes");
    let wrong_type = expect_problem(
        app.post_raw("/v1/users", Some("text/plain"), b"{}".to_vec())
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(wrong_type["detail"], "send Content-Type: application/json");
    for _ in 0..10 {
        app.login("ghost@example.com", "wrong password").await;
    }
    let limited = expect_problem(
        app.login("ghost@example.com", "wrong password").await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
    )
    .await;
    let detail = limited["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("try again in ") && detail.ends_with(" s"),
        "{detail}"
    );
    // Answers that need no detail carry none.
    let unknown = expect_problem(
        app.get("/v1/sessions/current", None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert!(unknown.get("detail").is_none(), "{unknown}");
}
