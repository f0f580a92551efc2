//! API keys under concurrency (interface v2): creations racing the
//! per-user cap, a role removal and a revocation racing a key's requests
//! on two instances, and a disable racing key creations, each forced where
//! a barrier alone would leave it to chance.

use super::{behind_lock, participant, spawn_request, wide_pool};
use auth_api::config::ApiConfig;
use auth_core::config::SessionPolicy;
use auth_core::domain::{Role, Roles};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Instant;
use test_support::TestApp;
use test_support::app::{LoggedIn, expect_status};
use test_support::concurrency::run_together;
use uuid::Uuid;

/// [`wide_pool`] with users holding at most `cap` live keys, and
/// self-registered users holding `worker` only (as shipped).
fn keys_capped(cap: u32) -> ApiConfig {
    let config = wide_pool();
    ApiConfig {
        sessions: SessionPolicy {
            api_keys_per_user: cap,
            ..config.sessions.clone()
        },
        default_roles: Roles::none().with(Role::Worker),
        ..config
    }
}

async fn assigner(app: &TestApp, email: &str) -> LoggedIn {
    app.signup_as(email, &[Role::Worker, Role::Assigner]).await
}

fn live_keys(user: Uuid) -> String {
    format!(
        "SELECT count(*) AS n FROM api_keys WHERE user_id = '{user}'
           AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
    )
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
        app.db.count(&live_keys(anna.user_id)).await,
        i64::from(existing) + made.len() as i64,
        "{sizes}: live keys"
    );
    for id in &made {
        let once =
            format!("SELECT count(*) AS n FROM api_keys WHERE id = '{id}' AND revoked_at IS NULL");
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

/// One request as a participant saw it.
#[derive(Debug, Clone, Copy)]
struct Timed {
    sent: Instant,
    answered: Instant,
    status: u16,
}

/// `per_instance` participants on each of two instances send three
/// requests each with one key, released together with `change` (one
/// request, participant 0 on the first instance); each instance served the
/// key before. Returns the change's timing and every request's.
async fn key_requests_racing(
    apps: [&TestApp; 2],
    key: &str,
    per_instance: usize,
    change: (reqwest::Method, String, String, serde_json::Value),
) -> (Timed, Vec<Timed>) {
    for app in apps {
        assert_eq!(
            app.stats(key).await.status(),
            StatusCode::OK,
            "served before"
        );
    }
    let change = &change;
    let runs = run_together(2 * per_instance + 1, |i| {
        let app = apps[i % 2];
        let p = participant(app);
        let url = p.url("/v1/tasks/stats");
        let key = key.to_owned();
        let change = (i == 0).then(|| change.clone());
        async move {
            let mut seen = Vec::new();
            let rounds = if change.is_some() { 1 } else { 3 };
            for _ in 0..rounds {
                let sent = Instant::now();
                let (status, _) = match &change {
                    Some((method, path, token, body)) => {
                        let req = p
                            .client
                            .request(method.clone(), p.url(path))
                            .bearer_auth(token);
                        let req = match body.is_null() {
                            true => req,
                            false => req.json(body),
                        };
                        p.send(req).await
                    }
                    None => p.send(p.client.get(&url).bearer_auth(&key)).await,
                };
                seen.push(Timed {
                    sent,
                    answered: Instant::now(),
                    status,
                });
            }
            seen
        }
    })
    .await;
    let requests = runs[1..].iter().flatten().copied().collect();
    (runs[0][0], requests)
}

/// The requests that contradict `change`: anything but 200 and `refused`;
/// `refused` for one answered before the change was sent; 200 for one sent
/// after the change returned.
fn contradicting(change: Timed, requests: &[Timed], refused: u16) -> Vec<Timed> {
    requests
        .iter()
        .filter(|r| {
            !matches!(r.status, s if s == 200 || s == refused)
                || (r.sent > change.answered && r.status != refused)
                || (r.answered < change.sent && r.status != 200)
        })
        .copied()
        .collect()
}

/// A key's requests on two instances race its owner's loss of `assigner`
/// (which `GET /v1/tasks/stats` needs): once the removal returned, no
/// request is served on either, though the key still carries the role; a
/// worker's call with the key still works. With 2 participants per
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
        let (change, requests) = key_requests_racing([&a, &b], &key, per_instance, removal).await;
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
        let (change, requests) =
            key_requests_racing([&a, &b], &key, per_instance, revocation).await;
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
        let revoked = format!(
            "SELECT count(*) AS n FROM api_keys WHERE id = '{id}' AND revoked_at IS NOT NULL"
        );
        assert_eq!(a.db.count(&revoked).await, 1);
    }
}

/// Key creations of one user queued on its row lock (which the test
/// holds) `before` a disable and `after` it, then let go. Once the disable
/// returned no key of the user is live: a creation that took the lock
/// first made its key (within the cap) and the disable revoked it; one that
/// took it after made nothing (`401`). Enabled again, the user's keys
/// stay dead.
async fn key_creations_queued_around_a_disable(cap: u32, before: usize, after: usize) {
    let app = TestApp::spawn_with(keys_capped(cap)).await;
    let root = app.signup_as("root@example.com", &[Role::Admin]).await;
    let anna = assigner(&app, "anna@example.com").await;
    let held = app
        .db
        .hold(&format!(
            "SELECT 1 FROM users WHERE id = '{}' FOR NO KEY UPDATE",
            anna.user_id
        ))
        .await;
    let create = |app: &TestApp| {
        let p = participant(app);
        let (url, token) = (p.url("/v1/api-keys"), anna.token.clone());
        tokio::spawn(async move {
            let body = json!({"name": "queued"});
            p.send(p.client.post(url).bearer_auth(token).json(&body))
                .await
        })
    };
    let mut creations = Vec::new();
    let mut queued = 0;
    for _ in 0..before {
        creations.push(create(&app));
        queued += 1;
        app.db.wait_for_lock_waiters(queued).await;
    }
    let path = format!("/v1/users/{}", anna.user_id);
    let p = participant(&app);
    let (url, token) = (p.url(&path), root.token.clone());
    let disable = tokio::spawn(async move {
        let off = json!({"disabled": true});
        p.send(p.client.patch(url).bearer_auth(token).json(&off))
            .await
    });
    queued += 1;
    app.db.wait_for_lock_waiters(queued).await;
    for _ in 0..after {
        creations.push(create(&app));
        queued += 1;
        app.db.wait_for_lock_waiters(queued).await;
    }
    held.release().await;
    let (status, user) = disable.await.unwrap();
    assert_eq!(
        (status, &user["disabled"]),
        (200, &json!(true)),
        "the disable: {user}"
    );
    let sizes = format!("cap {cap}, {before} creations before the disable, {after} after");
    let mut answers = Vec::new();
    for creation in creations {
        answers.push(creation.await.unwrap());
    }
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    let made = before.min(cap as usize);
    let expected: Vec<u16> = (0..before)
        .map(|i| if i < made { 201 } else { 422 })
        .chain((0..after).map(|_| 401))
        .collect();
    assert_eq!(statuses, expected, "{sizes}: {answers:?}");
    assert_eq!(
        app.db.count(&live_keys(anna.user_id)).await,
        0,
        "{sizes}: keys left live"
    );
    let on = json!({"disabled": false});
    expect_status(
        app.change_user(&root.token, anna.user_id, &on).await,
        StatusCode::OK,
    )
    .await;
    for (_, body) in answers.iter().filter(|(s, _)| *s == 201) {
        let key = body["key"].as_str().unwrap();
        let status = spawn_request(&app, reqwest::Method::GET, "/v1/users/me", key)
            .await
            .unwrap()
            .0;
        assert_eq!(
            status, 401,
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
