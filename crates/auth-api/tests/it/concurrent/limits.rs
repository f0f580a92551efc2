//! Limits raced: the login limit under bursts for one email (correct
//! passwords, wrong ones, both, and a crowd for an email already limited),
//! on two instances and at sizes on both sides of the login limit, the
//! session cap and the hash queue's capacity; and the bounded hashing pool
//! under a flood of logins.

use super::{TestApp2, participant};
use auth_api::config::ApiConfig;
use auth_core::config::{HashParams, HashPoolConfig, PoolConfig, SessionLimit, SessionPolicy};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use test_support::TestApp;
use test_support::app::{PASSWORD, test_config};
use test_support::concurrency::run_together;
use test_support::db::Held;

/// Wrong passwords per window before an email is limited: distinct from
/// the session cap, so a test can tell the two rules apart.
const LOGIN_LIMIT: u32 = 6;
/// Active sessions per user.
const SESSION_CAP: u32 = 4;
/// Places in each instance's hash queue.
const HASH_QUEUE: usize = 8;
/// Burst sizes: below, at and just above the session cap and the login
/// limit, above the hash queue's capacity, and three times the limit.
const SIZES: [usize; 6] = [3, 4, 5, 6, 7, 18];

/// Two instances on one database, with the limits above.
async fn two_instances() -> (TestApp, TestApp) {
    let config = limits_config();
    let a = TestApp::spawn_with(config.clone()).await;
    let b = a.spawn_beside(config).await;
    (a, b)
}

/// The limits above; pools that let every admitted login of a burst wait
/// in PostgreSQL at once.
fn limits_config() -> ApiConfig {
    ApiConfig {
        pool: PoolConfig {
            max_size: 8,
            connection_timeout_ms: 15_000,
            ..PoolConfig::default()
        },
        sessions: SessionPolicy {
            max_failed_logins: LOGIN_LIMIT,
            max_sessions_per_user: SessionLimit::try_from(SESSION_CAP).unwrap(),
            ..SessionPolicy::default()
        },
        hash_pool: HashPoolConfig {
            workers: Some(2),
            queue_capacity: Some(HASH_QUEUE),
            ..HashPoolConfig::default()
        },
        ..test_config()
    }
}

/// What one login was told: status, problem code, whether it carried
/// `Retry-After`.
type Answer = (u16, String, bool);

/// One login per password, released together and sent to the two
/// instances in turn, while the test holds `held`; it lets go once every
/// login is answered, waiting in an instance's line, or waiting on a lock
/// in PostgreSQL. Returns each answer and the verifications performed.
async fn burst(
    apps: (&TestApp, &TestApp),
    email: &str,
    passwords: &[String],
    held: Held,
) -> (Vec<Answer>, u64) {
    let verified = || {
        [apps.0, apps.1]
            .iter()
            .map(|app| {
                app.state
                    .sessions
                    .hasher()
                    .stats()
                    .completed
                    .load(Ordering::SeqCst)
            })
            .sum::<u64>()
    };
    let before = verified();
    let answered = Arc::new(AtomicUsize::new(0));
    let n = passwords.len();
    let (answers, ()) = tokio::join!(
        run_together(n, |i| {
            let app = if i % 2 == 0 { apps.0 } else { apps.1 };
            let p = participant(app);
            let body = json!({"email": email, "password": passwords[i]});
            let answered = answered.clone();
            async move {
                let (status, code, retry, _) = login(&p, &body).await;
                answered.fetch_add(1, Ordering::SeqCst);
                (status, code, retry)
            }
        }),
        async {
            let waiting = || {
                (apps.0.state.sessions.login_limit().waiting()
                    + apps.1.state.sessions.login_limit().waiting()
                    + answered.load(Ordering::SeqCst)) as i64
            };
            apps.0.db.wait_until_parked(n as i64, waiting).await;
            held.release().await;
        }
    );
    // Nobody is left waiting in a line: every place was given back.
    for app in [apps.0, apps.1] {
        assert_eq!(app.state.sessions.login_limit().waiting(), 0, "{email}");
    }
    (answers, verified() - before)
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

fn count(answers: &[Answer], status: u16, code: &str) -> usize {
    answers
        .iter()
        .filter(|(s, c, _)| *s == status && c == code)
        .count()
}

/// This email's login attempts with the given outcome, read afresh.
async fn attempts(app: &TestApp, email: &str, outcome: &str) -> i64 {
    app.db
        .count(&format!(
            "SELECT count(*) AS n FROM login_attempts WHERE email = '{email}' AND outcome = '{outcome}'"
        ))
        .await
}

/// `n` distinct wrong passwords (a guesser does not repeat itself, and
/// identical checks would share one verification).
fn wrong(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("wrong password {i}")).collect()
}

#[tokio::test]
async fn correct_logins_arriving_together_all_succeed_and_the_cap_keeps_the_newest() {
    let (a, b) = two_instances().await;
    for n in SIZES {
        let email = format!("ada{n}@example.com");
        let ada = a.signup(&email).await;
        a.logout(&ada.token).await;
        // Every admitted login waits on ada's row lock, so checks in flight
        // pile up to the login limit; the rest must wait, not be refused.
        let held =
            a.db.hold(&format!(
                "SELECT 1 FROM users WHERE id = '{}' FOR NO KEY UPDATE",
                ada.user_id
            ))
            .await;
        let (answers, _) = burst((&a, &b), &email, &vec![PASSWORD.to_string(); n], held).await;
        assert_eq!(count(&answers, 201, ""), n, "size {n}: {answers:?}");
        let active =
            a.db.count(&format!(
                "SELECT count(*) AS n FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL",
                ada.user_id
            ))
            .await;
        assert_eq!(active, n.min(SESSION_CAP as usize) as i64, "size {n}");
        // The ones kept are the newest issued (fresh read).
        let kept =
            a.db.uuids(&format!(
                "SELECT id FROM sessions WHERE user_id = '{}' AND revoked_at IS NULL ORDER BY id",
                ada.user_id
            ))
            .await;
        let newest =
            a.db.uuids(&format!(
                "SELECT id FROM (SELECT id FROM sessions WHERE user_id = '{}'
                                 ORDER BY created_at DESC LIMIT {}) AS newest
                 ORDER BY id",
                ada.user_id,
                n.min(SESSION_CAP as usize)
            ))
            .await;
        assert_eq!(kept, newest, "size {n}: the cap keeps the newest");
        assert_eq!(
            attempts(&a, &email, "succeeded").await,
            n as i64 + 1,
            "size {n}"
        );
        assert_eq!(attempts(&a, &email, "failed").await, 0, "size {n}");
        assert_eq!(attempts(&a, &email, "pending").await, 0, "size {n}");
    }
}

#[tokio::test]
async fn wrong_passwords_arriving_together_are_checked_at_most_limit_times() {
    // Checks as slow as the service's own: admissions that do not count
    // the checks in flight (the fault) all pass before the first check has
    // recorded its failure, rather than by a margin of a millisecond.
    let config = ApiConfig {
        hash: HashParams::PRODUCTION,
        ..limits_config()
    };
    let a = TestApp::spawn_with(config.clone()).await;
    let b = a.spawn_beside(config).await;
    let limit = LOGIN_LIMIT as usize;
    for n in SIZES {
        let email = format!("eve{n}@example.com");
        a.register(&email, PASSWORD).await;
        // Every write to the attempts waits until all logins are in place.
        let held =
            a.db.hold("LOCK TABLE login_attempts IN EXCLUSIVE MODE")
                .await;
        let (answers, verified) = burst((&a, &b), &email, &wrong(n), held).await;
        let checked = n.min(limit);
        assert_eq!(
            count(&answers, 401, "invalid_credentials"),
            checked,
            "size {n}: {answers:?}"
        );
        assert_eq!(
            count(&answers, 429, "too_many_attempts"),
            n - checked,
            "size {n}: {answers:?}"
        );
        assert!(
            answers.iter().filter(|a| a.0 == 429).all(|a| a.2),
            "every 429 carries Retry-After: {answers:?}"
        );
        assert_eq!(
            verified, checked as u64,
            "size {n}: verifications performed"
        );
        assert_eq!(
            attempts(&a, &email, "failed").await,
            checked as i64,
            "size {n}"
        );
        assert_eq!(attempts(&a, &email, "pending").await, 0, "size {n}");
    }
}

#[tokio::test]
async fn correct_passwords_among_wrong_ones_succeed_exactly_when_checked_before_the_limit() {
    // Checks as slow as the service's own (argon2id at its production
    // cost, tens of ms): an admission that follows another at the edge of
    // the limit meets it still in flight, as a crowd of real logins would.
    let config = ApiConfig {
        hash: HashParams::PRODUCTION,
        ..limits_config()
    };
    let a = TestApp::spawn_with(config.clone()).await;
    let b = a.spawn_beside(config).await;
    // Three times the limit, with a correct password at every third place
    // (successes keep resetting the count); and with one alone, the email
    // one failure short of its limit before the burst: two instances'
    // first admissions then decide at the limit's edge, together (the
    // test's lock holds every write to the attempts until all wait).
    let n = 3 * LOGIN_LIMIT as usize;
    let mixes = [
        ("mia@example.com", 3, 0),
        ("max@example.com", n, LOGIN_LIMIT as usize - 1),
    ];
    for (email, every, failed_before) in mixes {
        let passwords: Vec<String> = wrong(n)
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                if i % every == every - 1 {
                    PASSWORD.to_string()
                } else {
                    w
                }
            })
            .collect();
        right_among_wrong((&a, &b), email, &passwords, failed_before).await;
    }
}

/// One burst of `passwords` for `email` (registered here, then failed
/// `failed_before` times one by one) through both instances, judged
/// against a fresh read of the attempts in the order their outcomes were
/// reported.
async fn right_among_wrong(
    apps: (&TestApp, &TestApp),
    email: &str,
    passwords: &[String],
    failed_before: usize,
) {
    let (a, b) = apps;
    let limit = LOGIN_LIMIT as i64;
    a.register(email, PASSWORD).await;
    for attempt in wrong(failed_before) {
        assert_eq!(a.login(email, &attempt).await.status().as_u16(), 401);
    }
    let held =
        a.db.hold("LOCK TABLE login_attempts IN EXCLUSIVE MODE")
            .await;
    let (answers, _) = burst((a, b), email, passwords, held).await;
    for (i, answer) in answers.iter().enumerate() {
        let allowed: &[u16] = if passwords[i] == PASSWORD {
            &[201, 429]
        } else {
            &[401, 429]
        };
        assert!(
            allowed.contains(&answer.0),
            "login {i} ({}): {answer:?}",
            passwords[i]
        );
    }
    // A fresh read of the attempts, in the order their outcomes were reported.
    let outcomes: Vec<String> = {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            outcome: String,
        }
        let mut conn = a.db.connect().await;
        diesel::sql_query(format!(
            "SELECT outcome FROM login_attempts WHERE email = '{email}' ORDER BY settled_at, id"
        ))
        .get_results::<Row>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.outcome)
        .collect()
    };
    let of = |o: &str| outcomes.iter().filter(|x| *x == o).count();
    assert_eq!(of("succeeded"), count(&answers, 201, ""), "{outcomes:?}");
    assert_eq!(
        of("failed"),
        count(&answers, 401, "invalid_credentials") + failed_before,
        "{outcomes:?}"
    );
    assert_eq!(of("pending"), 0, "{outcomes:?}");
    // Never more than `limit` wrong passwords checked since a success.
    let runs: Vec<i64> = outcomes
        .split(|o| o == "succeeded")
        .map(|run| run.len() as i64)
        .collect();
    assert!(
        runs.iter().all(|r| *r <= limit),
        "{email}: failures between successes: {runs:?}"
    );
    // A refusal only once the failures alone reached the limit: the email
    // is limited now, by the failures after its last success.
    if count(&answers, 429, "too_many_attempts") > 0 {
        assert_eq!(
            runs.last().copied(),
            Some(limit),
            "refused early: {outcomes:?} {answers:?}"
        );
    }
}

#[tokio::test]
async fn a_crowd_for_a_limited_email_costs_one_admission_per_instance() {
    // Both instances reach PostgreSQL through one counting proxy, with no
    // upkeep of their own meanwhile: every round trip is a login's.
    let (a, config, proxy) = TestApp::spawn_counted(limits_config()).await;
    let b = a.spawn_beside(config).await;
    let email = "zed@example.com";
    a.register(email, PASSWORD).await;
    for i in 0..LOGIN_LIMIT as usize {
        let body = json!({"email": email, "password": format!("guess {i}")});
        assert_eq!(login(&participant(&a), &body).await.0, 401);
    }
    // What one admission costs here (directly or behind a pooler): a login
    // of the limited email on each instance, one after the other.
    let before = proxy.sent();
    for app in [&a, &b] {
        let body = json!({"email": email, "password": PASSWORD});
        assert_eq!(login(&participant(app), &body).await.0, 429);
    }
    let admission = (proxy.sent() - before).round_trips / 2;
    // The test holds the email's admission lock: one login per instance
    // waits on it in PostgreSQL, the rest of a crowd three times the limit
    // (correct passwords) wait in the lines; then it lets go.
    let held =
        a.db.hold(&auth_core::store::login_attempts::lock_email_sql(email))
            .await;
    let n = 3 * LOGIN_LIMIT as usize;
    let mark = Arc::new(std::sync::Mutex::new(None));
    let answered = Arc::new(AtomicUsize::new(0));
    let (answers, ()) = tokio::join!(
        run_together(n, |i| {
            let p = participant(if i % 2 == 0 { &a } else { &b });
            let body = json!({"email": email, "password": PASSWORD});
            let answered = answered.clone();
            async move {
                let answer = login(&p, &body).await;
                answered.fetch_add(1, Ordering::SeqCst);
                answer
            }
        }),
        async {
            let parked = || {
                (a.state.sessions.login_limit().waiting()
                    + b.state.sessions.login_limit().waiting()
                    + answered.load(Ordering::SeqCst)) as i64
            };
            a.db.wait_until_parked(n as i64, parked).await;
            *mark.lock().unwrap() = Some(proxy.sent());
            held.release().await;
        }
    );
    let spent = proxy.sent() - mark.lock().unwrap().expect("marked");
    assert!(
        answers
            .iter()
            .all(|(s, c, retry, _)| *s == 429 && c == "too_many_attempts" && *retry),
        "{answers:?}"
    );
    // Each instance's one admission (part of it sent before the mark).
    assert!(
        spent.round_trips <= 2 * admission,
        "the crowd of {n} cost {} round trips; one admission costs {admission}",
        spent.round_trips
    );
    assert_eq!(attempts(&a, email, "failed").await, LOGIN_LIMIT as i64);
}

#[tokio::test]
async fn a_hash_flood_gets_fast_503s_while_validations_flow() {
    let deadline = Duration::from_millis(300);
    let app = TestApp::spawn_with(ApiConfig {
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
        ..test_config()
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
    let app = TestApp::spawn_with(ApiConfig {
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
        ..test_config()
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
