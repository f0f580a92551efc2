use auth_api::config::ApiConfig;
use reqwest::StatusCode;
use test_support::TestApp;
use test_support::app::{expect_status, test_config};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    expect_status(app.get("/healthz", None).await, StatusCode::OK).await;
    expect_status(app.get("/readyz", None).await, StatusCode::OK).await;
}

/// One sample of /metrics, e.g. `tessera_db_pool_waiting` or
/// `tessera_http_requests_total{method="POST",route="/v1/users",status="201"}`.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let res = app.get("/metrics", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_hashes() {
    let app = TestApp::spawn().await;
    let user = app.signup("metrics@example.com").await;
    let bad = serde_json::json!({"email": "nope", "password": "x"});
    expect_status(
        app.post_json("/v1/users", None, &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    expect_status(app.current(&user.token).await, StatusCode::OK).await;

    let created = r#"tessera_http_requests_total{method="POST",route="/v1/users",status="201"}"#;
    let rejected = r#"tessera_http_requests_total{method="POST",route="/v1/users",status="422"}"#;
    let validated =
        r#"tessera_http_requests_total{method="GET",route="/v1/sessions/current",status="200"}"#;
    assert_eq!(metric(&app, created).await, 1.0);
    assert_eq!(metric(&app, rejected).await, 1.0);
    assert_eq!(metric(&app, validated).await, 1.0);
    // One hash at registration, one verification at login; the 422 hashed nothing.
    assert_eq!(metric(&app, "tessera_password_hashes_total").await, 2.0);
    // One pool per class: sessions and queue take the profile's 4, reads 2.
    for (class, size) in [("sessions", 4.0), ("queue", 4.0), ("reads", 2.0)] {
        let series = format!(r#"tessera_db_pool_max_connections{{pool="{class}"}}"#);
        assert_eq!(metric(&app, &series).await, size, "{series}");
    }
    // The hashing pool as configured: 2 workers, 64 queue places each.
    assert_eq!(metric(&app, "tessera_password_hash_workers").await, 2.0);
    assert_eq!(
        metric(&app, "tessera_password_hash_queue_capacity").await,
        128.0
    );
}

#[tokio::test]
async fn readyz_is_503_while_no_validation_could_get_a_connection() {
    let app = TestApp::spawn_with(ApiConfig {
        pool: auth_core::config::PoolConfig {
            max_size: 1,
            connection_timeout_ms: 300,
            ..auth_core::config::PoolConfig::default()
        },
        ..test_config()
    })
    .await;
    expect_status(app.get("/readyz", None).await, StatusCode::OK).await;
    // The sessions pool's only connection, held: readiness asks that pool.
    let held = match app.state.pools.sessions.pool().get_owned().await {
        Ok(conn) => conn,
        Err(e) => panic!("checking out: {e}"),
    };
    expect_status(
        app.get("/readyz", None).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    drop(held);
    expect_status(app.get("/readyz", None).await, StatusCode::OK).await;
}

#[tokio::test]
async fn metrics_show_a_checkout_waiting_for_the_only_connection() {
    let app = TestApp::spawn_with(ApiConfig {
        pool: auth_core::config::PoolConfig {
            max_size: 1,
            connection_timeout_ms: 30_000,
            ..auth_core::config::PoolConfig::default()
        },
        ..test_config()
    })
    .await;
    let user = app.signup("waiter@example.com").await;
    let waited_before = metric(
        &app,
        r#"tessera_db_pool_checkouts_total{outcome="waited",pool="sessions"}"#,
    )
    .await;

    // Hold the sessions pool's only connection, so the next validation must wait for it.
    let held = match app.state.pools.sessions.pool().get_owned().await {
        Ok(conn) => conn,
        Err(e) => panic!("checking out: {e}"),
    };
    let request = {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/v1/sessions/current"),
            user.token.clone(),
        );
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
    };
    // Poll /metrics (which needs no connection) until the waiter shows up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while metric(&app, r#"tessera_db_pool_waiting{pool="sessions"}"#).await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no waiting checkout appeared in /metrics"
        );
        tokio::task::yield_now().await;
    }
    drop(held);
    let answered = match request.await {
        Ok(Ok(res)) => res.status(),
        other => panic!("the waiting request failed: {other:?}"),
    };
    assert_eq!(answered, StatusCode::OK);
    assert_eq!(
        metric(&app, r#"tessera_db_pool_waiting{pool="sessions"}"#).await,
        0.0
    );
    let waited_after = metric(
        &app,
        r#"tessera_db_pool_checkouts_total{outcome="waited",pool="sessions"}"#,
    )
    .await;
    assert!(
        waited_after > waited_before,
        "waited {waited_before} -> {waited_after}"
    );
}

/// A request id: the caller's `X-Request-Id` when plausible, else a new
/// UUID; echoed in the answer's header and in every problem document.
#[tokio::test]
async fn every_answer_carries_a_request_id_and_problems_repeat_it() {
    let app = TestApp::spawn().await;
    let unauthenticated = |id: Option<&str>| {
        let mut req = app.client.get(app.url("/v1/sessions/current"));
        if let Some(id) = id {
            req = req.header("X-Request-Id", id);
        }
        req.send()
    };
    let kept = unauthenticated(Some("trace-abc.123_x")).await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-abc.123_x");
    let problem: serde_json::Value = kept.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_token");
    assert_eq!(problem["request_id"], "trace-abc.123_x");
    for hostile in ["", "has space", "x\u{7f}", &"a".repeat(65)] {
        let answered = unauthenticated(Some(hostile)).await;
        let Ok(answered) = answered else {
            continue; // a header value reqwest itself refuses to send
        };
        let id = answered.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "{hostile:?} kept as {id:?}"
        );
        let problem: serde_json::Value = answered.json().await.unwrap();
        assert_eq!(problem["request_id"], id.as_str());
    }
    let made = unauthenticated(None).await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let ok = app.get("/healthz", None).await;
    assert!(ok.headers().contains_key("x-request-id"));
}

/// Every metric family /metrics serves is in docs/api.md's table (a family
/// nobody documented is one nobody alerts on), and the build and process
/// figures are among them.
#[tokio::test]
async fn every_metric_served_is_documented_here() {
    let app = TestApp::spawn().await;
    let text = app.get("/metrics", None).await.text().await.unwrap();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() > 20, "{families:?}");
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    for family in &families {
        let name = family.strip_prefix("tessera_").unwrap_or(family);
        // Listed whole, or as the `db_pool_*` prefix plus its own row.
        assert!(
            doc.contains(&format!("`{name}")),
            "{family} is not in docs/api.md"
        );
    }
    let build = format!(
        "tessera_build_info{{commit=\"{}\",version=\"{}\"}} 1",
        env!("AUTH_API_GIT_COMMIT"),
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{build} missing");
    assert!(
        families.contains(&"process_resident_memory_bytes"),
        "{families:?}"
    );
}
