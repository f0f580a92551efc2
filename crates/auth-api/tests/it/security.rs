//! Security properties as tests (docs/security.md maps them to OWASP ASVS V3).

use auth_api::config::ApiConfig;
use auth_core::config::{HashParams, SessionPolicy};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use test_support::app::test_config;
use test_support::{TestApp, TestDb};

/// The real binary with logs at debug level (every crate, including the
/// database driver's statement logging): a whole session's life must leave
/// neither the password nor any token in them.
#[tokio::test]
async fn debug_logs_of_a_login_flow_contain_no_password_and_no_token() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_auth-api"))
            .env("DATABASE_URL", db.url())
            .env("TESSERA_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "debug")
            .env("TESSERA_ARGON2_M_KIB", "256")
            .env("TESSERA_ARGON2_T", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting auth-api: {e}")),
    );
    // Read both streams as they come (a full pipe would stall the server)
    // and start once the service has said both that it listens and that
    // its schema is current (it migrates after it binds, in either order).
    let lines = forward_lines(&mut server.0);
    let mut logs = String::new();
    let (mut listening, mut migrated) = (false, false);
    while !(listening && migrated) {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                listening |= line.contains("tessera auth-api listening");
                migrated |= line.contains("database schema is current");
                logs.push_str(&line);
                logs.push('\n');
            }
            Err(e) => panic!("auth-api did not report ready: {e}; log so far: {logs}"),
        }
    }
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/readyz")).send().await;
    assert_eq!(ready.map(|r| r.status()).ok(), Some(StatusCode::OK));

    let password = "Secret-Passw0rd-For-The-Log-Test";
    let creds = json!({"email": "logs@example.com", "password": password});
    let post = |path: &str, token: Option<&str>, body: Option<&Value>| {
        let mut req = client.post(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send()
    };
    let registered = post("/v1/users", None, Some(&creds))
        .await
        .map(|r| r.status());
    assert_eq!(registered.ok(), Some(StatusCode::CREATED));
    let wrong = json!({"email": "logs@example.com", "password": "wrong-password-value"});
    let _ = client
        .post(format!("{base}/v1/sessions"))
        .header("X-Request-Id", "log-test-42")
        .json(&wrong)
        .send()
        .await;
    let login: Value = json_of(post("/v1/sessions", None, Some(&creds)).await).await;
    let first = login["token"].as_str().unwrap().to_owned();
    let rotated: Value =
        json_of(post("/v1/sessions/current/refresh", Some(&first), None).await).await;
    let second = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!((first.len(), second.len()), (43, 43));
    let validated = client
        .get(format!("{base}/v1/sessions/current"))
        .bearer_auth(&second)
        .send()
        .await
        .map(|r| r.status());
    assert_eq!(validated.ok(), Some(StatusCode::OK));
    let _ = client
        .delete(format!("{base}/v1/sessions/current"))
        .bearer_auth(&second)
        .send()
        .await;

    // Stop it (our own child, by PID) and read everything it logged.
    let _ = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status();
    let _ = server.0.wait();
    for line in lines {
        logs.push_str(&line);
        logs.push('\n');
    }
    // The log is really at debug level and covers these requests.
    assert!(logs.contains("DEBUG"), "no debug lines: {logs}");
    assert!(
        logs.contains("/v1/sessions/current/refresh"),
        "request log missing"
    );
    // Every request's log line carries its id; the caller's id is kept.
    assert!(logs.contains("request_id=log-test-42"), "{logs}");
    for line in logs.lines().filter(|l| l.contains(" route=")) {
        assert!(
            line.contains("request_id="),
            "a request line without its id: {line}"
        );
    }
    for secret in [password, "wrong-password-value", &first, &second] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
    // What the database holds of them must stay out too: the driver logs
    // bind parameters at debug (a PHC string as text, a SHA-256 as bytes).
    let phc = stored_password_hash(&db, "logs@example.com").await;
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let mut derived = vec![phc.clone()];
    derived.extend(phc.rsplit('$').next().map(str::to_owned));
    for token in [&first, &second] {
        let digest = token_sha256(token);
        derived.push(digest.iter().map(|b| format!("{b:02x}")).collect());
        derived.push(format!("{digest:?}"));
        derived.push(format!("{:?}", digest.as_slice()));
    }
    for secret in &derived {
        assert!(
            !logs.contains(secret.as_str()),
            "a stored hash reached the log: {secret}"
        );
    }
}

async fn stored_password_hash(db: &TestDb, email: &str) -> String {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        password_hash: String,
    }
    let mut conn = db.connect().await;
    diesel::sql_query("SELECT password_hash FROM users WHERE email = $1")
        .bind::<diesel::sql_types::Text, _>(email)
        .get_result::<Row>(&mut conn)
        .await
        .map(|r| r.password_hash)
        .unwrap()
}

/// The SHA-256 of a token's 32 bytes, as the sessions table stores it.
fn token_sha256(token: &str) -> Vec<u8> {
    use sha2::Digest as _;
    let bytes = test_support::app::token_bytes(token);
    sha2::Sha256::digest(&bytes).to_vec()
}

/// Unknown email and wrong password: same status, same body, and (with
/// production argon2 cost, where skipping the hash would show) medians
/// within 25% of each other.
#[tokio::test]
async fn unknown_email_and_wrong_password_are_indistinguishable() {
    let app = TestApp::spawn_with(ApiConfig {
        hash: HashParams::PRODUCTION,
        sessions: SessionPolicy {
            max_failed_logins: 1000,
            ..SessionPolicy::default()
        },
        ..test_config()
    })
    .await;
    app.signup("known@example.com").await;
    let wrong = json!({"email": "known@example.com", "password": "not the password"});
    let unknown = json!({"email": "nobody@example.com", "password": "not the password"});

    let mut timings: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut bodies: [HashSet<String>; 2] = [HashSet::new(), HashSet::new()];
    for round in 0..21 {
        // Alternate which goes first, so drift on a shared machine hits both.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let body = if which == 0 { &wrong } else { &unknown };
            let started = Instant::now();
            // One request id for all: the bodies may then differ in nothing.
            let res = app
                .client
                .post(app.url("/v1/sessions"))
                .header("X-Request-Id", "indistinguishable")
                .json(body)
                .send()
                .await
                .unwrap();
            timings[which].push(started.elapsed());
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
            bodies[which].insert(res.text().await.unwrap());
        }
    }
    assert_eq!(bodies[0], bodies[1], "the bodies differ");
    assert_eq!(bodies[0].len(), 1, "one body for every failure");
    let (a, b) = (median(&mut timings[0]), median(&mut timings[1]));
    let ratio = a.min(b).as_secs_f64() / a.max(b).as_secs_f64();
    assert!(
        ratio >= 0.75,
        "median wrong password {a:?} vs unknown email {b:?} (ratio {ratio:.2})"
    );
}

#[tokio::test]
async fn tokens_are_256_bit_distinct_and_only_their_hashes_are_stored() {
    let app = TestApp::spawn().await;
    let user = app.signup("entropy@example.com").await;
    let mut tokens = HashSet::from([user.token.clone()]);
    let mut current = user.token.clone();
    for _ in 0..30 {
        let res = app
            .post_json("/v1/sessions/current/refresh", Some(&current), &json!({}))
            .await;
        let body: Value = res.json().await.unwrap_or(Value::Null);
        current = body["token"].as_str().unwrap().to_owned();
        // 43 URL-safe base64 characters carry exactly 256 bits.
        assert_eq!(current.len(), 43);
        assert!(tokens.insert(current.clone()), "a token repeated");
    }
    // No column of any session row, as text, contains any token issued.
    for token in &tokens {
        let found = app
            .db
            .count(&format!(
                "SELECT count(*) AS n FROM sessions s WHERE s::text LIKE '%{token}%'"
            ))
            .await;
        assert_eq!(found, 0, "a token is stored in clear");
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM sessions WHERE length(token_hash) = 32")
            .await,
        app.db.count("SELECT count(*) AS n FROM sessions").await,
        "every stored value is a 32-byte SHA-256"
    );
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn json_of(res: reqwest::Result<reqwest::Response>) -> Value {
    match res {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(e) => panic!("{e}"),
    }
}

/// Why a database connection failed reaches the log, with the server's
/// reason under tokio-postgres's "db error": here the migrations' attempts,
/// since nothing else connects before the schema is current (a pool's
/// failed connections go through the same `bad_connection`, and bb8's error
/// sink logs them).
#[tokio::test]
async fn a_failed_database_connection_is_logged_with_its_reason() {
    let db = TestDb::not_created();
    let port = free_port();
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_auth-api"))
            .env("DATABASE_URL", db.url())
            .env("TESSERA_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env("TESSERA_POOL_CONNECTION_TIMEOUT_MS", "500")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting auth-api: {e}")),
    );
    let lines = forward_lines(&mut server.0);
    let mut logs = String::new();
    // One deadline for the whole test: the migrations' retries keep
    // logging, so a per-line timeout would never end it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next_line =
        || match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                logs.push_str(&line);
                logs.push('\n');
                line
            }
            Err(e) => panic!("not within 30 s ({e}); log so far: {logs}"),
        };
    while !next_line().contains("tessera auth-api listening") {}
    // Until the schema is current nothing else opens a connection: the
    // migrations' own attempts are what is logged, each with its reason.
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
    assert_eq!(
        ready.map(|r| r.status()).ok(),
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    let failed = loop {
        let line = next_line();
        if line.contains("migrations not applied yet") {
            break line;
        }
    };
    assert!(failed.contains("does not exist"), "{failed}");
}

/// Our child, killed if the test ends early (a failed assertion), so no
/// server outlives the test that started it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Every line the child writes to stdout or stderr, as it is written; the
/// channel ends when the child has closed both.
fn forward_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        child.stdout.take().map(|s| Box::new(s) as _),
        child.stderr.take().map(|s| Box::new(s) as _),
    ];
    for stream in streams.into_iter().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}
