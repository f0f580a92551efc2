//! API keys under concurrency (interface v2): creations racing the
//! per-user cap, a role removal and a revocation racing a key's requests
//! on two instances, and a disable racing key creations, each forced where
//! a barrier alone would leave it to chance.

use super::{
    behind_lock, contradicting, participant, requests_racing, spawn_call, spawn_request, wide_pool,
};
use auth_api::config::ApiConfig;
use auth_core::config::SessionPolicy;
use auth_core::domain::{Role, Roles};
use reqwest::StatusCode;
use serde_json::json;
use test_support::TestApp;
use test_support::app::{LoggedIn, expect_status};
use uuid::Uuid;

/// [`wide_pool`] with users holding at most `cap` keys, every use of a
/// key writing its `last_used_at` (so each race runs the touch too), and
/// self-registered users holding `worker` only (as shipped).
fn keys_capped(cap: u32) -> ApiConfig {
    let config = wide_pool();
    ApiConfig {
        sessions: SessionPolicy {
            api_keys_per_user: cap,
            touch_interval: std::time::Duration::ZERO,
            ..config.sessions.clone()
        },
        default_roles: Roles::none().with(Role::Worker),
        ..config
    }
}

async fn assigner(app: &TestApp, email: &str) -> LoggedIn {
    app.signup_as(email, &[Role::Worker, Role::Assigner]).await
}

fn keys_of(user: Uuid) -> String {
    format!("SELECT count(*) AS n FROM api_keys WHERE user_id = '{user}'")
}

/// `creating` key creations of one user who holds `existing` live keys,
/// under a cap of `cap`, all queued behind the test's `SHARE` lock on
/// `api_keys` (which lets reads through and holds every insert) and let go
/// at once: exactly `cap - existing` (or all, below it) succeed, the rest
/// are `422`, and a fresh count finds the cap kept, each made key once.
async fn creations_racing_the_cap(cap: u32, existing: u32, creating: usize) {
    let app = TestApp::spawn_with(keys_capped(cap)).await;
    let anna = assigner(&app, "anna@example.com").await;
    for i in 0..existing {
        app.key_ok(&anna.token, &format!("old-{i}")).await;
    }
    let held = app.db.hold("LOCK TABLE api_keys IN SHARE MODE").await;
    let answers = behind_lock(&app, held, creating, |i| {
        let p = participant(&app);
        let (url, token) = (p.url("/v1/api-keys"), anna.token.clone());
        async move {
            let body = json!({"name": format!("new-{i}")});
            p.send(p.client.post(url).bearer_auth(token).json(&body))
                .await
        }
    })
    .await;
    let sizes = format!("cap {cap}, {existing} live, {creating} creations");
    let room = (cap - existing) as usize;
    let made: Vec<String> = answers
        .iter()
        .filter(|(status, _)| *status == 201)
        .filter_map(|(_, body)| body["id"].as_str().map(str::to_owned))
        .collect();
    let refused = answers
        .iter()
        .filter(|(status, body)| *status == 422 && body["code"] == json!("validation_failed"))
        .count();
    assert_eq!(
        (made.len(), refused),
        (creating.min(room), creating.saturating_sub(room)),
        "{sizes}: {answers:?}"
    );
    assert_eq!(
        app.db.count(&keys_of(anna.user_id)).await,
        i64::from(existing) + made.len() as i64,
        "{sizes}: live keys"
    );
    for id in &made {
        let once = format!("SELECT count(*) AS n FROM api_keys WHERE id = '{id}'");
        assert_eq!(app.db.count(&once).await, 1, "{sizes}: key {id}");
    }
}

/// Of racing key creations, exactly as many as the cap has room for
/// succeed: below the cap (2 of 3), at it (3 of 3), past it (5 of 3), and
/// past it from 2 live keys (3 for 1 place).
#[tokio::test]
async fn key_creations_racing_at_the_cap_make_exactly_as_many_as_fit() {
    creations_racing_the_cap(3, 0, 2).await;
    creations_racing_the_cap(3, 0, 3).await;
    creations_racing_the_cap(3, 0, 5).await;
    creations_racing_the_cap(3, 2, 3).await;
}

/// A key's requests on two instances race its owner's loss of `assigner`
/// (which `GET /v1/tasks/stats` needs): once the removal returned, no
/// request is served on either (the removal took the role from the key
/// too); a worker's call with the key still works. With 2 participants per
/// instance (below its pool of 4) and 8 (above it).
#[tokio::test]
async fn key_requests_racing_a_role_removal_on_two_instances_are_refused_once_it_returned() {
    for per_instance in [2usize, 8] {
        let config = keys_capped(10);
        let config = ApiConfig {
            pool: test_support::app::test_config().pool,
            ..config
        };
        let a = TestApp::spawn_with(config.clone()).await;
        let b = a.spawn_beside(config).await;
        let root = a.signup_as("root@example.com", &[Role::Admin]).await;
        let anna = assigner(&a, "anna@example.com").await;
        let (_, key) = a.key_ok(&anna.token, "ci").await;
        let removal = (
            reqwest::Method::PATCH,
            format!("/v1/users/{}", anna.user_id),
            root.token.clone(),
            json!({"roles": ["worker"]}),
        );
        let (change, requests) = requests_racing([&a, &b], &key, per_instance, removal).await;
        assert_eq!(change.status, 200, "the removal");
        assert_eq!(requests.len(), 3 * 2 * per_instance, "a request was lost");
        let wrong = contradicting(change, &requests, 403);
        assert!(
            wrong.is_empty(),
            "{per_instance} per instance: {wrong:?} (removal {change:?})"
        );
        for app in [&b, &a] {
            assert_eq!(app.stats(&key).await.status(), StatusCode::FORBIDDEN);
            expect_status(app.claim(&key, &json!({"count": 1})).await, StatusCode::OK).await;
        }
    }
}

/// A key's requests on two instances race its revocation by its owner:
/// once the revocation returned, no request is served with the key on
/// either (`401`); one answered before it was sent was served. With 2 and
/// 8 participants per instance (its pool 4).
#[tokio::test]
async fn key_requests_racing_its_revocation_on_two_instances_are_refused_once_it_returned() {
    for per_instance in [2usize, 8] {
        let config = ApiConfig {
            pool: test_support::app::test_config().pool,
            ..keys_capped(10)
        };
        let a = TestApp::spawn_with(config.clone()).await;
        let b = a.spawn_beside(config).await;
        let anna = assigner(&a, "anna@example.com").await;
        let (id, key) = a.key_ok(&anna.token, "ci").await;
        let revocation = (
            reqwest::Method::DELETE,
            format!("/v1/api-keys/{id}"),
            anna.token.clone(),
            serde_json::Value::Null,
        );
        let (change, requests) = requests_racing([&a, &b], &key, per_instance, revocation).await;
        assert_eq!(change.status, 204, "the revocation");
        assert_eq!(requests.len(), 3 * 2 * per_instance, "a request was lost");
        let wrong = contradicting(change, &requests, 401);
        assert!(
            wrong.is_empty(),
            "{per_instance} per instance: {wrong:?} (revocation {change:?})"
        );
        for app in [&b, &a] {
            assert_eq!(app.stats(&key).await.status(), StatusCode::UNAUTHORIZED);
        }
        let left = format!("SELECT count(*) AS n FROM api_keys WHERE id = '{id}'");
        assert_eq!(a.db.count(&left).await, 0, "the revoked key is deleted");
    }
}

/// Key creations with the session tokens `before`, then `change` (method,
/// path, token, body), then creations with `after`, each queued on the
/// user's row lock (which the test holds) before the next is sent, then
/// let go. The change's answer, and the creations' in the order sent.
async fn creations_around(
    app: &TestApp,
    user: Uuid,
    before: &[&str],
    change: (reqwest::Method, String, String, serde_json::Value),
    after: &[&str],
) -> ((u16, serde_json::Value), Vec<(u16, serde_json::Value)>) {
    let held = app
        .db
        .hold(&format!(
            "SELECT 1 FROM users WHERE id = '{user}' FOR NO KEY UPDATE"
        ))
        .await;
    let create = |token: &str| {
        let body = json!({"name": "queued"});
        spawn_call(app, reqwest::Method::POST, "/v1/api-keys", token, body)
    };
    let mut creations = Vec::new();
    let mut queued = 0;
    for token in before {
        creations.push(create(token));
        queued += 1;
        app.db.wait_for_lock_waiters(queued).await;
    }
    let (method, path, token, body) = change;
    let change = spawn_call(app, method, &path, &token, body);
    queued += 1;
    app.db.wait_for_lock_waiters(queued).await;
    for token in after {
        creations.push(create(token));
        queued += 1;
        app.db.wait_for_lock_waiters(queued).await;
    }
    held.release().await;
    let change = change.await.unwrap();
    let mut answers = Vec::new();
    for creation in creations {
        answers.push(creation.await.unwrap());
    }
    (change, answers)
}

/// The status `key` gets now from `GET /v1/users/me`.
async fn key_status(app: &TestApp, key: &str) -> u16 {
    spawn_request(app, reqwest::Method::GET, "/v1/users/me", key)
        .await
        .unwrap()
        .0
}

/// Key creations of one user queued on its row lock (which the test
/// holds) `before` a disable and `after` it, then let go. Once the disable
/// returned no key of the user is left: a creation that took the lock
/// first made its key (within the cap) and the disable revoked it; one that
/// took it after made nothing (`401`). Enabled again, the user's keys
/// stay dead.
async fn key_creations_queued_around_a_disable(cap: u32, before: usize, after: usize) {
    let app = TestApp::spawn_with(keys_capped(cap)).await;
    let root = app.signup_as("root@example.com", &[Role::Admin]).await;
    let anna = assigner(&app, "anna@example.com").await;
    let disable = (
        reqwest::Method::PATCH,
        format!("/v1/users/{}", anna.user_id),
        root.token.clone(),
        json!({"disabled": true}),
    );
    let (tokens_before, tokens_after) = (
        vec![anna.token.as_str(); before],
        vec![anna.token.as_str(); after],
    );
    let ((status, user), answers) =
        creations_around(&app, anna.user_id, &tokens_before, disable, &tokens_after).await;
    assert_eq!(
        (status, &user["disabled"]),
        (200, &json!(true)),
        "the disable: {user}"
    );
    let sizes = format!("cap {cap}, {before} creations before the disable, {after} after");
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    let made = before.min(cap as usize);
    let expected: Vec<u16> = (0..before)
        .map(|i| if i < made { 201 } else { 422 })
        .chain((0..after).map(|_| 401))
        .collect();
    assert_eq!(statuses, expected, "{sizes}: {answers:?}");
    assert_eq!(
        app.db.count(&keys_of(anna.user_id)).await,
        0,
        "{sizes}: keys left"
    );
    let on = json!({"disabled": false});
    expect_status(
        app.change_user(&root.token, anna.user_id, &on).await,
        StatusCode::OK,
    )
    .await;
    for (_, body) in answers.iter().filter(|(s, _)| *s == 201) {
        let key = body["key"].as_str().unwrap();
        assert_eq!(
            key_status(&app, key).await,
            401,
            "{sizes}: a key made before the disable works again"
        );
    }
}

/// Creations that took the user's lock before a disable commit their keys
/// first; the disable, whose update waits for that lock, revokes them too.
/// At a cap of 3: one creation before, three (at the cap), five (past it),
/// and two before with two after.
#[tokio::test]
async fn a_disable_revokes_the_keys_of_creations_that_took_the_user_lock_before_it() {
    key_creations_queued_around_a_disable(3, 1, 0).await;
    key_creations_queued_around_a_disable(3, 3, 0).await;
    key_creations_queued_around_a_disable(3, 5, 0).await;
    key_creations_queued_around_a_disable(3, 2, 2).await;
}

/// Key creations queued on the user's lock around a password change made
/// with session A: creations with session B before it made keys, which
/// the change revoked; B's creations after it find B revoked and make
/// nothing (`401`); A's after it make live keys (the caller's session
/// survives its change). With 1 and 2 creations on each side (cap 5).
#[tokio::test]
async fn a_password_change_revokes_the_keys_made_before_it_and_its_revoked_sessions_make_none_after()
 {
    for per_side in [1usize, 2] {
        let app = TestApp::spawn_with(keys_capped(5)).await;
        let a = assigner(&app, "anna@example.com").await;
        let b = app.login_ok("anna@example.com").await;
        let change = (
            reqwest::Method::PUT,
            "/v1/users/me/password".to_owned(),
            a.token.clone(),
            json!({"current_password": test_support::app::PASSWORD, "new_password": "a new password 2"}),
        );
        let before = vec![b.token.as_str(); per_side];
        let after: Vec<&str> = [b.token.as_str(), a.token.as_str()]
            .into_iter()
            .cycle()
            .take(2 * per_side)
            .collect();
        let ((status, body), answers) =
            creations_around(&app, a.user_id, &before, change, &after).await;
        assert_eq!(status, 204, "the change: {body}");
        let sizes = format!("{per_side} creations before, {} after", after.len());
        let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        let expected: Vec<u16> = std::iter::repeat_n(201, per_side)
            .chain(
                after
                    .iter()
                    .map(|t| if *t == b.token.as_str() { 401 } else { 201 }),
            )
            .collect();
        assert_eq!(statuses, expected, "{sizes}: {answers:?}");
        let mut live = Vec::new();
        for (i, (_, body)) in answers.iter().enumerate().filter(|(_, (s, _))| *s == 201) {
            let key = body["key"].as_str().unwrap();
            live.push((i, key_status(&app, key).await));
        }
        let expected: Vec<(usize, u16)> = (0..per_side)
            .map(|i| (i, 401))
            .chain(
                (0..after.len())
                    .filter(|j| after[*j] == a.token.as_str())
                    .map(|j| (per_side + j, 200)),
            )
            .collect();
        assert_eq!(live, expected, "{sizes}: (creation, its key's status now)");
        assert_eq!(
            app.db.count(&keys_of(a.user_id)).await,
            per_side as i64,
            "{sizes}: keys left"
        );
    }
}

/// Key creations (each asking for the owner's roles) queued on the user's
/// lock around the removal of `assigner` from the user: the keys made
/// before it lose the role, the one made after it never had it; and once
/// the role is given back, none of them has it again. With 1 and 2
/// creations before (cap 3: below it, and at it with the one after).
#[tokio::test]
async fn a_role_removal_takes_the_role_from_keys_made_before_it_for_good() {
    for before in [1usize, 2] {
        let app = TestApp::spawn_with(keys_capped(3)).await;
        let root = app.signup_as("root@example.com", &[Role::Admin]).await;
        let anna = assigner(&app, "anna@example.com").await;
        let removal = (
            reqwest::Method::PATCH,
            format!("/v1/users/{}", anna.user_id),
            root.token.clone(),
            json!({"roles": ["worker"]}),
        );
        let tokens = vec![anna.token.as_str(); before];
        let ((status, body), answers) =
            creations_around(&app, anna.user_id, &tokens, removal, &[anna.token.as_str()]).await;
        assert_eq!(status, 200, "the removal: {body}");
        let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        let expected: Vec<u16> = vec![201; before + 1];
        assert_eq!(statuses, expected, "{before} before: {answers:?}");
        let given = json!({"roles": ["worker", "assigner"]});
        expect_status(
            app.change_user(&root.token, anna.user_id, &given).await,
            StatusCode::OK,
        )
        .await;
        for (_, body) in answers.iter().filter(|(s, _)| *s == 201) {
            let key = body["key"].as_str().unwrap();
            assert_eq!(
                app.stats(key).await.status(),
                StatusCode::FORBIDDEN,
                "{before} before: the role came back"
            );
            expect_status(app.claim(key, &json!({"count": 1})).await, StatusCode::OK).await;
        }
        let with_role = format!(
            "SELECT count(*) AS n FROM api_keys WHERE user_id = '{}' AND 'assigner' = ANY(roles)",
            anna.user_id
        );
        assert_eq!(
            app.db.count(&with_role).await,
            0,
            "{before} before: stored roles"
        );
    }
}
