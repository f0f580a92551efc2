//! v1.1 sessions: each session's device metadata, and refresh-token reuse
//! (a rotated-away token presented again: within the grace window a plain
//! 401; after it, the whole session revoked).

use auth_api::config::ApiConfig;
use reqwest::StatusCode;
use serde_json::Value;
use test_support::TestApp;
use test_support::app::test_config;

const PASSWORD: &str = "correct horse battery staple";

async fn login_with(app: &TestApp, email: &str, headers: &[(&str, &str)]) -> Value {
    let mut req = app
        .client
        .post(app.url("/v1/sessions"))
        .json(&serde_json::json!({"email": email, "password": PASSWORD}));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn listed(app: &TestApp, token: &str) -> Vec<Value> {
    let res = app.get("/v1/sessions", Some(token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

fn by_id<'a>(sessions: &'a [Value], id: &Value) -> &'a Value {
    sessions
        .iter()
        .find(|s| s["session_id"] == *id)
        .unwrap_or_else(|| panic!("{id} not listed in {sessions:?}"))
}

#[tokio::test]
async fn the_session_list_shows_each_logins_user_agent_and_ip() {
    let app = TestApp::spawn().await;
    app.register("ada@example.com", PASSWORD).await;
    let phone = login_with(
        &app,
        "ada@example.com",
        &[("user-agent", "tessera-phone/1.0")],
    )
    .await;
    let long = "L".repeat(300);
    let laptop = login_with(&app, "ada@example.com", &[("user-agent", long.as_str())]).await;
    let token = phone["token"].as_str().unwrap();
    let sessions = listed(&app, token).await;
    let phone_row = by_id(&sessions, &phone["session_id"]);
    assert_eq!(phone_row["user_agent"], "tessera-phone/1.0");
    assert_eq!(phone_row["ip"], "127.0.0.1");
    assert_eq!(phone_row["current"], true);
    let laptop_row = by_id(&sessions, &laptop["session_id"]);
    assert_eq!(
        laptop_row["user_agent"],
        "L".repeat(256),
        "the first 256 characters"
    );
    // No User-Agent: null, not an empty string.
    let bare = app
        .post_json(
            "/v1/sessions",
            None,
            &serde_json::json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    let bare: Value = bare.json().await.unwrap();
    let sessions = listed(&app, token).await;
    // reqwest sends no User-Agent unless told to.
    assert!(by_id(&sessions, &bare["session_id"])["user_agent"].is_null());
}

#[tokio::test]
async fn x_forwarded_for_names_the_ip_only_when_the_peer_is_a_trusted_proxy() {
    // The client wrote its victim's address; our proxy 10.0.0.1 appended
    // the client's own; the test's connection is the last proxy.
    let forwarded = [("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.1")];
    let untrusting = TestApp::spawn().await;
    untrusting.register("ada@example.com", PASSWORD).await;
    let s = login_with(&untrusting, "ada@example.com", &forwarded).await;
    let rows = listed(&untrusting, s["token"].as_str().unwrap()).await;
    assert_eq!(
        by_id(&rows, &s["session_id"])["ip"],
        "127.0.0.1",
        "anyone can write the header"
    );

    let behind_proxy = TestApp::spawn_with(ApiConfig {
        trusted_proxies: "127.0.0.1, 10.0.0.0/8".parse().unwrap(),
        ..test_config()
    })
    .await;
    behind_proxy.register("ada@example.com", PASSWORD).await;
    let s = login_with(&behind_proxy, "ada@example.com", &forwarded).await;
    let rows = listed(&behind_proxy, s["token"].as_str().unwrap()).await;
    assert_eq!(
        by_id(&rows, &s["session_id"])["ip"],
        "203.0.113.9",
        "the right-most entry that is not one of our proxies"
    );
    // Two header lines are one list: the client's line, then our proxy's.
    let lines = [
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-for", "203.0.113.10, 10.0.0.1"),
    ];
    let s = login_with(&behind_proxy, "ada@example.com", &lines).await;
    let rows = listed(&behind_proxy, s["token"].as_str().unwrap()).await;
    assert_eq!(
        by_id(&rows, &s["session_id"])["ip"],
        "203.0.113.10",
        "both lines read"
    );
}

/// The reuse counter of `window` on /metrics.
async fn reused(app: &TestApp, window: &str) -> u64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    let series = format!("tessera_token_reuse_total{{window=\"{window}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_token_presented_again_within_the_grace_is_a_plain_401_and_the_session_lives() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let rotated: Value = app.refresh(&ada.token).await.json().await.unwrap();
    let new = rotated["token"].as_str().unwrap();
    for res in [app.current(&ada.token).await, app.refresh(&ada.token).await] {
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], "invalid_token");
    }
    assert_eq!(app.current(new).await.status(), StatusCode::OK);
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM sessions WHERE revoked_at IS NOT NULL")
            .await,
        0
    );
    assert_eq!(reused(&app, "within_grace").await, 2);
    assert_eq!(reused(&app, "past_grace").await, 0);
}

#[tokio::test]
async fn a_token_presented_again_after_the_grace_revokes_the_whole_session() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let first: Value = app.refresh(&ada.token).await.json().await.unwrap();
    let second: Value = app
        .refresh(first["token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let current = second["token"].as_str().unwrap();
    // The grace window passes by the database's clock: the test moves the
    // rotations back instead of waiting.
    app.db
        .execute("UPDATE rotated_tokens SET rotated_at = now() - interval '1 minute'")
        .await;
    // The oldest token of the chain, not only the last one rotated away.
    let res = app.current(&ada.token).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["code"], "invalid_token",
        "the same answer as any bad token"
    );
    assert_eq!(
        app.current(current).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(current).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) AS n FROM sessions WHERE id = '{}' AND revoked_at IS NOT NULL",
                ada.session_id
            ))
            .await,
        1
    );
    assert_eq!(reused(&app, "past_grace").await, 1);
}
