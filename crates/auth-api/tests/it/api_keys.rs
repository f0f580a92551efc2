//! API keys (interface v2, "API keys"): made by a session and shown once,
//! accepted wherever a credential is but on the session's own routes,
//! roles within the owner's (then and at every request), revocation,
//! expiry, `last_used_at`, the per-user cap, and a disable.

use auth_api::config::ApiConfig;
use auth_core::config::SessionPolicy;
use auth_core::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::TestApp;
use test_support::app::{LoggedIn, expect_problem, expect_status, json_uuid, test_config};

async fn forbidden(res: reqwest::Response) -> Value {
    expect_problem(res, StatusCode::FORBIDDEN, "forbidden").await
}

async fn invalid_token(res: reqwest::Response) {
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

async fn keys_of(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let res = app.get(&format!("/v1/api-keys{query}"), Some(token)).await;
    let body = expect_status(res, StatusCode::OK).await;
    body["api_keys"].as_array().cloned().unwrap_or_default()
}

async fn worker_and_assigner(app: &TestApp, email: &str) -> LoggedIn {
    app.signup_as(email, &[Role::Worker, Role::Assigner]).await
}

#[tokio::test]
async fn a_key_is_shown_once_and_works_wherever_a_credential_does() {
    let app = TestApp::spawn().await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let made = expect_status(
        app.create_key(&anna.token, &json!({"name": "billing"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let key = made["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tsk_"), "{made}");
    assert_eq!(made["roles"], json!(["worker", "assigner"]), "{made}");
    assert_eq!(made["expires_at"], Value::Null);
    let id = json_uuid(&made["id"]);

    // Stored as the SHA-256 of its 32 bytes only, and never listed.
    let stored = format!(
        "SELECT count(*) AS n FROM api_keys WHERE id = '{id}'
           AND key_hash = sha256(decode(translate('{}', '-_', '+/') || '=', 'base64'))",
        &key["tsk_".len()..]
    );
    assert_eq!(
        app.db.count(&stored).await,
        1,
        "the key is stored as its hash"
    );
    let listed = keys_of(&app, &anna.token, "").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], json!(id.to_string()));
    assert!(listed[0].get("key").is_none(), "{listed:?}");
    assert!(!listed[0].to_string().contains(&key[4..]));

    // The key works on the queue and on the caller's own account.
    let me = expect_status(app.get("/v1/users/me", Some(&key)).await, StatusCode::OK).await;
    assert_eq!(json_uuid(&me["id"]), anna.user_id);
    let ids = app.create_n_tasks(&key, "k", 2).await;
    let claimed = app.claim_ok(&key, 1).await;
    assert_eq!(claimed["claimed"], json!(1), "{claimed}");
    let held = json_uuid(&claimed["tasks"][0]["id"]);
    assert!(ids.contains(&held));
    let done = app.finish_ok(&key, "complete", held).await;
    assert_eq!(done["status"], json!("completed"), "{done}");
    // The session sees what the key did: one user.
    let mine = app
        .list_tasks(&anna.token, &format!("?assignee={}", anna.user_id))
        .await;
    let mine = expect_status(mine, StatusCode::OK).await;
    assert!(mine.to_string().contains(&held.to_string()), "{mine}");
}

#[tokio::test]
async fn a_key_gets_401_on_the_session_routes_and_403_where_only_a_person_may_act() {
    let app = TestApp::spawn().await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let (_, key) = app.key_ok(&anna.token, "ci").await;
    invalid_token(app.current(&key).await).await;
    invalid_token(app.list_sessions(&key).await).await;
    invalid_token(app.revoke_all(&key).await).await;
    invalid_token(app.logout(&key).await).await;
    invalid_token(app.refresh(&key).await).await;
    let session = anna.session_id.to_string();
    invalid_token(app.revoke_session(&key, &session).await).await;
    // None of those touched the session.
    expect_status(app.current(&anna.token).await, StatusCode::OK).await;

    let another = app.create_key(&key, &json!({"name": "child"})).await;
    let refused = forbidden(another).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("session"),
        "{refused}"
    );
    let change = json!({"current_password": test_support::app::PASSWORD, "new_password": "another password"});
    let res = app
        .client
        .put(app.url("/v1/users/me/password"))
        .bearer_auth(&key)
        .json(&change)
        .send()
        .await
        .unwrap();
    forbidden(res).await;
    // Refused before the body is read: a broken body is still a 403.
    let broken = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&key)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    forbidden(broken).await;
    assert_eq!(keys_of(&app, &anna.token, "").await.len(), 1);
}

#[tokio::test]
async fn a_keys_roles_are_among_its_owners_when_made_and_at_every_request() {
    let app = TestApp::spawn().await;
    let root = app.signup_as("root@example.com", &[Role::Admin]).await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let more = json!({"name": "admin?", "roles": ["admin"]});
    forbidden(app.create_key(&anna.token, &more).await).await;
    let narrow = json!({"name": "worker", "roles": ["worker"]});
    let made = expect_status(
        app.create_key(&anna.token, &narrow).await,
        StatusCode::CREATED,
    )
    .await;
    let worker_key = made["key"].as_str().unwrap().to_owned();
    let (_, full_key) = app.key_ok(&anna.token, "full").await;

    // A worker key works its own tasks but may not assign.
    forbidden(app.stats(&worker_key).await).await;
    app.claim_ok(&worker_key, 1).await;
    expect_status(app.stats(&full_key).await, StatusCode::OK).await;

    // Taken from the owner, a role leaves its keys at once, and for good.
    let taken = json!({"roles": ["worker"]});
    expect_status(
        app.change_user(&root.token, anna.user_id, &taken).await,
        StatusCode::OK,
    )
    .await;
    forbidden(app.stats(&full_key).await).await;
    app.claim_ok(&full_key, 1).await;
    let listed = keys_of(&app, &anna.token, "").await;
    assert!(
        listed.iter().all(|k| k["roles"] == json!(["worker"])),
        "{listed:?}"
    );
    let given = json!({"roles": ["worker", "assigner"]});
    expect_status(
        app.change_user(&root.token, anna.user_id, &given).await,
        StatusCode::OK,
    )
    .await;
    forbidden(app.stats(&full_key).await).await;
    forbidden(app.stats(&worker_key).await).await;
    expect_status(app.stats(&anna.token).await, StatusCode::OK).await;

    // An admin's roles cover a worker's and an assigner's: it may make a
    // key that can only work, and that key works.
    let made = app
        .create_key(&root.token, &json!({"name": "w", "roles": ["worker"]}))
        .await;
    let made = expect_status(made, StatusCode::CREATED).await;
    let key = made["key"].as_str().unwrap();
    app.claim_ok(key, 1).await;
    forbidden(app.stats(key).await).await;
    forbidden(app.get("/v1/users", Some(key)).await).await;
}

#[tokio::test]
async fn a_revoked_or_expired_key_is_refused_at_its_next_request() {
    let app = TestApp::spawn().await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let (id, key) = app.key_ok(&anna.token, "one").await;
    expect_status(app.stats(&key).await, StatusCode::OK).await;
    expect_status(
        app.revoke_key(&anna.token, id).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    invalid_token(app.stats(&key).await).await;
    expect_problem(
        app.revoke_key(&anna.token, id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(keys_of(&app, &anna.token, "").await.is_empty());
    let gone = format!("SELECT count(*) AS n FROM api_keys WHERE id = '{id}'");
    assert_eq!(app.db.count(&gone).await, 0, "a revoked key is deleted");

    let soon = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let body = json!({"name": "short", "expires_at": soon});
    let made = expect_status(
        app.create_key(&anna.token, &body).await,
        StatusCode::CREATED,
    )
    .await;
    let (id, key) = (
        json_uuid(&made["id"]),
        made["key"].as_str().unwrap().to_owned(),
    );
    expect_status(app.stats(&key).await, StatusCode::OK).await;
    app.db
        .execute(&format!(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = '{id}'"
        ))
        .await;
    invalid_token(app.stats(&key).await).await;
    // Listed still (it holds a place under the cap until revoked or purged).
    let listed = keys_of(&app, &anna.token, "").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(json_uuid(&listed[0]["id"]), id);
    expect_status(
        app.revoke_key(&anna.token, id).await,
        StatusCode::NO_CONTENT,
    )
    .await;

    // A key may revoke itself (a machine retiring its own credential).
    let (id, key) = app.key_ok(&anna.token, "self").await;
    expect_status(app.revoke_key(&key, id).await, StatusCode::NO_CONTENT).await;
    invalid_token(app.stats(&key).await).await;
}

#[tokio::test]
async fn last_used_at_is_written_at_most_once_per_touch_interval() {
    let app = TestApp::spawn().await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let (id, key) = app.key_ok(&anna.token, "one").await;
    assert_eq!(
        keys_of(&app, &anna.token, "").await[0]["last_used_at"],
        Value::Null
    );
    let written = format!(
        "SELECT count(*) AS n FROM api_keys WHERE id = '{id}' AND last_used_at IS NOT NULL"
    );
    expect_status(app.stats(&key).await, StatusCode::OK).await;
    assert_eq!(app.db.count(&written).await, 1);
    let first = keys_of(&app, &anna.token, "").await[0]["last_used_at"].clone();
    assert_ne!(first, Value::Null);
    for _ in 0..3 {
        expect_status(app.stats(&key).await, StatusCode::OK).await;
    }
    assert_eq!(
        keys_of(&app, &anna.token, "").await[0]["last_used_at"],
        first,
        "written again within the interval"
    );
    // Once the interval has passed, the next use writes it.
    app.db
        .execute(&format!(
            "UPDATE api_keys SET last_used_at = now() - interval '1 hour' WHERE id = '{id}'"
        ))
        .await;
    expect_status(app.stats(&key).await, StatusCode::OK).await;
    let recent = format!(
        "SELECT count(*) AS n FROM api_keys WHERE id = '{id}' AND last_used_at > now() - interval '1 minute'"
    );
    assert_eq!(app.db.count(&recent).await, 1);
}

#[tokio::test]
async fn admins_list_and_revoke_anyones_keys_and_no_one_else_does() {
    let app = TestApp::spawn().await;
    let root = app.signup_as("root@example.com", &[Role::Admin]).await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let bob = worker_and_assigner(&app, "bob@example.com").await;
    let (annas, annas_key) = app.key_ok(&anna.token, "anna's").await;
    let (bobs, _) = app.key_ok(&bob.token, "bob's").await;

    let of_anna = format!("?user_id={}", anna.user_id);
    forbidden(
        app.get(&format!("/v1/api-keys{of_anna}"), Some(&bob.token))
            .await,
    )
    .await;
    expect_problem(
        app.revoke_key(&bob.token, annas).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        app.revoke_key(&anna.token, bobs).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // The own user's id is the own listing.
    assert_eq!(keys_of(&app, &anna.token, &of_anna).await.len(), 1);
    expect_problem(
        app.get("/v1/api-keys?user_id=nope", Some(&anna.token))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let listed = keys_of(&app, &root.token, &of_anna).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(json_uuid(&listed[0]["user_id"]), anna.user_id);
    // A key that is no admin's revokes only itself, not its siblings.
    let (sibling, _) = app.key_ok(&anna.token, "sibling").await;
    expect_problem(
        app.revoke_key(&annas_key, sibling).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_status(
        app.revoke_key(&root.token, annas).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    invalid_token(app.stats(&annas_key).await).await;
    assert_eq!(
        keys_of(&app, &anna.token, "").await.len(),
        1,
        "the sibling lives"
    );
    assert_eq!(
        keys_of(&app, &root.token, &format!("?user_id={}", bob.user_id))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_key_request_is_checked_field_by_field() {
    let app = TestApp::spawn().await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let cases = [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": "a\u{7}b"}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": "k", "roles": ["root"]}), "roles"),
        (json!({"name": "k", "roles": "worker"}), "roles"),
        (json!({"name": "k", "expires_at": "tomorrow"}), "expires_at"),
        (json!({"name": "k", "expires_at": past}), "expires_at"),
        (json!({"name": "k", "key": "mine"}), "key"),
    ];
    for (body, field) in cases {
        let problem = expect_problem(
            app.create_key(&anna.token, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{body}: {problem}");
    }
    let longest = json!({"name": "é".repeat(100), "roles": []});
    let made = expect_status(
        app.create_key(&anna.token, &longest).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(made["roles"], json!([]), "{made}");
    assert!(keys_of(&app, &anna.token, "").await.len() == 1);
}

/// An app whose users may hold `cap` live keys.
fn keys_capped(cap: u32) -> ApiConfig {
    ApiConfig {
        sessions: SessionPolicy {
            api_keys_per_user: cap,
            ..SessionPolicy::default()
        },
        ..test_config()
    }
}

#[tokio::test]
async fn the_key_cap_counts_every_key_until_it_is_revoked() {
    let app = TestApp::spawn_with(keys_capped(2)).await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let (first, _) = app.key_ok(&anna.token, "1").await;
    let (second, _) = app.key_ok(&anna.token, "2").await;
    let refused = expect_problem(
        app.create_key(&anna.token, &json!({"name": "3"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(refused.to_string().contains("at most 2"), "{refused}");
    // Another user's cap is its own.
    let bob = worker_and_assigner(&app, "bob@example.com").await;
    app.key_ok(&bob.token, "1").await;
    // A revoked key leaves room; an expired one only once revoked (or purged).
    expect_status(
        app.revoke_key(&anna.token, first).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    app.key_ok(&anna.token, "3").await;
    app.db
        .execute(&format!(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = '{second}'"
        ))
        .await;
    expect_problem(
        app.create_key(&anna.token, &json!({"name": "4"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_status(
        app.revoke_key(&anna.token, second).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    app.key_ok(&anna.token, "4").await;
    let rows = format!(
        "SELECT count(*) AS n FROM api_keys WHERE user_id = '{}'",
        anna.user_id
    );
    assert_eq!(app.db.count(&rows).await, 2);
}

#[tokio::test]
async fn a_password_change_or_reset_revokes_every_key_of_the_user() {
    let app = TestApp::spawn().await;
    let root = app.signup_as("root@example.com", &[Role::Admin]).await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let (_, before_change) = app.key_ok(&anna.token, "one").await;
    let change = json!({"current_password": test_support::app::PASSWORD, "new_password": "a new password 2"});
    let res = app
        .client
        .put(app.url("/v1/users/me/password"))
        .bearer_auth(&anna.token)
        .json(&change)
        .send()
        .await
        .unwrap();
    expect_status(res, StatusCode::NO_CONTENT).await;
    invalid_token(app.stats(&before_change).await).await;
    // The caller's session lives, and makes keys that work.
    let (_, before_reset) = app.key_ok(&anna.token, "two").await;
    expect_status(app.stats(&before_reset).await, StatusCode::OK).await;
    let path = format!("/v1/users/{}/password-reset", anna.user_id);
    let issued = expect_status(
        app.post_json(&path, Some(&root.token), &json!({})).await,
        StatusCode::CREATED,
    )
    .await;
    let reset = json!({"reset_token": issued["reset_token"], "new_password": "a third password"});
    expect_status(
        app.post_json("/v1/password-resets", None, &reset).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    invalid_token(app.stats(&before_reset).await).await;
    let rows = format!(
        "SELECT count(*) AS n FROM api_keys WHERE user_id = '{}'",
        anna.user_id
    );
    assert_eq!(app.db.count(&rows).await, 0);
}

#[tokio::test]
async fn a_disable_revokes_the_users_keys_for_good() {
    let app = TestApp::spawn().await;
    let root = app.signup_as("root@example.com", &[Role::Admin]).await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let (_, key) = app.key_ok(&anna.token, "one").await;
    let off = json!({"disabled": true});
    expect_status(
        app.change_user(&root.token, anna.user_id, &off).await,
        StatusCode::OK,
    )
    .await;
    invalid_token(app.stats(&key).await).await;
    let left = format!(
        "SELECT count(*) AS n FROM api_keys WHERE user_id = '{}'",
        anna.user_id
    );
    assert_eq!(app.db.count(&left).await, 0);
    let on = json!({"disabled": false});
    expect_status(
        app.change_user(&root.token, anna.user_id, &on).await,
        StatusCode::OK,
    )
    .await;
    invalid_token(app.stats(&key).await).await;
}

#[tokio::test]
async fn an_unknown_or_misshapen_key_is_one_401() {
    let app = TestApp::spawn().await;
    let anna = worker_and_assigner(&app, "anna@example.com").await;
    let (_, key) = app.key_ok(&anna.token, "one").await;
    let bare = key["tsk_".len()..].to_owned();
    // Well formed, never issued: looked up, and not found.
    let other = auth_core::domain::ApiKeyToken::generate().unwrap().expose();
    for bad in [
        bare.as_str(),
        other.as_str(),
        "tsk_",
        "tsk_short",
        &format!("{key}x"),
    ] {
        invalid_token(app.stats(bad).await).await;
    }
    expect_status(app.stats(&key).await, StatusCode::OK).await;
}
