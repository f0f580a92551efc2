//! The password change (interface v2, "Passwords"): what it revokes, what
//! it refuses, and how the login limit counts a wrong current password.

use auth_api::config::ApiConfig;
use auth_core::config::SessionPolicy;
use reqwest::StatusCode;
use serde_json::json;
use test_support::TestApp;
use test_support::app::{PASSWORD, expect_problem, test_config};

const NEW: &str = "a new password 123";

async fn change(app: &TestApp, token: &str, current: &str, new: &str) -> reqwest::Response {
    app.client
        .put(app.url("/v1/users/me/password"))
        .bearer_auth(token)
        .json(&json!({"current_password": current, "new_password": new}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_password_change_ends_every_other_session() {
    let app = TestApp::spawn().await;
    let caller = app.signup("ada@example.com").await;
    let others = [
        app.login_ok("ada@example.com").await,
        app.login_ok("ada@example.com").await,
    ];
    let bystander = app.signup("bob@example.com").await;
    assert_eq!(
        change(&app, &caller.token, PASSWORD, NEW).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.current(&caller.token).await.status(), StatusCode::OK);
    for other in &others {
        expect_problem(
            app.current(&other.token).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
    }
    assert_eq!(app.current(&bystander.token).await.status(), StatusCode::OK);
    let active = format!(
        "SELECT count(*) AS n FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL",
        caller.user_id
    );
    assert_eq!(app.db.count(&active).await, 1);
    expect_problem(
        app.login("ada@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.login("ada@example.com", NEW).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_wrong_current_password_changes_nothing_and_counts_as_a_failed_login() {
    let app = TestApp::spawn_with(ApiConfig {
        sessions: SessionPolicy {
            max_failed_logins: 3,
            ..test_config().sessions
        },
        ..test_config()
    })
    .await;
    let ada = app.signup("ada@example.com").await;
    let other = app.login_ok("ada@example.com").await;
    for _ in 0..3 {
        expect_problem(
            change(&app, &ada.token, "not the password", NEW).await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
    }
    expect_problem(
        change(&app, &ada.token, PASSWORD, NEW).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
    )
    .await;
    expect_problem(
        app.login("ada@example.com", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
    )
    .await;
    assert_eq!(
        app.current(&other.token).await.status(),
        StatusCode::OK,
        "nothing was revoked"
    );
}

#[tokio::test]
async fn a_new_password_out_of_bounds_or_a_missing_member_is_a_422() {
    let app = TestApp::spawn().await;
    let ada = app.signup("ada@example.com").await;
    let body = expect_problem(
        change(&app, &ada.token, PASSWORD, "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "new_password");
    let missing = app
        .client
        .put(app.url("/v1/users/me/password"))
        .bearer_auth(&ada.token)
        .json(&json!({"new_password": NEW}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(
        missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "current_password");
    expect_problem(
        change(&app, "not-a-token", PASSWORD, NEW).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

async fn issue(app: &TestApp, token: &str, user: uuid::Uuid) -> reqwest::Response {
    let path = format!("/v1/users/{user}/password-reset");
    app.post_json(&path, Some(token), &json!({})).await
}

async fn reset(app: &TestApp, reset_token: &str, new: &str) -> reqwest::Response {
    let body = json!({"reset_token": reset_token, "new_password": new});
    app.post_json("/v1/password-resets", None, &body).await
}

async fn issued_token(app: &TestApp, admin: &str, user: uuid::Uuid) -> String {
    let body =
        test_support::app::expect_status(issue(app, admin, user).await, StatusCode::CREATED).await;
    assert!(body["expires_at"].is_string(), "{body}");
    body["reset_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_admin_issued_reset_sets_the_password_once_and_ends_every_session() {
    let app = TestApp::spawn().await;
    let root = app
        .signup_as("root@example.com", &[auth_core::domain::Role::Admin])
        .await;
    let ada = app.signup("ada@example.com").await;
    let other = app.login_ok("ada@example.com").await;
    expect_problem(
        issue(&app, &ada.token, ada.user_id).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        issue(&app, &root.token, uuid::Uuid::new_v4()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let token = issued_token(&app, &root.token, ada.user_id).await;
    assert_eq!(token.len(), 43, "256 bits, base64url");
    let stored = format!(
        "SELECT count(*) AS n FROM password_resets WHERE user_id = '{}' AND used_at IS NULL",
        ada.user_id
    );
    assert_eq!(app.db.count(&stored).await, 1);
    // A refused new password uses nothing up.
    expect_problem(
        reset(&app, &token, "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(
        reset(&app, &token, NEW).await.status(),
        StatusCode::NO_CONTENT
    );
    for session in [&ada, &other] {
        expect_problem(
            app.current(&session.token).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
    }
    assert_eq!(app.current(&root.token).await.status(), StatusCode::OK);
    expect_problem(
        app.login("ada@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.login("ada@example.com", NEW).await.status(),
        StatusCode::CREATED
    );
    // Once only; unknown and malformed tokens alike.
    for used in [token.as_str(), &"A".repeat(43), "not a token"] {
        expect_problem(
            reset(&app, used, "another password 1").await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
    }
    assert_eq!(
        app.login("ada@example.com", NEW).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_new_reset_token_replaces_the_users_earlier_one() {
    let app = TestApp::spawn().await;
    let root = app
        .signup_as("root@example.com", &[auth_core::domain::Role::Admin])
        .await;
    let ada = app.signup("ada@example.com").await;
    let earlier = issued_token(&app, &root.token, ada.user_id).await;
    let later = issued_token(&app, &root.token, ada.user_id).await;
    let rows = format!(
        "SELECT count(*) AS n FROM password_resets WHERE user_id = '{}'",
        ada.user_id
    );
    assert_eq!(app.db.count(&rows).await, 1, "one token per user");
    expect_problem(
        reset(&app, &earlier, NEW).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_eq!(
        reset(&app, &later, NEW).await.status(),
        StatusCode::NO_CONTENT
    );
}
