//! How many times each endpoint waits for PostgreSQL, counted on the wire by
//! a proxy between the service and the database (each `Sync` or simple
//! `Query` is one round trip; each `Parse` a statement planned anew). Each
//! endpoint is first called once to warm its connection's statement cache,
//! then counted on a call alike. One connection per pool and no background
//! work, so every message counted is the request's own.

use auth_api::config::ApiConfig;
use auth_core::config::{Bulkheads, PoolConfig, Pooler, QueuePolicy};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::app::{PASSWORD, expect_status, task_ids, test_config};
use test_support::round_trips::{CountingProxy, Sent};
use test_support::{TestApp, TestDb};
use uuid::Uuid;

/// The most round trips each endpoint may take once warm (before issue 15:
/// login 30, validation 2, every other endpoint 3-9, most statements planned
/// anew on every call). Raising one is a regression of the hot path: say
/// why in the commit.
const BUDGET: &[(&str, u64)] = &[
    ("POST /v1/users", 1),
    ("POST /v1/sessions", 6),
    ("GET /v1/sessions/current", 1),
    ("GET /v1/sessions/current (touch due)", 1),
    ("POST /v1/sessions/current/refresh", 1),
    ("GET /v1/sessions", 2),
    ("DELETE /v1/sessions/{id}", 2),
    ("DELETE /v1/sessions/current", 2),
    ("DELETE /v1/sessions", 2),
    ("POST /v1/tasks (5 tasks)", 2),
    ("POST /v1/tasks (a key)", 5),
    ("POST /v1/tasks (a known key)", 6),
    ("GET /v1/tasks/{id}", 2),
    ("POST /v1/tasks/claim (2 tasks)", 3),
    ("POST /v1/tasks/{id}/heartbeat", 2),
    ("POST /v1/tasks/{id}/complete", 2),
    ("POST /v1/tasks/{id}/fail", 2),
    ("POST /v1/tasks/{id}/release", 2),
    ("POST /v1/tasks/{id}/cancel", 2),
    ("GET /v1/tasks", 2),
    ("GET /v1/tasks/stats", 2),
    ("GET /v1/users/me", 2),
    ("POST /v1/api-keys", 5),
    ("GET /v1/users/me (API key)", 2),
    ("GET /v1/users/me (API key, touch due)", 2),
    ("GET /v1/api-keys", 2),
    ("DELETE /v1/api-keys/{id}", 2),
];

/// What each counted request cost.
struct Ledger<'p> {
    proxy: &'p CountingProxy,
    rows: Vec<(&'static str, Sent)>,
    mark: Sent,
}

impl Ledger<'_> {
    fn start(&mut self) {
        self.mark = self.proxy.sent();
    }

    fn record(&mut self, name: &'static str) {
        self.rows.push((name, self.proxy.sent() - self.mark));
    }
}

fn one_connection_each(service_url: String) -> ApiConfig {
    ApiConfig {
        pool: PoolConfig {
            max_size: 1,
            connection_timeout_ms: 10_000,
            ..PoolConfig::default()
        },
        pooler: Pooler::None,
        bulkheads: Bulkheads {
            sessions_max_size: Some(1),
            reads_max_size: 1,
            ..Bulkheads::default()
        },
        queue: QueuePolicy {
            // No fold ticks while counting.
            counts_fold_interval: Duration::from_secs(24 * 3600),
            ..QueuePolicy::default()
        },
        database_url: service_url,
        ..test_config()
    }
}

async fn ok(res: reqwest::Response) -> Value {
    expect_status(res, StatusCode::OK).await
}

async fn act(app: &TestApp, token: &str, id: Uuid, action: &str, body: Value) -> Value {
    let path = format!("/v1/tasks/{id}/{action}");
    ok(app.post_json(&path, Some(token), &body).await).await
}

#[tokio::test]
async fn every_endpoint_stays_within_its_round_trip_budget() {
    let db = TestDb::new().await;
    let proxy = CountingProxy::start(db.host_port()).expect("starting the counting proxy");
    let url = db.url_at("127.0.0.1", proxy.port);
    let app = TestApp::spawn_on(db, one_connection_each(url)).await;
    let mut migrated = app.state.migrated.clone();
    migrated.wait_for(|done| *done).await.expect("migrated");
    let mut l = Ledger {
        proxy: &proxy,
        rows: Vec::new(),
        mark: Sent::default(),
    };

    expect_status(
        app.register("rt0@example.com", PASSWORD).await,
        StatusCode::CREATED,
    )
    .await;
    l.start();
    expect_status(
        app.register("rt@example.com", PASSWORD).await,
        StatusCode::CREATED,
    )
    .await;
    l.record("POST /v1/users");

    let a = app.login_ok("rt@example.com").await.token;
    l.start();
    let b = app.login_ok("rt@example.com").await.token;
    l.record("POST /v1/sessions");

    ok(app.current(&b).await).await;
    l.start();
    ok(app.current(&b).await).await;
    l.record("GET /v1/sessions/current");

    let due = "UPDATE sessions SET last_seen_at = now() - interval '1 hour'";
    app.db.execute(due).await;
    ok(app.current(&a).await).await;
    app.db.execute(due).await;
    l.start();
    ok(app.current(&b).await).await;
    l.record("GET /v1/sessions/current (touch due)");

    expect_status(app.refresh(&a).await, StatusCode::CREATED).await;
    l.start();
    let refreshed = expect_status(app.refresh(&b).await, StatusCode::CREATED).await;
    l.record("POST /v1/sessions/current/refresh");
    let token = refreshed["token"].as_str().expect("a token").to_owned();

    ok(app.list_sessions(&token).await).await;
    l.start();
    ok(app.list_sessions(&token).await).await;
    l.record("GET /v1/sessions");

    let (c, d) = (
        app.login_ok("rt@example.com").await,
        app.login_ok("rt@example.com").await,
    );
    expect_status(
        app.revoke_session(&token, &c.session_id.to_string()).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    l.start();
    expect_status(
        app.revoke_session(&token, &d.session_id.to_string()).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    l.record("DELETE /v1/sessions/{id}");

    let (e, f) = (
        app.login_ok("rt@example.com").await,
        app.login_ok("rt@example.com").await,
    );
    expect_status(app.logout(&e.token).await, StatusCode::NO_CONTENT).await;
    l.start();
    expect_status(app.logout(&f.token).await, StatusCode::NO_CONTENT).await;
    l.record("DELETE /v1/sessions/current");

    let g = app.login_ok("rt@example.com").await;
    ok(app.revoke_all(&g.token).await).await;
    let h = app.login_ok("rt@example.com").await;
    l.start();
    ok(app.revoke_all(&h.token).await).await;
    l.record("DELETE /v1/sessions");

    let token = app.login_ok("rt@example.com").await.token;
    let five =
        json!({"tasks": (0..5).map(|i| json!({"title": format!("t{i}")})).collect::<Vec<_>>()});
    let mut ids =
        task_ids(&expect_status(app.create_tasks(&token, &five).await, StatusCode::CREATED).await);
    l.start();
    let more = expect_status(app.create_tasks(&token, &five).await, StatusCode::CREATED).await;
    l.record("POST /v1/tasks (5 tasks)");
    ids.extend(task_ids(&more));
    let keyed =
        |key: &str| json!({"tasks": [{"title": "keyed", "key": key, "schedulable": false}]});
    expect_status(
        app.create_tasks(&token, &keyed("k1")).await,
        StatusCode::CREATED,
    )
    .await;
    l.start();
    let made = expect_status(
        app.create_tasks(&token, &keyed("k2")).await,
        StatusCode::CREATED,
    )
    .await;
    l.record("POST /v1/tasks (a key)");
    expect_status(
        app.create_tasks(&token, &keyed("k1")).await,
        StatusCode::CREATED,
    )
    .await;
    l.start();
    expect_status(
        app.create_tasks(&token, &keyed("k2")).await,
        StatusCode::CREATED,
    )
    .await;
    l.record("POST /v1/tasks (a known key)");
    let one = task_ids(&made)[0];
    ok(app
        .get(&format!("/v1/tasks/{}", ids[0]), Some(&token))
        .await)
    .await;
    l.start();
    ok(app.get(&format!("/v1/tasks/{one}"), Some(&token)).await).await;
    l.record("GET /v1/tasks/{id}");

    let two = json!({"count": 2});
    let mut held = task_ids(&ok(app.claim(&token, &two).await).await);
    l.start();
    held.extend(task_ids(&ok(app.claim(&token, &two).await).await));
    l.record("POST /v1/tasks/claim (2 tasks)");
    held.extend(task_ids(
        &ok(app.claim(&token, &json!({"count": 4})).await).await,
    ));
    assert_eq!(held.len(), 8, "8 of the 10 tasks held");

    let mut pairs = held.chunks(2);
    for (action, body, name) in [
        ("heartbeat", json!({}), "POST /v1/tasks/{id}/heartbeat"),
        ("complete", Value::Null, "POST /v1/tasks/{id}/complete"),
        ("fail", json!({"error": "boom"}), "POST /v1/tasks/{id}/fail"),
        ("release", Value::Null, "POST /v1/tasks/{id}/release"),
    ] {
        let pair = pairs.next().expect("two held tasks per action");
        act(&app, &token, pair[0], action, body.clone()).await;
        l.start();
        act(&app, &token, pair[1], action, body).await;
        l.record(name);
    }
    let unheld: Vec<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| !held.contains(id))
        .collect();
    act(&app, &token, unheld[0], "cancel", Value::Null).await;
    l.start();
    act(&app, &token, unheld[1], "cancel", Value::Null).await;
    l.record("POST /v1/tasks/{id}/cancel");

    ok(app.list_tasks(&token, "").await).await;
    l.start();
    ok(app.list_tasks(&token, "").await).await;
    l.record("GET /v1/tasks");
    ok(app.stats(&token).await).await;
    l.start();
    ok(app.stats(&token).await).await;
    l.record("GET /v1/tasks/stats");

    ok(app.get("/v1/users/me", Some(&token)).await).await;
    l.start();
    ok(app.get("/v1/users/me", Some(&token)).await).await;
    l.record("GET /v1/users/me");

    app.key_ok(&token, "warm").await;
    l.start();
    let (id, key) = app.key_ok(&token, "counted").await;
    l.record("POST /v1/api-keys");
    ok(app.get("/v1/users/me", Some(&key)).await).await;
    l.start();
    ok(app.get("/v1/users/me", Some(&key)).await).await;
    l.record("GET /v1/users/me (API key)");
    app.db
        .execute("UPDATE api_keys SET last_used_at = now() - interval '1 hour'")
        .await;
    l.start();
    ok(app.get("/v1/users/me", Some(&key)).await).await;
    l.record("GET /v1/users/me (API key, touch due)");
    ok(app.get("/v1/api-keys", Some(&key)).await).await;
    l.start();
    ok(app.get("/v1/api-keys", Some(&key)).await).await;
    l.record("GET /v1/api-keys");
    let (warm, _) = app.key_ok(&token, "revoked").await;
    expect_status(app.revoke_key(&token, warm).await, StatusCode::NO_CONTENT).await;
    l.start();
    expect_status(app.revoke_key(&token, id).await, StatusCode::NO_CONTENT).await;
    l.record("DELETE /v1/api-keys/{id}");

    check(&l.rows);
}

fn check(rows: &[(&'static str, Sent)]) {
    eprintln!("| endpoint | round trips | statements planned anew |\n|---|---:|---:|");
    for (name, sent) in rows {
        eprintln!("| {name} | {} | {} |", sent.round_trips, sent.parses);
    }
    let over: Vec<String> = rows
        .iter()
        .filter_map(|(name, sent)| {
            let budget = BUDGET
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} has no budget"))
                .1;
            (sent.round_trips > budget).then(|| format!("{name}: {} > {budget}", sent.round_trips))
        })
        .collect();
    assert!(over.is_empty(), "over budget: {over:?}");
    let replanned: Vec<String> = rows
        .iter()
        .filter(|(_, sent)| sent.parses > 0)
        .map(|(name, sent)| format!("{name}: {}", sent.parses))
        .collect();
    assert!(
        replanned.is_empty(),
        "statements planned anew once warm (not kept prepared): {replanned:?}"
    );
    assert_eq!(rows.len(), BUDGET.len(), "every budgeted endpoint counted");
}
