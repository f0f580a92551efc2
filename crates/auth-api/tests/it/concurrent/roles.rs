//! Roles and disabled users under concurrency (interface v2): a role taken
//! away racing the user's requests on two instances, and a disable racing
//! logins of the user, forced to queue on the user's lock around it.

use super::{capped, contradicting, participant, requests_racing, spawn_login, wide_pool};
use auth_api::config::ApiConfig;
use auth_core::domain::{Role, Roles};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::TestApp;
use test_support::app::{PASSWORD, expect_problem, expect_status};
use uuid::Uuid;

/// `config` with the roles self-registered users get as shipped: `worker`.
fn shipped(config: ApiConfig) -> ApiConfig {
    ApiConfig {
        default_roles: Roles::none().with(Role::Worker),
        ..config
    }
}

/// A call that needs `assigner`: `GET /v1/tasks/stats`.
async fn stats_status(app: &TestApp, token: &str) -> StatusCode {
    app.stats(token).await.status()
}

/// `PATCH /v1/users/{id}` from a participant and a task of its own.
fn spawn_change(
    app: &TestApp,
    token: &str,
    id: Uuid,
    change: Value,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let p = participant(app);
    let (url, token) = (p.url(&format!("/v1/users/{id}")), token.to_owned());
    tokio::spawn(async move {
        p.send(p.client.patch(url).bearer_auth(token).json(&change))
            .await
    })
}

/// Each instance has served the assigner as one (so whatever an instance
/// might keep of a session, it has); the admin takes `assigner` away on
/// one instance, and from the moment that returned both refuse it, while
/// `worker` still works; given back on the other, both serve it again.
#[tokio::test]
async fn a_role_taken_away_is_gone_on_every_instance_for_the_next_request() {
    let config = shipped(wide_pool());
    let a = TestApp::spawn_with(config.clone()).await;
    let b = a.spawn_beside(config).await;
    let root = a.signup_as("root@example.com", &[Role::Admin]).await;
    let anna = a
        .signup_as("anna@example.com", &[Role::Worker, Role::Assigner])
        .await;
    for round in 0..2 {
        for app in [&a, &b] {
            assert_eq!(
                stats_status(app, &anna.token).await,
                StatusCode::OK,
                "round {round}"
            );
        }
        let taken = json!({"roles": ["worker"]});
        expect_status(
            a.change_user(&root.token, anna.user_id, &taken).await,
            StatusCode::OK,
        )
        .await;
        for app in [&b, &a] {
            assert_eq!(
                stats_status(app, &anna.token).await,
                StatusCode::FORBIDDEN,
                "round {round}"
            );
            expect_status(
                app.claim(&anna.token, &json!({"count": 1})).await,
                StatusCode::OK,
            )
            .await;
        }
        let given = json!({"roles": ["worker", "assigner"]});
        expect_status(
            b.change_user(&root.token, anna.user_id, &given).await,
            StatusCode::OK,
        )
        .await;
    }
}

/// The assigner's requests (three in a row per participant, half of the
/// participants on each instance) race the admin's removal of `assigner`,
/// all released together; each instance served the assigner before. A
/// request sent after the removal returned must be refused, one answered
/// before it began must have been served; nothing else is allowed but 200
/// and 403, and no request is lost. After the race, one more request on
/// each instance must be refused. With 2 participants per instance (below
/// its pool of 4) and 8 (above it).
#[tokio::test]
async fn requests_racing_a_role_removal_on_two_instances_are_refused_once_it_returned() {
    for per_instance in [2usize, 8] {
        let config = shipped(test_support::app::test_config());
        let a = TestApp::spawn_with(config.clone()).await;
        let b = a.spawn_beside(config).await;
        let root = a.signup_as("root@example.com", &[Role::Admin]).await;
        let anna = a
            .signup_as("anna@example.com", &[Role::Worker, Role::Assigner])
            .await;
        let removal = (
            reqwest::Method::PATCH,
            format!("/v1/users/{}", anna.user_id),
            root.token.clone(),
            json!({"roles": ["worker"]}),
        );
        let (removal, requests) =
            requests_racing([&a, &b], &anna.token, per_instance, removal).await;
        assert_eq!(removal.status, 200, "the removal");
        assert_eq!(requests.len(), 3 * 2 * per_instance, "a request was lost");
        let wrong = contradicting(removal, &requests, 403);
        assert!(
            wrong.is_empty(),
            "{per_instance} per instance: {wrong:?} (removal {removal:?})"
        );
        for app in [&b, &a] {
            assert_eq!(stats_status(app, &anna.token).await, StatusCode::FORBIDDEN);
        }
    }
}

/// A user with no session yet, logins of it queued on its row lock (which
/// the test holds) `before` a disable and `after` it, then let go. Once the
/// disable returned, no session of the user may be active and no token a
/// login got may validate: a login that took the lock first had its
/// session revoked by the disable, one that took it after opened nothing
/// (`401 invalid_credentials`). A later login is refused too.
async fn logins_queued_around_a_disable(cap: u32, before: usize, after: usize) {
    let app = TestApp::spawn_with(shipped(capped(cap))).await;
    let root = app.signup_as("root@example.com", &[Role::Admin]).await;
    let email = "wendy@example.com";
    let wendy = app
        .state
        .sessions
        .register(email, PASSWORD, Roles::none().with(Role::Worker))
        .await
        .unwrap();
    let held = app
        .db
        .hold(&format!(
            "SELECT 1 FROM users WHERE id = '{}' FOR NO KEY UPDATE",
            wendy.id
        ))
        .await;
    let mut logins = Vec::new();
    let mut queued = 0;
    for _ in 0..before {
        logins.push(spawn_login(&app, email));
        queued += 1;
        app.db.wait_for_lock_waiters(queued).await;
    }
    let disable = spawn_change(&app, &root.token, wendy.id, json!({"disabled": true}));
    queued += 1;
    app.db.wait_for_lock_waiters(queued).await;
    for _ in 0..after {
        logins.push(spawn_login(&app, email));
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
    let sizes = format!("cap {cap}, {before} logins before the disable, {after} after");
    let mut answers = Vec::new();
    for login in logins {
        let (status, body) = login.await.unwrap();
        let alive = match body["token"].as_str() {
            Some(token) => app.current(token).await.status().as_u16(),
            None => 0,
        };
        answers.push((status, body["code"].as_str().map(str::to_owned), alive));
    }
    let wrong: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, (201, None, 401) | (401, Some(_), 0)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{sizes}: (login, code, its token now): {answers:?}"
    );
    let active = format!(
        "SELECT count(*) AS n FROM sessions
         WHERE user_id = '{}' AND revoked_at IS NULL AND idle_expires_at > now()",
        wendy.id
    );
    assert_eq!(
        app.db.count(&active).await,
        0,
        "{sizes}: sessions left active"
    );
    expect_problem(
        app.login(email, PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
}

/// Logins that took the user's lock before a disable commit their
/// sessions first; the disable, whose update waits for that lock, revokes
/// them too. At a cap of 3: one login, three (at the cap), five (evicting).
#[tokio::test]
async fn a_disable_revokes_the_sessions_of_logins_that_took_the_user_lock_before_it() {
    for before in [1, 3, 5] {
        logins_queued_around_a_disable(3, before, 0).await;
    }
}

/// Logins that waited for the user's lock behind a disable find the user
/// disabled and open nothing. At a cap of 3: one, three, five after it,
/// and two on each side.
#[tokio::test]
async fn logins_that_waited_for_the_user_lock_behind_a_disable_open_nothing() {
    for (before, after) in [(0, 1), (0, 3), (0, 5), (2, 2)] {
        logins_queued_around_a_disable(3, before, after).await;
    }
}
