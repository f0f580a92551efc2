//! The real actix app on `127.0.0.1:0` over a [`TestDb`], and a client with
//! one helper per endpoint of the contract.

use crate::TestDb;
use auth_api::config::ApiConfig;
use auth_api::settings::Settings;
use auth_api::state::AppState;
use auth_core::config::{HashParams, Pooler, QueuePolicy};
use auth_core::domain::{Role, Roles};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// A running service over its own database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// The service's own state (pool, services), for store-level steps.
    pub state: AppState,
    handle: actix_web::dev::ServerHandle,
    // Declared last: dropped after the server is told to stop. Shared by
    // a second instance on the same database (`spawn_beside`); the
    // database goes when the last of them does.
    pub db: std::sync::Arc<TestDb>,
}

/// The configuration every [`TestApp`] starts from: the real one's
/// defaults ([`Settings::defaults`]: whatever the environment says), with
/// what every test changes: cheap argon2, small pools (many tests run in
/// parallel against one server), the cleanup never running by itself
/// (tests call `state.cleanup.run()`), PgBouncer's pooling when the
/// chaos tier puts one in front (`TESSERA_TEST_PGBOUNCER`), and
/// self-registered users holding `worker` and `assigner` (what v1 let every
/// user do: the rules of sessions and the queue are tested apart from who
/// may call them; the role tests put back the shipped default). A test changes
/// what it needs; `database_url` left empty means the test's own database
/// (through that PgBouncer, if any), filled in when the app starts.
pub fn test_config() -> ApiConfig {
    let mut settings = Settings::defaults().unwrap_or_else(|e| panic!("the default settings: {e}"));
    settings.service.database_url = Some(String::new());
    let mut config = settings
        .config()
        .unwrap_or_else(|e| panic!("the default settings: {e}"));
    config.bind = "127.0.0.1:0".into();
    config.workers = Some(2);
    config.shutdown_grace_secs = 5;
    config.pool.max_size = 4;
    config.pool.connection_timeout_ms = 10_000;
    if crate::db::through_pgbouncer().is_some() {
        config.pooler = Pooler::Transaction;
    }
    config.retention.interval = std::time::Duration::from_secs(24 * 3600);
    config.hash_pool.workers = Some(2);
    config.hash = HashParams::FAST_INSECURE_FOR_TESTS;
    config.default_roles = [Role::Worker, Role::Assigner].into_iter().collect();
    config
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub email: String,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub token: String,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(test_config()).await
    }

    pub async fn spawn_with(config: ApiConfig) -> TestApp {
        TestApp::spawn_on(TestDb::new().await, config)
            .await
            .migrated()
            .await
    }

    /// An app on a new database whose pools reach PostgreSQL through a
    /// counting proxy (what it asks of the database, counted on the wire),
    /// with no upkeep of its own meanwhile (the task counts are never
    /// folded), migrated. A second instance `spawn_beside` it with the same
    /// `config` goes through the same proxy.
    pub async fn spawn_counted(
        config: ApiConfig,
    ) -> (TestApp, ApiConfig, crate::round_trips::CountingProxy) {
        let db = TestDb::new().await;
        let proxy = crate::round_trips::CountingProxy::start(db.host_port())
            .expect("starting the counting proxy");
        let config = ApiConfig {
            database_url: db.url_at("127.0.0.1", proxy.port),
            queue: QueuePolicy {
                counts_fold_interval: std::time::Duration::from_secs(3600),
                ..config.queue
            },
            ..config
        };
        let app = TestApp::spawn_on(db, config.clone()).await.migrated().await;
        (app, config, proxy)
    }

    /// A second instance of the service on this app's database (another
    /// process's view of the same data: its own pools, hasher and memory).
    pub async fn spawn_beside(&self, config: ApiConfig) -> TestApp {
        TestApp::spawn_shared(self.db.clone(), config)
            .await
            .migrated()
            .await
    }

    /// This app once its background migrations are done. The template is
    /// migrated, so this is quick, but a test must not race it.
    async fn migrated(self) -> TestApp {
        let mut migrated = self.state.migrated.clone();
        migrated
            .wait_for(|done| *done)
            .await
            .expect("the migrations task ended without migrating");
        self
    }

    /// The app over `db` as it is (perhaps not created yet, or empty),
    /// returned at once: its migrations may still be running.
    pub async fn spawn_on(db: TestDb, config: ApiConfig) -> TestApp {
        TestApp::spawn_shared(std::sync::Arc::new(db), config).await
    }

    async fn spawn_shared(db: std::sync::Arc<TestDb>, config: ApiConfig) -> TestApp {
        crate::init_test_log();
        let mut api_config = config;
        if api_config.database_url.is_empty() {
            api_config.database_url = db.service_url();
        }
        // LISTEN needs a session of its own: always the direct URL.
        api_config.listen_url = Some(db.url());
        let app = auth_api::startup::build(api_config)
            .await
            .unwrap_or_else(|e| panic!("starting the app: {e:#}"));
        let handle = app.server.handle();
        tokio::spawn(app.server);
        TestApp {
            address: format!("http://127.0.0.1:{}", app.port),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("building the test HTTP client"),
            state: app.state,
            handle,
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Returns once at least `n` long-poll claims are parked in this
    /// instance (each has tried once and found nothing), awaited on the
    /// queue's own waiter count; panics after 15 s.
    pub async fn wait_for_claim_waiters(&self, n: usize) {
        let wakeups = self.state.queue.wakeups();
        let parked = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            wakeups.until_waiting(|w| *w >= n),
        );
        if parked.await.is_err() {
            panic!(
                "fewer than {n} claims were waiting within 15 s ({} were)",
                wakeups.waiting()
            );
        }
    }

    /// Returns once no long-poll claim is parked in this instance (their
    /// clients hung up, say), awaited on the queue's own waiter count;
    /// panics after 15 s.
    pub async fn wait_for_no_claim_waiters(&self) {
        let wakeups = self.state.queue.wakeups();
        let left = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            wakeups.until_waiting(|w| *w == 0),
        );
        if left.await.is_err() {
            panic!("{} claims were still waiting after 15 s", wakeups.waiting());
        }
    }

    /// POST `body` as JSON, with an optional bearer token.
    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        send(req).await
    }

    /// POST raw bytes with the given content type (None: no header).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        send(req).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        send(req).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.delete(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        send(req).await
    }

    // --- one helper per endpoint -------------------------------------------

    /// `PATCH /v1/users/{id}` with `change`, as `token`'s user.
    pub async fn change_user(&self, token: &str, id: Uuid, change: &Value) -> Response {
        let req = self
            .client
            .patch(self.url(&format!("/v1/users/{id}")))
            .bearer_auth(token)
            .json(change);
        send(req).await
    }

    /// `GET /v1/users/me`: the caller's roles, as its token is judged now.
    pub async fn my_roles(&self, token: &str) -> Value {
        expect_status(self.get("/v1/users/me", Some(token)).await, StatusCode::OK).await["roles"]
            .clone()
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/users",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/sessions",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn current(&self, token: &str) -> Response {
        self.get("/v1/sessions/current", Some(token)).await
    }

    pub async fn logout(&self, token: &str) -> Response {
        self.delete("/v1/sessions/current", Some(token)).await
    }

    pub async fn refresh(&self, token: &str) -> Response {
        send(
            self.client
                .post(self.url("/v1/sessions/current/refresh"))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn list_sessions(&self, token: &str) -> Response {
        self.get("/v1/sessions", Some(token)).await
    }

    pub async fn revoke_session(&self, token: &str, session_id: &str) -> Response {
        self.delete(&format!("/v1/sessions/{session_id}"), Some(token))
            .await
    }

    pub async fn revoke_all(&self, token: &str) -> Response {
        self.delete("/v1/sessions", Some(token)).await
    }

    pub async fn create_tasks(&self, token: &str, body: &Value) -> Response {
        self.post_json("/v1/tasks", Some(token), body).await
    }

    pub async fn claim(&self, token: &str, body: &Value) -> Response {
        self.post_json("/v1/tasks/claim", Some(token), body).await
    }

    pub async fn complete(&self, token: &str, id: &str) -> Response {
        send(
            self.client
                .post(self.url(&format!("/v1/tasks/{id}/complete")))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn release(&self, token: &str, id: &str) -> Response {
        send(
            self.client
                .post(self.url(&format!("/v1/tasks/{id}/release")))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn list_tasks(&self, token: &str, query: &str) -> Response {
        self.get(&format!("/v1/tasks{query}"), Some(token)).await
    }

    pub async fn stats(&self, token: &str) -> Response {
        self.get("/v1/tasks/stats", Some(token)).await
    }

    // --- composites ---------------------------------------------------------

    /// Claims `count` tasks for the caller; the answer must be 200.
    pub async fn claim_ok(&self, token: &str, count: i64) -> Value {
        let body = serde_json::json!({ "count": count });
        expect_status(self.claim(token, &body).await, StatusCode::OK).await
    }

    /// Completes (`complete`) or releases (`release`) a task the caller
    /// holds; the answer must be 200.
    pub async fn finish_ok(&self, token: &str, action: &str, id: Uuid) -> Value {
        let res = match action {
            "complete" => self.complete(token, &id.to_string()).await,
            "release" => self.release(token, &id.to_string()).await,
            other => panic!("no task action `{other}`"),
        };
        expect_status(res, StatusCode::OK).await
    }

    /// `POST /v1/api-keys` with `body`, as `token`'s caller.
    pub async fn create_key(&self, token: &str, body: &Value) -> Response {
        self.post_json("/v1/api-keys", Some(token), body).await
    }

    /// A key named `name` with all the roles of `token`'s user: its id
    /// and the key itself.
    pub async fn key_ok(&self, token: &str, name: &str) -> (Uuid, String) {
        let body = json!({"name": name});
        let made = expect_status(self.create_key(token, &body).await, StatusCode::CREATED).await;
        let key = made["key"]
            .as_str()
            .expect("a made key is shown")
            .to_owned();
        (json_uuid(&made["id"]), key)
    }

    /// `DELETE /v1/api-keys/{id}` as `token`'s caller.
    pub async fn revoke_key(&self, token: &str, id: Uuid) -> Response {
        self.delete(&format!("/v1/api-keys/{id}"), Some(token))
            .await
    }

    /// Creates `email` holding `roles` (as an operator would, on the
    /// command line) and logs in.
    pub async fn signup_as(&self, email: &str, roles: &[Role]) -> LoggedIn {
        let roles: Roles = roles.iter().copied().collect();
        self.state
            .sessions
            .register(email, PASSWORD, roles)
            .await
            .unwrap_or_else(|e| panic!("creating {email}: {e}"));
        self.login_ok(email).await
    }

    /// Registers `email` with a fixed password and logs in.
    pub async fn signup(&self, email: &str) -> LoggedIn {
        expect_status(self.register(email, PASSWORD).await, StatusCode::CREATED).await;
        self.login_ok(email).await
    }

    /// Logs in with the fixed password and returns the new session.
    pub async fn login_ok(&self, email: &str) -> LoggedIn {
        let body = expect_status(self.login(email, PASSWORD).await, StatusCode::CREATED).await;
        LoggedIn {
            email: email.to_string(),
            user_id: json_uuid(&body["user_id"]),
            session_id: json_uuid(&body["session_id"]),
            token: body["token"]
                .as_str()
                .expect("a login answer carries its token")
                .to_string(),
        }
    }

    /// Creates `n` schedulable tasks titled `{prefix}-{i}` and returns their ids.
    pub async fn create_n_tasks(&self, token: &str, prefix: &str, n: usize) -> Vec<Uuid> {
        let tasks: Vec<Value> = (0..n)
            .map(|i| json!({"title": format!("{prefix}-{i}")}))
            .collect();
        let body = expect_status(
            self.create_tasks(token, &json!({"tasks": tasks})).await,
            StatusCode::CREATED,
        )
        .await;
        task_ids(&body)
    }

    /// A claim sent from a task of its own (a long poll the test lets wait
    /// while it acts): its status and body once answered.
    pub fn spawn_claim(
        &self,
        token: &str,
        body: Value,
    ) -> tokio::task::JoinHandle<(StatusCode, Value)> {
        let (client, url, token) = (
            self.client.clone(),
            self.url("/v1/tasks/claim"),
            token.to_owned(),
        );
        tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("claim request failed");
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        })
    }
}

/// The ids of `body["tasks"]`, in order.
pub fn task_ids(body: &Value) -> Vec<Uuid> {
    body["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| json_uuid(&t["id"]))
        .collect()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop accepting and close workers; the database is dropped after.
        drop(self.handle.stop(false));
    }
}

/// The password every [`TestApp::signup`] user has.
pub const PASSWORD: &str = "correct horse battery";

async fn send(req: reqwest::RequestBuilder) -> Response {
    req.send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// Asserts the status and returns the JSON body (Null when empty).
pub async fn expect_status(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.expect("reading the response body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Asserts a problem document with this status and code; returns it.
pub async fn expect_problem(res: Response, status: StatusCode, code: &str) -> Value {
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = expect_status(res, status).await;
    assert_eq!(
        content_type, "application/problem+json",
        "problem content type; body: {body}"
    );
    assert_eq!(body["code"], code, "problem code; body: {body}");
    assert_eq!(
        body["status"],
        status.as_u16(),
        "problem status member; body: {body}"
    );
    assert_eq!(
        body["type"],
        format!("urn:tessera:problem:{code}"),
        "problem type; body: {body}"
    );
    assert!(body["title"].is_string(), "title; body: {body}");
    body
}

pub fn json_uuid(v: &Value) -> Uuid {
    v.as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(|| panic!("not a UUID: {v}"))
}

/// The 32 raw bytes behind a token as the API returns it.
pub fn token_bytes(token: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .expect("a token is URL-safe base64")
}
