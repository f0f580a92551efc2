//! Limits raced: the login limit under a burst for one email, and the
//! bounded hashing pool under a flood of logins.

use super::{TestApp2, behind_lock, participant};
use auth_core::config::{HashParams, HashPoolConfig, PoolConfig};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use test_support::TestApp;
use test_support::app::{PASSWORD, TestAppConfig};
use test_support::concurrency::run_together;

const BURST: usize = 40;
const LIMIT: usize = 10;

/// An app whose pool lets every participant of a burst reach PostgreSQL at
/// once, so the test's lock holds them all back in the database itself.
async fn burst_app() -> TestApp {
    TestApp::spawn_with(TestAppConfig {
        pool: PoolConfig {
            max_size: BURST as u32 + 4,
            connection_timeout_ms: 15_000,
            ..PoolConfig::default()
        },
        ..TestAppConfig::default()
    })
    .await
}

/// `BURST` logins for ada released together, password `right_at` (if any)
/// correct and the rest wrong, while the test holds every write to
/// `login_attempts` back until all of them are waiting in PostgreSQL. Returns
/// (status, code, has Retry-After) per participant and the hashes performed.
async fn forced_burst(app: &TestApp, right_at: Option<usize>) -> (Vec<(u16, String, bool)>, u64) {
    app.register("ada@example.com", PASSWORD).await;
    let hashes_before = app
        .state
        .sessions
        .hasher()
        .stats()
        .completed
        .load(Ordering::SeqCst);
    let held = app
        .db
        .hold("LOCK TABLE login_attempts IN EXCLUSIVE MODE")
        .await;
    // Every participant waits in PostgreSQL: on the advisory lock, or on the
    // table lock with its write (admission or, if broken, a late record).
    let answers = behind_lock(app, held, BURST, |i| {
        let p = participant(app);
        let password = if Some(i) == right_at {
            PASSWORD
        } else {
            "wrong password"
        };
        let body = json!({"email": "ada@example.com", "password": password});
        async move {
            let (status, code, retry, _) = login(&p, &body).await;
            (status, code, retry)
        }
    })
    .await;
    let hashes = app
        .state
        .sessions
        .hasher()
        .stats()
        .completed
        .load(Ordering::SeqCst)
        - hashes_before;
    (answers, hashes)
}

/// One login: (status, problem code, has Retry-After, time to the answer).
async fn login(p: &TestApp2, body: &serde_json::Value) -> (u16, String, bool, Duration) {
    let started = Instant::now();
    let res = p
        .client
        .post(p.url("/v1/sessions"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    let status = res.status().as_u16();
    let retry = res.headers().contains_key("retry-after");
    let body: serde_json::Value = res.json().await.unwrap();
    let code = body["code"].as_str().unwrap_or("").to_string();
    (status, code, retry, started.elapsed())
}

fn count(answers: &[(u16, String, bool)], status: u16, code: &str) -> usize {
    answers
        .iter()
        .filter(|(s, c, _)| *s == status && c == code)
        .count()
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_is_checked_at_most_limit_times() {
    let app = burst_app().await;
    let (answers, hashes) = forced_burst(&app, None).await;
    assert_eq!(
        count(&answers, 401, "invalid_credentials"),
        LIMIT,
        "{answers:?}"
    );
    assert_eq!(
        count(&answers, 429, "too_many_attempts"),
        BURST - LIMIT,
        "{answers:?}"
    );
    assert!(
        answers.iter().filter(|a| a.0 == 429).all(|a| a.2),
        "every 429 carries Retry-After"
    );
    assert_eq!(hashes, LIMIT as u64, "verifications performed");
    // Fresh read: exactly the admitted attempts, each reported as failed.
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM login_attempts WHERE outcome = 'failed'")
            .await,
        LIMIT as i64
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM login_attempts")
            .await,
        LIMIT as i64
    );
}

#[tokio::test]
async fn a_correct_password_inside_a_burst_succeeds_only_if_admitted_among_the_first_ten() {
    let app = burst_app().await;
    let right = 17;
    let (answers, hashes) = forced_burst(&app, Some(right)).await;
    let (status, code, _) = &answers[right];
    assert!(
        *status == 201 || (*status == 429 && code == "too_many_attempts"),
        "the right password is never 401: {:?}",
        answers[right]
    );
    let failed = count(&answers, 401, "invalid_credentials") as i64;
    let succeeded = answers.iter().filter(|a| a.0 == 201).count() as i64;
    let limited = count(&answers, 429, "too_many_attempts") as i64;
    assert_eq!(
        failed + succeeded + limited,
        BURST as i64,
        "nothing else: {answers:?}"
    );
    assert_eq!(
        hashes as i64,
        failed + succeeded,
        "checked = answered as checked"
    );
    // Fresh read of the admissions, in admission order.
    let db = &app.db;
    assert_eq!(
        db.count("SELECT count(*) AS n FROM login_attempts WHERE outcome = 'failed'")
            .await,
        failed
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM login_attempts WHERE outcome = 'succeeded'")
            .await,
        succeeded
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM login_attempts WHERE outcome = 'pending'")
            .await,
        0
    );
    let before_success = db
        .count(
            "SELECT count(*) AS n FROM login_attempts
             WHERE id < (SELECT min(id) FROM login_attempts WHERE outcome = 'succeeded')",
        )
        .await;
    let after_success = db
        .count(
            "SELECT count(*) AS n FROM login_attempts
             WHERE id > (SELECT coalesce(min(id), 0) FROM login_attempts WHERE outcome = 'succeeded')",
        )
        .await;
    if succeeded == 1 {
        assert!(
            before_success < LIMIT as i64,
            "the success was admitted after {before_success} others"
        );
        assert!(
            after_success <= LIMIT as i64,
            "after the success, {after_success} more were checked"
        );
    } else {
        assert!(failed <= LIMIT as i64, "{failed} wrong passwords checked");
    }
}

#[tokio::test]
async fn a_hash_flood_gets_fast_503s_while_validations_flow() {
    let deadline = Duration::from_millis(300);
    let app = TestApp::spawn_with(TestAppConfig {
        pool: PoolConfig {
            max_size: 16,
            connection_timeout_ms: 10_000,
            ..PoolConfig::default()
        },
        hash: HashParams::PRODUCTION,
        hash_pool: HashPoolConfig {
            workers: Some(1),
            queue_capacity: Some(4),
            wait_deadline: deadline,
        },
        ..TestAppConfig::default()
    })
    .await;
    let ada = app.signup("ada@example.com").await;
    const LOGINS: usize = 30;
    const VALIDATORS: usize = 3;
    let results = run_together(LOGINS + VALIDATORS, |i| {
        let p = participant(&app);
        let token = ada.token.clone();
        async move {
            let mut out = Vec::new();
            if i < LOGINS {
                // A fresh email each: the per-email limit never trips.
                let body =
                    json!({"email": format!("flood{i}@example.com"), "password": "wrong password"});
                let (status, code, retry, took) = login(&p, &body).await;
                out.push(("login", status, code, retry, took));
            } else {
                for _ in 0..20 {
                    let (status, _) = p
                        .send(
                            p.client
                                .get(p.url("/v1/sessions/current"))
                                .bearer_auth(&token),
                        )
                        .await;
                    out.push(("validate", status, String::new(), false, Duration::ZERO));
                }
            }
            out
        }
    })
    .await;
    let all: Vec<_> = results.into_iter().flatten().collect();
    let logins: Vec<_> = all.iter().filter(|r| r.0 == "login").collect();
    let shed: Vec<_> = logins.iter().filter(|r| r.1 == 503).collect();
    assert!(
        logins
            .iter()
            .all(|r| (r.1 == 401 && r.2 == "invalid_credentials")
                || (r.1 == 503 && r.2 == "service_unavailable" && r.3)),
        "every login is checked (401) or shed (503 + Retry-After): {logins:?}"
    );
    assert!(
        !shed.is_empty(),
        "a flood past the queue's capacity gets 503s: {logins:?}"
    );
    let slowest = logins.iter().map(|r| r.4).max().unwrap_or_default();
    assert!(
        slowest <= deadline + Duration::from_secs(1),
        "every login answered within the deadline + 1 s; slowest {slowest:?}"
    );
    assert!(
        all.iter().filter(|r| r.0 == "validate").all(|r| r.1 == 200),
        "validations keep flowing"
    );
    // Shed logins were never checked: their admissions were given back.
    let checked = logins.iter().filter(|r| r.1 == 401).count() as i64;
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM login_attempts WHERE email LIKE 'flood%'")
            .await,
        checked
    );
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    let rejected: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tessera_password_hash_rejections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        rejected as usize,
        shed.len(),
        "rejections counted in /metrics"
    );
}

#[tokio::test]
async fn a_login_refused_for_its_deadline_gives_its_admission_back() {
    // One worker at production cost (tens of ms a hash), a deadline of 1 ms:
    // of six logins released together, all but the first to reach the
    // worker pass their deadline after being admitted.
    let app = TestApp::spawn_with(TestAppConfig {
        pool: PoolConfig {
            max_size: 8,
            connection_timeout_ms: 10_000,
            ..PoolConfig::default()
        },
        hash: HashParams::PRODUCTION,
        hash_pool: HashPoolConfig {
            workers: Some(1),
            queue_capacity: Some(16),
            wait_deadline: Duration::from_millis(1),
        },
        ..TestAppConfig::default()
    })
    .await;
    let statuses = run_together(6, |i| {
        let p = participant(&app);
        async move {
            let body =
                json!({"email": format!("late{i}@example.com"), "password": "wrong password"});
            p.send(p.client.post(p.url("/v1/sessions")).json(&body))
                .await
                .0
        }
    })
    .await;
    let checked = statuses.iter().filter(|s| **s == 401).count() as i64;
    let shed = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(checked as usize + shed, 6, "{statuses:?}");
    let late = app
        .state
        .sessions
        .hasher()
        .stats()
        .rejected_deadline
        .load(Ordering::SeqCst);
    assert!(late >= 1, "no login passed its deadline: {statuses:?}");
    // Fresh read: only the attempts that were checked still count.
    assert_eq!(
        app.db
            .count("SELECT count(*) AS n FROM login_attempts WHERE email LIKE 'late%'")
            .await,
        checked,
        "{statuses:?}"
    );
}
