//! What a stranger's request may cost: bounded metric series, bounded 422
//! documents, and no body read before the caller is known.

use auth_api::routes::ACCESS;
use reqwest::Method;
use serde_json::{Value, json};
use test_support::TestApp;
use test_support::app::expect_problem;

/// A batch create that must be refused as `422 validation_failed`: its problem.
async fn rejected_batch(app: &TestApp, token: &str, body: Value) -> Value {
    expect_problem(
        app.create_tasks(token, &body).await,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await
}

async fn metrics_len(app: &TestApp) -> usize {
    app.get("/metrics", None).await.text().await.unwrap().len()
}

#[tokio::test]
async fn invented_methods_and_paths_add_no_metric_series() {
    let app = TestApp::spawn().await;
    // Warm the series the loop below may legitimately create (other/404/405).
    for path in ["/healthz", "/no/such/path"] {
        let m = Method::from_bytes(b"MWARMUP").unwrap_or(Method::GET);
        let _ = app.client.request(m, app.url(path)).send().await;
    }
    let _ = app.get("/no/such/path", None).await;
    let before = metrics_len(&app).await;
    let filler = "A".repeat(1000);
    for i in 0..3000 {
        let method = Method::from_bytes(format!("M{i}{filler}").as_bytes()).unwrap_or(Method::GET);
        let path = if i % 2 == 0 {
            "/healthz".to_string()
        } else {
            format!("/invented/{i}")
        };
        let res = app.client.request(method, app.url(&path)).send().await;
        let status = res.map(|r| r.status().as_u16()).unwrap_or(0);
        assert!((400..500).contains(&status), "{i}: {status}");
    }
    let after = metrics_len(&app).await;
    // Counts grow by digits only; no new series.
    assert!(
        after < before + 10 * 1024,
        "/metrics grew from {before} to {after} bytes"
    );
    let body = app.get("/metrics", None).await.text().await.unwrap();
    assert!(!body.contains("M1AAAA"), "a client's method became a label");
    assert!(!body.contains("/invented/"), "a raw path became a label");
    assert!(body.contains("method=\"other\""));
    assert!(body.contains("route=\"unmatched\""));
}

#[tokio::test]
async fn a_batch_of_a_million_bad_items_gets_a_small_422() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    // Just under 1 MiB of `0`s: every item is wrong.
    let mut body = String::from("{\"tasks\":[0");
    while body.len() < 1024 * 1024 - 8 {
        body.push_str(",0");
    }
    body.push_str("]}");
    let res = app
        .client
        .post(app.url("/v1/tasks"))
        .bearer_auth(&ada.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let len = res.content_length().unwrap_or(u64::MAX);
    let problem = expect_problem(
        res,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(len < 16 * 1024, "a 422 of {len} bytes");
    assert_eq!(
        problem["errors"].as_array().map(Vec::len),
        Some(1),
        "over 1000 items is one error about the count: {problem}"
    );
    // Within the count, 1000 bad items: 50 listed, and `truncated`.
    let items: Vec<Value> = (0..1000).map(|_| json!(0)).collect();
    let problem = rejected_batch(&app, &ada.token, json!({"tasks": items})).await;
    assert_eq!(problem["errors"].as_array().map(Vec::len), Some(50));
    assert_eq!(problem["truncated"], true);
    assert_eq!(problem["errors"][0]["field"], "tasks[0]");
    // Exactly 50 bad items: all listed, nothing left out, so no `truncated`.
    let items: Vec<Value> = (0..50).map(|_| json!(0)).collect();
    let problem = rejected_batch(&app, &ada.token, json!({"tasks": items})).await;
    assert_eq!(problem["errors"].as_array().map(Vec::len), Some(50));
    assert!(problem.get("truncated").is_none(), "{problem}");
    // A few bad items: all listed, no `truncated`.
    let problem = rejected_batch(&app, &ada.token, json!({"tasks": [{"title": 7}, 3]})).await;
    assert_eq!(problem["errors"].as_array().map(Vec::len), Some(2));
    assert!(problem.get("truncated").is_none(), "{problem}");
}

#[tokio::test]
async fn every_authenticated_route_answers_401_before_reading_the_body() {
    let app = TestApp::spawn().await;
    let unknown = "A".repeat(43);
    let protected: Vec<_> = ACCESS
        .iter()
        .filter(|(_, _, access)| access.authenticated())
        .collect();
    assert!(protected.len() >= 10, "{protected:?}");
    let id = uuid::Uuid::new_v4().to_string();
    for (method, path, _) in protected {
        let path = path.replace("{id}", &id).replace("{session_id}", &id);
        let method =
            Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
        let bodies: [(&str, Vec<u8>); 4] = [
            ("text/plain", b"hello".to_vec()),
            ("application/json", b"{not json".to_vec()),
            ("application/json", b"[1,2,3]".to_vec()),
            ("application/json", vec![b' '; 2 * 1024 * 1024]),
        ];
        for (content_type, body) in bodies {
            let len = body.len();
            for token in [None, Some(unknown.as_str()), Some("not a token")] {
                let mut req = app
                    .client
                    .request(method.clone(), app.url(&path))
                    .header("content-type", content_type)
                    .body(body.clone());
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let res = req
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                let status = res.status().as_u16();
                let code = res.json::<Value>().await.unwrap()["code"].clone();
                assert_eq!(
                    (status, code.as_str()),
                    (401, Some("invalid_token")),
                    "{method} {path} with {content_type} ({len} bytes), token {token:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn integral_numbers_are_integers_and_fractions_are_not() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    app.create_n_tasks(&ada.token, "t", 3).await;
    let res = app.claim(&ada.token, &json!({"count": 2.0})).await;
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["requested"], 2);
    assert_eq!(body["claimed"], 2);
    let res = app.claim(&ada.token, &json!({"count": 7.5})).await;
    let problem = expect_problem(
        res,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "count");
}

/// The status of a validation sent with exactly this `Authorization` value.
async fn validate_with(app: &TestApp, authorization: &str) -> u16 {
    app.client
        .get(app.url("/v1/sessions/current"))
        .header("authorization", authorization)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap()
}

#[tokio::test]
async fn a_valid_token_under_another_scheme_is_not_a_session() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    for value in [
        format!("Basic {}", ada.token),
        format!("Token {}", ada.token),
        ada.token.clone(),
        "Bearer    ".to_string(),
    ] {
        assert_eq!(validate_with(&app, &value).await, 401, "{value:?}");
    }
    // The same token as a bearer token is a session (scheme case-insensitive).
    for scheme in ["Bearer", "bearer"] {
        let value = format!("{scheme} {}", ada.token);
        assert_eq!(validate_with(&app, &value).await, 200, "{scheme}");
    }
}

#[tokio::test]
async fn a_null_optional_field_means_its_default() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let res = app
        .create_tasks(
            &ada.token,
            &json!({"tasks": [{"title": "t", "schedulable": null}]}),
        )
        .await;
    assert_eq!(res.status().as_u16(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["tasks"][0]["schedulable"], true);
    let res = app
        .claim(&ada.token, &json!({"count": 1, "assignee_id": null}))
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["claimed"], 1);
    assert_eq!(body["tasks"][0]["assigned_to"], ada.user_id.to_string());
    // A required field that is null is missing.
    let res = app.claim(&ada.token, &json!({"count": null})).await;
    let problem = expect_problem(
        res,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["detail"], "is required");
}
