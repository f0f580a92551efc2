//! Tier 2: the concurrent smoke tier. 5-10 participants, each with its own
//! HTTP connection (and so its own pooled database connection), released
//! together by a barrier, against committed data in a per-test database;
//! outcomes are checked by reading the database afresh and tallying per id.
//! `interleavings` forces specific orders with locks the test holds;
//! `isolation` runs the hot statements through PostgreSQL's isolation tester.

mod api_keys;
mod bodies;
// The randomized run, the longest test of the tier: libtest starts tests
// in the order of their names, and this module's puts it among the first,
// so it runs beside the others rather than after most of them.
mod histories;
mod interleavings;
mod isolation;
mod limits;
mod long_polls;
mod passwords;
mod queue;
mod queue_v1_1;
mod retention;
mod roles;
mod sessions;

use auth_api::config::ApiConfig;
use auth_core::config::{PoolConfig, SessionLimit, SessionPolicy};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Instant;
use test_support::TestApp;
use test_support::app::{PASSWORD, test_config};
use test_support::concurrency::run_together;
use test_support::db::Held;

/// A client of its own for one participant: no connection reuse between
/// participants, so their requests really run side by side.
pub fn own_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The same request helpers on another client.
pub fn participant(app: &TestApp) -> TestApp2 {
    TestApp2 {
        base: app.address.clone(),
        client: own_client(),
    }
}

/// One request with `token`, from a participant and a task of its own (a
/// call the test lets wait on a lock while it acts): its status and body.
pub fn spawn_request(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
    spawn_call(app, method, path, token, serde_json::Value::Null)
}

/// A call from a participant and a task of its own: `method` on `path`
/// with `token` and, unless null, a JSON `body`.
pub fn spawn_call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
    let p = participant(app);
    let (path, token) = (path.to_owned(), token.to_owned());
    tokio::spawn(async move { p.send(request(&p, method, &path, &token, &body)).await })
}

/// `method` on `path` with `token` and, unless null, a JSON `body`.
fn request(
    p: &TestApp2,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> reqwest::RequestBuilder {
    let req = p.client.request(method, p.url(path)).bearer_auth(token);
    match body.is_null() {
        true => req,
        false => req.json(body),
    }
}

/// One request as a participant saw it.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub sent: Instant,
    pub answered: Instant,
    pub status: u16,
}

/// `per_instance` participants on each of two instances send three
/// `GET /v1/tasks/stats` each with one `credential` (a session's token or
/// a key), released together with `change` (one request, participant 0 on
/// the first instance); each instance served the credential before.
/// Returns the change's timing and every request's.
pub async fn requests_racing(
    apps: [&TestApp; 2],
    credential: &str,
    per_instance: usize,
    change: (reqwest::Method, String, String, serde_json::Value),
) -> (Timed, Vec<Timed>) {
    for app in apps {
        assert_eq!(
            app.stats(credential).await.status(),
            StatusCode::OK,
            "served before"
        );
    }
    let change = &change;
    let runs = run_together(2 * per_instance + 1, |i| {
        let app = apps[i % 2];
        let p = participant(app);
        let url = p.url("/v1/tasks/stats");
        let key = credential.to_owned();
        let change = (i == 0).then(|| change.clone());
        async move {
            let mut seen = Vec::new();
            let rounds = if change.is_some() { 1 } else { 3 };
            for _ in 0..rounds {
                let sent = Instant::now();
                let (status, _) = match &change {
                    Some((method, path, token, body)) => {
                        p.send(request(&p, method.clone(), path, token, body)).await
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
pub fn contradicting(change: Timed, requests: &[Timed], refused: u16) -> Vec<Timed> {
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

/// A participant's view of the app: base URL and its own client.
pub struct TestApp2 {
    pub base: String,
    pub client: reqwest::Client,
}

impl TestApp2 {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                (status, res.json().await.unwrap_or(serde_json::Value::Null))
            }
            Err(e) => panic!("request failed: {e}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// `n` participants released together while the test holds `held`; once
/// all `n` wait on a lock in PostgreSQL, the test lets go. The forced form
/// of a race whose window is too narrow for a barrier alone.
pub async fn behind_lock<T, F, Fut>(app: &TestApp, held: Held, n: usize, participant: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let (results, ()) = tokio::join!(run_together(n, participant), async {
        app.db.wait_for_lock_waiters(n as i64).await;
        held.release().await;
    });
    results
}

/// A pool wide enough that every participant reaches PostgreSQL at once.
pub fn wide_pool() -> ApiConfig {
    ApiConfig {
        pool: PoolConfig {
            max_size: 12,
            connection_timeout_ms: 15_000,
            ..PoolConfig::default()
        },
        ..test_config()
    }
}

/// [`wide_pool`] with a session cap of `cap`.
pub fn capped(cap: u32) -> ApiConfig {
    ApiConfig {
        sessions: SessionPolicy {
            max_sessions_per_user: SessionLimit::try_from(cap).unwrap(),
            ..SessionPolicy::default()
        },
        ..wide_pool()
    }
}

/// A login with the right password, from a participant and a task of its
/// own (a call the test lets wait on a lock while it acts).
pub fn spawn_login(
    app: &TestApp,
    email: &str,
) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
    let p = participant(app);
    let (url, body) = (
        p.url("/v1/sessions"),
        json!({"email": email, "password": PASSWORD}),
    );
    tokio::spawn(async move { p.send(p.client.post(url).json(&body)).await })
}
